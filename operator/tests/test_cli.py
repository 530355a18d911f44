"""`epdctl`: render (manifests and one pod's argv), crds, and exit code 2 naming the field."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from api_samples import InvalidSample, invalid_samples, load, sample_path, valid_samples

from epd_connector.launch.config import CONFIGMAP_KEY
from epd_connector.launch.config import parse as parse_launch
from epd_operator.api import crdgen
from epd_operator.api.parse import parse
from epd_operator.cli import PREVIEW_UID, main

MINIMAL = sample_path("minimal-epd")
FULL = sample_path("full-epd-rdma")


def run(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    code = main(args, out=out)
    return code, out.getvalue()


def test_render_prints_a_yaml_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EPD_OPERATOR_ENGINE_IMAGE", raising=False)
    code, text = run(["render", "-f", str(MINIMAL), "-n", "team-a"])
    assert code == 0
    docs = list(yaml.safe_load_all(text))
    assert [d["kind"] for d in docs] == [
        "ConfigMap",
        "ConfigMap",  # the routing table
        "Service",
        "Service",  # the role's Service of the current wiring revision
        "StatefulSet",
        "PodDisruptionBudget",
        "EPDRoleScaler",
        "Service",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "EPDRoleScaler",
        "Deployment",
        "Service",
    ]
    assert {d["metadata"]["namespace"] for d in docs} == {"team-a"}
    assert docs[0]["metadata"]["ownerReferences"][0]["uid"] == PREVIEW_UID
    assert parse_launch(docs[0]["data"][CONFIGMAP_KEY]).namespace == "team-a"


def test_render_reads_operator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EPD_OPERATOR_ENGINE_MODE", "sim")
    code, text = run(["render", "-f", str(MINIMAL)])
    sts = next(d for d in yaml.safe_load_all(text) if d["kind"] == "StatefulSet")
    assert code == 0
    assert {"name": "EPD_ENGINE", "value": "sim"} in sts["spec"]["template"]["spec"]["containers"][
        0
    ]["env"]


def test_render_skips_other_kinds_and_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "w"}}
    stream = yaml.safe_dump(pvc) + "---\n" + MINIMAL.read_text()
    monkeypatch.setattr(sys, "stdin", io.StringIO(stream))
    code, text = run(["render", "-f", "-"])
    assert code == 0
    assert "PersistentVolumeClaim" not in text


@pytest.mark.parametrize(
    "sample",
    [s for s in invalid_samples() if s.rejected_by == "operator"][:6]
    + [s for s in invalid_samples() if s.rejected_by == "apiserver"][:6],
    ids=lambda s: s.name,
)
def test_invalid_input_exits_2_naming_the_field(
    sample: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert isinstance(sample, InvalidSample)
    code, text = run(["render", "-f", str(sample.path)])
    err = capsys.readouterr().err
    assert code == 2
    assert text == ""
    assert err.startswith(f"epdctl: {sample.path}: {sample.field}: ")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["render", "-f", "/nonexistent.yaml"], "cannot read /nonexistent.yaml"),
        (["render", "-f", str(MINIMAL), "--pod", "decode/0"], "--pod needs --pod-ip"),
        (["render", "-f", str(MINIMAL), "--pod", "decode", "--pod-ip", "10.0.0.1"], "ROLE/ORDINAL"),
        (
            ["render", "-f", str(MINIMAL), "--pod", "prefill/0", "--pod-ip", "10.0.0.1"],
            "no role 'prefill'",
        ),
        (
            ["render", "-f", str(MINIMAL), "--pod", "decode/1", "--pod-ip", "10.0.0.1"],
            "ordinal 1 does not exist",
        ),
        (["render", "-f", str(MINIMAL), "--pod", "decode/0", "--pod-ip", "nope"], "POD_IP='nope'"),
    ],
)
def test_usage_errors(args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(args)[0] == 2
    assert fragment in capsys.readouterr().err


def test_not_yaml_and_empty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [")
    assert run(["render", "-f", str(bad)])[0] == 2
    assert "not valid YAML" in capsys.readouterr().err
    bad.write_text("")
    assert run(["render", "-f", str(bad)])[0] == 2
    assert "no EPDCluster found" in capsys.readouterr().err


def test_pod_argv_of_the_ec_consumer() -> None:
    code, text = run(["render", "-f", str(FULL), "--pod", "prefill/1", "--pod-ip", "10.1.2.3"])
    assert code == 0
    preview = json.loads(text)
    assert preview["pod"] == "qwen-vl-full-prefill-1"
    argv = preview["argv"]
    assert argv[:3] == ["vllm", "serve", "/models"]
    ec = json.loads(argv[argv.index("--ec-transfer-config") + 1])
    assert ec["ec_role"] == "ec_consumer"
    assert (ec["ec_ip"], ec["ec_port"], ec["ec_buffer_size"]) == ("10.1.2.3", 15000, 4 * 2**30)
    assert ec["ec_connector_extra_config"]["mooncake_protocol"] == "rdma"
    kv = json.loads(argv[argv.index("--kv-transfer-config") + 1])
    assert kv["kv_role"] == "kv_producer"
    assert preview["env"]["VLLM_HOST_IP"] == "10.1.2.3"
    assert preview["env"]["VLLM_MOONCAKE_BOOTSTRAP_PORT"] == "8998"


@pytest.mark.parametrize("sample", valid_samples(), ids=lambda p: p.stem)
def test_every_pod_of_every_sample_launches(sample: Path) -> None:
    # The launcher's own checks accept everything the API accepts (one pod per role).
    cluster = parse(load(sample) | {"metadata": {**load(sample)["metadata"], "uid": "u"}})
    for role in ("encoder", "prefill", "decode"):
        if getattr(cluster.spec.roles, role) is None:
            continue
        code, text = run(
            ["render", "-f", str(sample), "--pod", f"{role}/0", "--pod-ip", "10.0.0.9"]
        )
        assert code == 0, role
        assert json.loads(text)["argv"][:2] == ["vllm", "serve"]


def test_crds(tmp_path: Path) -> None:
    code, text = run(["crds"])
    assert code == 0
    assert text == crdgen.render_yaml() + crdgen.render_scaler_yaml()
    code, text = run(["crds", "--write", "--root", str(tmp_path)])
    assert code == 0
    assert text.count("wrote ") == 4
    assert (
        tmp_path / "crds" / "epd-operator.io_epdclusters.yaml"
    ).read_text() == crdgen.render_yaml()


@pytest.mark.process
def test_console_script() -> None:
    exe = Path(sys.executable).parent / "epdctl"
    done = subprocess.run(
        [str(exe), "render", "-f", str(MINIMAL)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("---\napiVersion: v1\nkind: ConfigMap")
    bad = invalid_samples()[0].path
    done = subprocess.run(
        [str(exe), "render", "-f", str(bad)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert "epdctl: " in done.stderr
