"""epd_operator.api.parse: valid samples parse, every invalid sample fails at its field path,
defaults and derived values, and the top-level checks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from api_samples import InvalidSample, invalid_samples, load, valid_samples

from epd_operator.api.models import EPDClusterSpec
from epd_operator.api.parse import SpecError, format_path, parse, parse_spec

MINIMAL: dict[str, Any] = {
    "apiVersion": "epd-operator.io/v1alpha1",
    "kind": "EPDCluster",
    "metadata": {"name": "c"},
    "spec": {"model": {"name": "m"}, "roles": {"encoder": {}, "decode": {}}},
}


def with_spec(**spec: Any) -> dict[str, Any]:
    obj = copy.deepcopy(MINIMAL)
    obj["spec"].update(spec)
    return obj


def test_enough_samples() -> None:
    invalid = invalid_samples()
    assert len(valid_samples()) >= 5
    assert len(invalid) >= 25
    assert {s.rejected_by for s in invalid} == {"apiserver", "operator"}


@pytest.mark.parametrize("path", valid_samples(), ids=lambda p: p.stem)
def test_valid_samples_parse(path: Path) -> None:
    cluster = parse(load(path))
    assert cluster.metadata.name == load(path)["metadata"]["name"]


@pytest.mark.parametrize("sample", invalid_samples(), ids=lambda s: s.name)
def test_invalid_samples_fail_at_their_path(sample: InvalidSample) -> None:
    with pytest.raises(SpecError) as info:
        parse(sample.obj())
    assert info.value.path == sample.field
    assert sample.expect_parse in info.value.message


@pytest.mark.parametrize(
    ("spec", "topology", "ec_protocol", "kv_protocol"),
    [
        ({}, "E/PD", "tcp", "tcp"),
        ({"rdma": {"enabled": True}}, "E/PD", "rdma", "rdma"),
        ({"rdma": {"enabled": True}, "ecTransfer": {"protocol": "tcp"}}, "E/PD", "tcp", "tcp"),
        (
            {
                "rdma": {"enabled": True},
                "kvTransfer": {"protocol": "tcp"},
                "roles": {"encoder": {}, "prefill": {}, "decode": {}},
            },
            "E/P/D",
            "rdma",
            "tcp",
        ),
    ],
)
def test_derived_values(
    spec: dict[str, Any], topology: str, ec_protocol: str, kv_protocol: str
) -> None:
    parsed = parse(with_spec(**spec)).spec
    assert (parsed.topology, parsed.ec_protocol, parsed.kv_protocol) == (
        topology,
        ec_protocol,
        kv_protocol,
    )


def test_defaults() -> None:
    spec = parse(MINIMAL).spec
    assert spec.ec_transfer.connector == "ECMooncakeConnector"
    assert spec.ec_transfer.control_port == 14579
    assert spec.ec_transfer.encoder_role == "ec_producer"
    assert spec.rdma.resource_name == "rdma/hca_shared_devices_a"
    assert spec.roles.decode.parallelism.gpus == 1
    assert spec.router.port == 8000
    assert spec.kv_transfer is None


@pytest.mark.parametrize(
    ("obj", "path", "fragment"),
    [
        ([], "<root>", "expected an object"),
        ({**MINIMAL, "apiVersion": "v1"}, "apiVersion", "expected epd-operator.io/v1alpha1"),
        ({**MINIMAL, "kind": "Pod"}, "kind", "expected EPDCluster"),
        ({**MINIMAL, "metadata": {}}, "metadata.name", "required"),
        ({k: v for k, v in MINIMAL.items() if k != "spec"}, "spec", "required"),
        (with_spec(model={}), "spec.model.name", "required field is missing"),
        (with_spec(rdma={"enabled": "yes"}), "spec.rdma.enabled", "valid boolean"),
        (with_spec(router={"replicas": "2"}), "spec.router.replicas", "valid integer"),
    ],
)
def test_top_level_errors(obj: Any, path: str, fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        parse(obj)
    assert info.value.path == path
    assert fragment in info.value.message
    assert str(info.value).startswith(f"{path}: ")


def test_more_errors_are_counted() -> None:
    with pytest.raises(SpecError, match=r"and 1 more error\)"):
        parse(with_spec(router={"replicas": -1, "port": 0}))


def test_parse_spec_prefixes_paths() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"model": {"name": "m"}, "roles": {"encoder": {}}})
    assert info.value.path == "spec.roles.decode"
    assert isinstance(parse_spec(MINIMAL["spec"]), EPDClusterSpec)


@pytest.mark.parametrize(
    ("loc", "text"),
    [((), "<root>"), (("spec", "roles"), "spec.roles"), (("env", 2, "name"), "env[2].name")],
)
def test_format_path(loc: tuple[int | str, ...], text: str) -> None:
    assert format_path(loc) == text


@pytest.mark.parametrize(
    "args",
    [
        ["--max-num-seqs", "64"],
        ["--enable-chunked-prefill"],
        ["--tokenizer-mode=auto"],  # extends an owned flag, but is its own option
    ],
)
def test_extra_args_not_owned_are_kept(args: list[str]) -> None:
    spec = parse(with_spec(roles={"encoder": {}, "decode": {"extraArgs": args}})).spec
    assert spec.roles.decode.extra_args == args


def test_cross_encoder_cache_accepted_when_complete() -> None:
    obj = with_spec(
        ecTransfer={"extraConfig": {"cross_encoder_cache": True}},
        encoderCache={"mmProcessorCacheGb": 4},
        roles={
            "encoder": {"env": [{"name": "MOONCAKE_CONFIG_PATH", "value": "/etc/mc/store.json"}]},
            "decode": {},
        },
    )
    assert parse(obj).spec.ec_transfer.extra_config == {"cross_encoder_cache": True}
    obj["spec"]["ecTransfer"]["encoderRole"] = "ec_both"
    with pytest.raises(SpecError, match=r"needs ecTransfer\.encoderRole ec_producer"):
        parse(obj)
