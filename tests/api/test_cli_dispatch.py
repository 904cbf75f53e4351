"""`checkpoint groups` and `checkpoint dispatch`: the API's routine from the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from api.cli import shared
from tests.api.test_cli import Runner

ISSUE_AT = 1_808_211_600 + 3 * 86400
"""Some days before the slots and the window below (2027-04-20 in the Umrah season)."""


@pytest.fixture(autouse=True)
def fixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CHECKPOINT_* variable leaks in from the shell; the CLI's clock is fixed."""
    for name in list(os.environ):
        if name.startswith("CHECKPOINT_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(shared, "clock_now", lambda: ISSUE_AT)


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Runner:
    return Runner(tmp_path / "data", capsys)


def issue_pilgrim(run: Runner, holder: str) -> str:
    result = run(
        "issue",
        "--holder",
        holder,
        "--category",
        "umrah",
        "--season",
        "2",
        "--from",
        "2027-04-25T00:00+03:00",
        "--until",
        "2027-04-27T00:00+03:00",
        "--establishment",
        "CO-1",
        "--birth-date",
        "1990-01-01",
    )
    assert result.code == 0, result.err
    return result.out.split()[2]


def test_a_group_and_its_bus_from_the_command_line(run: Runner, tmp_path: Path) -> None:
    added = run(
        "establishments",
        "add",
        "CO-1",
        "--channel",
        "nusuk",
        "--city",
        "makkah",
        "--name",
        "Co",
        "--class",
        "A",
    )
    assert added.code == 0, added.err
    permits = [issue_pilgrim(run, holder) for holder in ("P0000001", "P0000002")]
    group_file = tmp_path / "group.json"
    members = [{"permit": p, "name": f"Pilgrim {n}"} for n, p in enumerate(permits)]
    group_file.write_text(
        json.dumps({"name": "G", "leader": permits[0], "establishment": "CO-1", "members": members})
    )
    group = run("groups", "create", group_file, "--json")
    assert group.code == 0, group.err
    group_id = json.loads(group.out)["id"]
    order_file = tmp_path / "order.json"
    order = {
        "group": group_id,
        "vehicle": {"plate": "1234 ABC", "driver": "Saeed"},
        "route": {"origin_kind": "airport", "origin": "Jeddah airport", "checkpoint": "shumaisi"},
        "window": {"from": "2027-04-25T08:00:00+03:00", "until": "2027-04-25T14:00:00+03:00"},
    }
    order_file.write_text(json.dumps(order))
    made = run("dispatch", "create", order_file, "--idempotency-key", "bus-0001")
    assert made.code == 0, made.err
    assert "manifest part 1 of 1: CPM1:" in made.out
    again = run("dispatch", "create", order_file, "--idempotency-key", "bus-0001", "--json")
    assert json.loads(again.out)["id"] == 1
    code = json.loads(again.out)["manifests"][0]["token"]
    # The same bus without the key: its members are on an overlapping order.
    twice = run("dispatch", "create", order_file)
    assert twice.code == 2
    assert "member_on_other_order" in twice.error_line()
    revoked = run("revoke", permits[1], "--reason", "visa cancelled")
    assert revoked.code == 0, revoked.err
    scanned = run("verify", code, "--checkpoint", "shumaisi", "--at", "2027-04-25T10:00+03:00")
    assert scanned.code == 1
    assert "1 of 2 admitted, 1 refused" in scanned.out
    assert "seat   2 ****0002: INVALID revoked" in scanned.out
    elsewhere = run("verify", code, "--checkpoint", "al-kar", "--at", "2027-04-25T10:00+03:00")
    assert (elsewhere.code, "manifest_other_checkpoint" in elsewhere.out) == (1, True)
    cancelled = run("dispatch", "cancel", "1", "--json")
    assert (cancelled.code, json.loads(cancelled.out)["state"]) == (0, "cancelled")
    assert run("dispatch", "show", "1").out.startswith("dispatch order 1 (revision 1, cancelled)")


def test_bad_files_are_one_line_errors(run: Runner, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "G",')
    assert "not JSON" in run("groups", "create", broken).error_line()
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"name": "G", "leader": "0.1", "members": []}))
    assert "members" in run("groups", "create", wrong).error_line()
    assert "group_not_found" in run("groups", "show", "9").error_line()
    assert "dispatch_order_not_found" in run("dispatch", "cancel", "9").error_line()
