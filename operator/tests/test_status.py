"""reconcile.status: observed children + problems -> status (conditions, counts, transitions)."""

from __future__ import annotations

from typing import Any

import pytest

from epd_operator.reconcile.status import (
    Problem,
    StatusShapeError,
    checked,
    compute_status,
    events_for,
    not_rolled_out,
    role_counts,
    status_changed,
)

T0 = "2026-11-23T10:00:00Z"
T1 = "2026-11-23T10:05:00Z"


def sts(
    role: str,
    want: int,
    ready: int,
    updated: int,
    *,
    gen: int = 2,
    seen: int = 2,
    current: str = "r2",
    update: str = "r2",
    total: int | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": f"demo-{role}",
            "generation": gen,
            "labels": {"epd-operator.io/role": role},
        },
        "spec": {"replicas": want},
        "status": {
            "observedGeneration": seen,
            "replicas": want if total is None else total,
            "readyReplicas": ready,
            "updatedReplicas": updated,
            "currentRevision": current,
            "updateRevision": update,
        },
    }


def router(want: int = 1, available: int = 1, gen: int = 1, seen: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "demo-router",
            "generation": gen,
            "labels": {"app.kubernetes.io/component": "router"},
        },
        "spec": {"replicas": want},
        "status": {
            "observedGeneration": seen,
            "replicas": want,
            "readyReplicas": available,
            "updatedReplicas": want,
            "availableReplicas": available,
        },
    }


def healthy() -> list[dict[str, Any]]:
    return [
        sts("encoder", 1, 1, 1),
        sts("decode", 2, 2, 2),
        router(),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "demo-config"}},
    ]


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def true_types(status: dict[str, Any]) -> list[str]:
    return [
        c["type"]
        for c in status["conditions"]
        if c["status"] == "True" and c["type"] in ("Ready", "Progressing", "Degraded")
    ]


def test_all_rolled_out_is_ready() -> None:
    st = compute_status(generation=4, children=healthy(), problems=[], previous=None, now=T0)
    assert st["observedGeneration"] == 4
    assert st["phase"] == "Ready"
    assert conds(st) == {
        "Ready": ("True", "Reconciled"),
        "Progressing": ("False", "Reconciled"),
        "Degraded": ("False", "AsExpected"),
        "Reconciling": ("False", "Reconciled"),
        "Stalled": ("False", "AsExpected"),
    }
    assert st["roles"] == {
        "decode": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "ready": "2/2"},
        "encoder": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "ready": "1/1"},
    }
    assert all(
        c["observedGeneration"] == 4 and c["lastTransitionTime"] == T0 for c in st["conditions"]
    )


# Children that are not rolled out yet, and the fragment the Progressing message names.
ROLLOUTS = [
    ([sts("decode", 2, 1, 2)], "1/2 ready"),
    ([sts("decode", 2, 2, 1)], "1/2 updated"),
    ([sts("decode", 2, 2, 2, gen=3, seen=2)], "not yet observed"),
    ([sts("decode", 2, 2, 2, current="r1")], "revision r2 not yet current"),
    ([sts("decode", 2, 2, 2, total=3)], "1 old replica(s) terminating"),
    ([router(available=0)], "0/1 ready"),
    ([router(gen=2, seen=1)], "Deployment demo-router: new spec not yet observed"),
]


@pytest.mark.parametrize(("children", "fragment"), ROLLOUTS)
def test_rollout_in_progress_is_progressing(children: list[dict[str, Any]], fragment: str) -> None:
    st = compute_status(
        generation=2, children=[*healthy()[:1], *children], problems=[], previous=None, now=T0
    )
    assert true_types(st) == ["Progressing"]
    assert st["phase"] == "Progressing"
    assert conds(st)["Ready"] == ("False", "RolloutInProgress")
    assert conds(st)["Reconciling"] == ("True", "RolloutInProgress")
    msg = next(c["message"] for c in st["conditions"] if c["type"] == "Progressing")
    assert fragment in msg


def test_stale_controller_counts_report_zero_updated() -> None:
    counts = role_counts([sts("decode", 3, 2, 2, gen=5, seen=4, total=2)])
    assert counts == {
        "decode": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 0, "ready": "2/3"}
    }


@pytest.mark.parametrize(
    "problems",
    [
        [Problem("SpecInvalid", "spec.roles.encoder.parallelism.tensor: must be 1")],
        [
            Problem("InsufficientResources", "role decode requests 8 rdma/x"),
            Problem("InsufficientResources", "role prefill requests 8 rdma/x"),
        ],
        [Problem("ReconcileError", "apply StatefulSet ns/x: HTTP 500")],
    ],
)
def test_problems_make_it_degraded_and_nothing_else(problems: list[Problem]) -> None:
    st = compute_status(generation=1, children=healthy(), problems=problems, previous=None, now=T0)
    assert true_types(st) == ["Degraded"]
    assert st["phase"] == "Degraded"
    reason = problems[0].reason
    assert conds(st)["Degraded"] == ("True", reason)
    assert conds(st)["Stalled"] == ("True", reason)
    assert conds(st)["Ready"] == ("False", reason)
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    for p in problems:
        assert p.message in degraded["message"]


def test_transition_time_moves_only_on_a_flip() -> None:
    first = compute_status(
        generation=1, children=[sts("decode", 2, 1, 1)], problems=[], previous=None, now=T0
    )
    # Still progressing, different counts: message changes, times stay.
    second = compute_status(
        generation=1, children=[sts("decode", 2, 2, 1)], problems=[], previous=first, now=T1
    )
    times = {c["type"]: c["lastTransitionTime"] for c in second["conditions"]}
    assert set(times.values()) == {T0}
    # Rolled out: Ready and Progressing (and Reconciling) flip, Degraded does not.
    third = compute_status(
        generation=1, children=[sts("decode", 2, 2, 2)], problems=[], previous=second, now=T1
    )
    times = {c["type"]: c["lastTransitionTime"] for c in third["conditions"]}
    assert times == {
        "Ready": T1,
        "Progressing": T1,
        "Reconciling": T1,
        "Degraded": T0,
        "Stalled": T0,
    }


def test_status_changed_ignores_foreign_fields_and_condition_order() -> None:
    st = compute_status(generation=1, children=healthy(), problems=[], previous=None, now=T0)
    held = dict(st, kopf={"progress": {}}, conditions=list(reversed(st["conditions"])))
    assert not status_changed(held, st)
    assert status_changed(None, st)
    assert status_changed(dict(st, observedGeneration=0), st)
    later = compute_status(
        generation=1, children=[sts("decode", 2, 1, 2)], problems=[], previous=st, now=T1
    )
    assert status_changed(st, later)


def test_a_resync_with_nothing_new_needs_no_write() -> None:
    st = compute_status(generation=1, children=healthy(), problems=[], previous=None, now=T0)
    again = compute_status(generation=1, children=healthy(), problems=[], previous=st, now=T1)
    assert again == st
    assert not status_changed(st, again)


def test_events_only_for_conditions_turning_true_or_a_new_spec_error() -> None:
    progressing = compute_status(
        generation=1, children=[sts("decode", 2, 1, 1)], problems=[], previous=None, now=T0
    )
    assert [c["type"] for c in events_for(None, progressing)] == ["Progressing"]
    more = compute_status(
        generation=1, children=[sts("decode", 2, 2, 1)], problems=[], previous=progressing, now=T0
    )
    assert events_for(progressing, more) == []  # progress messages are not events
    ready = compute_status(generation=1, children=healthy(), problems=[], previous=more, now=T1)
    assert [c["type"] for c in events_for(more, ready)] == ["Ready"]
    bad = compute_status(
        generation=2,
        children=healthy(),
        problems=[Problem("SpecInvalid", "spec.a: bad")],
        previous=ready,
        now=T1,
    )
    assert [(c["type"], c["reason"]) for c in events_for(ready, bad)] == [
        ("Degraded", "SpecInvalid")
    ]
    worse = compute_status(
        generation=3,
        children=healthy(),
        problems=[Problem("SpecInvalid", "spec.b: bad")],
        previous=bad,
        now=T1,
    )
    assert [c["message"] for c in events_for(bad, worse)] == ["spec.b: bad"]
    assert events_for(worse, worse) == []


def test_not_rolled_out_ignores_non_workloads() -> None:
    assert not_rolled_out([{"kind": "ConfigMap"}, {"kind": "Service"}]) == []


@pytest.mark.parametrize(
    ("children", "problems"),
    [
        ([sts("encoder", 1, 1, 1), sts("decode", 2, 2, 2)], []),
        ([sts("encoder", 1, 0, 0)], []),
        ([], [Problem("SpecInvalid", "spec.roles: bad")]),
    ],
    ids=["ready", "progressing", "degraded"],
)
def test_computed_status_fits_the_status_model(
    children: list[dict[str, Any]], problems: list[Problem]
) -> None:
    status = compute_status(
        generation=3,
        children=children,
        problems=problems,
        previous=None,
        now=T0,
        notes=["spec.x: odd"],
    )
    assert checked(status) is status


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"rolez": {}}, "status.rolez"),
        (
            {"roles": {"encoder": {"replicas": 1, "readyReplica": 1}}},
            "status.roles.encoder.readyReplica",
        ),
        ({"phase": "Sleeping"}, "phase"),
        ({"observedGeneration": -1}, "observedGeneration"),
    ],
)
def test_a_status_outside_the_model_is_refused_by_name(change: dict[str, Any], named: str) -> None:
    status = compute_status(generation=1, children=[], problems=[], previous=None, now=T0)
    with pytest.raises(StatusShapeError, match=named.replace(".", r"\.")):
        checked({**status, **change})


# A Ready cluster that rolls out: Ready stays True while every role keeps its serving floor.
def _pdb(role: str, max_unavailable: int) -> dict[str, Any]:
    return {
        "kind": "PodDisruptionBudget",
        "metadata": {"name": f"demo-{role}"},
        "spec": {"maxUnavailable": max_unavailable},
    }


SERVING = [
    # decode 2 pods, maxUnavailable 1 (no PDB: 1): one replaced at a time keeps one serving.
    ([sts("decode", 2, 1, 1, current="r1")], "True"),
    # A role of one pod has no floor to spare: its only pod being replaced is an outage.
    ([sts("decode", 1, 0, 0, current="r1")], "False"),
    # maxUnavailable 2 of 3: one ready is the floor.
    ([sts("decode", 3, 1, 2, current="r1"), _pdb("decode", 2)], "True"),
    ([sts("decode", 3, 1, 2, current="r1")], "False"),
    # The router must keep one available pod.
    ([router(available=0)], "False"),
    # A new spec not yet observed: pods are what they were, still serving.
    ([sts("decode", 2, 2, 2, gen=3, seen=2)], "True"),
]


@pytest.mark.parametrize(("children", "ready"), SERVING)
def test_ready_stays_true_while_a_rollout_keeps_its_floor(
    children: list[dict[str, Any]], ready: str
) -> None:
    was = compute_status(generation=2, children=healthy(), problems=[], previous=None, now=T0)
    st = compute_status(
        generation=3, children=[*healthy()[:1], *children], problems=[], previous=was, now=T1
    )
    assert conds(st)["Ready"][0] == ready
    assert conds(st)["Progressing"] == ("True", "RolloutInProgress")
    assert st["phase"] == "Progressing"
    if ready == "True":
        assert conds(st)["Ready"][1] == "ServingDuringRollout"
        ready_cond = next(c for c in st["conditions"] if c["type"] == "Ready")
        assert ready_cond["lastTransitionTime"] == T0  # no flicker: it never turned False
    # A cluster that was never Ready does not turn Ready early (creation waits for all pods).
    fresh = compute_status(
        generation=3, children=[*healthy()[:1], *children], problems=[], previous=None, now=T1
    )
    assert conds(fresh)["Ready"][0] == "False"
