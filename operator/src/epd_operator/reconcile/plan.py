"""The pure diff between what render wants and what the cluster holds: apply, prune or no-op.

A child needs an apply only when some field we render differs from the live object. The
comparison treats the desired manifest as a *subset* of the observed one: the apiserver adds
defaults, status and metadata we never set, so extra observed fields are fine, but every field
we render must be there with the same value. That is what makes a resync with nothing changed
perform zero writes, and what catches a hand edit of a field we own (a changed replica count,
an env var added to a container list, a deleted child).

Scalars compare exactly, except Kubernetes quantities: the apiserver canonicalises them
(`1000m` -> `1`, `1024Mi` -> `1Gi`, int 1 -> "1"), so two quantities are equal when their
values are. Empty maps/lists/None in the desired object match an absent field, since the
apiserver drops them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from epd_operator.api.quantity import QuantityError, parse_quantity

ObjectKey = tuple[str, str, str]  # (apiVersion, kind, name); one namespace per cluster


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (str(obj.get("apiVersion", "")), str(obj.get("kind", "")), str(meta.get("name", "")))


@dataclass(frozen=True)
class Plan:
    """What to do with the children of one EPDCluster, in render order."""

    apply: list[dict[str, Any]] = field(default_factory=list)
    prune: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[dict[str, Any]] = field(default_factory=list)
    # For each object in `apply`: the first differing field path, for logs ("" = missing).
    reasons: dict[ObjectKey, str] = field(default_factory=dict)

    @property
    def noop(self) -> bool:
        return not self.apply and not self.prune


def make_plan(
    desired: Sequence[Mapping[str, Any]],
    observed: Iterable[Mapping[str, Any]],
    owner_uid: str,
) -> Plan:
    """Desired vs observed children -> Plan.

    `observed` holds what the label selector found; only objects controlled by `owner_uid`
    are pruned, so an object that merely carries our labels (copied by hand, or owned by
    someone else) is never deleted.
    """
    seen: dict[ObjectKey, Mapping[str, Any]] = {key_of(o): o for o in observed}
    plan = Plan()
    wanted: set[ObjectKey] = set()
    for want in desired:
        k = key_of(want)
        wanted.add(k)
        have = seen.get(k)
        if have is None:
            plan.apply.append(dict(want))
            plan.reasons[k] = ""
            continue
        diff = first_difference(want, have)
        if diff is None:
            plan.unchanged.append(dict(have))
        else:
            plan.apply.append(dict(want))
            plan.reasons[k] = diff
    for k, have in seen.items():
        if k not in wanted and controlled_by(have, owner_uid):
            plan.prune.append(dict(have))
    return plan


def controlled_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == owner_uid and r.get("controller") for r in refs)


def first_difference(desired: Any, observed: Any, path: str = "") -> str | None:
    """The path of the first field where `desired` is not a subset of `observed`, else None."""
    found = _difference(desired, observed)
    if found is None:
        return None
    # The path is only spelled out when there is a difference (every pass compares whole
    # objects; building the path of every field visited was most of the diff's cost).
    tail = "".join(reversed(found))
    if not path:
        return tail.removeprefix(".") or "<root>"
    return path + tail


def _difference(desired: Any, observed: Any) -> list[str] | None:
    """None when `desired` is a subset of `observed`, else the path segments to the first
    difference, innermost first (".key", "[index]")."""
    if _empty(desired):
        # An empty desired value matches absence and emptiness; anything else observed means
        # someone added content to a field we render empty (a hand edit) only for lists.
        if isinstance(desired, list) and isinstance(observed, list) and observed:
            return []
        return None
    if isinstance(desired, (dict, Mapping)):
        return _map_difference(desired, observed)
    if isinstance(desired, list):
        # Lists are compared whole and in order: the apiserver keeps list order, and an item
        # added by hand (an extra env var, a second container) must be reverted.
        if not isinstance(observed, list) or len(observed) != len(desired):
            return []
        for i, (d, o) in enumerate(zip(desired, observed, strict=True)):
            found = _difference(d, o)
            if found is not None:
                found.append(f"[{i}]")
                return found
        return None
    return None if scalars_equal(desired, observed) else []


def _map_difference(desired: Mapping[str, Any], observed: Any) -> list[str] | None:
    """`_difference` of a map: every key we render must match; keys others add are theirs."""
    if not isinstance(observed, (dict, Mapping)):
        return []
    for k, v in desired.items():
        if k not in observed:
            if _empty(v):
                continue
            return [f".{k}"]
        found = _difference(v, observed[k])
        if found is not None:
            found.append(f".{k}")
            return found
    return None


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, (dict, list)) and not v)


def quantity(v: Any) -> Decimal | None:
    """The value of a Kubernetes quantity (`"500m"`, `"8Gi"`, `2`), or None if `v` is not one."""
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return None
    if isinstance(v, float):
        return Decimal(str(v))
    try:
        return parse_quantity(v)[0]
    except QuantityError:
        return None


def scalars_equal(desired: Any, observed: Any) -> bool:
    if desired == observed and type(desired) is type(observed):
        return True
    # Only a string on at least one side can be a canonicalised quantity; int 1 vs float 1.0
    # from JSON is the same number too.
    if isinstance(desired, str) or isinstance(observed, str) or isinstance(desired, float):
        a, b = quantity(desired), quantity(observed)
        return a is not None and b is not None and a == b
    return (
        bool(desired == observed)
        and not isinstance(desired, bool)
        and not isinstance(observed, bool)
    )
