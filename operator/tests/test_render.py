"""epd_operator.render: names, labels, ownership, pod contents, launch config and revisions."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from epd_connector.launch import config as launch
from epd_connector.launch.routing import wiring_revision
from epd_connector.router.__main__ import build_parser as router_parser
from epd_operator.api import constants as c
from epd_operator.api.models import EPDCluster
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.api.parse import SpecError, parse
from epd_operator.reconcile.revisions import launch_pins
from epd_operator.render import render_cluster
from epd_operator.render.engine import engine_image, split_image
from epd_operator.render.launch import launch_config, launch_revision
from epd_operator.render.names import MAX_STATEFULSET_NAME, child_name

CFG = OperatorConfig()
UID = "7d3c1f0e-0000-4000-8000-000000000001"


def cluster(name: str = "demo", /, **spec: Any) -> EPDCluster:
    body: dict[str, Any] = {"model": {"name": "org/model"}, "roles": {"encoder": {}, "decode": {}}}
    body.update(spec)
    return parse(
        {
            "apiVersion": "epd-operator.io/v1alpha1",
            "kind": "EPDCluster",
            "metadata": {"name": name, "namespace": "ns", "uid": UID},
            "spec": body,
        }
    )


EPD_ROLES: dict[str, Any] = {"encoder": {}, "prefill": {}, "decode": {}}


def by_kind(manifests: list[dict[str, Any]], kind: str, name_suffix: str) -> dict[str, Any]:
    (found,) = [
        m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)
    ]
    return found


def engine_container(manifests: list[dict[str, Any]], role: str) -> dict[str, Any]:
    sts = by_kind(manifests, "StatefulSet", f"-{role}")
    container: dict[str, Any] = sts["spec"]["template"]["spec"]["containers"][0]
    return container


def launch_cm(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (cm,) = [
        m
        for m in manifests
        if m["kind"] == "ConfigMap"
        and m["metadata"]["labels"][c.LABEL_COMPONENT] == c.COMPONENT_CONFIG
    ]
    return cm


def config_of(manifests: list[dict[str, Any]]) -> launch.LaunchConfig:
    return launch.parse(launch_cm(manifests)["data"][launch.CONFIGMAP_KEY])


@pytest.mark.parametrize(
    ("roles", "order"),
    [
        (
            {"encoder": {}, "decode": {}},
            [
                ("ConfigMap", "demo-launch-<rev>"),
                ("ConfigMap", "demo-routing"),
                ("Service", "demo-encoder"),
                ("Service", "demo-encoder-w<wiring>"),
                ("StatefulSet", "demo-encoder"),
                ("PodDisruptionBudget", "demo-encoder"),
                ("EPDRoleScaler", "demo-encoder"),
                ("Service", "demo-decode"),
                ("Service", "demo-decode-w<wiring>"),
                ("StatefulSet", "demo-decode"),
                ("PodDisruptionBudget", "demo-decode"),
                ("EPDRoleScaler", "demo-decode"),
                ("Deployment", "demo-router"),
                ("Service", "demo-router"),
            ],
        ),
        (
            EPD_ROLES,
            [
                ("ConfigMap", "demo-launch-<rev>"),
                ("ConfigMap", "demo-routing"),
                ("Service", "demo-encoder"),
                ("Service", "demo-encoder-w<wiring>"),
                ("StatefulSet", "demo-encoder"),
                ("PodDisruptionBudget", "demo-encoder"),
                ("EPDRoleScaler", "demo-encoder"),
                ("Service", "demo-prefill"),
                ("Service", "demo-prefill-w<wiring>"),
                ("StatefulSet", "demo-prefill"),
                ("PodDisruptionBudget", "demo-prefill"),
                ("EPDRoleScaler", "demo-prefill"),
                ("Service", "demo-decode"),
                ("Service", "demo-decode-w<wiring>"),
                ("StatefulSet", "demo-decode"),
                ("PodDisruptionBudget", "demo-decode"),
                ("EPDRoleScaler", "demo-decode"),
                ("Deployment", "demo-router"),
                ("Service", "demo-router"),
            ],
        ),
    ],
)
def test_objects_and_order(roles: dict[str, Any], order: list[tuple[str, str]]) -> None:
    obj = cluster(roles=roles)
    manifests = render_cluster(obj, CFG)
    rev = launch_revision(launch_config(obj))
    wiring = wiring_revision(launch_config(obj))
    names = [
        (m["kind"], m["metadata"]["name"].replace(rev, "<rev>").replace(wiring, "<wiring>"))
        for m in manifests
    ]
    assert names == order


def test_every_object_is_owned_labelled_and_namespaced() -> None:
    for m in render_cluster(cluster(roles=EPD_ROLES), CFG):
        meta = m["metadata"]
        assert meta["namespace"] == "ns"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": c.API_VERSION,
                "kind": c.KIND,
                "name": "demo",
                "uid": UID,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        labels = meta["labels"]
        assert labels[c.LABEL_NAME] == "epd"
        assert labels[c.LABEL_INSTANCE] == "demo"
        assert labels[c.LABEL_MANAGED_BY] == "epd-operator"
        assert labels[c.LABEL_COMPONENT] in (
            "config",
            "routing",
            "encoder",
            "prefill",
            "decode",
            "router",
        )


def test_uid_is_required() -> None:
    obj = cluster()
    no_uid = obj.model_copy(update={"metadata": obj.metadata.model_copy(update={"uid": None})})
    with pytest.raises(ValueError, match=r"metadata\.uid"):
        render_cluster(no_uid, CFG)


@pytest.mark.parametrize("length", [1, 30, 45, 52, 53, 63])
def test_names_are_length_safe(length: int) -> None:
    name = ("a" * length)[:length]
    manifests = render_cluster(cluster(name, roles=EPD_ROLES), CFG)
    for m in manifests:
        limit = MAX_STATEFULSET_NAME if m["kind"] in ("StatefulSet", "Deployment") else 63
        assert len(m["metadata"]["name"]) <= limit
        assert m["metadata"]["name"][0].isalpha()
        assert m["metadata"]["name"][-1].isalnum()


def test_long_names_stay_distinct_and_stable() -> None:
    a, b = "x" * 60 + "abc", "x" * 60 + "abd"
    assert child_name(a, "prefill", 52) != child_name(b, "prefill", 52)
    # Pinned: children of live clusters are found by these names, so a change of the shortening
    # scheme (or a hash that differs between processes) would orphan them on upgrade.
    assert child_name(a, "prefill", 52) == "x" * 35 + "-50c8d66b-prefill"
    assert child_name("short", "decode") == "short-decode"


def test_statefulset_shape() -> None:
    m = render_cluster(cluster(roles={"encoder": {}, "decode": {"replicas": 3}}), CFG)
    sts = by_kind(m, "StatefulSet", "-decode")
    svc = by_kind(m, "Service", "-decode")
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"
    selector = sts["spec"]["selector"]["matchLabels"]
    assert c.LABEL_REVISION not in selector
    assert selector == svc["spec"]["selector"]
    template_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= template_labels.items()
    assert template_labels[c.LABEL_ROLE] == "decode"
    assert template_labels[c.LABEL_REVISION] == sts["metadata"]["labels"][c.LABEL_REVISION]


def test_engine_container_contract() -> None:
    m = render_cluster(cluster(), CFG)
    for role in ("encoder", "decode"):
        ctr = engine_container(m, role)
        assert ctr["command"] == ["epd-engine"]
        env = {e["name"]: e for e in ctr["env"]}
        assert env["EPD_ROLE"]["value"] == role
        assert env["EPD_ENGINE"]["value"] == "vllm"
        assert env["EPD_LAUNCH_CONFIG"]["value"] == "/etc/epd/launch.json"
        for var, field in (
            ("POD_IP", "status.podIP"),
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
        ):
            assert env[var]["valueFrom"]["fieldRef"]["fieldPath"] == field
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert ctr[probe]["httpGet"] == {"path": "/health", "port": "http", "scheme": "HTTP"}
        assert ctr["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
        mounts = {v["mountPath"]: v["name"] for v in ctr["volumeMounts"]}
        assert mounts["/etc/epd"] == "launch-config"
        assert mounts["/dev/shm"] == "dshm"
        assert "securityContext" not in ctr  # nothing extra without RDMA
    pod = by_kind(m, "StatefulSet", "-decode")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["launch-config"]["configMap"]["name"] == launch_cm(m)["metadata"]["name"]
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert pod["terminationGracePeriodSeconds"] == 60 + 30  # vLLM's shutdown + the drain
    assert pod["enableServiceLinks"] is False


def test_sim_mode_from_operator_config() -> None:
    cfg = OperatorConfig(engine_mode="sim", engine_image="epd/cp:1")
    ctr = engine_container(render_cluster(cluster(), cfg), "decode")
    assert {"name": "EPD_ENGINE", "value": "sim"} in ctr["env"]
    assert ctr["image"] == "epd/cp:1"


@pytest.mark.parametrize(
    ("parallelism", "gpus"),
    [
        ({}, "1"),
        ({"tensor": 2}, "2"),
        ({"tensor": 2, "data": 2}, "4"),
        ({"tensor": 2, "pipeline": 2, "data": 2}, "8"),
    ],
)
def test_gpus_from_parallelism(parallelism: dict[str, int], gpus: str) -> None:
    m = render_cluster(cluster(roles={"encoder": {}, "decode": {"parallelism": parallelism}}), CFG)
    res = engine_container(m, "decode")["resources"]
    assert res["limits"]["nvidia.com/gpu"] == gpus
    assert res["requests"]["nvidia.com/gpu"] == gpus


@pytest.mark.parametrize("enabled", [True, False])
def test_rdma(enabled: bool) -> None:
    spec = {"rdma": {"enabled": enabled, "resourceName": "example.com/rdma", "count": 2}}
    m = render_cluster(cluster(roles=EPD_ROLES, **spec), CFG)
    for role in ("encoder", "prefill", "decode"):
        ctr = engine_container(m, role)
        limits = ctr["resources"]["limits"]
        if enabled:
            assert limits["example.com/rdma"] == "2"
            assert ctr["resources"]["requests"]["example.com/rdma"] == "2"
            assert ctr["securityContext"] == {"capabilities": {"add": ["IPC_LOCK"]}}
        else:
            assert "example.com/rdma" not in limits
            assert "securityContext" not in ctr
    assert "privileged" not in json.dumps(m)
    assert config_of(m).ec.protocol == ("rdma" if enabled else "tcp")


def test_user_resources_are_merged_and_canonical() -> None:
    roles = {
        "encoder": {},
        "decode": {
            "resources": {"requests": {"memory": "1.5Gi", "cpu": 4}, "limits": {"memory": "2048Mi"}}
        },
    }
    res = engine_container(render_cluster(cluster(roles=roles), CFG), "decode")["resources"]
    assert res == {
        "limits": {"memory": "2Gi", "nvidia.com/gpu": "1"},
        "requests": {"cpu": "4", "memory": "1536Mi", "nvidia.com/gpu": "1"},
    }


@pytest.mark.parametrize(
    ("source", "volume", "mount", "path"),
    [
        (
            None,
            {"name": "model-cache", "emptyDir": {}},
            {"name": "model-cache", "mountPath": "/var/cache/epd"},
            None,
        ),
        (
            {"pvc": {"claimName": "weights", "subPath": "m"}},
            {"name": "model", "persistentVolumeClaim": {"claimName": "weights", "readOnly": True}},
            {"name": "model", "mountPath": "/models", "readOnly": True, "subPath": "m"},
            "/models",
        ),
        (
            {"hostPath": {"path": "/data/m"}},
            {"name": "model", "hostPath": {"path": "/data/m", "type": "Directory"}},
            {"name": "model", "mountPath": "/models", "readOnly": True},
            "/models",
        ),
        ({"image": {"path": "/opt/m"}}, None, None, "/opt/m"),
    ],
)
def test_model_sources(
    source: dict[str, Any] | None,
    volume: dict[str, Any] | None,
    mount: dict[str, Any] | None,
    path: str | None,
) -> None:
    model: dict[str, Any] = {"name": "org/model"}
    if source is not None:
        model["source"] = source
    m = render_cluster(cluster(model=model), CFG)
    pod = by_kind(m, "StatefulSet", "-decode")["spec"]["template"]["spec"]
    model_volumes = [v for v in pod["volumes"] if v["name"] in ("model", "model-cache")]
    model_mounts = [
        v for v in pod["containers"][0]["volumeMounts"] if v["name"] in ("model", "model-cache")
    ]
    assert model_volumes == ([volume] if volume else [])
    assert model_mounts == ([mount] if mount else [])
    assert config_of(m).model.path == path
    env_names = [e["name"] for e in pod["containers"][0]["env"]]
    assert ("HF_HOME" in env_names) is (source is None)


@pytest.mark.parametrize(
    ("roles", "with_volume"),
    [
        ({"encoder": {}, "decode": {}}, {"encoder", "decode"}),
        (EPD_ROLES, {"encoder", "prefill"}),
    ],
)
def test_ec_example_shared_volume_on_producer_and_consumer(
    roles: dict[str, Any], with_volume: set[str]
) -> None:
    spec = {
        "ecTransfer": {
            "connector": "ECExampleConnector",
            "sharedStorage": {"claimName": "rwx", "path": "/shared"},
        }
    }
    m = render_cluster(cluster(roles=roles, **spec), CFG)
    for role in roles:
        mounts = {v["name"]: v["mountPath"] for v in engine_container(m, role)["volumeMounts"]}
        assert (mounts.get("ec-shared") == "/shared") is (role in with_volume)
    assert config_of(m).ec.shared_storage_path == "/shared"


def test_user_pod_settings_are_merged() -> None:
    decode = {
        "env": [
            {"name": "A", "value": "1"},
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
        "nodeSelector": {"pool": "gpu"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}
            }
        },
        "podLabels": {"team": "ml"},
        "podAnnotations": {"note": "x"},
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}],
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch", "readOnly": False}],
    }
    m = render_cluster(cluster(roles={"encoder": {}, "decode": decode}), CFG)
    template = by_kind(m, "StatefulSet", "-decode")["spec"]["template"]
    pod = template["spec"]
    ctr = pod["containers"][0]
    assert ctr["env"][-2:] == decode["env"]
    assert ctr["env"][0]["name"] == "EPD_ROLE"  # ours first, user's after
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == decode["tolerations"]
    assert pod["affinity"] == decode["affinity"]
    assert template["metadata"]["labels"]["team"] == "ml"
    assert template["metadata"]["annotations"]["note"] == "x"
    assert pod["volumes"][-1] == {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}
    assert ctr["volumeMounts"][-1] == {
        "name": "scratch",
        "mountPath": "/scratch",
        "readOnly": False,
    }
    enc = by_kind(m, "StatefulSet", "-encoder")["spec"]["template"]
    assert "team" not in enc["metadata"]["labels"]


@pytest.mark.parametrize(
    ("ref", "split"),
    [
        ("repo/engine:1.0", ("repo/engine", "1.0")),
        ("registry.local:5000/engine", ("registry.local:5000/engine", None)),
        ("registry.local:5000/engine:2", ("registry.local:5000/engine", "2")),
        ("engine@sha256:abc", ("engine@sha256:abc", None)),
    ],
)
def test_split_image(ref: str, split: tuple[str, str | None]) -> None:
    assert split_image(ref) == split


DIGEST = "0123456789abcdef" * 4  # sha256 digests are 64 hex digits


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (None, "epd/engine:0.1.0"),
        ({"tag": "0.2.0"}, "epd/engine:0.2.0"),
        ({"repository": "my/engine"}, "my/engine:latest"),
        ({"repository": "my/engine", "tag": "3"}, "my/engine:3"),
        ({"ref": f"my/engine@sha256:{DIGEST}"}, f"my/engine@sha256:{DIGEST}"),
    ],
)
def test_engine_image(image: dict[str, str] | None, expected: str) -> None:
    spec = {} if image is None else {"image": image}
    cfg = OperatorConfig(engine_image="epd/engine:0.1.0")
    assert engine_image(cluster(**spec).spec, cfg) == expected


def test_pull_policy_and_secrets() -> None:
    cfg = OperatorConfig(image_pull_secrets=("global",), image_pull_policy="Always")
    m = render_cluster(
        cluster(image={"pullPolicy": "Never", "pullSecrets": ["mine", "global"]}), cfg
    )
    pod = by_kind(m, "StatefulSet", "-decode")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "mine"}, {"name": "global"}]
    assert pod["containers"][0]["imagePullPolicy"] == "Never"
    router = by_kind(m, "Deployment", "-router")["spec"]["template"]["spec"]
    assert router["containers"][0]["imagePullPolicy"] == "Always"


def test_launch_config_contents() -> None:
    spec = {
        "rdma": {"enabled": True},
        "ecTransfer": {"bufferSize": "2Gi", "controlPort": 15000, "pushWaitTimeoutSeconds": 90},
        "kvTransfer": {"connector": "NixlConnector", "sideChannelPort": 5700},
        "encoderCache": {"maxNumBatchedTokens": 8192, "limitMmPerPrompt": {"image": 2}},
        "mediaIoKwargs": {"video": {"num_frames": 8}},
        "roles": {
            "encoder": {},
            "prefill": {"parallelism": {"tensor": 2}},
            "decode": {"replicas": 3, "extraArgs": ["--enforce-eager"]},
        },
    }
    manifests = render_cluster(cluster(**spec), CFG)
    cfg = config_of(manifests)
    assert cfg.cluster == "demo"
    assert cfg.namespace == "ns"
    assert cfg.topology == "E/P/D"
    assert cfg.ec.buffer_size == 2 * 2**30
    assert (cfg.ec.port, cfg.ec.protocol, cfg.ec.push_wait_timeout_s) == (15000, "rdma", 90)
    assert cfg.kv is not None
    assert (cfg.kv.connector, cfg.kv.side_channel_port, cfg.kv.protocol) == (
        "NixlConnector",
        5700,
        "rdma",
    )
    assert cfg.encoder_cache.max_num_batched_tokens == 8192
    assert cfg.encoder_cache.limit_mm_per_prompt == {"image": 2}
    assert cfg.media_io_kwargs == {"video": {"num_frames": 8}}
    assert cfg.roles.prefill is not None
    assert cfg.roles.prefill.parallelism.tensor == 2
    # Replica counts are not part of a launch revision: no pod reads them.
    document = json.loads(launch_cm(manifests)["data"][launch.CONFIGMAP_KEY])
    assert all("replicas" not in role for role in document["roles"].values())
    assert cfg.roles.decode.extra_args == ["--enforce-eager"]
    assert cfg.roles.decode.service == "demo-decode"


def test_e_p_d_without_kv_transfer_gets_the_default_connector() -> None:
    cfg = config_of(render_cluster(cluster(roles=EPD_ROLES), CFG))
    assert cfg.kv is not None
    assert cfg.kv.connector == "MooncakeConnector"
    assert config_of(render_cluster(cluster(), CFG)).kv is None


def test_render_does_not_depend_on_the_order_of_the_input_or_mutate_it() -> None:
    # The same spec written with its maps in the opposite order renders byte for byte the same
    # (a rendering that iterated the input's dicts would roll pods on a reordered apply).
    spec: dict[str, Any] = {"roles": EPD_ROLES, "rdma": {"enabled": True}}
    reordered = json.loads(json.dumps(spec), object_pairs_hook=lambda kv: dict(reversed(kv)))
    assert list(reordered["roles"]) != list(spec["roles"])
    obj = cluster(**spec)
    before = obj.model_dump()
    first = json.dumps(render_cluster(obj, CFG))
    assert first == json.dumps(render_cluster(cluster(**reordered), CFG))
    assert obj.model_dump() == before


def _revisions(manifests: list[dict[str, Any]]) -> dict[str, str]:
    return {
        m["metadata"]["name"]: m["spec"]["template"]["metadata"]["labels"][c.LABEL_REVISION]
        for m in manifests
        if m["kind"] in ("StatefulSet", "Deployment")
    }


BASE_SPEC: dict[str, Any] = {"roles": copy.deepcopy(EPD_ROLES)}


def _changed(mutate: Any) -> set[str]:
    """The workloads whose template changes, rendered as a reconcile pass does: with the
    launch ConfigMap pins chosen from the objects rendered before (standing in for live)."""
    live = render_cluster(cluster(**copy.deepcopy(BASE_SPEC)), CFG)
    spec = copy.deepcopy(BASE_SPEC)
    mutate(spec)
    obj = cluster(**spec)
    after = _revisions(render_cluster(obj, CFG, pins=launch_pins(launch_config(obj), live)))
    before = _revisions(live)
    return {name.removeprefix("demo-") for name in before if before[name] != after[name]}


@pytest.mark.parametrize(
    ("mutate", "rolled"),
    [
        (lambda s: None, set()),
        (lambda s: s["roles"]["decode"].update(replicas=5), set()),
        (lambda s: s.update(router={"replicas": 3}), set()),
        (
            lambda s: s["roles"]["decode"].update(extraArgs=["--max-num-seqs", "8"]),
            {"decode", "router"},
        ),
        (lambda s: s["roles"]["prefill"].update(podLabels={"a": "b"}), {"prefill"}),
        (lambda s: s.update(image={"tag": "9"}), {"encoder", "prefill", "decode"}),
        (
            lambda s: s.update(model={"name": "org/other"}),
            {"encoder", "prefill", "decode", "router"},
        ),
        (
            lambda s: s.update(ecTransfer={"controlPort": 16000}),
            {"encoder", "prefill", "decode", "router"},
        ),
        (lambda s: s.update(router={"resources": {"requests": {"cpu": "1"}}}), {"router"}),
    ],
    ids=[
        "nothing",
        "scale-decode",
        "scale-router",
        "decode-args",
        "prefill-labels",
        "image",
        "model",
        "ec-port",
        "router-resources",
    ],
)
def test_revisions_roll_exactly_the_affected_pods(mutate: Any, rolled: set[str]) -> None:
    assert _changed(mutate) == rolled


def test_router() -> None:
    m = render_cluster(cluster(router={"replicas": 2, "serviceType": "NodePort", "port": 80}), CFG)
    dep = by_kind(m, "Deployment", "-router")
    svc = by_kind(m, "Service", "-router")
    assert dep["spec"]["replicas"] == 2
    ctr = dep["spec"]["template"]["spec"]["containers"][0]
    assert ctr["command"] == ["epd-router"]
    assert ctr["args"] == [
        "--launch-config",
        "/etc/epd/launch.json",
        "--port",
        "8000",
        "--routing-file",
        "/etc/epd/routing/routing.json",
    ]
    # The router's own parser accepts what we render.
    args = router_parser().parse_args(ctr["args"])
    assert (args.launch_config, args.port) == ("/etc/epd/launch.json", 8000)
    assert args.routing_file == "/etc/epd/routing/routing.json"
    assert ctr["securityContext"]["allowPrivilegeEscalation"] is False
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    # Ready when it can serve; restarted only when its process stops answering.
    assert ctr["readinessProbe"]["httpGet"]["path"] == "/health"
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_router_traffic_settings_become_flags_the_router_parses() -> None:
    spec = {
        "consumerMedia": "raw",
        "encoderRouting": "round-robin",
        "overload": {"healthTimeoutSeconds": 2.5, "maxInflightPerPod": 8, "queueSize": 1024},
    }
    obj = cluster(router=spec)
    dep = by_kind(render_cluster(obj, CFG), "Deployment", "router")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    # queueSize equals the router's default: not rendered.
    assert args[6:] == [
        "--consumer-media", "raw",
        "--encoder-routing", "round-robin",
        "--health-timeout-s", "2.5",
        "--max-inflight-per-pod", "8",
    ]  # fmt: skip
    parsed = router_parser().parse_args(args)
    assert (parsed.consumer_media, parsed.encoder_routing) == ("raw", "round-robin")
    assert (parsed.health_timeout_s, parsed.max_inflight_per_pod) == (2.5, 8)


@pytest.mark.parametrize(
    ("router", "field"),
    [
        ({"consumerMedia": "pixels"}, "consumerMedia"),
        ({"encoderRouting": "random"}, "encoderRouting"),
        ({"overload": {"maxEjectionPercent": 101}}, "maxEjectionPercent"),
        ({"overload": {"unhealthyThreshold": 0}}, "unhealthyThreshold"),
        ({"overload": {"queueTimeoutSeconds": "5s"}}, "queueTimeoutSeconds"),
    ],
)
def test_bad_router_traffic_settings_name_the_field(router: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        cluster(router=router)


def test_one_disruption_budget_per_role_with_its_max_unavailable() -> None:
    roles = {"encoder": {}, "prefill": {"rollout": {"maxUnavailable": 2}}, "decode": {}}
    m = render_cluster(cluster(roles=roles), CFG)
    for role, bound in (("encoder", 1), ("prefill", 2), ("decode", 1)):
        pdb = by_kind(m, "PodDisruptionBudget", f"-{role}")
        sts = by_kind(m, "StatefulSet", f"-{role}")
        assert pdb["spec"]["maxUnavailable"] == bound
        assert pdb["spec"]["selector"] == sts["spec"]["selector"]
    with pytest.raises(SpecError, match="maxUnavailable"):
        cluster(roles={"encoder": {"rollout": {"maxUnavailable": 0}}, "decode": {}})


@pytest.mark.parametrize(("drain", "hook"), [(None, True), (90, True), (0, False)])
def test_engine_pods_drain_before_sigterm(drain: int | None, hook: bool) -> None:
    roles: dict[str, Any] = {"encoder": {}, "decode": {}}
    if drain is not None:
        roles["decode"] = {"rollout": {"drainSeconds": drain}}
    sts = next(
        m
        for m in render_cluster(cluster(roles=roles), CFG)
        if m["kind"] == "StatefulSet" and m["metadata"]["name"] == "demo-decode"
    )
    pod = sts["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    budget = 30 if drain is None else drain
    env = {e["name"]: e.get("value") for e in ctr["env"]}
    assert pod["terminationGracePeriodSeconds"] == CFG.termination_grace_period_seconds + budget
    if hook:
        assert ctr["lifecycle"]["preStop"]["exec"]["command"] == ["epd-engine", "--drain"]
        assert env["EPD_DRAIN_SECONDS"] == str(budget)
    else:
        assert "lifecycle" not in ctr
        assert "EPD_DRAIN_SECONDS" not in env
