"""gitops/argocd/health.lua, run by a real Lua (lupa) on statuses reconcile.status produces.

The e2e suite runs the same script on objects the operator wrote on a real cluster
(e2e/test_operator.py); here the table covers every branch, fed by the status code itself.
"""

from __future__ import annotations

from typing import Any

import pytest

from e2e.argocd_health import health
from epd_operator.api import constants as c
from epd_operator.reconcile.partitions import annotate_status, drive
from epd_operator.reconcile.status import Problem, compute_status

NOW = "2026-11-23T10:00:00Z"


def sts(ready: int, want: int = 2) -> dict[str, Any]:
    return {
        "kind": "StatefulSet",
        "metadata": {"name": "d", "generation": 1, "labels": {"epd-operator.io/role": "decode"}},
        "spec": {"replicas": want},
        "status": {
            "observedGeneration": 1,
            "replicas": want,
            "readyReplicas": ready,
            "updatedReplicas": want,
        },
    }


def obj(
    generation: int = 1, status: dict[str, Any] | None = None, deleting: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "demo", "namespace": "ns", "generation": generation}
    if deleting:
        meta["deletionTimestamp"] = NOW
    out: dict[str, Any] = {
        "apiVersion": "epd-operator.io/v1alpha1",
        "kind": "EPDCluster",
        "metadata": meta,
    }
    if status is not None:
        out["status"] = status
    return out


def st(
    children: list[dict[str, Any]], problems: list[Problem] | None = None, generation: int = 1
) -> dict[str, Any]:
    return compute_status(
        generation=generation, children=children, problems=problems or [], previous=None, now=NOW
    )


def serving_rollout() -> dict[str, Any]:
    """A Ready cluster whose decode role rolls with 1 of 2 pods ready (maxUnavailable 1)."""
    was = st([sts(2)])
    return compute_status(generation=1, children=[sts(1)], problems=[], previous=was, now=NOW)


def paused(status: dict[str, Any]) -> dict[str, Any]:
    """A status with a rollout held by spec.paused, as reconcile.partitions annotates it."""
    driven = drive([_sts_b()], [_sts_a_mid()], {"decode": 1}, paused=True)
    annotate_status(status, driven, paused=True)
    return status


def _sts_a_mid() -> dict[str, Any]:
    live = sts(2)
    live["spec"]["template"] = {"metadata": {"labels": {c.LABEL_REVISION: "a"}}}
    live["status"].update(updatedReplicas=1, currentRevision="r0", updateRevision="r1")
    return live


def _sts_b() -> dict[str, Any]:
    want = sts(2)
    want["spec"]["template"] = {"metadata": {"labels": {c.LABEL_REVISION: "a"}}}
    return want


CASES = [
    ("no status yet", obj(), "Progressing", "Waiting for the operator"),
    ("ready", obj(status=st([sts(2)])), "Healthy", "every replica ready"),
    ("rolling out", obj(status=st([sts(1)])), "Progressing", "1/2 ready"),
    ("rollout paused", obj(status=paused(st([_sts_a_mid()]))), "Suspended", "step 1/2"),
    # Ready stays True through the rollout; Argo CD still waits for its end.
    ("serving while rolling out", obj(status=serving_rollout()), "Progressing", "1/2 ready"),
    (
        "spec invalid",
        obj(status=st([], [Problem("SpecInvalid", "spec.roles.x: bad")])),
        "Degraded",
        "SpecInvalid: spec.roles.x: bad",
    ),
    (
        "insufficient resources",
        obj(status=st([sts(0)], [Problem("InsufficientResources", "rdma/none")])),
        "Degraded",
        "InsufficientResources",
    ),
    (
        "new generation not yet observed",
        obj(generation=2, status=st([sts(2)])),
        "Progressing",
        "observe generation 2",
    ),
    ("being deleted", obj(status=st([sts(2)]), deleting=True), "Progressing", "deleted"),
    ("conditions missing", obj(status={"observedGeneration": 1}), "Progressing", "Waiting"),
]


@pytest.mark.parametrize(
    ("o", "status", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_health(o: dict[str, Any], status: str, fragment: str) -> None:
    got = health(o)
    assert got["status"] == status
    assert fragment in got["message"]
