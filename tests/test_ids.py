"""Ids: random, distinct across threads and across a fork."""

from __future__ import annotations

import os
import re
import sys
import threading

import pytest

from tallystick.server.ids import PREFIXES, new_id


def test_id_has_its_kind_prefix_and_120_random_bits() -> None:
    value = new_id("signal")
    assert re.fullmatch(r"sig_[a-z2-7]{24}", value), value


def test_ids_made_in_parallel_threads_are_all_distinct() -> None:
    made: list[list[str]] = [[] for _ in range(8)]

    def make(slot: list[str]) -> None:
        slot.extend(new_id("ledger_entry") for _ in range(5_000))

    threads = [threading.Thread(target=make, args=(slot,)) for slot in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [value for slot in made for value in slot]
    assert len(set(every)) == len(every) == 40_000


@pytest.mark.skipif(sys.platform == "win32", reason="os.fork is POSIX only")
def test_forked_child_does_not_repeat_the_parents_ids() -> None:
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


def test_every_kind_has_a_distinct_prefix() -> None:
    assert len(set(PREFIXES.values())) == len(PREFIXES)
