"""Engine tier, E/P/D: real vLLM encoder, prefill and decode engines; ECExampleConnector moves
encoder outputs to the prefill, NixlConnector (UCX over loopback) moves the KV cache to decode.
Launched by `epd-engine` from an operator-rendered EPDCluster, behind `epd-router`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.conftest import REQUESTS, Baseline, answer_of, assert_same_answer, start_cluster
from e2e.engines import EngineCluster, chat
from e2e.test_engine_epd import saved_outputs

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def e_p_d(
    tmp_path_factory: pytest.TempPathFactory,
    engine_env: Path,
    tiny_model: Path,
    baseline: Baseline,
) -> Iterator[EngineCluster]:
    yield from start_cluster(tmp_path_factory, engine_env, tiny_model, "epd3", prefill=True)


def nixl_transfers(cluster: EngineCluster) -> float:
    """KV transfers the decode engine completed over NIXL (vLLM's own metric)."""
    metrics = cluster.metrics(cluster.engine("decode"))
    return metrics.get("vllm:nixl_xfer_time_seconds_count", 0.0)


def test_image_chat_equals_aggregated_with_kv_pulled_by_decode(
    e_p_d: EngineCluster, baseline: Baseline
) -> None:
    encoder, prefill, decode = (e_p_d.engine(r) for r in ("encoder", "prefill", "decode"))
    calls = {p.name: e_p_d.probe_calls(p) for p in (encoder, prefill, decode)}
    pre = {p.name: e_p_d.probe_calls(p, "pre") for p in (encoder, prefill, decode)}
    kv_before = nixl_transfers(e_p_d)
    files_before = saved_outputs(e_p_d)

    got = answer_of(*chat(e_p_d.url, REQUESTS["image"]))

    assert_same_answer(got, baseline.answers["image"])
    assert e_p_d.probe_calls(encoder) > calls[encoder.name]
    assert e_p_d.probe_calls(prefill) == calls[prefill.name], "prefill ran its vision tower"
    assert e_p_d.probe_calls(decode) == calls[decode.name], "decode ran its vision tower"
    # Media by reference (the router's default): only the encoder preprocessed the pixels.
    assert e_p_d.probe_calls(encoder, "pre") > pre[encoder.name]
    assert e_p_d.probe_calls(prefill, "pre") == pre[prefill.name], "prefill preprocessed"
    assert e_p_d.probe_calls(decode, "pre") == pre[decode.name], "decode preprocessed"
    assert nixl_transfers(e_p_d) > kv_before
    assert len(saved_outputs(e_p_d) - files_before) == 1  # the prefill loaded it from here


def test_two_images_and_text(e_p_d: EngineCluster, baseline: Baseline) -> None:
    for name in ("two_images", "text"):
        before = nixl_transfers(e_p_d)
        assert_same_answer(answer_of(*chat(e_p_d.url, REQUESTS[name])), baseline.answers[name])
        assert nixl_transfers(e_p_d) > before, name
