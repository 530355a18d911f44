"""Runs launcher output through vLLM 0.33.0 (via `vllm_checker.py` in the cached vLLM env) and
compares what vLLM derived with what the launch config asked for.

Shared by the contract tests here and by anyone who wants the same check for other launch
configs (e.g. the operator's rendered samples): build `Case`s, call `run_checker` once with all
of them (one vLLM import, ~15 s), then `assert_contract` per case.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from e2e.paths import REPO
from epd_connector.launch.argv import build_argv, build_env, effective_kv
from epd_connector.launch.config import LaunchConfig, RoleName
from epd_connector.launch.pod import PodContext
from epd_connector.launch.wiring import consumer_zmq, ec_consumer_role, ec_role, kv_role

CHECKER = Path(__file__).with_name("vllm_checker.py")
INSTALLER = REPO / "hack" / "install-vllm-env.sh"
STAMP = ".epd-complete"


@dataclass
class Case:
    """One pod to check: its launch config and identity, or a hand-made argv (negative rows)."""

    id: str
    config: LaunchConfig
    role: RoleName
    pod: PodContext
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.argv:
            self.argv = build_argv(self.config, self.role, self.pod)
            self.env = build_env(self.config, self.role, self.pod)

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "argv": self.argv, "env": self.env}


def vllm_python() -> Path:
    """The cached vLLM env's python; FAILS (never skips) when the env was not built."""
    located = subprocess.run(
        [str(INSTALLER), "--print"], capture_output=True, text=True, check=False
    )
    if located.returncode != 0:
        pytest.fail(f"{INSTALLER} --print failed: {located.stderr.strip()}")
    env_dir = Path(located.stdout.strip())
    python = env_dir / "bin" / "python"
    if not (env_dir / STAMP).is_file() or not python.exists():
        pytest.fail(
            f"the vLLM 0.33.0 test environment is missing ({env_dir}); "
            "run hack/bootstrap.sh (or hack/install-vllm-env.sh) first"
        )
    return python


def run_checker(cases: list[Case], timeout: float = 600) -> dict[str, dict[str, Any]]:
    """Results of vLLM's own checks, by case id (see vllm_checker.py for the stages)."""
    python = vllm_python()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(VLLM_TARGET_DEVICE="cpu", HF_HUB_DISABLE_TELEMETRY="1", VLLM_NO_USAGE_STATS="1")
    proc = subprocess.run(
        [str(python), str(CHECKER)],
        input=json.dumps({"cases": [c.payload() for c in cases]}),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"vllm_checker exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    answer = json.loads(proc.stdout)
    assert answer["vllm_version"] == "0.33.0", answer["vllm_version"]
    return {r["id"]: r for r in answer["results"]}


def assert_contract(case: Case, result: dict[str, Any]) -> None:
    """vLLM accepted the argv and derived exactly what the launch config asked for."""
    assert result["ok"], f"vLLM rejected {case.id} at {result['stage']}: {result['error']}"
    f = result["facts"]
    config, role, pod = case.config, case.role, case.pod
    launch = config.role(role)
    model = config.model
    par = launch.parallelism

    assert f["unknown_flags"] == []
    assert f["model"] == (model.path or model.name)
    assert f["served_model_name"] == [model.served_model_name or model.name]
    assert f["revision"] == model.revision
    if model.tokenizer is not None:
        assert f["tokenizer"] == model.tokenizer
    assert (f["host"], f["port"]) == ("0.0.0.0", launch.port)
    assert (
        f["tensor_parallel_size"],
        f["pipeline_parallel_size"],
        f["data_parallel_size"],
    ) == (par.tensor, par.pipeline, par.data)
    if launch.max_model_len is not None:
        assert f["max_model_len"] == launch.max_model_len
    if launch.gpu_memory_utilization is not None:
        assert f["gpu_memory_utilization"] == launch.gpu_memory_utilization

    cache = config.encoder_cache
    if role in ("encoder", ec_consumer_role(config)):
        for name in ("max_num_batched_tokens", "mm_processor_cache_gb", "mm_encoder_tp_mode"):
            if getattr(cache, name) is not None:
                assert f[name] == getattr(cache, name), name
    if cache.limit_mm_per_prompt is not None:
        assert f["limit_mm_per_prompt"] == cache.limit_mm_per_prompt
    if config.media_io_kwargs is not None:
        assert f["media_io_kwargs"] == config.media_io_kwargs
    if config.mm_processor_kwargs is not None:
        assert f["mm_processor_kwargs"] == config.mm_processor_kwargs

    role_ec = ec_role(config, role)
    # encoder-only exactly for a pure producer, as vLLM itself resolves it
    assert f["mm_encoder_only_resolved"] is (role_ec == "ec_producer")
    _assert_ec(case, f, role_ec)
    _assert_kv(case, f)

    env = f["env"]
    assert env["get_ip"] == pod.ip  # Mooncake data plane / KV side channels advertise this
    role_kv = kv_role(config, role)
    values = env["values"]
    if role_kv is not None:
        kv = effective_kv(config)
        if kv.connector == "NixlConnector":
            assert values["VLLM_NIXL_SIDE_CHANNEL_HOST"] == pod.ip
            assert values["VLLM_NIXL_SIDE_CHANNEL_PORT"] == kv.side_channel_port
        elif role_kv == "kv_producer":
            assert values["VLLM_MOONCAKE_BOOTSTRAP_PORT"] == kv.bootstrap_port


def _assert_ec(case: Case, f: dict[str, Any], role_ec: str | None) -> None:
    config, role, pod = case.config, case.role, case.pod
    ec = f["ec"]
    if role_ec is None:
        assert ec is None
        assert f["mooncake_ec"] is None
        return
    assert f["ec_connector_registered"] is True
    assert ec["ec_connector"] == config.ec.connector
    assert ec["ec_role"] == role_ec
    assert ec["engine_id"] == f"{config.cluster}-{role}-{pod.ordinal}"
    consumes = role_ec in ("ec_consumer", "ec_both")
    assert ec["is_ec_consumer"] is consumes
    assert ec["is_ec_producer"] is (role_ec in ("ec_producer", "ec_both"))
    if config.ec.connector == "ECExampleConnector":
        assert ec["shared_storage_path"] == config.ec.shared_storage_path
        assert f["mooncake_ec"] is None
        return
    ranks = f["mooncake_ec"]
    par = config.role(role).parallelism
    assert [r["dp_index"] for r in ranks] == list(range(par.data))
    for rank in ranks:
        assert rank["protocol"] == config.ec.protocol
        assert rank["pool_size"] == config.ec.buffer_size
        timeout = config.ec.control_timeout_s
        assert rank["control_timeout_ms"] == (
            30_000 if timeout is None else max(1, math.ceil(timeout * 1000))
        )
        push = config.ec.push_wait_timeout_s
        assert rank["push_wait_timeout_s"] == (60.0 if push is None else push)
        if consumes:
            # the address the consumer binds is the one the router hands to producers
            assert rank["control_host"] == pod.ip
            if role_ec == "ec_consumer":
                assert rank["control_addr"] == consumer_zmq(config, pod.ip, rank["dp_index"])


def _assert_kv(case: Case, f: dict[str, Any]) -> None:
    config, role, pod = case.config, case.role, case.pod
    role_kv = kv_role(config, role)
    kv = f["kv"]
    if role_kv is None:
        assert kv is None
        return
    want = effective_kv(config)
    assert f["kv_connector_registered"] is True
    assert kv["kv_connector"] == want.connector
    assert kv["kv_role"] == role_kv
    assert kv["engine_id"] == f"{config.cluster}-{role}-{pod.ordinal}"
    if want.connector == "MooncakeConnector":
        assert kv["extra"]["mooncake_protocol"] == want.protocol
    for key, value in want.extra_config.items():
        assert kv["extra"][key] == value
