"""The CRD on a real kube-apiserver: every valid sample is admitted (and the apiserver's
defaults equal the models' defaults), every invalid sample is rejected by the apiserver
(schema/CEL) or admitted and then rejected by `epd_operator.api.parse`, each naming its field.

Uses the session `cluster` fixture (kwok binary runtime: a real kube-apiserver + etcd).
Objects are created with server-side dry run: full admission, defaulting and validation,
nothing stored, nothing to clean up.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from api_samples import InvalidSample, invalid_samples, load, valid_samples

from e2e.providers import Cluster
from epd_operator.api import constants as c
from epd_operator.api import crdgen
from epd_operator.api.parse import SpecError, parse

pytestmark = pytest.mark.integration

NAMESPACE = "epd-api-samples"


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Cluster:
    crd = crdgen.targets(crdgen.repo_root())[0]
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=epd-api-tests",
        "-f",
        str(crd),
    )
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{c.CRD_NAME}", "--timeout=60s")
    ns = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    cluster.kubectl("apply", "-f", "-", input=ns)
    return cluster


def dry_run_create(api: Any, text: str) -> Any:
    return api.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        NAMESPACE,
        "-o",
        "json",
        "-f",
        "-",
        input=text,
        check=False,
    )


@pytest.mark.parametrize("sample", valid_samples(), ids=lambda p: p.stem)
def test_valid_sample_is_admitted_with_the_models_defaults(api: Any, sample: Path) -> None:
    done = dry_run_create(api, sample.read_text())
    assert done.returncode == 0, done.stderr
    stored = json.loads(done.stdout)
    local = parse(load(sample))
    assert parse(stored).spec == local.spec
    # The apiserver filled in the defaults the models declare, e.g. the EC control port.
    assert stored["spec"]["ecTransfer"]["controlPort"] == local.spec.ec_transfer.control_port
    assert stored["spec"]["roles"]["decode"]["parallelism"]["tensor"] >= 1


@pytest.mark.parametrize(
    "sample", [s for s in invalid_samples() if s.rejected_by == "apiserver"], ids=lambda s: s.name
)
def test_apiserver_rejects(api: Any, sample: InvalidSample) -> None:
    done = dry_run_create(api, sample.text())
    assert done.returncode != 0, f"{sample.name} was admitted"
    assert sample.expect in done.stderr
    assert sample.field in done.stderr


@pytest.mark.parametrize(
    "sample", [s for s in invalid_samples() if s.rejected_by == "operator"], ids=lambda s: s.name
)
def test_admitted_then_rejected_by_the_operator(api: Any, sample: InvalidSample) -> None:
    done = dry_run_create(api, sample.text())
    assert done.returncode == 0, f"the apiserver rejected {sample.name}: {done.stderr}"
    with pytest.raises(SpecError) as info:
        parse(json.loads(done.stdout))
    assert info.value.path == sample.field
    assert sample.expect in info.value.message


def _retry(api: Any, args: list[str], want: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        done = api.kubectl(*args, check=False)
        if done.returncode == 0 and want in done.stdout:
            return str(done.stdout)
        if time.monotonic() > deadline:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stdout}{done.stderr}")
        time.sleep(0.5)


def test_kubectl_explain_shows_descriptions(api: Any) -> None:
    # The OpenAPI document is published shortly after the CRD is Established.
    out = _retry(api, ["explain", "epdc.spec.roles.encoder"], "parallelism")
    assert "Encoder pods" in out
    assert "Number of pods (at least 1" in out
    out = _retry(api, ["explain", "epdc.spec.ecTransfer.controlPort"], "ec_port")
    assert "controlPort + d*tensor + r" in out


def test_printer_columns_and_status_subresource(api: Any) -> None:
    sample = Path(valid_samples()[0])
    api.kubectl("apply", "-n", NAMESPACE, "-f", str(sample))
    name = load(sample)["metadata"]["name"]
    try:
        status = {
            "status": {
                "observedGeneration": 1,
                "phase": "Progressing",
                "roles": {"encoder": {"replicas": 1, "readyReplicas": 0, "ready": "0/1"}},
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "RolloutInProgress",
                        "message": "",
                        "lastTransitionTime": "2026-11-23T00:00:00Z",
                    }
                ],
            }
        }
        api.kubectl(
            "patch",
            f"epdc/{name}",
            "-n",
            NAMESPACE,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(status),
        )
        out = api.kubectl("get", "epdc", name, "-n", NAMESPACE).stdout
        header, row = out.splitlines()[:2]
        assert header.split() == ["NAME", "READY", "PHASE", "ENCODER", "PREFILL", "DECODE", "AGE"]
        assert row.split()[:4] == [name, "False", "Progressing", "0/1"]
        stored = api.get_json(f"epdc/{name}", "-n", NAMESPACE)
        assert stored["status"]["roles"]["encoder"]["readyReplicas"] == 0
    finally:
        api.kubectl("delete", f"epdc/{name}", "-n", NAMESPACE, "--wait=false", check=False)
