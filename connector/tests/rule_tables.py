"""Bad (and good) inputs, one table per launch-contract rule, shared by every layer's tests.

The same rows run through: the pure rule (`epd_connector.launch.rules`), the launcher
(`build_argv` / `build_env` refuse them at pod start), `epd_operator.api.parse` (SpecError at
the field path), the apiserver with the operator's admission webhook (`kubectl apply` refused,
operator/tests/test_webhook_integration.py), vLLM 0.33's own parser (the owned-flag rows are
read by vLLM as the owned option: connector/tests/vllm_contract/test_vllm_flags.py) and the spec
fuzzer (operator/tests/test_fuzz_specs.py, as mutations). A new bad input goes into its table
once and every layer checks it.

Rows: (id, input, expected message fragment). Spec paths are written as in an EPDCluster.
"""

from __future__ import annotations

from typing import Any

DIGEST = "0123456789abcdef" * 4

# extraArgs that vLLM 0.33 would read as an option the operator sets (or not read at all).
# (id, extraArgs, index of the refused element, expected message fragment)
OWNED_FLAG_ROWS: list[tuple[str, list[str], int, str]] = [
    ("abbrev-tensor-parallel", ["--tensor-parallel", "2"], 0,
     "--tensor-parallel is set by the operator"),
    ("abbrev-served-model", ["--served-model", "x"], 0, "--served-model is set by the operator"),
    ("short-tp", ["-tp", "2"], 0, "-tp is set by the operator"),
    ("short-tp-equals", ["-tp=2"], 0, "-tp is set by the operator"),
    ("short-prefix-t", ["-t", "2"], 0, "is set by the operator from parallelism.tensor"),
    ("underscore-equals", ["--tensor_parallel_size=2"], 0,
     "--tensor-parallel-size is set by the operator"),
    ("dotted-ec", ["--ec-transfer-config.ec_role", "ec_both"], 0,
     "--ec-transfer-config is set by the operator"),
    ("dotted-underscore-ec", ["--ec_transfer_config.ec_ip=0.0.0.0"], 0,
     "--ec-transfer-config is set by the operator"),
    ("abbrev-dotted-kv", ["--kv-transfer.kv_role", "kv_both"], 0,
     "is set by the operator from spec.kvTransfer"),
    ("late-port", ["--max-num-seqs", "8", "--port", "9000"], 2, "--port is set by the operator"),
    ("config-file", ["--config", "/tmp/x.yaml"], 0, "--config is set by the operator"),
    ("ambiguous-abbrev", ["--conf", "/tmp/x.yaml"], 0,
     "ambiguous abbreviation in vLLM 0.33 (could be --config, --config-format)"),
    ("abbrev-nnodes", ["--nnode", "2"], 0, "is set by the operator from the operator"),
    ("short-node-rank", ["-r", "1"], 0, "-r is set by the operator"),
    ("model-equals", ["--model=other/model"], 0, "--model is set by the operator"),
    ("encoder-only", ["--mm-encoder-only"], 0, "--mm-encoder-only is set by the operator"),
    ("abbrev-gpu-mem", ["--gpu-memory-util", "0.5"], 0, "is set by the operator"),
    ("dp-short", ["-dp", "2"], 0, "-dp is set by the operator"),
    ("unknown-flag", ["--no-such-flag", "1"], 0, "is not a `vllm serve` option in vLLM 0.33"),
    ("double-dash", ["--", "--port", "1"], 0, "'--' would turn every later argument"),
    ("stray-value", ["64"], 0, "is not the value of any option"),
    ("stray-after-switch", ["--enforce-eager", "1"], 1, "is not the value of any option"),
    ("missing-value", ["--max-num-seqs"], 0, "expects a value"),
]  # fmt: skip

# extraArgs vLLM 0.33 reads as options the operator does not own: kept as given.
ACCEPTED_FLAG_ROWS: list[tuple[str, list[str]]] = [
    ("max-num-seqs", ["--max-num-seqs", "64"]),
    ("bool", ["--enable-chunked-prefill"]),
    ("negation", ["--no-enable-chunked-prefill"]),
    ("equals", ["--max-num-seqs=8"]),
    ("extends-owned", ["--tokenizer-mode=auto"]),
    ("negative-value", ["--max-num-seqs", "-1"]),
    ("switch-then-option", ["--enforce-eager", "--max-num-seqs", "4"]),
]

# Strings that reach an argv or an environment: no NUL, no control characters.
# (id, text, expected fragment in the launcher's message)
CONTROL_TEXT_ROWS: list[tuple[str, str]] = [
    ("nul", "qwen\x00vl"),
    ("newline", "qwen\nvl"),
    ("escape", "qwen\x1b[31mvl"),
    ("delete", "qwen\x7f"),
    ("tab", "qwen\tvl"),
]
# Spec string fields that reach `vllm serve` (argv) and the message the schema gives.
CONTROL_TEXT_FIELDS: list[tuple[str, str]] = [
    ("model.servedModelName", "spec.model.servedModelName"),
    ("model.revision", "spec.model.revision"),
    ("model.tokenizer", "spec.model.tokenizer"),
    ("model.name", "spec.model.name"),
]
CONTROL_TEXT_EXPECT = "control character"

# image.ref values no runtime can pull; and values that are fine.
IMAGE_REF_BAD: list[tuple[str, str]] = [
    ("space-inside", "registry.example/epd engine:1"),
    ("leading-space", " registry.example/epd-engine:1"),
    ("trailing-space", "registry.example/epd-engine:1 "),
    ("upper-case-path", "registry.example/EPD/engine:1"),
    ("two-tags", "epd-engine:1:2"),
    ("short-digest", "epd-engine@sha256:abc"),
    ("empty-tag", "epd-engine:"),
    ("tab", "epd-engine:1\t"),
    # RE2 (the CRD schema) reads \w as ASCII: a tag pydantic took with a Unicode \w the
    # apiserver refused.
    ("non-ascii-tag", "epd-engine:t\u00e1g"),
]
IMAGE_REF_GOOD: list[str] = [
    "nginx",
    "localhost/epd:dev",
    "registry.example:5000/team/epd-engine:0.33.0",
    f"registry.example/epd-engine@sha256:{DIGEST}",
    f"epd-engine:1.0@sha256:{DIGEST}",
    "UPPER.example.com/epd/engine_x:V1",
]
IMAGE_REF_EXPECT = "not a valid image reference"

# kvTransfer.extraConfig keys: (id, connector, key, value, expected fragment)
KV_EXTRA_ROWS: list[tuple[str, str, str, Any, str]] = [
    ("legacy-kv-ip", "MooncakeConnector", "kv_ip", "10.0.0.1",
     "not a MooncakeConnector key in vLLM 0.33"),
    ("legacy-kv-parallel-size", "MooncakeConnector", "kv_parallel_size", 2,
     "not a MooncakeConnector key"),
    ("mooncake-key-on-nixl", "NixlConnector", "mooncake_protocol", "tcp",
     "not a NixlConnector key"),
    ("typo", "NixlConnector", "backend", ["UCX"], "not a NixlConnector key"),
    ("derived-protocol", "MooncakeConnector", "mooncake_protocol", "tcp",
     "set by the operator from kvTransfer.protocol"),
    ("derived-bootstrap", "MooncakeConnector", "bootstrap_server_address", "10.0.0.1:8998",
     "set by the operator from kvTransfer.bootstrapPort"),
]  # fmt: skip
KV_EXTRA_GOOD: list[tuple[str, str, Any]] = [
    ("MooncakeConnector", "num_workers", 4),
    ("MooncakeConnector", "device_name", "mlx5_0"),
    ("NixlConnector", "backends", ["UCX"]),
]

# mediaIoKwargs / mmProcessorKwargs of the wrong shape or type:
# (id, field, value, expected path suffix)
KWARGS_ROWS: list[tuple[str, str, Any, str]] = [
    ("flat-key", "mediaIoKwargs", {"max_pixels": "not-a-number"}, "mediaIoKwargs.max_pixels"),
    ("modality-not-object", "mediaIoKwargs", {"video": 8}, "mediaIoKwargs.video"),
    ("num-frames-zero", "mediaIoKwargs", {"video": {"num_frames": 0}}, "mediaIoKwargs.video"),
    ("num-frames-string", "mediaIoKwargs", {"video": {"num_frames": "8"}},
     "mediaIoKwargs.video.num_frames"),
    ("fps-negative", "mediaIoKwargs", {"video": {"fps": -2}}, "mediaIoKwargs.video"),
    ("max-pixels-string", "mmProcessorKwargs", {"max_pixels": "not-a-number"},
     "mmProcessorKwargs.max_pixels"),
    ("min-above-max", "mmProcessorKwargs", {"min_pixels": 100, "max_pixels": 10},
     "mmProcessorKwargs"),
]  # fmt: skip
KWARGS_GOOD: list[tuple[str, Any]] = [
    ("mediaIoKwargs", {"video": {"num_frames": 16, "fps": 2}, "image": {"image_mode": "RGB"}}),
    ("mediaIoKwargs", {"video": {"num_frames": -1, "custom_loader_key": "x"}}),
    ("mmProcessorKwargs", {"min_pixels": 3136, "max_pixels": 1003520, "do_resize": True}),
]

# Roles that cannot serve with no pods: (id, spec path of replicas)
ZERO_REPLICAS_ROWS: list[tuple[str, tuple[str, ...]]] = [
    ("encoder", ("roles", "encoder", "replicas")),
    ("decode", ("roles", "decode", "replicas")),
    ("prefill", ("roles", "prefill", "replicas")),
    ("router", ("router", "replicas")),
]
ZERO_REPLICAS_EXPECT = "greater than or equal to 1"


# encoderCache.shared (vLLM's cross_encoder_cache) with what vLLM 0.33 refuses alongside it:
# (id, spec fragment merged into the base, field path, expected fragment)
SHARED_CACHE_ROWS: list[tuple[str, dict[str, Any], str, str]] = [
    ("example-connector",
     {"ecTransfer": {"connector": "ECExampleConnector", "sharedStorage": {"claimName": "rwx"}}},
     "spec.ecTransfer.connector", "needs ECMooncakeConnector"),
    ("ec-both", {"ecTransfer": {"encoderRole": "ec_both"}}, "spec.ecTransfer.encoderRole",
     "needs an encode-only encoder (ec_producer)"),
    ("processor-cache-off", {"encoderCache": {"mmProcessorCacheGb": 0}},
     "spec.encoderCache.mmProcessorCacheGb", "needs the multimodal processor cache"),
    ("user-cross-encoder-cache", {"ecTransfer": {"extraConfig": {"cross_encoder_cache": True}}},
     "spec.ecTransfer.extraConfig.cross_encoder_cache", "set by the operator from "
     "encoderCache.shared"),
    ("user-config-path",
     {"roles": {"encoder": {"env": [{"name": "MOONCAKE_CONFIG_PATH", "value": "/x.json"}]}}},
     "spec.roles.encoder.env[0].name", "set by the launcher from encoderCache.shared"),
    ("model-runner-v1",
     {"roles": {"encoder": {"env": [{"name": "VLLM_USE_V2_MODEL_RUNNER", "value": "0"}]}}},
     "spec.roles.encoder.env[0].value", "needs Model Runner V2"),
    ("lora", {"roles": {"encoder": {"extraArgs": ["--enable-lora"]}}},
     "spec.roles.encoder.extraArgs[0]", "does not support LoRA"),
    ("segment-fractional", {"encoderCache": {"shared": {"segmentSize": "1.5"}}},
     "spec.encoderCache.shared.segmentSize", "whole number of bytes"),
    ("master-ports-equal", {"encoderCache": {"shared": {"master": {"metricsPort": 50051}}}},
     "spec.encoderCache.shared.master.metricsPort", "must differ from port"),
]  # fmt: skip


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


# --------------------------------------------------------------------------- as EPDCluster specs


def _set(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
    obj[path[-1]] = value


def bad_specs() -> list[tuple[str, str, dict[str, Any], str, str]]:
    """Every bad row above as a whole EPDCluster spec: (rule, id, spec, field path, fragment).

    The base is the smallest E/P/D spec (every role present); the operator's parse, the
    admission webhook and the fuzzer use these.
    """
    out: list[tuple[str, str, dict[str, Any], str, str]] = []

    def base() -> dict[str, Any]:
        return {
            "model": {"name": "Qwen/Qwen3-VL-8B-Instruct"},
            "roles": {"encoder": {}, "prefill": {}, "decode": {}},
        }

    for rid, args, index, expect in OWNED_FLAG_ROWS:
        spec = base()
        spec["roles"]["decode"]["extraArgs"] = args
        out.append(("owned-flags", rid, spec, f"spec.roles.decode.extraArgs[{index}]", expect))
    for rid, text in CONTROL_TEXT_ROWS:
        for field, path in CONTROL_TEXT_FIELDS:
            spec = base()
            _set(spec, tuple(field.split(".")), text)
            out.append(("control-text", f"{rid}-{field}", spec, path, CONTROL_TEXT_EXPECT))
        spec = base()
        spec["roles"]["encoder"]["extraArgs"] = ["--max-num-seqs", text]
        out.append(
            (
                "control-text",
                f"{rid}-extraArgs",
                spec,
                "spec.roles.encoder.extraArgs[1]",
                CONTROL_TEXT_EXPECT,
            )
        )
    for rid, ref in IMAGE_REF_BAD:
        spec = base()
        spec["image"] = {"ref": ref}
        out.append(("image-ref", rid, spec, "spec.image.ref", IMAGE_REF_EXPECT))
    for rid, connector, key, value, expect in KV_EXTRA_ROWS:
        spec = base()
        spec["kvTransfer"] = {"connector": connector, "extraConfig": {key: value}}
        out.append(("kv-extra-keys", rid, spec, f"spec.kvTransfer.extraConfig.{key}", expect))
    for rid, field, value, suffix in KWARGS_ROWS:
        spec = base()
        spec[field] = value
        out.append(("typed-kwargs", rid, spec, f"spec.{suffix}", ""))
    for rid, keys in ZERO_REPLICAS_ROWS:
        spec = base()
        _set(spec, keys, 0)
        out.append(("zero-replicas", rid, spec, "spec." + ".".join(keys), ZERO_REPLICAS_EXPECT))
    for rid, fragment, path_, expect in SHARED_CACHE_ROWS:
        spec = base()
        _merge(spec, {"encoderCache": {"shared": {"enabled": True}}})
        _merge(spec, fragment)
        out.append(("shared-encoder-cache", rid, spec, path_, expect))
    return out
