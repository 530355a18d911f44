"""Pods in rotation per role, and how the router picks one (pure state + selection, no I/O).

A pod enters rotation only after a health check answered 200; it leaves on a failed check
(including 503 from a draining engine), on a connection-level failure seen by a request
(passive), or when discovery stops listing it (a terminating pod drops out of its headless
Service). Selection: least outstanding requests, ties broken at random; for encoders,
rendezvous hashing on the item's content with a load bound (an encoder keeps its items while
its load stays under `load_factor` x the mean), so the same image reaches the encoder that has
seen it.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(eq=False)
class Pod:
    role: str
    host: str
    port: int
    dp_size: int = 1
    healthy: bool | None = None  # None: not checked yet
    inflight: int = 0
    rank_inflight: list[int] = field(default_factory=list)
    consecutive_failures: int = 0

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


class Pool:
    """The pods of one role, keyed by host:port."""

    def __init__(self, role: str, port: int, dp_size: int) -> None:
        self.role, self.port, self.dp_size = role, port, dp_size
        self.pods: dict[str, Pod] = {}

    def sync(self, addresses: Iterable[tuple[str, int]]) -> list[Pod]:
        """Make the pool match discovery; returns the pods that are new (to check at once)."""
        wanted = {Pod(self.role, h, p, self.dp_size).key: (h, p) for h, p in addresses}
        for key in list(self.pods):
            if key not in wanted:
                del self.pods[key]
        new: list[Pod] = []
        for key, (h, p) in wanted.items():
            if key not in self.pods:
                self.pods[key] = pod = Pod(self.role, h, p, self.dp_size)
                new.append(pod)
        return new

    def in_rotation(self) -> list[Pod]:
        return [p for p in self.pods.values() if p.healthy]

    def candidates(self, exclude: set[str]) -> list[Pod]:
        """Healthy pods not yet tried by this request; all healthy ones if every one was tried."""
        healthy = self.in_rotation()
        fresh = [p for p in healthy if p.key not in exclude]
        return fresh or healthy


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
