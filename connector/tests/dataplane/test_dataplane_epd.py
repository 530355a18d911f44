"""E/PD data plane as real processes on loopback: router + 2 encoder sims + 2 PD sims (DP=2).

The bytes are real: each PD sim counts an item verified only when the encoder's push landed in
its registered slab over the Mooncake TransferEngine and its checksum and content match.
"""

from __future__ import annotations

import json
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from dataplane_support import MAX_BODY, MODEL, chat, image_url, total

from epd_connector.sim.localcluster import LocalCluster, http_json

BYTES_PER_IMAGE = 256 * 2048 * 2


def _sum(c: LocalCluster, role: str, name: str) -> list[float]:
    return [total(c.metrics(p), name) for p in c.sims(role)]


def test_image_requests_succeed_and_every_consumer_verified_its_bytes(epd: LocalCluster) -> None:
    before = _sum(epd, "decode", "epd_sim_ec_items_verified_total")
    before_bytes = sum(_sum(epd, "decode", "epd_sim_ec_bytes_verified_total"))
    bodies = [chat(image_url(f"verify-{i}"), image_url(f"verify-{i}-b")) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda b: http_json("POST", epd.url + "/v1/chat/completions", b), bodies)
        )
    for status, body in results:
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == " tok0 tok1 tok2 tok3"
    after = _sum(epd, "decode", "epd_sim_ec_items_verified_total")
    gained = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(gained) == 16  # two items per request, each verified by the PD that served it
    assert all(g > 0 for g in gained), gained  # both PD pods served
    assert (
        sum(_sum(epd, "decode", "epd_sim_ec_bytes_verified_total")) - before_bytes
        == 16 * BYTES_PER_IMAGE
    )
    assert sum(_sum(epd, "decode", "epd_sim_ec_failures_total")) == 0


def test_text_only_requests_never_touch_an_encoder(epd: LocalCluster) -> None:
    before = _sum(epd, "encoder", "epd_sim_requests_total")
    for i in range(5):
        status, body = http_json(
            "POST", epd.url + "/v1/chat/completions", chat(text=f"plain text {i}")
        )
        assert status == 200, body
    status, body = http_json(
        "POST", epd.url + "/v1/completions", {"model": MODEL, "prompt": "hello", "max_tokens": 2}
    )
    assert status == 200, body
    assert body["choices"][0]["text"] == " tok0 tok1"
    assert _sum(epd, "encoder", "epd_sim_requests_total") == before


def test_streaming_arrives_chunk_by_chunk(epd: LocalCluster) -> None:
    req = urllib.request.Request(
        epd.url + "/v1/chat/completions",
        data=json.dumps(chat(image_url("stream"), max_tokens=8, stream=True)).encode(),
        headers={"Content-Type": "application/json"},
    )
    arrivals: list[tuple[float, bytes]] = []
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        for line in resp:
            if line.startswith(b"data: "):
                arrivals.append((time.monotonic(), line[6:].strip()))
    assert arrivals[-1][1] == b"[DONE]"
    chunks = [json.loads(d) for _, d in arrivals[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "".join(f" tok{i}" for i in range(8))
    # The sim spaces tokens 50 ms apart; a router that buffered would deliver them all at once.
    first_token, last_token = arrivals[1][0], arrivals[-2][0]
    assert last_token - first_token >= 0.25


def test_same_image_goes_to_the_same_encoder(epd: LocalCluster) -> None:
    before = _sum(epd, "encoder", "epd_sim_encoded_items_total")
    for _ in range(4):
        status, body = http_json(
            "POST", epd.url + "/v1/chat/completions", chat(image_url("affinity"), max_tokens=1)
        )
        assert status == 200, body
    gained = [
        a - b
        for a, b in zip(_sum(epd, "encoder", "epd_sim_encoded_items_total"), before, strict=True)
    ]
    assert sorted(gained) == [0, 4]


def test_different_images_spread_over_encoders(epd: LocalCluster) -> None:
    before = _sum(epd, "encoder", "epd_sim_encoded_items_total")
    for i in range(24):
        status, body = http_json(
            "POST", epd.url + "/v1/chat/completions", chat(image_url(f"spread-{i}"), max_tokens=1)
        )
        assert status == 200, body
    gained = [
        a - b
        for a, b in zip(_sum(epd, "encoder", "epd_sim_encoded_items_total"), before, strict=True)
    ]
    assert sum(gained) == 24
    assert min(gained) >= 3, gained


def test_http_image_urls_are_fetched_by_encoder_and_consumer(
    epd: LocalCluster, image_server: str
) -> None:
    status, body = http_json(
        "POST",
        epd.url + "/v1/chat/completions",
        chat(f"{image_server}/img/a.png", f"{image_server}/img/b.png"),
    )
    assert status == 200, body


BAD_INPUTS = [
    # (name, raw body, expected status, expected error type)
    ("broken JSON", b'{"model": "x", "messages": [', 400, "BadRequestError"),
    ("not an object", b"[1, 2]", 400, "BadRequestError"),
    ("unknown model", json.dumps({"model": "nope", "messages": []}).encode(), 404, "NotFoundError"),
    (
        "model not a string",
        json.dumps({"model": ["m"], "messages": []}).encode(),
        404,
        "NotFoundError",
    ),
    ("messages missing", json.dumps({"model": MODEL}).encode(), 400, "BadRequestError"),
    (
        "oversized body",
        json.dumps(chat("data:image/png;base64," + "A" * MAX_BODY)).encode(),
        413,
        "RequestEntityTooLarge",
    ),
]


def test_bad_inputs_get_openai_style_errors(epd: LocalCluster) -> None:
    for name, raw, want_status, want_type in BAD_INPUTS:
        status, body = http_json("POST", epd.url + "/v1/chat/completions", raw=raw)
        assert status == want_status, (name, body)
        assert body["error"]["type"] == want_type, (name, body)
        assert body["error"]["code"] == want_status, (name, body)
        assert body["error"]["message"], name


def test_image_the_encoder_cannot_fetch_is_a_400(epd: LocalCluster, image_server: str) -> None:
    for url in (f"{image_server}/missing", "http://127.0.0.1:9/unreachable.png"):
        status, body = http_json("POST", epd.url + "/v1/chat/completions", chat(url))
        assert status == 400, body
        assert "fetch" in body["error"]["message"], body


def test_models_health_and_metrics(epd: LocalCluster) -> None:
    status, body = http_json("GET", epd.url + "/v1/models")
    assert status == 200
    assert [m["id"] for m in body["data"]] == [MODEL]
    status, body = http_json("GET", epd.url + "/health")
    assert (status, body["pods"]) == (200, {"encoder": 2, "decode": 2})
    assert epd.router is not None
    m = epd.metrics(epd.router)
    assert m["epd_router_pods_in_rotation{role=encoder}"] == 2
    assert m["epd_router_requests_total{outcome=success,route=chat}"] > 0
    assert m["epd_router_stage_seconds_count{stage=encode}"] > 0
    assert m["epd_router_stage_seconds_count{stage=ttft}"] > 0
