"""The router's routing table ConfigMap and the per-revision Services it names (launch.routing).

Why a mutable ConfigMap next to the immutable launch ones: the router must learn about a new
wiring revision while it runs (both revisions serve during a rollout), without restarting; the
kubelet refreshes a mounted ConfigMap and the router re-reads the file. Each live wiring
revision gets one headless Service per role selecting that revision's pods, so the router finds
each revision's pods by DNS, as it finds a role's pods without revisions. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from epd_connector.launch.config import LaunchConfig
from epd_connector.launch.routing import ROUTING_KEY, RoutingTable, table_for

from ..api import constants as c
from ..api.models import EPDCluster
from . import engine
from .names import metadata, routing_configmap_name


def routing_table(
    config: LaunchConfig, live: Sequence[LaunchConfig], legacy: LaunchConfig | None
) -> RoutingTable:
    """Every wiring revision some live launch ConfigMap holds (oldest first), then the
    current one; `legacy` is the config of pods from before wiring labels."""
    return table_for([*live, config], legacy)


def configmap(obj: EPDCluster, table: RoutingTable) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(obj, routing_configmap_name(obj.metadata.name), c.COMPONENT_ROUTING),
        "data": {ROUTING_KEY: table.to_json()},
    }


def revision_services(obj: EPDCluster, role: str, table: RoutingTable) -> list[dict[str, Any]]:
    """`role`'s headless Service of each labelled revision that has the role."""
    out: list[dict[str, Any]] = []
    for rev in table.revisions:
        launch = getattr(rev.config.roles, role)
        if rev.wiring and launch is not None:
            out.append(engine.revision_service(obj, role, rev.wiring, launch.port))
    return out
