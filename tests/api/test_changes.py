"""api.runtime.changes: the cross-process change signal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from api.runtime.changes import ChangeSignal
from tests.conftest import ROOT


def test_change_signal_between_two_processes(tmp_path: Path) -> None:
    path = tmp_path / "changes"
    writer, reader = ChangeSignal(path), ChangeSignal(path)
    assert not reader.changed()
    writer.announce()
    assert reader.changed()
    assert not reader.changed()
    writer.announce()
    writer.announce()
    assert reader.changed()
    assert not reader.changed()


def test_change_signal_seen_at_start_is_not_news(tmp_path: Path) -> None:
    path = tmp_path / "changes"
    ChangeSignal(path).announce()
    assert not ChangeSignal(path).changed()


def test_an_announcement_of_another_process_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "changes"
    reader = ChangeSignal(path)
    script = "import sys, pathlib; from api.runtime.changes import ChangeSignal as C; "
    script += "C(pathlib.Path(sys.argv[1])).announce()"
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, cwd=ROOT)
    assert reader.changed()
    assert not reader.changed()


def test_the_file_is_private_allocated_and_written_in_place(tmp_path: Path) -> None:
    path = tmp_path / "changes"
    signal = ChangeSignal(path)
    before = path.stat()
    signal.announce()
    after = path.stat()
    assert before.st_mode & 0o777 == 0o600
    assert before.st_blocks > 0  # no hole that a store through the map would have to fill
    assert after.st_ino == before.st_ino  # mapped by every worker: never replaced


def test_a_signal_file_of_the_earlier_text_format_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "changes"
    path.write_bytes(b"4242 123456789012\n")  # a replaced file, as releases before wrote
    writer, reader = ChangeSignal(path), ChangeSignal(path)
    assert not reader.changed()
    writer.announce()
    assert reader.changed()


def test_a_data_directory_not_made_yet_is_made_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "node" / "changes"  # a verify node on PostgreSQL, started the first time
    writer, reader = ChangeSignal(path), ChangeSignal(path)
    assert path.parent.stat().st_mode & 0o777 == 0o700
    writer.announce()
    assert reader.changed()
