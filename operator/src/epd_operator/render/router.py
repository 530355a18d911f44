"""The router objects: the `epd-router` Deployment and its Service (the cluster's front door).

The router reads the same launch config as the engines (roles, Services, ports) and finds
pods through the role Services' DNS, so it needs no Kubernetes API access.
"""

from __future__ import annotations

from typing import Any

from epd_connector.launch.config import LaunchConfig
from epd_connector.launch.router_options import LIVENESS_PATH, RouterOptions

from ..api import constants as c
from ..api.layout import VOLUME_LAUNCH_CONFIG, VOLUME_ROUTING
from ..api.models import EPDCluster, RouterSpec
from ..api.operator_config import OperatorConfig
from .launch import router_checksum
from .names import metadata, router_name, routing_configmap_name, selector_labels, stable_hash
from .podparts import PORT_NAME, configmap_volume, field_env, health_probe
from .resources import container_resources

ROUTER_CONTAINER = "router"
DEFAULT_ROUTER_RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}}


def router_flags(router: RouterSpec) -> list[str]:
    """`epd-router` flags for the spec's traffic settings that differ from the router's own
    defaults (only those: a spec that leaves them alone renders as before, nothing restarts)."""
    o = router.overload
    wanted: dict[str, object] = {
        "consumer_media": router.consumer_media,
        "encoder_routing": router.encoder_routing,
        "health_timeout_s": o.health_timeout_seconds,
        "unhealthy_threshold": o.unhealthy_threshold,
        "eject_after_failures": o.eject_after_failures,
        "base_ejection_s": o.base_ejection_seconds,
        "max_ejection_s": o.max_ejection_seconds,
        "max_ejection_percent": o.max_ejection_percent,
        "panic_threshold_percent": o.panic_threshold_percent,
        "max_inflight_per_pod": o.max_inflight_per_pod,
        "queue_size": o.queue_size,
        "queue_timeout_s": o.queue_timeout_seconds,
    }
    defaults = RouterOptions()
    flags: list[str] = []
    for option, value in wanted.items():
        if value != getattr(defaults, option):
            flags += ["--" + option.replace("_", "-"), str(value)]
    return flags


def deployment(
    obj: EPDCluster, cfg: OperatorConfig, config: LaunchConfig, configmap: str
) -> dict[str, Any]:
    """The router Deployment; its pods mount the launch ConfigMap named `configmap`."""
    cluster = obj.metadata.name
    labels = selector_labels(cluster, c.COMPONENT_ROUTER)
    template: dict[str, Any] = {
        "metadata": {
            "labels": labels,
            "annotations": {c.ANNOTATION_CONFIG_CHECKSUM: router_checksum(config)},
        },
        "spec": _pod_spec(obj, cfg, configmap),
    }
    labels[c.LABEL_REVISION] = stable_hash(template, 10)
    meta = metadata(obj, router_name(cluster), c.COMPONENT_ROUTER)
    meta["labels"][c.LABEL_REVISION] = labels[c.LABEL_REVISION]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": obj.spec.router.replicas,
            "selector": {"matchLabels": selector_labels(cluster, c.COMPONENT_ROUTER)},
            "template": template,
        },
    }


def _container(obj: EPDCluster, cfg: OperatorConfig) -> dict[str, Any]:
    """The `epd-router` container: flags, probes, a read-only, unprivileged root."""
    return {
        "name": ROUTER_CONTAINER,
        "image": cfg.router_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["epd-router"],
        "args": [
            "--launch-config",
            c.LAUNCH_CONFIG_PATH,
            "--port",
            str(cfg.router_port),
            "--routing-file",
            c.ROUTING_PATH,
            *router_flags(obj.spec.router),
        ],
        "env": [
            {"name": c.ENV_LAUNCH_CONFIG, "value": c.LAUNCH_CONFIG_PATH},
            field_env(c.ENV_POD_NAMESPACE, "metadata.namespace"),
        ],
        "ports": [{"name": PORT_NAME, "containerPort": cfg.router_port, "protocol": "TCP"}],
        "resources": container_resources(obj.spec.router.resources, DEFAULT_ROUTER_RESOURCES),
        "readinessProbe": health_probe(5, 3),
        "livenessProbe": health_probe(10, 3, path=LIVENESS_PATH),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": VOLUME_LAUNCH_CONFIG, "mountPath": c.LAUNCH_CONFIG_DIR, "readOnly": True},
            {"name": VOLUME_ROUTING, "mountPath": c.ROUTING_DIR, "readOnly": True},
        ],
    }


def _pod_spec(obj: EPDCluster, cfg: OperatorConfig, configmap: str) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_container(obj, cfg)],
        "volumes": [
            configmap_volume(VOLUME_LAUNCH_CONFIG, configmap),
            # Not a subPath mount: the kubelet refreshes it in place, and the router re-reads it.
            configmap_volume(VOLUME_ROUTING, routing_configmap_name(obj.metadata.name)),
        ],
    }
    if cfg.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in cfg.image_pull_secrets]
    return pod_spec


def service(obj: EPDCluster) -> dict[str, Any]:
    cluster = obj.metadata.name
    router = obj.spec.router
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(obj, router_name(cluster), c.COMPONENT_ROUTER),
        "spec": {
            "type": router.service_type,
            "selector": selector_labels(cluster, c.COMPONENT_ROUTER),
            "ports": [
                {"name": PORT_NAME, "port": router.port, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
        },
    }
