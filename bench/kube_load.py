"""The benchmark's load generator and observer: direct API requests over one client.

One `kubectl` per object (or one per share of a List) made the load generator what a 1,000-object
run measured: each kubectl parses its input, discovers the API and sends its requests one after
another, and `kubectl get -w -o json` pretty-prints every event for the bench to re-parse. Here
the EPDClusters are created and patched by a thread pool over one keep-alive connection pool
(the operator's own `Session`, with the kubeconfig's credentials: the same requests kubectl
would make, minus discovery and client-side apply's annotation), and the watches are the API's
own line-delimited streams, each event timestamped on arrival.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from epd_operator.reconcile import kube as k
from epd_operator.reconcile.login import login

RETRIES = 5
# Throttled or failed answers a loaded apiserver may give a burst; retried, not fatal.
RETRIED = (429, 500, 503, 504)


class ApiError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status


def api_client(kubeconfig: Path, pool: int) -> k.Session:
    """The operator's own HTTP session, logged in with `kubeconfig`, whose pool holds `pool`
    keep-alive connections (one per load thread, plus the watches)."""
    return k.Session(lambda: login(str(kubeconfig)), pool_size=pool)


def _send(api: k.Session, method: str, path: str, body: Any, content_type: str) -> None:
    headers = {"Accept": "application/json", "Content-Type": content_type}
    resp = api.request(method, path, headers, k.encode(body), preload=True)
    if not 200 <= resp.status < 300:
        raise ApiError(resp.status, resp.data)


def _retrying(call: Callable[[], object]) -> None:
    """`call`, retried on a throttled or failed (5xx) answer: a loaded apiserver may shed a
    burst, and a lost create would stall the run rather than fail it."""
    for attempt in range(RETRIES):
        try:
            call()
            return
        except ApiError as exc:
            if exc.status not in RETRIED or attempt == RETRIES - 1:
                raise
            time.sleep(0.2 * 2**attempt)


def _pooled(calls: list[Callable[[], object]], workers: int) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done in [pool.submit(_retrying, c) for c in calls]:
            done.result()


def create_all(api: k.Session, namespace: str, items: list[dict[str, Any]], workers: int) -> None:
    """POST each EPDCluster, `workers` requests in flight at once."""
    path = k.EPDCLUSTER.base(namespace)

    def one(obj: dict[str, Any]) -> Callable[[], object]:
        return lambda: _send(api, "POST", path, obj, "application/json")

    _pooled([one(o) for o in items], workers)


def patch_all(
    api: k.Session, namespace: str, patches: dict[str, dict[str, Any]], workers: int
) -> None:
    """A JSON merge patch of each named EPDCluster, `workers` requests in flight at once."""
    base = k.EPDCLUSTER.base(namespace)

    def one(name: str, patch: dict[str, Any]) -> Callable[[], object]:
        return lambda: _send(api, "PATCH", f"{base}/{name}", patch, "application/merge-patch+json")

    _pooled([one(n, p) for n, p in patches.items()], workers)


class StreamWatch:
    """A watch of one kind in one namespace: every event as (arrival monotonic time, event),
    resumed from the last resourceVersion when the server ends the stream (the operator's
    own watch reader, `Kube.watch_kind`)."""

    def __init__(self, api: k.Session, namespace: str, kind: str, selector: str = "") -> None:
        self._kube = k.Kube.over(api)
        service = k.kind_of({"apiVersion": "v1", "kind": "Service"})
        self._kind = k.EPDCLUSTER if kind == "epdc" else service
        self._namespace = namespace
        self.selector = selector
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.established = threading.Event()
        self._stop = False
        self._stream: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        rv = ""
        while not self._stop:
            try:
                self._stream = self._kube.watch_kind(
                    self._kind, self._namespace, self.selector, rv, 3600
                )
                self.established.set()
                for ev in self._stream:
                    if self._stop:  # the stream cannot be closed from another thread
                        return
                    rv = ev["object"]["metadata"].get("resourceVersion", rv)
                    if ev["type"] != "BOOKMARK":
                        self.events.append((time.monotonic(), ev))
            except k.KubeError as exc:
                if exc.status == 410:  # expired: start over (ADDED again, kept first)
                    rv = ""
                elif not self._stop:
                    time.sleep(0.5)

    def stop(self) -> None:
        """Stop reading; never raises (it runs in the bench's teardown, before the cluster's)."""
        self._stop = True
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):  # closing under a reading thread may fail
                stream.close()


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` onto `cpus` (threads it starts later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(int(tid), cpus)
