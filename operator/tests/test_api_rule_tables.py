"""The shared bad-input tables (connector/tests/rule_tables.py) through `api.parse`: every
row is refused at its field path with its reason, every good row is accepted unchanged."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from connector.tests import rule_tables as t
from epd_connector.launch.argv import build_argv
from epd_connector.launch.pod import PodContext
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.api.parse import SpecError, parse
from epd_operator.render import render_cluster
from epd_operator.render.launch import launch_config


def obj(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "epd-operator.io/v1alpha1",
        "kind": "EPDCluster",
        "metadata": {"name": "rules", "uid": "0000-rules"},
        "spec": copy.deepcopy(spec),
    }


BASE: dict[str, Any] = {
    "model": {"name": "m"},
    "roles": {"encoder": {}, "prefill": {}, "decode": {}},
}
BAD = t.bad_specs()


@pytest.mark.parametrize(
    ("rule", "rid", "spec", "path", "expect"), BAD, ids=[f"{b[0]}/{b[1]}" for b in BAD]
)
def test_parse_refuses(rule: str, rid: str, spec: dict[str, Any], path: str, expect: str) -> None:
    with pytest.raises(SpecError) as info:
        parse(obj(spec))
    assert info.value.path.startswith(path), (rule, rid, str(info.value))
    assert expect in info.value.message


def test_every_rule_has_rows() -> None:
    assert {b[0] for b in BAD} == {
        "owned-flags",
        "control-text",
        "image-ref",
        "kv-extra-keys",
        "typed-kwargs",
        "zero-replicas",
        "shared-encoder-cache",
    }


@pytest.mark.parametrize(("rid", "args"), t.ACCEPTED_FLAG_ROWS)
def test_parse_keeps_flags_it_does_not_own(rid: str, args: list[str]) -> None:
    spec = copy.deepcopy(BASE)
    spec["roles"]["decode"]["extraArgs"] = args
    assert parse(obj(spec)).spec.roles.decode.extra_args == args


@pytest.mark.parametrize("ref", t.IMAGE_REF_GOOD)
def test_parse_accepts_image_refs(ref: str) -> None:
    spec = {**BASE, "image": {"ref": ref}}
    assert parse(obj(spec)).spec.image.ref == ref  # type: ignore[union-attr]


@pytest.mark.parametrize(("connector", "key", "value"), t.KV_EXTRA_GOOD)
def test_parse_accepts_kv_keys_vllm_reads(connector: str, key: str, value: Any) -> None:
    spec = {**BASE, "kvTransfer": {"connector": connector, "extraConfig": {key: value}}}
    cluster = parse(obj(spec))
    assert render_cluster(cluster, OperatorConfig.from_env({}))
    # The launcher checks the same key set at pod start, and passes the key on.
    argv = build_argv(launch_config(cluster), "prefill", PodContext.create("10.0.0.7", 0))
    kv = json.loads(argv[argv.index("--kv-transfer-config") + 1])
    assert kv["kv_connector_extra_config"][key] == value


@pytest.mark.parametrize(("field", "value"), t.KWARGS_GOOD)
def test_typed_kwargs_reach_the_launch_config_as_vllm_spells_them(field: str, value: Any) -> None:
    cfg = launch_config(parse(obj({**BASE, field: value})))
    got = cfg.media_io_kwargs if field == "mediaIoKwargs" else cfg.mm_processor_kwargs
    assert got == value


def test_env_values_may_hold_line_breaks_but_not_nul() -> None:
    spec = copy.deepcopy(BASE)
    spec["roles"]["decode"]["env"] = [{"name": "JSON", "value": '{\n\t"a": 1\n}'}]
    parse(obj(spec))
    spec["roles"]["decode"]["env"] = [{"name": "BAD", "value": "a\x00b"}]
    with pytest.raises(SpecError) as info:
        parse(obj(spec))
    assert info.value.path == "spec.roles.decode.env[0].value"
    assert "control character" in info.value.message
