"""The operator process's resident memory: keep it close to what the process holds.

What we measured (bench/operator_bench.py, glibc, CPython 3.11): the objects a fleet of
EPDClusters keeps alive (the watch-fed caches, the bodies) are a fraction of the RSS. The rest
is memory glibc's allocator has taken back from us but not given back to the kernel:

- every reconcile pass and every watch event parses and renders JSON in a worker or reflector
  thread, and glibc gives each new thread its own arena (up to 8 per core), so the same
  transient peak is kept once per arena;
- freed chunks inside a heap stay resident until `malloc_trim` releases their pages (glibc
  trims on its own only at the top of the main heap). Right after the operator's imports,
  `malloc_trim(0)` alone gives back about 10 MB;
- objects in reference cycles (asyncio tasks and futures, exceptions, closures: kopf and the
  HTTP clients make many) are freed only by a full garbage collection, and CPython runs one
  only when the objects that reached the oldest generation since the last one are a quarter
  of all long-lived objects: with a fleet's caches alive, that is rare, so cyclic garbage of a
  whole wave stays.

So the entry point limits the arenas (`limit_arenas`, before any thread starts) and the
runtime calls `trim` every `TRIM_INTERVAL_S` seconds: a full collection, then malloc_trim.
The glibc calls are no-ops where the C library has no such call (musl, macOS), and
`MALLOC_ARENA_MAX` in the environment (glibc's own knob) wins.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os

# glibc's <malloc.h>: mallopt(M_ARENA_MAX, n).
M_ARENA_MAX = -8
# Two arenas: CPython's allocations run under the GIL, so more arenas buy almost no
# parallelism here; what they buy is one copy of every transient peak per thread.
ARENAS = 2
# How often the runtime collects and hands freed heap pages back: a full collection of a
# fleet's objects and malloc_trim's walk of the free lists take a fraction of a second.
TRIM_INTERVAL_S = 30.0
ARENA_ENV = "MALLOC_ARENA_MAX"


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library of this process, if it has both calls (glibc)."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS, environ: dict[str, str] | None = None) -> bool:
    """Cap glibc's malloc arenas (call before any thread starts). False when not applied: the
    environment sets MALLOC_ARENA_MAX (glibc read it at startup), or there is no glibc."""
    env = os.environ if environ is None else environ
    if ARENA_ENV in env:
        return False
    libc = _libc()
    return libc is not None and bool(libc.mallopt(M_ARENA_MAX, arenas))


def trim() -> bool:
    """Free cyclic garbage, then give freed heap pages back to the kernel. True when glibc
    released some."""
    gc.collect()
    libc = _libc()
    return libc is not None and bool(libc.malloc_trim(0))
