"""Faults on a live E/PD data plane: pods killed mid-run, and a consumer whose pushes never come."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dataplane_support import chat, image_url, total

from epd_connector.launch.router_options import LIVENESS_PATH
from epd_connector.sim.localcluster import LocalCluster, http_json


def test_killing_an_encoder_and_a_pd_mid_run_is_retried_elsewhere(tmp_path: Path) -> None:
    cluster = LocalCluster(
        tmp_path,
        encoders=2,
        decodes=2,
        sim_args={
            "decode": ["--decode-delay-per-token-s", "0.02"],
            "encoder": ["--encode-delay-s", "0.02"],
        },
    )
    results: list[tuple[float, int, object]] = []
    stop = threading.Event()

    def client(worker: int) -> None:
        i = 0
        while not stop.is_set():
            body = chat(image_url(f"fault-{worker}-{i}")) if i % 3 else chat(text=f"t{worker}")
            t0 = time.monotonic()
            status, answer = http_json(
                "POST", cluster.url + "/v1/chat/completions", body, timeout=30
            )
            results.append((time.monotonic() - t0, status, answer))
            i += 1

    with cluster, ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(client, w) for w in range(6)]
        time.sleep(1.0)
        cluster.kill("encoder-0")
        time.sleep(0.5)
        cluster.kill("decode-1")
        time.sleep(2.0)
        stop.set()
        for f in futures:
            f.result(timeout=60)
        assert cluster.router is not None
        router = cluster.metrics(cluster.router)
        survivor_pd = cluster.metrics(cluster.procs["decode-0"])

    assert len(results) > 30
    failures = [(s, a) for _, s, a in results if s != 200]
    assert not failures, failures[:3]
    assert max(d for d, _, _ in results) < 15  # nothing hung (push wait is 5 s)
    assert total(router, "epd_router_retries_total") >= 1
    assert router["epd_router_pods_in_rotation{role=encoder}"] == 1
    assert router["epd_router_pods_in_rotation{role=decode}"] == 1
    assert total(survivor_pd, "epd_sim_ec_items_verified_total") > 0


def test_every_pd_down_gives_openai_style_503(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, encoders=1, decodes=1) as cluster:
        cluster.kill("decode-0")
        deadline = time.monotonic() + 10
        status, body = 0, dict[str, Any]()
        while time.monotonic() < deadline:
            status, body = http_json(
                "POST", cluster.url + "/v1/chat/completions", chat(text="anyone?"), timeout=10
            )
            if status == 503:
                break
            assert status == 502, body  # the first one sees the dead pod, is out of pods
        assert status == 503, body
        assert body["error"]["type"] == "ServiceUnavailable"
        status, _ = http_json("GET", cluster.url + "/health")
        assert status == 503
        # Unready, not dead: the liveness probe's endpoint does not restart it for that.
        status, body = http_json("GET", cluster.url + LIVENESS_PATH)
        assert (status, body) == (200, {"status": "alive"})


def test_pd_whose_push_never_arrives_answers_500_and_router_reencodes(tmp_path: Path) -> None:
    """A consumer addressed on the wrong DP rank never gets its push: vLLM's HTTP 500 path."""
    with LocalCluster(
        tmp_path, encoders=1, decodes=1, decode_dp=2, push_wait_timeout_s=0.5
    ) as cluster:
        pd = cluster.sims("decode")[0]
        enc = cluster.sims("encoder")[0]
        # Push to DP rank 1's control port, then ask rank 0: rank 0 waits, then fails.
        port1 = cluster.config["ec"]["port"] + 1
        tid = "t-wrong-rank"
        body = chat(image_url("wrong-rank"))
        body_e = {
            "model": body["model"],
            "messages": body["messages"],
            "stream": False,
            "ec_transfer_params": {
                "consumer_zmq": f"tcp://{pd.host}:{port1}",
                "ec_items": [{"transfer_id": tid}],
            },
        }
        status, answer = http_json("POST", enc.url + "/v1/chat/completions", body_e)
        assert status == 200, answer
        (mm_hash,) = answer["ec_transfer_params"]
        body["ec_transfer_params"] = {"ec_items": [{"mm_hash": mm_hash, "transfer_id": tid}]}
        t0 = time.monotonic()
        status, answer = http_json("POST", pd.url + "/v1/chat/completions", body)
        assert status == 500, answer
        assert answer["error"]["message"] == "Internal server error"
        assert 0.4 < time.monotonic() - t0 < 5
        # Through the router the same request works: it names one rank in both places.
        status, answer = http_json(
            "POST", cluster.url + "/v1/chat/completions", chat(image_url("wrong-rank"))
        )
        assert status == 200, answer


def test_terminating_pd_finishes_its_requests_and_gets_no_new_ones(tmp_path: Path) -> None:
    with LocalCluster(
        tmp_path, encoders=1, decodes=2, sim_args={"decode": ["--decode-delay-per-token-s", "0.1"]}
    ) as cluster:
        with ThreadPoolExecutor(1) as pool:
            long = pool.submit(
                lambda: http_json(
                    "POST",
                    cluster.url + "/v1/chat/completions",
                    chat(text="long answer", max_tokens=20),
                )
            )
            busy: list[str] = []
            deadline = time.monotonic() + 5
            while not busy and time.monotonic() < deadline:
                busy = [
                    p.name
                    for p in cluster.sims("decode")
                    if total(cluster.metrics(p), "vllm:num_requests_running") > 0
                ]
            assert busy, "the long request never started"
            draining = cluster.procs[busy[0]]
            cluster.terminate(draining.name)
            time.sleep(0.8)  # > one router health interval
            served_before = total(cluster.metrics(draining), "epd_sim_requests_total")
            for i in range(6):
                status, body = http_json(
                    "POST",
                    cluster.url + "/v1/chat/completions",
                    chat(image_url(f"after-term-{i}"), max_tokens=1),
                )
                assert status == 200, body
            assert total(cluster.metrics(draining), "epd_sim_requests_total") == served_before
            status, body = long.result(timeout=30)
        assert status == 200, body
        assert body["choices"][0]["message"]["content"].count("tok") == 20
        assert draining.popen.wait(10) == 0


def test_encoder_that_never_pushes_is_bypassed_after_the_consumer_500(tmp_path: Path) -> None:
    """The consumer's push-wait 500 makes the router re-encode, with new ids, on another encoder."""
    cluster = LocalCluster(tmp_path, encoders=2, decodes=1, push_wait_timeout_s=0.3)
    with cluster:
        # Same address, so the router keeps the pod; then wait until it is back in rotation.
        cluster.restart_sim("encoder-1", extra=["--drop-push-percent", "100"])
        cluster.wait_ready(20)
        results = [
            http_json("POST", cluster.url + "/v1/chat/completions", chat(image_url(f"drop-{i}")))
            for i in range(6)
        ]
        assert cluster.router is not None
        router = cluster.metrics(cluster.router)
        dropped = total(cluster.metrics(cluster.procs["encoder-1"]), "epd_sim_ec_pushes_total")
    assert [s for s, _ in results] == [200] * 6, results
    assert dropped > 0  # the broken encoder was picked (affinity), and its pushes never came
    assert router["epd_router_retries_total{reason=http_500,role=decode}"] == dropped
