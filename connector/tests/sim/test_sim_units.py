"""Simulator building blocks: media handling, the slab allocator, the pod env, item matching."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from epd_connector.launch.config import LaunchConfigError
from epd_connector.sim.media import (
    MediaError,
    decode_data_url,
    encoder_output,
    grid_thw,
    identifier,
    media_parts,
    prompt_text,
)
from epd_connector.sim.server import _transfer_id
from epd_connector.sim.settings import SimSettings, pod_env
from epd_connector.sim.slab import Slab, SlabFull


def test_data_urls() -> None:
    assert decode_data_url("data:image/png;base64," + base64.b64encode(b"abc").decode()) == b"abc"
    assert decode_data_url("data:text/plain,hello") == b"hello"


@pytest.mark.parametrize(
    ("url", "error"),
    [("data:image/png;base64", "no ','"), ("data:image/png;base64,@@@", "not valid base64")],
)
def test_bad_data_urls(url: str, error: str) -> None:
    with pytest.raises(MediaError, match=error):
        decode_data_url(url)


def test_media_parts_and_text() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a b"},
                    {"type": "image_url", "image_url": {"url": "data:,x"}},
                    {"type": "image_embeds", "image_embeds": {}, "uuid": "u"},
                ],
            },
            {"role": "assistant", "content": "c"},
        ]
    }
    parts = media_parts(body)
    assert [(p.index, p.modality, p.is_embeds) for p in parts] == [
        (0, "image", False),
        (1, "image", True),
    ]
    assert parts[0].url == "data:,x"
    assert prompt_text(body) == "a b c"
    assert prompt_text({"prompt": "x y"}) == "x y"


def test_identifiers_and_outputs_are_stable_across_pods() -> None:
    # Pinned: encoder and consumer pods compute these independently (other processes, other
    # releases during a rollout), so they must not depend on anything but their inputs.
    assert identifier("m", "image", b"1") == (
        "7d69dcd77f64cceddc4c822ad02e260442de11ca414c2c2801b1cfd0da49318d"
    )
    assert identifier("m", "image", b"1") != identifier("m", "image", b"2")
    assert identifier("m", "image", b"1") != identifier("m2", "image", b"1")
    assert identifier("m", "image", b"1", uuid="mine") == "mine"
    assert encoder_output("h", 16).hex() == "16263c42bf5b1ceb54076bcbd51f0421"
    assert encoder_output("h", 1000)[:16] == encoder_output("h", 16)
    assert encoder_output("h", 1000) != encoder_output("g", 1000)
    assert len(encoder_output("h", 12345)) == 12345


@pytest.mark.parametrize("tokens", [1, 7, 64, 256, 1000])
def test_grid_thw_matches_token_count(tokens: int) -> None:
    t, h, w = grid_thw(tokens)
    assert t * h * w // 4 == tokens


def test_slab_alloc_free_coalesce_and_full() -> None:
    slab = Slab(1024)
    a, b, c = slab.alloc(100), slab.alloc(300), slab.alloc(64)
    assert (a, b, c) == (0, 128, 448)
    with pytest.raises(SlabFull, match="buffer pool is full"):
        slab.alloc(600)
    slab.free(b)
    slab.free(a)
    assert slab.alloc(400) == 0  # the freed neighbours merged
    slab.free(0)
    slab.free(c)
    assert slab.used_bytes == 0
    assert slab.alloc(1024) == 0


_POD = {"EPD_ROLE": "decode", "POD_IP": "10.0.0.9", "POD_NAME": "c-decode-2", "POD_NAMESPACE": "ns"}
ENV_BAD = [
    ({**_POD, "EPD_ROLE": ""}, "EPD_ROLE"),
    ({**_POD, "EPD_ROLE": "router"}, "EPD_ROLE='router'"),
    ({**_POD, "POD_IP": ""}, "POD_IP"),
    ({**_POD, "POD_IP": "pod-ip"}, "POD_IP='pod-ip'"),
    ({**_POD, "POD_NAME": "no_ordinal"}, "POD_NAME"),
]


@pytest.mark.parametrize(("env", "error"), ENV_BAD)
def test_pod_env_errors_name_the_variable(env: dict[str, str], error: str) -> None:
    with pytest.raises(LaunchConfigError, match=error):
        pod_env(env)


def test_pod_env_defaults() -> None:
    launch_config, pod = pod_env(_POD)
    assert (launch_config, pod.role, pod.ip, pod.name, pod.namespace) == (
        "/etc/epd/launch.json",
        "decode",
        "10.0.0.9",
        "c-decode-2",
        "ns",
    )
    assert SimSettings(tokens_per_image=10, hidden_size=8).bytes_per_image == 160


MATCHING = [
    # vLLM's _request_transfer_id: position if mm_hash absent/equal, else search by mm_hash
    ([{"transfer_id": "t0"}], 0, "h", "t0"),
    ([{"transfer_id": "t0", "mm_hash": "h"}], 0, "h", "t0"),
    (
        [{"transfer_id": "t0", "mm_hash": "other"}, {"transfer_id": "t1", "mm_hash": "h"}],
        0,
        "h",
        "t1",
    ),
    ([{"transfer_id": "t0"}], 1, "h", None),
    ([{"mm_hash": "h"}], 0, "h", None),
    ([], 0, "h", None),
]


@pytest.mark.parametrize(("items", "index", "mm_hash", "want"), MATCHING)
def test_transfer_id_matching(items: list[Any], index: int, mm_hash: str, want: str | None) -> None:
    assert _transfer_id(items, index, mm_hash) == want
