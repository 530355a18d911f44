"""Pure check: can any node ever run each role's pods, by the extended resources they ask for?

Pods that request `nvidia.com/gpu` or an RDMA device-plugin resource no node advertises sit
Pending forever with only a scheduler event to show for it. We say so on the EPDCluster
instead (Degraded / InsufficientResources, naming the role and the resource).

The check is deliberately narrow, so it never cries wolf: for each pod template we rendered,
every extended resource (a name with a `/`, e.g. `nvidia.com/gpu`, `rdma/hca_shared_devices_a`)
must be allocatable in at least the requested amount on at least one schedulable node that
matches the template's nodeSelector. Current usage is not counted (that is the scheduler's
business and changes by the second); taints and affinity are left to the scheduler too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from epd_operator.api import constants as c

from .plan import quantity
from .status import Problem


def pod_extended_requests(template: Mapping[str, Any]) -> dict[str, Any]:
    """Extended resources one pod of `template` requests (summed over its containers; an init
    container's request counts when larger, as the scheduler does)."""
    spec = template.get("spec") or {}
    total: dict[str, Any] = {}
    for ctr in spec.get("containers") or []:
        for name, amount in _requests(ctr).items():
            q = quantity(amount)
            if q is not None:
                total[name] = total.get(name, 0) + q
    for ctr in spec.get("initContainers") or []:
        for name, amount in _requests(ctr).items():
            q = quantity(amount)
            if q is not None and q > total.get(name, 0):
                total[name] = q
    return dict(sorted(total.items()))


def _requests(container: Mapping[str, Any]) -> dict[str, Any]:
    res = container.get("resources") or {}
    # Extended resources cannot be overcommitted: a limit alone implies the same request.
    merged = dict(res.get("limits") or {})
    merged.update(res.get("requests") or {})
    return {k: v for k, v in merged.items() if "/" in k}


def schedulable(node: Mapping[str, Any]) -> bool:
    return not (node.get("spec") or {}).get("unschedulable", False)


def matches(node: Mapping[str, Any], selector: Mapping[str, str] | None) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def slim(node: Mapping[str, Any]) -> dict[str, Any]:
    """What the check reads of a node (name, labels, unschedulable, extended allocatable), in
    the node's own shape: what the node cache keeps, so a heartbeat that changes nothing of
    this is no change at all."""
    meta = node.get("metadata") or {}
    alloc = (node.get("status") or {}).get("allocatable") or {}
    return {
        "metadata": {"name": meta.get("name"), "labels": dict(meta.get("labels") or {})},
        "spec": {"unschedulable": bool((node.get("spec") or {}).get("unschedulable", False))},
        "status": {"allocatable": {k: v for k, v in alloc.items() if "/" in k}},
    }


class Capacity:
    """Schedulable nodes' extended allocatable, parsed once: the index the check consults.
    Answers are memoised per (resource, nodeSelector); build a new one when nodes change."""

    def __init__(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        self._pool: list[tuple[Mapping[str, Any], dict[str, Any]]] = []
        for n in nodes:
            if not schedulable(n):
                continue
            alloc = (n.get("status") or {}).get("allocatable") or {}
            parsed = {k: q for k, v in alloc.items() if "/" in k and (q := quantity(v)) is not None}
            self._pool.append((n, parsed))
        self._memo: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}

    def largest(self, resource: str, selector: Mapping[str, str] | None) -> Any:
        """The most of `resource` one schedulable node matching `selector` advertises."""
        key = (resource, tuple(sorted((selector or {}).items())))
        if key not in self._memo:
            self._memo[key] = max(
                (alloc.get(resource) or 0 for n, alloc in self._pool if matches(n, selector)),
                default=0,
            )
        return self._memo[key]


def check(
    desired: Sequence[Mapping[str, Any]], nodes: Iterable[Mapping[str, Any]] | Capacity
) -> list[Problem]:
    """One Problem per (workload, resource) that no schedulable node could satisfy."""
    capacity = nodes if isinstance(nodes, Capacity) else Capacity(nodes)
    problems: list[Problem] = []
    for obj in desired:
        if obj.get("kind") not in ("StatefulSet", "Deployment"):
            continue
        spec = obj.get("spec") or {}
        if int(spec.get("replicas", 1)) == 0:
            continue
        template = spec.get("template") or {}
        selector = (template.get("spec") or {}).get("nodeSelector")
        who = _who(obj)
        for name, need in pod_extended_requests(template).items():
            best = capacity.largest(name, selector)
            if best < need:
                where = " matching its nodeSelector" if selector else ""
                problems.append(
                    Problem(
                        c.REASON_INSUFFICIENT_RESOURCES,
                        f"{who} requests {_fmt(need)} {name} per pod but no schedulable "
                        f"node{where} advertises that much (largest: {_fmt(best)})",
                    )
                )
    return problems


def _who(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    role = (meta.get("labels") or {}).get(c.LABEL_ROLE)
    name = meta.get("name", "?")
    return f"role {role} ({obj.get('kind')} {name})" if role else f"{obj.get('kind')} {name}"


def _fmt(q: Any) -> str:
    return format(q.normalize(), "f") if isinstance(q, Decimal) else str(q)
