"""TransportReady: the engine pods' preflight reports -> one condition and its Events, the
preflight init container in RDMA pods, and a whole reconcile pass reading real reports."""

from __future__ import annotations

from typing import Any

import api_samples
import pytest
from test_reconcile_core import CFG, FakeApiserver, sample

from epd_connector.launch.preflight import INIT_CONTAINER, Probe, decide, report_text
from epd_operator.api import constants as c
from epd_operator.api.parse import parse
from epd_operator.reconcile.core import StatusMemory, reconcile
from epd_operator.reconcile.kube import Kube
from epd_operator.reconcile.transport import (
    TRANSPORT_READY,
    transport_condition,
    transport_event,
    transport_state,
)
from epd_operator.render import render_cluster

OK = decide({"ec": "rdma"}, Probe(("uverbs0",), ("mlx5_0",), ("mlx5_0",)))
NO_DEVICE = decide({"ec": "rdma", "kv": "rdma"}, Probe((), (), ()))
FALLBACK = decide({"kv": "rdma"}, Probe(("uverbs0",), ("mlx5_0",), ()))
TCP = decide({"ec": "tcp"}, Probe())


def pod(
    name: str,
    report: dict[str, Any] | None,
    *,
    role: str = "encoder",
    key: str = "state",
    message: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if report is not None or message is not None:
        text = message if message is not None else report_text(report or {})
        status["initContainerStatuses"] = [
            {"name": INIT_CONTAINER, key: {"terminated": {"exitCode": 0, "message": text}}}
        ]
    labels = {c.LABEL_INSTANCE: "demo", c.LABEL_NAME: c.APP_NAME}
    if role:
        labels[c.LABEL_ROLE] = role
    return {"metadata": {"name": name, "labels": labels}, "status": status}


STATES = [
    # (id, rdma.enabled, pods, status, reason, message fragment)
    ("tcp-spec", False, [pod("e-0", NO_DEVICE)], "True", "TCPRequested", "rdma.enabled is false"),
    ("no-reports", True, [pod("e-0", None)], "Unknown", "PreflightPending", "no engine pod"),
    ("no-pods", True, [], "Unknown", "PreflightPending", ""),
    ("all-rdma", True, [pod("e-0", OK), pod("d-0", OK, role="decode")], "True", "RDMA",
     "RDMA in 2 engine pod(s)"),
    ("one-without-device", True, [pod("e-0", OK), pod("d-0", NO_DEVICE, role="decode")],
     "False", "NoRDMADevice", "d-0: ec, kv asked for RDMA but the pod sees no RDMA device"),
    ("device-before-fallback", True,
     [pod("p-0", FALLBACK, role="prefill"), pod("d-1", NO_DEVICE, role="decode")],
     "False", "NoRDMADevice", "d-1"),
    ("fallback", True, [pod("p-0", FALLBACK, role="prefill", key="lastState")], "False",
     "TCPFallback", "no usable HCA"),
    ("tcp-role-in-rdma-cluster", True, [pod("e-0", OK), pod("d-0", TCP, role="decode")], "True",
     "RDMA", "TCP as configured in d-0"),
    ("router-and-store-ignored", True, [pod("r-0", NO_DEVICE, role="")], "Unknown",
     "PreflightPending", ""),
    ("not-ours", True, [pod("e-0", None, message="Error: OOMKilled")], "Unknown",
     "PreflightPending", ""),
    ("many-named", True, [pod(f"d-{i}", NO_DEVICE, role="decode") for i in range(7)], "False",
     "NoRDMADevice", "d-4 and 2 more"),
]  # fmt: skip


@pytest.mark.parametrize("row", STATES, ids=[s[0] for s in STATES])
def test_transport_state(row: tuple[str, bool, list[dict[str, Any]], str, str, str]) -> None:
    _, rdma, pods, status, reason, fragment = row
    got = transport_state(rdma, pods)
    assert got[:2] == (status, reason)
    assert fragment in got[2]


def _cond(status: str, reason: str) -> dict[str, Any]:
    return {
        "type": TRANSPORT_READY,
        "status": status,
        "reason": reason,
        "message": "m",
        "lastTransitionTime": "T0",
    }


EVENTS = [
    (None, _cond("Unknown", "PreflightPending"), None),
    (None, _cond("False", "NoRDMADevice"), ("Warning", "NoRDMADevice")),
    (
        _cond("Unknown", "PreflightPending"),
        _cond("False", "TCPFallback"),
        ("Warning", "TCPFallback"),
    ),
    (_cond("False", "TCPFallback"), _cond("False", "TCPFallback"), None),
    (_cond("False", "TCPFallback"), _cond("False", "NoRDMADevice"), ("Warning", "NoRDMADevice")),
    (_cond("False", "NoRDMADevice"), _cond("True", "RDMA"), ("Normal", TRANSPORT_READY)),
    (_cond("Unknown", "PreflightPending"), _cond("True", "RDMA"), None),
]


@pytest.mark.parametrize(("before", "after", "want"), EVENTS)
def test_transport_event(
    before: dict[str, Any] | None, after: dict[str, Any], want: tuple[str, str] | None
) -> None:
    previous = {"conditions": [before]} if before else None
    got = transport_event(previous, after)
    assert (got[:2] if got else None) == want


def test_transition_time_moves_only_on_a_flip() -> None:
    first = transport_condition(True, [pod("e-0", NO_DEVICE)], None, 1, "T1")
    same = transport_condition(True, [pod("e-0", FALLBACK)], {"conditions": [first]}, 2, "T2")
    assert (same["status"], same["reason"], same["lastTransitionTime"]) == (
        "False",
        "TCPFallback",
        "T1",
    )
    flipped = transport_condition(True, [pod("e-0", OK)], {"conditions": [same]}, 2, "T3")
    assert (flipped["status"], flipped["lastTransitionTime"]) == ("True", "T3")


def _load(name: str) -> dict[str, Any]:
    obj = api_samples.sample(name)
    obj["metadata"]["uid"] = "u"
    return obj


def test_preflight_init_container_only_in_rdma_pods() -> None:
    rdma = parse(_load("full-epd-rdma"))
    for m in render_cluster(rdma, CFG):
        if m["kind"] != "StatefulSet":
            continue
        spec = m["spec"]["template"]["spec"]
        (init,) = spec["initContainers"]
        engine = spec["containers"][0]
        assert init["name"] == INIT_CONTAINER
        assert init["command"] == ["epd-engine", "--preflight"]
        assert (init["image"], init["env"]) == (engine["image"], engine["env"])
        # The same RDMA resource and capability as the engine, so it sees the same devices.
        res = rdma.spec.rdma.resource_name
        assert init["resources"]["limits"][res] == engine["resources"]["limits"][res]
        assert c.GPU_RESOURCE not in init["resources"]["limits"]
        assert init["securityContext"] == engine["securityContext"]
        assert init["terminationMessagePath"] == "/dev/termination-log"
    for m in render_cluster(parse(_load("tcp-only")), CFG):
        if m["kind"] == "StatefulSet":
            assert "initContainers" not in m["spec"]["template"]["spec"]


def _transport(api: FakeApiserver) -> dict[str, Any]:
    cond: dict[str, Any] = next(
        x for x in api.statuses[-1]["conditions"] if x["type"] == TRANSPORT_READY
    )
    return cond


def test_reconcile_reads_the_reports_and_announces_a_fallback() -> None:
    api = FakeApiserver()
    kube = Kube(api)
    memory = StatusMemory()
    obj = sample("full-epd-rdma")
    name = obj["metadata"]["name"]
    reconcile(kube, obj, CFG, memory)
    assert _transport(api)["status"] == "Unknown"
    assert not [e for e in api.events if e["reason"] in ("NoRDMADevice", "TCPFallback")]
    # The kubelet's part: the init container's termination message in the pod status.
    pods = "/api/v1/namespaces/ns/pods"
    labels = {c.LABEL_INSTANCE: name, c.LABEL_NAME: c.APP_NAME}
    for role, report in (("encoder", OK), ("prefill", NO_DEVICE)):
        p = pod(f"{name}-{role}-0", report, role=role)
        p["metadata"]["labels"].update(labels)
        api.objects[f"{pods}/{name}-{role}-0"] = p
    out = reconcile(kube, obj, CFG, memory)
    cond = _transport(api)
    assert (cond["status"], cond["reason"]) == ("False", "NoRDMADevice")
    assert f"{name}-prefill-0" in cond["message"]
    assert out.conditions[TRANSPORT_READY] == "False"
    warnings = [e for e in api.events if e["reason"] == "NoRDMADevice"]
    assert [e["type"] for e in warnings] == ["Warning"]
    # Said once: a pass with nothing new writes and announces nothing.
    again = reconcile(kube, dict(obj, status=api.statuses[-1]), CFG, memory)
    assert again.writes == 0
    # Fixed (the pod restarted with its device): True again, announced as a recovery.
    api.objects[f"{pods}/{name}-prefill-0"]["status"] = pod("x", OK)["status"]
    reconcile(kube, dict(obj, status=api.statuses[-1]), CFG, memory)
    assert (_transport(api)["status"], _transport(api)["reason"]) == ("True", "RDMA")
    assert [e["type"] for e in api.events if e["reason"] == TRANSPORT_READY] == ["Normal"]


def test_reconcile_of_a_tcp_cluster_says_tcp_was_asked() -> None:
    api = FakeApiserver()
    reconcile(Kube(api), sample("tcp-only"), CFG, StatusMemory())
    assert (_transport(api)["status"], _transport(api)["reason"]) == ("True", "TCPRequested")
