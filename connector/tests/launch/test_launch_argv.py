"""The `vllm serve` argv and environment per role: exact lines, invariants, refused configs.

The exact lines below are the contract written out by hand (each flag checked against vLLM
0.33.0's source); connector/tests/vllm_contract/ runs the same builder through vLLM itself.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from connector.tests.launch.launch_samples import IPV6_POD, POD, STORE, VALID, config, valid_cases
from epd_connector.launch.argv import build_argv, build_env, compact_json
from epd_connector.launch.config import LaunchConfig, LaunchConfigError, RoleName, parse
from epd_connector.launch.pod import PodContext
from epd_connector.launch.store import ENV_STORE_CONFIG, store_files

MODEL = "Qwen/Qwen3-VL-8B-Instruct"
HEAD = ["vllm", "serve", MODEL, "--host", "0.0.0.0", "--port", "8000"]
NAME = ["--served-model-name", MODEL]
TP1 = ["--tensor-parallel-size", "1", "--pipeline-parallel-size", "1"]


def ec_json(**fields: Any) -> str:
    return compact_json(fields)


EXACT: list[tuple[str, RoleName, PodContext, list[str]]] = [
    (
        "epd-minimal",
        "encoder",
        POD,
        [*HEAD, *NAME, *TP1, "--mm-encoder-only", "--ec-transfer-config",
         ec_json(ec_buffer_size=1_000_000_000, ec_connector="ECMooncakeConnector",
                 ec_connector_extra_config={"mooncake_protocol": "rdma"},
                 ec_role="ec_producer", engine_id="demo-encoder-3")],
    ),
    (
        "epd-minimal",
        "decode",
        POD,
        [*HEAD, *NAME, *TP1, "--ec-transfer-config",
         ec_json(ec_buffer_size=1_000_000_000, ec_connector="ECMooncakeConnector",
                 ec_connector_extra_config={"mooncake_protocol": "rdma"},
                 ec_ip="10.244.1.7", ec_port=14579, ec_role="ec_consumer",
                 engine_id="demo-decode-3")],
    ),
    (
        "epd-ipv6",
        "decode",
        IPV6_POD,
        [*HEAD, *NAME, *TP1, "--ec-transfer-config",
         ec_json(ec_buffer_size=1_000_000_000, ec_connector="ECMooncakeConnector",
                 ec_connector_extra_config={"mooncake_protocol": "rdma"},
                 ec_ip="fd00:10:244::7", ec_port=14579, ec_role="ec_consumer",
                 engine_id="demo-decode-0")],
    ),
    (
        "epd-ec-both",
        "encoder",
        POD,
        [*HEAD, *NAME, *TP1, "--ec-transfer-config",
         ec_json(ec_buffer_size=1_000_000_000, ec_connector="ECMooncakeConnector",
                 ec_connector_extra_config={"mooncake_protocol": "rdma"},
                 ec_ip="10.244.1.7", ec_port=14579, ec_role="ec_both",
                 engine_id="demo-encoder-3")],
    ),
    (
        "epd-ec-example",
        "decode",
        POD,
        [*HEAD, *NAME, *TP1, "--ec-transfer-config",
         ec_json(ec_connector="ECExampleConnector",
                 ec_connector_extra_config={"shared_storage_path": "/shared/ec-cache"},
                 ec_role="ec_consumer", engine_id="demo-decode-3")],
    ),
    (
        "epd-everything",
        "decode",
        POD,
        ["vllm", "serve", "/models/qwen3-vl-8b", "--host", "0.0.0.0", "--port", "8200",
         "--served-model-name", "qwen3-vl", "--revision", "0f3c2e1",
         "--tokenizer", "/models/qwen3-vl-8b/tokenizer", *TP1,
         "--max-model-len", "32768", "--gpu-memory-utilization", "0.9",
         "--max-num-batched-tokens", "16384", "--mm-processor-cache-gb", "8.0",
         "--mm-encoder-tp-mode", "data",
         "--limit-mm-per-prompt", '{"image":4,"video":1}',
         "--media-io-kwargs", '{"video":{"num_frames":16}}',
         "--mm-processor-kwargs", '{"max_pixels":1003520}',
         "--ec-transfer-config",
         ec_json(ec_buffer_size=2_000_000_000, ec_connector="ECMooncakeConnector",
                 ec_connector_extra_config={"control_timeout_s": 12.5,
                                            "mooncake_protocol": "rdma",
                                            "push_wait_timeout_s": 90.0,
                                            "store_max_pending_items": 8},
                 ec_ip="10.244.1.7", ec_port=15000, ec_role="ec_consumer",
                 engine_id="demo-decode-3"),
         "--max-num-seqs", "64", "--enable-chunked-prefill"],
    ),
    (
        "e-p-d-nixl",
        "prefill",
        POD,
        [*HEAD, *NAME, "--tensor-parallel-size", "2", "--pipeline-parallel-size", "1",
         "--data-parallel-size", "2", "--ec-transfer-config",
         ec_json(ec_buffer_size=1_000_000_000, ec_connector="ECMooncakeConnector",
                 ec_connector_extra_config={"mooncake_protocol": "rdma"},
                 ec_ip="10.244.1.7", ec_port=14579, ec_role="ec_consumer",
                 engine_id="demo-prefill-3"),
         "--kv-transfer-config",
         compact_json({"engine_id": "demo-prefill-3", "kv_connector": "NixlConnector",
                       "kv_connector_extra_config": {"backends": ["UCX"], "num_threads": 8},
                       "kv_role": "kv_producer"})],
    ),
    (
        "e-p-d-nixl",
        "decode",
        POD,
        [*HEAD, *NAME, "--tensor-parallel-size", "2", "--pipeline-parallel-size", "1",
         "--kv-transfer-config",
         compact_json({"engine_id": "demo-decode-3", "kv_connector": "NixlConnector",
                       "kv_connector_extra_config": {"backends": ["UCX"], "num_threads": 8},
                       "kv_role": "kv_consumer"})],
    ),
    (
        "e-p-d-tcp",
        "decode",
        POD,
        [*HEAD, *NAME, "--tensor-parallel-size", "2", "--pipeline-parallel-size", "1",
         "--data-parallel-size", "2", "--kv-transfer-config",
         compact_json({"engine_id": "demo-decode-3", "kv_connector": "MooncakeConnector",
                       "kv_connector_extra_config": {"mooncake_protocol": "tcp"},
                       "kv_role": "kv_consumer"})],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "role", "pod", "argv"), EXACT, ids=[f"{n}/{r}" for n, r, _, _ in EXACT]
)
def test_exact_argv(name: str, role: RoleName, pod: PodContext, argv: list[str]) -> None:
    assert build_argv(VALID[name], role, pod) == argv


ENV = [
    ("epd-minimal", "encoder", {"VLLM_HOST_IP": "10.244.1.7"}),
    ("epd-minimal", "decode", {"VLLM_HOST_IP": "10.244.1.7"}),
    ("e-p-d-mooncake", "encoder", {"VLLM_HOST_IP": "10.244.1.7"}),
    (
        "e-p-d-mooncake",
        "prefill",
        {"VLLM_HOST_IP": "10.244.1.7", "VLLM_MOONCAKE_BOOTSTRAP_PORT": "8998"},
    ),
    # only the KV producer serves the Mooncake bootstrap endpoint
    ("e-p-d-mooncake", "decode", {"VLLM_HOST_IP": "10.244.1.7"}),
    (
        "e-p-d-tcp",
        "prefill",
        {"VLLM_HOST_IP": "10.244.1.7", "VLLM_MOONCAKE_BOOTSTRAP_PORT": "9100"},
    ),
    *[
        (
            "e-p-d-nixl",
            role,
            {
                "VLLM_HOST_IP": "10.244.1.7",
                "VLLM_NIXL_SIDE_CHANNEL_HOST": "10.244.1.7",
                "VLLM_NIXL_SIDE_CHANNEL_PORT": "5700",
            },
        )
        for role in ("prefill", "decode")
    ],
]


@pytest.mark.parametrize(("name", "role", "env"), ENV, ids=[f"{n}/{r}" for n, r, _ in ENV])
def test_env(name: str, role: RoleName, env: dict[str, str]) -> None:
    assert build_env(VALID[name], role, POD) == env


CASES = valid_cases()


@pytest.mark.parametrize(("case_id", "cfg", "role", "pod"), CASES, ids=[c[0] for c in CASES])
def test_invariants(case_id: str, cfg: LaunchConfig, role: RoleName, pod: PodContext) -> None:
    argv = build_argv(cfg, role, pod)
    # What a pod runs comes from the JSON the operator wrote (render/launch.py dumps it so):
    # the argv must not depend on anything the round trip loses or reorders.
    wire = json.dumps(cfg.model_dump(mode="json", exclude_none=True), sort_keys=True)
    assert build_argv(parse(wire), role, pod) == argv
    assert argv[:2] == ["vllm", "serve"]
    extra = cfg.role(role).extra_args
    rendered = argv[: len(argv) - len(extra)]
    assert argv[len(rendered) :] == extra  # user args last, verbatim
    flags = [a for a in rendered if a.startswith("--")]
    assert len(flags) == len(set(flags)), "a flag rendered twice"
    for flag in ("--ec-transfer-config", "--kv-transfer-config", "--limit-mm-per-prompt"):
        if flag in argv:
            value = argv[argv.index(flag) + 1]
            # compact and key-sorted: the same config always yields the same bytes
            assert value == compact_json(json.loads(value))
    # encoder-only exactly for a pure producer
    is_producer = role == "encoder" and cfg.ec.encoder_role == "ec_producer"
    assert ("--mm-encoder-only" in argv) is is_producer
    # JSON from the launch config round-trips: the pod sees what the operator rendered
    again = LaunchConfig.model_validate_json(cfg.to_json())
    assert build_argv(again, role, pod) == argv


def test_engine_ids_follow_the_pod_ordinal() -> None:
    cfg = VALID["e-p-d-mooncake"]
    for ordinal in (0, 5):
        pod = PodContext.create("10.0.0.9", ordinal)
        kv = json.loads(build_argv(cfg, "prefill", pod)[-1])
        assert kv["engine_id"] == f"demo-prefill-{ordinal}"


def test_ec_timeouts_from_typed_fields_only_when_set() -> None:
    argv = build_argv(VALID["epd-minimal"], "decode", POD)
    extra = json.loads(argv[argv.index("--ec-transfer-config") + 1])["ec_connector_extra_config"]
    assert extra == {"mooncake_protocol": "rdma"}  # vLLM's own defaults (30 s / 60 s) apply


def test_shared_store_switches_cross_encoder_cache_on_the_encoder_only() -> None:
    for name in ("epd-shared-store", "e-p-d-shared-store"):
        cfg = VALID[name]
        for role in cfg.present_roles():
            argv = build_argv(cfg, role, POD)
            if "--ec-transfer-config" not in argv:
                continue
            ec = json.loads(argv[argv.index("--ec-transfer-config") + 1])
            extra = ec["ec_connector_extra_config"]
            assert extra.get("cross_encoder_cache") is (True if role == "encoder" else None)
            env = build_env(cfg, role, POD, run_dir="/run/epd")
            assert (ENV_STORE_CONFIG in env) is (role == "encoder")
            files = store_files(cfg, role, POD, run_dir="/run/epd")
            assert list(files) == ([env[ENV_STORE_CONFIG]] if role == "encoder" else [])


def test_store_config_file_holds_every_key_vllm_reads() -> None:
    cfg = VALID["epd-shared-store"]
    [(path, text)] = store_files(cfg, "encoder", POD, run_dir="/run/epd").items()
    assert path == "/run/epd/epd-demo-encoder-3-store.json"
    assert json.loads(text) == {
        "metadata_server": "P2PHANDSHAKE",
        "master_server_address": "demo-store.llm.svc:50051",
        "protocol": "tcp",
        "device_name": "",
        "mode": "embedded",
        "global_segment_size": 4 << 30,
        "local_buffer_size": 1 << 30,
        "enable_offload": False,
    }
    # The protocol follows the EC transfer's (rdma by default).
    rdma = json.loads(next(iter(store_files(VALID["e-p-d-shared-store"], "encoder", POD).values())))
    assert rdma["protocol"] == "rdma"


BAD: list[tuple[str, LaunchConfig, RoleName, str]] = [
    ("store-with-example-connector",
     config(ec={"connector": "ECExampleConnector", "shared_storage_path": "/x", "store": STORE}),
     "encoder", "ec.connector: the shared encoder cache needs ECMooncakeConnector"),
    ("store-with-ec-both", config(ec={"encoder_role": "ec_both", "store": STORE}), "decode",
     "ec.encoder_role: the shared encoder cache needs an encode-only encoder"),
    ("store-without-processor-cache",
     config(ec={"store": STORE}, encoder_cache={"mm_processor_cache_gb": 0}), "encoder",
     "encoder_cache.mm_processor_cache_gb: the shared encoder cache needs the multimodal"),
    ("store-and-user-cross-encoder-cache",
     config(ec={"store": STORE, "extra_config": {"cross_encoder_cache": False}}), "encoder",
     "ec.extra_config.cross_encoder_cache: derived by the operator"),
    ("producer-tensor", config(roles={"encoder": {"parallelism": {"tensor": 2}}}), "encoder",
     "roles.encoder.parallelism.tensor: ECMooncakeConnector producers require 1, got 2"),
    ("producer-pipeline", config(roles={"encoder": {"parallelism": {"pipeline": 2}}}), "decode",
     "roles.encoder.parallelism.pipeline"),
    ("producer-data", config(roles={"encoder": {"parallelism": {"data": 4}}}), "decode",
     "roles.encoder.parallelism.data: ECMooncakeConnector producers require 1, got 4"),
    ("consumer-ports-past-65535",
     config(ec={"port": 65533}, roles={"decode": {"parallelism": {"tensor": 2, "data": 2}}}),
     "decode", "ec.port: 65533 + data(2) x tensor(2) control ports of roles.decode end at 65536"),
    ("ec-both-port-65535-is-fine-but-consumer-tp2-is-not",
     config(ec={"port": 65535, "encoder_role": "ec_both"},
            roles={"decode": {"parallelism": {"tensor": 2}}}),
     "encoder", "ec.port: 65535 + data(1) x tensor(2) control ports of roles.decode"),
    ("example-without-path", config(ec={"connector": "ECExampleConnector"}), "decode",
     "ec.shared_storage_path: required with ECExampleConnector"),
    ("path-without-example", config(ec={"shared_storage_path": "/x"}), "decode",
     "ec.shared_storage_path: only ECExampleConnector reads it"),
    ("example-with-timeout",
     config(ec={"connector": "ECExampleConnector", "shared_storage_path": "/x",
                "push_wait_timeout_s": 5}),
     "decode", "ec.push_wait_timeout_s: only ECMooncakeConnector reads it"),
    ("override-derived-protocol", config(ec={"extra_config": {"mooncake_protocol": "tcp"}}),
     "decode", "ec.extra_config.mooncake_protocol: derived by the operator"),
    ("override-typed-timeout", config(ec={"extra_config": {"control_timeout_s": 3}}),
     "encoder", "ec.extra_config.control_timeout_s: derived by the operator"),
    ("override-example-path",
     config(ec={"connector": "ECExampleConnector", "shared_storage_path": "/x",
                "extra_config": {"shared_storage_path": "/y"}}),
     "decode", "ec.extra_config.shared_storage_path: derived by the operator"),
    ("upstream-example-key", config(ec={"extra_config": {"device_name": "mlx5_0"}}), "decode",
     "ec.extra_config.device_name: not read by this connector in vLLM 0.33.0"),
    ("kv-override-protocol",
     config("E/P/D", kv={"extra_config": {"mooncake_protocol": "tcp"}}), "prefill",
     "kv.extra_config.mooncake_protocol: derived by the operator"),
    ("kv-without-prefill", config(kv={"connector": "NixlConnector"}), "decode",
     "kv: KV transfer needs a prefill role"),
    ("role-absent", config(), "prefill", "roles.prefill: this cluster has no prefill role"),
    ("http-port-in-ec-block", config(roles={"decode": {"port": 14579}}), "decode",
     "ec.port: ports 14579..14579 collide with roles.decode.port"),
    ("http-port-in-ec-block-dp",
     config(roles={"decode": {"port": 14582, "parallelism": {"tensor": 2, "data": 2}}}),
     "decode", "ec.port: ports 14579..14582 collide with roles.decode.port (14582..14582)"),
    ("bootstrap-port-is-http-port",
     config("E/P/D", kv={"bootstrap_port": 8000}), "prefill",
     "kv.bootstrap_port: ports 8000..8000 collide with roles.prefill.port"),
    ("nixl-side-channel-in-ec-block",
     config("E/P/D", kv={"connector": "NixlConnector", "side_channel_port": 14578},
            roles={"prefill": {"parallelism": {"data": 2}}}),
     "prefill", "kv.side_channel_port: ports 14578..14579 collide with ec.port"),
    ("nixl-side-channel-past-65535",
     config("E/P/D", kv={"connector": "NixlConnector", "side_channel_port": 65535},
            roles={"decode": {"parallelism": {"data": 2}}}),
     "decode", "kv.side_channel_port: port block 65535..65536 goes beyond 65535"),
    ("extra-args-port", config(roles={"decode": {"extra_args": ["--port", "9000"]}}), "decode",
     "roles.decode.extra_args[0]: --port is set by the operator"),
    ("extra-args-equals-form",
     config(roles={"encoder": {"extra_args": ["--tensor-parallel-size=2"]}}), "encoder",
     "roles.encoder.extra_args[0]: --tensor-parallel-size is set by the operator"),
    ("extra-args-dotted-ec",
     config(roles={"decode": {"extra_args": ["--ec-transfer-config.ec_ip", "0.0.0.0"]}}),
     "decode", "extra_args[0]: --ec-transfer-config is set by the operator"),
    ("extra-args-kv-on-e-pd",
     config(roles={"decode": {"extra_args": ["--kv-transfer-config", "{}"]}}), "decode",
     "extra_args[0]: --kv-transfer-config is set by the operator"),
    ("extra-args-encoder-only-on-consumer",
     config(roles={"decode": {"extra_args": ["--mm-encoder-only"]}}), "decode",
     "extra_args[0]: --mm-encoder-only is set by the operator"),
]  # fmt: skip


@pytest.mark.parametrize(("case_id", "cfg", "role", "message"), BAD, ids=[b[0] for b in BAD])
def test_refused_configs_name_the_field(
    case_id: str, cfg: LaunchConfig, role: RoleName, message: str
) -> None:
    with pytest.raises(LaunchConfigError) as err:
        build_argv(cfg, role, POD)
    assert message in str(err.value)


def test_pod_of_another_role_is_refused() -> None:
    pod = PodContext.create("10.0.0.1", 0, role="decode")
    with pytest.raises(LaunchConfigError, match="EPD_ROLE='decode': this pod cannot launch as"):
        build_argv(VALID["epd-minimal"], "encoder", pod)
    with pytest.raises(LaunchConfigError, match="EPD_ROLE='decode'"):
        build_env(VALID["epd-minimal"], "encoder", pod)
