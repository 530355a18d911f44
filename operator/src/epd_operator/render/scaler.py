"""The per-role EPDRoleScaler: the role's scale target (`/scale`), created and owned by us.

Rendered *without* `spec.replicas`: the operator's server-side apply never owns that field,
so it can never take the number back from `kubectl scale`, HPA or KEDA, and dropping it from
our apply never deletes it. The reconcile pass writes it through `/scale` only to seed a new
scaler or, for a role whose number the EPDCluster spec owns, to put that number back
(`reconcile.scaling.decide`).
"""

from __future__ import annotations

from typing import Any

from ..api import constants as c
from ..api.models import EPDCluster
from .names import metadata, role_name


def role_scaler(obj: EPDCluster, role: str) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": c.SCALER_KIND,
        # Named like the role's StatefulSet: `kubectl scale epdrs/<cluster>-<role>`.
        "metadata": metadata(obj, role_name(obj.metadata.name, role), role),
    }
