"""A seeded generator of EPDCluster specs for the fuzz tests (unit and apiserver).

Each spec is a valid sample with 1-3 random mutations drawn from: the bad rows of every rule
table (connector/tests/rule_tables.py), random values at random known fields (out of range,
wrong type, control characters, huge), random extraArgs built from vLLM's own option names
(exact, abbreviated, `_`-spelled, `=value`, dotted) and random extraConfig keys. Roughly half
the specs are valid, so both sides of every check are exercised. Deterministic per seed.

`judge(obj)` is the oracle used by both tiers: the admission verdict (`api.admission.review`,
what the webhook answers) and, for an admitted spec, everything a pod would do with it (render
every manifest, build every role's argv and environment, re-check them independently). An
admitted spec that a launcher refuses or whose argv carries an owned or unknown option would
be a bad spec going Ready.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

from api_samples import load, valid_samples

from connector.tests import rule_tables as t
from epd_connector.launch import rules
from epd_connector.launch.argv import build_argv, build_env
from epd_connector.launch.pod import PodContext
from epd_connector.launch.vllm_flags import VLLM_SERVE_OPTIONS
from epd_operator.api.admission import review
from epd_operator.api.imageref import check_reference
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.api.parse import parse
from epd_operator.render import render_cluster
from epd_operator.render.launch import launch_config

SAMPLES = valid_samples()
POD = PodContext.create("10.1.2.3", 0)

_WEIRD: list[Any] = [
    0,
    -1,
    1,
    2,
    3,
    65535,
    65536,
    10**12,
    0.5,
    1.5,
    True,
    "",
    "x",
    "2",
    " x",
    "a\x00b",
    "a\nb",
    None,
    [],
    {},
    [1],
    {"k": 1},
    "é" * 600,
]
_FIELDS: list[tuple[str, ...]] = [
    ("model", "name"), ("model", "servedModelName"), ("model", "revision"),
    ("model", "tokenizer"), ("image", "ref"), ("image", "repository"), ("image", "tag"),
    ("roles", "encoder", "replicas"), ("roles", "decode", "replicas"),
    ("roles", "decode", "parallelism", "tensor"), ("roles", "decode", "parallelism", "data"),
    ("roles", "encoder", "parallelism", "tensor"), ("roles", "decode", "maxModelLen"),
    ("roles", "decode", "gpuMemoryUtilization"), ("ecTransfer", "controlPort"),
    ("ecTransfer", "bufferSize"), ("ecTransfer", "protocol"), ("ecTransfer", "connector"),
    ("kvTransfer", "bootstrapPort"), ("kvTransfer", "sideChannelPort"),
    ("kvTransfer", "connector"), ("rdma", "enabled"), ("router", "replicas"),
    ("encoderCache", "mmProcessorCacheGb"), ("mediaIoKwargs",), ("mmProcessorKwargs",),
]  # fmt: skip
_EXTRA_KEYS = sorted(
    rules.MOONCAKE_EC_EXTRA_KEYS
    | rules.MOONCAKE_KV_EXTRA_KEYS
    | rules.NIXL_KV_EXTRA_KEYS
    | {"kv_ip", "protocol", "device_name", "x"}
)


def _set(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        nxt = obj.get(key)
        if not isinstance(nxt, dict):
            nxt = obj[key] = {}
        obj = nxt
    if value is None:
        obj.pop(path[-1], None)
    else:
        obj[path[-1]] = value


def _flag(rng: random.Random) -> list[str]:
    name = rng.choice(sorted(VLLM_SERVE_OPTIONS))
    if name.startswith("--"):
        form = rng.randrange(5)
        if form == 1:  # abbreviation
            name = name[: rng.randint(3, len(name))]
        elif form == 2:
            name = "--" + name[2:].replace("-", "_")
        elif form == 3:
            name += ".key"
        elif form == 4:
            return [f"{name}={rng.choice(['1', 'x', '{}'])}"]
    return [name, rng.choice(["1", "8", "auto", "-1"])]


def _mutate(rng: random.Random, spec: dict[str, Any]) -> None:
    kind = rng.randrange(6)
    if kind == 0:  # a bad row of a rule table, grafted onto this spec
        _, _, bad, _, _ = rng.choice(t.bad_specs())
        if "roles" in bad and "prefill" in bad["roles"]:
            spec.setdefault("roles", {}).setdefault("prefill", {})
        for key, value in bad.items():
            if key == "roles":
                for role, rs in value.items():
                    spec["roles"].setdefault(role, {}).update(copy.deepcopy(rs))
            elif key != "model":
                spec[key] = copy.deepcopy(value)
            else:
                spec["model"].update(copy.deepcopy(value))
    elif kind == 1:
        _set(spec, rng.choice(_FIELDS), copy.deepcopy(rng.choice(_WEIRD)))
    elif kind == 2:
        role = rng.choice(["encoder", "decode"])
        args: list[str] = []
        for _ in range(rng.randint(1, 3)):
            args += _flag(rng)
        spec["roles"][role]["extraArgs"] = args
    elif kind == 3:
        block = rng.choice(["ecTransfer", "kvTransfer"])
        if block == "kvTransfer":
            spec["roles"].setdefault("prefill", {})
        spec.setdefault(block, {})["extraConfig"] = {
            rng.choice(_EXTRA_KEYS): rng.choice([1, "tcp", True, ["UCX"]])
        }
    elif kind == 4:
        spec["roles"].setdefault("prefill", {}) if rng.random() < 0.5 else spec["roles"].pop(
            "prefill", None
        )
    else:
        ref = rng.choice([*t.IMAGE_REF_GOOD, *(r for _, r in t.IMAGE_REF_BAD)])
        spec["image"] = {"ref": ref}


def generate(seed: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    bases = [load(p) for p in SAMPLES]
    out = []
    for i in range(count):
        obj = copy.deepcopy(rng.choice(bases))
        obj["metadata"] = {"name": f"fuzz-{seed}-{i}", "uid": f"uid-{i}"}
        for _ in range(rng.randint(0, 3)):
            _mutate(rng, obj["spec"])
        out.append(obj)
    return out


@dataclass
class Judgement:
    admitted: bool
    refusal: str = ""
    refusal_path: str = ""
    problems: list[str] = field(default_factory=list)
    """For an admitted spec: why a pod could not run it (must stay empty)."""


def judge(obj: dict[str, Any]) -> Judgement:
    verdict = review("CREATE", obj, None)
    if verdict.error is not None:
        return Judgement(False, str(verdict.error), verdict.error.path)
    out = Judgement(True)
    cluster = parse(obj)
    manifests = render_cluster(cluster, OperatorConfig.from_env({}))
    for m in manifests:
        for ctr in (
            ((m.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers", [])
        ):
            why = check_reference(ctr["image"])
            if why is not None:
                out.problems.append(f"{m['metadata']['name']}: image {ctr['image']!r} {why}")
    config = launch_config(cluster)
    for role in config.present_roles():
        try:
            argv = build_argv(config, role, POD)
            env = build_env(config, role, POD)
        except Exception as exc:
            out.problems.append(f"launcher refuses {role}: {exc}")
            continue
        extra = config.role(role).extra_args
        for arg in argv:
            if rules.control_char(arg) is not None:
                out.problems.append(f"{role}: control character in argv {arg!r}")
        for arg in extra:
            got = rules.resolve_flag(arg)
            if got.option == "" or got.option in rules.OWNED_FLAGS:
                out.problems.append(f"{role}: extra argument {arg!r} reads as {got}")
        for key, value in env.items():
            if "\x00" in value:
                out.problems.append(f"{role}: NUL in env {key}")
    return out
