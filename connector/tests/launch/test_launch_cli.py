"""`epd-engine` end to end as a process: dry run, exec, and exit code 2 for bad inputs.

The exec test puts a stand-in `vllm` executable first on PATH (vLLM itself cannot serve on a
machine without a GPU; its argv is checked by vLLM's parser in tests/vllm_contract/): it records
its argv, environment and PID, which proves `epd-engine` replaced itself with it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from connector.tests.launch.launch_samples import VALID
from epd_connector.launch.argv import build_argv, build_env
from epd_connector.launch.pod import PodContext

EPD_ENGINE = shutil.which("epd-engine", path=str(Path(sys.executable).parent))
CONFIG = VALID["e-p-d-mooncake"]


@pytest.fixture
def pod_env(tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "launch.json"
    cfg.write_text(CONFIG.to_json(), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EPD_", "POD_", "VLLM_"))}
    env.update(
        EPD_LAUNCH_CONFIG=str(cfg),
        EPD_ROLE="prefill",
        POD_IP="10.244.0.9",
        POD_NAME="demo-prefill-2",
        POD_NAMESPACE="llm",
    )
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    assert EPD_ENGINE is not None, "epd-engine is not installed in the test virtualenv"
    return subprocess.run(
        [EPD_ENGINE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_dry_run_prints_the_exec_plan(pod_env: dict[str, str]) -> None:
    done = run(pod_env, "--dry-run")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    pod = PodContext.from_env(pod_env)
    assert plan == {
        "engine": "vllm",
        "config": pod_env["EPD_LAUNCH_CONFIG"],
        "argv": build_argv(CONFIG, "prefill", pod),
        "env": build_env(CONFIG, "prefill", pod),
        "files": {},
    }
    assert plan["env"]["VLLM_HOST_IP"] == "10.244.0.9"
    assert json.loads(plan["argv"][-1])["engine_id"] == "demo-prefill-2"


def test_sim_engine_runs_the_simulator_module(pod_env: dict[str, str]) -> None:
    done = run({**pod_env, "EPD_ENGINE": "sim"}, "--dry-run")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["engine"] == "sim"
    assert plan["argv"][1:] == ["-m", "epd_connector.sim"]
    assert Path(plan["argv"][0]).resolve() == Path(sys.executable).resolve()
    assert importlib.util.find_spec("epd_connector.sim.__main__") is not None
    assert plan["env"]["VLLM_HOST_IP"] == "10.244.0.9"  # same environment as under vLLM


def test_config_option_overrides_the_variable(pod_env: dict[str, str], tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(VALID["e-p-d-nixl"].to_json(), encoding="utf-8")
    done = run(
        {**pod_env, "EPD_LAUNCH_CONFIG": "/nonexistent"}, "--config", str(other), "--dry-run"
    )
    assert done.returncode == 0, done.stderr
    assert "NixlConnector" in json.loads(done.stdout)["argv"][-1]


STAND_IN = """#!/bin/sh
{ echo "$$"; for a in "$@"; do printf '%s\\n' "$a"; done; } > "$RECORD.argv"
env > "$RECORD.env"
"""


def test_execs_vllm_in_place(pod_env: dict[str, str], tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stand_in = bindir / "vllm"
    stand_in.write_text(STAND_IN, encoding="utf-8")
    stand_in.chmod(0o755)
    record = tmp_path / "record"
    env = {
        **pod_env,
        "PATH": f"{bindir}:{pod_env['PATH']}",
        "RECORD": str(record),
        "VLLM_PORT": "tcp://10.96.0.12:8000",  # a Kubernetes service link for a Service `vllm`
        "VLLM_HOST_IP": "1.2.3.4",  # stale value: the pod IP wins
    }
    assert EPD_ENGINE is not None
    proc = subprocess.Popen([EPD_ENGINE], env=env, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    pid, *argv = record.with_suffix(".argv").read_text(encoding="utf-8").splitlines()
    assert int(pid) == proc.pid  # exec, not a child process
    pod = PodContext.from_env(pod_env)
    assert ["vllm", *argv] == build_argv(CONFIG, "prefill", pod)
    seen = dict(
        line.split("=", 1)
        for line in record.with_suffix(".env").read_text().splitlines()
        if "=" in line
    )
    assert seen["VLLM_HOST_IP"] == "10.244.0.9"
    assert seen["VLLM_MOONCAKE_BOOTSTRAP_PORT"] == "8998"
    assert "VLLM_PORT" not in seen
    assert seen["POD_NAME"] == "demo-prefill-2"  # the pod's own environment is passed on
    assert "exec vllm serve" in stderr  # the argv is logged before exec


def test_store_config_is_written_before_exec(pod_env: dict[str, str], tmp_path: Path) -> None:
    cfg = tmp_path / "store-launch.json"
    cfg.write_text(VALID["epd-shared-store"].to_json(), encoding="utf-8")
    run_dir = tmp_path / "run"
    env = {
        **pod_env,
        "EPD_LAUNCH_CONFIG": str(cfg),
        "EPD_ROLE": "encoder",
        "POD_NAME": "demo-encoder-1",
        "EPD_RUN_DIR": str(run_dir),
    }
    dry = run(env, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    path = plan["env"]["MOONCAKE_CONFIG_PATH"]
    assert path == str(run_dir / "epd-demo-encoder-1-store.json")
    assert list(plan["files"]) == [path]
    assert not run_dir.exists()  # a dry run writes nothing
    # Exec fails (no engine on PATH) only after the file vLLM will read is in place.
    done = run({**env, "PATH": str(tmp_path)})
    assert done.returncode == 127, done.stderr
    written = json.loads(Path(path).read_text(encoding="utf-8"))
    assert written == json.loads(plan["files"][path])
    assert written["master_server_address"] == "demo-store.llm.svc:50051"


def test_missing_engine_executable_exits_127(pod_env: dict[str, str], tmp_path: Path) -> None:
    done = run({**pod_env, "PATH": str(tmp_path)})
    assert done.returncode == 127
    assert "cannot exec 'vllm'" in done.stderr


BAD = [
    ({"EPD_LAUNCH_CONFIG": "/nonexistent/launch.json"}, None,
     "cannot read launch config /nonexistent/launch.json"),
    ({}, "{not json", "not valid JSON"),
    ({}, '{"schema_version": "epd.launch/v1"}', "cluster: Field required"),
    ({}, "CONFIG_WITH_TYPO", "roles.decode.replicaz: Extra inputs are not permitted"),
    ({"POD_IP": ""}, None, "POD_IP: required environment variable is missing or empty"),
    ({"POD_NAME": "prefill"}, None, "POD_NAME='prefill': not a StatefulSet pod name"),
    ({"EPD_ROLE": "router"}, None, "EPD_ROLE='router': must be one of"),
    ({"EPD_ENGINE": "trtllm"}, None, "EPD_ENGINE='trtllm': must be one of vllm, sim"),
    ({"EPD_ROLE": "prefill"}, "E_PD_CONFIG", "roles.prefill: this cluster has no prefill role"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "content", "message"), BAD, ids=[b[2] for b in BAD])
def test_bad_input_exits_2_naming_the_key(
    pod_env: dict[str, str], change: dict[str, str], content: str | None, message: str
) -> None:
    if content is not None:
        if content == "CONFIG_WITH_TYPO":
            data = json.loads(CONFIG.to_json())
            data["roles"]["decode"]["replicaz"] = 2
            content = json.dumps(data)
        elif content == "E_PD_CONFIG":
            content = VALID["epd-minimal"].to_json()
        Path(pod_env["EPD_LAUNCH_CONFIG"]).write_text(content, encoding="utf-8")
    for mode in ((), ("--dry-run",)):
        done = run({**pod_env, **change}, *mode)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("epd-engine: ")
        assert message in done.stderr
        assert done.stdout == ""
