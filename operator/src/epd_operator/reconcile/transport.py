"""The pure TransportReady condition: the engine pods' transport preflight reports -> one
condition on the EPDCluster, and the Event its change deserves.

Each engine pod that asks for RDMA runs `epd-engine --preflight` as an init container; its
report (epd_connector.launch.preflight) is the container's termination message, which the
kubelet puts into the pod status. Aggregation:

- rdma.enabled false: True / TCPRequested (TCP is what the spec asks for);
- some pod reports that it will not get RDMA: False with that pod's reason (NoRDMADevice before
  TCPFallback: the missing device is the first thing to fix), the message naming the pods;
- no report yet (pods not started, or not scheduled): Unknown / PreflightPending;
- every reporting pod gets RDMA: True / RDMA.

TransportReady does not gate Ready: a TCP fallback still serves, only slower, and says so here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from epd_connector.launch.preflight import FALLBACK_REASONS, INIT_CONTAINER, parse_report

from ..api import constants as c

TRANSPORT_READY: Final = "TransportReady"
REASON_TCP_REQUESTED: Final = "TCPRequested"
REASON_RDMA: Final = "RDMA"
REASON_PENDING: Final = "PreflightPending"
_MAX_NAMED = 5  # pods named in a message


def pod_report(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The preflight report in a pod's status (its init container's termination message)."""
    for st in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if st.get("name") != INIT_CONTAINER:
            continue
        for key in ("state", "lastState"):
            term = (st.get(key) or {}).get("terminated") or {}
            report = parse_report(term.get("message"))
            if report is not None:
                return report
    return None


def _named(pods: list[str]) -> str:
    shown = ", ".join(pods[:_MAX_NAMED])
    return shown + (f" and {len(pods) - _MAX_NAMED} more" if len(pods) > _MAX_NAMED else "")


def transport_state(rdma_enabled: bool, pods: Sequence[Mapping[str, Any]]) -> tuple[str, str, str]:
    """(status, reason, message) of TransportReady."""
    if not rdma_enabled:
        return "True", REASON_TCP_REQUESTED, "rdma.enabled is false: transfers use TCP"
    reports: dict[str, dict[str, Any]] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        if not (meta.get("labels") or {}).get(c.LABEL_ROLE):
            continue  # not an engine pod (router, store master)
        report = pod_report(pod)
        if report is not None:
            reports[str(meta.get("name"))] = report
    if not reports:
        return "Unknown", REASON_PENDING, "no engine pod has reported its transport preflight yet"
    for reason in FALLBACK_REASONS:
        bad = sorted(n for n, r in reports.items() if r.get("reason") == reason)
        if bad:
            first = reports[bad[0]]
            return "False", reason, f"{_named(bad)}: {first.get('message', reason)}"
    rdma = sorted(n for n, r in reports.items() if r.get("transport") == "rdma")
    tcp = sorted(n for n, r in reports.items() if r.get("transport") != "rdma")
    message = f"RDMA in {len(rdma)} engine pod(s)"
    if tcp:
        message += f"; TCP as configured in {_named(tcp)}"
    return "True", REASON_RDMA, message


def transport_condition(
    rdma_enabled: bool,
    pods: Sequence[Mapping[str, Any]],
    previous: Mapping[str, Any] | None,
    generation: int,
    now: str,
) -> dict[str, Any]:
    """The condition, with lastTransitionTime moving only when the status flips."""
    status, reason, message = transport_state(rdma_enabled, pods)
    before = next(
        (
            x
            for x in (previous or {}).get("conditions") or []
            if isinstance(x, Mapping) and x.get("type") == TRANSPORT_READY
        ),
        None,
    )
    flipped = before is None or before.get("status") != status
    since = now if before is None or flipped else str(before.get("lastTransitionTime", now))
    return {
        "type": TRANSPORT_READY,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }


def transport_event(
    previous: Mapping[str, Any] | None, cond: Mapping[str, Any]
) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event for a TransportReady change, or None: a Warning
    when it turns False or the fallback reason changes, Normal when it recovers to True."""
    before = next(
        (
            x
            for x in (previous or {}).get("conditions") or []
            if isinstance(x, Mapping) and x.get("type") == TRANSPORT_READY
        ),
        {},
    )
    was = (before.get("status"), before.get("reason"))
    now = (cond["status"], cond["reason"])
    if now == was:
        return None
    if cond["status"] == "False":
        return "Warning", str(cond["reason"]), str(cond["message"])
    if cond["status"] == "True" and was[0] == "False":
        return "Normal", TRANSPORT_READY, str(cond["message"])
    return None
