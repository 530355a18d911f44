"""The launch-contract rules and defaults, each defined once (pure: no I/O, no heavy imports).

Every layer that needs one of these imports it from here: the operator's API models and the
CEL they generate, `epd_operator.api.parse` (and so the admission webhook), the renderer, the
launcher (`argv.py`, the second line of defence at pod start), the router and the simulator.

- defaults: engine HTTP port, EC control port, Mooncake KV bootstrap port, NIXL side-channel
  port;
- topology: which role consumes encoder outputs (`ec_consumer_of`);
- port blocks: the EC control ports an EC consumer binds (`ec_port_block`) and the NIXL
  side-channel ports (`nixl_port_block`), in Python and as CEL text built from the same formula;
- flags: `resolve_flag` maps one `vllm serve` argument to the option vLLM 0.33's parser would
  pick for it (`_`/`-` equivalence, `--flag=value`, dotted JSON keys, short aliases such as
  `-tp`, unambiguous-prefix abbreviations), against the option table of vLLM 0.33's own parser
  (`vllm_flags.py`, checked against the real parser by the `vllm` contract tests);
  `check_extra_args` refuses owned, unknown and ambiguous flags;
- text: strings that reach an argv or an environment carry no NUL or control characters;
- connector extra-config keys vLLM 0.33's connectors read (`*_EXTRA_KEYS`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from .vllm_flags import VLLM_SERVE_NARGS, VLLM_SERVE_OPTIONS

RoleName = Literal["encoder", "prefill", "decode"]

# ------------------------------------------------------------------------------- defaults

ENGINE_HTTP_PORT: Final = 8000
"""vLLM's OpenAI server port inside every engine pod."""
DEFAULT_EC_PORT: Final = 14579
"""ec_port: vLLM 0.33's ECTransferConfig default (config/ec_transfer.py)."""
DEFAULT_KV_BOOTSTRAP_PORT: Final = 8998
"""VLLM_MOONCAKE_BOOTSTRAP_PORT: vLLM 0.33's default (envs.py)."""
DEFAULT_NIXL_SIDE_CHANNEL_PORT: Final = 5600
"""VLLM_NIXL_SIDE_CHANNEL_PORT: vLLM 0.33's default (envs.py)."""
MAX_PORT: Final = 65535

# ------------------------------------------------------------------------------- topology


def ec_consumer_of(has_prefill: bool) -> RoleName:
    """The role whose pods receive encoder outputs: prefill in E/P/D, decode in E/PD."""
    return "prefill" if has_prefill else "decode"


def ec_consumer_field_cel(root: str, expr: str) -> str:
    """`ec_consumer_of` as CEL: `expr` (written over `R`, the role) for the EC consumer role of
    the spec object `root`, e.g. `ec_consumer_field_cel("self", "R.port")`."""
    p, d = f"{root}.roles.prefill", f"{root}.roles.decode"
    return f"(has({p}) ? {expr.replace('R.', p + '.')} : {expr.replace('R.', d + '.')})"


def ec_consumer_cel(root: str = "self") -> str:
    """CEL for `data * tensor` of the EC consumer role, over the spec object `root`."""
    return ec_consumer_field_cel(root, "R.parallelism.data * R.parallelism.tensor")


# ------------------------------------------------------------------------------- port blocks


def ec_port_block(port: int, data: int, tensor: int) -> tuple[int, int]:
    """Ports an EC consumer pod binds: DP rank d, TP rank r listens on port + d*tensor + r."""
    return port, port + data * tensor - 1


def ec_port_block_cel(port: str, ranks: str) -> tuple[str, str]:
    """`ec_port_block` as CEL: `ranks` is the CEL expression of data * tensor."""
    return port, f"({port} + {ranks} - 1)"


def nixl_port_block(port: int, data: int) -> tuple[int, int]:
    """NIXL side-channel ports: one per DP rank (VLLM_NIXL_SIDE_CHANNEL_PORT + dp_rank)."""
    return port, port + data - 1


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


# ------------------------------------------------------------------------------- text

CONTROL_CHARS: Final = re.compile(r"[\x00-\x1f\x7f]")
"""Characters no argv element may carry (exec refuses NUL; the rest corrupt logs and flags)."""
NO_CONTROL_PATTERN: Final = r"^[^\x00-\x1f\x7f]*$"
"""The same rule as a JSON-schema / CRD pattern (Go RE2 and pydantic agree on it)."""
ENV_VALUE_FORBIDDEN: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""Environment values may hold tabs and line breaks (multi-line JSON), nothing else below
0x20: NUL cannot be passed to exec at all."""
ENV_VALUE_PATTERN: Final = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


def control_char(text: str, *, env_value: bool = False) -> str | None:
    """The first forbidden character of `text` as a readable escape, or None."""
    found = (ENV_VALUE_FORBIDDEN if env_value else CONTROL_CHARS).search(text)
    return None if found is None else repr(found.group(0))


# ------------------------------------------------------------------------------- connectors

# Every key ECMooncakeConnector 0.33.0 reads from ec_connector_extra_config
# (ec_connector/mooncake/config.py, mooncake_store_embedding/data.py).
MOONCAKE_EC_EXTRA_KEYS: Final = frozenset(
    {
        "mooncake_protocol",
        "control_timeout_s",
        "push_wait_timeout_s",
        "cross_encoder_cache",
        "store_max_pending_items",
        "store_max_pending_bytes",
        "store_read_buffer_bytes",
        "embedding_cache_prefix",
        "embedding_model_identity",
    }
)
# Keys vLLM 0.33.0's KV connectors read from kv_connector_extra_config (the contract test
# scans kv_connector/v1/mooncake/mooncake_connector.py and kv_connector/v1/nixl/*.py).
MOONCAKE_KV_EXTRA_KEYS: Final = frozenset(
    {"bootstrap_server_address", "device_name", "mooncake_protocol", "num_workers"}
)
NIXL_KV_EXTRA_KEYS: Final = frozenset(
    {
        "backends",
        "bidirectional_kv_xfer",
        "decoder_kv_blocks_ttl",
        "enforce_handshake_compat",
        "engine_ttl",
        "kv_lease_duration",
        "kv_recompute_threshold",
        "num_threads",
        "push_registration_timeout",
    }
)
KV_EXTRA_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "MooncakeConnector": MOONCAKE_KV_EXTRA_KEYS,
    "NixlConnector": NIXL_KV_EXTRA_KEYS,
}
# KV keys the operator derives (typed field, or wiring the router depends on).
KV_DERIVED_KEYS: Final[Mapping[str, str]] = {
    "mooncake_protocol": "the operator from kvTransfer.protocol",
    "bootstrap_server_address": "the operator from kvTransfer.bootstrapPort (prefill pods serve "
    "the bootstrap, the router dials it)",
}

# ------------------------------------------------------------------------------- flags

# Options of `vllm serve` the launcher derives from the spec, by the canonical (first long)
# option string of vLLM's parser, with what sets it instead.
OWNED_FLAGS: Final[Mapping[str, str]] = {
    "--model": "model.name",
    "--config": "the operator (a config file could set any owned flag)",
    "--host": "the operator (0.0.0.0)",
    "--port": "roles.<role>.port",
    "--uds": "roles.<role>.port (the engine serves HTTP on a TCP port)",
    "--served-model-name": "model.servedModelName",
    "--revision": "model.revision",
    "--tokenizer": "model.tokenizer",
    "--tensor-parallel-size": "parallelism.tensor",
    "--pipeline-parallel-size": "parallelism.pipeline",
    "--data-parallel-size": "parallelism.data",
    "--data-parallel-size-local": "parallelism.data",
    "--data-parallel-rank": "parallelism.data",
    "--data-parallel-start-rank": "parallelism.data",
    "--data-parallel-address": "parallelism.data",
    "--data-parallel-rpc-port": "parallelism.data",
    "--headless": "parallelism.data",
    "--data-parallel-backend": "parallelism.data (one pod runs every DP rank, mp backend)",
    "--data-parallel-hybrid-lb": "parallelism.data (internal load balancing)",
    "--data-parallel-external-lb": "parallelism.data (internal load balancing)",
    "--data-parallel-multi-port-external-lb": "parallelism.data (internal load balancing)",
    "--nnodes": "the operator (one pod is one node of an engine)",
    "--node-rank": "the operator (one pod is one node of an engine)",
    "--max-model-len": "maxModelLen",
    "--gpu-memory-utilization": "gpuMemoryUtilization",
    "--max-num-batched-tokens": "encoderCache.maxNumBatchedTokens",
    "--mm-processor-cache-gb": "encoderCache.mmProcessorCacheGb",
    "--limit-mm-per-prompt": "encoderCache.limitMmPerPrompt",
    "--mm-encoder-tp-mode": "encoderCache.mmEncoderTpMode",
    "--media-io-kwargs": "spec.mediaIoKwargs",
    "--mm-processor-kwargs": "spec.mmProcessorKwargs",
    "--ec-transfer-config": "spec.ecTransfer",
    "--kv-transfer-config": "spec.kvTransfer",
    "--mm-encoder-only": "the encoder role (ec_producer switches it on)",
}

# argparse treats these as values, not options, when no option looks like a negative number.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")


@dataclass(frozen=True)
class FlagProblem:
    """Why one extra argument is refused: `index` into the list, `message` says why."""

    index: int
    message: str


@dataclass(frozen=True)
class Resolved:
    """What vLLM's parser makes of one argument: `option` is the canonical long option (None
    for a value), `candidates` lists the options an ambiguous abbreviation could mean."""

    spelled: str
    option: str | None
    candidates: tuple[str, ...] = ()


def _normalise(arg: str) -> str:
    """FlexibleArgumentParser's rewrites: `_` -> `-` in a long option's name (before `=` and the
    first `.`), the `-O<level>` shorthand; then the part before `=` and the dotted JSON key."""
    if arg.startswith("--"):
        head = arg.split("=", 1)[0][2:].split(".", 1)[0]
        return "--" + head.replace("_", "-")
    if arg.startswith("-O") and arg != "-O":
        return "--optimization-level"
    name = arg.split("=", 1)[0] if "=" in arg else arg
    return name.split(".", 1)[0]


def resolve_flag(arg: str, options: Mapping[str, str] = VLLM_SERVE_OPTIONS) -> Resolved:
    """Which option of `vllm serve` `arg` selects, the way argparse (allow_abbrev, Python 3.11)
    behind vLLM's FlexibleArgumentParser matches it. `options`: option string -> canonical."""
    if not arg.startswith("-") or arg in ("-", "--") or _NEGATIVE_NUMBER.match(arg):
        return Resolved(arg, None)
    name = _normalise(arg)
    if name in options:
        return Resolved(arg, options[name])
    if arg.startswith("--"):
        matches = {options[o] for o in options if o.startswith(name)}
    else:
        # A single dash: an exact short option followed by its value (`-O3`), or a prefix of a
        # single-dash option (`-t` for `-tp`).
        matches = {
            options[o]
            for o in options
            if not o.startswith("--") and (o == name[:2] or o.startswith(name))
        }
    if len(matches) == 1:
        return Resolved(arg, matches.pop())
    if matches:
        return Resolved(arg, "", tuple(sorted(matches)))
    return Resolved(arg, "")


def _embedded_value(arg: str) -> bool:
    """`--flag=value`, `-tp=2`, `-O3`: the option's value is inside the argument."""
    return "=" in arg or (arg.startswith("-O") and len(arg) > 2 and not arg.startswith("--"))


def check_extra_args(
    args: Sequence[str],
    options: Mapping[str, str] = VLLM_SERVE_OPTIONS,
    owned: Mapping[str, str] = OWNED_FLAGS,
    nargs: Mapping[str, str] = VLLM_SERVE_NARGS,
) -> FlagProblem | None:
    """The first extra `vllm serve` argument vLLM 0.33 would read as an owned option, or
    could not read at all (unknown or ambiguous option, a value no option takes: `vllm serve`
    has exactly one positional, the model); None when every argument is acceptable."""
    takes = "0"  # how many values the option before this argument still takes
    for i, arg in enumerate(args):
        bad = control_char(arg)
        if bad is not None:
            return FlagProblem(i, f"control character {bad} in an argument")
        if arg == "--":
            return FlagProblem(i, "'--' would turn every later argument into a positional one")
        got = resolve_flag(arg, options)
        if got.option is None:
            if takes == "0":
                return FlagProblem(
                    i,
                    f"{arg!r} is not the value of any option (vLLM 0.33 would refuse a "
                    "second positional argument)",
                )
            takes = "*" if takes in ("*", "+") else "0"
            continue
        if got.candidates:
            return FlagProblem(
                i,
                f"{arg!r} is an ambiguous abbreviation in vLLM 0.33 (could be "
                f"{', '.join(got.candidates)})",
            )
        if not got.option:
            return FlagProblem(i, f"{arg!r} is not a `vllm serve` option in vLLM 0.33")
        if got.option in owned:
            name = _normalise(arg)
            means = "" if name == got.option else f" (vLLM 0.33 reads it as {got.option})"
            return FlagProblem(
                i,
                f"{name} is set by the operator from {owned[got.option]}{means}; use that instead",
            )
        if _embedded_value(arg):
            takes = "0"
        elif "." in arg.split("=", 1)[0]:
            takes = "1"  # a dotted JSON key (--x.key value) takes one value
        else:
            takes = nargs.get(got.option, "1")
    if takes in ("1", "+"):
        return FlagProblem(len(args) - 1, f"{args[-1]!r} expects a value")
    return None


# ------------------------------------------------------------------------------- shared store

DEFAULT_STORE_MASTER_PORT: Final = 50051
"""mooncake_master's RPC port (its own default, `--rpc_port`)."""
DEFAULT_STORE_METRICS_PORT: Final = 9003
"""mooncake_master's HTTP admin port (`--metrics_port`): /health and /metrics."""
DEFAULT_STORE_SEGMENT_BYTES: Final = 4 << 30
"""global_segment_size: vLLM 0.33's default (distributed/mooncake_store.py), 4 GiB."""
DEFAULT_STORE_LOCAL_BUFFER_BYTES: Final = 1 << 30
"""local_buffer_size: ours (vLLM's 4 GiB default stages far more than an encoder puts at once)."""
STORE_READ_BUFFER_BYTES: Final = 128 << 20
"""store_read_buffer_bytes: vLLM 0.33's default pinned read buffer of the EC Store client."""


def store_pinned_bytes(segment: int, local_buffer: int, read_buffer: int | None) -> int:
    """Host memory one encoder pins for the shared store in embedded mode: its segment of the
    pool, the local staging buffer and the Store client's read buffer (vLLM 0.33.0's
    Mooncake Store client; render/store.py sizes the encoder's memory with it)."""
    return (
        segment + local_buffer + (STORE_READ_BUFFER_BYTES if read_buffer is None else read_buffer)
    )


def store_problem(
    connector: str, encoder_role: str, mm_processor_cache_gb: float | None
) -> tuple[str, str] | None:
    """Why vLLM 0.33 would refuse `cross_encoder_cache` (ec_connector/mooncake/config.py), as
    (what, why), or None: it needs ECMooncakeConnector, an encode-only producer and the
    multimodal processor cache (vLLM's default 4 GiB counts, 0 disables it)."""
    if connector != "ECMooncakeConnector":
        return "connector", "the shared encoder cache needs ECMooncakeConnector"
    if encoder_role != "ec_producer":
        return "encoder_role", "the shared encoder cache needs an encode-only encoder (ec_producer)"
    if mm_processor_cache_gb is not None and mm_processor_cache_gb <= 0:
        return (
            "mm_processor_cache_gb",
            "the shared encoder cache needs the multimodal processor cache (> 0)",
        )
    return None
