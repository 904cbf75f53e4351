"""The entry file: first entries shared by a node's workers, kept on restart, purged by index."""

from __future__ import annotations

import logging
import multiprocessing
import sqlite3
import stat
from pathlib import Path

import pytest

from issuer.store import entries as entries_module
from issuer.store.entries import COPY_EVERY, PURGE_EVERY, EntryFile

NOW = 1_800_000_000.0


def test_a_key_is_first_once_per_time_to_live(tmp_path: Path) -> None:
    entries = EntryFile(tmp_path / "entries.sqlite3")
    assert entries.claim(["z:1", "z:2", "z:1"], [60, 60, 60], NOW) == [True, True, False]
    assert entries.claim(["z:1"], [60], NOW + 59) == [False]
    # Expired exactly at its time to live, as Redis's EX: the next entry is a first again.
    assert entries.claim(["z:1"], [60], NOW + 60) == [True]
    assert entries.claim(["z:1"], [60], NOW + 119) == [False]
    entries.close()


def test_claims_survive_a_restart_and_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "entries.sqlite3"
    first = EntryFile(path)
    assert first.claim(["makkah:0.7"], [600], NOW) == [True]
    first.close()
    again = EntryFile(path)
    assert again.claim(["makkah:0.7"], [600], NOW + 1) == [False]
    again.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def _claim_all(path: Path, keys: list[str], start: multiprocessing.synchronize.Event) -> int:
    entries = EntryFile(path)
    start.wait()
    firsts = sum(sum(entries.claim([key], [600], NOW)) for key in keys)
    entries.close()
    return firsts


def test_two_worker_processes_admit_each_permit_once(tmp_path: Path) -> None:
    path = tmp_path / "entries.sqlite3"
    EntryFile(path).close()
    keys = [f"makkah:0.{i}" for i in range(2 * COPY_EVERY + 100)]  # copies and restarts meet
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(2) as pool:
            results = [pool.apply_async(_claim_all, (path, keys, start)) for _ in range(2)]
            start.set()
            firsts = [result.get(timeout=120) for result in results]
    assert sum(firsts) == len(keys)  # each key first in exactly one of the two processes


def test_expired_entries_are_purged_through_the_until_index(tmp_path: Path) -> None:
    path = tmp_path / "entries.sqlite3"
    entries = EntryFile(path)
    entries.claim([f"z:{i}" for i in range(PURGE_EVERY - 1)], [10] * (PURGE_EVERY - 1), NOW)
    assert entries.live(NOW) == PURGE_EVERY - 1
    # The claim that reaches PURGE_EVERY, after every earlier entry expired, purges them.
    entries.claim(["z:last"], [10], NOW + 10)
    entries.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT key FROM entries").fetchall() == [("z:last",)]
        plan = " ".join(
            str(row[-1])
            for row in db.execute(f"EXPLAIN QUERY PLAN {entries_module._PURGE}", (NOW,))
        )
    assert "entries_until" in plan  # a range of the index, not a scan of the table


def test_a_failed_copy_is_logged_and_the_claims_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "entries.sqlite3"
    entries = EntryFile(path)
    working = entries._copier
    broken = sqlite3.connect(tmp_path / "other.sqlite3", check_same_thread=False)
    broken.close()  # every statement on it raises sqlite3.ProgrammingError
    entries._copier = broken
    keys = [f"z:{i}" for i in range(COPY_EVERY + 1)]
    with caplog.at_level(logging.WARNING, logger="checkpoint"):
        for key in keys[:-1]:
            assert entries.claim([key], [600], NOW) == [True]
        copying = entries._copying
        assert copying is not None
        assert isinstance(copying.exception(timeout=60), sqlite3.Error)
        assert not entries.restart_due  # nothing to hand to the file's thread
        assert entries.claim(keys[-1:], [600], NOW) == [True]
    (record,) = [r for r in caplog.records if "write-ahead log" in r.getMessage()]
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], sqlite3.Error)
    assert not entries.restart_due
    # The next copy, on a working connection, restarts the log as before.
    entries._copier = working
    for i in range(COPY_EVERY):
        assert entries.claim([f"y:{i}"], [600], NOW) == [True]
    assert entries.claim_on_thread(["y:last"], [600], NOW).result(timeout=60) == [True]
    assert len([r for r in caplog.records if "write-ahead log" in r.getMessage()]) == 1
    assert entries.claim(keys, [600] * len(keys), NOW + 1) == [False] * len(keys)
    entries.close()


def test_the_log_restarts_after_each_copy_instead_of_growing(tmp_path: Path) -> None:
    path = tmp_path / "entries.sqlite3"
    wal = tmp_path / "entries.sqlite3-wal"
    entries = EntryFile(path)
    keys: list[str] = []
    sizes = []
    for round_ in range(8):
        assert not entries.restart_due
        for i in range(COPY_EVERY):  # the last of them hands the log to the copy thread
            keys.append(f"z:{round_}.{i}")
            assert entries.claim([keys[-1]], [600], NOW) == [True]
        # The file's thread runs in order: this claim comes after the copy, finds it done,
        # copies the last pages and restarts the log with its own write.
        keys.append(f"z:{round_}.last")
        assert entries.claim_on_thread([keys[-1]], [600], NOW).result(timeout=60) == [True]
        assert not entries.restart_due
        sizes.append(wal.stat().st_size)
    # Restarted, the log is written again from its beginning: the file keeps its first
    # round's size (without the restart, eight rounds would be eight times as long).
    assert sizes[-1] <= sizes[0] * 1.25
    assert entries.claim(keys, [600] * len(keys), NOW + 1) == [False] * len(keys)
    entries.close()
    again = EntryFile(path)  # nothing lost in the copies either
    assert again.live(NOW + 1) == len(keys)
    again.close()
