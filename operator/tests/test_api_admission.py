"""api.admission.review: what the validating webhook answers (pure), and the odd-but-valid
specs it admits with warnings."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from api_samples import invalid_samples, load, valid_samples

from e2e.paths import CHART
from epd_operator.api.admission import WEBHOOK_PATH, oddities, review
from epd_operator.api.parse import parse

GOOD: dict[str, Any] = load(next(p for p in valid_samples() if p.stem == "minimal-epd"))
BAD = next(s for s in invalid_samples() if s.rejected_by == "operator")


def test_create_of_a_valid_spec_is_allowed() -> None:
    assert review("CREATE", GOOD, None).allowed


@pytest.mark.parametrize(
    "sample", [s for s in invalid_samples() if s.rejected_by == "operator"], ids=lambda s: s.name
)
def test_every_operator_invalid_sample_is_refused_with_its_path(sample: Any) -> None:
    verdict = review("CREATE", sample.obj(), None)
    assert verdict.error is not None
    assert verdict.error.path == sample.field
    assert sample.expect_parse in str(verdict.error)


def test_update_that_keeps_the_spec_is_never_judged() -> None:
    # An object admitted while the webhook was down stays relabellable and deletable.
    old = BAD.obj()
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"team": "a"}
    assert review("UPDATE", new, old).allowed
    new["spec"]["roles"]["encoder"] = {"replicas": 2}
    assert not review("UPDATE", new, old).allowed


@pytest.mark.parametrize("operation", ["DELETE", "CONNECT"])
def test_other_operations_are_allowed(operation: str) -> None:
    assert review(operation, BAD.obj(), BAD.obj()).allowed


def test_webhook_path_is_the_charts() -> None:
    chart = CHART / "templates" / "webhook.yaml"
    assert f"path: {WEBHOOK_PATH}\n" in chart.read_text()


ODD: list[tuple[str, dict[str, Any], str]] = [
    ("ec tcp with rdma", {"rdma": {"enabled": True}, "ecTransfer": {"protocol": "tcp"}},
     "spec.ecTransfer.protocol"),
    ("kv tcp with rdma", {"rdma": {"enabled": True},
                          "roles": {"encoder": {}, "prefill": {}, "decode": {}},
                          "kvTransfer": {"protocol": "tcp"}}, "spec.kvTransfer.protocol"),
    ("no multimodal input", {"encoderCache": {"limitMmPerPrompt": {"image": 0, "video": 0}}},
     "spec.encoderCache.limitMmPerPrompt"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "patch", "path"), ODD, ids=[o[0] for o in ODD])
def test_odd_specs_are_admitted_with_a_warning(case: str, patch: dict[str, Any], path: str) -> None:
    obj = copy.deepcopy(GOOD)
    obj["spec"].update(patch)
    verdict = review("CREATE", obj, None)
    assert verdict.allowed
    assert [w.split(":", 1)[0] for w in verdict.warnings] == [path]


@pytest.mark.parametrize("path", valid_samples(), ids=lambda p: p.stem)
def test_valid_samples_are_not_odd(path: Any) -> None:
    assert oddities(parse(load(path)).spec) == []
