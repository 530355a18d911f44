"""The transport preflight init container of engine pods that ask for RDMA (rdma.enabled).

It runs `epd-engine --preflight` (epd_connector.launch.preflight) from the engine image with
the engine's environment, launch config and RDMA resource and capability, so it sees the
devices the engine will see; its one-line JSON report becomes its termination message, which
the kubelet puts into the pod status for the operator's TransportReady condition. Reporting
only: it exits 0 whatever it finds, so a TCP fallback slows the cluster down but does not stop
it (TransportReady=False says why).
"""

from __future__ import annotations

from typing import Any, Final

from epd_connector.launch.preflight import INIT_CONTAINER, TERMINATION_LOG

from ..api import constants as c
from ..api.layout import VOLUME_LAUNCH_CONFIG
from ..api.models import EPDClusterSpec

PREFLIGHT_RESOURCES: Final = {"cpu": "100m", "memory": "256Mi"}


def preflight_container(spec: EPDClusterSpec, engine: dict[str, Any]) -> dict[str, Any] | None:
    """The init container for an engine container `engine`; None without rdma.enabled."""
    if not spec.rdma.enabled:
        return None
    rdma = {spec.rdma.resource_name: str(spec.rdma.count)}
    container: dict[str, Any] = {
        "name": INIT_CONTAINER,
        "image": engine["image"],
        "imagePullPolicy": engine["imagePullPolicy"],
        "command": ["epd-engine", "--preflight"],
        "env": engine["env"],
        "resources": {
            "limits": dict(sorted(rdma.items())),
            "requests": dict(sorted({**PREFLIGHT_RESOURCES, **rdma}.items())),
        },
        "volumeMounts": [
            {"name": VOLUME_LAUNCH_CONFIG, "mountPath": c.LAUNCH_CONFIG_DIR, "readOnly": True}
        ],
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
    }
    if "securityContext" in engine:
        container["securityContext"] = engine["securityContext"]
    return container
