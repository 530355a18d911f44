"""Per-role scaling on the real control plane: `kubectl explain` documents the new fields, the
EPDRoleScaler refuses a count no role can run with, and the real kube-controller-manager HPA
controller scales one role through the recipe `epdctl autoscale` prints.

The HPA needs a metrics API. The recipe's encoder signal is an *external* metric; here a CRD
in the group external.metrics.k8s.io serves it: the apiserver answers
`GET /apis/external.metrics.k8s.io/v1beta1/namespaces/<ns>/<metric>?labelSelector=...` with an
`ExternalMetricValueList` whose items are objects we write, which is exactly what the HPA
controller's external-metrics client reads (a Prometheus Adapter serves the same path in a
real cluster). The reconcile passes run here, in this process, with admin credentials (the
e2e suite runs the operator process with the chart's RBAC and its watch triggers).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from api_samples import sample, sample_path

from e2e.operator_proc import operator_config
from e2e.providers import Cluster
from epd_operator.api import constants as c
from epd_operator.api import crdgen
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.api.parse import parse
from epd_operator.cli import load_clusters
from epd_operator.reconcile.core import StatusMemory, reconcile
from epd_operator.reconcile.kube import Kube
from epd_operator.render.autoscale import METRIC_ENCODE_P90, Targets, hpa, recipes
from epd_operator.render.names import router_name

pytestmark = pytest.mark.integration

NS = "epd-scaling"
NAME = "auto"
ENC, DEC = f"{NAME}-encoder", f"{NAME}-decode"
EXTERNAL = "external.metrics.k8s.io"
METRIC_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {
        "name": f"{METRIC_ENCODE_P90}.{EXTERNAL}",
        # A *.k8s.io group needs this annotation; this is a test double of an
        # aggregated metrics API, never an API anyone should build on.
        "annotations": {"api-approved.kubernetes.io": "unapproved, test-only"},
    },
    "spec": {
        "group": EXTERNAL,
        "names": {
            "kind": "ExternalMetricValue",
            "listKind": "ExternalMetricValueList",
            "plural": METRIC_ENCODE_P90,
            "singular": f"{METRIC_ENCODE_P90}-value",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


@dataclass
class Env:
    cluster: Cluster
    kube: Kube
    cfg: OperatorConfig
    memory: StatusMemory = field(default_factory=StatusMemory)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.cluster.kubectl("-n", NS, *args, input=input, check=check)

    def get(self, *args: str) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json").stdout)
        return out

    def reconcile(self) -> int:
        """One pass over the live EPDCluster; the number of writes it made."""
        return self.settle(passes=1)

    def settle(self, passes: int = 6) -> int:
        total = 0
        for _ in range(passes):
            out = reconcile(self.kube, self.get("epdc", NAME), self.cfg, self.memory)
            assert not out.problems, out.problems
            total += out.writes
            if out.writes == 0:
                break
        return total


def wait_for(what: str, fn: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def env(cluster: Cluster) -> Iterator[Env]:
    for path in (
        crdgen.targets(crdgen.repo_root())[0],
        crdgen.targets(crdgen.repo_root(), c.SCALER_CRD_FILENAME)[0],
    ):
        cluster.kubectl(
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=epd-scaling-tests",
            "-f",
            str(path),
        )
    cluster.kubectl("apply", "-f", "-", input=json.dumps(METRIC_CRD))
    for crd in (c.CRD_NAME, c.SCALER_CRD_NAME, METRIC_CRD["metadata"]["name"]):  # type: ignore[index]
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    # Established is not yet published: the apiserver's OpenAPI document (what `kubectl
    # explain` reads) takes in a new CRD's schema a few seconds later.
    wait_for(
        "the scaler's schema in the OpenAPI document",
        lambda: cluster.kubectl("explain", c.SCALER_PLURAL, check=False).returncode == 0,
        timeout=60,
    )
    cluster.kubectl("create", "namespace", NS)
    obj = sample("minimal-epd")
    obj["metadata"] = {"name": NAME, "namespace": NS}
    obj["spec"]["roles"]["encoder"] = {"replicasFrom": "Scaler", "maxReplicas": 4}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))
    kube = Kube.from_environment(kubeconfig=str(cluster.kubeconfig))
    e = Env(cluster, kube, operator_config(cluster))
    e.settle()
    try:
        yield e
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        cluster.kubectl(
            "delete",
            "crd",
            METRIC_CRD["metadata"]["name"],  # type: ignore[index]
            "--wait=false",
            check=False,
        )


@pytest.mark.parametrize(
    ("field", "fragment"),
    [
        ("epdrs.spec.replicas", "Pods wanted for the role"),
        ("epdrs.status.selector", "Label selector of the role's pods"),
        ("epdrs.status.desiredReplicas", "after minReplicas/maxReplicas and scaling.ratios"),
        ("epdc.spec.roles.decode.replicasFrom", "Who owns the number of pods"),
        ("epdc.spec.roles.encoder.maxReplicas", "Upper bound"),
        ("epdc.spec.scaling.ratios.per", "never adjusted"),
        ("epdc.status.roles.decode.replicasFrom", "Owner of the number"),
    ],
)
def test_kubectl_explain_documents_the_scaling_fields(env: Env, field: str, fragment: str) -> None:
    text = " ".join(env.cluster.kubectl("explain", field).stdout.split())
    assert fragment in text


def test_a_scale_to_zero_is_refused_naming_the_field(env: Env) -> None:
    done = env.kubectl("scale", c.SCALER_PLURAL, DEC, "--replicas=0", check=False)
    assert done.returncode != 0
    assert "spec.replicas" in done.stderr
    assert "greater than or equal to 1" in done.stderr
    assert env.get(c.SCALER_PLURAL, DEC)["spec"]["replicas"] == 1


def metric(env: Env, value: str) -> None:
    """Publish the router's encode p90 for this cluster (what a Prometheus Adapter would)."""
    router = router_name(NAME)
    env.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": f"{EXTERNAL}/v1beta1",
                "kind": "ExternalMetricValue",
                "metadata": {"name": router, "namespace": NS, "labels": {"service": router}},
                "metricName": METRIC_ENCODE_P90,
                "metricLabels": {"service": router},
                "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "value": value,
            }
        ),
    )


def test_the_hpa_controller_scales_one_role_through_its_scaler(env: Env) -> None:
    cluster = parse(env.get("epdc", NAME))
    # The recipe as `epdctl autoscale` prints it, with scale-down allowed at once.
    recipe = hpa(cluster, "encoder", Targets(scale_down_window_seconds=0))
    assert recipe["spec"]["scaleTargetRef"]["kind"] == c.SCALER_KIND
    assert recipe["spec"]["maxReplicas"] == 4
    metric(env, "1500m")  # 3x the 0.5 s target
    env.kubectl("apply", "-f", "-", input=json.dumps(recipe))
    dec_gen = env.get("sts", DEC)["metadata"]["generation"]
    timeline: list[str] = []
    t0 = time.monotonic()

    def follow(what: str, want: int, timeout: float = 120) -> None:
        # The operator's watch trigger, played by this loop: reconcile when the scaler moved.
        def done() -> bool:
            if env.get(c.SCALER_PLURAL, ENC)["spec"]["replicas"] != want:
                return False
            env.settle()
            return bool(env.get("sts", ENC)["spec"]["replicas"] == want)

        wait_for(what, done, timeout=timeout)
        timeline.append(f"  +{time.monotonic() - t0:6.1f}s  {what}")

    follow("HPA scaled the encoder scaler 1 -> 3; StatefulSet follows", 3)
    hpa_status = env.get("hpa", ENC)["status"]
    assert hpa_status["desiredReplicas"] == 3
    wait_for(
        "3 ready encoder pods",
        lambda: (
            env.settle() >= 0
            and env.get(c.SCALER_PLURAL, ENC).get("status", {}).get("readyReplicas") == 3
        ),
        timeout=60,
    )
    assert env.get("sts", DEC)["metadata"]["generation"] == dec_gen  # only the encoder moved
    assert env.get("sts", DEC)["spec"]["replicas"] == 1
    t0 = time.monotonic()
    metric(env, "250m")  # half the target: 3 pods -> 2
    follow("HPA scaled the encoder down 3 -> 2; StatefulSet follows", 2)
    status = env.get("epdc", NAME)["status"]["roles"]["encoder"]
    assert (status["replicasFrom"], status["desiredReplicas"]) == ("Scaler", 2)
    print("\n".join(["HPA controller timeline (sync period 15 s):", *timeline]))
    env.kubectl("delete", "hpa", ENC)


def test_every_hpa_recipe_is_admitted(env: Env) -> None:
    (cluster,) = load_clusters(str(sample_path("autoscaled-e-p-d")), namespace=NS)
    for obj in recipes(cluster):
        done = env.kubectl(
            "create",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
            input=json.dumps(obj),
            check=False,
        )
        assert done.returncode == 0, done.stderr
        stored = json.loads(done.stdout)["spec"]
        # Quantities come back canonical ("0.5" -> "500m"); names, kinds and the target do not.
        assert stored["scaleTargetRef"] == obj["spec"]["scaleTargetRef"]
        assert [m["type"] for m in stored["metrics"]] == [m["type"] for m in obj["spec"]["metrics"]]
