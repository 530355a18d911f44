"""epd_operator.render: PURE (EPDCluster, OperatorConfig) -> ordered list of manifests.

No I/O, no kopf, no Kubernetes client (import-linter enforces it). Order: the launch-config
ConfigMap, the shared encoder cache's master Service and Deployment (encoderCache.shared; the
encoders dial it at start), then per role (encoder, prefill, decode) its headless Service and
StatefulSet, then the router Deployment and Service. Same input, same output, byte for byte.
"""

from __future__ import annotations

from typing import Any

from epd_connector.launch.config import CONFIGMAP_KEY

from ..api import constants as c
from ..api.models import EPDCluster
from ..api.operator_config import OperatorConfig
from . import engine, router, store
from .launch import launch_config
from .names import configmap_name, metadata

__all__ = ["render_cluster"]


def render_cluster(cluster: EPDCluster, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """Every object the operator owns for `cluster`, in apply order."""
    config = launch_config(cluster)
    manifests: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(
                cluster, configmap_name(cluster.metadata.name), c.COMPONENT_CONFIG
            ),
            "data": {CONFIGMAP_KEY: config.to_json()},
        }
    ]
    if store.shared(cluster) is not None:
        manifests.append(store.service(cluster))
        manifests.append(store.deployment(cluster, cfg, engine.engine_image(cluster.spec, cfg)))
    for role in config.present_roles():
        manifests.append(engine.headless_service(cluster, role))
        manifests.append(engine.statefulset(cluster, role, cfg, config))
    manifests.append(router.deployment(cluster, cfg, config))
    manifests.append(router.service(cluster))
    return manifests
