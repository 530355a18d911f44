"""Revision-pinned routing under load, on real processes: two wiring revisions of one cluster
serve at once while the routing table moves from the old one to the new one, as it does during
a rollout, and no request is served by a mixed pair.

The two revisions differ in their EC wiring the way a real change does: revision A moves encoder
outputs by Mooncake push (ECMooncakeConnector), revision B through a shared volume
(ECExampleConnector). A mixed pair is visible, not silent: an A consumer paired with a B encoder
waits for a push that never comes (the request fails), and a B consumer paired with an A encoder
finds nothing saved and encodes the image itself (`epd_sim_consumer_encoded_items`). The control
case routes the same pods as one revision (what a router without revisions does) and shows both.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from dataplane_support import chat, image_url, total

from epd_connector.launch.config import LaunchConfig
from epd_connector.launch.routing import RevisionRoute, RoutingTable, wiring_revision
from epd_connector.sim.localcluster import LocalCluster, Proc, http_json
from epd_connector.sim.procs import scrape, start_router

ROUTER_ARGS = ["--dns-refresh-s", "0.2", "--health-interval-s", "0.3", "--retries", "0"]


@pytest.fixture(scope="module")
def revisions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, ...]]:
    root = Path(tmp_path_factory.mktemp("revisions"))
    a = LocalCluster(root / "a", encoders=1, decodes=1, push_wait_timeout_s=1.0)
    b = LocalCluster(root / "b", encoders=1, decodes=1, ec_connector="ECExampleConnector")
    with a, b:
        yield a, b


def _route(c: LocalCluster) -> RevisionRoute:
    cfg = LaunchConfig.model_validate(c.config)
    static = {
        role: [p.host for p in c.sims(role)] for role in ("encoder", "decode") if c.sims(role)
    }
    return RevisionRoute(wiring=wiring_revision(cfg), config=cfg, static=static)


def _write(path: Path, *routes: RevisionRoute) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(RoutingTable(revisions=list(routes)).to_json())
    tmp.replace(path)  # atomic, as the kubelet swaps a ConfigMap volume's files


def _load(url: str, stop: threading.Event, results: Counter[int], workers: int = 4) -> None:
    seq = iter(range(1 << 30))

    def client() -> None:
        while not stop.is_set():
            # Half new images, half repeats: both the encoder caches and fresh encodes are hit.
            n = next(seq)
            status, _ = http_json(
                "POST", url + "/v1/chat/completions", chat(image_url(f"r{n % 2 and n}"))
            )
            results[status] += 1

    with ThreadPoolExecutor(workers) as pool:
        for _ in range(workers):
            pool.submit(client)


def _sum(c: LocalCluster, role: str, name: str) -> float:
    return sum(total(c.metrics(p), name) for p in c.sims(role))


def _wait(pred: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _router(a: LocalCluster, *args: str, name: str) -> Proc:
    return start_router(
        a.group,
        a.workdir / "launch.json",
        [],
        [*ROUTER_ARGS, *args],
        name=name,
        wait_rotation=False,
    )


def test_each_request_stays_within_one_revision_while_the_table_moves(
    revisions: tuple[LocalCluster, LocalCluster], tmp_path: Path
) -> None:
    a, b = revisions
    ra, rb = _route(a), _route(b)
    assert ra.wiring != rb.wiring
    table = tmp_path / "routing.json"
    _write(table, ra)
    router = _router(a, "--routing-file", str(table), name="router-pinned")
    b_local_before = _sum(b, "decode", "epd_sim_consumer_encoded_items_total")
    results: Counter[int] = Counter()
    stop = threading.Event()
    loader = threading.Thread(target=_load, args=(router.url, stop, results))
    loader.start()
    try:
        _wait(lambda: results[200] >= 20)
        _write(table, ra, rb)  # the rollout's first step: the new revision is complete
        _wait(
            lambda: (
                total(
                    scrape(router.url + "/metrics"),
                    f"epd_router_revision_requests_total{{revision={rb.wiring}}}",
                )
                >= 20
            )
        )
        _write(table, rb)  # the old revision's last pod is gone
        time.sleep(1.0)
        served_a = results[200]
        _wait(lambda: results[200] >= served_a + 20)
    finally:
        stop.set()
        loader.join()
    metrics = scrape(router.url + "/metrics")
    by_rev = {
        w: total(metrics, f"epd_router_revision_requests_total{{revision={w}}}")
        for w in (ra.wiring, rb.wiring)
    }
    assert set(results) == {200}, results
    assert by_rev[ra.wiring] > 0, by_rev
    assert by_rev[rb.wiring] > 0, by_rev
    # B's consumer only ever got images its own encoder saved; A's only pushed ones.
    assert _sum(b, "decode", "epd_sim_consumer_encoded_items_total") == b_local_before
    assert _sum(b, "decode", "epd_sim_ec_items_verified_total") > 0
    assert _sum(a, "decode", "epd_sim_ec_items_verified_total") > 0


def test_control_one_revision_over_both_pairs_them_across(
    revisions: tuple[LocalCluster, LocalCluster],
) -> None:
    """Without revisions the router pairs across the wiring change: pushes nobody makes
    (failed requests) and images the consumer encodes itself."""
    a, b = revisions
    hosts = {r: ",".join(p.host for p in (*a.sims(r), *b.sims(r))) for r in ("encoder", "decode")}
    # Both revisions' pods as one pool (their ports are rewritten per pod: static host:port).
    ports = {p.host: p.port for c in (a, b) for p in c.procs.values()}
    static = [
        arg
        for r, hs in hosts.items()
        for arg in ("--static-pods", f"{r}=" + ",".join(f"{h}:{ports[h]}" for h in hs.split(",")))
    ]
    router = _router(a, *static, "--encoder-routing", "round-robin", name="router-unpinned")
    local_before = _sum(b, "decode", "epd_sim_consumer_encoded_items_total")
    statuses: Counter[int] = Counter()
    for n in range(24):
        status, _ = http_json(
            "POST", router.url + "/v1/chat/completions", chat(image_url(f"mixed-{n}"))
        )
        statuses[status] += 1
    mixed_local = _sum(b, "decode", "epd_sim_consumer_encoded_items_total") - local_before
    assert statuses[200] < 24, statuses  # A consumers waited for pushes B encoders never made
    assert mixed_local > 0  # B consumers got A-encoded images and encoded them again
