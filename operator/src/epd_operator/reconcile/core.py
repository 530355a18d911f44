"""`reconcile()`: one idempotent pass for one EPDCluster.

Steps, one function each: `_parse_spec` -> `_observe_children` -> `_render_desired` (replica
owners, launch revisions, rollout partitions) -> `_apply_and_prune` (+ `_sync_scalers`) ->
`_check_capacity` -> `_compute_status` -> `_publish` (status write, then `_announce`: Events).

Observe and the resource check read the watch-fed caches (`reconcile.cache`) when given and
current, else the API; what our writes return goes back into the cache at once.

Every trigger (create, update, resume, the resync timer, a change to a child) runs this same
function, serialised per object by the handlers. It never raises for a problem the user can
fix: a spec that fails `api.parse` becomes Degraded/SpecInvalid with the field path, nothing
applied; an API failure becomes Degraded/ReconcileError and `Outcome.retry`. The status is
written even when the pass failed, and only when it differs from the live status (what the
object holds now, or what we wrote if the body predates our own write): a status edited by
anyone else is corrected by the next pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from epd_operator.api import constants as c
from epd_operator.api.admission import oddities
from epd_operator.api.models import EPDCluster
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.api.parse import SpecError, parse
from epd_operator.render import render_cluster
from epd_operator.render.launch import launch_config
from epd_operator.render.names import role_name, selector_labels

from . import capacity, partitions, revisions, scaling
from .cache import Caches
from .kube import Kube, KubeError
from .plan import key_of, make_plan
from .status import (
    DEGRADED,
    Problem,
    checked,
    compute_status,
    events_for,
    not_rolled_out,
    status_changed,
)
from .transport import TRANSPORT_READY, transport_condition, transport_event

log = logging.getLogger(__name__)

_MISSING_SCALER_CRD = (
    f" ({c.SCALER_CRD_NAME} is not installed: `kubectl apply -f crds/` or the chart's "
    "crds/; `helm upgrade` does not add new CRDs)"
)


@dataclass
class Outcome:
    """What one pass did; the handlers turn it into metrics, logs and retries."""

    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    status_written: bool = False
    events: int = 0
    # EPDRoleScaler /scale (seed or revert) and /status writes: "<name>/scale", "<name>/status".
    scaler_writes: list[str] = field(default_factory=list)
    retry: bool = False  # a transient API failure: try again soon
    conditions: dict[str, str] = field(default_factory=dict)  # type -> "True"/"False"
    duration_s: float = 0.0

    @property
    def writes(self) -> int:
        return (
            len(self.applied)
            + len(self.pruned)
            + int(self.status_written)
            + self.events
            + len(self.scaler_writes)
        )


class StatusMemory:
    """The last status this process wrote per EPDCluster uid, with the resourceVersion the
    write produced.

    A trigger may carry a watch event older than our own write; comparing with that stale
    status would write twice and fire Events twice for one flip. So `previous()` uses what we
    wrote while the body predates our write, and the body's own (live) status once the body is
    as new as our write: a status somebody else wrote since is then seen, and healed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_uid: dict[str, tuple[dict[str, Any], str | None]] = {}

    def get(self, uid: str) -> dict[str, Any] | None:
        with self._lock:
            got = self._by_uid.get(uid)
        return got[0] if got else None

    def put(self, uid: str, status: dict[str, Any], resource_version: str | None = None) -> None:
        with self._lock:
            self._by_uid[uid] = (status, resource_version)

    def previous(self, uid: str, body: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The status to compare a new one with: the live one unless the body is stale."""
        live: Mapping[str, Any] | None = body.get("status") or None
        with self._lock:
            got = self._by_uid.get(uid)
        if got is None:
            return live
        mine, written_rv = got
        body_rv = (body.get("metadata") or {}).get("resourceVersion")
        return live if _not_older(body_rv, written_rv) else mine

    def forget(self, uid: str) -> None:
        with self._lock:
            self._by_uid.pop(uid, None)


def _not_older(body_rv: Any, written_rv: str | None) -> bool:
    """Whether a body with `body_rv` already includes our write that produced `written_rv`.
    resourceVersions are etcd revisions (integers) on every apiserver we run against; where
    one is missing or opaque, only equality counts."""
    if written_rv is None:
        return True
    if body_rv is None:
        return False
    try:
        return int(body_rv) >= int(written_rv)
    except (TypeError, ValueError):
        return str(body_rv) == written_rv


def _announced(previous: Mapping[str, Any] | None, notes: list[str]) -> bool:
    for cond in (previous or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == c.CONDITION_READY:
            return all(n in str(cond.get("message", "")) for n in notes)
    return False


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _transport(
    kube: Kube,
    ns: str,
    name: str,
    *,
    rdma_enabled: bool | None,
    previous: Mapping[str, Any] | None,
    generation: int,
    now: str,
    cache: Caches | None = None,
) -> dict[str, Any] | None:
    """TransportReady from the engine pods' preflight reports (from the pod cache when it is
    current, else listed); without a valid spec, or when the pods cannot be listed, the
    condition the object holds is kept as it is."""
    kept = next(
        (
            dict(x)
            for x in (previous or {}).get("conditions") or []
            if isinstance(x, Mapping) and x.get("type") == TRANSPORT_READY
        ),
        None,
    )
    if rdma_enabled is None:
        return kept
    if not rdma_enabled:
        # TCP is what the spec asks for: no report to read (and no API call to make).
        return transport_condition(False, [], previous, generation, now)
    try:
        pods = _pods(kube, cache, ns, name)
    except KubeError as exc:
        log.warning("%s/%s: transport reports not read: %s", ns, name, exc)
        return kept
    return transport_condition(rdma_enabled, pods, previous, generation, now)


def reconcile(
    kube: Kube,
    obj: Mapping[str, Any],
    cfg: OperatorConfig,
    memory: StatusMemory | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    *,
    cache: Caches | None = None,
) -> Outcome:
    """One pass, in the steps of the module docstring; each step reads and fills `_Pass`."""
    started = time.monotonic()
    meta = obj.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        # Children go with the owner through the garbage collector; nothing to do.
        return Outcome()
    p = _Pass(
        kube,
        obj,
        cache,
        Outcome(),
        str(meta.get("namespace")),
        str(meta.get("name")),
        str(meta.get("uid")),
        int(meta.get("generation") or 0),
    )
    _parse_spec(p)
    _observe_children(p)
    if p.cluster is not None and p.observed is not None:
        _render_desired(p, p.cluster, p.observed, cfg)
    if p.desired is not None and p.observed is not None:
        _apply_and_prune(p, p.desired, p.observed)
        if p.cluster is not None:
            _sync_scalers(kube, p.cluster, p.decisions, p.children, p.out, cache=cache)
        _check_capacity(p, p.desired)
    elif p.observed is not None:
        p.children = p.observed
    report = _compute_status(
        p, memory.previous(p.uid, obj) if memory else obj.get("status") or None, _rfc3339(clock())
    )
    _publish(p, report, memory)
    p.out.duration_s = time.monotonic() - started
    return p.out


@dataclass
class _Pass:
    """What one pass knows so far; the steps of `reconcile` fill it in order."""

    kube: Kube
    obj: Mapping[str, Any]
    cache: Caches | None
    out: Outcome
    ns: str
    name: str
    uid: str
    generation: int
    cluster: EPDCluster | None = None  # None: the spec did not parse
    notes: list[str] = field(default_factory=list)  # valid but odd (api.admission.oddities)
    observed: list[dict[str, Any]] | None = None  # None: the children could not be listed
    desired: list[dict[str, Any]] | None = None
    decisions: dict[str, scaling.RoleDecision] = field(default_factory=dict)
    driven: partitions.Driven | None = None
    children: list[dict[str, Any]] = field(default_factory=list)  # live, after our writes

    def failed(self, message: str) -> None:
        """An API failure: Degraded/ReconcileError, and try again soon."""
        self.out.problems.append(Problem(c.REASON_RECONCILE_ERROR, message))
        self.out.retry = True

    def event(self, etype: str, reason: str, message: str) -> None:
        try:
            self.kube.create_event(self.obj, etype, reason, message)
            self.out.events += 1
        except KubeError as exc:
            log.warning("%s/%s: event not recorded: %s", self.ns, self.name, exc)


@dataclass(frozen=True)
class _Report:
    """The status one pass computed and what it is compared with."""

    status: dict[str, Any]
    previous: Mapping[str, Any] | None
    transport: dict[str, Any] | None
    clamps: list[str]


def _parse_spec(p: _Pass) -> None:
    """desired, part 1: the checked spec, or Degraded/SpecInvalid naming the field."""
    try:
        p.cluster = parse(dict(p.obj))
    except SpecError as exc:
        msg = str(exc)
        path = str(getattr(exc, "path", "") or "")
        if path and path not in msg:
            msg = f"{path}: {msg}"
        p.out.problems.append(Problem(c.REASON_SPEC_INVALID, msg))
    else:
        p.notes = [f"{path}: {why}" for path, why in oddities(p.cluster.spec)]


def _observe_children(p: _Pass) -> None:
    try:
        p.observed = _observe(p.kube, p.cache, p.ns, p.name)
    except KubeError as exc:
        p.failed(f"cannot list children: {exc}")


def _render_desired(
    p: _Pass, cluster: EPDCluster, observed: list[dict[str, Any]], cfg: OperatorConfig
) -> None:
    """desired, part 2: the manifests for what the cluster holds now (replica owners, launch
    revisions still mounted, the rollout step)."""
    # Each role's count: from its owner (spec or EPDRoleScaler), clamped.
    scalers = _by_role(observed, c.SCALER_KIND)
    p.decisions = scaling.decide(cluster.spec, scaling.scaler_replicas(scalers))
    # Workloads whose view of the launch config is unchanged keep their ConfigMap.
    pins = revisions.launch_pins(launch_config(cluster), observed)
    # Older launch revisions still present feed the router's routing table.
    older, legacy = revisions.live_launch_configs(observed)
    desired = render_cluster(
        cluster,
        cfg,
        {r: d.desired for r, d in p.decisions.items()},
        pins,
        live=older,
        legacy=legacy,
    )
    # The coordinated rollout: StatefulSet partitions per step; spec.paused holds it.
    max_unavailable: dict[str, int] = {
        r: getattr(cluster.spec.roles, r).rollout.max_unavailable
        for r in c.ROLE_NAMES
        if getattr(cluster.spec.roles, r) is not None
    }
    pods = _rollout_pods(p, desired, observed)
    p.driven = partitions.drive(desired, observed, max_unavailable, cluster.spec.paused, pods)
    p.desired = p.driven.desired


def _apply_and_prune(
    p: _Pass, desired: list[dict[str, Any]], observed: list[dict[str, Any]]
) -> None:
    """plan / apply: server-side apply what differs, prune what is ours and unwanted."""
    plan = make_plan(desired, observed, owner_uid=p.uid)
    p.children.extend(plan.unchanged)
    for want in plan.apply:
        k = key_of(want)
        try:
            live = p.kube.apply(want)
        except KubeError as exc:
            hint = _MISSING_SCALER_CRD if exc.not_found and k[1] == c.SCALER_KIND else ""
            p.failed(f"{exc}{hint}")
            continue
        p.children.append(live)
        if p.cache is not None:
            p.cache.children.note(live)
        p.out.applied.append(f"{k[1]}/{k[2]}")
        log.info(
            "%s/%s: applied %s/%s (%s)", p.ns, p.name, k[1], k[2], plan.reasons.get(k) or "missing"
        )
    for gone in _launch_prunable(p, plan.prune, desired=desired, observed=observed):
        k = key_of(gone)
        try:
            p.kube.delete(gone)
        except KubeError as exc:
            p.failed(str(exc))
            continue
        if p.cache is not None:
            p.cache.children.note_deleted(gone)
        p.out.pruned.append(f"{k[1]}/{k[2]}")
        log.info("%s/%s: pruned %s/%s", p.ns, p.name, k[1], k[2])


def _check_capacity(p: _Pass, desired: list[dict[str, Any]]) -> None:
    """capacity: a role no schedulable node can ever run is InsufficientResources."""
    try:
        nodes = p.cache.nodes.capacity() if p.cache is not None else None
        p.out.problems.extend(
            capacity.check(desired, nodes if nodes is not None else p.kube.list_nodes())
        )
    except KubeError as exc:
        # Without node visibility we cannot judge; the scheduler still will.
        log.warning("%s/%s: resource check skipped: %s", p.ns, p.name, exc)


def _compute_status(p: _Pass, previous: Mapping[str, Any] | None, now: str) -> _Report:
    """status: conditions from children and problems, plus transport, scaling and rollout."""
    status = compute_status(
        generation=p.generation,
        children=p.children,
        problems=p.out.problems,
        previous=previous,
        now=now,
        notes=p.notes,
    )
    rdma_enabled = p.cluster.spec.rdma.enabled if p.cluster is not None else None
    transport = _transport(
        p.kube,
        p.ns,
        p.name,
        rdma_enabled=rdma_enabled,
        previous=previous,
        generation=p.generation,
        now=now,
        cache=p.cache,
    )
    if transport is not None:
        status["conditions"].append(transport)
    for role, d in p.decisions.items():
        if role in status["roles"]:
            status["roles"][role].update(scaling.role_status_fields(d))
    if p.driven is not None and p.cluster is not None:
        partitions.annotate_status(status, p.driven, p.cluster.spec.paused)
    p.out.conditions = {cond["type"]: cond["status"] for cond in status["conditions"]}
    clamps = scaling.clamp_events(previous, p.decisions)
    return _Report(checked(status), previous, transport, clamps)


def _publish(p: _Pass, report: _Report, memory: StatusMemory | None) -> None:
    """Write the status when it changed; then announce what changed, as Events."""
    if not status_changed(report.previous, report.status):
        return
    try:
        written = p.kube.apply_status(p.ns, p.name, report.status)
    except KubeError as exc:
        log.warning("%s/%s: status write failed: %s", p.ns, p.name, exc)
        p.out.retry = True
        return
    p.out.status_written = True
    if memory is not None:
        rv = (written.get("metadata") or {}).get("resourceVersion")
        memory.put(p.uid, report.status, str(rv) if rv is not None else None)
    _announce(p, report)


def _announce(p: _Pass, report: _Report) -> None:
    if p.notes and not _announced(report.previous, p.notes):
        # Valid but odd: say so once, as a Warning Event (and in the Ready message).
        p.event("Warning", c.REASON_SPEC_WARNING, "; ".join(p.notes))
    if report.transport is not None:
        event = transport_event(report.previous, report.transport)
        if event is not None:
            p.event(*event)
    for line in report.clamps:
        p.event("Warning", c.REASON_REPLICAS_CLAMPED, line)
    for cond in events_for(report.previous, report.status):
        degraded = cond["type"] == DEGRADED
        p.event(
            "Warning" if degraded else "Normal",
            cond["reason"] if degraded else cond["type"],
            cond["message"],
        )


def _observe(kube: Kube, cache: Caches | None, ns: str, name: str) -> list[dict[str, Any]]:
    """The children of `name`: from the cache when it is current, else from the API."""
    if cache is not None:
        cached = cache.children.children(ns, name)
        if cached is not None:
            return cached
    return kube.list_children(ns, name)


def _pods(kube: Kube, cache: Caches | None, ns: str, name: str) -> list[dict[str, Any]]:
    """The engine pods of `name`: from the pod cache when it is current (it starts watching
    on its first use), else listed (the cached ones are slim: `PodCache.keep` says what they
    hold; read only)."""
    cached = cache.pods.pods(ns, name) if cache is not None else None
    return cached if cached is not None else kube.list_pods(ns, name)


def _rollout_pods(
    p: _Pass, desired: list[dict[str, Any]], observed: list[dict[str, Any]]
) -> list[dict[str, Any]] | None:
    """The pods' readiness for the rollout planner, read only while a role rolls; None
    (the planner then waits for every pod to be ready) when not needed or not readable."""
    if not partitions.needs_pods(desired, observed):
        return None
    try:
        return _pods(p.kube, p.cache, p.ns, p.name)
    except KubeError as exc:
        log.warning("%s/%s: pods not listed for the rollout: %s", p.ns, p.name, exc)
        return None


def _launch_prunable(
    p: _Pass,
    prune: list[dict[str, Any]],
    *,
    desired: list[dict[str, Any]],
    observed: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """`prune` without the old launch ConfigMaps that something may still mount
    (reconcile.revisions); pods are read only when there is such a candidate and every
    workload has rolled out (before that every candidate stays, whatever the pods mount)."""
    launch = [
        o
        for o in prune
        if o.get("kind") == "ConfigMap"
        and ((o.get("metadata") or {}).get("labels") or {}).get(c.LABEL_COMPONENT)
        == c.COMPONENT_CONFIG
    ]
    if not launch:
        return prune
    workloads = [o for o in observed if o.get("kind") in ("StatefulSet", "Deployment")]
    referenced = {
        m
        for o in desired
        if o.get("kind") in ("StatefulSet", "Deployment")
        and (
            m := revisions.mounted_launch_config(
                ((o.get("spec") or {}).get("template") or {}).get("spec") or {}
            )
        )
        is not None
    }
    try:
        pods = [] if not_rolled_out(workloads) else _pods(p.kube, p.cache, p.ns, p.name)
    except KubeError as exc:
        log.warning("%s/%s: old launch ConfigMaps kept (pods not listed): %s", p.ns, p.name, exc)
        return [o for o in prune if o not in launch]
    keep = revisions.retained_launch_configs(launch, referenced, workloads, pods)
    return [
        o for o in prune if o not in launch or (o.get("metadata") or {}).get("name") not in keep
    ]


def _by_role(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for o in objs:
        role = ((o.get("metadata") or {}).get("labels") or {}).get(c.LABEL_ROLE)
        if o.get("kind") == kind and role:
            out[str(role)] = o
    return out


def _sync_scalers(
    kube: Kube,
    cluster: EPDCluster,
    decisions: Mapping[str, scaling.RoleDecision],
    children: list[dict[str, Any]],
    out: Outcome,
    *,
    cache: Caches | None = None,
) -> None:
    """Seed or revert each role's EPDRoleScaler spec.replicas (through /scale) and write its
    status, each only when it differs."""
    ns, name = cluster.metadata.namespace, cluster.metadata.name
    scalers = _by_role(children, c.SCALER_KIND)
    sets = _by_role(children, "StatefulSet")
    for role, d in sorted(decisions.items()):
        live = scalers.get(role)
        if live is None:
            continue  # its apply failed (reported above)
        sname = role_name(name, role)
        if d.scaler_write is not None:
            try:
                kube.scale(ns, sname, d.scaler_write)
            except KubeError as exc:
                out.problems.append(Problem(c.REASON_RECONCILE_ERROR, str(exc)))
                out.retry = True
            else:
                out.scaler_writes.append(f"{sname}/scale")
                log.info(
                    "%s/%s: %s %s replicas -> %d (%s owns the number)",
                    ns,
                    name,
                    c.SCALER_KIND,
                    sname,
                    d.scaler_write,
                    d.source,
                )
        gen = int((live.get("metadata") or {}).get("generation") or 0)
        want = scaling.scaler_status(d, name, selector_labels(name, role), sets.get(role), gen)
        if scaling.scaler_status_differs(live.get("status"), want):
            try:
                written = kube.apply_scaler_status(ns, sname, want)
            except KubeError as exc:
                out.problems.append(Problem(c.REASON_RECONCILE_ERROR, str(exc)))
                out.retry = True
            else:
                out.scaler_writes.append(f"{sname}/status")
                if cache is not None and written.get("kind"):
                    cache.children.note(written)
