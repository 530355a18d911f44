"""The Helm chart, rendered by the real (pinned) `helm`: lint, value tables, schema, RBAC.

The RBAC assertions are tied to the code: every kind the reconciler can write must be
allowed, and nothing more than the verbs it uses (the e2e suite then runs the operator with
the chart's ServiceAccount token, which proves the rules are also enough).
"""

from __future__ import annotations

import filecmp
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.paths import REPO
from e2e.providers import bin_dir
from epd_operator import __version__
from epd_operator.api import constants as c
from epd_operator.api.admission import WEBHOOK_PATH
from epd_operator.api.layout import USER_VOLUME_SOURCES
from epd_operator.reconcile.kube import CHILD_KINDS

CHART = REPO / "charts" / "epd-operator"
# Render for the Kubernetes version the project pins (helm's own default is far older).
KUBE_VERSION = next(
    line.split("=", 1)[1].strip()
    for line in (REPO / "hack" / "versions.env").read_text().splitlines()
    if line.startswith("KUBE_VERSION=")
)


@pytest.fixture(scope="module")
def helm() -> Path:
    exe = bin_dir(build=False) / "helm"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run hack/install-cluster-bins.sh (make bootstrap)")
    return exe


def run_helm(helm: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def template(helm: Path, *sets: str, namespace: str = "epd-system") -> list[dict[str, Any]]:
    args = ["template", "epd", str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set-json" if s.startswith("json:") else "--set", s.removeprefix("json:")]
    out = run_helm(helm, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_lint_strict(helm: Path) -> None:
    out = run_helm(helm, "lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_chart_crds_equal_the_generated_crds() -> None:
    top = REPO / "crds" / c.CRD_FILENAME
    chart = CHART / "crds" / c.CRD_FILENAME
    assert top.exists(), f"{top} missing: make crds"
    assert chart.exists(), f"{chart} missing: make crds"
    assert filecmp.cmp(top, chart, shallow=False), (
        f"{chart} differs from {top}: regenerate with make crds"
    )
    assert filecmp.cmp(
        REPO / "crds" / c.SCALER_CRD_FILENAME, CHART / "crds" / c.SCALER_CRD_FILENAME, shallow=False
    )
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(
        [c.CRD_FILENAME, c.SCALER_CRD_FILENAME]
    )


def test_defaults(helm: Path) -> None:
    docs = template(helm)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    (dep,) = by_kind(docs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    (ctr,) = pod["containers"]
    assert ctr["image"] == f"epd-operator/epd-operator:{chart['appVersion']}"
    env = {e["name"]: e["value"] for e in ctr["env"]}
    assert env["EPD_OPERATOR_ENGINE_IMAGE"] == f"epd-operator/epd-engine:{chart['appVersion']}"
    assert env["EPD_OPERATOR_ROUTER_IMAGE"] == ctr["image"]
    assert not any(a.startswith("--namespace") for a in ctr["args"])
    assert ctr["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (sa,) = by_kind(docs, "ServiceAccount")
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert [d["metadata"]["name"] for d in by_kind(docs, "ClusterRole")] == [
        "epd-epd-operator",
        "epd-epd-operator-nodes",
    ]
    assert by_kind(docs, "Role") == []
    for binding in by_kind(docs, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "epd-system"}
        ]


def test_restricted_security_context(helm: Path) -> None:
    (dep,) = by_kind(template(helm), "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = pod["containers"][0]["securityContext"]
    assert sc == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


# (--set values, check on the rendered documents)
VALUE_CASES: list[tuple[str, list[str], Any]] = [
    (
        "image tag override",
        ["image.tag=1.2.3"],
        lambda d: (
            by_kind(d, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["image"]
            == "epd-operator/epd-operator:1.2.3"
        ),
    ),
    (
        "replicas 0 keeps RBAC and ServiceAccount",
        ["replicas=0"],
        lambda d: (
            by_kind(d, "Deployment")[0]["spec"]["replicas"] == 0
            and len(by_kind(d, "ServiceAccount")) == 1
            and len(by_kind(d, "ClusterRole")) == 2
        ),
    ),
    (
        "engine image and sim mode",
        ["engine.image=reg/engine:9", "engine.mode=sim"],
        lambda d: (
            {
                e["name"]: e["value"]
                for e in by_kind(d, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0][
                    "env"
                ]
            }["EPD_OPERATOR_ENGINE_MODE"]
            == "sim"
        ),
    ),
    (
        "resync and workers reach the args",
        ["resyncSeconds=5", "workers=3"],
        lambda d: (
            {"--resync-seconds=5", "--workers=3"}
            <= set(by_kind(d, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"])
        ),
    ),
    (
        "no metrics service, no helm test",
        ["metrics.service.enabled=false"],
        lambda d: (
            [x for x in by_kind(d, "Service") if x["metadata"]["name"].endswith("-metrics")] == []
            and not [p for p in by_kind(d, "Pod") if "test" in p["metadata"]["name"]]
        ),
    ),
    (
        "existing service account",
        ["serviceAccount.create=false", "serviceAccount.name=ops"],
        lambda d: (
            by_kind(d, "ServiceAccount") == []
            and by_kind(d, "Deployment")[0]["spec"]["template"]["spec"]["serviceAccountName"]
            == "ops"
        ),
    ),
]


@pytest.mark.parametrize(
    ("sets", "check"), [c[1:] for c in VALUE_CASES], ids=[c[0] for c in VALUE_CASES]
)
def test_values(helm: Path, sets: list[str], check: Any) -> None:
    assert check(template(helm, *sets))


def test_watch_namespaces_use_roles(helm: Path) -> None:
    docs = template(helm, 'json:watchNamespaces=["team-a","team-b"]')
    roles = by_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")) == [
        "team-a",
        "team-b",
    ]
    # Only the read-only node rule stays cluster-wide.
    (cluster_role,) = by_kind(docs, "ClusterRole")
    assert cluster_role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]}
    ]
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]


def rules_of(helm: Path) -> list[dict[str, Any]]:
    docs = template(helm)
    return [r for role in by_kind(docs, "ClusterRole") for r in role["rules"]]


def test_rbac_has_no_wildcards(helm: Path) -> None:
    for sets in ([], ['json:watchNamespaces=["a"]']):
        for doc in template(helm, *sets):
            for rule in doc.get("rules", []):
                for key in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[key], f"{doc['kind']} {rule}"


def allowed(rules: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    return {
        v
        for r in rules
        if group in r["apiGroups"] and resource in r["resources"]
        for v in r["verbs"]
    }


def test_rbac_is_exactly_what_the_operator_calls(helm: Path) -> None:
    rules = rules_of(helm)
    for kind in CHILD_KINDS:
        group = kind.api_version.rpartition("/")[0]
        # Server-side apply is a PATCH, but creating an object that way also needs "create";
        # every child kind is observed through a watch-fed cache (list + watch).
        want = {"list", "watch", "create", "patch", "delete"}
        assert allowed(rules, group, kind.plural) == want, kind.plural
    assert allowed(rules, c.GROUP, c.PLURAL) == {"list", "watch", "patch"}
    assert allowed(rules, c.GROUP, f"{c.PLURAL}/status") == {"patch"}
    assert allowed(rules, "", "events") == {"create"}
    assert allowed(rules, "", "nodes") == {"list", "watch"}  # the node cache
    assert allowed(rules, "", "pods") == {"list", "watch"}  # read-only: the pod cache
    for sub in ("scale", "status"):  # seed/revert the number as HPA does; write its status
        assert allowed(rules, c.GROUP, f"{c.SCALER_PLURAL}/{sub}") == {"patch"}
    granted = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    expected = {(k.api_version.rpartition("/")[0], k.plural) for k in CHILD_KINDS} | {
        (c.GROUP, c.PLURAL),
        (c.GROUP, f"{c.PLURAL}/status"),
        ("", "events"),
        ("", "nodes"),
        (c.GROUP, f"{c.SCALER_PLURAL}/scale"),
        (c.GROUP, f"{c.SCALER_PLURAL}/status"),
        ("", "pods"),
    }
    assert granted == expected


# Values the schema must refuse, and a fragment of helm's message.
def webhook_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (vwc,) = by_kind(docs, "ValidatingWebhookConfiguration")
    (hook,) = vwc["webhooks"]
    return dict(hook)


def test_webhook_defaults(helm: Path) -> None:
    docs = template(helm)
    hook = webhook_config(docs)
    # A down operator must not block anything: EPDClusters only, Ignore, a short timeout.
    assert hook["failurePolicy"] == "Ignore"
    assert hook["timeoutSeconds"] == 5
    assert hook["sideEffects"] == "None"
    (rule,) = hook["rules"]
    assert (rule["apiGroups"], rule["resources"]) == ([c.GROUP], [c.PLURAL])
    assert rule["operations"] == ["CREATE", "UPDATE"]
    assert "object.spec != oldObject.spec" in hook["matchConditions"][0]["expression"]
    svc = hook["clientConfig"]["service"]
    assert (svc["name"], svc["path"]) == ("epd-epd-operator-webhook", WEBHOOK_PATH)
    assert "namespaceSelector" not in hook
    (secret,) = [d for d in by_kind(docs, "Secret") if d["type"] == "kubernetes.io/tls"]
    assert secret["data"]["ca.crt"] == hook["clientConfig"]["caBundle"]
    (dep,) = by_kind(docs, "Deployment")
    ctr = dep["spec"]["template"]["spec"]["containers"][0]
    assert "--webhook-port=9443" in ctr["args"]
    assert {"name": "webhook", "containerPort": 9443} in ctr["ports"]
    mounts = {m["name"]: m for m in ctr["volumeMounts"]}
    assert mounts["webhook-tls"]["readOnly"] is True


@pytest.mark.parametrize(
    ("sets", "check"),
    [
        (["replicas=0"], lambda d: by_kind(d, "ValidatingWebhookConfiguration") == []),
        (
            ["webhook.enabled=false"],
            lambda d: (
                by_kind(d, "ValidatingWebhookConfiguration") == []
                and not any(
                    a.startswith("--webhook")
                    for a in by_kind(d, "Deployment")[0]["spec"]["template"]["spec"]["containers"][
                        0
                    ]["args"]
                )
            ),
        ),
        (
            ["webhook.certManager.enabled=true"],
            lambda d: (
                by_kind(d, "Secret") == []
                and len(by_kind(d, "Certificate")) == 1
                and "cert-manager.io/inject-ca-from"
                in by_kind(d, "ValidatingWebhookConfiguration")[0]["metadata"]["annotations"]
            ),
        ),
        (
            ['json:watchNamespaces=["team-a"]'],
            lambda d: (
                webhook_config(d)["namespaceSelector"]["matchExpressions"][0]["values"]
                == ["team-a"]
            ),
        ),
    ],
    ids=["no pod no registration", "disabled", "cert-manager", "namespaced"],
)
def test_webhook_values(helm: Path, sets: list[str], check: Any) -> None:
    assert check(template(helm, *sets))


def test_admission_policy_binds_the_operator_serviceaccount(helm: Path) -> None:
    docs = template(helm)
    (policy,) = by_kind(docs, "ValidatingAdmissionPolicy")
    (binding,) = by_kind(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    (cond,) = policy["spec"]["matchConditions"]
    assert "'system:serviceaccount:epd-system:epd-epd-operator'" in cond["expression"]
    kinds = {
        (r["apiGroups"][0], res)
        for r in policy["spec"]["matchConstraints"]["resourceRules"]
        for res in r["resources"]
    }
    assert kinds == {(k.api_version.rpartition("/")[0], k.plural) for k in CHILD_KINDS}
    volumes = next(
        v["expression"] for v in policy["spec"]["validations"] if "volumes" in v["expression"]
    )
    for source in USER_VOLUME_SOURCES:  # what api.parse lets roles.*.volumes use
        assert f"has(v.{source})" in volumes
    assert "has(v.secret)" not in volumes
    assert (
        by_kind(template(helm, "admissionPolicy.enabled=false"), "ValidatingAdmissionPolicy") == []
    )


BAD_VALUES = [
    (["unknownKey=1"], "unknownKey"),
    (["image.registry=x"], "registry"),
    (["metrics.service.type=NodePort"], "type"),
    (["replicas=2"], "replicas"),
    (["engine.mode=gpu"], "mode"),
    (["workers=0"], "workers"),
    (["logLevel=TRACE"], "logLevel"),
    (['json:watchNamespaces=["Not_A_Namespace"]'], "watchNamespaces"),
    (["resyncSeconds=0"], "resyncSeconds"),
    (["webhook.timeoutSeconds=60"], "timeoutSeconds"),
    (["webhook.unknown=1"], "unknown"),
]


@pytest.mark.parametrize(("sets", "fragment"), BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_schema_rejects(helm: Path, sets: list[str], fragment: str) -> None:
    args = ["template", "epd", str(CHART), "--kube-version", KUBE_VERSION]
    for s in sets:
        args += ["--set-json" if s.startswith("json:") else "--set", s.removeprefix("json:")]
    proc = run_helm(helm, *args, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert fragment in proc.stderr


def test_schema_describes_every_key_and_closes_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path}: not closed"
            assert set(value or {}) <= set(node["properties"]), f"{path}: undeclared keys"
            for key, sub in node["properties"].items():
                assert sub.get("description"), f"{path}.{key}: no description"
                walk(sub, (value or {}).get(key), f"{path}.{key}")

    walk(schema, values, "values")


def test_helm_test_hook(helm: Path) -> None:
    docs = template(helm)
    tests = [
        p
        for p in by_kind(docs, "Pod")
        if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
    ]
    assert len(tests) == 1
    assert "/metrics" in " ".join(tests[0]["spec"]["containers"][0]["command"])
    # NOTES.txt is checked on a real `helm install` in e2e/test_operator.py: `helm install
    # --dry-run` has no --kube-version and this chart requires a recent Kubernetes.
