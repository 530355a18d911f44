"""Pods in rotation per role, and how the router picks one (state + selection, no I/O; time
is `now`, seconds of the monotonic clock, passed in by tests).

A pod enters rotation only after a health check answered 200. It leaves:
- at once on a hard signal: a check answered non-200 (503 from a draining engine), or a check
  or a request could not connect (nothing listens);
- on soft signals only after a run of them: `unhealthy_threshold` timed-out checks in a row (a
  busy engine answers /health late but is alive), or `eject_after_failures` failed requests in
  a row (passive outlier detection), which eject it for `base_ejection_s` x the number of its
  ejections (at most `max_ejection_s`), and never more than `max_ejection_percent` of the role
  at once (one pod always may be);
- when discovery stops listing it (a terminating pod drops out of its headless Service).
Panic: when fewer than `panic_threshold_percent` of a role's checked pods are in rotation, the
router routes to every pod that still accepts connections, soft-ejected ones included, rather
than overload the few left (Envoy's panic threshold).
Revisions: every pod carries the wiring revision discovery found it under (launch.routing);
a request is served by pods of one revision only, chosen among the revisions that have a
candidate in every role (a new revision takes traffic once it is complete), else among those
that have one in every role the request needs (`eligible_revisions`).
Selection: least outstanding requests, ties broken at random; for encoders, rendezvous hashing
on the item's content with a load bound (an encoder keeps its items while its load stays under
`load_factor` x the mean), so the same image reaches the encoder that has seen it. With
`max_inflight_per_pod`, a pod at the limit is not a candidate (the caller queues).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from epd_connector.launch.router_options import Overload

HARD = ("refused", "status")  # down reasons that take a pod out at once, even in panic


class Endpoint(NamedTuple):
    """One address discovery found: the pod's wiring revision and DP size come with it."""

    host: str
    port: int
    revision: str = ""
    dp_size: int = 0  # 0: the pool's


@dataclass(eq=False)
class Pod:
    role: str
    host: str
    port: int
    dp_size: int = 1
    revision: str = ""  # the wiring revision (routing.wiring_revision); "" without a table
    healthy: bool | None = None  # None: not checked yet
    inflight: int = 0
    rank_inflight: list[int] = field(default_factory=list)
    consecutive_failures: int = 0  # failed requests in a row (passive)
    health_timeouts: int = 0  # timed-out health checks in a row (active)
    down_reason: str | None = None  # why healthy is False: refused | status | timeout
    ejections: int = 0
    ejected_until: float = 0.0

    def __post_init__(self) -> None:
        if not self.rank_inflight:
            self.rank_inflight = [0] * self.dp_size

    @property
    def key(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.key}"

    def least_loaded_rank(self) -> int:
        return min(range(self.dp_size), key=lambda r: (self.rank_inflight[r], r))

    def acquire(self, rank: int = 0) -> None:
        self.inflight += 1
        self.rank_inflight[rank] += 1

    def release(self, rank: int = 0) -> None:
        self.inflight -= 1
        self.rank_inflight[rank] -= 1

    def in_rotation(self, now: float) -> bool:
        return bool(self.healthy) and now >= self.ejected_until

    @property
    def hard_down(self) -> bool:
        return self.healthy is False and self.down_reason in HARD


class Pool:
    """The pods of one role, keyed by host:port."""

    def __init__(
        self, role: str, port: int, dp_size: int, overload: Overload | None = None
    ) -> None:
        self.role, self.port, self.dp_size = role, port, dp_size
        self.overload = overload or Overload()
        self.pods: dict[str, Pod] = {}

    def sync(self, addresses: Iterable[tuple[str, int] | Endpoint]) -> list[Pod]:
        """Make the pool match discovery; returns the pods that are new (to check at once).
        An address that now belongs to another revision (a reused IP) is a new pod."""
        wanted: dict[str, Pod] = {}
        for addr in addresses:
            ep = Endpoint(*addr)
            pod = Pod(self.role, ep.host, ep.port, ep.dp_size or self.dp_size, ep.revision)
            wanted[pod.key] = pod
        for key in list(self.pods):
            if key not in wanted or wanted[key].revision != self.pods[key].revision:
                del self.pods[key]
        new: list[Pod] = []
        for key, pod in wanted.items():
            if key not in self.pods:
                self.pods[key] = pod
                new.append(pod)
        return new

    def in_rotation(self, now: float | None = None) -> list[Pod]:
        at = time.monotonic() if now is None else now
        return [p for p in self.pods.values() if p.in_rotation(at)]

    def panicking(self, now: float | None = None) -> bool:
        checked = sum(1 for p in self.pods.values() if p.healthy is not None)
        ready = len(self.in_rotation(now))
        return checked > 0 and ready * 100 < self.overload.panic_threshold_percent * checked

    def candidates(
        self,
        exclude: set[str],
        now: float | None = None,
        revisions: Collection[str] | None = None,
    ) -> list[Pod]:
        """Pods that may take a request now and were not yet tried by it (all of them if every
        one was tried): those in rotation, or in panic every pod not hard down; without the
        pods at `max_inflight_per_pod`; only of `revisions` when given."""
        ready = self.in_rotation(now)
        if self.panicking(now):
            ready = [p for p in self.pods.values() if p.healthy is not None and not p.hard_down]
        if revisions is not None:
            ready = [p for p in ready if p.revision in revisions]
        limit = self.overload.max_inflight_per_pod
        if limit:
            ready = [p for p in ready if p.inflight < limit]
        fresh = [p for p in ready if p.key not in exclude]
        return fresh or ready

    def health_result(self, pod: Pod, ok: bool, reason: str | None = None) -> bool:
        """Apply one health check's outcome (reason: refused | status | timeout when not ok);
        returns whether the pod's rotation state changed."""
        before = pod.healthy
        if ok:
            pod.healthy, pod.down_reason, pod.health_timeouts = True, None, 0
            return before is not True
        if reason == "timeout":
            pod.health_timeouts += 1
            if before is not None and pod.health_timeouts < self.overload.unhealthy_threshold:
                return False  # slow but alive, so far
        pod.healthy, pod.down_reason = False, reason or "status"
        return before is not False

    def request_failed(self, pod: Pod, now: float, *, refused: bool = False) -> bool:
        """Passive outlier detection for one failed request; returns whether the pod left."""
        if refused:
            changed = pod.healthy is not False
            pod.healthy, pod.down_reason = False, "refused"
            return changed
        pod.consecutive_failures += 1
        o = self.overload
        if pod.consecutive_failures < o.eject_after_failures:
            return False
        ejected = sum(1 for p in self.pods.values() if p.ejected_until > now and p is not pod)
        if ejected and (ejected + 1) * 100 > o.max_ejection_percent * len(self.pods):
            return False  # the share bound: keep serving with what is left
        pod.ejections += 1
        pod.ejected_until = now + min(o.base_ejection_s * pod.ejections, o.max_ejection_s)
        pod.consecutive_failures = 0
        return True

    def request_succeeded(self, pod: Pod, now: float) -> None:
        pod.consecutive_failures = 0
        if pod.ejections and now - pod.ejected_until > self.overload.max_ejection_s:
            pod.ejections = 0  # well behaved for a while: the next ejection is short again


def serving_revisions(
    pools: Mapping[str, Pool], roles: Iterable[str], now: float | None = None
) -> set[str]:
    """The revisions with a candidate pod in every one of `roles`."""
    found: set[str] | None = None
    for role in roles:
        revs = {p.revision for p in pools[role].candidates(set(), now)}
        found = revs if found is None else found & revs
    return found or set()


def eligible_revisions(
    pools: Mapping[str, Pool], needed: Iterable[str], now: float | None = None
) -> set[str]:
    """Where a request may go: the revisions complete in every role (a new revision takes
    traffic only once it has a pod of each); when none is, those complete in the roles this
    request needs (a text request in E/PD needs no encoder)."""
    return serving_revisions(pools, pools, now) or serving_revisions(pools, needed, now)


def least_loaded(pods: list[Pod], rng: random.Random | None = None) -> Pod | None:
    if not pods:
        return None
    low = min(p.inflight for p in pods)
    tied = [p for p in pods if p.inflight == low]
    return (rng or random).choice(tied)


def _score(content_key: str, pod: Pod) -> bytes:
    return hashlib.sha256(f"{content_key}|{pod.key}".encode()).digest()


def by_affinity(pods: list[Pod], content_key: str, load_factor: float) -> Pod | None:
    """Rendezvous-hash `content_key` over `pods`, skipping pods above the load bound."""
    if not pods:
        return None
    total = sum(p.inflight for p in pods)
    bound = max(1, math.ceil(load_factor * (total + 1) / len(pods)))
    ranked = sorted(pods, key=lambda p: _score(content_key, p), reverse=True)
    for pod in ranked:
        if pod.inflight < bound:
            return pod
    return least_loaded(pods)


def round_robin(pods: list[Pod], turn: int) -> Pod | None:
    """The `turn`-th pod in key order (the baseline affinity is measured against)."""
    if not pods:
        return None
    return sorted(pods, key=lambda p: p.key)[turn % len(pods)]
