"""Per-object retry backoff: exponential, jittered, capped, reset on success (pure).

A pass that hit an API error (a child the apiserver rejects with 422, a 500, a lost
connection) is retried after `delay(n)` for its n-th consecutive failure:

    min(cap, base * factor**(n-1)) * (1 - jitter * u),  u uniform in [0, 1)

so retries of many failing objects spread out instead of hitting the apiserver in step, and a
permanently failing object settles at one attempt per `cap` seconds. A successful pass forgets
the object's count. The clock and the random source are injected: the tests run it on a fake
clock. `state()` is what the metrics show (attempts, next retry time).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 300.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (
            self.base_s > 0
            and self.factor >= 1
            and self.cap_s >= self.base_s
            and 0 <= self.jitter < 1
        ):
            raise ValueError(f"invalid backoff policy {self}")

    def delay(self, attempt: int, u: float) -> float:
        """Seconds to wait before retry number `attempt` (1-based), for a draw `u` in [0, 1)."""
        exp = min(attempt - 1, 64)  # large enough to reach any cap, small enough not to overflow
        raw = min(self.cap_s, self.base_s * self.factor**exp)
        return raw * (1.0 - self.jitter * u)


@dataclass(frozen=True)
class RetryState:
    attempts: int
    """Consecutive failed passes."""
    delay_s: float
    next_at: float
    """Clock time of the next retry (the injected clock's units)."""


class Backoff:
    """Retry bookkeeping of every object, by uid (thread-safe)."""

    def __init__(
        self,
        policy: BackoffPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy or BackoffPolicy()
        self._clock = clock
        self._rand = rand
        self._lock = threading.Lock()
        self._state: dict[str, RetryState] = {}

    def failed(self, uid: str) -> RetryState:
        """Record a failed pass; returns when to retry."""
        with self._lock:
            attempts = self._state[uid].attempts + 1 if uid in self._state else 1
            delay = self.policy.delay(attempts, self._rand())
            state = RetryState(attempts, delay, self._clock() + delay)
            self._state[uid] = state
            return state

    def succeeded(self, uid: str) -> bool:
        """Forget the object's failures; True when it had some."""
        with self._lock:
            return self._state.pop(uid, None) is not None

    def due(self, uid: str) -> bool:
        """Whether a pass may run now: no failures pending, or the retry time has come."""
        with self._lock:
            state = self._state.get(uid)
        return state is None or self._clock() >= state.next_at

    def state(self, uid: str) -> RetryState | None:
        with self._lock:
            return self._state.get(uid)

    def snapshot(self) -> dict[str, RetryState]:
        with self._lock:
            return dict(self._state)

    def forget(self, uid: str) -> None:
        with self._lock:
            self._state.pop(uid, None)
