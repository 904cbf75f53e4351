"""api.runtime.changes: the cross-process change signal."""

from __future__ import annotations

from pathlib import Path

from api.runtime.changes import ChangeSignal


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
