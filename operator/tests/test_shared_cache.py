"""encoderCache.shared: the master Deployment + Service, the Store config in the launch config
and the launcher's file, the encoder memory the Store pins, and Ready waiting for the store."""

from __future__ import annotations

import json
from typing import Any

import pytest

from epd_connector.launch.argv import build_argv, build_env
from epd_connector.launch.pod import PodContext
from epd_connector.launch.rules import STORE_READ_BUFFER_BYTES
from epd_connector.launch.store import ENV_STORE_CONFIG, store_files
from epd_operator.api import constants as c
from epd_operator.api.models import EPDCluster
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.api.parse import SpecError, parse
from epd_operator.api.quantity import quantity_value
from epd_operator.reconcile.status import compute_status
from epd_operator.render import render_cluster
from epd_operator.render.launch import launch_config

CFG = OperatorConfig()
GI = 1 << 30
MI = 1 << 20


def cluster(shared: dict[str, Any] | None = None, **spec: Any) -> EPDCluster:
    body: dict[str, Any] = {"model": {"name": "org/model"}, "roles": {"encoder": {}, "decode": {}}}
    body.update(spec)
    if shared is not None:
        body.setdefault("encoderCache", {})["shared"] = shared
    return parse(
        {
            "apiVersion": c.API_VERSION,
            "kind": c.KIND,
            "metadata": {"name": "demo", "namespace": "ns", "uid": "u-1"},
            "spec": body,
        }
    )


def find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def encoder_resources(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    sts = find(manifests, "StatefulSet", "demo-encoder")
    res: dict[str, Any] = sts["spec"]["template"]["spec"]["containers"][0]["resources"]
    return res


def test_disabled_renders_no_store() -> None:
    for obj in (cluster(), cluster({"enabled": False})):
        manifests = render_cluster(obj, CFG)
        assert not [m for m in manifests if m["metadata"]["name"] == "demo-store"]
        assert launch_config(obj).ec.store is None
        assert "memory" not in encoder_resources(manifests).get("requests", {})


def test_master_deployment_and_service() -> None:
    obj = cluster(
        {
            "enabled": True,
            "master": {
                "port": 50100,
                "metricsPort": 9100,
                "evictionHighWatermarkRatio": 0.8,
                "evictionRatio": 0.1,
            },
        },
        image={"ref": "registry.example/engine:v1"},
    )
    manifests = render_cluster(obj, CFG)
    kinds = [(m["kind"], m["metadata"]["name"]) for m in manifests]
    # The master comes before the encoders that dial it at start.
    assert kinds.index(("Deployment", "demo-store")) < kinds.index(("StatefulSet", "demo-encoder"))
    dep = find(manifests, "Deployment", "demo-store")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    pod = dep["spec"]["template"]["spec"]
    (ctr,) = pod["containers"]
    assert ctr["image"] == "registry.example/engine:v1"  # the engine image ships the master
    assert ctr["command"] == ["mooncake_master"]
    assert ctr["args"] == [
        "--rpc_port=50100",
        "--metrics_port=9100",
        "--eviction_high_watermark_ratio=0.8",
        "--eviction_ratio=0.1",
    ]
    assert ctr["readinessProbe"]["httpGet"] == {
        "path": "/health",
        "port": "metrics",
        "scheme": "HTTP",
    }
    assert {p["name"]: p["containerPort"] for p in ctr["ports"]} == {"rpc": 50100, "metrics": 9100}
    assert pod["automountServiceAccountToken"] is False
    svc = find(manifests, "Service", "demo-store")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"rpc": 50100, "metrics": 9100}
    store = launch_config(obj).ec.store
    assert store is not None
    assert store.master_address == "demo-store.ns.svc:50100"


def test_store_config_reaches_the_encoder_only() -> None:
    obj = cluster(
        {"enabled": True, "segmentSize": "2Gi", "localBufferSize": "256Mi"},
        ecTransfer={"protocol": "tcp"},
    )
    cfg = launch_config(obj)
    pod = PodContext.create("10.0.0.4", 0)
    enc = build_argv(cfg, "encoder", pod)
    ec = json.loads(enc[enc.index("--ec-transfer-config") + 1])
    assert ec["ec_connector_extra_config"]["cross_encoder_cache"] is True
    dec = build_argv(cfg, "decode", pod)
    assert "cross_encoder_cache" not in dec[dec.index("--ec-transfer-config") + 1]
    assert ENV_STORE_CONFIG not in build_env(cfg, "decode", pod)
    [(path, text)] = store_files(cfg, "encoder", pod).items()
    assert build_env(cfg, "encoder", pod)[ENV_STORE_CONFIG] == path
    assert json.loads(text) == {
        "metadata_server": "P2PHANDSHAKE",
        "master_server_address": "demo-store.ns.svc:50051",
        "protocol": "tcp",
        "device_name": "",
        "mode": "embedded",
        "global_segment_size": 2 * GI,
        "local_buffer_size": 256 * MI,
        "enable_offload": False,
    }


MEMORY = [
    # (encoder resources, shared fragment, extraConfig, expected requests.memory, limits.memory)
    (None, {}, None, 4 * GI + 1 * GI + STORE_READ_BUFFER_BYTES, None),
    (
        {"requests": {"memory": "16Gi"}},
        {"segmentSize": "8Gi"},
        None,
        16 * GI + 8 * GI + 1 * GI + STORE_READ_BUFFER_BYTES,
        None,
    ),
    (
        {"requests": {"memory": "16Gi"}, "limits": {"memory": "32Gi"}},
        {"localBufferSize": "512Mi"},
        {"store_read_buffer_bytes": 64 * MI},
        16 * GI + 4 * GI + 512 * MI + 64 * MI,
        32 * GI + 4 * GI + 512 * MI + 64 * MI,
    ),
]


@pytest.mark.parametrize(("resources", "fragment", "extra", "want_request", "limit"), MEMORY)
def test_encoder_memory_is_raised_by_what_the_store_pins(
    resources: dict[str, Any] | None,
    fragment: dict[str, Any],
    extra: dict[str, Any] | None,
    want_request: int,
    limit: int | None,
) -> None:
    roles: dict[str, Any] = {
        "encoder": {},
        "decode": {"resources": {"requests": {"memory": "8Gi"}}},
    }
    if resources is not None:
        roles["encoder"]["resources"] = resources
    spec: dict[str, Any] = {"roles": roles}
    if extra is not None:
        spec["ecTransfer"] = {"extraConfig": extra}
    manifests = render_cluster(cluster({"enabled": True, **fragment}, **spec), CFG)
    res = encoder_resources(manifests)
    assert quantity_value(res["requests"]["memory"]) == want_request
    if limit is None:
        assert "memory" not in res.get("limits", {})
    else:
        assert quantity_value(res["limits"]["memory"]) == limit
    # The consumer pins nothing for the Store.
    dec = find(manifests, "StatefulSet", "demo-decode")["spec"]["template"]["spec"]
    assert dec["containers"][0]["resources"]["requests"]["memory"] == "8Gi"


def test_explicit_cross_encoder_cache_without_store_points_at_the_field() -> None:
    with pytest.raises(SpecError) as info:
        cluster(
            encoderCache={"mmProcessorCacheGb": 2},
            ecTransfer={"extraConfig": {"cross_encoder_cache": True}},
        )
    assert "encoderCache.shared.enabled" in info.value.message


def _observed(manifest: dict[str, Any], ready: bool) -> dict[str, Any]:
    """A rendered workload as its controller reports it: rolled out, ready or not."""
    want = manifest["spec"]["replicas"]
    have = want if ready else 0
    status = {
        "observedGeneration": 1,
        "replicas": want,
        "readyReplicas": have,
        "updatedReplicas": want,
        "availableReplicas": have,
    }
    return {**manifest, "metadata": {**manifest["metadata"], "generation": 1}, "status": status}


def test_not_ready_before_the_store_is() -> None:
    manifests = render_cluster(cluster({"enabled": True}), CFG)
    workloads = [m for m in manifests if m["kind"] in ("StatefulSet", "Deployment")]
    assert {m["metadata"]["name"] for m in workloads} >= {"demo-store"}

    def status(store_ready: bool) -> dict[str, Any]:
        children = [
            _observed(m, m["metadata"]["name"] != "demo-store" or store_ready) for m in workloads
        ]
        return compute_status(
            generation=1, children=children, problems=[], previous=None, now="2026-01-01T00:00:00Z"
        )

    waiting = status(store_ready=False)
    assert waiting["phase"] == "Progressing"
    ready_cond = next(x for x in waiting["conditions"] if x["type"] == "Ready")
    assert ready_cond["status"] == "False"
    assert "Deployment demo-store" in ready_cond["message"]
    assert status(store_ready=True)["phase"] == "Ready"
