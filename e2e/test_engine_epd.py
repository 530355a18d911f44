"""Engine tier, E/PD: real vLLM encoder + prefill/decode engines with ECExampleConnector,
launched by `epd-engine` from an operator-rendered EPDCluster, behind `epd-router`.

Every answer is compared with the same request on one aggregated vLLM instance (greedy
decoding, the same tiny model): equal text and equal per-token logprobs prove that the encoder
output the consumer used is the one it would have computed itself. The vision probe proves the
consumer never ran its vision tower.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from e2e.conftest import REQUESTS, Baseline, answer_of, assert_same_answer, start_cluster
from e2e.engines import MODEL_NAME, EngineCluster, chat, image_part, png
from epd_connector.sim.procs import http_json

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def epd(
    tmp_path_factory: pytest.TempPathFactory,
    engine_env: Path,
    tiny_model: Path,
    baseline: Baseline,  # first: the baseline instance is stopped before this cluster starts
) -> Iterator[EngineCluster]:
    yield from start_cluster(tmp_path_factory, engine_env, tiny_model, "epd")


def saved_outputs(cluster: EngineCluster) -> set[str]:
    """mm_hashes whose encoder output ECExampleConnector wrote to the shared volume."""
    shared = Path(cluster.config.ec.shared_storage_path or "")
    return {p.parent.name for p in shared.glob("*/encoder_cache.safetensors")}


def test_baseline_instance_runs_its_own_vision_tower(baseline: Baseline) -> None:
    # The control case of the probe: an aggregated instance encodes every image it gets.
    assert baseline.vision_calls >= 1
    # The image changes the answer, so equal answers below are evidence, not a coincidence.
    image, other = baseline.answers["image"], baseline.answers["other_image"]
    assert image.token_logprobs != other.token_logprobs


def test_image_chat_equals_aggregated_and_consumer_never_encodes(
    epd: EngineCluster, baseline: Baseline
) -> None:
    encoder, pd = epd.engine("encoder"), epd.engine("decode")
    enc_before, pd_before = epd.probe_calls(encoder), epd.probe_calls(pd)
    enc_pre, pd_pre = epd.probe_calls(encoder, "pre"), epd.probe_calls(pd, "pre")
    files_before = saved_outputs(epd)

    got = answer_of(*chat(epd.url, REQUESTS["image"]))

    assert_same_answer(got, baseline.answers["image"])
    assert epd.probe_calls(encoder) > enc_before
    assert epd.probe_calls(pd) == pd_before, "the PD ran its vision tower"
    # Media by reference (the router's default): the PD got the encoder's uuid and grid, not
    # the pixels, so only the encoder preprocessed the image.
    assert epd.probe_calls(encoder, "pre") > enc_pre
    assert epd.probe_calls(pd, "pre") == pd_pre, "the PD preprocessed the image"
    # The encoder wrote exactly this image's output to the shared volume, under its mm_hash.
    new_files = saved_outputs(epd) - files_before
    assert len(new_files) == 1, new_files


def test_two_images_and_the_same_image_twice(epd: EngineCluster, baseline: Baseline) -> None:
    pd = epd.engine("decode")
    pd_before = epd.probe_calls(pd)
    for name in ("two_images", "same_image_twice"):
        assert_same_answer(answer_of(*chat(epd.url, REQUESTS[name])), baseline.answers[name])
    assert epd.probe_calls(pd) == pd_before


def test_repeated_image_reuses_the_encoder_cache(epd: EngineCluster, baseline: Baseline) -> None:
    encoder = epd.engine("encoder")
    assert answer_of(*chat(epd.url, REQUESTS["other_image"])).status == 200
    before = epd.probe_calls(encoder)
    hits_before = epd.metrics(encoder).get("vllm:mm_cache_hits_total", 0.0)

    got = answer_of(*chat(epd.url, REQUESTS["other_image"]))

    assert_same_answer(got, baseline.answers["other_image"])
    # The encoder answered the repeat from its caches: no vision-tower call, a cache hit.
    assert epd.probe_calls(encoder) == before
    assert epd.metrics(encoder).get("vllm:mm_cache_hits_total", 0.0) > hits_before


def test_text_only_skips_the_encoder(epd: EngineCluster, baseline: Baseline) -> None:
    encoder = epd.engine("encoder")
    calls = epd.metrics(encoder).get("vllm:request_success_total{finished_reason=stop}", 0.0)
    served = _router_upstream(epd, "encoder")

    got = answer_of(*chat(epd.url, REQUESTS["text"]))

    assert_same_answer(got, baseline.answers["text"])
    assert _router_upstream(epd, "encoder") == served
    after = epd.metrics(encoder).get("vllm:request_success_total{finished_reason=stop}", 0.0)
    assert after == calls


def test_streaming_through_the_router(epd: EngineCluster, baseline: Baseline) -> None:
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": REQUESTS["image"]}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": True,
    }
    req = urllib.request.Request(
        epd.url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=300) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = [
            line[len(b"data: ") :].decode()
            for line in resp.read().splitlines()
            if line.startswith(b"data: ")
        ]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) > 2  # really streamed, not one blob
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == baseline.answers["image"].content


def test_models_lists_the_served_model(epd: EngineCluster) -> None:
    status, body = http_json("GET", epd.url + "/v1/models")
    assert status == 200
    assert [m["id"] for m in body["data"]] == [MODEL_NAME]


def test_control_the_probe_sees_the_pd_encode_pixels_sent_to_it(epd: EngineCluster) -> None:
    """Without the router no encoder output exists for a new image, so the PD's connector finds
    no file and vLLM encodes on the PD: the probe, silent on the PD above, records that."""
    pd = epd.engine("decode")
    before = epd.probe_calls(pd)
    status, body = chat(pd.url, [image_part(png(80, 56, (10, 20, 200), seed=9))])
    assert status == 200, body
    assert epd.probe_calls(pd) > before


def test_raw_media_give_the_same_tokens_and_the_pd_preprocesses_again(
    epd: EngineCluster, baseline: Baseline
) -> None:
    """The fallback (`--consumer-media raw`) on the same engines: equal answers, the PD still
    never encodes, but it preprocesses the pixels itself (the control case of the probe)."""
    raw = epd.add_router("--consumer-media", "raw", name="router-raw")
    pd = epd.engine("decode")
    vit, pre = epd.probe_calls(pd), epd.probe_calls(pd, "pre")
    for name in ("image", "two_images"):
        assert_same_answer(answer_of(*chat(raw.url, REQUESTS[name])), baseline.answers[name])
    assert epd.probe_calls(pd, "pre") > pre
    assert epd.probe_calls(pd) == vit, "the PD ran its vision tower"


def _router_upstream(cluster: EngineCluster, role: str) -> float:
    assert cluster.router is not None
    return sum(
        v
        for k, v in cluster.metrics(cluster.router).items()
        if k.startswith("epd_router_upstream_requests_total{") and f"role={role}" in k
    )


def test_encoder_killed_mid_run_gives_answers_or_clean_errors(epd: EngineCluster) -> None:
    """Last in the module: it kills the only encoder. Every request ends, none hangs: it
    succeeds (encoded before the kill, or text) or gets an OpenAI-style error body."""
    names = ["image", "other_image", "two_images", "text"] * 3
    started = time.monotonic()
    with ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(chat, epd.url, REQUESTS[n], timeout=240) for n in names]
        time.sleep(1.0)
        epd.engine("encoder").signal(signal.SIGKILL)
        results = [f.result() for f in futures]
    assert time.monotonic() - started < 240
    for name, (status, body) in zip(names, results, strict=True):
        assert status != 0, f"{name}: no answer (connection dropped or hung)"
        if status == 200:
            assert body["choices"][0]["message"]["content"] is not None
        else:
            assert status in (502, 503, 504), (name, status, body)
            assert isinstance(body, dict), body
            assert body["error"]["message"], body
    # Afterwards: images get a clean 503 naming the stage, text is still served.
    status, body = chat(epd.url, REQUESTS["image"])
    assert status in (502, 503), body
    assert "encoder" in body["error"]["message"], body
    assert chat(epd.url, REQUESTS["text"])[0] == 200
