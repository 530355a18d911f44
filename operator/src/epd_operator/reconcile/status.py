"""The pure status of an EPDCluster: observed children + problems -> the status dict.

Shape (the status model in api.models): `observedGeneration`, `phase`,
`roles.<role>.{replicas, readyReplicas, updatedReplicas, ready}` (`ready` is "3/4", for the
printer columns), and conditions. Exactly one of `Ready`, `Progressing`, `Degraded` is True
at any time, except during a change that keeps serving:

- Degraded=True  a problem stops us (SpecInvalid, InsufficientResources, ReconcileError);
- Progressing=True  children are applied but not all rolled out and ready yet;
- Ready=True  every role and the router run the current template with all replicas ready;
- Ready=True and Progressing=True  a change is rolling out (or a role scaling) on a cluster
  that was Ready, and every engine role still has at least `replicas - maxUnavailable` (and
  one) ready pods and the router one available (`serving_within_bound`): the cluster serves
  throughout, so `Ready` does not flicker; readers that must wait for the end (the Argo CD
  script, kstatus through `Reconciling`, `phase`) read Progressing first.

kstatus (Flux, `kpt live status`, cli-utils) ignores those three types and reads the two
"abnormal-true" conditions instead, so we mirror them: `Reconciling` == Progressing and
`Stalled` == Degraded. Together with `observedGeneration` this is what kstatus needs;
`kubectl wait --for=condition=Ready` and the Argo CD health script read `Ready` / `Degraded`.

`phase` (Ready / Progressing / Degraded) repeats the True condition for printer columns.

`lastTransitionTime` moves only when a condition's status flips; a changed reason or message
keeps the old time. `status_changed` decides whether a write is needed at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from epd_operator.api import constants as c
from epd_operator.api.models import EPDClusterStatus

READY = c.CONDITION_READY
PROGRESSING = c.CONDITION_PROGRESSING
DEGRADED = c.CONDITION_DEGRADED
RECONCILING = "Reconciling"
STALLED = "Stalled"
CONDITION_ORDER = (READY, PROGRESSING, DEGRADED, RECONCILING, STALLED)
REASON_RECONCILED = c.REASON_RECONCILED
REASON_ROLLOUT = c.REASON_ROLLOUT_IN_PROGRESS
REASON_SERVING = c.REASON_SERVING_DURING_ROLLOUT
WARNINGS_PREFIX = "warnings: "


@dataclass(frozen=True)
class Problem:
    """Something that keeps the cluster from being served as specified."""

    reason: str  # CamelCase, e.g. SpecInvalid, InsufficientResources, ReconcileError
    message: str


def role_counts(children: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-role replica counts from the role StatefulSets (identified by the role label)."""
    out: dict[str, dict[str, Any]] = {}
    for obj in children:
        if obj.get("kind") != "StatefulSet":
            continue
        role = ((obj.get("metadata") or {}).get("labels") or {}).get(c.LABEL_ROLE)
        if not role:
            continue
        spec = obj.get("spec") or {}
        st = obj.get("status") or {}
        current = _observed_current(obj)
        desired = int(spec.get("replicas", 1))
        ready = int(st.get("readyReplicas", 0) or 0)
        out[str(role)] = {
            "replicas": int(st.get("replicas", 0) or 0),  # pods that exist
            "readyReplicas": ready,
            # Before the controller has seen the newest template, its counts describe the old
            # one: report no updated replicas rather than a stale number.
            "updatedReplicas": int(st.get("updatedReplicas", 0) or 0) if current else 0,
            "ready": f"{ready}/{desired}",  # for the printer columns
        }
    return dict(sorted(out.items()))


def _observed_current(obj: Mapping[str, Any]) -> bool:
    gen = int((obj.get("metadata") or {}).get("generation", 0) or 0)
    seen = int((obj.get("status") or {}).get("observedGeneration", 0) or 0)
    return seen >= gen


def not_rolled_out(children: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per workload child that does not yet run its current spec with all replicas
    ready; empty when everything is rolled out."""
    pending: list[str] = []
    for obj in children:
        kind = obj.get("kind")
        if kind not in ("StatefulSet", "Deployment"):
            continue
        name = (obj.get("metadata") or {}).get("name", "?")
        spec = obj.get("spec") or {}
        st = obj.get("status") or {}
        want = int(spec.get("replicas", 1))
        ready = int(st.get("readyReplicas", 0) or 0)
        updated = int(st.get("updatedReplicas", 0) or 0)
        total = int(st.get("replicas", 0) or 0)
        what = f"{kind} {name}"
        if not _observed_current(obj):
            pending.append(f"{what}: new spec not yet observed by its controller")
        elif updated < want or ready < want:
            pending.append(f"{what}: {ready}/{want} ready, {updated}/{want} updated")
        elif total > want:
            pending.append(f"{what}: {total - want} old replica(s) terminating")
        elif (
            kind == "StatefulSet"
            and st.get("updateRevision")
            and st.get("currentRevision") != st.get("updateRevision")
        ):
            pending.append(f"{what}: revision {st.get('updateRevision')} not yet current")
        elif kind == "Deployment" and int(st.get("availableReplicas", 0) or 0) < want:
            pending.append(f"{what}: {st.get('availableReplicas', 0)}/{want} available")
    return pending


def serving_within_bound(children: Iterable[Mapping[str, Any]]) -> bool:
    """Every engine StatefulSet has at least max(1, replicas - maxUnavailable) ready pods (its
    PodDisruptionBudget, of the same name, holds the role's maxUnavailable; 1 without one) and
    every Deployment (the router) at least one available pod."""
    objs = list(children)
    budgets = {
        (o.get("metadata") or {}).get("name"): (o.get("spec") or {}).get("maxUnavailable", 1)
        for o in objs
        if o.get("kind") == "PodDisruptionBudget"
    }
    for obj in objs:
        kind = obj.get("kind")
        st = obj.get("status") or {}
        if kind == "StatefulSet":
            want = int((obj.get("spec") or {}).get("replicas", 1))
            budget = budgets.get((obj.get("metadata") or {}).get("name"), 1)
            floor = max(1, want - (budget if isinstance(budget, int) else 1))
            if int(st.get("readyReplicas", 0) or 0) < floor:
                return False
        elif kind == "Deployment" and int(st.get("availableReplicas", 0) or 0) < 1:
            return False
    return True


def _was_ready(previous: Mapping[str, Any] | None) -> bool:
    return any(
        isinstance(cond, Mapping) and cond.get("type") == READY and cond.get("status") == "True"
        for cond in ((previous or {}).get("conditions") or [])
    )


def compute_status(
    *,
    generation: int,
    children: Sequence[Mapping[str, Any]],
    problems: Sequence[Problem],
    previous: Mapping[str, Any] | None,
    now: str,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The full status for one reconcile pass. `now` is an RFC 3339 timestamp (pure: the
    caller owns the clock); `previous` is the status the object holds now; `notes` are
    warnings about a valid but odd spec, added to the Ready condition's message."""
    phase, states = _states(
        problems,
        not_rolled_out(children),
        notes,
        serving=lambda: _was_ready(previous) and serving_within_bound(children),
    )
    return {
        "observedGeneration": generation,
        "phase": phase,
        "roles": role_counts(children),
        "conditions": _conditions(states, previous, generation, now),
    }


_State = tuple[str, str, str]  # status, reason, message


def _states(
    problems: Sequence[Problem],
    pending: Sequence[str],
    notes: Sequence[str],
    *,
    serving: Callable[[], bool],
) -> tuple[str, dict[str, _State]]:
    """The phase and each condition's (status, reason, message): one of Ready, Progressing,
    Degraded is True, except that Ready stays True beside Progressing while a change keeps
    serving (`serving()`, asked only then); Reconciling and Stalled mirror the last two."""
    if problems:
        reason = problems[0].reason
        message = "; ".join(p.message for p in problems)
        phase, states = (
            "Degraded",
            {
                READY: ("False", reason, message),
                PROGRESSING: ("False", reason, "blocked: " + message),
                DEGRADED: ("True", reason, message),
            },
        )
    elif pending:
        message = "; ".join(pending)
        phase, states = (
            "Progressing",
            {
                READY: ("True", REASON_SERVING, f"serving while it rolls out: {message}")
                if serving()
                else ("False", REASON_ROLLOUT, message),
                PROGRESSING: ("True", REASON_ROLLOUT, message),
                DEGRADED: ("False", c.REASON_AS_EXPECTED, "no problems"),
            },
        )
    else:
        message = "all roles and the router run the current spec with every replica ready"
        phase, states = (
            "Ready",
            {
                READY: ("True", REASON_RECONCILED, message),
                PROGRESSING: ("False", REASON_RECONCILED, "rollout complete"),
                DEGRADED: ("False", c.REASON_AS_EXPECTED, "no problems"),
            },
        )
    if notes:
        status_, reason_, message_ = states[READY]
        states[READY] = (status_, reason_, f"{message_}; {WARNINGS_PREFIX}{'; '.join(notes)}")
    states[RECONCILING] = states[PROGRESSING]
    states[STALLED] = states[DEGRADED]
    return phase, states


def _conditions(
    states: Mapping[str, _State], previous: Mapping[str, Any] | None, generation: int, now: str
) -> list[dict[str, Any]]:
    """The conditions in CONDITION_ORDER; lastTransitionTime moves only on a flip."""
    old = {
        cond.get("type"): cond
        for cond in ((previous or {}).get("conditions") or [])
        if isinstance(cond, Mapping)
    }
    conditions = []
    for ctype in CONDITION_ORDER:
        status, reason, msg = states[ctype]
        before = old.get(ctype)
        flipped = before is None or before.get("status") != status
        conditions.append(
            {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": msg,
                "observedGeneration": generation,
                "lastTransitionTime": (
                    now if flipped or before is None else before.get("lastTransitionTime", now)
                ),
            }
        )
    return conditions


class StatusShapeError(ValueError):
    """A computed status the EPDClusterStatus model does not define (a bug in this package:
    the apiserver would prune the key silently, and every pass would write it again)."""


def checked(status: dict[str, Any]) -> dict[str, Any]:
    """`status`, unchanged, once the EPDClusterStatus model (the one definition of the shape,
    also the CRD's status schema) accepts every key and value in it."""
    try:
        model = EPDClusterStatus.model_validate(status)
    except ValueError as exc:
        raise StatusShapeError(f"status does not fit EPDClusterStatus: {exc}") from exc
    unknown = _keys_outside(status, model.model_dump(by_alias=True, mode="json"), "status")
    if unknown:
        raise StatusShapeError(f"status keys EPDClusterStatus does not define: {unknown}")
    return status


def _keys_outside(raw: Any, modelled: Any, path: str) -> list[str]:
    if isinstance(raw, Mapping) and isinstance(modelled, Mapping):
        out = [f"{path}.{k}" for k in raw if k not in modelled]
        for k in raw:
            if k in modelled:
                out += _keys_outside(raw[k], modelled[k], f"{path}.{k}")
        return out
    if isinstance(raw, list) and isinstance(modelled, list):
        return [
            u
            for i, (r, m) in enumerate(zip(raw, modelled, strict=False))
            for u in _keys_outside(r, m, f"{path}[{i}]")
        ]
    return []


def status_changed(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change anything the object holds (a subset check, so
    fields another writer keeps there, such as kopf's, do not force a write)."""
    prev = previous or {}
    for key, value in new.items():
        if key == "conditions":
            if _conditions_key(prev.get(key)) != _conditions_key(value):
                return True
        elif prev.get(key) != value:
            return True
    return False


def _conditions_key(conds: Any) -> list[tuple[Any, ...]]:
    fields = ("type", "status", "reason", "message", "observedGeneration", "lastTransitionTime")
    return sorted(
        tuple(cond.get(f) for f in fields) for cond in (conds or []) if isinstance(cond, Mapping)
    )


def events_for(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The conditions of `new` worth one Event each: Ready/Progressing/Degraded that turned
    True (or changed reason while True), and a Degraded whose message changed (a second,
    different spec error must be announced too). Progress messages ("1/2 ready") never are."""
    old = {
        cond.get("type"): cond
        for cond in ((previous or {}).get("conditions") or [])
        if isinstance(cond, Mapping)
    }
    out = []
    for cond in new.get("conditions") or []:
        if cond["type"] not in (READY, PROGRESSING, DEGRADED) or cond["status"] != "True":
            continue
        before = old.get(cond["type"]) or {}
        was = (before.get("status"), before.get("reason"))
        if was != ("True", cond["reason"]) or (
            cond["type"] == DEGRADED and before.get("message") != cond["message"]
        ):
            out.append(dict(cond))
    return out
