"""Least privilege, enforced, on the real kube-apiserver: with the chart installed cluster-wide,
the operator's own ServiceAccount token tries the indirect escalation (a workload that mounts
a Secret, in kube-system or next to an EPDCluster) and is denied by the chart's
ValidatingAdmissionPolicy, while everything the operator renders is allowed.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from api_samples import valid_samples

from e2e.operator_proc import serviceaccount_kubeconfig
from e2e.paths import REPO
from e2e.providers import Cluster
from epd_operator.api import constants as c
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.api.parse import parse
from epd_operator.render import render_cluster

pytestmark = pytest.mark.integration

RELEASE = "epd-vap"
OP_NS = "epd-vap-system"
NS = "epd-vap-apps"
SA = f"{RELEASE}-epd-operator"
OWNER = {
    "apiVersion": c.API_VERSION,
    "kind": c.KIND,
    "name": "qwen-vl",
    "uid": "00000000-0000-0000-0000-000000000001",
    "controller": True,
}
LABELS = {c.LABEL_MANAGED_BY: c.MANAGED_BY, c.LABEL_INSTANCE: "qwen-vl"}


@pytest.fixture(scope="module")
def as_operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, Path]]:
    tmp = tmp_path_factory.mktemp("vap")
    cluster.run(
        "helm",
        "install",
        RELEASE,
        str(REPO / "charts" / "epd-operator"),
        "--namespace",
        OP_NS,
        "--create-namespace",
        "--set",
        "replicas=0",
        timeout=180,
    )
    cluster.kubectl("create", "namespace", NS)
    kubeconfig = serviceaccount_kubeconfig(cluster, OP_NS, SA, tmp / "sa.kubeconfig")
    try:
        yield cluster, kubeconfig
    finally:
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        cluster.run("helm", "uninstall", RELEASE, "--namespace", OP_NS, check=False)


def create(env: tuple[Cluster, Path], obj: dict[str, Any], namespace: str = NS) -> Any:
    cluster, kubeconfig = env
    exe = cluster.bin_dir / "kubectl"
    return subprocess.run(
        [
            str(exe),
            "--kubeconfig",
            str(kubeconfig),
            "-n",
            namespace,
            "apply",
            "--server-side",
            "--field-manager=epd-operator",
            "--dry-run=server",
            "-f",
            "-",
        ],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def deployment(**pod: Any) -> dict[str, Any]:
    spec = {
        "automountServiceAccountToken": False,
        "containers": [{"name": "x", "image": "busybox"}],
        **pod,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe", "labels": dict(LABELS), "ownerReferences": [OWNER]},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": spec},
        },
    }


SECRET = [{"name": "loot", "secret": {"secretName": "any"}}]


def escalations() -> list[tuple[str, dict[str, Any], str, str]]:
    """(case, object, namespace, expected message fragment)"""
    unlabelled = deployment(volumes=SECRET)
    unlabelled["metadata"] = {"name": "probe"}
    no_owner = deployment()
    no_owner["metadata"].pop("ownerReferences")
    rw_host = deployment(volumes=[{"name": "h", "hostPath": {"path": "/"}}])
    rw_host["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "h", "mountPath": "/host"}
    ]
    privileged = deployment()
    privileged["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {
        "privileged": True
    }
    return [
        ("secret in kube-system", deployment(volumes=SECRET), "kube-system", "kube-*"),
        ("secret next to an EPDCluster", deployment(volumes=SECRET), NS, "no Secrets"),
        (
            "projected token",
            deployment(
                volumes=[
                    {
                        "name": "p",
                        "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]},
                    }
                ]
            ),
            NS,
            "no Secrets",
        ),
        ("unlabelled", unlabelled, NS, "managed-by=epd-operator"),
        ("no owner", no_owner, NS, "ownerReference"),
        (
            "another ServiceAccount",
            deployment(serviceAccountName="admin"),
            NS,
            "default ServiceAccount",
        ),
        (
            "token automount",
            deployment(automountServiceAccountToken=True),
            NS,
            "default ServiceAccount",
        ),
        ("host network", deployment(hostNetwork=True), NS, "host namespaces"),
        ("writable host path", rw_host, NS, "read-only hostPath"),
        ("privileged", privileged, NS, "not privileged"),
    ]


def wait_for_policy(env: tuple[Cluster, Path]) -> None:
    """A new policy is enforced after the apiserver's informers see it (about a second)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if create(env, deployment(volumes=SECRET)).returncode != 0:
            return
        time.sleep(0.5)
    raise AssertionError("the ValidatingAdmissionPolicy never took effect")


@pytest.mark.parametrize(
    ("case", "obj", "namespace", "expect"), escalations(), ids=[e[0] for e in escalations()]
)
def test_the_operator_token_cannot_escalate(
    as_operator: Any, case: str, obj: dict[str, Any], namespace: str, expect: str
) -> None:
    wait_for_policy(as_operator)
    done = create(as_operator, obj, namespace)
    assert done.returncode != 0, f"{case}: allowed"
    assert "ValidatingAdmissionPolicy" in done.stderr, done.stderr
    assert expect in done.stderr, done.stderr


def test_rbac_alone_would_allow_it(as_operator: Any) -> None:
    # The denial above is the policy's, not RBAC's: cluster-wide RBAC lets the token create
    # Deployments in kube-system (that is the hole the policy closes).
    cluster, _ = as_operator
    out = cluster.kubectl(
        "auth",
        "can-i",
        "create",
        "deployments.apps",
        "-n",
        "kube-system",
        f"--as=system:serviceaccount:{OP_NS}:{SA}",
        check=False,
    ).stdout
    assert out.strip() == "yes"


@pytest.mark.parametrize("sample", valid_samples(), ids=lambda p: p.stem)
def test_everything_the_operator_renders_is_allowed(as_operator: Any, sample: Path) -> None:
    wait_for_policy(as_operator)
    obj = yaml.safe_load(sample.read_text())
    obj["metadata"].update(namespace=NS, uid=OWNER["uid"])
    for manifest in render_cluster(parse(obj), OperatorConfig.from_env({})):
        done = create(as_operator, copy.deepcopy(manifest))
        assert done.returncode == 0, (
            f"{manifest['kind']} {manifest['metadata']['name']}: {done.stderr}"
        )
