"""The command line's global options: --version, options after the command, seasons by code."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from api import cli
from checkpoint.policy_file import default_policy
from checkpoint.token import decode_payload, split_token
from tests.api.test_cli import IQAMA, NATIONAL_ID, Runner, fixed_environment, write_csv

__all__ = ["fixed_environment"]  # the autouse fixture: no CHECKPOINT_* leaks, a fixed clock
UMRAH = default_policy().seasons[2]


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Runner:
    return Runner(tmp_path / "data", capsys)


def season_of(token: str) -> int:
    return decode_payload(split_token(token).payload).season


DOMESTIC = ["--category", "domestic_worker", "--sponsor", NATIONAL_ID]
WINDOW = ["--from", "2027-04-10", "--until", "2027-05-20"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"checkpoint {importlib.metadata.version('checkpoint')}\n"


def main(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("where", ["before", "after"])
def test_data_dir_before_or_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """`issue` is a command, `keys list` a command of a group: both take them after."""
    data = tmp_path / "data"
    argv: list[str | Path]
    issue: list[str | Path] = ["issue", "--holder", IQAMA, *DOMESTIC, *WINDOW]
    argv = ["--data-dir", data, *issue] if where == "before" else [*issue, "--data-dir", data]
    code, out, err = main(capsys, *argv)
    assert code == 0, err
    assert (data / "registry.sqlite3").exists()
    listing: list[str | Path] = ["keys", "list"]
    argv = ["--data-dir", data, *listing] if where == "before" else [*listing, "--data-dir", data]
    code, out, err = main(capsys, *argv)
    assert code == 0, err
    assert "active" in out  # the key the issue created, found in that data directory


def test_data_dir_after_the_command_wins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    code, _, err = main(
        capsys, "--data-dir", first, "issue", "--holder", IQAMA, *DOMESTIC, *WINDOW,
        "--data-dir", second,
    )  # fmt: skip
    assert code == 0, err
    assert (second / "registry.sqlite3").exists()
    assert not first.exists()


def test_policy_after_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-policy.toml"
    code, _, err = main(capsys, "policy", "show", "--policy", missing)
    assert code == 2
    assert str(missing) in err


@pytest.mark.parametrize(("ref", "season"), [("hajj-1448", 1), ("1", 1)])
def test_season_by_code_or_id(run: Runner, ref: str, season: int) -> None:
    result = run("issue", "--holder", IQAMA, *DOMESTIC, "--season", ref, *WINDOW)
    assert result.code == 0, result.err
    assert season_of(result.out.splitlines()[1]) == season


def test_the_umrah_season_by_code_is_not_the_default(run: Runner) -> None:
    """`--season umrah-1448` reaches the rules of season 2: a domestic worker's permit is
    not of that season's categories (the default season 1 issues it, above)."""
    result = run("issue", "--holder", IQAMA, *DOMESTIC, "--season", UMRAH.code, *WINDOW)
    assert result.code == 2
    assert "category_not_in_season" in result.error_line()


@pytest.mark.parametrize("ref", ["٢", "02", "hajj", "HAJJ-1448"])
def test_season_spelled_otherwise_is_refused(run: Runner, ref: str) -> None:
    result = run("issue", "--holder", IQAMA, *DOMESTIC, "--season", ref, *WINDOW)
    assert result.code == 2
    assert "--season: unknown season" in result.error_line()


def test_season_by_code_in_csv(run: Runner, tmp_path: Path) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        f"{IQAMA},domestic_worker,hajj-1448,2027-04-10,2027-05-20,,,,{NATIONAL_ID}",
        f"2123456705,domestic_worker, 1 ,2027-04-10,2027-05-20,,,,{NATIONAL_ID}",
    )
    result = run("issue", "--csv", source, "-o", tmp_path / "out")
    assert result.code == 0, result.err
    bad = write_csv(
        tmp_path / "bad.csv", f"{IQAMA},domestic_worker,١,2027-04-10,2027-05-20,,,,{NATIONAL_ID}"
    )
    result = run("issue", "--csv", bad, "-o", tmp_path / "bad")
    assert result.code == 2
    assert f"{bad}:2: season: unknown season" in result.error_line()
