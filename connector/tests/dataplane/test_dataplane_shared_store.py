"""The shared encoder cache with real parts: a real `mooncake_master`, simulated encoders that
use the real Mooncake Store client, configured from the file the launcher writes.

- a second encoder serves a repeat of an image without encoding it (the bytes come from the
  Store), and the consumer checks those bytes like any pushed output;
- through the router, a repeated image is encoded once and the consumer accepts the Store's
  bytes;
- a master restart: encoders keep serving (they encode), the cache starts empty, and refills.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dataplane_support import MODEL, total

from epd_connector.sim.localcluster import LocalCluster, Proc, http_json

BYTES_PER_IMAGE = 256 * 2048 * 2  # the simulator's default encoder output size


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(
        Path(tmp_path_factory.mktemp("store")), encoders=2, decodes=1, shared_store=True
    )
    with c:
        yield c


def image(seed: str, mime: str = "image/png", detail: str | None = None) -> dict[str, Any]:
    url = f"data:{mime};base64," + base64.b64encode(f"pixels:{seed}".encode() * 64).decode()
    part: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    if detail is not None:
        part["image_url"]["detail"] = detail
    return part


def body(*parts: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 2,
        "stream": False,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "what"}, *parts]}],
    }


def metric(c: LocalCluster, proc: Proc, name: str) -> float:
    return total(c.metrics(proc), name)


def encoded(c: LocalCluster) -> float:
    return sum(metric(c, e, "epd_sim_encoded_items_total") for e in c.sims("encoder"))


def hits(c: LocalCluster) -> float:
    return sum(
        c.metrics(e).get("epd_sim_store_lookups_total{outcome=hit}", 0) for e in c.sims("encoder")
    )


def wait_puts(c: LocalCluster, at_least: float, timeout_s: float = 20) -> None:
    """Publishing is off the request path (as in vLLM): wait until it happened."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (
            sum(
                c.metrics(e).get("epd_sim_store_puts_total{outcome=ok}", 0)
                for e in c.sims("encoder")
            )
            >= at_least
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} Store puts in {timeout_s}s")


def encode_on(proc: Proc, *parts: dict[str, Any]) -> None:
    status, reply = http_json("POST", proc.url + "/v1/chat/completions", body(*parts))
    assert status == 200, reply


def test_a_second_encoder_serves_a_repeat_from_the_store(cluster: LocalCluster) -> None:
    a, b = cluster.sims("encoder")
    before = {p.name: cluster.metrics(p) for p in (a, b)}
    encode_on(a, image("cat"))
    wait_puts(cluster, 1)
    encode_on(b, image("cat"))
    after = {p.name: cluster.metrics(p) for p in (a, b)}

    def delta(p: Proc, name: str) -> float:
        return after[p.name].get(name, 0) - before[p.name].get(name, 0)

    assert delta(a, "epd_sim_encoded_items_total") == 1
    assert delta(a, "epd_sim_store_lookups_total{outcome=miss}") == 1
    assert delta(a, "epd_sim_store_put_bytes_total") == BYTES_PER_IMAGE
    assert delta(b, "epd_sim_encoded_items_total") == 0  # not encoded again
    assert delta(b, "epd_sim_store_lookups_total{outcome=hit}") == 1
    assert delta(b, "epd_sim_store_get_bytes_total") == BYTES_PER_IMAGE
    assert delta(b, "epd_sim_store_get_seconds_count") == 1


def test_through_the_router_a_repeated_image_is_encoded_once(cluster: LocalCluster) -> None:
    # The whole path: router -> encoder (Store lookup) -> push -> consumer, which checks the
    # bytes it receives like any push, so a Store hit that served wrong bytes would fail here.
    enc0, hit0 = encoded(cluster), hits(cluster)
    status, reply = http_json("POST", cluster.url + "/v1/chat/completions", body(image("dog")))
    assert status == 200, reply
    wait_puts(cluster, 2)  # "cat" before, "dog" now
    for _ in range(5):
        status, reply = http_json("POST", cluster.url + "/v1/chat/completions", body(image("dog")))
        assert status == 200, reply
    assert encoded(cluster) - enc0 == 1
    assert hits(cluster) - hit0 == 5
    (decode,) = cluster.sims("decode")
    assert metric(cluster, decode, "epd_sim_ec_failures_total") == 0


def test_master_restart_empties_the_cache_and_encoders_keep_serving(
    cluster: LocalCluster,
) -> None:
    a, _ = cluster.sims("encoder")
    encode_on(a, image("bird"))
    wait_puts(cluster, 3)
    cluster.kill_store()
    # No master: lookups miss and outputs are not published, but every request is served.
    for i in range(3):
        status, reply = http_json(
            "POST", cluster.url + "/v1/chat/completions", body(image(f"down-{i}"))
        )
        assert status == 200, reply
    failed = sum(
        cluster.metrics(e).get("epd_sim_store_puts_total{outcome=failed}", 0)
        for e in cluster.sims("encoder")
    )
    assert failed >= 1
    cluster.start_store()
    # The clients find the new master by themselves; until they do, publishing fails.
    deadline = time.monotonic() + 30

    def oks() -> float:
        return sum(
            cluster.metrics(e).get("epd_sim_store_puts_total{outcome=ok}", 0)
            for e in cluster.sims("encoder")
        )

    start_ok, i = oks(), 0
    while oks() == start_ok:
        assert time.monotonic() < deadline, "no Store put succeeded after the master restart"
        encode_on(a, image(f"after-{i}"))
        i += 1
        time.sleep(0.3)
    # The cache is empty again: what was cached before the restart is encoded again.
    enc0 = encoded(cluster)
    encode_on(a, image("bird"))
    assert encoded(cluster) - enc0 == 1
