"""The pod environment the launcher reads: good and bad inputs as tables."""

from __future__ import annotations

import pytest

from epd_connector.launch.config import LaunchConfigError
from epd_connector.launch.pod import (
    DEFAULT_LAUNCH_CONFIG,
    PodContext,
    PodEnvError,
    engine_from_env,
    launch_config_path,
    ordinal_of,
)

GOOD_ENV = {
    "EPD_ROLE": "decode",
    "POD_IP": "10.244.1.7",
    "POD_NAME": "demo-decode-12",
    "POD_NAMESPACE": "llm",
}


def test_from_env_reads_every_field() -> None:
    pod = PodContext.from_env(GOOD_ENV)
    assert pod == PodContext(
        ip="10.244.1.7", ordinal=12, name="demo-decode-12", namespace="llm", role="decode"
    )


@pytest.mark.parametrize(
    ("name", "ordinal"),
    [
        ("demo-encoder-0", 0),
        ("demo-decode-7", 7),
        ("a-b-c-123", 123),
        ("x.y-2", 2),
    ],
)
def test_ordinal_of(name: str, ordinal: int) -> None:
    assert ordinal_of(name) == ordinal


@pytest.mark.parametrize(
    ("ip", "normalised"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("fd00:10:244:0:0:0:0:7", "fd00:10:244::7"),
        ("FD00::5", "fd00::5"),
    ],
)
def test_ip_is_normalised(ip: str, normalised: str) -> None:
    assert PodContext.from_env({**GOOD_ENV, "POD_IP": ip}).ip == normalised


BAD_ENV = [
    ({"EPD_ROLE": None}, "EPD_ROLE: required"),
    ({"EPD_ROLE": "router"}, "EPD_ROLE='router': must be one of encoder, prefill, decode"),
    ({"EPD_ROLE": "Decode"}, "EPD_ROLE='Decode'"),
    ({"POD_IP": None}, "POD_IP: required"),
    ({"POD_IP": "  "}, "POD_IP: required"),
    ({"POD_IP": "10.0.0.256"}, "POD_IP='10.0.0.256': not an IP address"),
    ({"POD_IP": "demo-decode-0.demo-decode"}, "POD_IP='demo-decode-0.demo-decode'"),
    ({"POD_NAME": None}, "POD_NAME: required"),
    ({"POD_NAME": "demo-decode"}, "POD_NAME='demo-decode': not a StatefulSet pod name"),
    ({"POD_NAME": "demo-decode-01"}, "POD_NAME='demo-decode-01'"),
    ({"POD_NAME": "demo-decode-7abc"}, "POD_NAME='demo-decode-7abc'"),
    ({"POD_NAME": "-3"}, "POD_NAME='-3'"),
    ({"POD_NAMESPACE": ""}, "POD_NAMESPACE: required"),
]


@pytest.mark.parametrize(("change", "message"), BAD_ENV, ids=[m for _, m in BAD_ENV])
def test_bad_env_names_the_variable(change: dict[str, str | None], message: str) -> None:
    env = {**GOOD_ENV, **{k: v for k, v in change.items() if v is not None}}
    for key in (k for k, v in change.items() if v is None):
        del env[key]
    with pytest.raises(PodEnvError) as err:
        PodContext.from_env(env)
    assert message in str(err.value)
    # callers handle one error type for "this pod cannot be launched as configured"
    assert isinstance(err.value, LaunchConfigError)


@pytest.mark.parametrize(
    ("env", "engine"),
    [({}, "vllm"), ({"EPD_ENGINE": "vllm"}, "vllm"), ({"EPD_ENGINE": "sim"}, "sim")],
)
def test_engine(env: dict[str, str], engine: str) -> None:
    assert engine_from_env(env) == engine


def test_bad_engine_names_the_variable() -> None:
    with pytest.raises(PodEnvError, match="EPD_ENGINE='vLLM': must be one of vllm, sim"):
        engine_from_env({"EPD_ENGINE": "vLLM"})


def test_create_validates() -> None:
    assert PodContext.create("::1", 0).ip == "::1"
    with pytest.raises(PodEnvError, match="POD_IP='nope'"):
        PodContext.create("nope", 0)
    with pytest.raises(PodEnvError, match="ordinal must be >= 0"):
        PodContext.create("10.0.0.1", -1)


def test_launch_config_path() -> None:
    assert launch_config_path({}) == DEFAULT_LAUNCH_CONFIG == "/etc/epd/launch.json"
    assert launch_config_path({"EPD_LAUNCH_CONFIG": "/cfg/x.json"}) == "/cfg/x.json"
