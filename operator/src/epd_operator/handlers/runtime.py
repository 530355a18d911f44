"""What the kopf handlers share in one operator process: the API client, the operator config,
the per-object serialisation, the reconcile thread pool and the metrics.

Resync: one asyncio task re-reconciles every known EPDCluster each `resync_seconds`.

Caches: the children we own and the nodes are watched once (`reconcile.cache`), started with
the resync loop; passes observe from them, so a resync with nothing to do makes no API
request. At startup, passes wait (up to `CACHE_SYNC_WAIT_S`) for the first listings rather
than each listing its children from the API: a restart with 1,000 EPDClusters costs six
LISTs, not six thousand. A change of a child that is news (not the echo of our own write)
runs a pass of its owner, like the kopf child watches did before.

Serialisation: kopf delivers one object's events one after another, but our resync loop and
child-object watchers run beside them. Every trigger therefore goes through `run()`, which
holds one asyncio lock per EPDCluster uid around the (blocking, thread-pooled) `reconcile()`.
Triggers coalesce: while one pass of an object is already waiting for the lock, another adds
nothing, since the waiting pass will read the newest body anyway. The EPDCluster's own events
(create / update / resume, `cause_of`) only queue a pass (`trigger`) and return, so what kopf
holds for a handler call is not kept while the pass waits for a worker (at N=1000, a wave of
changed EPDClusters peaked 9-11 MiB lower so). A child-triggered pass also waits
`child_debounce_s` before it queues for the lock, so a burst of child events makes one pass.

Retries: a pass that hit an API error (or crashed) is retried by this runtime, not by kopf
(kopf's TemporaryError would retry at a fixed delay and write its progress annotations onto
the EPDCluster each time): `reconcile.backoff` gives each object an exponential, jittered,
capped delay, reset by the next successful pass. While an object waits for its retry, resync
and child triggers skip it (they would defeat the backoff); a change of the EPDCluster itself
(create / update / resume) always runs at once. The retry count and the next retry time are
in the metrics (`epd_operator_retry_*`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from epd_operator import memory
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.metrics import Metrics
from epd_operator.reconcile.backoff import Backoff, BackoffPolicy
from epd_operator.reconcile.cache import Caches
from epd_operator.reconcile.core import Outcome, StatusMemory, reconcile
from epd_operator.reconcile.health import watch_problems
from epd_operator.reconcile.kube import Kube

# Triggers that only say "look again": skipped while the object waits for a backoff retry.
LOOK_AGAIN = frozenset({"resync", "child"})
# What an EPDCluster's own watch events cause (`cause_of`). One that coalesces into a waiting
# pass of another trigger names that pass (its metrics label): after a restart a child event's
# pass may already wait when the object is first listed, and the pass then is its resume.
OBJECT_CAUSES = frozenset({"create", "update", "resume"})
CACHE_SYNC_WAIT_S = 30.0

log = logging.getLogger(__name__)


def cause_of(held: Mapping[str, Any] | None, new: Mapping[str, Any], listed: bool) -> str | None:
    """The pass an EPDCluster's watch event asks for, given the body held before it: a first
    sighting is a resume (in a listing: it existed before this watch) or a create; a change of
    what users write (the spec, through metadata.generation, or labels and annotations) an
    update; anything else (status, written by us; resourceVersion) none."""
    if held is None:
        return "resume" if listed else "create"
    return "update" if _essence(held) != _essence(new) else None


def _essence(body: Mapping[str, Any]) -> tuple[object, ...]:
    meta = body.get("metadata") or {}
    return (meta.get("generation"), meta.get("labels") or {}, meta.get("annotations") or {})


@dataclass
class Options:
    """Process options (from the command line; see __main__)."""

    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    resync_seconds: float = 60.0
    workers: int = 8
    retry: BackoffPolicy = field(default_factory=BackoffPolicy)
    # A child-triggered pass waits this long first, so one pass follows a burst of child
    # events (a rolling update changes a StatefulSet's status several times a second)
    # instead of one status write per intermediate state.
    child_debounce_s: float = 1.0


class HealthError(RuntimeError):
    """The operator cannot do its job (credentials refused, watch lost); /healthz fails."""


class Runtime:
    def __init__(
        self,
        kube: Kube,
        cfg: OperatorConfig,
        options: Options,
        metrics: Metrics | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.kube = kube
        self.cfg = cfg
        self.options = options
        self.metrics = metrics or Metrics()
        self.memory = StatusMemory()
        self.backoff = backoff or Backoff(options.retry)
        self.metrics.retries.source = self._retry_rows
        self._retry_timers: dict[str, asyncio.TimerHandle] = {}
        self.executor = ThreadPoolExecutor(
            max_workers=options.workers, thread_name_prefix="reconcile"
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: set[str] = set()
        self._renamed: dict[str, str] = {}  # uid -> the kopf cause that joined its waiting pass
        # The newest body of every EPDCluster we serve, from the watch stream: what resync
        # passes and child events reconcile.
        self.bodies: dict[str, Mapping[str, Any]] = {}
        self.uid_by_name: dict[tuple[str, str], str] = {}
        self._resync_task: asyncio.Task[None] | None = None
        self._trim_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Outcome | None]] = set()
        kube.writes.listeners.append(self.metrics.count_write)
        kube.reads.listeners.append(self.metrics.count_read)
        self.caches = Caches(kube, options.namespaces, on_change=self._child_changed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._caches_waited = False

    def remember(self, uid: str, body: Mapping[str, Any]) -> None:
        meta = body.get("metadata") or {}
        if "managedFields" in meta:
            # Held for every EPDCluster, and nothing reads them.
            meta = {k: v for k, v in meta.items() if k != "managedFields"}
            body = {**body, "metadata": meta}
        self.bodies[uid] = body
        self.uid_by_name[(str(meta.get("namespace")), str(meta.get("name")))] = uid

    def newest(self, uid: str) -> Mapping[str, Any] | None:
        return self.bodies.get(uid)

    def start_resync(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self.caches.start()
        if self._resync_task is None:
            self._resync_task = asyncio.get_running_loop().create_task(
                self._resync_forever(), name="epd-resync"
            )
        if self._trim_task is None:
            self._trim_task = asyncio.get_running_loop().create_task(
                self._trim_forever(), name="epd-malloc-trim"
            )

    async def _first_listings(self) -> None:
        """Once, after the caches started: wait for their first listings (bounded). Later a
        stale cache makes a pass read the API instead (reconcile.core)."""
        if self._caches_waited or self._loop is None:
            return
        deadline = time.monotonic() + CACHE_SYNC_WAIT_S
        while not self.caches.synced() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if not self.caches.synced():
            log.warning(
                "caches not current after %.0fs; passes read the API meanwhile", CACHE_SYNC_WAIT_S
            )
        self._caches_waited = True

    def _child_changed(self, namespace: str, instance: str) -> None:
        """From a cache thread: a child of (namespace, instance) changed; reconcile the owner."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.poke_owner, namespace, instance)

    def poke_owner(self, namespace: str, instance: str) -> None:
        uid = self.uid_by_name.get((namespace, instance))
        if uid is not None:
            self.trigger("child", uid)

    def trigger(self, trigger: str, uid: str) -> None:
        """Queue a coalesced pass of `uid` on its newest body, without waiting for it: a
        waiting pass reads the newest body anyway. What the caller held (kopf's event) is not
        kept alive while the pass waits for its turn."""
        task = asyncio.get_running_loop().create_task(
            self.run(trigger, uid, functools.partial(self.newest, uid), coalesce=True)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop_resync(self) -> None:
        for task in (self._resync_task, self._trim_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._resync_task = self._trim_task = None

    async def _trim_forever(self) -> None:
        # The heap pages freed after a wave of passes or a re-list go back to the kernel
        # (epd_operator.memory says why glibc keeps them otherwise).
        while True:
            await asyncio.sleep(memory.TRIM_INTERVAL_S)
            memory.trim()

    async def _resync_forever(self) -> None:
        # One loop for all objects (rather than a kopf timer per object): no kopf finalizer
        # is needed, so EPDClusters stay deletable while the operator is down.
        while True:
            await asyncio.sleep(self.options.resync_seconds)
            uids = list(self.bodies)
            results = await asyncio.gather(
                *(
                    self.run("resync", uid, functools.partial(self.newest, uid), coalesce=True)
                    for uid in uids
                ),
                return_exceptions=True,
            )
            failed = sum(1 for r in results if isinstance(r, BaseException))
            if failed:
                log.warning("resync: %d of %d passes crashed (logged above)", failed, len(uids))

    async def run(
        self,
        trigger: str,
        uid: str,
        body: Callable[[], Mapping[str, Any] | None],
        coalesce: bool = False,
    ) -> Outcome | None:
        """One serialised reconcile of the EPDCluster `uid`. `body` is read after the lock is
        taken, so a pass that waited sees the newest object. None: coalesced or gone."""
        if coalesce and uid in self._waiting:
            if trigger in OBJECT_CAUSES:
                self._renamed[uid] = trigger
            return None
        if trigger in LOOK_AGAIN and not self.backoff.due(uid):
            return None
        lock = self._locks.setdefault(uid, asyncio.Lock())
        self._waiting.add(uid)
        waiting = True
        try:
            if trigger == "child" and self.options.child_debounce_s > 0:
                await asyncio.sleep(self.options.child_debounce_s)  # still "waiting"
            async with lock:
                waiting = False
                self._waiting.discard(uid)
                trigger = self._renamed.pop(uid, trigger)
                await self._first_listings()
                obj = body()
                if obj is None:
                    return None
                loop = asyncio.get_running_loop()
                try:
                    outcome = await loop.run_in_executor(
                        self.executor,
                        functools.partial(
                            reconcile, self.kube, obj, self.cfg, self.memory, cache=self.caches
                        ),
                    )
                except Exception:
                    self.metrics.reconcile_errors.labels(reason="Exception").inc()
                    log.exception("reconcile of %s crashed (trigger %s)", uid, trigger)
                    self._schedule_retry(uid, obj)
                    return None
        finally:
            # Cancelled while waiting. (Once running, `_waiting` may hold the next pass.)
            if waiting:
                self._waiting.discard(uid)
                self._renamed.pop(uid, None)
        self._record(trigger, uid, obj, outcome)
        if outcome.retry:
            self._schedule_retry(uid, obj)
        elif self.backoff.succeeded(uid):
            self._cancel_retry(uid)
        return outcome

    def _schedule_retry(self, uid: str, obj: Mapping[str, Any]) -> None:
        state = self.backoff.failed(uid)
        meta = obj.get("metadata") or {}
        log.warning(
            "%s/%s: retry #%d in %.1fs",
            meta.get("namespace"),
            meta.get("name"),
            state.attempts,
            state.delay_s,
        )
        self._cancel_retry(uid)
        loop = asyncio.get_running_loop()
        self._retry_timers[uid] = loop.call_later(state.delay_s, self._retry_now, uid)

    def _retry_now(self, uid: str) -> None:
        self._retry_timers.pop(uid, None)
        self.trigger("retry", uid)

    def _cancel_retry(self, uid: str) -> None:
        timer = self._retry_timers.pop(uid, None)
        if timer is not None:
            timer.cancel()

    def _retry_rows(self) -> list[tuple[str, str, int, float]]:
        """(namespace, name, attempts, next retry as Unix time) of objects waiting to retry."""
        now_wall, now_mono = time.time(), time.monotonic()
        rows = []
        for uid, state in self.backoff.snapshot().items():
            meta = (self.bodies.get(uid) or {}).get("metadata") or {}
            rows.append(
                (
                    str(meta.get("namespace")),
                    str(meta.get("name")),
                    state.attempts,
                    now_wall + (state.next_at - now_mono),
                )
            )
        return rows

    def _record(self, trigger: str, uid: str, obj: Mapping[str, Any], out: Outcome) -> None:
        self.metrics.reconcile_duration.labels(trigger=trigger).observe(out.duration_s)
        for reason in sorted({p.reason for p in out.problems}):
            self.metrics.reconcile_errors.labels(reason=reason).inc()
        if out.conditions:
            self.metrics.clusters.set(uid, out.conditions)
        meta = obj.get("metadata") or {}
        if out.writes or out.problems:
            log.info(
                "%s/%s [%s] %.3fs applied=%d pruned=%d status=%s events=%d problems=%d%s",
                meta.get("namespace"),
                meta.get("name"),
                trigger,
                out.duration_s,
                len(out.applied),
                len(out.pruned),
                out.status_written,
                out.events,
                len(out.problems),
                f" first: {out.problems[0].reason}: {out.problems[0].message}"
                if out.problems
                else "",
            )

    def check_health(self) -> dict[str, int]:
        """Raises HealthError when the API refused our credentials or a watch is lost
        (reconcile.health); makes no API request."""
        refused = self.kube.unauthorized
        if refused is not None:
            raise HealthError(f"the API refuses our credentials: {refused}")
        states = self.caches.states() if self._loop is not None else []
        problems = watch_problems(states, time.monotonic())
        if problems:
            raise HealthError("; ".join(problems))
        return {"epdclusters": len(self.bodies), "watches": len(states)}

    def forget(self, uid: str) -> None:
        body = self.bodies.pop(uid, None)
        if body is not None:
            meta = body.get("metadata") or {}
            self.uid_by_name.pop((str(meta.get("namespace")), str(meta.get("name"))), None)
        self.memory.forget(uid)
        self.backoff.forget(uid)
        self._cancel_retry(uid)
        self.metrics.clusters.forget(uid)
        lock = self._locks.get(uid)
        if lock is not None and not lock.locked():
            del self._locks[uid]

    def close(self) -> None:
        self.caches.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
