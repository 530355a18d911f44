"""reconcile.rollout (the pure planner) and reconcile.partitions (the planner on objects):
table tests, and complete rollouts simulated step by step for E/PD and E/P/D."""

from __future__ import annotations

import copy
import itertools
from fractions import Fraction
from typing import Any

import pytest

from epd_operator.api import constants as c
from epd_operator.reconcile.partitions import annotate_status, drive, needs_pods
from epd_operator.reconcile.rollout import RoleState, batches, plan, target


def st(
    replicas: int,
    updated: int,
    u: int = 1,
    *,
    settled: bool = True,
    rolling: bool = True,
    ready: set[int] | None = None,
) -> RoleState:
    """A role; by default every pod is ready."""
    return RoleState(
        replicas,
        u,
        updated=updated,
        settled=settled,
        rolling=rolling,
        ready=frozenset(range(replicas) if ready is None else ready),
    )


@pytest.mark.parametrize(
    ("roles", "paused", "step", "steps", "targets"),
    [
        # 2E/2P/2D, maxUnavailable 1: two steps, one pod per role each.
        (
            {"encoder": st(2, 0), "prefill": st(2, 0), "decode": st(2, 0)},
            False,
            1,
            2,
            {"encoder": 1, "prefill": 1, "decode": 1},
        ),
        (
            {"encoder": st(2, 1), "prefill": st(2, 1), "decode": st(2, 1)},
            False,
            2,
            2,
            {"encoder": 2, "prefill": 2, "decode": 2},
        ),
        # A role not settled yet (its new pod not ready): the step is held.
        (
            {"encoder": st(2, 1), "prefill": st(2, 1, settled=False), "decode": st(2, 1)},
            False,
            1,
            2,
            {"encoder": 1, "prefill": 1, "decode": 1},
        ),
        # Paused: held, whatever the readiness.
        (
            {"encoder": st(2, 1), "prefill": st(2, 1), "decode": st(2, 1)},
            True,
            1,
            2,
            {"encoder": 1, "prefill": 1, "decode": 1},
        ),
        ({"encoder": st(2, 0), "decode": st(2, 0)}, True, 0, 2, {"encoder": 0, "decode": 0}),
        # 1E : 4D: the encoder's single pod moves at step 1, decode one pod per step.
        ({"encoder": st(1, 0), "decode": st(4, 0)}, False, 1, 4, {"encoder": 1, "decode": 1}),
        ({"encoder": st(1, 1), "decode": st(4, 1)}, False, 2, 4, {"encoder": 1, "decode": 2}),
        # maxUnavailable 2 on decode: 2 steps for 4 pods; the encoder follows in lock-step.
        ({"encoder": st(2, 0), "decode": st(4, 0, u=2)}, False, 1, 2, {"encoder": 1, "decode": 2}),
        # Only decode changes: only decode rolls (the others are not in the plan).
        ({"encoder": st(2, 2, rolling=False), "decode": st(2, 0)}, False, 1, 2, {"decode": 1}),
        # A role ahead of the others (it started earlier) never moves back.
        ({"encoder": st(2, 0), "decode": st(2, 2)}, False, 1, 2, {"encoder": 1, "decode": 2}),
        # Nothing rolls.
        ({"encoder": st(2, 2, rolling=False)}, False, 0, 0, {}),
        # A fix after a bad image: pod 1 (the bad one) is not ready, replacing it costs nothing.
        (
            {"encoder": st(2, 0), "decode": st(2, 0, ready={0})},
            False,
            1,
            2,
            {"encoder": 1, "decode": 1},
        ),
        # Pod 1 is the only ready one: taking it would leave fewer than R - maxUnavailable.
        (
            {"encoder": st(2, 0), "decode": st(2, 0, ready={1})},
            False,
            0,
            2,
            {"encoder": 0, "decode": 0},
        ),
        # ...which maxUnavailable 2 allows.
        (
            {"encoder": st(2, 0), "decode": st(2, 0, u=2, ready={1})},
            False,
            1,
            2,
            {"encoder": 1, "decode": 1},
        ),
    ],
    ids=[
        "first",
        "second",
        "unsettled",
        "paused",
        "paused-at-0",
        "1e4d-1",
        "1e4d-2",
        "u2",
        "one-role",
        "ahead",
        "none",
        "fix-broken",
        "keep-capacity",
        "keep-capacity-u2",
    ],
)
def test_plan(
    roles: dict[str, RoleState], paused: bool, step: int, steps: int, targets: dict[str, int]
) -> None:
    p = plan(roles, paused=paused)
    assert (p.step, p.steps, p.targets) == (step, steps, targets)


def test_target_and_batches() -> None:
    assert [target(3, k, 3) for k in range(4)] == [0, 1, 2, 3]
    assert [target(2, k, 4) for k in range(5)] == [0, 1, 1, 2, 2]
    assert [batches(r, u) for r, u in ((1, 1), (4, 1), (4, 2), (5, 2), (2, 5))] == [1, 4, 2, 3, 1]


TOPOLOGIES = {"E/PD": ("encoder", "decode"), "E/P/D": ("encoder", "prefill", "decode")}


def simulate(
    replicas: dict[str, int], unavailable: dict[str, int], pause_at: int | None = None
) -> list[dict[str, int]]:
    """A complete rollout, one settled step at a time: the new-revision counts per step."""
    updated = dict.fromkeys(replicas, 0)
    history = [dict(updated)]
    for _ in range(1000):
        states = {r: st(replicas[r], updated[r], unavailable[r]) for r in replicas}
        p = plan(states)
        if p.finished:
            break
        if pause_at is not None and p.done == pause_at:
            held = plan(states, paused=True)
            assert held.targets == updated  # paused: nothing moves
            pause_at = None
        updated = dict(p.targets)
        history.append(dict(updated))
    return history


CASES = [
    (topo, dict(zip(TOPOLOGIES[topo], counts, strict=True)), u)
    for topo in TOPOLOGIES
    for counts in itertools.product((1, 2, 3, 5), repeat=len(TOPOLOGIES[topo]))
    for u in (1, 2)
]


@pytest.mark.parametrize(
    ("topo", "replicas", "u"),
    CASES,
    ids=[f"{t}-{'/'.join(map(str, r.values()))}-u{u}" for t, r, u in CASES],
)
def test_a_complete_rollout_keeps_every_bound(topo: str, replicas: dict[str, int], u: int) -> None:
    unavailable = dict.fromkeys(replicas, u)
    history = simulate(replicas, unavailable, pause_at=1)
    steps = max(batches(replicas[r], u) for r in replicas)
    assert len(history) == steps + 1  # exactly K steps, the slowest role's batches
    assert history[-1] == replicas  # every pod on the new revision at the end
    for before, after in itertools.pairwise(history):
        for r in replicas:
            # maxUnavailable: at most u pods of a role are replaced in one step.
            assert 0 <= after[r] - before[r] <= u, (before, after)
    for counts in history:
        share = {r: Fraction(counts[r], replicas[r]) for r in replicas}
        for a, b in itertools.combinations(replicas, 2):
            # The stated ratio bound: less than one pod of the smaller role apart.
            assert abs(share[a] - share[b]) < Fraction(1, min(replicas[a], replicas[b]))
        new_complete = all(counts[r] >= 1 for r in replicas)
        old_complete = all(counts[r] < replicas[r] for r in replicas)
        # Some revision always has every role (serving continues), and the new revision
        # is complete from the first step on.
        assert new_complete or old_complete
        assert new_complete or counts == dict.fromkeys(replicas, 0)


# ------------------------------------------------------------------ the planner on objects


def sts(
    role: str, revision: str, replicas: int = 2, /, partition: int = 0, **status: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": f"demo-{role}", "labels": {c.LABEL_ROLE: role}, "generation": 1},
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"labels": {c.LABEL_REVISION: revision}},
                "spec": {"v": revision},
            },
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}},
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
            "currentRevision": "c",
            "updateRevision": "c",
            **status,
        },
    }


def partitions(objs: list[dict[str, Any]]) -> dict[str, int]:
    return {
        o["metadata"]["labels"][c.LABEL_ROLE]: o["spec"]["updateStrategy"]["rollingUpdate"][
            "partition"
        ]
        for o in objs
    }


def test_drive_starts_a_new_revision_one_batch_per_role() -> None:
    live = [sts("encoder", "a"), sts("decode", "a")]
    want = [sts("encoder", "b"), sts("decode", "b")]
    d = drive(want, live, {"encoder": 1, "decode": 1}, paused=False)
    assert partitions(d.desired) == {"encoder": 1, "decode": 1}
    assert (d.plan.step, d.plan.steps) == (1, 2)
    status: dict[str, Any] = {
        "roles": {"encoder": {}, "decode": {}},
        "conditions": [
            {"type": "Progressing", "status": "True", "reason": "RolloutInProgress", "message": "x"}
        ],
    }
    annotate_status(status, d, paused=False)
    assert status["rollout"] == {"step": 0, "steps": 2, "paused": False}
    assert status["conditions"][0]["message"] == "step 0/2: x"


def test_drive_leaves_an_unchanged_role_alone() -> None:
    live = [sts("encoder", "a"), sts("decode", "a")]
    d = drive([sts("encoder", "a"), sts("decode", "b")], live, {}, paused=False)
    assert partitions(d.desired) == {"encoder": 0, "decode": 1}


def test_drive_mid_rollout_waits_for_readiness_then_steps() -> None:
    mid = {"updatedReplicas": 1, "currentRevision": "c", "updateRevision": "u"}
    live = [
        sts("encoder", "b", partition=1, **mid, readyReplicas=1),
        sts("decode", "b", partition=1, **mid),
    ]
    want = [sts("encoder", "b"), sts("decode", "b")]
    assert partitions(drive(want, live, {}, paused=False).desired) == {"encoder": 1, "decode": 1}
    live[0]["status"]["readyReplicas"] = 2
    assert partitions(drive(want, live, {}, paused=False).desired) == {"encoder": 0, "decode": 0}


def test_paused_holds_templates_and_partitions() -> None:
    mid = {"updatedReplicas": 1, "currentRevision": "c", "updateRevision": "u"}
    live = [sts("encoder", "b", partition=1, **mid), sts("decode", "b", partition=1, **mid)]
    want = [sts("encoder", "z"), sts("decode", "z")]  # a further change while paused
    d = drive(copy.deepcopy(want), live, {}, paused=True)
    assert partitions(d.desired) == {"encoder": 1, "decode": 1}
    assert [o["spec"]["template"] for o in d.desired] == [o["spec"]["template"] for o in live]
    assert d.held == ["StatefulSet/demo-encoder", "StatefulSet/demo-decode"]
    status: dict[str, Any] = {
        "roles": {},
        "conditions": [
            {"type": "Progressing", "status": "True", "reason": "RolloutInProgress", "message": "x"}
        ],
    }
    annotate_status(status, d, paused=True)
    assert status["rollout"] == {"step": 1, "steps": 2, "paused": True}
    assert status["conditions"][0]["reason"] == c.REASON_ROLLOUT_PAUSED


def test_a_new_statefulset_is_created_without_a_partition() -> None:
    d = drive([sts("encoder", "a")], [], {}, paused=False)
    assert partitions(d.desired) == {"encoder": 0}
    assert d.plan.steps == 0


def pod(name: str, revision: str, ready: bool) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"controller-revision-hash": revision}},
        "status": {"conditions": [{"type": "Ready", "status": str(ready)}]},
    }


def test_drive_reads_pod_readiness_when_given() -> None:
    mid = {"updatedReplicas": 1, "currentRevision": "c", "updateRevision": "u", "readyReplicas": 1}
    live = [sts("decode", "b", partition=1, **mid)]
    want = [sts("decode", "b")]
    # The new pod (ordinal 1) is not ready yet: hold at step 1.
    pods = [pod("demo-decode-0", "c", True), pod("demo-decode-1", "u", False)]
    assert partitions(drive(want, live, {}, paused=False, pods=pods).desired) == {"decode": 1}
    # It is ready (the status count lags): step 2.
    pods[1] = pod("demo-decode-1", "u", True)
    assert partitions(drive(want, live, {}, paused=False, pods=pods).desired) == {"decode": 0}


def test_a_fix_to_a_broken_rollout_goes_through() -> None:
    """Bad image at step 1 (pod 1 never ready), then a fixed spec: the broken pod is
    replaced at once, the ready pod 0 stays until the fixed pod 1 is ready."""
    live = [
        sts(
            "decode",
            "bad",
            partition=1,
            updatedReplicas=1,
            readyReplicas=1,
            currentRevision="c",
            updateRevision="bad",
        )
    ]
    pods = [pod("demo-decode-0", "c", True), pod("demo-decode-1", "bad", False)]
    assert needs_pods([sts("decode", "fixed")], live)
    d = drive([sts("decode", "fixed")], live, {}, paused=False, pods=pods)
    assert partitions(d.desired) == {"decode": 1}


def test_an_applied_step_is_never_taken_back_while_its_pods_are_replaced() -> None:
    """Found on kind, where pods take seconds to start: step 2 applied (partition 0) to both
    roles; decode has replaced its pod 0 (not ready yet), encoder is still replacing its own
    (the controller counts it as not updated). The step stays: encoder's partition must not
    go back to 1, which would put its pod 0 back on the old revision. Likewise a pause right
    after step 1 was applied holds partition 1, not 2."""
    mid = {"currentRevision": "c", "updateRevision": "u"}
    live = [
        sts("encoder", "b", partition=0, updatedReplicas=1, readyReplicas=1, **mid),
        sts("decode", "b", partition=0, updatedReplicas=2, readyReplicas=1, **mid),
    ]
    want = [sts("encoder", "b"), sts("decode", "b")]
    pods = [
        pod("demo-encoder-1", "u", True),  # its pod 0 is being recreated
        pod("demo-decode-0", "u", False),
        pod("demo-decode-1", "u", True),
    ]
    d = drive(want, live, {}, paused=False, pods=pods)
    assert partitions(d.desired) == {"encoder": 0, "decode": 0}
    assert (d.plan.step, d.plan.done) == (2, 1)
    # Step 1 applied, no pod replaced yet, then paused: the step is held, not undone.
    fresh = {"updatedReplicas": 0, **mid}
    live = [sts("encoder", "b", partition=1, **fresh), sts("decode", "b", partition=1, **fresh)]
    d = drive(want, live, {}, paused=True)
    assert partitions(d.desired) == {"encoder": 1, "decode": 1}
