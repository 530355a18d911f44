"""render.autoscale / `epdctl autoscale`: one autoscaler per Scaler-owned role, aimed at the
role's EPDRoleScaler, on that role's signal. (The HPAs are admitted by, and driven through, the
real apiserver and HPA controller in test_scaling_integration.py.)"""

from __future__ import annotations

import io
from typing import Any

import pytest
import yaml
from api_samples import sample_path

from epd_operator.api import constants as c
from epd_operator.api.parse import parse
from epd_operator.cli import load_clusters, main
from epd_operator.render.autoscale import (
    METRIC_ENCODE_P90,
    METRIC_KV_CACHE,
    METRIC_WAITING,
    RecipeError,
    Targets,
    hpa,
    recipes,
    scaled_object,
)

AUTOSCALED = sample_path("autoscaled-e-p-d")
MINIMAL = sample_path("minimal-epd")


def cluster() -> Any:
    (one,) = load_clusters(str(AUTOSCALED), namespace="team-a")
    return one


def test_one_hpa_per_scaler_owned_role_on_its_signal() -> None:
    out = recipes(cluster())
    assert [(o["kind"], o["metadata"]["name"]) for o in out] == [
        ("HorizontalPodAutoscaler", "qwen-vl-autoscaled-encoder"),
        ("HorizontalPodAutoscaler", "qwen-vl-autoscaled-decode"),
    ]  # prefill is owned by the spec: no autoscaler
    enc, dec = out
    for o, role in ((enc, "encoder"), (dec, "decode")):
        assert o["spec"]["scaleTargetRef"] == {
            "apiVersion": c.API_VERSION,
            "kind": c.SCALER_KIND,
            "name": f"qwen-vl-autoscaled-{role}",
        }
        assert o["metadata"]["namespace"] == "team-a"
        # Not ours to prune: no managed-by label (list_children selects on it).
        assert c.LABEL_MANAGED_BY not in o["metadata"]["labels"]
    # Bounds from the role's min/maxReplicas.
    assert (enc["spec"]["minReplicas"], enc["spec"]["maxReplicas"]) == (1, 8)
    assert (dec["spec"]["minReplicas"], dec["spec"]["maxReplicas"]) == (2, 16)
    (ext,) = enc["spec"]["metrics"]
    assert ext["external"]["metric"] == {
        "name": METRIC_ENCODE_P90,
        "selector": {"matchLabels": {"service": "qwen-vl-autoscaled-router"}},
    }
    assert ext["external"]["target"] == {"type": "Value", "value": "0.5"}
    assert [m["pods"]["metric"]["name"] for m in dec["spec"]["metrics"]] == [
        METRIC_WAITING,
        METRIC_KV_CACHE,
    ]


def test_prefill_scales_on_its_queue_and_targets_are_tunable() -> None:
    obj = yaml.safe_load(AUTOSCALED.read_text())
    obj["spec"]["roles"]["prefill"] = {"replicasFrom": "Scaler"}
    obj["metadata"]["uid"] = "u"
    (pre,) = recipes(parse(obj), ["prefill"], t=Targets(waiting_per_pod="2"))
    (m,) = pre["spec"]["metrics"]
    assert m == {
        "type": "Pods",
        "pods": {
            "metric": {"name": METRIC_WAITING},
            "target": {"type": "AverageValue", "averageValue": "2"},
        },
    }


def test_keda_scaled_objects_query_prometheus_per_role() -> None:
    enc, dec = recipes(cluster(), keda=True)
    assert enc["apiVersion"] == "keda.sh/v1alpha1"
    assert dec["spec"]["scaleTargetRef"]["kind"] == c.SCALER_KIND
    assert (dec["spec"]["minReplicaCount"], dec["spec"]["maxReplicaCount"]) == (2, 16)
    queries = {t["name"]: t["metadata"]["query"] for t in dec["spec"]["triggers"]}
    assert queries == {
        "requests-waiting": 'sum(vllm:num_requests_waiting{namespace="team-a",'
        'pod=~"qwen-vl-autoscaled-decode-[0-9]+"})',
        "kv-cache-usage": 'avg(vllm:kv_cache_usage_perc{namespace="team-a",'
        'pod=~"qwen-vl-autoscaled-decode-[0-9]+"})',
    }
    (trigger,) = enc["spec"]["triggers"]
    assert 'stage="encode"' in trigger["metadata"]["query"]
    assert trigger["metricType"] == "Value"
    assert scaled_object(cluster(), "decode")["spec"]["triggers"][0]["metadata"]["threshold"] == "4"


def test_refuses_roles_the_operator_would_revert_or_that_do_not_exist() -> None:
    with pytest.raises(RecipeError, match=r"spec\.roles\.prefill\.replicasFrom is Spec"):
        hpa(cluster(), "prefill")
    (epd,) = load_clusters(str(MINIMAL), namespace=None)
    with pytest.raises(RecipeError, match="has no prefill role"):
        hpa(epd, "prefill")


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    assert (
        main(
            [
                "autoscale",
                "-f",
                str(AUTOSCALED),
                "--role",
                "decode",
                "--keda",
                "--max-replicas",
                "3",
            ],
            out=out,
        )
        == 0
    )
    (doc,) = list(yaml.safe_load_all(out.getvalue()))
    assert doc["kind"] == "ScaledObject"
    assert main(["autoscale", "-f", str(MINIMAL)], out=io.StringIO()) == 2
    assert "no role has replicasFrom: Scaler" in capsys.readouterr().err
