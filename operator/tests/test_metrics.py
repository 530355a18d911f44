"""epd_operator.metrics: the four metric families, exposed in Prometheus text format."""

from __future__ import annotations

from prometheus_client import generate_latest

from epd_operator.metrics import Metrics
from epd_operator.reconcile.kube import Kube


def scrape(m: Metrics) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in generate_latest(m.registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_api_writes_follow_the_kube_write_counter() -> None:
    m = Metrics()
    kube = Kube(transport=lambda *a: (200, b"{}"))
    kube.writes.listeners.append(m.count_write)
    kube.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "ns"}}
    )
    kube.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "x", "namespace": "ns"},
        }
    )
    kube.apply_status("ns", "x", {"observedGeneration": 1})
    got = scrape(m)
    assert got['epd_operator_api_writes_total{kind="ConfigMap",verb="apply"}'] == 1
    assert got['epd_operator_api_writes_total{kind="StatefulSet",verb="apply"}'] == 1
    assert got['epd_operator_api_writes_total{kind="EPDCluster",verb="apply-status"}'] == 1
    assert kube.writes.total() == 3


def test_clusters_by_condition_counts_each_cluster_once() -> None:
    m = Metrics()
    m.clusters.set("a", {"Ready": "True", "Degraded": "False"})
    m.clusters.set("b", {"Ready": "False", "Degraded": "True"})
    m.clusters.set("b", {"Ready": "True", "Degraded": "False"})  # b recovered
    m.clusters.set("c", {"Ready": "False", "Degraded": "True"})
    got = scrape(m)
    assert got['epd_operator_epdclusters{condition="Ready",status="True"}'] == 2
    assert got['epd_operator_epdclusters{condition="Degraded",status="True"}'] == 1
    m.clusters.forget("c")
    got = scrape(m)
    assert got['epd_operator_epdclusters{condition="Degraded",status="True"}'] == 0
    assert got['epd_operator_epdclusters{condition="Ready",status="False"}'] == 0


def test_reconcile_duration_and_errors() -> None:
    m = Metrics()
    m.reconcile_duration.labels(trigger="resync").observe(0.02)
    m.reconcile_duration.labels(trigger="resync").observe(3.0)
    m.reconcile_errors.labels(reason="SpecInvalid").inc()
    got = scrape(m)
    assert got['epd_operator_reconcile_duration_seconds_count{trigger="resync"}'] == 2
    assert got['epd_operator_reconcile_duration_seconds_bucket{le="0.025",trigger="resync"}'] == 1
    assert got['epd_operator_reconcile_errors_total{reason="SpecInvalid"}'] == 1


def test_two_instances_do_not_share_a_registry() -> None:
    # Each operator (and each test) gets its own registry: no duplicate-timeseries errors.
    a, b = Metrics(), Metrics()
    a.count_write("Service", "apply")
    assert 'epd_operator_api_writes_total{kind="Service",verb="apply"}' not in scrape(b)
