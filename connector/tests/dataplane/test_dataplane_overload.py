"""Overload and failure behaviour of the router against real simulator processes.

- Engines whose /health answers later than the router's health timeout (busy but alive) keep
  serving: a run of timeouts takes them out of rotation, and with every pod of a role out the
  panic rule routes to all of them. The control run sets the old rules (one timeout ejects, no
  panic) and gets the 503 storm the issue measured.
- A request that finds no pod of a role waits in the queue and is served when one comes back;
  past the queue timeout it gets a 503 that names the stage.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dataplane_support import chat, image_url, total

from epd_connector.sim.localcluster import LocalCluster, http_json

SLOW_HEALTH = {"encoder": ["--health-delay-s", "1"], "decode": ["--health-delay-s", "1"]}
FAST_CHECKS = ["--health-interval-s", "0.2", "--health-timeout-s", "0.1"]


def _burst(cluster: LocalCluster, n: int, concurrency: int) -> list[tuple[int, dict[str, Any]]]:
    def one(i: int) -> tuple[int, dict[str, Any]]:
        body = chat(image_url(f"burst-{i % 7}"), max_tokens=2)
        return http_json("POST", cluster.url + "/v1/chat/completions", body, timeout=60)

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(n)))


def _rotation(cluster: LocalCluster) -> dict[str, float]:
    assert cluster.router is not None
    m = cluster.metrics(cluster.router)
    return {r: total(m, f"epd_router_pods_in_rotation{{role={r}}}") for r in ("encoder", "decode")}


def test_slow_health_checks_never_turn_into_503s(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, encoders=2, decodes=2, sim_args=SLOW_HEALTH)
    cluster.router_args = ["--health-timeout-s", "3"]
    with cluster:
        assert cluster.router is not None
        fast = cluster.add_router(*FAST_CHECKS, name="router-fast")
        time.sleep(1.5)  # several check rounds: every check of every pod times out
        m = cluster.metrics(fast)
        assert total(m, "epd_router_pods_in_rotation{role=decode}") == 0
        assert total(m, "epd_router_panic{role=decode}") == 1
        cluster.router = fast
        results = _burst(cluster, 24, 8)
        assert [s for s, _ in results] == [200] * 24, [b for s, b in results if s != 200][:2]


def test_control_the_old_rules_give_the_503_storm(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, encoders=2, decodes=2, sim_args=SLOW_HEALTH)
    cluster.router_args = ["--health-timeout-s", "3"]
    with cluster:
        old = cluster.add_router(
            *FAST_CHECKS,
            "--unhealthy-threshold",
            "1",
            "--panic-threshold-percent",
            "0",
            "--queue-timeout-s",
            "0",
            name="router-old",
        )
        time.sleep(1.5)
        cluster.router = old
        results = _burst(cluster, 8, 4)
        assert {s for s, _ in results} == {503}
        assert "stage" in results[0][1]["error"]["message"]


def test_a_request_waits_for_a_pod_to_come_back(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, encoders=1, decodes=1)
    cluster.router_args = ["--queue-timeout-s", "30"]
    with cluster:
        host = cluster.procs["decode-0"].host
        cluster.stop_sim("decode-0")
        deadline = time.monotonic() + 10
        while http_json("GET", cluster.url + "/health")[0] != 503:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(
                http_json,
                "POST",
                cluster.url + "/v1/chat/completions",
                chat(image_url("queued"), max_tokens=2),
                timeout=60,
            )
            time.sleep(1.0)
            assert not waiting.done()  # queued, not refused
            assert cluster.router is not None
            queued = cluster.metrics(cluster.router)
            assert total(queued, "epd_router_queued_requests{role=decode}") == 1
            cluster.start_sim("decode", "decode-0", host=host)
            status, body = waiting.result(timeout=60)
        assert status == 200, body


def test_the_queue_timeout_gives_a_503_naming_the_stage(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, encoders=1, decodes=1)
    cluster.router_args = ["--queue-timeout-s", "0.5"]
    with cluster:
        cluster.stop_sim("encoder-0")
        deadline = time.monotonic() + 10
        while _rotation(cluster)["encoder"] != 0:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        t0 = time.monotonic()
        status, body = http_json(
            "POST", cluster.url + "/v1/chat/completions", chat(image_url("late")), timeout=30
        )
        waited = time.monotonic() - t0
        assert status == 503, body
        assert body["error"]["type"] == "ServiceUnavailable"
        assert body["error"]["message"].startswith("encoder stage: no encoder pod available")
        assert waited >= 0.5  # it waited in the queue first
        status, body = http_json(
            "POST", cluster.url + "/v1/chat/completions", chat(text="no image"), timeout=30
        )
        assert status == 200, body  # text needs no encoder


def test_a_pod_that_keeps_failing_is_ejected_and_nobody_notices(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, encoders=1, decodes=2)
    with cluster:
        bad = cluster.start_sim("decode", "decode-2", extra=["--error-percent", "100"])
        assert cluster.router is not None
        # The bad pod passes its health checks (its /health is fine) and joins the rotation.
        router = cluster.add_router("--base-ejection-s", "60", name="router-2", wait_rotation=True)
        url = router.url + "/v1/chat/completions"

        def calls_to_bad() -> float:
            m = cluster.metrics(router)
            return sum(
                v
                for k, v in m.items()
                if k.startswith("epd_router_upstream_requests_total{")
                and f"pod={bad.host}:{bad.port}," in k
            )

        results = [http_json("POST", url, chat(text=f"t{i}"), timeout=30) for i in range(30)]
        assert [s for s, _ in results] == [200] * 30  # each failure was retried elsewhere
        m = cluster.metrics(router)
        assert total(m, "epd_router_ejections_total{role=decode}") == 1
        tried = calls_to_bad()
        assert tried == 5  # eject_after_failures, then never again
        for i in range(10):
            assert http_json("POST", url, chat(text=f"u{i}"), timeout=30)[0] == 200
        assert calls_to_bad() == tried
