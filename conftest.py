"""Root pytest configuration: the session-scoped `cluster` fixture every tier above unit uses.

The provider comes from EPD_CLUSTER_PROVIDER (kwok by default, see e2e/providers.py). A cluster
is created once per session, only when a selected test asks for it, and torn down at the end
(also on Ctrl-C: pytest runs session finalizers on KeyboardInterrupt). When any test of the
session failed, the control-plane logs are exported to artifacts/cluster-logs/<name>/ and the
path is printed at the end of the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before any test module imports it: operator/tests and connector/tests both use the vLLM
# contract harness, and its assertions should read like pytest's.
pytest.register_assert_rewrite("connector.tests.vllm_contract.vllm_harness")

from e2e.providers import REPO, Cluster, make_provider  # noqa: E402

# The Mooncake transfer engine logs every segment open/close at INFO (its level comes from
# MC_LOG_LEVEL when the library loads); keep warnings and errors, drop the chatter.
os.environ.setdefault("MC_LOG_LEVEL", "WARNING")

_failed: list[str] = []
_notes: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        _failed.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for note in _notes:
        terminalreporter.write_line(note)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    provider_name = os.environ.get("EPD_CLUSTER_PROVIDER", "kwok")
    name = f"epd-test-{os.getpid()}"
    # Short path: kwok puts unix sockets and pid files under its workdir.
    workdir = Path(tmp_path_factory.mktemp("cluster", numbered=True))
    provider = make_provider(provider_name, name, workdir)
    started = time.monotonic()
    try:
        c = provider.up()
    except BaseException:
        provider.export_logs(REPO / "artifacts" / "cluster-logs" / name)
        provider.down()
        raise
    took = time.monotonic() - started
    _notes.append(f"cluster: {provider_name} cluster {name} up in {took:.1f}s")
    try:
        yield c
    finally:
        if _failed:
            dest = REPO / "artifacts" / "cluster-logs" / name
            provider.export_logs(dest)
            _notes.append(f"cluster: tests failed; control-plane logs kept in {dest}")
        provider.down()
