"""Root pytest configuration: the test tiers and the session-scoped `cluster` fixture.

Tiers (docs/architecture.md, "Test tiers"): every collected test gets exactly one tier marker,
the heaviest thing it needs, so `-m unit` is a fast, pure tier by construction:

  unit         pure Python in this process; starting a subprocess fails the test (see
               `_refuse_processes`), so a test that needs one must say so
  process      starts local processes: simulator pods + router, helm, shell installers
  vllm         runs the cached vLLM 0.33.0 environment (contract checks)
  integration  the local control plane (the `cluster` fixture)
  e2e          the operator on a cluster
  engine       real vLLM engines behind the router
  kind         our images and a kind cluster of podman (or Docker) containers
  kind_engine  real vLLM engines in our CPU engine image on kind (by hand, never in CI)
  gpu          an NVIDIA GPU (never in CI)

Explicit markers in a test module win; otherwise the `cluster` fixture means integration and a
path in PROCESS_PATHS means process. Each tier has its own timeout (TIMEOUT_S); the global one
in pyproject.toml only covers what is not a test (collection).

The provider comes from EPD_CLUSTER_PROVIDER (kwok by default, see e2e/providers.py). A cluster
is created once per session, only when a selected test asks for it, and torn down at the end
(also on Ctrl-C: pytest runs session finalizers on KeyboardInterrupt). When any test of the
session failed, the control-plane logs are exported to artifacts/cluster-logs/<name>/ and the
path is printed at the end of the run.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import pytest

# Before any test module imports it: operator/tests and connector/tests both use the vLLM
# contract harness, and its assertions should read like pytest's.
pytest.register_assert_rewrite("connector.tests.vllm_contract.vllm_harness")

from e2e.paths import REPO  # noqa: E402
from e2e.providers import Cluster, make_provider  # noqa: E402

# Lightest first; a test's tier is the heaviest one among its markers.
TIERS: Final = (
    *("unit", "process", "vllm", "integration", "e2e"),
    *("engine", "kind", "kind_engine", "gpu"),
)
# Seconds per test (setup, call and teardown: the first integration test boots the cluster,
# an engine module starts several vLLM instances). A test may still set its own
# @pytest.mark.timeout.
TIMEOUT_S: Final = {
    "unit": 30,
    "process": 300,
    "vllm": 600,
    "integration": 600,
    "e2e": 900,
    "engine": 1800,
    "kind": 1800,  # a kind cluster of podman containers (hack/kind-tier.sh)
    "kind_engine": 3600,  # builds and loads a 7 GB image, then starts vLLM in two pods
    "gpu": 900,
}
# Test files (relative to the repository root) that start processes but need no cluster. A
# directory ends with "/". A unit-tier test that starts a process fails and names this list.
PROCESS_PATHS: Final = (
    "connector/tests/dataplane/",  # loopback clusters of simulator pods and the router
    "connector/tests/launch/test_launch_cli.py",  # the epd-engine console script
    "connector/tests/sim/test_localcluster_signals.py",
    "connector/tests/vllm_contract/test_install_vllm_env.py",  # the installer script
    "operator/tests/test_chart.py",  # the pinned, Go-built helm
)

# The Mooncake transfer engine logs every segment open/close at INFO (its level comes from
# MC_LOG_LEVEL when the library loads); keep warnings and errors, drop the chatter.
os.environ.setdefault("MC_LOG_LEVEL", "WARNING")

_failed: list[str] = []
_notes: list[str] = []


def tier_of(item: pytest.Item) -> str:
    """The heaviest tier among the item's markers, its fixtures and its path."""
    marked = {m.name for m in item.iter_markers()} & set(TIERS)
    if "cluster" in getattr(item, "fixturenames", ()):
        marked.add("integration")
    path = Path(str(item.path)).resolve()
    rel = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.as_posix()
    if any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in PROCESS_PATHS):
        marked.add("process")
    return max(marked, key=TIERS.index, default="unit")


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item)
        item.add_marker(tier)
        item.stash[_TIER] = tier
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIMEOUT_S[tier]))


_TIER = pytest.StashKey[str]()
_running: list[str] = []  # the node id of the unit test running now, if any
_execute_child = subprocess.Popen._execute_child  # type: ignore[attr-defined]


def _refuse_processes(self: subprocess.Popen[Any], args: Any, *rest: Any, **kw: Any) -> Any:
    if _running:
        raise RuntimeError(
            f"{_running[0]} is in the unit tier but started a process ({args!r:.80}): add its "
            "file to PROCESS_PATHS in conftest.py, or mark it (see docs/architecture.md)"
        )
    return _execute_child(self, args, *rest, **kw)


def pytest_configure(config: pytest.Config) -> None:
    # Every process start goes through Popen._execute_child (asyncio's subprocesses too).
    subprocess.Popen._execute_child = _refuse_processes  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    subprocess.Popen._execute_child = _execute_child  # type: ignore[attr-defined]


@contextmanager
def _guarded(item: pytest.Item) -> Iterator[None]:
    unit = item.stash.get(_TIER, "unit") == "unit"
    if unit:
        _running.append(item.nodeid)
    try:
        yield
    finally:
        if unit:
            _running.clear()


# Setup and call only: a unit test's teardown may finalize a session fixture that an earlier
# test of another tier started (the last test of a run tears the cluster down).
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _guarded(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _guarded(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        _failed.append(item.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for note in _notes:
        terminalreporter.write_line(note)


@contextmanager
def _provisioned(provider_name: str, workdir: Path, prefix: str = "epd-test") -> Iterator[Cluster]:
    """A cluster of `provider_name` for as long as the block runs; its control-plane logs are
    exported when it fails to come up or when any test of the session has failed."""
    name = f"{prefix}-{os.getpid()}"
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


def _session_provider() -> str:
    """The provider of the session's `cluster` (EPD_CLUSTER_PROVIDER, kwok by default)."""
    return os.environ.get("EPD_CLUSTER_PROVIDER", "kwok")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    provider_name = _session_provider()
    # Short path: kwok puts unix sockets and pid files under its workdir.
    workdir = Path(tmp_path_factory.mktemp("cluster", numbered=True))
    with _provisioned(provider_name, workdir) as c:
        yield c


@pytest.fixture(scope="module")
def kind_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A kind cluster for one module of the `kind` tier, in the same run as the kwok tiers
    (`make test`): the session's own cluster when that is kind, else one of its own, deleted
    when the module ends (an idle kind cluster would slow every later test)."""
    if _session_provider() == "kind":
        yield request.getfixturevalue("cluster")
        return
    workdir = Path(tmp_path_factory.mktemp("kind", numbered=True))
    with _provisioned("kind", workdir, prefix="epd-kind") as c:
        yield c
