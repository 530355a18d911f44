"""ECExampleConnector on the simulator, as real vLLM does it (asserted on real engines in
e2e/test_engine_epd.py): no push; the encoder saves each output under its mm_hash on the shared
volume, the router calls the consumer only after every encoder call answered, and the consumer
loads the file instead of encoding. Sent straight to the consumer, an image is encoded there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dataplane_support import chat, image_url, total

from epd_connector.sim.localcluster import LocalCluster, http_json


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(
        Path(tmp_path_factory.mktemp("ec-example")),
        encoders=2,
        decodes=1,
        ec_connector="ECExampleConnector",
    )
    with c:
        yield c


def _metric(c: LocalCluster, role: str, name: str) -> float:
    return sum(total(c.metrics(p), name) for p in c.sims(role))


def test_consumer_loads_what_the_encoders_saved(example: LocalCluster) -> None:
    status, body = http_json(
        "POST",
        example.url + "/v1/chat/completions",
        chat(image_url("shared-a"), image_url("shared-b")),
    )
    assert status == 200, body
    assert _metric(example, "encoder", "epd_sim_encoded_items_total") == 2
    assert _metric(example, "decode", "epd_sim_ec_items_verified_total") == 2
    assert _metric(example, "decode", "epd_sim_consumer_encoded_items_total") == 0
    saved = list((example.workdir / "ec-cache").glob("*/encoder_cache.safetensors"))
    assert len(saved) == 2
    # No Mooncake traffic at all: nothing was pushed.
    assert _metric(example, "encoder", "epd_sim_ec_pushes_total") == 0


def test_consumer_encodes_media_no_encoder_saved(example: LocalCluster) -> None:
    pd = example.sims("decode")[0]
    before = _metric(example, "decode", "epd_sim_consumer_encoded_items_total")
    status, body = http_json("POST", pd.url + "/v1/chat/completions", chat(image_url("direct")))
    assert status == 200, body
    assert _metric(example, "decode", "epd_sim_consumer_encoded_items_total") == before + 1
