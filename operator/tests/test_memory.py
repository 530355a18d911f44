"""epd_operator.memory on this machine's C library (glibc): the arena cap and the trim do
what the operator relies on them for, and step aside where they must."""

from __future__ import annotations

import gc
import platform
import weakref
from pathlib import Path

import pytest

from epd_operator import memory

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the calls exist on glibc only"
)


def _anon_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


def test_the_environment_setting_wins() -> None:
    assert memory.limit_arenas(environ={memory.ARENA_ENV: "4"}) is False


def test_arenas_are_capped_without_one() -> None:
    assert memory.limit_arenas(environ={}) is True


def test_trim_gives_freed_heap_pages_back() -> None:
    # 128 MiB in 2 KiB blocks (malloc'd from the heap, not mmap'd one by one), then a block
    # after them, so freeing them leaves a hole glibc does not release on its own.
    blocks = [bytes(2048) for _ in range(64 * 1024)]
    pin = bytes(2048)
    del blocks
    held = _anon_kib()
    assert memory.trim() is True
    released = held - _anon_kib()
    assert released > 64 * 1024, f"trim released {released} KiB of 128 MiB freed"
    assert pin  # alive until here


class _Node:
    peer: _Node | None = None


def test_trim_frees_cyclic_garbage_first() -> None:
    gc.disable()  # no automatic collection between here and the trim
    try:
        a, b = _Node(), _Node()
        a.peer, b.peer = b, a
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None
        memory.trim()
        assert gone() is None
    finally:
        gc.enable()
