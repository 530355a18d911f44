"""The rollout planner on real objects: rendered StatefulSets + live ones -> partitions.

Pure. For each role StatefulSet it reads the live object (template revision label, status
counts), asks reconcile.rollout for the step, and writes
`spec.updateStrategy.rollingUpdate.partition = replicas - target` into the desired object:
the StatefulSet controller then moves exactly the pods with ordinal >= partition (highest
first) to the new revision. With `paused`, live templates are kept (new template changes
wait, for the router Deployment too) and the step is held.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from epd_operator.api import constants as c

from .rollout import RoleState, RolloutPlan, plan


@dataclass(frozen=True)
class Driven:
    desired: list[dict[str, Any]]
    plan: RolloutPlan
    held: list[str] = field(default_factory=list)  # workloads whose new template waits (paused)
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> status fields


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _revision(obj: Mapping[str, Any]) -> str | None:
    template = (obj.get("spec") or {}).get("template") or {}
    rev = ((template.get("metadata") or {}).get("labels") or {}).get(c.LABEL_REVISION)
    return str(rev) if rev is not None else None


def _hold(want: dict[str, Any], live: Mapping[str, Any]) -> None:
    """Keep the live pod template (and its revision label on the object)."""
    want["spec"]["template"] = copy.deepcopy((live.get("spec") or {}).get("template") or {})
    rev = _revision(live)
    if rev is not None:
        want["metadata"]["labels"][c.LABEL_REVISION] = rev


def _rolling(want: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    if live is None:
        return False
    st = live.get("status") or {}
    mid = bool(st.get("updateRevision")) and st.get("currentRevision") != st.get("updateRevision")
    return mid or _revision(live) != _revision(want)


def needs_pods(desired: Sequence[Mapping[str, Any]], observed: Sequence[Mapping[str, Any]]) -> bool:
    """Whether some role StatefulSet rolls, so the planner needs its pods' readiness."""
    live = {(o.get("kind"), (o.get("metadata") or {}).get("name")): o for o in observed}
    return any(
        _rolling(w, live.get(("StatefulSet", w["metadata"]["name"])))
        for w in desired
        if w.get("kind") == "StatefulSet" and _labels(w).get(c.LABEL_ROLE)
    )


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(
        x.get("type") == "Ready" and x.get("status") == "True"
        for x in (pod.get("status") or {}).get("conditions") or []
    )


def _partition(sts: Mapping[str, Any]) -> int:
    """The live StatefulSet's partition (0 when it has none)."""
    strategy = (sts.get("spec") or {}).get("updateStrategy") or {}
    return int((strategy.get("rollingUpdate") or {}).get("partition") or 0)


def _ordinals(name: str, pods: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """The StatefulSet's pods by ordinal (`<name>-<ordinal>`)."""
    out: dict[int, Mapping[str, Any]] = {}
    for p in pods:
        pod_name = str((p.get("metadata") or {}).get("name") or "")
        head, _, tail = pod_name.rpartition("-")
        if head == name and tail.isdigit():
            out[int(tail)] = p
    return out


def _state(
    want: Mapping[str, Any],
    live: Mapping[str, Any] | None,
    max_unavailable: int,
    pods: Sequence[Mapping[str, Any]] | None,
) -> RoleState:
    replicas = int(want["spec"]["replicas"])
    if live is None:
        return RoleState(replicas, max_unavailable, updated=replicas, settled=True, rolling=False)
    st = live.get("status") or {}
    gen = int((live.get("metadata") or {}).get("generation") or 0)
    current = int(st.get("observedGeneration") or 0) >= gen
    changing = _revision(live) != _revision(want)
    updated = 0 if changing else int(st.get("updatedReplicas") or 0)
    # The live partition is this rollout's only when the live template is the wanted one.
    released = 0 if changing else max(0, replicas - _partition(live))
    if pods is None:
        # Without the pods: settled only when every pod is ready (never steps on a guess).
        settled = current and int(st.get("readyReplicas") or 0) >= replicas
        ready = frozenset(range(replicas)) if settled else frozenset()
    else:
        by_ordinal = _ordinals(str(want["metadata"]["name"]), pods)
        ready = frozenset(o for o, p in by_ordinal.items() if _pod_ready(p))
        new_rev = None if changing else st.get("updateRevision")
        fresh = [
            o
            for o, p in by_ordinal.items()
            if new_rev
            and ((p.get("metadata") or {}).get("labels") or {}).get("controller-revision-hash")
            == new_rev
        ]
        settled = current and all(o in ready for o in fresh)
    return RoleState(
        replicas,
        max_unavailable,
        updated=updated,
        settled=settled,
        rolling=_rolling(want, live),
        ready=ready,
        released=released,
    )


def drive(
    desired: Sequence[Mapping[str, Any]],
    observed: Sequence[Mapping[str, Any]],
    max_unavailable: Mapping[str, int],
    paused: bool,
    pods: Sequence[Mapping[str, Any]] | None = None,
) -> Driven:
    """`desired` with partitions set (and templates held when paused), and the plan. `pods`
    (the cluster's pods, when a role rolls) tell which ordinals are ready."""
    live = {(o.get("kind"), (o.get("metadata") or {}).get("name")): o for o in observed}
    out = [copy.deepcopy(dict(o)) for o in desired]
    held: list[str] = []
    sets: dict[str, dict[str, Any]] = {}
    states: dict[str, RoleState] = {}
    for want in out:
        kind, name = want.get("kind"), want["metadata"]["name"]
        have = live.get((kind, name))
        role = _labels(want).get(c.LABEL_ROLE)
        workload = (kind == "StatefulSet" and role) or (
            kind == "Deployment" and _labels(want).get(c.LABEL_COMPONENT) == c.COMPONENT_ROUTER
        )
        if not workload:
            continue
        if paused and have is not None and _revision(have) != _revision(want):
            _hold(want, have)
            held.append(f"{kind}/{name}")
        if kind == "StatefulSet":
            sets[str(role)] = want
            states[str(role)] = _state(want, have, max_unavailable.get(str(role), 1), pods)
    rollout = plan(states, paused=paused)
    roles: dict[str, dict[str, Any]] = {}
    for role, want in sets.items():
        replicas = int(want["spec"]["replicas"])
        partition = replicas - rollout.targets[role] if role in rollout.targets else 0
        want["spec"]["updateStrategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"partition": partition},
        }
        st = (live.get(("StatefulSet", want["metadata"]["name"])) or {}).get("status") or {}
        roles[role] = {k: st[k] for k in ("currentRevision", "updateRevision") if st.get(k)}
    return Driven(desired=out, plan=rollout, held=held, roles=roles)


def annotate_status(status: dict[str, Any], driven: Driven, paused: bool) -> None:
    """Add the rollout to a computed status: per-role current/update revision, `rollout`
    (step, steps, paused; steps 0 when none runs) and the step in the Progressing message
    (reason RolloutPaused while spec.paused holds a rollout)."""
    for role, fields in driven.roles.items():
        if role in status.get("roles", {}):
            status["roles"][role].update(fields)
    p = driven.plan
    active = p.steps > 0 and not p.finished
    status["rollout"] = {
        "step": p.done if active else 0,
        "steps": p.steps if active else 0,
        "paused": paused and (active or bool(driven.held)),
    }
    if not active:
        return
    for cond in status.get("conditions") or []:
        if cond["type"] in (c.CONDITION_PROGRESSING, "Reconciling") and cond["status"] == "True":
            cond["message"] = f"step {p.done}/{p.steps}: {cond['message']}"
            if paused:
                cond["reason"] = c.REASON_ROLLOUT_PAUSED
