"""Engine tier, ECMooncakeConnector on CPU engines: what vLLM does today, asserted and explained.

The path is real: `epd-engine` renders `ec_buffer_device: cpu` and `mooncake_protocol: tcp` for
`device: cpu`, the router sends the encoder `ec_transfer_params.consumer_zmq` of the PD pod, the
encoder pushes the encoder output over the Mooncake transfer engine (TCP) and answers, and the
router sends the PD the request with `ec_items`. The PD then never serves it: vLLM's V1 model
runner returns `EMPTY_MODEL_RUNNER_OUTPUT` on a step with no scheduled tokens before it asks the
EC connector for finished loads (`v1/worker/gpu_model_runner.py`, the same in 0.33), so a
request that is alone on the PD waits for `push_wait_timeout_s` and ends with HTTP 500. Model
Runner V2 has that hook, but on CPU it needs Triton with a CPU backend, which this build lacks.
GPU engines default to V2. The router turns the 500s into a clean 502 after its retries.

When vLLM fixes this, `test_lone_request_hits_the_v1_runner_gap` fails with a message saying so:
then assert success here, like the ECExampleConnector tests do.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.conftest import REQUESTS, Baseline, answer_of, assert_same_answer, start_cluster
from e2e.engines import EngineCluster, chat

pytestmark = pytest.mark.engine

PUSH_WAIT_S = 4.0


@pytest.fixture(scope="module")
def mooncake(
    tmp_path_factory: pytest.TempPathFactory,
    engine_env: Path,
    tiny_model: Path,
    baseline: Baseline,
) -> Iterator[EngineCluster]:
    yield from start_cluster(
        tmp_path_factory,
        engine_env,
        tiny_model,
        "mooncake",
        ec_connector="ECMooncakeConnector",
        push_wait_timeout_s=PUSH_WAIT_S,
    )


def test_rendered_cpu_wiring(mooncake: EngineCluster) -> None:
    ec = mooncake.engine("decode").log.read_text()
    assert '"ec_buffer_device":"cpu"' in ec
    assert '"mooncake_protocol":"tcp"' in ec


def test_lone_request_hits_the_v1_runner_gap(mooncake: EngineCluster) -> None:
    encoder, pd = mooncake.engine("encoder"), mooncake.engine("decode")
    started = time.monotonic()

    status, body = chat(mooncake.url, REQUESTS["image"])

    took = time.monotonic() - started
    assert status != 200, (
        "vLLM now serves a lone ECMooncakeConnector request on CPU engines: the V1 runner gap "
        "this test documents is fixed; assert equal answers here instead"
    )
    # The router retried the consumer's 500s with fresh transfer ids, then gave up cleanly.
    assert status == 502, body
    assert "decode" in body["error"]["message"]
    assert "HTTP 500" in body["error"]["message"]
    pd_log, encoder_log = pd.log.read_text(), encoder.log.read_text()
    failures = pd_log.count("failed with an internal error during generation")
    assert failures >= 2  # the first attempt and at least one retry
    assert took >= failures * PUSH_WAIT_S
    # Every attempt's encoder call succeeded (the encoder pushed and answered), and the PD
    # never logged that a push "never arrived": the readiness event of each push did arrive.
    # What fails is the load the V1 runner never performs on a zero-token step.
    assert encoder_log.count('"POST /v1/chat/completions HTTP/1.1" 200') == failures
    assert "that never arrived" not in pd_log


def test_text_only_still_served(mooncake: EngineCluster, baseline: Baseline) -> None:
    got = answer_of(*chat(mooncake.url, REQUESTS["text"]))
    assert_same_answer(got, baseline.answers["text"])
