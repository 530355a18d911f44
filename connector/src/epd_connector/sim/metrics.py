"""Prometheus metrics of the simulated engine: vLLM's names where vLLM has one, `epd_sim_*` else."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Fine enough for p50/p99 of a loopback GET of ~1 MiB (bench/shared_cache_bench.py).
STORE_GET_BUCKETS = (
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
)


class SimMetrics:
    def __init__(self, model: str, engine: str) -> None:
        self.registry = CollectorRegistry()
        labels = ["model_name", "engine"]
        self._labels = {"model_name": model, "engine": engine}
        self._vllm_metrics(labels)
        self._transfer_metrics()
        self._store_metrics()
        for g in (self.running, self.waiting):
            g.labels(**self._labels).set(0)
        self.waiting_reason.labels(**self._labels, reason="deferred").set(0)

    def _vllm_metrics(self, labels: list[str]) -> None:
        """The names vLLM exports (the router's load signals and the autoscaling recipes)."""
        r = self.registry
        self.running = Gauge("vllm:num_requests_running", "Requests running", labels, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests waiting", labels, registry=r)
        self.waiting_reason = Gauge(
            "vllm:num_requests_waiting_by_reason",
            "Waiting requests by reason",
            [*labels, "reason"],
            registry=r,
        )
        self.success = Counter(
            "vllm:request_success", "Finished requests", [*labels, "finished_reason"], registry=r
        )
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "TTFT", labels, registry=r)
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds", "End-to-end latency", labels, registry=r
        )

    def _transfer_metrics(self) -> None:
        """`epd_sim_*`: requests, EC pushes and receipts, encoding work, KV pulls."""
        r = self.registry
        self.requests = Counter(
            "epd_sim_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=r,
        )
        self.ec_items_verified = Counter(
            "epd_sim_ec_items_verified",
            "EC items received, checksum-verified and matched",
            registry=r,
        )
        self.ec_bytes_verified = Counter(
            "epd_sim_ec_bytes_verified", "Bytes of verified EC items", registry=r
        )
        self.ec_failures = Counter(
            "epd_sim_ec_failures",
            "EC items that failed (timeout, checksum, mismatch)",
            ["reason"],
            registry=r,
        )
        self.ec_pushes = Counter(
            "epd_sim_ec_pushes", "Encoder pushes by outcome", ["outcome"], registry=r
        )
        self.ec_push_bytes = Counter(
            "epd_sim_ec_push_bytes", "Bytes pushed by the encoder", registry=r
        )
        self.encoded_items = Counter("epd_sim_encoded_items", "Items encoded", registry=r)
        self.consumer_encoded_items = Counter(
            "epd_sim_consumer_encoded_items",
            "Items an EC consumer encoded itself (no encoder output found)",
            registry=r,
        )
        self.encoder_cache = Counter(
            "epd_sim_encoder_cache",
            "Encoder cache lookups by result (hit: no preprocessing, no encoding)",
            ["result"],
            registry=r,
        )
        self.preprocessed_items = Counter(
            "epd_sim_preprocessed_items",
            "Raw media items this engine loaded and preprocessed (an encoder's own work; on a "
            "consumer, the work a by-reference router saves)",
            registry=r,
        )
        self.referenced_items = Counter(
            "epd_sim_referenced_items",
            "Metadata-only embeds items accepted (the encoder output comes by EC)",
            registry=r,
        )
        self.kv_pulls = Counter("epd_sim_kv_pulls", "KV pulls by outcome", ["outcome"], registry=r)
        self.kv_bytes = Counter("epd_sim_kv_bytes_verified", "Verified KV bytes pulled", registry=r)
        self.kv_staged = Counter("epd_sim_kv_staged", "KV blobs staged by prefill", registry=r)

    def _store_metrics(self) -> None:
        """The shared encoder cache (encoders with encoderCache.shared; sim/store.py)."""
        r = self.registry
        self.store_lookups = Counter(
            "epd_sim_store_lookups",
            "Shared encoder cache lookups by outcome (hit, miss, error)",
            ["outcome"],
            registry=r,
        )
        self.store_get_bytes = Counter(
            "epd_sim_store_get_bytes", "Bytes read from the shared encoder cache", registry=r
        )
        self.store_get_seconds = Histogram(
            "epd_sim_store_get_seconds",
            "Shared encoder cache GET latency",
            buckets=STORE_GET_BUCKETS,
            registry=r,
        )
        self.store_puts = Counter(
            "epd_sim_store_puts",
            "Outputs published to the shared cache by outcome",
            ["outcome"],
            registry=r,
        )
        self.store_put_bytes = Counter(
            "epd_sim_store_put_bytes", "Bytes published to the shared encoder cache", registry=r
        )

    def finished(self, reason: str) -> None:
        self.success.labels(**self._labels, finished_reason=reason).inc()

    def lbl(self) -> dict[str, str]:
        return self._labels
