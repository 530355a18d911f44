"""Pieces every rendered pod is built from, one definition for the engine and router
renderers: the HTTP port name, the /health probes, downward-API env vars and the launch
ConfigMap volume."""

from __future__ import annotations

from typing import Any, Final

from ..api import constants as c

PORT_NAME: Final = "http"


def health_probe(
    period: int,
    failures: int,
    timeout: int = 5,
    *,
    port: str = PORT_NAME,
    path: str = c.HEALTH_PATH,
) -> dict[str, Any]:
    """An HTTP GET of the container's health endpoint (/health on the `http` port unless told)."""
    return {
        "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
        "successThreshold": 1,
    }


def field_env(name: str, path: str) -> dict[str, Any]:
    """An env var from the downward API (`status.podIP`, `metadata.name`, ...)."""
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def configmap_volume(volume: str, configmap: str) -> dict[str, Any]:
    return {"name": volume, "configMap": {"name": configmap, "defaultMode": 0o644}}
