"""The router's Prometheus metrics (own registry, so several routers can live in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
)


class RouterMetrics:
    def __init__(self) -> None:
        # labels() takes a lock and builds a key per call: on the per-request path the router
        # asks `of` instead, which keeps each labelled child once.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "epd_router_requests", "Requests by route and outcome", ["route", "outcome"], registry=r
        )
        self.stage_seconds = Histogram(
            "epd_router_stage_seconds",
            "Latency per stage: encode (all items), prefill (E/P/D), decode (until the last byte), "
            "ttft (request arrival to the first byte sent to the client)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.request_seconds = Histogram(
            "epd_router_request_seconds",
            "Whole request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self._pod_metrics(r)

    def _pod_metrics(self, r: CollectorRegistry) -> None:
        """Retries, rotation and load per role and pod."""
        self.retries = Counter(
            "epd_router_retries",
            "Retried upstream calls by role and reason",
            ["role", "reason"],
            registry=r,
        )
        self.pods_in_rotation = Gauge(
            "epd_router_pods_in_rotation", "Healthy pods per role", ["role"], registry=r
        )
        self.upstream_requests = Counter(
            "epd_router_upstream_requests",
            "Calls sent to engines, by role and pod",
            ["role", "pod"],
            registry=r,
        )
        self.inflight = Gauge(
            "epd_router_inflight_requests", "Client requests in progress", registry=r
        )
        self.queued = Gauge(
            "epd_router_queued_requests",
            "Requests waiting for a pod of a role (none in rotation, or all at their limit)",
            ["role"],
            registry=r,
        )
        self.ejections = Counter(
            "epd_router_ejections",
            "Pods taken out of rotation by passive outlier detection",
            ["role"],
            registry=r,
        )
        self.revision_requests = Counter(
            "epd_router_revision_requests",
            "Request attempts by the wiring revision that served them (one revision each)",
            ["revision"],
            registry=r,
        )
        self.panic = Gauge(
            "epd_router_panic",
            "1 while too few pods of a role are healthy and the router routes to all of them",
            ["role"],
            registry=r,
        )

    def of(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, memoised."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child
