"""reconcile.revisions: which launch ConfigMap each workload mounts, and which old ones stay."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from epd_connector.launch.config import CONFIGMAP_KEY
from epd_connector.launch.routing import (
    ROUTING_KEY,
    RoutingTable,
    parse_table,
    table_for,
    wiring_revision,
)
from epd_operator.api import constants as c
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.api.parse import parse
from epd_operator.reconcile.revisions import (
    LAUNCH_HISTORY,
    launch_pins,
    live_launch_configs,
    mounted_launch_config,
    retained_launch_configs,
)
from epd_operator.render import render_cluster
from epd_operator.render.launch import launch_config
from epd_operator.render.names import configmap_name

CFG = OperatorConfig()
BASE: dict[str, Any] = {
    "model": {"name": "org/model"},
    "roles": {"encoder": {}, "prefill": {}, "decode": {}},
}


def cluster(spec: dict[str, Any]) -> Any:
    return parse(
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": "demo", "namespace": "ns", "uid": "u-1"},
            "spec": spec,
        }
    )


def mounts(manifests: list[dict[str, Any]]) -> dict[str, str | None]:
    return {
        m["metadata"]["name"]: mounted_launch_config(m["spec"]["template"]["spec"])
        for m in manifests
        if m["kind"] in ("StatefulSet", "Deployment")
    }


def current_cm(manifests: list[dict[str, Any]]) -> str:
    (cm,) = [
        str(m["metadata"]["name"])
        for m in manifests
        if m["kind"] == "ConfigMap" and m["metadata"]["labels"][c.LABEL_COMPONENT] == "config"
    ]
    return cm


@pytest.mark.parametrize(
    ("mutate", "moved"),
    [
        # Only the decode role (and the router, which reads every role) read decode's settings.
        (
            lambda s: s["roles"]["decode"].update(extraArgs=["--enforce-eager"]),
            {"demo-decode", "demo-router"},
        ),
        (lambda s: s["roles"]["encoder"].update(maxModelLen=2048), {"demo-encoder", "demo-router"}),
        # Wiring every role reads: everything moves to the new revision together.
        (
            lambda s: s.update(ecTransfer={"controlPort": 16000}),
            {"demo-encoder", "demo-prefill", "demo-decode", "demo-router"},
        ),
        # A role's port is wiring too (the router pairs pods by wiring revision): all move.
        (
            lambda s: s["roles"]["decode"].update(port=8100),
            {"demo-encoder", "demo-prefill", "demo-decode", "demo-router"},
        ),
        # Not in the launch config: nobody moves (and no new revision exists).
        (lambda s: s["roles"]["decode"].update(replicas=4), set()),
        (lambda s: s.update(image={"tag": "9"}), set()),
    ],
    ids=["decode-args", "encoder-len", "ec-port", "decode-port", "scale", "image"],
)
def test_pins_move_only_the_workloads_whose_view_changed(mutate: Any, moved: set[str]) -> None:
    live = render_cluster(cluster(copy.deepcopy(BASE)), CFG)
    spec = copy.deepcopy(BASE)
    mutate(spec)
    obj = cluster(spec)
    pins = launch_pins(launch_config(obj), live)
    after = render_cluster(obj, CFG, pins=pins)
    before_m, after_m = mounts(live), mounts(after)
    assert {n for n in before_m if before_m[n] != after_m[n]} == moved
    # Whoever moved mounts the new revision; whoever stayed mounts the old one.
    for name in moved:
        assert after_m[name] == current_cm(after)
    for name in set(before_m) - moved:
        assert after_m[name] == current_cm(live)


def test_a_pin_needs_the_configmap_to_exist() -> None:
    live = render_cluster(cluster(copy.deepcopy(BASE)), CFG)
    spec = copy.deepcopy(BASE)
    spec["roles"]["decode"]["extraArgs"] = ["--enforce-eager"]
    obj = cluster(spec)
    without_cm = [m for m in live if m["kind"] != "ConfigMap"]
    assert launch_pins(launch_config(obj), without_cm) == {}


def test_an_operator_upgrade_keeps_the_legacy_configmap_and_restarts_nothing() -> None:
    """Pods rendered by an operator with one mutable `<cluster>-launch` ConfigMap: their
    templates keep mounting it (same checksum), so the upgrade changes no template."""
    obj = cluster(copy.deepcopy(BASE))
    live = render_cluster(
        obj,
        CFG,
        pins=dict.fromkeys(
            ("encoder", "prefill", "decode", c.COMPONENT_ROUTER), configmap_name("demo")
        ),
    )
    legacy = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name("demo"),
            "labels": {c.LABEL_COMPONENT: c.COMPONENT_CONFIG},
        },
    }
    observed = [legacy, *(m for m in live if m["kind"] != "ConfigMap")]
    after = render_cluster(obj, CFG, pins=launch_pins(launch_config(obj), observed))
    templates = {
        m["metadata"]["name"]: m["spec"]["template"]
        for m in after
        if m["kind"] in ("StatefulSet", "Deployment")
    }
    assert templates == {
        m["metadata"]["name"]: m["spec"]["template"]
        for m in live
        if m["kind"] in ("StatefulSet", "Deployment")
    }


def cm(name: str, created: str, revision: bool = True) -> dict[str, Any]:
    labels = {c.LABEL_COMPONENT: c.COMPONENT_CONFIG}
    if revision:
        labels[c.LABEL_LAUNCH_REVISION] = name.rsplit("-", 1)[-1]
    return {
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels, "creationTimestamp": created},
    }


def pod(configmap: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "spec": {"volumes": [{"name": "launch-config", "configMap": {"name": configmap}}]},
    }


def workload(rolled: bool) -> dict[str, Any]:
    return {
        "kind": "StatefulSet",
        "metadata": {"name": "demo-decode", "generation": 2},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": 2,
            "readyReplicas": 2,
            "updatedReplicas": 2 if rolled else 1,
            "currentRevision": "a" if rolled else "b",
            "updateRevision": "a",
        },
    }


OLD = [cm(f"demo-launch-r{i}", f"2026-01-0{i}T00:00:00Z") for i in range(1, 6)]  # r5 newest


@pytest.mark.parametrize(
    ("candidates", "referenced", "rolled", "pods", "kept"),
    [
        # Nothing references them: the newest LAUNCH_HISTORY stay, older ones go.
        (OLD, set(), True, [], {"demo-launch-r5", "demo-launch-r4"}),
        # A pod of r1 is still alive: r1 stays whatever its age.
        (
            OLD,
            set(),
            True,
            [pod("demo-launch-r1")],
            {"demo-launch-r1", "demo-launch-r5", "demo-launch-r4"},
        ),
        # A template (pinned) mounts r2.
        (OLD, {"demo-launch-r2"}, True, [], {"demo-launch-r2", "demo-launch-r5", "demo-launch-r4"}),
        # A rollout is under way: its controller may recreate a pod of any older template.
        (OLD, set(), False, [], {f"demo-launch-r{i}" for i in range(1, 6)}),
        # The legacy mutable ConfigMap is not history: it goes once nothing mounts it...
        ([cm("demo-launch", "2025-01-01T00:00:00Z", revision=False)], set(), True, [], set()),
        # ...and stays while a pod mounts it.
        (
            [cm("demo-launch", "2025-01-01T00:00:00Z", revision=False)],
            set(),
            True,
            [pod("demo-launch")],
            {"demo-launch"},
        ),
    ],
    ids=["history", "pod-alive", "pinned", "mid-rollout", "legacy-gone", "legacy-mounted"],
)
def test_old_launch_configmaps_go_only_when_nothing_can_mount_them(
    candidates: list[dict[str, Any]],
    referenced: set[str],
    rolled: bool,
    pods: list[dict[str, Any]],
    kept: set[str],
) -> None:
    assert LAUNCH_HISTORY == 2  # the table above is written for it
    assert retained_launch_configs(candidates, referenced, [workload(rolled)], pods) == kept


# ---- revision-pinned routing: the routing table and the per-revision Services --------------


def _routing(manifests: list[dict[str, Any]]) -> RoutingTable:
    (cm,) = [m for m in manifests if m["metadata"]["name"] == "demo-routing"]
    return parse_table(cm["data"][ROUTING_KEY])


def test_the_routing_table_lists_live_wirings_and_each_gets_its_services() -> None:
    old_obj = cluster(copy.deepcopy(BASE))
    live = render_cluster(old_obj, CFG)
    spec = copy.deepcopy(BASE)
    spec.update(ecTransfer={"controlPort": 16000})  # a wiring change
    obj = cluster(spec)
    older, legacy = live_launch_configs(live)
    assert legacy is None
    after = render_cluster(obj, CFG, pins=launch_pins(launch_config(obj), live), live=older)
    old_w, new_w = wiring_revision(launch_config(old_obj)), wiring_revision(launch_config(obj))
    assert [r.wiring for r in _routing(after).revisions] == [old_w, new_w]
    services = {
        m["metadata"]["name"]: m["spec"]["selector"].get(c.LABEL_WIRING_REVISION)
        for m in after
        if m["kind"] == "Service"
    }
    for role in ("encoder", "prefill", "decode"):
        assert services[f"demo-{role}"] is None  # the role's Service selects every revision
        assert services[f"demo-{role}-w{old_w}"] == old_w
        assert services[f"demo-{role}-w{new_w}"] == new_w
    for m in after:
        if m["kind"] == "StatefulSet":
            assert m["spec"]["template"]["metadata"]["labels"][c.LABEL_WIRING_REVISION] == new_w
    # A role-own change keeps the wiring: one revision, one Service per role.
    spec = copy.deepcopy(BASE)
    spec["roles"]["decode"].update(extraArgs=["--enforce-eager"])
    same = render_cluster(cluster(spec), CFG, live=older)
    assert [r.wiring for r in _routing(same).revisions] == [old_w]


def _cm(name: str, config: str, born: str, *, wiring: bool = True) -> dict[str, Any]:
    labels = {c.LABEL_COMPONENT: c.COMPONENT_CONFIG}
    if wiring:
        labels[c.LABEL_WIRING_REVISION] = "x"
    return {
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels, "creationTimestamp": born},
        "data": {CONFIGMAP_KEY: config},
    }


def test_live_launch_configs_oldest_first_legacy_apart_bad_ones_left_out() -> None:
    a = launch_config(cluster(copy.deepcopy(BASE)))
    spec = copy.deepcopy(BASE)
    spec.update(ecTransfer={"controlPort": 16000})
    b = launch_config(cluster(spec))
    observed = [
        _cm("demo-launch-b", b.to_json(), "2026-01-02T00:00:00Z"),
        _cm("demo-launch-a", a.to_json(), "2026-01-01T00:00:00Z"),
        _cm("demo-launch", a.to_json(), "2025-01-01T00:00:00Z", wiring=False),
        _cm("demo-launch-bad", '{"roles": 1}', "2026-01-03T00:00:00Z"),
        {"kind": "ConfigMap", "metadata": {"name": "demo-routing", "labels": {}}},
    ]
    older, legacy = live_launch_configs(observed)
    assert older == [a, b]
    assert legacy == a
    # The legacy pods are found through the role Services (wiring ""), listed first.
    table = table_for([*older, b], legacy)
    assert [r.wiring for r in table.revisions] == ["", wiring_revision(a), wiring_revision(b)]
