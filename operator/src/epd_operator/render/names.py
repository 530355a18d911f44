"""Names, labels, ownerReferences and hashes of the objects rendered for one EPDCluster.

Names are deterministic and length-safe: a child is `<cluster>-<suffix>`; when that is too
long the cluster part is cut and a hash of the full cluster name keeps it unique. StatefulSet
names stay within 52 characters so `<name>-<ordinal>` pod names and the
`controller-revision-hash` label (`<name>-<10 chars>`) fit the 63-character label limit.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..api import constants as c
from ..api.models import EPDCluster

MAX_DNS_LABEL = 63
MAX_STATEFULSET_NAME = 52


def stable_hash(value: Any, length: int = 16) -> str:
    """sha256 of canonical JSON: same input, same hash, on every machine and Python."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def child_name(cluster: str, suffix: str, limit: int = MAX_DNS_LABEL) -> str:
    full = f"{cluster}-{suffix}"
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(cluster.encode()).hexdigest()[:8]
    keep = limit - len(suffix) - len(digest) - 2
    head = cluster[:keep].rstrip("-")
    return f"{head}-{digest}-{suffix}"


def configmap_name(cluster: str) -> str:
    """The single, mutable launch ConfigMap of operators before revision-named ones
    (docs/rollouts.md): no longer rendered, still recognised while pods reference it."""
    return child_name(cluster, "launch")


def launch_configmap_name(cluster: str, revision: str) -> str:
    """The immutable launch ConfigMap of one launch revision (`launch_revision`)."""
    return child_name(cluster, f"launch-{revision}")


def routing_configmap_name(cluster: str) -> str:
    """The router's routing table (mutable; launch.routing)."""
    return child_name(cluster, "routing")


def role_name(cluster: str, role: str) -> str:
    """StatefulSet and headless Service of a role share this name."""
    return child_name(cluster, role, MAX_STATEFULSET_NAME)


def store_name(cluster: str) -> str:
    """The shared encoder cache's master Deployment and Service."""
    return child_name(cluster, "store", MAX_STATEFULSET_NAME)


def router_name(cluster: str) -> str:
    return child_name(cluster, "router", MAX_STATEFULSET_NAME)


def selector_labels(cluster: str, component: str) -> dict[str, str]:
    """Immutable selector of a workload: never includes the revision."""
    labels = {
        c.LABEL_NAME: c.APP_NAME,
        c.LABEL_INSTANCE: cluster,
        c.LABEL_COMPONENT: component,
    }
    if component in ("encoder", "prefill", "decode"):
        labels[c.LABEL_ROLE] = component
    return labels


def object_labels(cluster: str, component: str) -> dict[str, str]:
    return {**selector_labels(cluster, component), c.LABEL_MANAGED_BY: c.MANAGED_BY}


def owner_references(obj: EPDCluster) -> list[dict[str, Any]]:
    if not obj.metadata.uid:
        raise ValueError(
            "metadata.uid: needed for ownerReferences (render an object read back "
            "from the apiserver, or pass a placeholder uid)"
        )
    return [
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "name": obj.metadata.name,
            "uid": obj.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def metadata(obj: EPDCluster, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": obj.metadata.namespace,
        "labels": object_labels(obj.metadata.name, component),
        "ownerReferences": owner_references(obj),
    }
