"""Per-role scaling decisions, pure: who owns each role's number, the clamp, what to write.

For each role present in an EPDCluster:

- the *requested* count comes from its owner (`roles.<role>.replicasFrom`): the spec's
  `replicas` (Spec), or the role's EPDRoleScaler `spec.replicas` (Scaler; the spec's number
  seeds a scaler that has none yet);
- `clamp` turns the requested counts of all roles into the *desired* counts: each role's
  `minReplicas`/`maxReplicas`, then `scaling.ratios` (the ratio's `role` is moved to the
  nearest count inside the bounds; its `per` is never moved, and a role that is some ratio's
  `role` is no ratio's `per`, so one pass suffices), then the role's own bounds again, which
  win over a ratio they contradict. Every adjustment is explained in words;
- the desired count is what the StatefulSet gets. The scaler's `spec.replicas` is written
  only to seed it (absent) or, with Spec, to put the spec's number back (a `kubectl scale`
  on a Spec-owned role is reverted); with Scaler the operator never writes it, so an
  autoscaler's number is never fought over. The pod template does not depend on any of
  this, so a change of owner restarts no pod.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from epd_operator.api import constants as c
from epd_operator.api.models import EPDClusterSpec, RatioBound, RoleSpec


@dataclass(frozen=True)
class Bounds:
    """Per-role bounds (None: unbounded on that side)."""

    min: int | None = None
    max: int | None = None


@dataclass(frozen=True)
class Ratio:
    """replicas(role) / replicas(per) within [min, max] (None: unbounded on that side)."""

    role: str
    per: str
    min: Fraction | None = None
    max: Fraction | None = None

    @classmethod
    def of(cls, bound: RatioBound) -> Ratio:
        # Fractions from the decimal text: 0.1 * 30 must be exactly 3, not 3.0000000000000004.
        def frac(x: float | None) -> Fraction | None:
            return None if x is None else Fraction(str(x))

        return cls(bound.role, bound.per, frac(bound.min), frac(bound.max))


@dataclass(frozen=True)
class Clamp:
    """The outcome of `clamp`: desired count and the reasons it moved, per role."""

    replicas: dict[str, int]
    why: dict[str, list[str]] = field(default_factory=dict)


def _fmt(x: Fraction) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{float(x):g}"


def _bound(n: int, b: Bounds, why: list[str]) -> int:
    # The API's ceiling applies even without maxReplicas (a ratio could ask for more).
    hi = min(b.max, c.MAX_ROLE_REPLICAS) if b.max is not None else c.MAX_ROLE_REPLICAS
    if b.min is not None and n < b.min:
        why.append(f"raised from {n} to minReplicas {b.min}")
        return b.min
    if n > hi:
        why.append(f"lowered from {n} to maxReplicas {hi}")
        return hi
    return n


def clamp(
    requested: Mapping[str, int],
    bounds: Mapping[str, Bounds],
    ratios: Sequence[Ratio] = (),
) -> Clamp:
    """Requested counts -> desired counts within the per-role bounds and the ratios."""
    why: dict[str, list[str]] = {r: [] for r in requested}
    out = {r: _bound(n, bounds.get(r, Bounds()), why[r]) for r, n in requested.items()}
    for ratio in ratios:
        if ratio.role not in out or ratio.per not in out:
            continue  # the spec's CEL refuses ratios over absent roles
        per = out[ratio.per]
        n = out[ratio.role]
        lo = math.ceil(ratio.min * per) if ratio.min is not None else None
        hi = math.floor(ratio.max * per) if ratio.max is not None else None
        span = (
            f"{ratio.role}/{ratio.per} in [{_fmt(ratio.min) if ratio.min is not None else 0}, "
            f"{_fmt(ratio.max) if ratio.max is not None else 'inf'}] with {ratio.per}={per}"
        )
        if lo is not None and n < lo:
            why[ratio.role].append(f"raised from {n} to {lo} by ratio {span}")
            n = lo
        elif hi is not None and n > hi:
            target = max(hi, 1)
            why[ratio.role].append(f"lowered from {n} to {target} by ratio {span}")
            n = target
        b = bounds.get(ratio.role, Bounds())
        bounded = _bound(n, b, [])
        if bounded != n:
            why[ratio.role].append(
                f"ratio {span} not met: {ratio.role} kept at {bounded} by its "
                f"{'minReplicas' if bounded > n else 'maxReplicas'}"
            )
            n = bounded
        out[ratio.role] = n
    return Clamp(out, {r: w for r, w in why.items() if w})


@dataclass(frozen=True)
class RoleDecision:
    """Everything the reconcile pass needs to know about one role's count."""

    role: str
    source: c.ReplicasFrom
    requested: int
    desired: int
    clamped: str  # "" when desired == requested
    # What the scaler's spec.replicas must be set to; None: leave it alone.
    scaler_write: int | None


def _roles(spec: EPDClusterSpec) -> dict[str, RoleSpec]:
    return {r: rs for r in c.ROLE_NAMES if (rs := getattr(spec.roles, r)) is not None}


def decide(
    spec: EPDClusterSpec, scaler_replicas: Mapping[str, int | None]
) -> dict[str, RoleDecision]:
    """Per present role: requested (from its owner), desired (clamped), and the scaler write.
    `scaler_replicas` holds each existing scaler's spec.replicas (None when unset); a role
    without an entry has no scaler yet."""
    roles = _roles(spec)
    requested: dict[str, int] = {}
    for role, rs in roles.items():
        live = scaler_replicas.get(role)
        if rs.replicas_from == c.REPLICAS_FROM_SCALER and live is not None:
            requested[role] = live
        else:
            requested[role] = rs.replicas
    result = clamp(
        requested,
        {r: Bounds(rs.min_replicas, rs.max_replicas) for r, rs in roles.items()},
        [Ratio.of(b) for b in (spec.scaling.ratios if spec.scaling else ())],
    )
    out: dict[str, RoleDecision] = {}
    for role, rs in roles.items():
        live = scaler_replicas.get(role)
        if rs.replicas_from == c.REPLICAS_FROM_SPEC:
            write = rs.replicas if live != rs.replicas else None
        else:
            write = rs.replicas if live is None else None  # seed only
        out[role] = RoleDecision(
            role=role,
            source=rs.replicas_from,
            requested=requested[role],
            desired=result.replicas[role],
            clamped="; ".join(result.why.get(role, [])),
            scaler_write=write,
        )
    return out


def scaler_replicas(scalers: Mapping[str, Mapping[str, Any]]) -> dict[str, int | None]:
    """role -> spec.replicas of each observed scaler (None when unset or not a number)."""
    out: dict[str, int | None] = {}
    for role, obj in scalers.items():
        value = (obj.get("spec") or {}).get("replicas")
        out[role] = value if isinstance(value, int) and not isinstance(value, bool) else None
    return out


def role_status_fields(d: RoleDecision) -> dict[str, Any]:
    """The scaling part of `status.roles.<role>` of the EPDCluster."""
    out: dict[str, Any] = {
        "desiredReplicas": d.desired,
        "requestedReplicas": d.requested,
        "replicasFrom": d.source,
    }
    if d.clamped:
        out["clamped"] = d.clamped
    return out


def scaler_status(
    d: RoleDecision,
    cluster: str,
    selector: Mapping[str, str],
    statefulset: Mapping[str, Any] | None,
    generation: int,
) -> dict[str, Any]:
    """The status of a role's EPDRoleScaler: the role's pod counts and the decision."""
    st = (statefulset or {}).get("status") or {}
    out: dict[str, Any] = {
        "replicas": int(st.get("replicas", 0) or 0),
        "readyReplicas": int(st.get("readyReplicas", 0) or 0),
        "desiredReplicas": d.desired,
        "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        "replicasFrom": d.source,
        "cluster": cluster,
        "role": d.role,
        "observedGeneration": generation,
    }
    if d.clamped:
        out["clamped"] = d.clamped
    return out


def clamp_events(
    previous: Mapping[str, Any] | None, decisions: Mapping[str, RoleDecision]
) -> list[str]:
    """One message per role whose clamp explanation is new since the `previous` EPDCluster
    status (so a held clamp is announced once, not on every pass)."""
    before = (previous or {}).get("roles") or {}
    out = []
    for role, d in sorted(decisions.items()):
        old = (before.get(role) or {}) if isinstance(before, Mapping) else {}
        if d.clamped and old.get("clamped") != d.clamped:
            out.append(f"{role}: {d.clamped}")
    return out


def scaler_status_differs(live: Mapping[str, Any] | None, want: Mapping[str, Any]) -> bool:
    """Whether the scaler's status must be written (only the operator writes it, and its
    apply owns every field, so a field we no longer set must go too)."""
    have = dict(live or {})
    return any(have.get(k) != v for k, v in want.items()) or (
        "clamped" in have and "clamped" not in want
    )
