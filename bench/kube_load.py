"""The benchmark's load generator and observer: direct API requests over one client.

One `kubectl` per object (or one per share of a List) made the load generator what a 1,000-object
run measured: each kubectl parses its input, discovers the API and sends its requests one after
another, and `kubectl get -w -o json` pretty-prints every event for the bench to re-parse. Here
the EPDClusters are created and patched by a thread pool over one keep-alive connection pool
(the kubeconfig's own credentials: the same requests kubectl would make, minus discovery and
client-side apply's annotation), and the watches are the API's own line-delimited streams,
each event timestamped on arrival.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

GROUP, VERSION, PLURAL = "epd-operator.io", "v1alpha1", "epdclusters"
RETRIES = 5


def api_client(kubeconfig: Path, pool: int) -> Any:
    """A client from `kubeconfig` whose connection pool holds `pool` keep-alive connections
    (one per load thread, plus the watches)."""
    cfg = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=cfg
    )
    cfg.connection_pool_maxsize = pool
    return client.ApiClient(cfg)


def _retrying(call: Callable[[], object]) -> None:
    """`call`, retried on a throttled or failed (5xx) answer: a loaded apiserver may shed a
    burst, and a lost create would stall the run rather than fail it."""
    for attempt in range(RETRIES):
        try:
            call()
            return
        except ApiException as exc:
            if exc.status not in (429, 500, 503, 504) or attempt == RETRIES - 1:
                raise
            time.sleep(0.2 * 2**attempt)


def _pooled(calls: list[Callable[[], object]], workers: int) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done in [pool.submit(_retrying, c) for c in calls]:
            done.result()


def create_all(api: Any, namespace: str, items: list[dict[str, Any]], workers: int) -> None:
    """POST each EPDCluster, `workers` requests in flight at once."""
    custom = client.CustomObjectsApi(api)

    def one(obj: dict[str, Any]) -> Callable[[], object]:
        return lambda: custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, obj
        )

    _pooled([one(o) for o in items], workers)


def patch_all(api: Any, namespace: str, patches: dict[str, dict[str, Any]], workers: int) -> None:
    """A JSON merge patch of each named EPDCluster, `workers` requests in flight at once."""
    custom = client.CustomObjectsApi(api)

    def one(name: str, patch: dict[str, Any]) -> Callable[[], object]:
        return lambda: custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, patch
        )

    _pooled([one(n, p) for n, p in patches.items()], workers)


class StreamWatch:
    """A watch of one kind in one namespace: every event as (arrival monotonic time, event),
    resumed from the last resourceVersion when the server ends the stream."""

    def __init__(self, api: Any, namespace: str, kind: str, selector: str = "") -> None:
        if kind == "epdc":
            custom = client.CustomObjectsApi(api)
            self._list: Callable[..., Any] = lambda **kw: custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, **kw
            )
        else:
            core = client.CoreV1Api(api)
            self._list = lambda **kw: core.list_namespaced_service(namespace, **kw)
        self.selector = selector
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.established = threading.Event()
        self._stop = False
        self._resp: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _stream(self, rv: str) -> Iterable[str]:
        self._resp = self._list(
            watch=True,
            resource_version=rv,
            allow_watch_bookmarks=True,
            label_selector=self.selector,
            timeout_seconds=3600,
            _preload_content=False,
        )
        self.established.set()
        return iter_resp_lines(self._resp)  # type: ignore[no-untyped-call,no-any-return]

    def _run(self) -> None:
        rv = ""
        while not self._stop:
            try:
                for line in self._stream(rv):
                    ev = json.loads(line)
                    if ev["type"] == "ERROR":  # expired: start over (ADDED again, kept first)
                        rv = ""
                        break
                    rv = ev["object"]["metadata"].get("resourceVersion", rv)
                    if ev["type"] != "BOOKMARK":
                        self.events.append((time.monotonic(), ev))
            except Exception:
                if not self._stop:
                    time.sleep(0.5)

    def stop(self) -> None:
        """Stop reading; never raises (it runs in the bench's teardown, before the cluster's)."""
        self._stop = True
        resp, self._resp = self._resp, None
        if resp is not None:
            with contextlib.suppress(Exception):  # closing under a reading thread may fail
                resp.close()


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` onto `cpus` (threads it starts later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(int(tid), cpus)
