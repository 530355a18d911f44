"""E/P/D data plane on loopback: encoder -> prefill (EC consumer + KV producer) -> decode.

Both transfers move real bytes over the Mooncake TransferEngine: encoder outputs into the
prefill pod's slab, and the KV blob the decode pod pulls from the prefill pod.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dataplane_support import chat, image_url, total

from epd_connector.sim.localcluster import LocalCluster, http_json


@pytest.fixture(scope="module", params=["MooncakeConnector", "NixlConnector"])
def e_p_d(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    c = LocalCluster(
        Path(tmp_path_factory.mktemp("epd3")),
        encoders=1,
        prefills=1,
        decodes=1,
        kv_connector=request.param,
    )
    with c:
        yield c


def _m(c: LocalCluster, role: str, name: str) -> float:
    return sum(total(c.metrics(p), name) for p in c.sims(role))


def test_image_request_moves_embeddings_to_prefill_and_kv_to_decode(e_p_d: LocalCluster) -> None:
    ec_before = _m(e_p_d, "prefill", "epd_sim_ec_items_verified_total")
    kv_before = _m(e_p_d, "decode", "epd_sim_kv_pulls_total{outcome=ok}")
    status, body = http_json(
        "POST", e_p_d.url + "/v1/chat/completions", chat(image_url("epd3"), max_tokens=5)
    )
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == " tok0 tok1 tok2 tok3 tok4"
    assert _m(e_p_d, "prefill", "epd_sim_ec_items_verified_total") - ec_before == 1
    assert _m(e_p_d, "decode", "epd_sim_kv_pulls_total{outcome=ok}") - kv_before == 1
    assert _m(e_p_d, "decode", "epd_sim_kv_bytes_verified_total") > 0
    assert _m(e_p_d, "decode", "epd_sim_ec_items_verified_total") == 0  # D gets KV, not embeddings


def test_text_only_skips_the_encoder_but_still_hands_kv_over(e_p_d: LocalCluster) -> None:
    enc_before = _m(e_p_d, "encoder", "epd_sim_requests_total")
    kv_before = _m(e_p_d, "decode", "epd_sim_kv_pulls_total{outcome=ok}")
    status, body = http_json("POST", e_p_d.url + "/v1/chat/completions", chat(text="just text"))
    assert status == 200, body
    assert _m(e_p_d, "encoder", "epd_sim_requests_total") == enc_before
    assert _m(e_p_d, "decode", "epd_sim_kv_pulls_total{outcome=ok}") - kv_before == 1


def test_prefill_that_ends_on_eos_is_the_final_answer_with_mooncake(e_p_d: LocalCluster) -> None:
    d_before = _m(e_p_d, "decode", "epd_sim_requests_total")
    status, body = http_json(
        "POST", e_p_d.url + "/v1/chat/completions", chat(text="stop now [[sim:eos]]", max_tokens=5)
    )
    assert status == 200, body
    assert body["choices"][0]["finish_reason"] == "stop"
    d_calls = _m(e_p_d, "decode", "epd_sim_requests_total") - d_before
    if e_p_d.kv_connector == "MooncakeConnector":
        assert body["choices"][0]["message"]["content"] == " tok0"
        assert "kv_transfer_params" not in body
        assert d_calls == 0
    else:  # NIXL hands over whatever P's finish reason; D answers
        assert d_calls == 1


def test_streaming_through_decode(e_p_d: LocalCluster) -> None:
    req = urllib.request.Request(
        e_p_d.url + "/v1/chat/completions",
        data=json.dumps(chat(image_url("epd3-stream"), max_tokens=3, stream=True)).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        events = [line[6:].strip() for line in resp if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == " tok0 tok1 tok2"
