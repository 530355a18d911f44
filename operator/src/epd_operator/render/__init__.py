"""epd_operator.render: PURE (EPDCluster, OperatorConfig) -> ordered list of manifests.

No I/O, no kopf, no Kubernetes client (import-linter enforces it). Order: the launch-config
ConfigMap and the router's routing table, the shared encoder cache's master Service and
Deployment (encoderCache.shared; the encoders dial it at start), then per role (encoder,
prefill, decode) its headless Service, one headless Service per live wiring revision, its
StatefulSet, PodDisruptionBudget and EPDRoleScaler, then the router Deployment and Service.
Same input, same output, byte for byte.

`replicas` overrides roles' pod counts (the reconcile pass's scaling decision: a count owned
by the role's EPDRoleScaler, or clamped); the pod templates never depend on it.

The launch ConfigMap is immutable and named by its launch revision (docs/rollouts.md). Each
workload mounts the current revision's ConfigMap unless `pins` names another one for it
(component -> ConfigMap name: an older revision whose content that component reads the same,
chosen by reconcile.revisions so a change elsewhere does not restart its pods).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from epd_connector.launch.config import CONFIGMAP_KEY, LaunchConfig
from epd_connector.launch.routing import wiring_revision

from ..api import constants as c
from ..api.models import EPDCluster
from ..api.operator_config import OperatorConfig
from . import engine, router, routing, scaler, store
from .launch import launch_config, launch_json, launch_revision
from .names import launch_configmap_name, metadata

__all__ = ["render_cluster"]


def render_cluster(
    cluster: EPDCluster,
    cfg: OperatorConfig,
    replicas: Mapping[str, int] | None = None,
    pins: Mapping[str, str] | None = None,
    *,
    live: Sequence[LaunchConfig] = (),
    legacy: LaunchConfig | None = None,
) -> list[dict[str, Any]]:
    """Every object the operator owns for `cluster`, in apply order. `live`: the launch
    configs of older revisions still in the cluster (oldest first), `legacy` the one of pods
    from before wiring labels; both only feed the routing table and its Services."""
    if replicas:
        cluster = with_replicas(cluster, replicas)
    config = launch_config(cluster)
    revision = launch_revision(config)
    current = launch_configmap_name(cluster.metadata.name, revision)
    pinned = dict(pins or {})
    meta = metadata(cluster, current, c.COMPONENT_CONFIG)
    meta["labels"][c.LABEL_LAUNCH_REVISION] = revision
    meta["labels"][c.LABEL_WIRING_REVISION] = wiring_revision(config)
    table = routing.routing_table(config, live, legacy)
    manifests: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta,
            # Immutable: a pod (re)started at any time reads what its revision was rendered
            # with, and kubelets need not watch it.
            "immutable": True,
            "data": {CONFIGMAP_KEY: launch_json(config)},
        },
        routing.configmap(cluster, table),
    ]
    if store.shared(cluster) is not None:
        manifests.append(store.service(cluster))
        manifests.append(store.deployment(cluster, cfg, engine.engine_image(cluster.spec, cfg)))
    for role in config.present_roles():
        manifests.append(engine.headless_service(cluster, role))
        manifests.extend(routing.revision_services(cluster, role, table))
        manifests.append(engine.statefulset(cluster, role, cfg, config, pinned.get(role, current)))
        manifests.append(engine.disruption_budget(cluster, role))
        manifests.append(scaler.role_scaler(cluster, role))
    manifests.append(
        router.deployment(cluster, cfg, config, pinned.get(c.COMPONENT_ROUTER, current))
    )
    manifests.append(router.service(cluster))
    return manifests


def with_replicas(cluster: EPDCluster, replicas: Mapping[str, int]) -> EPDCluster:
    """`cluster` with roles' `replicas` replaced (roles absent from the cluster are ignored)."""
    roles = cluster.spec.roles
    update = {
        role: getattr(roles, role).model_copy(update={"replicas": n})
        for role, n in replicas.items()
        if getattr(roles, role, None) is not None
    }
    spec = cluster.spec.model_copy(update={"roles": roles.model_copy(update=update)})
    return cluster.model_copy(update={"spec": spec})
