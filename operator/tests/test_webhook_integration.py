"""The validating admission webhook on the real kube-apiserver: `kubectl apply` refuses every
spec the operator would mark SpecInvalid (each operator-only invalid sample, every rule-table
row, a fuzzed slice), with the field path; a down operator blocks nothing.

The operator runs as a local process serving the webhook with a throwaway certificate, at the
address the cluster's apiserver reaches this host on (the loopback on kwok; on kind, the node
network's gateway); the webhook configuration is the chart's own (rendered by helm), with its
clientConfig pointed at that URL and its scope narrowed to this test's namespace so other
tests on the shared cluster are not affected.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from api_samples import InvalidSample, invalid_samples, sample
from spec_fuzz import generate, judge

from connector.tests import rule_tables as t
from e2e.operator_proc import OperatorProcess, free_port
from e2e.paths import REPO
from e2e.providers import Cluster, bin_dir, host_address
from e2e.webhook_certs import make_certs
from epd_operator.api import constants as c
from epd_operator.api import crdgen
from epd_operator.api.admission import WEBHOOK_PATH

pytestmark = pytest.mark.integration

NS = "epd-webhook"
CHART = REPO / "charts" / "epd-operator"
FUZZ_SEED = 20
FUZZ_COUNT = 40
FUZZ_APPLY = 12  # admitted fuzzed specs actually served by the operator (kwok GPUs are finite)


def chart_webhook_configuration() -> dict[str, Any]:
    helm = bin_dir(build=False) / "helm"
    out = subprocess.run(
        [
            str(helm),
            "template",
            "epd",
            str(CHART),
            "--namespace",
            "epd-system",
            "--set",
            "replicas=1",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    (vwc,) = [
        d for d in yaml.safe_load_all(out) if d and d["kind"] == "ValidatingWebhookConfiguration"
    ]
    return dict(vwc)


@pytest.fixture(scope="module")
def webhook(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("webhook")
    crd = crdgen.targets(crdgen.repo_root())[0]
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=epd-webhook-tests",
        "-f",
        str(crd),
    )
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{c.CRD_NAME}", "--timeout=60s")
    cluster.kubectl("create", "namespace", NS)
    host = host_address(cluster)
    certs = make_certs(tmp / "certs", ip=host)
    port = free_port()
    op = OperatorProcess(
        cluster.kubeconfig,
        [NS],
        30,
        tmp / "operator.log",
        extra_args=[f"--webhook-port={port}", f"--webhook-cert-dir={certs}"],
        bind_address=host if host == "127.0.0.1" else "0.0.0.0",
    )
    vwc = chart_webhook_configuration()
    vwc["metadata"] = {"name": f"epd-webhook-test-{port}"}
    (hook,) = vwc["webhooks"]
    hook["clientConfig"] = {
        "url": f"https://{host}:{port}{WEBHOOK_PATH}",
        "caBundle": base64.b64encode((certs / "ca.crt").read_bytes()).decode(),
    }
    hook["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": NS}}
    op.start()
    try:
        op.wait_healthy()
        cluster.kubectl("apply", "-f", "-", input=json.dumps(vwc))
        wait_until_refused(cluster, op)
        yield cluster, op
    finally:
        op.stop()
        cluster.kubectl(
            "delete", "validatingwebhookconfiguration", vwc["metadata"]["name"], check=False
        )
        cluster.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def apply(cluster: Cluster, obj: dict[str, Any], dry_run: bool = False) -> Any:
    args = ["apply", "-n", NS, "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    return cluster.kubectl(*args, input=json.dumps(obj), check=False)


def operator_only() -> list[InvalidSample]:
    return [s for s in invalid_samples() if s.rejected_by == "operator"]


def wait_until_refused(cluster: Cluster, op: OperatorProcess, timeout: float = 60) -> None:
    """The apiserver picks up a new webhook configuration within a moment; wait for it."""
    probe = operator_only()[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if apply(cluster, probe.obj(), dry_run=True).returncode != 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"the webhook never refused {probe.name}:\n{op.log_tail()}")


def test_enough_operator_only_samples() -> None:
    assert len(operator_only()) >= 24


@pytest.mark.parametrize("sample", operator_only(), ids=lambda s: s.name)
def test_kubectl_apply_refuses_every_operator_only_sample(
    webhook: Any, sample: InvalidSample
) -> None:
    cluster, _ = webhook
    done = apply(cluster, sample.obj())
    assert done.returncode != 0, f"{sample.name} was admitted"
    assert "denied the request" in done.stderr
    assert sample.field in done.stderr
    assert sample.expect in done.stderr
    assert (
        cluster.kubectl(
            "get",
            "epdc",
            sample.obj()["metadata"]["name"],
            "-n",
            NS,
            "--ignore-not-found",
            "-o",
            "name",
        ).stdout.strip()
        == ""
    )


BAD = t.bad_specs()


@pytest.mark.parametrize("row", BAD, ids=[f"{b[0]}/{b[1]}" for b in BAD])
def test_kubectl_apply_refuses_every_rule_table_row(
    webhook: Any, row: tuple[str, str, dict[str, Any], str, str]
) -> None:
    cluster, _ = webhook
    rule, rid, spec, path, _ = row
    obj = {
        "apiVersion": c.API_VERSION,
        "kind": c.KIND,
        "metadata": {"name": "rules"},
        "spec": copy.deepcopy(spec),
    }
    done = apply(cluster, obj, dry_run=True)
    assert done.returncode != 0, f"{rule}/{rid} was admitted"
    # The CRD schema refuses some rows before the webhook sees them; both name the field.
    assert path in done.stderr or path.removeprefix("spec.") in done.stderr, done.stderr


def test_fuzzed_specs_get_the_same_verdict_from_the_apiserver(webhook: Any) -> None:
    cluster, _ = webhook
    counts: Counter[str] = Counter()
    disagreements = []
    for obj in generate(FUZZ_SEED, FUZZ_COUNT):
        counts["generated"] += 1
        local = judge(obj)
        obj["metadata"].pop("uid")
        done = apply(cluster, obj, dry_run=True)
        admitted = done.returncode == 0
        counts["admitted" if admitted else "refused at admission"] += 1
        if admitted != local.admitted:
            disagreements.append(
                f"{obj['metadata']['name']}: apiserver "
                f"{'admitted' if admitted else 'refused'} ({done.stderr.strip()}"
                f"), parse said {local.refusal or 'ok'}"
            )
        elif not admitted and "spec." not in done.stderr and "metadata." not in done.stderr:
            disagreements.append(f"refusal names no field: {done.stderr.strip()}")
    assert not disagreements, "\n".join(disagreements)
    assert counts["admitted"]
    assert counts["refused at admission"]
    # The admitted ones for real: the operator (watching this namespace) serves them; none
    # may turn out SpecInvalid, and the ones that become Ready are the ones counted.
    admitted = [o for o in generate(FUZZ_SEED, FUZZ_COUNT) if judge(o).admitted][:FUZZ_APPLY]
    for obj in admitted:
        assert judge(obj).problems == []  # every pod of it can launch: not a bad spec
        obj["metadata"].pop("uid")
        assert apply(cluster, obj).returncode == 0
    names = [o["metadata"]["name"] for o in admitted]
    try:
        ready = settle(cluster, names)
    finally:
        cluster.kubectl("delete", "epdc", *names, "-n", NS, "--wait=false", check=False)
    counts["Ready"] = len(ready)
    print(
        f"\nfuzz at the apiserver, seed {FUZZ_SEED}: {dict(counts)} "
        f"(Ready counted among the first {len(admitted)} admitted)"
    )


def settle(cluster: Cluster, names: list[str], timeout: float = 120) -> set[str]:
    """Wait until the operator has judged every object, then until no more turn Ready (or the
    timeout); return the Ready ones. Fails on any SpecInvalid: admission and the operator
    must agree."""
    deadline = time.monotonic() + timeout
    ready: set[str] = set()
    stable = 0
    while time.monotonic() < deadline and stable < 10:
        items = json.loads(cluster.kubectl("get", "epdc", "-n", NS, "-o", "json").stdout)["items"]
        seen = {o["metadata"]["name"]: o for o in items if o["metadata"]["name"] in names}
        judged = 0
        now_ready = set()
        for name, obj in seen.items():
            st = obj.get("status") or {}
            if st.get("observedGeneration") != obj["metadata"]["generation"]:
                continue
            judged += 1
            conds = {x["type"]: x for x in st.get("conditions") or []}
            assert conds["Degraded"]["reason"] != c.REASON_SPEC_INVALID, (name, conds)
            if conds["Ready"]["status"] == "True":
                now_ready.add(name)
        stable = stable + 1 if judged == len(names) and now_ready == ready else 0
        ready = now_ready
        time.sleep(0.5)
    return ready


def test_updates_that_keep_the_spec_pass_and_a_down_operator_blocks_nothing(
    webhook: Any,
) -> None:
    cluster, op = webhook
    good = sample("minimal-epd")
    good["metadata"] = {"name": "while-up"}
    assert apply(cluster, good).returncode == 0
    # A spec change that breaks a rule is refused on UPDATE too.
    bad = copy.deepcopy(good)
    bad["spec"]["roles"]["decode"]["extraArgs"] = ["-tp", "2"]
    done = apply(cluster, bad)
    assert done.returncode != 0
    assert "extraArgs[0]" in done.stderr
    op.stop()
    try:
        # failurePolicy Ignore: with the operator down, EPDCluster writes go through (after
        # at most the webhook's timeout), and nothing else is sent to the webhook at all.
        down = copy.deepcopy(bad)
        down["metadata"] = {"name": "while-down"}
        done = apply(cluster, down)
        assert done.returncode == 0, done.stderr
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "unrelated"},
            "data": {"a": "b"},
        }
        assert apply(cluster, cm).returncode == 0
        # Relabelling the invalid object admitted meanwhile is never blocked.
        cluster.kubectl("label", "epdc", "while-down", "-n", NS, "team=a")
    finally:
        op.start()
        op.wait_healthy()
    wait_until_refused(cluster, op)
    assert (
        cluster.kubectl(
            "label", "epdc", "while-down", "-n", NS, "team=b", "--overwrite", check=False
        ).returncode
        == 0
    )
    # The operator, back, reports what slipped through as Degraded/SpecInvalid.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        obj = json.loads(
            cluster.kubectl("get", "epdc", "while-down", "-n", NS, "-o", "json").stdout
        )
        conds = {x["type"]: x for x in (obj.get("status") or {}).get("conditions") or []}
        if conds.get("Degraded", {}).get("reason") == c.REASON_SPEC_INVALID:
            assert "extraArgs[0]" in conds["Degraded"]["message"]
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"while-down never reported SpecInvalid:\n{op.log_tail()}")
    cluster.kubectl("delete", "epdc", "while-up", "while-down", "-n", NS, "--wait=false")


def test_helm_certificate_matches_the_ca_bundle(tmp_path: Path) -> None:
    # The chart's self-signed mode: the serving certificate verifies against the caBundle
    # it puts into the webhook configuration, for the Service's DNS name.
    helm = bin_dir(build=False) / "helm"
    out = subprocess.run(
        [str(helm), "template", "epd", str(CHART), "--namespace", "ops", "--set", "replicas=1"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    (vwc,) = [d for d in docs if d["kind"] == "ValidatingWebhookConfiguration"]
    ca = tmp_path / "ca.crt"
    crt = tmp_path / "tls.crt"
    ca.write_bytes(base64.b64decode(vwc["webhooks"][0]["clientConfig"]["caBundle"]))
    crt.write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), str(crt)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    sans = subprocess.run(
        ["openssl", "x509", "-in", str(crt), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "DNS:epd-epd-operator-webhook.ops.svc" in sans
