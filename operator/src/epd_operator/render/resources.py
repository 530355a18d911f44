"""Container resources rendered for the single-container pods (router, Store master): one
definition, so both canonicalise and default the same way."""

from __future__ import annotations

from ..api.models import ResourceRequirements
from ..api.quantity import canonical_quantity


def container_resources(
    res: ResourceRequirements | None, default: dict[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    """A single-container pod's resources: the user's, canonical and sorted, else `default`
    (the router's and the Store master's; engines add GPUs and RDMA, render/engine.py)."""
    if res is None:
        return {k: dict(v) for k, v in default.items()}
    out: dict[str, dict[str, str]] = {}
    for kind in ("limits", "requests"):
        amounts = getattr(res, kind) or {}
        if amounts:
            out[kind] = {k: canonical_quantity(v) for k, v in sorted(amounts.items())}
    return out
