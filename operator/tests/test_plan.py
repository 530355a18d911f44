"""reconcile.plan: desired vs observed -> apply / prune / no-op, and the subset comparison."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from epd_operator.reconcile.plan import first_difference, make_plan, quantity, scalars_equal

UID = "0b6c2c2e-0000-4000-8000-000000000001"


def sts(name: str = "demo-decode", replicas: int = 2, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"app.kubernetes.io/instance": "demo"},
            "ownerReferences": [
                {
                    "apiVersion": "epd-operator.io/v1alpha1",
                    "kind": "EPDCluster",
                    "name": "demo",
                    "uid": UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": replicas,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "engine",
                            "image": "vllm:0.33.0",
                            "env": [{"name": "EPD_ROLE", "value": "decode"}],
                            "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "1024Mi"}},
                        }
                    ]
                }
            },
        },
    }
    obj.update(extra)
    return obj


def as_served(obj: dict[str, Any]) -> dict[str, Any]:
    """What the apiserver hands back: defaults, status, metadata, canonical quantities."""
    out = copy.deepcopy(obj)
    out["metadata"].update(
        {
            "uid": "child-uid",
            "resourceVersion": "42",
            "generation": 3,
            "managedFields": [{"manager": "epd-operator"}],
        }
    )
    out["spec"]["podManagementPolicy"] = "Parallel"
    out["spec"]["revisionHistoryLimit"] = 10
    ctr = out["spec"]["template"]["spec"]["containers"][0]
    ctr["imagePullPolicy"] = "IfNotPresent"
    ctr["terminationMessagePath"] = "/dev/termination-log"
    ctr["resources"]["limits"] = {"nvidia.com/gpu": "1", "memory": "1Gi"}
    ctr["resources"]["requests"] = {"nvidia.com/gpu": "1", "memory": "1Gi"}
    out["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    out["status"] = {"replicas": 2, "readyReplicas": 2}
    return out


def test_noop_when_the_apiserver_only_added_defaults() -> None:
    want = sts()
    plan = make_plan([want], [as_served(want)], UID)
    assert plan.noop
    assert plan.apply == []
    assert plan.prune == []
    assert len(plan.unchanged) == 1


def test_missing_child_is_applied_with_an_empty_reason() -> None:
    plan = make_plan([sts()], [], UID)
    assert [o["metadata"]["name"] for o in plan.apply] == ["demo-decode"]
    assert plan.reasons[("apps/v1", "StatefulSet", "demo-decode")] == ""


def _edit_replicas(o: dict[str, Any]) -> None:
    o["spec"]["replicas"] = 5


def _edit_image(o: dict[str, Any]) -> None:
    o["spec"]["template"]["spec"]["containers"][0]["image"] = "other:1"


def _add_env(o: dict[str, Any]) -> None:
    o["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "X", "value": "1"})


def _drop_label(o: dict[str, Any]) -> None:
    del o["metadata"]["labels"]["app.kubernetes.io/instance"]


def _more_memory(o: dict[str, Any]) -> None:
    o["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "2Gi"


# Hand edits a resync must revert: (edit, the field path plan reports).
HAND_EDITS = [
    (_edit_replicas, "spec.replicas"),
    (_edit_image, "spec.template.spec.containers[0].image"),
    (_add_env, "spec.template.spec.containers[0].env"),
    (_drop_label, "metadata.labels.app.kubernetes.io/instance"),
    (_more_memory, "spec.template.spec.containers[0].resources.limits.memory"),
]


@pytest.mark.parametrize(("edit", "path"), HAND_EDITS, ids=[p for _, p in HAND_EDITS])
def test_hand_edit_of_an_owned_field_is_reverted(edit: Any, path: str) -> None:
    want = sts()
    have = as_served(want)
    edit(have)
    plan = make_plan([want], [have], UID)
    assert [o["metadata"]["name"] for o in plan.apply] == ["demo-decode"]
    assert plan.apply[0] == want  # we re-apply what we render, not the observed object
    assert plan.reasons[("apps/v1", "StatefulSet", "demo-decode")] == path


def test_extra_label_added_by_hand_is_not_a_diff() -> None:
    want = sts()
    have = as_served(want)
    have["metadata"]["labels"]["team"] = "ml"
    assert make_plan([want], [have], UID).noop


def test_prune_only_objects_we_control() -> None:
    ours = as_served(sts("demo-prefill"))
    foreign = as_served(sts("copied-by-hand"))
    foreign["metadata"]["ownerReferences"][0]["uid"] = "someone-else"
    not_controller = as_served(sts("ref-only"))
    not_controller["metadata"]["ownerReferences"][0]["controller"] = False
    plan = make_plan([sts()], [as_served(sts()), ours, foreign, not_controller], UID)
    assert [o["metadata"]["name"] for o in plan.prune] == ["demo-prefill"]
    assert plan.apply == []


def test_same_name_different_kind_is_a_different_object() -> None:
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "demo-decode"}}
    plan = make_plan([svc, sts()], [as_served(sts())], UID)
    assert [o["kind"] for o in plan.apply] == ["Service"]


def test_apply_keeps_render_order() -> None:
    names = ["a", "b", "c", "d"]
    plan = make_plan([sts(n) for n in names], [as_served(sts("c"))], UID)
    assert [o["metadata"]["name"] for o in plan.apply] == ["a", "b", "d"]


# (desired, observed, equal?)
SCALARS = [
    (1, "1", True),
    ("1000m", "1", True),
    ("1024Mi", "1Gi", True),
    ("1e9", "1G", True),
    ("500m", "0.5", True),
    ("2", "1", False),
    ("abc", "abc", True),
    ("abc", "abd", False),
    (True, True, True),
    (True, 1, False),
    (False, 0, False),
    (8000, 8000, True),
    (8000, 8001, False),
    ("None", "None", True),
    (1.5, "1500m", True),
]


@pytest.mark.parametrize(("desired", "observed", "equal"), SCALARS)
def test_scalars_compare_quantities_by_value(desired: Any, observed: Any, equal: bool) -> None:
    assert scalars_equal(desired, observed) is equal


# (desired, observed, first differing path or None)
SUBSETS: list[tuple[Any, Any, str | None]] = [
    ({"a": 1}, {"a": 1, "b": 2}, None),
    ({"a": {}}, {}, None),
    ({"a": []}, {}, None),
    ({"a": None}, {"a": 3}, None),
    ({"a": []}, {"a": [1]}, "a"),
    ({"a": [1, 2]}, {"a": [2, 1]}, "a[0]"),
    ({"a": {"b": [{"c": 1}]}}, {"a": {"b": [{"c": 1, "d": 2}]}}, None),
    ({"a": {"b": [{"c": 1}]}}, {"a": {"b": [{"c": 2}]}}, "a.b[0].c"),
    ({"a": 1}, {}, "a"),
    ({"a": {"b": 1}}, {"a": "x"}, "a"),
]


@pytest.mark.parametrize(("desired", "observed", "path"), SUBSETS)
def test_first_difference(desired: Any, observed: Any, path: str | None) -> None:
    assert first_difference(desired, observed) == path


def test_quantity_rejects_non_quantities() -> None:
    assert quantity("8Gi") == 8 * 2**30
    assert quantity("eight") is None
    assert quantity(True) is None
    assert quantity(None) is None


def test_a_string_that_only_looks_like_a_huge_quantity_is_a_difference_not_a_crash() -> None:
    # A revision hash such as "8e91234567" matches the quantity grammar; seen in a benchmark's
    # update wave, where it crashed every pass of that object.
    assert (
        first_difference({"labels": {"rev": "3f2a9c"}}, {"labels": {"rev": "8e91234567"}})
        == "labels.rev"
    )
