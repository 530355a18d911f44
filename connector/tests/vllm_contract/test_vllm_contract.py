"""The launcher's argv and environment, checked by vLLM 0.33.0's own code (marker `vllm`).

Every role of every valid launch config in `launch_samples.VALID` goes through vLLM's
`vllm serve` parser, `AsyncEngineArgs`, `ECTransferConfig` / `KVTransferConfig`, the connector
factories, `MooncakeECConfig.from_vllm_config` per DP rank and vLLM's env table
(`vllm_harness.assert_contract` lists what is compared). The negative rows take a valid argv,
change one thing, and show that vLLM itself refuses it at the stage we rely on; where the
launcher has its own rule for the same thing, `rule` names the launch-config field its
LaunchConfigError names (tested in connector/tests/launch/test_launch_argv.py).
All cases share one checker run (one vLLM import) per session.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from connector.tests.launch.launch_samples import POD, config, valid_cases
from connector.tests.vllm_contract.vllm_harness import Case, assert_contract, run_checker
from epd_connector.launch.argv import build_argv
from epd_connector.launch.config import LaunchConfigError

pytestmark = pytest.mark.vllm

Mutation = Callable[[list[str], dict[str, str]], tuple[list[str], dict[str, str]]]


def set_flag(flag: str, *values: str) -> Mutation:
    def mutate(argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        out = list(argv)
        if flag in out:
            i = out.index(flag)
            out[i + 1 : i + 1 + len(values)] = list(values)
        else:
            out += [flag, *values]
        return out, env

    return mutate


def patch_json(flag: str, path: tuple[str, ...], value: Any) -> Mutation:
    def mutate(argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        out = list(argv)
        i = out.index(flag)
        obj = json.loads(out[i + 1])
        target = obj
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
        out[i + 1] = json.dumps(obj)
        return out, env

    return mutate


def rename_flag(old: str, new: str) -> Mutation:
    def mutate(argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        return [new if a == old else a for a in argv], env

    return mutate


def add_env(key: str, value: str) -> Mutation:
    def mutate(argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        return argv, {**env, key: value}

    return mutate


@dataclass(frozen=True)
class Negative:
    id: str
    base: str  # "<config>/<role>" from the valid table
    mutate: Mutation
    stage: str
    fragment: str
    rule: str | None = None  # the launch-config field our own check names for the same rule


EC = "--ec-transfer-config"
KV = "--kv-transfer-config"

NEGATIVE = [
    Negative(
        "producer-tp2",
        "epd-minimal/encoder",
        set_flag("--tensor-parallel-size", "2"),
        "mooncake_ec",
        "producers require tensor_parallel_size=1",
        "roles.encoder.parallelism.tensor",
    ),
    Negative(
        "producer-dp2",
        "epd-minimal/encoder",
        set_flag("--data-parallel-size", "2"),
        "mooncake_ec",
        "producers require data_parallel_size=1",
        "roles.encoder.parallelism.data",
    ),
    Negative(
        "producer-pp2",
        "epd-minimal/encoder",
        set_flag("--pipeline-parallel-size", "2"),
        "mooncake_ec",
        "producers do not support pipeline parallelism",
        "roles.encoder.parallelism.pipeline",
    ),
    Negative(
        "consumer-ports-past-65535",
        "epd-tp2-dp2-consumer/decode",
        patch_json(EC, ("ec_port",), 65533),
        "mooncake_ec",
        "ec_port must be in 1..65535",
        "ec.port",
    ),
    Negative(
        "ec-port-zero",
        "epd-minimal/decode",
        patch_json(EC, ("ec_port",), 0),
        "mooncake_ec",
        "ec_port must be in 1..65535",
    ),
    Negative(
        "ec-role-typo",
        "epd-minimal/decode",
        patch_json(EC, ("ec_role",), "ec_consumers"),
        "parse",
        "ec_role",
    ),
    Negative(
        "ec-unknown-key",
        "epd-minimal/decode",
        patch_json(EC, ("ec_host",), "10.0.0.1"),
        "parse",
        "ec_host",
    ),
    Negative(
        "kv-legacy-kv_ip",
        "e-p-d-mooncake/prefill",
        patch_json(KV, ("kv_ip",), "1.2.3.4"),
        "parse",
        "kv_ip",
    ),
    Negative(
        "ec-upstream-example-name",
        "epd-minimal/decode",
        patch_json(EC, ("ec_connector",), "MooncakeECConnector"),
        "connectors",
        "'MooncakeECConnector' is not registered",
    ),
    Negative(
        "kv-connector-typo",
        "e-p-d-mooncake/decode",
        patch_json(KV, ("kv_connector",), "MooncakeKVConnector"),
        "connectors",
        "'MooncakeKVConnector' is not registered",
    ),
    Negative(
        "push-wait-infinite",
        "epd-minimal/decode",
        patch_json(EC, ("ec_connector_extra_config", "push_wait_timeout_s"), "inf"),
        "mooncake_ec",
        "push_wait_timeout_s > 0",
    ),
    Negative(
        "control-timeout-negative",
        "epd-minimal/encoder",
        patch_json(EC, ("ec_connector_extra_config", "control_timeout_s"), -1),
        "mooncake_ec",
        "control_timeout_s > 0",
    ),
    Negative(
        "cross-encoder-cache-string",
        "epd-minimal/encoder",
        patch_json(EC, ("ec_connector_extra_config", "cross_encoder_cache"), "true"),
        "mooncake_ec",
        "cross_encoder_cache must be a boolean",
    ),
    Negative(
        "cross-encoder-cache-on-ec-both",
        "epd-ec-both/encoder",
        patch_json(EC, ("ec_connector_extra_config", "cross_encoder_cache"), True),
        "mooncake_ec",
        "requires an Encoder-only producer",
    ),
    Negative(
        "ec-buffer-fraction",
        "epd-minimal/decode",
        patch_json(EC, ("ec_buffer_size",), 1.5),
        "mooncake_ec",
        "ec_buffer_size to be a positive integer",
    ),
    Negative(
        "mm-encoder-tp-mode-unknown",
        "epd-everything/encoder",
        set_flag("--mm-encoder-tp-mode", "tensor"),
        "parse",
        "mm-encoder-tp-mode",
    ),
    # argparse accepts unambiguous prefixes; the checker insists on vLLM's full spelling
    Negative(
        "abbreviated-flag",
        "epd-minimal/decode",
        rename_flag("--tensor-parallel-size", "--tensor-parallel"),
        "parse",
        "--tensor-parallel",
    ),
    # vLLM ignores unknown VLLM_* variables; the upstream example scripts use this one
    Negative(
        "env-upstream-example-var",
        "epd-minimal/encoder",
        add_env("VLLM_EC_MOONCAKE_BOOTSTRAP_PORT", "8998"),
        "env",
        "VLLM_EC_MOONCAKE_BOOTSTRAP_PORT",
    ),
]

VALID_CASES = valid_cases()
_BY_ID = {case_id: (cfg, role, pod) for case_id, cfg, role, pod in VALID_CASES}


def _negative_case(neg: Negative) -> Case:
    cfg, role, pod = _BY_ID[neg.base]
    base = Case(neg.base, cfg, role, pod)
    argv, env = neg.mutate(base.argv, base.env)
    assert (argv, env) != (base.argv, base.env), f"{neg.id}: mutation changed nothing"
    return Case(f"negative/{neg.id}", cfg, role, pod, argv=argv, env=env)


@pytest.fixture(scope="session")
def vllm_results() -> dict[str, dict[str, Any]]:
    cases = [Case(case_id, cfg, role, pod) for case_id, cfg, role, pod in VALID_CASES]
    cases += [_negative_case(n) for n in NEGATIVE]
    return run_checker(cases)


@pytest.mark.parametrize(
    ("case_id", "cfg", "role", "pod"), VALID_CASES, ids=[c[0] for c in VALID_CASES]
)
def test_vllm_accepts_and_derives_the_launch_config(
    vllm_results: dict[str, dict[str, Any]], case_id: str, cfg: Any, role: Any, pod: Any
) -> None:
    assert_contract(Case(case_id, cfg, role, pod), vllm_results[case_id])


@pytest.mark.parametrize("neg", NEGATIVE, ids=[n.id for n in NEGATIVE])
def test_vllm_rejects(vllm_results: dict[str, dict[str, Any]], neg: Negative) -> None:
    result = vllm_results[f"negative/{neg.id}"]
    assert not result["ok"], f"vLLM accepted {neg.id}; the check we rely on does not bite"
    assert result["stage"] == neg.stage, result["error"]
    assert neg.fragment in result["error"]


def test_launcher_refuses_what_vllm_refuses() -> None:
    """Where the launcher has its own rule, it refuses the launch config before vLLM would."""
    bad = {
        "roles.encoder.parallelism.tensor": config(
            roles={"encoder": {"parallelism": {"tensor": 2}}}
        ),
        "roles.encoder.parallelism.data": config(roles={"encoder": {"parallelism": {"data": 2}}}),
        "roles.encoder.parallelism.pipeline": config(
            roles={"encoder": {"parallelism": {"pipeline": 2}}}
        ),
        "ec.port": config(
            ec={"port": 65533}, roles={"decode": {"parallelism": {"tensor": 2, "data": 2}}}
        ),
    }
    assert {n.rule for n in NEGATIVE if n.rule} == set(bad)
    for field_name, cfg in bad.items():
        with pytest.raises(LaunchConfigError, match=field_name.replace(".", r"\.")):
            build_argv(cfg, "decode", POD)
