"""The shared encoder cache (encoderCache.shared): the `mooncake_master` Deployment + Service,
the Store settings of the launch config, and the encoder memory the Store pins.

The master runs from the engine image (the Mooncake wheel that serves the engines ships the
`mooncake_master` console script), one replica with the Recreate strategy: two masters would
split the key index. It keeps only the index (key -> segment); the bytes live in the
encoders' segments, so the master needs little memory. Its readiness gates the EPDCluster's
Ready like every other workload (`reconcile.status.not_rolled_out`). A master restart empties
the cache: encoders whose Store lookups fail encode instead (vLLM falls back), re-register
with the new master, and the cache refills.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

from epd_connector.launch.config import StoreLaunch
from epd_connector.launch.rules import store_pinned_bytes

from ..api import constants as c
from ..api.models import EPDCluster, SharedEncoderCacheSpec
from ..api.operator_config import OperatorConfig
from ..api.parse import store_sizes
from ..api.quantity import canonical_quantity, quantity_value
from .names import metadata, selector_labels, stable_hash, store_name
from .podparts import health_probe
from .resources import container_resources

MASTER_CONTAINER: Final = "master"
MASTER_COMMAND: Final = "mooncake_master"
RPC_PORT_NAME: Final = "rpc"
METRICS_PORT_NAME: Final = "metrics"
HEALTH_PATH: Final = "/health"  # served on the metrics port (master_admin_service)
DEFAULT_MASTER_RESOURCES: Final = {"requests": {"cpu": "250m", "memory": "256Mi"}}
_MI = 1 << 20


def shared(obj: EPDCluster) -> SharedEncoderCacheSpec | None:
    """encoderCache.shared when it is enabled, else None."""
    cache = obj.spec.encoder_cache.shared
    return cache if cache is not None and cache.enabled else None


def master_address(obj: EPDCluster) -> str:
    """host:port the encoders' Store clients dial (the Service's cluster DNS name)."""
    cache = shared(obj)
    assert cache is not None
    name = store_name(obj.metadata.name)
    return f"{name}.{obj.metadata.namespace}.svc:{cache.master.port}"


def store_launch(obj: EPDCluster) -> StoreLaunch | None:
    """The launch config's `ec.store`, or None without a shared encoder cache."""
    if shared(obj) is None:
        return None
    segment, local = store_sizes(obj.spec)
    return StoreLaunch(
        master_address=master_address(obj),
        global_segment_size=segment,
        local_buffer_size=local,
    )


def encoder_pinned_bytes(obj: EPDCluster) -> int:
    """Host memory one encoder pins for the Store (0 without a shared cache)."""
    if shared(obj) is None:
        return 0
    segment, local = store_sizes(obj.spec)
    read = (obj.spec.ec_transfer.extra_config or {}).get("store_read_buffer_bytes")
    return store_pinned_bytes(segment, local, read if isinstance(read, int) else None)


def _quantity(amount: Decimal) -> str:
    if amount == amount.to_integral_value() and int(amount) % _MI == 0:
        return canonical_quantity(f"{int(amount) // _MI}Mi")
    return canonical_quantity(str(amount))


def raise_memory(resources: dict[str, dict[str, str]], extra: int) -> dict[str, dict[str, str]]:
    """Add the Store's pinned memory to a container's memory request (and to its limit when
    one is set): the pod must be scheduled, and not OOM-killed, with the segment pinned."""
    if extra <= 0:
        return resources
    out = {kind: dict(values) for kind, values in resources.items()}
    for kind in ("requests", "limits"):
        current = out.get(kind, {}).get("memory")
        if current is None and kind == "limits":
            continue
        total = (quantity_value(current) if current is not None else Decimal(0)) + extra
        out.setdefault(kind, {})["memory"] = _quantity(total)
        out[kind] = dict(sorted(out[kind].items()))
    return dict(sorted(out.items()))


def master_args(cache: SharedEncoderCacheSpec) -> list[str]:
    m = cache.master
    args = [f"--rpc_port={m.port}", f"--metrics_port={m.metrics_port}"]
    if m.eviction_high_watermark_ratio is not None:
        args.append(f"--eviction_high_watermark_ratio={m.eviction_high_watermark_ratio!r}")
    if m.eviction_ratio is not None:
        args.append(f"--eviction_ratio={m.eviction_ratio!r}")
    return args


def _probe(period: int, failures: int) -> dict[str, Any]:
    return health_probe(period, failures, port=METRICS_PORT_NAME, path=HEALTH_PATH)


def deployment(obj: EPDCluster, cfg: OperatorConfig, image: str) -> dict[str, Any]:
    cache = shared(obj)
    assert cache is not None
    cluster = obj.metadata.name
    m = cache.master
    container: dict[str, Any] = {
        "name": MASTER_CONTAINER,
        "image": image,
        "imagePullPolicy": (obj.spec.image.pull_policy if obj.spec.image else None)
        or cfg.image_pull_policy,
        "command": [MASTER_COMMAND],
        "args": master_args(cache),
        "ports": [
            {"name": RPC_PORT_NAME, "containerPort": m.port, "protocol": "TCP"},
            {"name": METRICS_PORT_NAME, "containerPort": m.metrics_port, "protocol": "TCP"},
        ],
        "resources": container_resources(m.resources, DEFAULT_MASTER_RESOURCES),
        "readinessProbe": _probe(5, 3),
        "livenessProbe": _probe(10, 3),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [container],
    }
    pull_secrets = list((obj.spec.image.pull_secrets if obj.spec.image else None) or ())
    pull_secrets += [s for s in cfg.image_pull_secrets if s not in pull_secrets]
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    labels = selector_labels(cluster, c.COMPONENT_STORE)
    template: dict[str, Any] = {"metadata": {"labels": labels}, "spec": pod_spec}
    labels[c.LABEL_REVISION] = stable_hash(template, 10)
    meta = metadata(obj, store_name(cluster), c.COMPONENT_STORE)
    meta["labels"][c.LABEL_REVISION] = labels[c.LABEL_REVISION]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            # Never two masters at once: each would hold half of the key index.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(cluster, c.COMPONENT_STORE)},
            "template": template,
        },
    }


def service(obj: EPDCluster) -> dict[str, Any]:
    cache = shared(obj)
    assert cache is not None
    cluster = obj.metadata.name
    m = cache.master
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(obj, store_name(cluster), c.COMPONENT_STORE),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(cluster, c.COMPONENT_STORE),
            "ports": [
                {
                    "name": RPC_PORT_NAME,
                    "port": m.port,
                    "targetPort": RPC_PORT_NAME,
                    "protocol": "TCP",
                },
                {
                    "name": METRICS_PORT_NAME,
                    "port": m.metrics_port,
                    "targetPort": METRICS_PORT_NAME,
                    "protocol": "TCP",
                },
            ],
        },
    }
