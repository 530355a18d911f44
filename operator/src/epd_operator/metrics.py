"""Prometheus metrics of the operator process, on their own registry and HTTP port.

- `epd_operator_reconcile_duration_seconds{trigger}`  histogram of reconcile passes (trigger:
  create, update, resume, child, resync, retry; a pass that a kopf cause joined while it
  waited is counted under that cause);
- `epd_operator_reconcile_errors_total{reason}`       passes that ended with a problem or a
  crash (reason: SpecInvalid, InsufficientResources, ReconcileError, Exception);
- `epd_operator_api_writes_total{kind,verb}`         every API write the operator made;
- `epd_operator_api_reads_total{kind,verb}`          every API read (list; watch: one per watch
  request) the operator's own client made (kopf's EPDCluster watch aside);
- `epd_operator_epdclusters{condition,status}`       EPDClusters by the status of each
  condition, as of their last reconcile pass (computed at scrape time);
- `epd_operator_retry_attempts{namespace,name}`      consecutive failed passes of each
  EPDCluster waiting for a backoff retry, and
  `epd_operator_retry_next_timestamp_seconds{namespace,name}` when that retry runs (Unix time).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from epd_operator.reconcile.status import CONDITION_ORDER

# Reconciles are tens of milliseconds on a quiet apiserver and seconds under load.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _ByCondition(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conditions: dict[str, dict[str, str]] = {}

    def set(self, uid: str, conditions: Mapping[str, str]) -> None:
        with self._lock:
            self._conditions[uid] = dict(conditions)

    def forget(self, uid: str) -> None:
        with self._lock:
            self._conditions.pop(uid, None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fam = GaugeMetricFamily(
            "epd_operator_epdclusters",
            "EPDClusters by condition status, as of their last reconcile pass",
            labels=["condition", "status"],
        )
        with self._lock:
            snapshot = list(self._conditions.values())
        for ctype in CONDITION_ORDER:
            for value in ("True", "False"):
                n = sum(1 for conds in snapshot if conds.get(ctype) == value)
                fam.add_metric([ctype, value], n)
        yield fam


class _Retries(Collector):
    """Reads the runtime's backoff table at scrape time (no state of its own)."""

    def __init__(self) -> None:
        self.source: Callable[[], list[tuple[str, str, int, float]]] = list

    def collect(self) -> Iterator[GaugeMetricFamily]:
        attempts = GaugeMetricFamily(
            "epd_operator_retry_attempts",
            "Consecutive failed reconcile passes of an EPDCluster waiting for a retry",
            labels=["namespace", "name"],
        )
        next_at = GaugeMetricFamily(
            "epd_operator_retry_next_timestamp_seconds",
            "When the next backoff retry of an EPDCluster runs (Unix time)",
            labels=["namespace", "name"],
        )
        for ns, name, n, when in self.source():
            attempts.add_metric([ns, name], n)
            next_at.add_metric([ns, name], when)
        yield attempts
        yield next_at


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconcile_duration = Histogram(
            "epd_operator_reconcile_duration_seconds",
            "Duration of one reconcile pass of one EPDCluster",
            ["trigger"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.reconcile_errors = Counter(
            "epd_operator_reconcile_errors_total",
            "Reconcile passes that ended with a problem, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.api_writes = Counter(
            "epd_operator_api_writes_total",
            "Kubernetes API writes made by the operator, by object kind and verb",
            ["kind", "verb"],
            registry=self.registry,
        )
        self.api_reads = Counter(
            "epd_operator_api_reads_total",
            "Kubernetes API reads made by the operator's client (list; watch: one per "
            "request), by object kind and verb",
            ["kind", "verb"],
            registry=self.registry,
        )
        self.clusters = _ByCondition()
        self.registry.register(self.clusters)
        self.retries = _Retries()
        self.registry.register(self.retries)

    def count_write(self, kind: str, verb: str) -> None:
        self.api_writes.labels(kind=kind, verb=verb).inc()

    def count_read(self, kind: str, verb: str) -> None:
        self.api_reads.labels(kind=kind, verb=verb).inc()

    def serve(self, port: int, addr: str = "0.0.0.0") -> Any:
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server
