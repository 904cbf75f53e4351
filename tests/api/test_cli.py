"""The `checkpoint` command line, run in-process through `api.cli.main` (and once as a process)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
import zxingcpp
from PIL import Image

from api import cli
from api.cli import permits as permits_cli
from api.cli import shared
from checkpoint.model import Decision, Outcome
from checkpoint.policy_file import default_policy
from checkpoint.signing import Keyring
from issuer.qr import qr_png
from issuer.store.idempotency import purge_expired
from issuer.store.keys import load_keyring
from issuer.store.registry import Registry

POLICY = default_policy()
HAJJ = POLICY.seasons[1]
DAY = 86_400
ISSUE_AT = HAJJ.opens - 10 * DAY
"""The CLI's clock: ten days before the Hajj 1448 season opens (2027-04-08 Riyadh)."""
INSIDE = "2027-04-15T12:00"
"""A Riyadh time inside the season and inside every permit issued below."""
IQAMA = "2000000006"
IQAMA_2 = "2123456705"
NATIONAL_ID = "1000000008"

HEADER = "holder,category,season,from,until,entry_points,establishment,document_reference,sponsor"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def error_line(self) -> str:
        """The single error line on stderr (asserting there is exactly one)."""
        assert "Traceback" not in self.err
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("checkpoint: error:"), lines[0]
        return lines[0]


@pytest.fixture(autouse=True)
def fixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CHECKPOINT_* variable leaks in from the shell; the CLI's clock is fixed."""
    for name in list(os.environ):
        if name.startswith("CHECKPOINT_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(shared, "clock_now", lambda: ISSUE_AT)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


class Runner:
    def __init__(self, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.data_dir = data_dir
        self.capsys = capsys

    def __call__(self, *argv: str | Path) -> Result:
        self.capsys.readouterr()  # drop output of earlier steps
        code = cli.main(["--data-dir", str(self.data_dir), *map(str, argv)])
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)


@pytest.fixture
def run(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> Runner:
    return Runner(data_dir, capsys)


def issue_one(run: Runner, *extra: str, holder: str = IQAMA) -> tuple[str, str]:
    """Issue a domestic worker permit from flags: (permit id, token)."""
    result = run(
        "issue",
        "--holder",
        holder,
        "--category",
        "domestic_worker",
        "--from",
        "2027-04-10",
        "--until",
        "2027-05-20",
        "--sponsor",
        NATIONAL_ID,
        *extra,
    )
    assert result.code == 0, result.err
    first, token = result.out.splitlines()
    assert first.startswith("issued permit ")
    return first.removeprefix("issued permit "), token


def write_csv(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def read_index(directory: Path) -> list[dict[str, str]]:
    with (directory / "permits.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_qr(path: Path) -> list[str]:
    with Image.open(path) as image:
        return [r.text for r in zxingcpp.read_barcodes(image)]


# --- help ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["keys"],
        ["keys", "generate"],
        ["keys", "list"],
        ["keys", "retire"],
        ["keys", "revoke"],
        ["issue"],
        ["verify"],
        ["qr"],
        ["policy"],
        ["policy", "show"],
        ["demo"],
        ["serve"],
        ["credentials"],
        ["credentials", "create"],
        ["credentials", "list"],
        ["credentials", "disable"],
        ["revoke"],
        ["permits", "show"],
        ["permits", "list"],
        ["permits", "export"],
        ["audit"],
        ["establishments"],
        ["establishments", "add"],
        ["establishments", "set-class"],
        ["sweep"],
    ],
    ids=lambda c: " ".join(c) or "checkpoint",
)
def test_help_of_every_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: checkpoint")
    assert " ".join(["checkpoint", *command]) in out


def test_help_runs_as_a_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: checkpoint")
    for command in ("keys", "issue", "verify", "qr", "policy", "demo"):
        assert command in done.stdout


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "usage: checkpoint" in capsys.readouterr().err


# --- keys ----------------------------------------------------------------------------


def keyring(data_dir: Path) -> Keyring:
    """The keyring in the registry of `data_dir`, as every node reads it."""

    async def read() -> Keyring:
        registry = await Registry.open(f"sqlite+aiosqlite:///{data_dir / 'registry.sqlite3'}")
        try:
            return (await load_keyring(registry)).keyring
        finally:
            await registry.close()

    return asyncio.run(read())


def test_the_last_key_that_can_sign_is_revoked_only_with_force(run: Runner, data_dir: Path) -> None:
    run("keys", "generate")
    (entry,) = keyring(data_dir)
    refused = run("keys", "revoke", entry.kid, "--reason", "drill")
    assert refused.code == 2
    assert "last_signing_key" in refused.error_line()
    assert keyring(data_dir).get(entry.kid).status == "active"
    assert run("keys", "revoke", entry.kid, "--force").code == 0
    assert keyring(data_dir).get(entry.kid).status == "revoked"


def test_keys_generate_list_retire_revoke(run: Runner, data_dir: Path) -> None:
    empty = run("keys", "list")
    assert empty.code == 0
    assert "no keys" in empty.out

    created = run("keys", "generate", "--label", "first")
    assert created.code == 0
    (entry,) = keyring(data_dir)
    assert entry.kid in created.out
    assert entry.not_before == ISSUE_AT
    assert entry.label == "first"

    listed = run("keys", "list")
    assert listed.code == 0
    (row,) = [line for line in listed.out.splitlines() if line.startswith(entry.kid)]
    assert "active" in row
    assert "first" in row

    retired = run("keys", "retire", entry.kid)
    assert retired.code == 0
    assert entry.kid in retired.out
    assert keyring(data_dir).get(entry.kid).status == "retired"
    assert "retired" in run("keys", "list").out

    revoked = run("keys", "revoke", entry.kid)
    assert revoked.code == 0
    assert keyring(data_dir).get(entry.kid).status == "revoked"
    assert "revoked" in run("keys", "list").out


@pytest.mark.parametrize("action", ["retire", "revoke"])
def test_unknown_key_is_one_line(run: Runner, action: str) -> None:
    run("keys", "generate")
    result = run("keys", action, "00000000")
    assert result.code == 2
    assert "key_not_found" in result.error_line()


def test_retired_key_still_verifies_and_revoked_key_does_not(
    run: Runner, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, token = issue_one(run)
    (entry,) = keyring(data_dir)
    monkeypatch.setattr(shared, "clock_now", lambda: ISSUE_AT + 60)
    assert run("keys", "retire", entry.kid).code == 0
    assert run("verify", token, "--checkpoint", "shumaisi", "--at", INSIDE).code == 0
    assert run("keys", "revoke", entry.kid).code == 0
    rejected = run("verify", token, "--checkpoint", "shumaisi", "--at", INSIDE)
    assert rejected.code == 1
    assert "key_revoked" in rejected.out


# --- issue from flags and verify -----------------------------------------------------


def test_issue_then_verify(run: Runner) -> None:
    permit_id, token = issue_one(run)
    assert permit_id == "0.0"

    accepted = run("verify", token, "--checkpoint", "shumaisi", "--at", INSIDE)
    assert accepted.code == 0
    assert accepted.out.startswith("ACCEPT")
    assert permit_id in accepted.out
    assert IQAMA not in accepted.out  # the holder is masked
    assert IQAMA[-4:] in accepted.out

    as_json = run("verify", token, "--checkpoint", "shumaisi", "--at", INSIDE, "--json")
    assert as_json.code == 0
    decision = msgspec.json.decode(as_json.out, type=Decision)
    assert decision.outcome is Outcome.VALID
    assert decision.checkpoint == "shumaisi"
    assert decision.permit is not None
    assert decision.permit.permit_id == permit_id

    rejected = run("verify", token, "--checkpoint", "rawdah-gate", "--at", INSIDE)
    assert rejected.code == 1
    assert rejected.out.startswith("REJECT")
    assert "category_not_admitted" in rejected.out


def test_second_issue_gets_the_next_index(run: Runner) -> None:
    assert issue_one(run)[0] == "0.0"
    assert issue_one(run, holder=IQAMA_2)[0] == "0.1"


def test_verify_outside_the_window_rejects(run: Runner) -> None:
    _, token = issue_one(run)
    late = run("verify", token, "--checkpoint", "shumaisi", "--at", "2027-05-20T00:05+03:00")
    assert late.code == 1
    decision = msgspec.json.decode(
        run("verify", token, "--checkpoint", "shumaisi", "--at", "2027-05-20T00:05", "--json").out,
        type=Decision,
    )
    assert decision.code == "expired"


def test_verify_unknown_checkpoint(run: Runner) -> None:
    _, token = issue_one(run)
    result = run("verify", token, "--checkpoint", "nowhere", "--at", INSIDE)
    assert result.code == 2
    assert "unknown_checkpoint" in result.error_line()
    assert result.out == ""


@pytest.mark.parametrize("moment", ["tomorrow", "2027-13-01", "15/04/2027"])
def test_verify_bad_time(run: Runner, moment: str) -> None:
    _, token = issue_one(run)
    result = run("verify", token, "--checkpoint", "shumaisi", "--at", moment)
    assert result.code == 2
    result.error_line()
    assert result.out == ""


def test_verify_at_now_uses_the_cli_clock(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    _, token = issue_one(run)
    inside = HAJJ.opens + 7 * DAY + 12 * 3600
    monkeypatch.setattr(shared, "clock_now", lambda: inside)
    for at in ("now", str(inside)):
        result = run("verify", token, "--checkpoint", "shumaisi", "--at", at, "--json")
        assert result.code == 0
        assert msgspec.json.decode(result.out, type=Decision).checked_at == inside


def test_issue_refused_from_flags(run: Runner) -> None:
    result = run(
        "issue",
        "--holder",
        NATIONAL_ID,
        "--category",
        "domestic_worker",
        "--from",
        "2027-04-10",
        "--until",
        "2027-05-20",
    )
    assert result.code == 2
    assert "invalid_iqama" in result.error_line()


WINDOW = ["--from", "2027-04-10", "--until", "2027-05-20"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--holder", IQAMA, "--category", "domestic_worker", "--from", "2027-04-10"],
        ["--holder", IQAMA, "--category", "pilgrim", *WINDOW],
        ["--holder", "2abc", "--category", "dependent", *WINDOW],
        ["--holder", IQAMA, "--category", "dependent", "--from", "soon", "--until", "2027-05-20"],
        ["--holder", IQAMA, "--category", "dependent", "--season", "9", *WINDOW],
        ["--holder", IQAMA, "--category", "dependent", "--entry-point", "nowhere", *WINDOW],
    ],
)
def test_issue_bad_flags(run: Runner, flags: list[str]) -> None:
    result = run("issue", *flags)
    assert result.code == 2
    result.error_line()


def test_issue_from_flags_with_output_dir(run: Runner, tmp_path: Path) -> None:
    out = tmp_path / "one"
    result = run(
        "issue",
        "--holder",
        NATIONAL_ID,
        "--category",
        "citizen",
        "--document-reference",
        "MOI/1",
        "--entry-point",
        "al-kar",
        "--from",
        "2027-04-10",
        "--until",
        "2027-05-20",
        "-o",
        out,
    )
    assert result.code == 0, result.err
    (row,) = read_index(out)
    assert (row["permit_id"], row["holder"], row["category"]) == ("0.0", NATIONAL_ID, "citizen")
    assert read_qr(out / row["qr"]) == [row["token"]]
    limited = run("verify", row["token"], "--checkpoint", "shumaisi", "--at", INSIDE)
    assert limited.code == 1
    assert "entry_point_not_admitted" in limited.out


# --- issue from CSV ------------------------------------------------------------------


def test_issue_from_csv(run: Runner, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        f"{IQAMA},domestic_worker,1,2027-04-10,2027-05-20,,,,{NATIONAL_ID}",
        f"{NATIONAL_ID},citizen,1,2027-04-10T06:00,2027-05-20,shumaisi;al-kar,,MOI/1,",
        f"{IQAMA_2},dependent,1,2027-04-10,2027-05-21T00:00+03:00,,,,{NATIONAL_ID}",
    )
    out = tmp_path / "out"
    result = run("issue", "--csv", source, "-o", out)
    assert result.code == 0, result.err
    assert "writing QR images" in result.err
    assert "3/3" in result.err

    rows = read_index(out)
    assert [r["holder"] for r in rows] == [IQAMA, NATIONAL_ID, IQAMA_2]
    assert [r["category"] for r in rows] == ["domestic_worker", "citizen", "dependent"]
    assert [r["permit_id"] for r in rows] == ["0.0", "0.1", "0.2"]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(r["qr"] for r in rows)
    assert read_qr(out / rows[1]["qr"]) == [rows[1]["token"]]
    for row in rows:
        verdict = run("verify", row["token"], "--checkpoint", "al-kar", "--at", INSIDE)
        assert verdict.code == 0, verdict.out


def gcc_rows(count: int) -> list[str]:
    """GCC citizens' rows (no ID check digit, no establishment)."""
    return [f"G{n:07d},gcc_citizen,1,2027-04-10,2027-05-20,,,GCC/{n}," for n in range(count)]


def test_csv_qr_images_are_drawn_by_worker_processes(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two rows a chunk: five rows are three chunks, drawn by a process per core, and every
    image reads back as its own row's token."""
    monkeypatch.setattr(permits_cli, "QR_CHUNK", 2)
    out = tmp_path / "out"
    result = run("issue", "--csv", write_csv(tmp_path / "in.csv", *gcc_rows(5)), "-o", out)
    assert result.code == 0, result.err
    assert "5/5" in result.err
    rows = read_index(out)
    assert [r["holder"] for r in rows] == [f"G{n:07d}" for n in range(5)]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(r["qr"] for r in rows)
    for row in rows:
        assert read_qr(out / row["qr"]) == [row["token"]]


def test_a_worker_refusing_to_replace_a_file_stops_the_export_before_the_index(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of other content in a later chunk: the worker's one-line error reaches the
    command, nothing is replaced and no index is written."""
    monkeypatch.setattr(permits_cli, "QR_CHUNK", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "permit-0.4.png").write_bytes(b"someone else's file")
    result = run("issue", "--csv", write_csv(tmp_path / "in.csv", *gcc_rows(5)), "-o", out)
    assert result.code == 2
    last = result.err.splitlines()[-1]
    assert last.startswith("checkpoint: error:")
    assert "permit-0.4.png exists with other content" in last
    assert "Traceback" not in result.err
    assert (out / "permit-0.4.png").read_bytes() == b"someone else's file"
    assert not (out / "permits.csv").exists()
    # Exported again with --force, every image is the token's.
    exported = run("permits", "export", "--since", "2027-01-01", "-o", out, "--force")
    assert exported.code == 0, exported.err
    for row in read_index(out):
        assert read_qr(out / row["qr"]) == [row["token"]]


# --- credentials ------------------------------------------------------------------------


ADD_EST_7 = [
    "establishments",
    "add",
    "EST-7",
    "--channel",
    "muqeem",
    "--city",
    "makkah",
    "--name",
    "Catering",
]


def test_credential_bound_to_an_establishment(run: Runner) -> None:
    assert run(*ADD_EST_7).code == 0
    bound = ["--role", "issuer", "--channel", "muqeem", "--establishment", "EST-7"]
    created = run("credentials", "create", *bound)
    assert created.code == 0, created.err
    assert "for muqeem, establishment EST-7 only" in created.out
    assert "API key (shown once" in created.out
    (row,) = run("credentials", "list").out.splitlines()
    assert row.split()[1:4] == ["issuer", "active", "muqeem:EST-7"]


@pytest.mark.parametrize(
    "args",
    [
        ["--role", "scanner", "--checkpoint", "shumaisi", "--establishment", "EST-7"],
        ["--role", "issuer", "--channel", "muqeem", "--establishment", "EST-9"],  # unknown
        ["--role", "issuer", "--channel", "absher", "--establishment", "EST-7"],  # muqeem's
    ],
    ids=["scanner", "unknown", "other-channel"],
)
def test_a_senseless_establishment_binding_is_one_error_line(run: Runner, args: list[str]) -> None:
    assert run(*ADD_EST_7).code == 0
    result = run("credentials", "create", *args)
    assert result.code != 0
    result.error_line()
    assert run("credentials", "list").out.strip() == "no credentials yet"


def test_csv_with_mixed_channels_keeps_its_order(run: Runner, tmp_path: Path) -> None:
    add = ["establishments", "add", "EST-7", "--channel", "muqeem", "--city", "makkah"]
    assert run(*add, "--name", "Makkah Catering").code == 0
    source = write_csv(
        tmp_path / "in.csv",
        f"{IQAMA},domestic_worker,1,2027-04-10,2027-05-20,,,,{NATIONAL_ID}",
        f"{IQAMA_2},establishment_employee,1,2027-04-10,2027-05-20,,EST-7,,",
        f"{NATIONAL_ID},citizen,1,2027-04-10,2027-05-20,,,MOI/1,",
        "P1234567,seasonal_worker,1,2027-04-10,2027-05-20,,EST-7,SWV-1,",
    )
    out = tmp_path / "out"
    result = run("issue", "--csv", source, "-o", out)
    assert result.code == 0, result.err
    rows = read_index(out)
    assert [r["holder"] for r in rows] == [IQAMA, IQAMA_2, NATIONAL_ID, "P1234567"]
    assert [r["category"] for r in rows] == [
        "domestic_worker",
        "establishment_employee",
        "citizen",
        "seasonal_worker",
    ]
    assert len({r["permit_id"] for r in rows}) == 4
    for row in rows:
        assert read_qr(out / row["qr"]) == [row["token"]]
        decision = msgspec.json.decode(
            run("verify", row["token"], "--checkpoint", "shumaisi", "--at", INSIDE, "--json").out,
            type=Decision,
        )
        assert decision.outcome is Outcome.VALID
        assert decision.permit is not None
        assert decision.permit.permit_id == row["permit_id"]
        assert decision.permit.category == row["category"]


@pytest.mark.parametrize(
    ("refused", "code"),
    [
        (f"{NATIONAL_ID},citizen,1,2027-04-10,2027-05-20,,,,", "document_reference_required"),
        # another channel than line 2: must not leave line 2's batch issued
        (f"{NATIONAL_ID},contract_worker,1,2027-04-10,2027-05-20,,,,", "invalid_iqama"),
        (f"{IQAMA},umrah,1,2027-04-10,2027-05-20,,,,", "category_not_in_season"),
        (f"{IQAMA},dependent,1,2027-04-01,2027-05-20,,,,{NATIONAL_ID}", "window_outside_season"),
        (f"{IQAMA},dependent,1,2027-04-10,2027-05-20,,,,", "sponsor_required"),
    ],
)
def test_csv_refusal_names_the_line_and_issues_nothing(
    run: Runner, tmp_path: Path, refused: str, code: str
) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        f"{IQAMA},domestic_worker,1,2027-04-10,2027-05-20,,,,{NATIONAL_ID}",
        refused,
        f"{IQAMA_2},dependent,1,2027-04-10,2027-05-20,,,,{NATIONAL_ID}",
    )
    out = tmp_path / "out"
    result = run("issue", "--csv", source, "-o", out)
    assert result.code == 2
    line = result.error_line()
    assert f"{source}:3:" in line
    assert code in line
    assert not (out / "permits.csv").exists()
    assert issue_one(run)[0] == "0.0"  # nothing was taken from the registry


@pytest.mark.parametrize(
    ("header", "rows"),
    [
        ("holder,category,season,from", ["2000000006,dependent,1,2027-04-10"]),  # no until
        (HEADER + ",colour", [f"{IQAMA},dependent,1,2027-04-10,2027-05-20,,,,red"]),
        ("", []),  # empty file
        (HEADER, []),  # header only
        (HEADER, [f"{IQAMA},dependent,one,2027-04-10,2027-05-20,,,"]),
        (HEADER, [f"{IQAMA},dependent,1,2027-04-10,2027-05-20,,,", f"{IQAMA},dependent,,,,,,"]),
        (HEADER, [f"{IQAMA},nobody,1,2027-04-10,2027-05-20,,,"]),
    ],
)
def test_bad_csv_is_one_line(run: Runner, tmp_path: Path, header: str, rows: list[str]) -> None:
    source = tmp_path / "in.csv"
    source.write_text("\n".join([header, *rows]) if header else "", encoding="utf-8")
    result = run("issue", "--csv", source, "-o", tmp_path / "out")
    assert result.code == 2
    assert str(source) in result.error_line()
    assert not (tmp_path / "out").exists()


def test_bad_time_in_csv_names_the_line(run: Runner, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        f"{IQAMA},domestic_worker,1,2027-04-10,2027-05-20,,,",
        f"{IQAMA_2},domestic_worker,1,10/04/2027,2027-05-20,,,",
    )
    result = run("issue", "--csv", source, "-o", tmp_path / "out")
    assert result.code == 2
    assert f"{source}:3:" in result.error_line()


def test_unreadable_csv_is_one_line(run: Runner, tmp_path: Path) -> None:
    result = run("issue", "--csv", tmp_path / "missing.csv", "-o", tmp_path / "out")
    assert result.code == 2
    assert "missing.csv" in result.error_line()
    directory = run("issue", "--csv", tmp_path, "-o", tmp_path / "out")
    assert directory.code == 2
    directory.error_line()


def test_csv_that_is_not_utf8_is_one_line(run: Runner, tmp_path: Path) -> None:
    source = tmp_path / "cp1256.csv"
    row = f"{IQAMA},domestic_worker,1,2027-04-10,2027-05-20,,,مكة"
    source.write_bytes(f"{HEADER}\n{row}\n".encode("cp1256"))
    result = run("issue", "--csv", source, "-o", tmp_path / "out")
    assert result.code == 2
    assert "cp1256.csv" in result.error_line()


def test_csv_needs_an_output_dir(run: Runner, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", f"{IQAMA},domestic_worker,1,2027-04-10,2027-05-20,,,")
    result = run("issue", "--csv", source)
    assert result.code == 2
    result.error_line()


# --- qr, policy, demo, settings ------------------------------------------------------


def test_qr_png_and_svg(run: Runner, tmp_path: Path) -> None:
    _, token = issue_one(run)
    png = tmp_path / "qr" / "f.png"
    assert run("qr", token, "-o", png).code == 0
    assert read_qr(png) == [token]
    svg = tmp_path / "f.svg"
    assert run("qr", token, "-o", svg).code == 0
    assert svg.read_text(encoding="utf-8").startswith("<svg")


def test_qr_refuses_other_formats(run: Runner, tmp_path: Path) -> None:
    _, token = issue_one(run)
    result = run("qr", token, "-o", tmp_path / "f.gif")
    assert result.code == 2
    result.error_line()
    assert not (tmp_path / "f.gif").exists()


def test_policy_show_lists_every_checkpoint(run: Runner) -> None:
    result = run("policy", "show")
    assert result.code == 0
    for code in POLICY.gates:
        assert code in result.out
    for season in POLICY.seasons.values():
        assert season.code in result.out


def test_policy_file_flag(run: Runner, tmp_path: Path) -> None:
    broken = tmp_path / "policy.toml"
    broken.write_text('version = "x"\n', encoding="utf-8")
    result = run("--policy", broken, "policy", "show")
    assert result.code == 2
    assert "invalid_policy" in result.error_line()
    missing = run("--policy", tmp_path / "nope.toml", "policy", "show")
    assert missing.code == 2
    assert "invalid_policy" in missing.error_line()


def test_demo(run: Runner, data_dir: Path) -> None:
    result = run("demo")
    assert result.code == 0, result.err
    assert "ACCEPT" in result.out
    assert "REJECT" in result.out
    assert "same token" in result.out
    assert list(data_dir.glob("permit-*.png"))


def test_bad_environment_setting_is_one_line(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKPOINT_PORT", "abc")
    result = run("policy", "show")
    assert result.code == 2
    assert "port" in result.error_line()
    assert result.out == ""


# --- establishments and the no-arrival sweep -------------------------------------------


def test_establishments_add(run: Runner) -> None:
    add_company = ["establishments", "add", "CO-1", "--channel", "nusuk", "--city", "makkah"]
    company = run(*add_company, "--name", "Umrah Co")
    assert company.code == 0, company.err
    assert "class C" in company.out
    again = run(*add_company, "--name", "Umrah Co")
    assert again.code == 2
    assert "establishment_exists" in again.error_line()
    classed = run(
        "establishments",
        "add",
        "EST-1",
        "--channel",
        "muqeem",
        "--city",
        "makkah",
        "--name",
        "X",
        "--class",
        "A",
    )
    assert classed.code == 2
    classed.error_line()


def test_establishments_set_class(run: Runner) -> None:
    add = ["establishments", "add", "CO-1", "--channel", "nusuk", "--city", "makkah"]
    assert run(*add, "--name", "Umrah Co").code == 0
    moved = run("establishments", "set-class", "CO-1", "--class", "B")
    assert moved.code == 0, moved.err
    assert "CO-1 is now an Umrah company of class B" in moved.out
    unknown = run("establishments", "set-class", "NOBODY", "--class", "B")
    assert unknown.code == 2
    assert "establishment_not_found" in unknown.error_line()
    muqeem = ["establishments", "add", "EST-1", "--channel", "muqeem", "--city", "makkah"]
    assert run(*muqeem, "--name", "X").code == 0
    refused = run("establishments", "set-class", "EST-1", "--class", "A")
    assert refused.code == 2
    assert "not_an_umrah_company" in refused.error_line()
    for usage in (["--class", "D"], []):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["establishments", "set-class", "CO-1", *usage])
        assert exit_info.value.code == 2


def test_sweep_cancels_unarrived_slots_once(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    umrah = POLICY.seasons[2]
    now = umrah.opens + 30 * DAY
    monkeypatch.setattr(shared, "clock_now", lambda: now)
    assert (
        run(
            "establishments",
            "add",
            "CO-1",
            "--channel",
            "nusuk",
            "--city",
            "makkah",
            "--name",
            "Umrah Co",
        ).code
        == 0
    )
    slot = now + DAY
    issued = run(
        "issue",
        "--holder",
        "A1234567",
        "--category",
        "umrah",
        "--season",
        "2",
        "--birth-date",
        "1990-01-01",
        "--establishment",
        "CO-1",
        "--from",
        str(slot),
        "--until",
        str(slot + 7200),
    )
    assert issued.code == 0, issued.err
    early = run("sweep", "--at", str(slot - 6 * 3600 - 1))
    assert (early.code, early.out.splitlines()[-1].split()[0]) == (0, "0")
    due = run("sweep", "--at", str(slot - 6 * 3600))
    assert due.code == 0
    assert "cancelled 0.0 (no_arrival, seq 1)" in due.out
    assert run("sweep", "--at", str(slot)).out.startswith("0 slot permit(s)")
    token = issued.out.splitlines()[1]
    verdict = run("verify", token, "--checkpoint", "haram-umrah-gate", "--at", str(slot + 60))
    assert (verdict.code, "revoked" in verdict.out) == (1, True)


# --- recoverable CSV runs, export, blocks (issue #13) -----------------------------------


CSV_ROWS = [
    f"{IQAMA},domestic_worker,1,2027-04-10,2027-05-20,,,,{NATIONAL_ID}",
    f"{NATIONAL_ID},citizen,1,2027-04-10,2027-05-20,,,MOI/1,",
    f"{IQAMA_2},dependent,1,2027-04-10,2027-05-20,,,,{NATIONAL_ID}",
    "P1234567,gcc_citizen,1,2027-04-10,2027-05-20,,,GCC/1,",
]


def test_interrupted_write_leaves_whole_files_and_a_rerun_replays(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_csv(tmp_path / "in.csv", *CSV_ROWS)
    out = tmp_path / "out"
    drawn: list[str] = []

    def interrupted(token: str) -> bytes:
        if len(drawn) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the third image is drawn
        drawn.append(token)
        return qr_png(token)

    monkeypatch.setattr("api.cli.permits.qr_png", interrupted)
    first = run("issue", "--csv", source, "-o", out)
    assert first.code == 130
    assert "batch csv:" in first.err
    assert not (out / "permits.csv").exists()
    assert sorted(p.name for p in out.iterdir()) == ["permit-0.0.png", "permit-0.1.png"]
    assert read_qr(out / "permit-0.1.png") == [drawn[1]]

    monkeypatch.setattr("api.cli.permits.qr_png", qr_png)
    again = run("issue", "--csv", source, "-o", out)
    assert again.code == 0, again.err
    rows = read_index(out)
    assert [r["permit_id"] for r in rows] == ["0.0", "0.1", "0.2", "0.3"]
    assert [r["token"] for r in rows[:2]] == drawn
    assert len(list(out.glob("*.png"))) == 4
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert issue_one(run, holder=IQAMA_2)[0] == "0.4"  # the rerun issued nothing


def test_rerunning_a_finished_csv_replays_and_changes_nothing(run: Runner, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", *CSV_ROWS)
    out = tmp_path / "out"
    assert run("issue", "--csv", source, "-o", out).code == 0
    before = (out / "permits.csv").read_bytes()
    again = run("issue", "--csv", source, "-o", out)
    assert again.code == 0, again.err
    assert (out / "permits.csv").read_bytes() == before
    elsewhere = run("issue", "--csv", source, "-o", tmp_path / "copy")
    assert (tmp_path / "copy" / "permits.csv").read_bytes() == before
    assert elsewhere.code == 0
    assert issue_one(run, holder=IQAMA_2)[0] == "0.4"


def test_a_csv_batch_outlives_the_api_s_key_lifetime_and_its_purge(
    run: Runner, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HTTP Idempotency-Key is forgotten after 24 hours; a CSV file's batch never is:
    rerun two days later, after the service's purge, it still issues nothing new."""
    source = write_csv(tmp_path / "in.csv", *CSV_ROWS)
    assert run("issue", "--csv", source, "-o", tmp_path / "out").code == 0
    later = ISSUE_AT + 2 * DAY
    monkeypatch.setattr(shared, "clock_now", lambda: later)

    async def purge() -> int:
        registry = await Registry.open(f"sqlite+aiosqlite:///{data_dir / 'registry.sqlite3'}")
        try:
            return await purge_expired(registry, later)
        finally:
            await registry.close()

    assert asyncio.run(purge()) == 0
    again = run("issue", "--csv", source, "-o", tmp_path / "again")
    assert again.code == 0, again.err
    assert read_index(tmp_path / "again") == read_index(tmp_path / "out")
    assert issue_one(run, holder=IQAMA_2)[0] == "0.4"


def test_export_by_batch_holder_and_since(run: Runner, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "in.csv", *CSV_ROWS)
    issued = run("issue", "--csv", source, "-o", tmp_path / "out")
    batch = issued.err.split("batch ", 1)[1].split(":", 2)
    key = f"{batch[0]}:{batch[1]}"
    assert key.startswith("csv:")
    exported = run("permits", "export", "--batch", key, "-o", tmp_path / "export")
    assert exported.code == 0, exported.err
    assert "exported 4 permit(s)" in exported.out
    assert (tmp_path / "export" / "permits.csv").read_bytes() == (
        tmp_path / "out" / "permits.csv"
    ).read_bytes()
    assert len(list((tmp_path / "export").glob("*.png"))) == 4

    issue_one(run, holder=IQAMA_2)
    mine = run("permits", "export", "--holder", IQAMA_2, "-o", tmp_path / "holder")
    assert mine.code == 0, mine.err
    assert [r["permit_id"] for r in read_index(tmp_path / "holder")] == ["0.2", "0.4"]
    since = run("permits", "export", "--since", "now", "-o", tmp_path / "since")
    assert since.code == 0, since.err
    assert len(read_index(tmp_path / "since")) == 5


def test_export_does_not_clobber_other_files(run: Runner, tmp_path: Path) -> None:
    issue_one(run)
    out = tmp_path / "export"
    out.mkdir()
    (out / "permits.csv").write_text("someone else's file\n", encoding="utf-8")
    refused = run("permits", "export", "--holder", IQAMA, "-o", out)
    assert refused.code == 2
    assert "--force" in refused.error_line()
    assert (out / "permits.csv").read_text(encoding="utf-8") == "someone else's file\n"
    assert not list(out.glob("*.png"))
    forced = run("permits", "export", "--holder", IQAMA, "-o", out, "--force")
    assert forced.code == 0, forced.err
    assert read_index(out)[0]["state"] == "active"


@pytest.mark.parametrize("args", [[], ["--batch", "csv:nothing-like-it"], ["--holder", "NOBODY1"]])
def test_export_errors_are_one_line(run: Runner, tmp_path: Path, args: list[str]) -> None:
    issue_one(run)
    result = run("permits", "export", *args, "-o", tmp_path / "x")
    assert result.code == 2
    result.error_line()
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["permits", "export", "--holder", "V7654321\n"],
        ["permits", "export", "--holder", "V٧٦٥٤٣٢١"],
        ["holders", "block", "V7654321\n", "--reason", "forged passport"],
        ["establishments", "suspend", "EST-7\n", "--reason", "licence"],
    ],
)
def test_identifiers_on_the_command_line_are_whole_ascii_strings(
    run: Runner, tmp_path: Path, argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        run(*argv, "-o", tmp_path / "x") if argv[0] == "permits" else run(*argv)
    assert info.value.code == 2


def test_block_and_suspend_from_the_command_line(run: Runner, tmp_path: Path) -> None:
    permit_id, token = issue_one(run)
    blocked = run("holders", "block", IQAMA, "--reason", "forged passport")
    assert blocked.code == 0, blocked.err
    assert f"revoked {permit_id}" in blocked.out
    assert run("verify", token, "--checkpoint", "shumaisi", "--at", INSIDE).code == 1
    refused = run(
        "issue", "--holder", IQAMA, "--category", "domestic_worker", "--from", "2027-04-10",
        "--until", "2027-05-20", "--sponsor", NATIONAL_ID,
    )  # fmt: skip
    assert "holder_blocked" in refused.error_line()
    source = write_csv(tmp_path / "in.csv", CSV_ROWS[2], CSV_ROWS[0])
    in_csv = run("issue", "--csv", source, "-o", tmp_path / "out")
    assert f"{source}:3: holder_blocked" in in_csv.error_line()
    assert run("holders", "unblock", IQAMA, "--reason", "cleared").code == 0
    assert issue_one(run)[0] == "0.1"
    assert run("holders", "unblock", IQAMA, "--reason", "cleared").code == 2

    assert run(*ADD_EST_7).code == 0
    suspended = run("establishments", "suspend", "EST-7", "--reason", "licence", "--keep-permits")
    assert suspended.code == 0, suspended.err
    assert "EST-7 suspended; 0 permit(s) revoked" in suspended.out
    employee = f"{IQAMA_2},establishment_employee,1,2027-04-10,2027-05-20,,EST-7,,"
    staff = run("issue", "--csv", write_csv(tmp_path / "s.csv", employee), "-o", tmp_path / "s")
    assert "establishment_suspended" in staff.error_line()
    assert run("establishments", "reinstate", "EST-7", "--reason", "restored").code == 0
    assert run("establishments", "suspend", "EST-9", "--reason", "licence").code == 2


def trust_keys(data_dir: Path) -> Keyring:
    """The trust-list keys in the registry of `data_dir`."""

    async def read() -> Keyring:
        registry = await Registry.open(f"sqlite+aiosqlite:///{data_dir / 'registry.sqlite3'}")
        try:
            return (await load_keyring(registry, "trust")).keyring
        finally:
            await registry.close()

    return asyncio.run(read())


def test_trust_list_keys_generate_and_list(run: Runner, data_dir: Path) -> None:
    run("keys", "generate")
    first = run("keys", "generate", "--trust", "--label", "trust one")
    assert first.code == 0
    (entry,) = trust_keys(data_dir)
    assert entry.not_before == ISSUE_AT  # the first one signs at once: nothing announces it
    assert entry.public_key in first.out
    ahead = run("keys", "generate", "--trust")
    assert ahead.code == 0
    new = next(e for e in trust_keys(data_dir) if e.kid != entry.kid)
    # Published now, signing after the policy's offline bound: devices learn it first.
    assert new.not_before == ISSUE_AT + default_policy().offline_revocation_bound
    assert run("keys", "generate", "--trust", "--lead", "60").code == 0
    assert len(trust_keys(data_dir)) == 3
    assert len(keyring(data_dir)) == 1  # the permit keyring holds no trust-list key
    listed = run("keys", "list").out
    permit_part, trust_part = listed.split("trust-list keys")
    assert entry.kid not in permit_part
    assert f"  {entry.kid}: {entry.public_key}" in trust_part
    assert f"  {new.kid}: {new.public_key}" in trust_part


# --- revoke, permits show|list|export, audit, credentials list --json (issue #14) ----------

ISSUED_AT = dt.datetime.fromtimestamp(ISSUE_AT, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
"""The CLI's clock in RFC 3339, as the JSON and CSV outputs write times."""


def test_revoke_takes_effect_for_verify_and_shows_in_the_audit(run: Runner) -> None:
    permit_id, token = issue_one(run)
    assert run("verify", token, "--checkpoint", "shumaisi", "--at", INSIDE).code == 0
    revoked = run("revoke", permit_id, "--reason", "booking cancelled")
    assert revoked.code == 0, revoked.err
    assert revoked.out.startswith(f"revoked {permit_id} (seq 1, booking cancelled, by cli:")
    verdict = run("verify", token, "--checkpoint", "shumaisi", "--at", INSIDE)
    assert (verdict.code, "revoked" in verdict.out) == (1, True)
    again = run("revoke", permit_id, "--reason", "twice")
    assert "(seq 1, booking cancelled" in again.out  # the first record stands
    entries = msgspec.json.decode(run("audit", "--permit", permit_id, "--json").out)["entries"]
    assert [(e["action"], e["code"]) for e in entries] == [
        ("revoke", "booking cancelled"),
        ("issue", None),
    ]
    assert entries[0]["actor"].startswith("cli:")
    assert entries[0]["at"] == ISSUED_AT
    assert run("permits", "show", permit_id).out.startswith(f"permit {permit_id}: revoked")


@pytest.mark.parametrize(
    "argv",
    [
        ["revoke", "0.0"],  # no reason
        ["revoke", "0.0", "--reason", "x"],  # too short for the audit log
        ["revoke", "00.0", "--reason", "booking cancelled"],
        ["revoke", "0.0\n", "--reason", "booking cancelled"],
        ["revoke", "٠.٠", "--reason", "booking cancelled"],
        ["permits", "show", "0"],
        ["permits", "list", "--limit", "0"],
        ["permits", "list", "--limit", "501"],
        ["permits", "list", "--limit", "١"],
        ["permits", "list", "--state", "deleted"],
        ["permits", "list", "--cursor", "not a cursor"],
        ["audit", "--limit", "1\n"],
        ["audit", "--permit", "1"],
        ["permits", "export", "--csv", "--json"],
    ],
)
def test_query_arguments_are_checked_as_the_api_checks_them(run: Runner, argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run(*argv)
    assert info.value.code == 2


def test_an_unknown_permit_or_a_forged_cursor_is_one_error_line(run: Runner) -> None:
    issue_one(run)
    missing = run("revoke", "0.9", "--reason", "booking cancelled")
    assert (missing.code, "permit_not_found" in missing.error_line()) == (2, True)
    assert "permit_not_found" in run("permits", "show", "3.3").error_line()
    forged = run("permits", "list", "--cursor", "WyJwZXJtaXRzIiwiQUFBQUFBQUEiLDAsMF0")
    assert (forged.code, "invalid_cursor" in forged.error_line()) == (2, True)


def test_permits_show_and_list(run: Runner) -> None:
    first, _ = issue_one(run)
    second, token = issue_one(run, holder=IQAMA_2)
    shown = msgspec.json.decode(run("permits", "show", second, "--json").out)
    assert (shown["permit_id"], shown["holder"], shown["token"]) == (second, IQAMA_2, token)
    assert shown["issued_at"] == ISSUED_AT
    text = run("permits", "show", first).out
    assert f"holder {IQAMA}, domestic_worker (absher), season 1" in text
    page = run("permits", "list", "--limit", "1")
    assert page.code == 0
    assert page.out.split()[0] == second  # newest first
    assert page.err.startswith("more: --cursor ")
    cursor = page.err.split()[-1]
    rest = run("permits", "list", "--limit", "1", "--cursor", cursor)
    assert (rest.out.split()[0], rest.err) == (first, "")
    assert run("permits", "list", "--holder", IQAMA, "--json").out.count('"permit_id"') == 1
    body = msgspec.json.decode(run("permits", "list", "--state", "revoked", "--json").out)
    assert body == {"permits": [], "next": None}
    assert run("permits", "list", "--channel", "muqeem").out.strip() == "no permit matches"


def test_permits_export_streams_every_page_as_csv_or_json_lines(
    run: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("issuer.store.paging.MAX_LIMIT", 2)  # several pages for 5 permits
    monkeypatch.setattr("api.cli.permits.MAX_LIMIT", 2)
    source = write_csv(tmp_path / "in.csv", *CSV_ROWS)
    assert run("issue", "--csv", source, "-o", tmp_path / "qr").code == 0
    issue_one(run, holder=IQAMA_2)
    every = run("permits", "export", "--csv")
    assert every.code == 0, every.err
    rows = list(csv.DictReader(every.out.splitlines()))
    assert [r["permit_id"] for r in rows] == ["0.4", "0.3", "0.2", "0.1", "0.0"]
    assert set(rows[0]) == {
        "permit_id", "state", "holder", "category", "channel", "season", "establishment",
        "not_before", "expires", "issued_at", "supersedes", "kid", "token",
    }  # fmt: skip
    assert rows[-1]["issued_at"] == ISSUED_AT
    assert every.err.strip() == "exported 5 permit(s)"
    out = tmp_path / "dependents.jsonl"
    lines = run("permits", "export", "--json", "--category", "dependent", "-o", out)
    assert lines.code == 0, lines.err
    (dependent,) = [msgspec.json.decode(line) for line in out.read_text().splitlines()]
    assert (dependent["permit_id"], dependent["category"]) == ("0.2", "dependent")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    mixed = run("permits", "export", "--csv", "--since", "now")
    assert "--since" in mixed.error_line()
    nowhere = run("permits", "export", "--holder", IQAMA)
    assert "-o DIRECTORY" in nowhere.error_line()


def test_audit_filters_from_the_command_line(run: Runner) -> None:
    permit_id, _ = issue_one(run)
    other, _ = issue_one(run, holder=IQAMA_2)
    assert run("revoke", other, "--reason", "booking cancelled").code == 0
    lines = run("audit").out.splitlines()
    assert [line.split()[4] for line in lines[:3]] == ["revoke", "issue", "issue"]
    assert run("audit", "--holder", IQAMA).out.count(" issue ") == 1
    assert run("audit", "--holder", IQAMA_2).out.count(" revoke ") == 1
    assert run("audit", "--action", "revoke").out.split()[5] == other
    # The CLI's clock is ISSUE_AT: `--from` it (inclusive) has every row, `--to` (exclusive)
    # none of those written at ISSUE_AT.
    assert len(run("audit", "--from", str(ISSUE_AT), "--action", "issue").out.splitlines()) == 2
    assert run("audit", "--to", str(ISSUE_AT), "--action", "issue").out.strip() == (
        "no audit entry matches"
    )
    page = run("audit", "--limit", "1", "--json")
    body = msgspec.json.decode(page.out)
    assert [e["action"] for e in body["entries"]] == ["revoke"]
    assert body["next"] is not None
    rest = msgspec.json.decode(
        run("audit", "--limit", "500", "--cursor", body["next"], "--json").out
    )
    assert permit_id in {e["permit_id"] for e in rest["entries"]}
    assert rest["next"] is None


def test_credentials_list_as_json(run: Runner) -> None:
    assert run("credentials", "create", "--role", "admin", "--label", "duty officer").code == 0
    assert run("credentials", "list", "--json").out.strip() != "[]"
    (admin,) = msgspec.json.decode(run("credentials", "list", "--json").out)
    assert (admin["role"], admin["label"], admin["disabled_at"]) == ("admin", "duty officer", None)
    assert admin["created_at"].endswith("Z")
    assert "key" not in " ".join(admin)
    assert run("credentials", "disable", admin["id"]).code == 0
    (disabled,) = msgspec.json.decode(run("credentials", "list", "--json").out)
    assert disabled["disabled_at"] is not None
