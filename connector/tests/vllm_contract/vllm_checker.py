"""Runs launcher output through vLLM 0.33.0's own code; executed by the cached vLLM env's python.

Not a test module: `test_vllm_contract.py` starts it once per session as
`<vllm env>/bin/python vllm_checker.py`, writes `{"cases": [{"id", "argv", "env"}, ...]}` to
stdin and reads `{"vllm_version", "results": [...]}` from stdout. For each case it goes as far
as vLLM's code goes on a CPU-only machine without model files, stage by stage, and reports
what vLLM derived (or where and why it refused), so the tests assert facts, not our guesses:

1. `parse`       the argv, with `vllm serve` built exactly as `vllm/entrypoints/cli/main.py`
                 builds it (`ServeSubcommand.subparser_init` -> `make_arg_parser`), plus a check
                 that every flag is spelled in full (argparse would accept a prefix);
2. `validate`    `ServeSubcommand.validate` (validate_parsed_serve_args);
3. `engine_args` `AsyncEngineArgs.from_cli_args` after the `model_tag` -> `model` step of
                 `ServeSubcommand.cmd` (this constructs ECTransferConfig/KVTransferConfig);
4. `mm_config`   vLLM's `MultiModalConfig` from the parsed values, then
                 `VllmConfig._resolve_mm_encoder_only` (encoder-only forcing) on it;
5. `connectors`  the EC/KV connector names against vLLM's connector factories' registries;
6. `mooncake_ec` `MooncakeECConfig.from_vllm_config` for every DP rank of the pod, with the
                 real ParallelConfig / ECTransferConfig / MultiModalConfig; only the model-
                 dependent part of VllmConfig (`use_v2_model_runner`, `lora_config`) is a stub;
7. `env`         each variable against vLLM's `envs.environment_variables` (unknown names are
                 silently ignored by vLLM) and its value as vLLM reads it, plus `get_ip()`.
Needs VLLM_TARGET_DEVICE=cpu (vLLM cannot infer a device on a machine without a GPU).
"""

# vLLM is imported inside functions on purpose: after the VLLM_TARGET_DEVICE check, and with
# stdout redirected (stdout carries the JSON answer).
# ruff: noqa: PLC0415

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
from types import SimpleNamespace
from typing import Any


class StageError(Exception):
    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


def _run_stage(stage: str, fn: Any, *args: Any) -> Any:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return fn(*args)
    except SystemExit as exc:  # argparse reports errors by exiting 2
        raise StageError(stage, f"exit {exc.code}: {err.getvalue().strip()[-2000:]}") from None
    except StageError:
        raise
    except Exception as exc:
        raise StageError(stage, f"{type(exc).__name__}: {exc}") from None


def _build_serve_parser() -> tuple[Any, Any, Any]:
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    cmd = ServeSubcommand()
    serve_parser = cmd.subparser_init(subparsers)
    serve_parser.set_defaults(dispatch_function=cmd.cmd)
    return parser, serve_parser, cmd


def _flag_names(argv: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("--")]


def _check_case(case: dict[str, Any], parser: Any, serve_parser: Any, cmd: Any) -> dict[str, Any]:
    from vllm.config import ParallelConfig, VllmConfig
    from vllm.config.multimodal import MultiModalConfig
    from vllm.distributed.ec_transfer.ec_connector.factory import ECConnectorFactory
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
    from vllm.engine.arg_utils import AsyncEngineArgs

    argv: list[str] = case["argv"]
    facts: dict[str, Any] = {}
    if argv[:2] != ["vllm", "serve"]:
        raise StageError("parse", f"argv must start with 'vllm serve', got {argv[:2]}")

    known = set(serve_parser._option_string_actions)
    facts["unknown_flags"] = [
        f for f in _flag_names(argv[2:]) if f not in known and f.split(".", 1)[0] not in known
    ]
    if facts["unknown_flags"]:
        raise StageError(
            "parse", f"flags not spelled as vLLM defines them: {facts['unknown_flags']}"
        )
    args = _run_stage("parse", parser.parse_args, argv[1:])
    _run_stage("validate", cmd.validate, args)
    if getattr(args, "model_tag", None) is not None:
        args.model = args.model_tag
    ea = _run_stage("engine_args", AsyncEngineArgs.from_cli_args, args)

    facts.update(
        model=ea.model,
        served_model_name=ea.served_model_name,
        revision=ea.revision,
        tokenizer=ea.tokenizer,
        host=args.host,
        port=args.port,
        tensor_parallel_size=ea.tensor_parallel_size,
        pipeline_parallel_size=ea.pipeline_parallel_size,
        data_parallel_size=ea.data_parallel_size,
        max_model_len=ea.max_model_len,
        gpu_memory_utilization=ea.gpu_memory_utilization,
        max_num_batched_tokens=ea.max_num_batched_tokens,
        mm_processor_cache_gb=ea.mm_processor_cache_gb,
        limit_mm_per_prompt=ea.limit_mm_per_prompt,
        mm_encoder_tp_mode=ea.mm_encoder_tp_mode,
        media_io_kwargs=ea.media_io_kwargs,
        mm_processor_kwargs=ea.mm_processor_kwargs,
        mm_encoder_only_flag=ea.mm_encoder_only,
    )
    ec = ea.ec_transfer_config
    kv = ea.kv_transfer_config
    facts["ec"] = None
    if ec is not None:
        facts["ec"] = {
            "ec_connector": ec.ec_connector,
            "ec_role": ec.ec_role,
            "engine_id": ec.engine_id,
            "ec_ip": ec.ec_ip,
            "ec_port": ec.ec_port,
            "ec_buffer_size": ec.ec_buffer_size,
            "ec_buffer_device": ec.ec_buffer_device,
            "extra": ec.ec_connector_extra_config,
            "is_ec_producer": ec.is_ec_producer,
            "is_ec_consumer": ec.is_ec_consumer,
            "is_encode_only": ec.is_encode_only,
            # what ECExampleConnector reads (example_connector.py), default included
            "shared_storage_path": ec.get_from_extra_config("shared_storage_path", "/tmp"),
        }
    facts["kv"] = None
    if kv is not None:
        facts["kv"] = {
            "kv_connector": kv.kv_connector,
            "kv_role": kv.kv_role,
            "engine_id": kv.engine_id,
            "extra": kv.kv_connector_extra_config,
            "is_kv_producer": kv.is_kv_producer,
            "is_kv_consumer": kv.is_kv_consumer,
        }

    def mm_config() -> Any:
        values = {
            "limit_per_prompt": ea.limit_mm_per_prompt,
            "media_io_kwargs": ea.media_io_kwargs,
            "mm_processor_kwargs": ea.mm_processor_kwargs,
            "mm_processor_cache_gb": ea.mm_processor_cache_gb,
            "mm_encoder_only": ea.mm_encoder_only,
            "mm_encoder_tp_mode": ea.mm_encoder_tp_mode,
        }
        return MultiModalConfig(**{k: v for k, v in values.items() if v is not None})

    mm = _run_stage("mm_config", mm_config)
    stub = SimpleNamespace(
        ec_transfer_config=ec,
        model_config=SimpleNamespace(multimodal_config=mm),
        use_v2_model_runner=True,
        lora_config=None,
    )
    _run_stage("mm_config", VllmConfig._resolve_mm_encoder_only, stub)
    facts["mm_encoder_only_resolved"] = mm.mm_encoder_only

    facts["ec_connector_registered"] = (
        ec is not None and ec.ec_connector in ECConnectorFactory._registry
    )
    facts["kv_connector_registered"] = (
        kv is not None and kv.kv_connector in KVConnectorFactory._registry
    )
    if ec is not None and not facts["ec_connector_registered"]:
        raise StageError("connectors", f"EC connector {ec.ec_connector!r} is not registered")
    if kv is not None and not facts["kv_connector_registered"]:
        raise StageError("connectors", f"KV connector {kv.kv_connector!r} is not registered")

    facts["mooncake_ec"] = None
    if ec is not None and ec.ec_connector == "ECMooncakeConnector":
        from vllm.distributed.ec_transfer.ec_connector.mooncake.config import MooncakeECConfig

        parallel = _run_stage(
            "mooncake_ec",
            lambda: ParallelConfig(
                tensor_parallel_size=ea.tensor_parallel_size,
                pipeline_parallel_size=ea.pipeline_parallel_size,
                data_parallel_size=ea.data_parallel_size,
            ),
        )
        stub.parallel_config = parallel
        ranks = []
        for dp_index in range(ea.data_parallel_size):
            # what each DP engine core does before building its connector (v1/engine/core.py)
            parallel.data_parallel_index = dp_index
            mc = _run_stage("mooncake_ec", MooncakeECConfig.from_vllm_config, stub)
            ranks.append(
                {
                    "dp_index": dp_index,
                    "is_producer": mc.is_producer,
                    "is_consumer": mc.is_consumer,
                    "protocol": mc.protocol,
                    "buffer_device": mc.buffer_device,
                    "control_host": mc.control_host,
                    "control_port": mc.control_port,
                    "control_addr": mc.control_addr,
                    "control_timeout_ms": mc.control_timeout_ms,
                    "push_wait_timeout_s": mc.push_wait_timeout_s,
                    "pool_size": mc.pool_size,
                }
            )
        facts["mooncake_ec"] = ranks

    facts["env"] = _run_stage("env", _check_env, case.get("env", {}))
    return facts


def _check_env(env: dict[str, str]) -> dict[str, Any]:
    from vllm import envs
    from vllm.utils.network_utils import get_ip

    unknown = sorted(
        k for k in env if k.startswith("VLLM_") and k not in envs.environment_variables
    )
    if unknown:
        raise StageError("env", f"variables vLLM 0.33.0 does not read: {unknown}")
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        values = {k: envs.environment_variables[k]() for k in sorted(env) if k.startswith("VLLM_")}
        return {"values": values, "get_ip": get_ip()}
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> int:
    if os.environ.get("VLLM_TARGET_DEVICE") != "cpu":
        print("vllm_checker: run with VLLM_TARGET_DEVICE=cpu", file=sys.stderr)
        return 2
    request = json.load(sys.stdin)
    import vllm

    with contextlib.redirect_stdout(sys.stderr):  # vLLM may print; stdout is our channel
        parser, serve_parser, cmd = _build_serve_parser()
        results = []
        for case in request["cases"]:
            result: dict[str, Any] = {"id": case["id"], "ok": True, "stage": None, "error": None}
            try:
                result["facts"] = _check_case(case, parser, serve_parser, cmd)
            except StageError as exc:
                result.update(ok=False, stage=exc.stage, error=str(exc))
            except Exception:
                result.update(ok=False, stage="checker", error=traceback.format_exc())
            results.append(result)
    json.dump({"vllm_version": vllm.__version__, "results": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
