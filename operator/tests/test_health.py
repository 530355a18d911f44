"""Liveness: /healthz fails when the API refuses the operator's credentials or its watch has
fallen behind the API for longer than the grace period (reconcile.health on a fake clock)."""

from __future__ import annotations

import json

import pytest

from epd_operator.api.operator_config import OperatorConfig
from epd_operator.handlers import Options, Runtime
from epd_operator.handlers.runtime import HealthError
from epd_operator.reconcile.health import WatchCheck
from epd_operator.reconcile.kube import Kube


def test_a_watch_behind_for_longer_than_the_grace_is_lost() -> None:
    check = WatchCheck(grace_s=60)
    assert check.observe({"a": "5"}, {"a": "5"}, now=0) == []
    assert check.observe({"a": "6"}, {"a": "5"}, now=10) == []  # just changed: give it time
    assert check.observe({"a": "6"}, {"a": "5"}, now=70) == []
    assert check.observe({"a": "6"}, {"a": "5"}, now=71) == ["a"]
    assert check.observe({"a": "6"}, {"a": "6"}, now=72) == []  # caught up: healthy again
    assert check.observe({"b": "1"}, {}, now=100) == []  # a new object the watch has not seen
    assert check.observe({"b": "1"}, {}, now=161) == ["b"]
    assert check.observe({}, {}, now=162) == []  # deleted meanwhile


def test_the_watch_being_ahead_of_the_list_is_fine() -> None:
    assert WatchCheck(grace_s=0).observe({"a": "5"}, {"a": "9"}, now=100) == []


def runtime(status: int, items: list[dict[str, object]] | None = None) -> Runtime:
    body = {"items": items or []} if status == 200 else {"message": "Unauthorized"}

    def transport(method: str, path: str, headers: object, payload: object) -> tuple[int, bytes]:
        assert (method, path) == ("GET", "/apis/epd-operator.io/v1alpha1/epdclusters")
        return status, json.dumps(body).encode()

    return Runtime(Kube(transport), OperatorConfig.from_env({}), Options())


def test_healthy_when_the_api_answers_and_the_watch_keeps_up() -> None:
    rt = runtime(200, [{"metadata": {"uid": "u", "resourceVersion": "3"}}])
    rt.remember("u", {"metadata": {"uid": "u", "resourceVersion": "3"}})
    assert rt.check_health() == {"epdclusters": 1}
    rt.close()


@pytest.mark.parametrize("status", [401, 403])
def test_unhealthy_when_credentials_are_refused(status: int) -> None:
    rt = runtime(status)
    with pytest.raises(HealthError, match=f"HTTP {status}"):
        rt.check_health()
    rt.close()
