"""The router's options and their defaults: the one definition, read by the router's CLI (one
flag per field) and by the operator, which renders a flag only where a spec differs from these
(so it lives with the launch contract: what the operator renders and a pod reads; pure).

Overload defaults (the `Overload` group) follow Envoy's habits: a pod leaves rotation after
several timed-out health checks, not one (a busy engine answers /health late but is alive);
requests that fail in a row eject a pod for a growing interval (passive outlier detection);
never more than a bounded share of a role is ejected, and when too few pods look healthy the
router routes to all that still accept connections (panic); a request that finds no pod waits in
a bounded queue before it gets a 503 that names the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The router's liveness endpoint: 200 while its process serves HTTP. /health says whether it
# can serve requests (a prefill and a decode pod in rotation), which is readiness: as liveness
# it restarted every router while its engines loaded (minutes with real weights), and the
# CrashLoopBackOff then held the router down after they were up.
LIVENESS_PATH = "/livez"

CONSUMER_MEDIA_MODES = ("reference", "raw")
ENCODER_ROUTING = ("affinity", "round-robin")


@dataclass(frozen=True)
class Overload:
    """Health, outlier and queueing knobs (pure data; pods.Pool applies them)."""

    health_timeout_s: float = 5.0
    unhealthy_threshold: int = 3
    eject_after_failures: int = 5
    base_ejection_s: float = 5.0
    max_ejection_s: float = 60.0
    max_ejection_percent: int = 50
    panic_threshold_percent: int = 50
    max_inflight_per_pod: int = 0
    queue_size: int = 1024
    queue_timeout_s: float = 5.0


@dataclass(frozen=True)
class RouterOptions(Overload):
    host: str = "0.0.0.0"
    port: int = 8000
    static_pods: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    dns_suffix: str = "svc"
    dns_refresh_s: float = 3.0
    health_interval_s: float = 2.0
    connect_timeout_s: float = 2.0
    encoder_timeout_s: float = 60.0
    prefill_timeout_s: float = 120.0
    request_timeout_s: float = 600.0
    stream_idle_timeout_s: float = 60.0
    retries: int = 3
    max_body_bytes: int = 32 << 20
    affinity_load_factor: float = 1.5
    pool_size: int = 1024
    pool_per_host: int = 0
    consumer_media: str = "reference"
    encoder_routing: str = "affinity"
    workers: int = 1
    routing_file: str = ""

    def check(self) -> None:
        """ValueError naming the option when a value cannot work."""
        if self.consumer_media not in CONSUMER_MEDIA_MODES:
            raise ValueError(
                f"consumer_media {self.consumer_media!r}: expected one of "
                f"{', '.join(CONSUMER_MEDIA_MODES)}"
            )
        if self.encoder_routing not in ENCODER_ROUTING:
            raise ValueError(
                f"encoder_routing {self.encoder_routing!r}: expected one of "
                f"{', '.join(ENCODER_ROUTING)}"
            )
        for name in ("max_ejection_percent", "panic_threshold_percent"):
            if not 0 <= getattr(self, name) <= 100:
                raise ValueError(f"{name} {getattr(self, name)}: expected 0-100")
        for name in ("unhealthy_threshold", "eject_after_failures", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)}: expected at least 1")
        if self.max_inflight_per_pod < 0 or self.queue_size < 0:
            raise ValueError("max_inflight_per_pod and queue_size must not be negative")
