"""Ids: random, distinct across threads and across a fork, and sorted by creation time."""

from __future__ import annotations

import os
import re
import sys
import threading
import time

import pytest

from tallystick.server.ids import PREFIXES, _spell_time, new_id


def test_id_prefix_and_length() -> None:
    value = new_id("signal")
    assert re.fullmatch(r"sig_[a-z2-7]{24}", value), value


def test_ids_distinct_across_threads() -> None:
    ids_by_thread: list[list[str]] = [[] for _ in range(8)]

    def make(slot: list[str]) -> None:
        slot.extend(new_id("ledger_entry") for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(slot,)) for slot in ids_by_thread]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    all_ids = [value for slot in ids_by_thread for value in slot]
    assert len(all_ids) == 40_000
    assert len(set(all_ids)) == 40_000


@pytest.mark.skipif(sys.platform == "win32", reason="os.fork is POSIX only")
def test_ids_distinct_after_fork() -> None:
    new_id("signal")  # fills this thread's buffer, which the child would inherit
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.write(write_end, ",".join(new_id("signal") for _ in range(10)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child_ids = pipe.read().decode().split(",")
    os.waitpid(pid, 0)
    parent_ids = [new_id("signal") for _ in range(10)]
    assert len(child_ids) == 10
    assert not set(child_ids) & set(parent_ids)


def test_prefixes_distinct() -> None:
    assert len(set(PREFIXES.values())) == len(PREFIXES)


def test_later_ids_sort_after() -> None:
    earlier = [new_id("signal") for _ in range(100)]
    time.sleep(0.002)
    later = new_id("signal")
    assert all(value < later for value in earlier)


@pytest.mark.parametrize("millisecond", [0, 25, 26, 31, 32, 1_733_400_000_000, 2**45 - 2])
def test_time_spelling_keeps_order(millisecond: int) -> None:
    # The standard base32 alphabet spells 25 and 26 as "z" and "2", which ASCII sorts the
    # other way round.
    assert _spell_time(millisecond) < _spell_time(millisecond + 1)
    assert len(_spell_time(millisecond)) == 9
