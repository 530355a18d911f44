"""Whether this operator process still works, judged without asking the API.

`/healthz` (kopf's liveness endpoint) runs a probe (handlers) that must cost the apiserver
nothing: an idle operator makes no request at all. What it judges instead:

- each watch of the caches (`reconcile.cache.Reflector.state()`): its thread runs; its
  current watch has not overrun the timeout it asked for (a stream the apiserver never
  closed); the apiserver did not refuse our credentials (401/403) on its last request; and,
  while no watch is open (re-listing after failures, with a backoff), the last listing is no
  older than the grace period. A quiet open watch is not suspect in itself: the apiserver's
  bookmarks come about once a minute but may skip minutes on a kind nothing happens to
  (measured on kube-apiserver: 121 s), and a dead connection is found by TCP keepalive
  (`Kube.from_environment`), which breaks the stream and makes the reflector re-list;
- the last answer of any request we made (`Kube.unauthorized`): a 401 means our credentials
  stopped working (the ServiceAccount or its token is gone, e.g. after `helm uninstall`). An
  open watch keeps streaming after that (the apiserver authenticates a request once, when it
  starts), so this is seen by the next request: the next pass with something to write, or a
  watch renewal.

kopf's own EPDCluster watch is not judged here: it is renewed every 30 min, and one stuck
ends at its client timeout (handlers.configure). Pure: the caller passes the clock reading.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Re-listing has failed for this long: the cache is lost.
QUIET_GRACE_S = 180.0


@dataclass(frozen=True)
class WatchState:
    """One watch, as its reflector last saw it (monotonic seconds)."""

    name: str
    running: bool
    alive_at: float | None  # the last listing, event or bookmark (or the start)
    deadline: float | None  # when the watch now open must have ended; None: none open
    error_status: int | None  # HTTP status of the last failure; None since a listing


def watch_problems(
    states: Iterable[WatchState], now: float, grace_s: float = QUIET_GRACE_S
) -> list[str]:
    """Why the watches cannot be trusted, one line per bad watch; empty when all are alive."""
    out: list[str] = []
    for s in states:
        if not s.running:
            out.append(f"{s.name}: the watch thread is not running")
        elif s.error_status in (401, 403):
            out.append(f"{s.name}: the API refused our credentials (HTTP {s.error_status})")
        elif s.deadline is not None and now > s.deadline:
            out.append(
                f"{s.name}: the watch outlived its timeout by {now - s.deadline:.0f}s (stuck)"
            )
        elif s.alive_at is None or (s.deadline is None and now - s.alive_at > grace_s):
            # No watch open (re-listing after failures) for too long.
            quiet = "ever" if s.alive_at is None else f"{now - s.alive_at:.0f}s"
            out.append(
                f"{s.name}: nothing from the API for {quiet}"
                + (f" (last error HTTP {s.error_status})" if s.error_status else "")
            )
    return out
