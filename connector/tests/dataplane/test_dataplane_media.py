"""How media reach the EC consumer: by reference (preprocessed once, on the encoder) or raw.

Simulated engines count what they preprocess (raw items loaded: `epd_sim_preprocessed_items`)
and the metadata-only items they accept (`epd_sim_referenced_items`), and reject a
metadata-only item the way vLLM 0.33 does where missing embeddings are not allowed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dataplane_support import chat, image_url, total

from epd_connector.sim.localcluster import LocalCluster, http_json

PRE = "epd_sim_preprocessed_items_total"
REF = "epd_sim_referenced_items_total"


def _m(c: LocalCluster, role: str, name: str) -> float:
    return sum(total(c.metrics(p), name) for p in c.sims(role))


@pytest.fixture(scope="module", params=["reference", "raw"])
def epd(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    c = LocalCluster(
        Path(tmp_path_factory.mktemp(f"media-{request.param}")),
        encoders=1,
        decodes=1,
        router_args=["--consumer-media", request.param],
    )
    with c:
        yield c


def _counts(c: LocalCluster, *roles: str) -> dict[str, float]:
    return {f"{r}/{n}": _m(c, r, n) for r in roles for n in (PRE, REF)}


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


def test_the_consumer_preprocesses_only_in_raw_mode(epd: LocalCluster) -> None:
    mode = epd.router_args[-1]
    before = _counts(epd, "encoder", "decode")
    body = chat(image_url(f"media-{mode}-1"), image_url(f"media-{mode}-2"), max_tokens=3)
    status, answer = http_json("POST", epd.url + "/v1/chat/completions", body)
    assert status == 200, answer
    assert answer["choices"][0]["message"]["content"] == " tok0 tok1 tok2"
    moved = _delta(_counts(epd, "encoder", "decode"), before)
    assert moved[f"encoder/{PRE}"] == 2  # the encoder always loads the pixels
    if mode == "reference":
        assert (moved[f"decode/{PRE}"], moved[f"decode/{REF}"]) == (0, 2)
    else:
        assert (moved[f"decode/{PRE}"], moved[f"decode/{REF}"]) == (2, 0)
    assert _m(epd, "decode", "epd_sim_consumer_encoded_items_total") == 0


def test_a_repeated_image_is_one_identifier_in_both_modes(epd: LocalCluster) -> None:
    # The same picture twice in one request: both items name the same encoder output.
    img = image_url(f"twice-{epd.router_args[-1]}")
    before = _m(epd, "decode", "epd_sim_ec_items_verified_total")
    status, answer = http_json("POST", epd.url + "/v1/chat/completions", chat(img, img))
    assert status == 200, answer
    assert _m(epd, "decode", "epd_sim_ec_items_verified_total") - before == 2


def test_metadata_only_items_are_refused_where_vllm_refuses_them(epd: LocalCluster) -> None:
    enc = epd.sims("encoder")[0]
    part = {"type": "image_embeds", "image_embeds": {"image_grid_thw": [1, 4, 4]}, "uuid": "u"}
    body = {"messages": [{"role": "user", "content": [part]}], "max_tokens": 1}
    status, answer = http_json("POST", enc.url + "/v1/chat/completions", body)
    assert status == 400, answer
    assert "image_embeds" in answer["error"]["message"]
    pd = epd.sims("decode")[0]
    bare = {"type": "image_embeds", "image_embeds": {}, "uuid": "u"}
    status, answer = http_json(
        "POST",
        pd.url + "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [bare]}], "max_tokens": 1},
    )
    assert status == 400, answer
    assert "image_grid_thw" in answer["error"]["message"]


@pytest.fixture(scope="module")
def e_p_d(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(
        Path(tmp_path_factory.mktemp("media-epd3")),
        encoders=1,
        prefills=1,
        decodes=1,
        kv_connector="NixlConnector",
    )
    with c:
        yield c


def test_prefill_and_decode_never_preprocess_by_default(e_p_d: LocalCluster) -> None:
    before = _counts(e_p_d, "encoder", "prefill", "decode")
    body = chat(image_url("media-epd3"), max_tokens=3)
    status, answer = http_json("POST", e_p_d.url + "/v1/chat/completions", body)
    assert status == 200, answer
    moved = _delta(_counts(e_p_d, "encoder", "prefill", "decode"), before)
    assert moved == {
        f"encoder/{PRE}": 1,
        f"encoder/{REF}": 0,
        f"prefill/{PRE}": 0,
        f"prefill/{REF}": 1,
        f"decode/{PRE}": 0,
        f"decode/{REF}": 1,
    }


@pytest.mark.parametrize(("routing", "misses"), [("affinity", 1), ("round-robin", 2)])
def test_affinity_sends_repeats_to_the_encoder_that_cached_them(
    tmp_path: Path, routing: str, misses: int
) -> None:
    with LocalCluster(
        tmp_path,
        encoders=2,
        decodes=1,
        sim_args={"encoder": ["--encoder-cache-items", "16"]},
        router_args=["--encoder-routing", routing],
    ) as c:
        img = image_url("repeat-me")
        for _ in range(4):
            status, answer = http_json("POST", c.url + "/v1/chat/completions", chat(img))
            assert status == 200, answer
        assert _m(c, "encoder", "epd_sim_encoder_cache_total{result=miss}") == misses
        assert _m(c, "encoder", "epd_sim_encoder_cache_total{result=hit}") == 4 - misses
        assert _m(c, "encoder", PRE) == misses  # a hit is not preprocessed again
