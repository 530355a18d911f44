"""The exact `vllm serve` command line and environment of one EPD pod (pure).

`build_argv` / `build_env` turn (launch config, role, pod) into what `epd-engine` execs. Every
flag, JSON key and environment variable here was checked against vLLM 0.33.0's source, and the
contract tests (connector/tests/vllm_contract/) feed the output through vLLM 0.33.0's own
`vllm serve` parser, `ECTransferConfig` / `KVTransferConfig` and the Mooncake EC connector's
config validation. Facts relied on (vLLM 0.33.0 source paths):

- `ec_role=ec_producer` makes the instance encode-only (`config/vllm.py::_resolve_mm_encoder_only`
  sets `mm_encoder_only`); we also pass `--mm-encoder-only` so the logged argv says so (same
  field, same effect). `ec_both` runs the language model too, so it gets no such flag.
- ECMooncakeConnector producers need TP = PP = DP = 1 (`ec_connector/mooncake/config.py`).
- An EC consumer binds and advertises `ec_ip` (default 127.0.0.1, unreachable from other pods),
  so it gets the pod IP; DP rank d of TP size t listens on `ec_port + d*t .. + t-1`, which must
  stay <= 65535. Producers never read `ec_ip`/`ec_port`: they dial the router-supplied address.
- The Mooncake data plane and the KV side channels use `VLLM_HOST_IP`, not `ec_ip`.
- MooncakeConnector (KV): only the producer (P) serves the bootstrap HTTP endpoint on
  `VLLM_MOONCAKE_BOOTSTRAP_PORT`. NixlConnector: `VLLM_NIXL_SIDE_CHANNEL_HOST` is bound and
  advertised (default `localhost`), port `VLLM_NIXL_SIDE_CHANNEL_PORT + dp_index`.
- vLLM appends `_dp<rank>` to a configured KV `engine_id` per DP rank itself.
- CPU engines (`device: cpu`): `ec_buffer_device` defaults to "cuda" (the Mooncake EC slabs) and
  NIXL's `kv_buffer_device` follows the platform, so both are set to "cpu" explicitly; the KV
  cache size is `VLLM_CPU_KVCACHE_SPACE` (GiB), read by the CPU worker.
- ECMooncakeConnector ignores unknown extra-config keys silently, so unknown keys are rejected
  here (a typo would otherwise be a silent no-op); the same for the KV connectors.

The rules themselves (owned flags, port blocks, key sets, text) live in `rules.py`, shared with
the operator's API checks: this module applies them again at pod start, as a second line of
defence for a config that did not come through the operator.
"""

from __future__ import annotations

import json
from typing import Any, Final

from .config import KVTransferLaunch, LaunchConfig, LaunchConfigError, RoleLaunch, RoleName
from .pod import PodContext
from .rules import (
    KV_DERIVED_KEYS,
    KV_EXTRA_KEYS,
    MAX_PORT,
    check_extra_args,
    control_char,
    ec_port_block,
    nixl_port_block,
    overlaps,
    store_problem,
)
from .rules import MOONCAKE_EC_EXTRA_KEYS as MOONCAKE_EC_EXTRA_KEYS
from .store import DEFAULT_RUN_DIR, ENV_STORE_CONFIG, store_config_path, uses_store
from .wiring import ec_consumer_role, ec_role, kv_role

BIND_HOST: Final = "0.0.0.0"
ENV_CPU_KVCACHE_SPACE: Final = "VLLM_CPU_KVCACHE_SPACE"


def compact_json(value: Any) -> str:
    """JSON as rendered into the argv: compact, sorted keys (stable across runs and pods)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def engine_id(config: LaunchConfig, role: RoleName, pod: PodContext) -> str:
    """Deterministic per pod, so logs and KV handshakes can be traced to a pod."""
    return f"{config.cluster}-{role}-{pod.ordinal}"


def _merge_extra(
    field: str,
    derived: dict[str, Any],
    user: dict[str, Any],
    allowed: frozenset[str] | None,
    reserved: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """User extra config + the keys we derive; a user key may not shadow a derived one."""
    owned = derived.keys() | reserved
    for key in sorted(user):
        if key in owned:
            raise LaunchConfigError(
                f"{field}.{key}: derived by the operator from a typed field; set that field "
                f"instead of overriding it here"
            )
        if allowed is not None and key not in allowed:
            raise LaunchConfigError(
                f"{field}.{key}: not read by this connector in vLLM 0.33.0 (known keys: "
                f"{', '.join(sorted(allowed - owned))})"
            )
    return {**user, **derived}


def ec_transfer_config(
    config: LaunchConfig, role: RoleName, pod: PodContext
) -> dict[str, Any] | None:
    """The `--ec-transfer-config` object of `role`; None where it moves no encoder output."""
    ec_role_ = ec_role(config, role)
    if ec_role_ is None:
        return None
    ec = config.ec
    out: dict[str, Any] = {
        "ec_connector": ec.connector,
        "ec_role": ec_role_,
        "engine_id": engine_id(config, role, pod),
    }
    if ec.connector == "ECExampleConnector":
        assert ec.shared_storage_path is not None  # _check_ec
        derived: dict[str, Any] = {"shared_storage_path": ec.shared_storage_path}
        out["ec_connector_extra_config"] = _merge_extra(
            "ec.extra_config", derived, ec.extra_config, None
        )
        return out
    out["ec_buffer_size"] = ec.buffer_size
    if config.device == "cpu":
        out["ec_buffer_device"] = config.device
    if ec_role_ in ("ec_consumer", "ec_both"):
        out["ec_ip"] = pod.ip
        out["ec_port"] = ec.port
    derived = {"mooncake_protocol": ec.protocol}
    if ec.control_timeout_s is not None:
        derived["control_timeout_s"] = ec.control_timeout_s
    if ec.push_wait_timeout_s is not None:
        derived["push_wait_timeout_s"] = ec.push_wait_timeout_s
    reserved = {"control_timeout_s", "push_wait_timeout_s"}
    if ec.store is not None:
        # ec.store owns the switch; only the encode-only producer reads the Store.
        reserved.add("cross_encoder_cache")
        if ec_role_ == "ec_producer":
            derived["cross_encoder_cache"] = True
    # The typed timeouts own these keys even when unset (then vLLM's defaults apply).
    out["ec_connector_extra_config"] = _merge_extra(
        "ec.extra_config",
        derived,
        ec.extra_config,
        MOONCAKE_EC_EXTRA_KEYS,
        reserved=frozenset(reserved),
    )
    return out


def kv_transfer_config(
    config: LaunchConfig, role: RoleName, pod: PodContext
) -> dict[str, Any] | None:
    """The `--kv-transfer-config` object of `role` (E/P/D prefill and decode only)."""
    kv_role_ = kv_role(config, role)
    if kv_role_ is None:
        return None
    kv = effective_kv(config)
    derived: dict[str, Any] = {}
    if kv.connector == "MooncakeConnector":
        derived["mooncake_protocol"] = kv.protocol
    out: dict[str, Any] = {
        "kv_connector": kv.connector,
        "kv_role": kv_role_,
        "engine_id": engine_id(config, role, pod),
    }
    if config.device == "cpu":
        out["kv_buffer_device"] = config.device
    extra = _merge_extra(
        "kv.extra_config",
        derived,
        kv.extra_config,
        KV_EXTRA_KEYS[kv.connector],
        reserved=frozenset(KV_DERIVED_KEYS),
    )
    if extra:
        out["kv_connector_extra_config"] = extra
    return out


def effective_kv(config: LaunchConfig) -> KVTransferLaunch:
    """The KV settings of an E/P/D cluster; MooncakeConnector defaults when none are given."""
    return config.kv if config.kv is not None else KVTransferLaunch()


def build_env(
    config: LaunchConfig, role: RoleName, pod: PodContext, run_dir: str = DEFAULT_RUN_DIR
) -> dict[str, str]:
    """Variables `epd-engine` adds to the pod's environment before exec (`run_dir`: where it
    writes the files of `store.store_files`)."""
    _check_pod_role(role, pod)
    check(config, role)
    env = {"VLLM_HOST_IP": pod.ip}
    if uses_store(config, role):
        env[ENV_STORE_CONFIG] = store_config_path(config, role, pod, run_dir)
    if config.cpu_kv_cache_space_gib is not None:
        env[ENV_CPU_KVCACHE_SPACE] = str(config.cpu_kv_cache_space_gib)
    role_kv = kv_role(config, role)
    if role_kv is not None:
        kv = effective_kv(config)
        if kv.connector == "MooncakeConnector":
            if role_kv == "kv_producer":
                env["VLLM_MOONCAKE_BOOTSTRAP_PORT"] = str(kv.bootstrap_port)
        else:
            env["VLLM_NIXL_SIDE_CHANNEL_HOST"] = pod.ip
            env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(kv.side_channel_port)
    for key, value in env.items():
        bad = control_char(value, env_value=True)
        if bad is not None:
            raise LaunchConfigError(f"{key}: control character {bad} in its value")
    return env


def _holds_encoder_cache(config: LaunchConfig, role: RoleName) -> bool:
    return role == "encoder" or role == ec_consumer_role(config)


def build_argv(config: LaunchConfig, role: RoleName, pod: PodContext) -> list[str]:
    """The `vllm serve` argv of `role` on `pod`: model and parallelism, multimodal settings,
    the EC/KV wiring, then the user's extra args."""
    _check_pod_role(role, pod)
    check(config, role)
    launch = config.role(role)
    argv = _model_flags(config, launch) + _multimodal_flags(config, role)
    if ec_role(config, role) == "ec_producer":
        argv.append("--mm-encoder-only")
    ec_json = ec_transfer_config(config, role, pod)
    if ec_json is not None:
        argv += ["--ec-transfer-config", compact_json(ec_json)]
    kv_json = kv_transfer_config(config, role, pod)
    if kv_json is not None:
        argv += ["--kv-transfer-config", compact_json(kv_json)]

    _check_extra_args(role, launch)
    for i, arg in enumerate(argv):
        bad = control_char(arg)
        if bad is not None:
            # exec refuses NUL outright; other control characters corrupt flags and logs.
            raise LaunchConfigError(f"argv[{i}] ({arg!r}): control character {bad}")
    return argv + list(launch.extra_args)


def _model_flags(config: LaunchConfig, launch: RoleLaunch) -> list[str]:
    model = config.model
    par = launch.parallelism
    argv = ["vllm", "serve", model.path or model.name]
    argv += ["--host", BIND_HOST, "--port", str(launch.port)]
    argv += ["--served-model-name", model.served_model_name or model.name]
    if model.revision is not None:
        argv += ["--revision", model.revision]
    if model.tokenizer is not None:
        argv += ["--tokenizer", model.tokenizer]
    argv += ["--tensor-parallel-size", str(par.tensor)]
    argv += ["--pipeline-parallel-size", str(par.pipeline)]
    if par.data > 1:
        # One pod runs all DP ranks (internal load balancing, mp backend): vLLM then starts one
        # engine core per rank and as many API servers; nothing else is needed in 0.33.0.
        argv += ["--data-parallel-size", str(par.data)]
    if launch.max_model_len is not None:
        argv += ["--max-model-len", str(launch.max_model_len)]
    if launch.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", repr(launch.gpu_memory_utilization)]
    return argv


def _multimodal_flags(config: LaunchConfig, role: RoleName) -> list[str]:
    argv: list[str] = []
    cache = config.encoder_cache
    if _holds_encoder_cache(config, role):
        if cache.max_num_batched_tokens is not None:
            argv += ["--max-num-batched-tokens", str(cache.max_num_batched_tokens)]
        if cache.mm_processor_cache_gb is not None:
            argv += ["--mm-processor-cache-gb", repr(cache.mm_processor_cache_gb)]
        if cache.mm_encoder_tp_mode is not None:
            argv += ["--mm-encoder-tp-mode", cache.mm_encoder_tp_mode]
    # Request-shaping multimodal settings go to every role: the multimodal identifiers (E and
    # the EC consumer) and the placeholder token counts (P and D) must agree across roles.
    if cache.limit_mm_per_prompt is not None:
        argv += ["--limit-mm-per-prompt", compact_json(cache.limit_mm_per_prompt)]
    if config.media_io_kwargs is not None:
        argv += ["--media-io-kwargs", compact_json(config.media_io_kwargs)]
    if config.mm_processor_kwargs is not None:
        argv += ["--mm-processor-kwargs", compact_json(config.mm_processor_kwargs)]
    return argv


def _check_extra_args(role: RoleName, launch: RoleLaunch) -> None:
    # argparse lets the last occurrence win (and accepts abbreviations, `_` spellings and short
    # aliases), so an extra flag vLLM reads as one we render would silently undo the wiring.
    problem = check_extra_args(launch.extra_args)
    if problem is not None:
        raise LaunchConfigError(f"roles.{role}.extra_args[{problem.index}]: {problem.message}")


def _check_pod_role(role: RoleName, pod: PodContext) -> None:
    if pod.role is not None and pod.role != role:
        raise LaunchConfigError(f"EPD_ROLE={pod.role!r}: this pod cannot launch as {role!r}")


def check(config: LaunchConfig, role: RoleName) -> None:
    """Cross-field rules the launcher depends on; raises LaunchConfigError naming the field.

    The operator's API validates the same rules earlier; the launcher re-checks because a
    bad argv would otherwise fail only after the engine spent minutes loading weights.
    """
    config.role(role)
    if config.cpu_kv_cache_space_gib is not None and config.device != "cpu":
        raise LaunchConfigError("cpu_kv_cache_space_gib: only CPU engines (device cpu) read it")
    _check_ec(config)
    _check_kv(config)
    _check_ports(config, role)


def _check_store(config: LaunchConfig) -> None:
    ec = config.ec
    if ec.store is None:
        return
    problem = store_problem(
        ec.connector, ec.encoder_role, config.encoder_cache.mm_processor_cache_gb
    )
    if problem is not None:
        key = (
            "encoder_cache.mm_processor_cache_gb"
            if problem[0] == "mm_processor_cache_gb"
            else f"ec.{problem[0]}"
        )
        raise LaunchConfigError(f"{key}: {problem[1]} (ec.store is set)")


def _check_ec(config: LaunchConfig) -> None:
    ec = config.ec
    if ec.connector == "ECExampleConnector":
        _check_store(config)
        if ec.shared_storage_path is None:
            raise LaunchConfigError(
                "ec.shared_storage_path: required with ECExampleConnector (a ReadWriteMany "
                "mount shared by the encoder and the consumer)"
            )
        for name in ("control_timeout_s", "push_wait_timeout_s"):
            if getattr(ec, name) is not None:
                raise LaunchConfigError(f"ec.{name}: only ECMooncakeConnector reads it")
        return
    if ec.shared_storage_path is not None:
        raise LaunchConfigError("ec.shared_storage_path: only ECExampleConnector reads it")
    _check_store(config)
    par = config.roles.encoder.parallelism
    for axis, value in (("tensor", par.tensor), ("pipeline", par.pipeline), ("data", par.data)):
        if value != 1:
            raise LaunchConfigError(
                f"roles.encoder.parallelism.{axis}: ECMooncakeConnector producers require 1, "
                f"got {value}"
            )
    # ec_both encoders are consumers too, and bind the same port block.
    consumers: list[RoleName] = [ec_consumer_role(config)]
    if ec.encoder_role == "ec_both":
        consumers.append("encoder")
    for consumer in consumers:
        cpar = config.role(consumer).parallelism
        highest = ec_port_block(ec.port, cpar.data, cpar.tensor)[1]
        if highest > MAX_PORT:
            raise LaunchConfigError(
                f"ec.port: {ec.port} + data({cpar.data}) x tensor({cpar.tensor}) control ports "
                f"of roles.{consumer} end at {highest}, beyond 65535"
            )


def _check_kv(config: LaunchConfig) -> None:
    if config.kv is not None and config.topology != "E/P/D":
        raise LaunchConfigError("kv: KV transfer needs a prefill role (E/P/D topology)")


def _port_blocks(config: LaunchConfig, role: RoleName) -> list[tuple[str, int, int]]:
    """(field, first, last) of every port the role's pod listens on that the config fixes."""
    launch = config.role(role)
    par = launch.parallelism
    blocks = [(f"roles.{role}.port", launch.port, launch.port)]
    role_ec = ec_role(config, role)
    if config.ec.connector == "ECMooncakeConnector" and role_ec in ("ec_consumer", "ec_both"):
        blocks.append(("ec.port", *ec_port_block(config.ec.port, par.data, par.tensor)))
    role_kv = kv_role(config, role)
    if role_kv is not None:
        kv = effective_kv(config)
        if kv.connector == "MooncakeConnector":
            if role_kv == "kv_producer":
                blocks.append(("kv.bootstrap_port", kv.bootstrap_port, kv.bootstrap_port))
        else:
            blocks.append(
                ("kv.side_channel_port", *nixl_port_block(kv.side_channel_port, par.data))
            )
    return blocks


def _check_ports(config: LaunchConfig, role: RoleName) -> None:
    blocks = _port_blocks(config, role)
    for i, (name_a, lo_a, hi_a) in enumerate(blocks):
        if hi_a > MAX_PORT:
            raise LaunchConfigError(f"{name_a}: port block {lo_a}..{hi_a} goes beyond 65535")
        for name_b, lo_b, hi_b in blocks[i + 1 :]:
            if overlaps((lo_a, hi_a), (lo_b, hi_b)):
                raise LaunchConfigError(
                    f"{name_b}: ports {lo_b}..{hi_b} collide with {name_a} ({lo_a}..{hi_a}) "
                    f"in the {role} pods"
                )
