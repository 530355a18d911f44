"""reconcile.core.reconcile(): the whole pass against a small in-memory API server.

The in-memory server keeps objects as applied (no defaulting) and answers list / apply /
delete / status / event calls; e2e/test_operator.py runs the same passes against a real
apiserver. Here the point is the decisions: what is applied, pruned, written, announced.
"""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import api_samples
import pytest

from epd_operator.api.operator_config import OperatorConfig
from epd_operator.reconcile.core import StatusMemory, reconcile
from epd_operator.reconcile.kube import Kube

CFG = OperatorConfig.from_env({})
NODE = {
    "metadata": {"name": "n0", "labels": {}},
    "spec": {},
    "status": {"allocatable": {"nvidia.com/gpu": "8", "rdma/hca_shared_devices_a": "1000"}},
}


class FakeApiserver:
    def __init__(self, nodes: list[dict[str, Any]] | None = None) -> None:
        self.objects: dict[str, dict[str, Any]] = {}  # path -> object
        self.nodes = [NODE] if nodes is None else nodes
        self.events: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []
        self.fail_apply_of: str | None = None
        self.scales: list[tuple[str, int]] = []

    def __call__(self, method: str, path: str, headers: Any, body: Any) -> tuple[int, bytes]:
        url = urlsplit(path)
        p = url.path
        if method == "GET" and p == "/api/v1/nodes":
            return self._ok({"items": self.nodes})
        if method == "GET":
            sel = dict(kv.split("=") for kv in parse_qs(url.query)["labelSelector"][0].split(","))
            items = [
                o
                for k, o in self.objects.items()
                if k.rsplit("/", 1)[0] == p
                and all(o["metadata"].get("labels", {}).get(a) == b for a, b in sel.items())
            ]
            return self._ok({"items": copy.deepcopy(items)})
        if method == "PATCH" and p.endswith("/scale"):  # merge patch of spec.replicas
            scaler = self.objects[p.rsplit("/", 1)[0]]
            scaler.setdefault("spec", {})["replicas"] = body["spec"]["replicas"]
            self.scales.append((scaler["metadata"]["name"], body["spec"]["replicas"]))
            return self._ok({"spec": body["spec"]})
        if method == "PATCH" and "/epdrolescalers/" in p and p.endswith("/status"):
            scaler = self.objects[p.rsplit("/", 1)[0]]
            scaler["status"] = copy.deepcopy(body["status"])
            return self._ok(scaler)
        if method == "PATCH" and p.endswith("/status"):
            self.statuses.append(body["status"])
            return self._ok(body)
        if method == "PATCH":
            if self.fail_apply_of and p.endswith(self.fail_apply_of):
                return 500, json.dumps({"message": "etcdserver: timeout"}).encode()
            obj = copy.deepcopy(body)
            obj["metadata"]["uid"] = f"uid-{p}"
            old = self.objects.get(p) or {}
            # Like server-side apply: fields other writers own survive (status, and the
            # scaler's spec.replicas, which our apply never sends).
            for kept in ("status", "spec"):
                if kept in old and kept not in obj:
                    obj[kept] = old[kept]
            self.objects[p] = obj
            return self._ok(obj)
        if method == "DELETE":
            self.objects.pop(p, None)
            return self._ok({})
        if method == "POST":
            self.events.append(body)
            return self._ok(body)
        raise AssertionError(f"unexpected call {method} {path}")

    @staticmethod
    def _ok(body: Any) -> tuple[int, bytes]:
        return 200, json.dumps(body).encode()

    def kinds(self) -> list[tuple[str, str]]:
        return sorted((o["kind"], o["metadata"]["name"]) for o in self.objects.values())


def sample(name: str = "minimal-epd") -> dict[str, Any]:
    obj = api_samples.sample(name)
    obj["metadata"].update(namespace="ns", uid="cluster-uid", generation=1)
    return obj


def test_first_pass_applies_everything_and_a_second_writes_nothing() -> None:
    api = FakeApiserver()
    kube = Kube(api)
    memory = StatusMemory()
    obj = sample()
    first = reconcile(kube, obj, CFG, memory)
    assert first.problems == []
    assert len(first.applied) == len(api.objects) > 0
    assert first.status_written
    assert first.conditions["Progressing"] == "True"  # nothing has a controller status yet
    writes = kube.writes.total()
    again = reconcile(kube, dict(obj, status=api.statuses[-1]), CFG, memory)
    assert again.writes == 0
    assert kube.writes.total() == writes


def test_invalid_spec_applies_nothing_and_says_where() -> None:
    api = FakeApiserver()
    kube = Kube(api)
    obj = sample()
    obj["spec"]["roles"]["encoder"] = {"parallelism": {"tensor": 2}}
    out = reconcile(kube, obj, CFG, StatusMemory())
    assert api.objects == {}
    assert [p.reason for p in out.problems] == ["SpecInvalid"]
    assert "spec.roles.encoder" in out.problems[0].message
    degraded = next(c for c in api.statuses[-1]["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert [(e["type"], e["reason"]) for e in api.events] == [("Warning", "SpecInvalid")]
    assert "spec.roles.encoder" in api.events[0]["message"]


def test_a_removed_role_is_pruned() -> None:
    api = FakeApiserver()
    kube = Kube(api)
    obj = sample("tcp-only")
    assert "prefill" in obj["spec"]["roles"]
    reconcile(kube, obj, CFG, StatusMemory())
    before = api.kinds()
    assert any("prefill" in name for _, name in before)
    smaller = copy.deepcopy(obj)
    del smaller["spec"]["roles"]["prefill"]
    smaller["spec"].pop("kvTransfer", None)
    smaller["metadata"]["generation"] = 2
    out = reconcile(kube, smaller, CFG, StatusMemory())
    assert out.problems == []
    assert sorted(out.pruned) == sorted(f"{k}/{n}" for k, n in before if "prefill" in n)
    assert not any("prefill" in name for _, name in api.kinds())


def test_an_api_failure_is_degraded_retried_and_still_reported() -> None:
    api = FakeApiserver()
    api.fail_apply_of = "-decode"
    out = reconcile(Kube(api), sample(), CFG, StatusMemory())
    assert out.retry
    assert {p.reason for p in out.problems} == {"ReconcileError"}
    assert "etcdserver: timeout" in out.problems[0].message
    assert out.status_written  # failures stay visible
    assert any(n.endswith("-encoder") for _, n in api.kinds())  # the rest still applied


def test_missing_rdma_everywhere_is_insufficient_resources() -> None:
    h100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}  # the sample's nodeSelector
    api = FakeApiserver(
        nodes=[
            {
                "metadata": {"name": "n0", "labels": h100},
                "spec": {},
                "status": {"allocatable": {"nvidia.com/gpu": "8"}},
            }
        ]
    )
    out = reconcile(Kube(api), sample("full-epd-rdma"), CFG, StatusMemory())
    assert {p.reason for p in out.problems} == {"InsufficientResources"}
    assert all("rdma/hca_shared_devices_a" in p.message for p in out.problems)
    assert api.objects  # still applied: the pods schedule once such nodes appear


def test_a_deleting_cluster_is_left_to_the_garbage_collector() -> None:
    api = FakeApiserver()
    obj = sample()
    obj["metadata"]["deletionTimestamp"] = "2026-11-23T10:00:00Z"
    out = reconcile(Kube(api), obj, CFG, StatusMemory())
    assert out.writes == 0
    assert api.objects == {}


def test_repeated_failures_write_the_status_once() -> None:
    # A child the apiserver keeps rejecting: every pass fails the same way; only the first
    # writes the EPDCluster (status + one Warning Event), the retries write nothing to it.
    api = FakeApiserver()
    api.fail_apply_of = "statefulsets/qwen-vl-decode"
    kube, memory, obj = Kube(api), StatusMemory(), sample()
    outs = []
    for _ in range(5):
        outs.append(reconcile(kube, obj, CFG, memory))
        obj = dict(obj, status=api.statuses[-1])
    assert all(o.retry for o in outs)
    assert [o.status_written for o in outs] == [True, False, False, False, False]
    assert len(api.statuses) == 1
    assert sum(o.events for o in outs) == 1


def test_a_status_written_by_someone_else_is_healed() -> None:
    api = FakeApiserver()
    kube, memory = Kube(api), StatusMemory()
    obj = sample()
    reconcile(kube, obj, CFG, memory)
    ours = api.statuses[-1]
    # Someone patches the status by hand; the next pass compares with the live status.
    forged = dict(
        ours,
        phase="Ready",
        conditions=[
            {
                "type": "Ready",
                "status": "True",
                "reason": "Reconciled",
                "message": "forged",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    )
    out = reconcile(kube, dict(obj, status=forged), CFG, memory)
    assert out.status_written
    assert api.statuses[-1]["phase"] == ours["phase"]
    assert {c["message"] for c in api.statuses[-1]["conditions"]} != {"forged"}


@pytest.mark.parametrize(
    ("body_rv", "written_rv", "uses"),
    [
        ("7", "7", "live"),
        ("9", "7", "live"),
        ("5", "7", "ours"),
        (None, "7", "ours"),
        ("5", None, "live"),
        ("abc", "abc", "live"),
        ("abd", "abc", "ours"),
    ],
)
def test_previous_status_is_live_unless_the_body_predates_our_write(
    body_rv: str | None, written_rv: str | None, uses: str
) -> None:
    memory = StatusMemory()
    memory.put("u", {"phase": "ours"}, written_rv)
    meta = {"resourceVersion": body_rv} if body_rv else {}
    got = memory.previous("u", {"metadata": meta, "status": {"phase": "live"}})
    assert got == {"phase": uses}


def test_an_odd_spec_is_served_with_a_warning_event_and_a_ready_note_once() -> None:
    api = FakeApiserver()
    kube, memory = Kube(api), StatusMemory()
    obj = sample()
    obj["spec"]["encoderCache"] = {"limitMmPerPrompt": {"image": 0}}
    reconcile(kube, obj, CFG, memory)
    warnings = [e for e in api.events if e["reason"] == "SpecWarning"]
    assert len(warnings) == 1
    assert warnings[0]["type"] == "Warning"
    assert "spec.encoderCache.limitMmPerPrompt" in warnings[0]["message"]
    ready = next(x for x in api.statuses[-1]["conditions"] if x["type"] == "Ready")
    assert "warnings: spec.encoderCache.limitMmPerPrompt" in ready["message"]
    reconcile(kube, dict(obj, status=api.statuses[-1]), CFG, memory)
    assert len([e for e in api.events if e["reason"] == "SpecWarning"]) == 1


def scaler_path(api: FakeApiserver, name: str) -> str:
    return next(
        p
        for p, o in api.objects.items()
        if o["kind"] == "EPDRoleScaler" and o["metadata"]["name"] == name
    )


def sts_replicas(api: FakeApiserver, name: str) -> int:
    return int(
        next(
            o
            for o in api.objects.values()
            if o["kind"] == "StatefulSet" and o["metadata"]["name"] == name
        )["spec"]["replicas"]
    )


def test_scalers_are_seeded_and_a_scale_counts_only_where_the_scaler_owns_the_number() -> None:
    api = FakeApiserver()
    kube = Kube(api)
    memory = StatusMemory()
    obj = sample()
    obj["spec"]["roles"]["decode"] = {"replicasFrom": "Scaler", "replicas": 2, "maxReplicas": 6}
    first = reconcile(kube, obj, CFG, memory)
    assert first.problems == []
    # Seeded through /scale from the spec (the apply never carries spec.replicas).
    assert sorted(api.scales) == [("qwen-vl-decode", 2), ("qwen-vl-encoder", 1)]
    assert "replicas" not in next(
        o for o in api.objects.values() if o["kind"] == "EPDRoleScaler"
    ).get("metadata", {})
    enc, dec = scaler_path(api, "qwen-vl-encoder"), scaler_path(api, "qwen-vl-decode")
    assert api.objects[dec]["status"]["replicasFrom"] == "Scaler"
    assert api.objects[dec]["status"]["selector"].endswith("epd-operator.io/role=decode")
    # An autoscaler scales both roles' scalers.
    api.objects[enc]["spec"]["replicas"] = 3
    api.objects[dec]["spec"]["replicas"] = 9
    api.scales.clear()
    out = reconcile(kube, dict(obj, status=api.statuses[-1]), CFG, memory)
    assert api.scales == [("qwen-vl-encoder", 1)]  # spec-owned: reverted
    assert api.objects[dec]["spec"]["replicas"] == 9  # scaler-owned: kept
    assert sts_replicas(api, "qwen-vl-decode") == 6  # clamped to maxReplicas
    assert sts_replicas(api, "qwen-vl-encoder") == 1
    roles = api.statuses[-1]["roles"]
    assert roles["decode"]["desiredReplicas"] == 6
    assert roles["decode"]["requestedReplicas"] == 9
    assert roles["decode"]["clamped"] == "lowered from 9 to maxReplicas 6"
    assert api.objects[dec]["status"]["clamped"] == "lowered from 9 to maxReplicas 6"
    clamps = [e for e in api.events if e["reason"] == "ReplicasClamped"]
    assert [e["message"] for e in clamps] == ["decode: lowered from 9 to maxReplicas 6"]
    assert out.scaler_writes
    # Steady state (one more pass settles the order of the rollout message): nothing more to
    # write, and the clamp is not announced again.
    reconcile(kube, dict(obj, status=api.statuses[-1]), CFG, memory)
    again = reconcile(kube, dict(obj, status=api.statuses[-1]), CFG, memory)
    assert again.writes == 0
    assert len([e for e in api.events if e["reason"] == "ReplicasClamped"]) == 1


def test_without_the_scaler_crd_the_rest_is_applied_and_the_fix_is_named() -> None:
    class NoScalerCRD(FakeApiserver):
        def __call__(self, method: str, path: str, headers: Any, body: Any) -> tuple[int, bytes]:
            if "/epdrolescalers" in path:
                return 404, json.dumps(
                    {"message": "the server could not find the requested resource"}
                ).encode()
            return super().__call__(method, path, headers, body)

    api = NoScalerCRD()
    out = reconcile(Kube(api), sample(), CFG, StatusMemory())
    # Pods keep running as specified; the cluster says what to install.
    assert {k for k, _ in api.kinds()} == {
        "ConfigMap",
        "Service",
        "StatefulSet",
        "Deployment",
        "PodDisruptionBudget",
    }
    assert out.retry
    assert out.problems
    assert all("epdrolescalers.epd-operator.io is not installed" in p.message for p in out.problems)
