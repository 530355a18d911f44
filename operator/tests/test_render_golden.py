"""Golden files: the manifests rendered for every valid sample, byte for byte.

A change to rendering shows up as a diff of operator/tests/golden/*.yaml in review. Regenerate
only on purpose: `make golden` (EPD_UPDATE_GOLDEN=1 on this file)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from api_samples import valid_samples

from epd_operator.api.operator_config import OperatorConfig
from epd_operator.cli import dump_yaml_stream, load_clusters
from epd_operator.render import render_cluster

GOLDEN = Path(__file__).parent / "golden"
# Fixed settings: the goldens must not depend on the developer's EPD_OPERATOR_* variables.
CFG = OperatorConfig.from_env({})


def rendered(sample: Path) -> str:
    (cluster,) = load_clusters(str(sample), namespace="demo")
    return dump_yaml_stream(render_cluster(cluster, CFG))


@pytest.mark.parametrize("sample", valid_samples(), ids=lambda p: p.stem)
def test_golden(sample: Path) -> None:
    golden = GOLDEN / sample.name
    text = rendered(sample)
    if os.environ.get("EPD_UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"{golden} missing: run `make golden` to create it"
    assert golden.read_text(encoding="utf-8") == text, (
        f"rendering of {sample.name} changed; if intended, regenerate with `make golden`"
    )


def test_no_orphan_goldens() -> None:
    assert sorted(p.name for p in GOLDEN.glob("*.yaml")) == sorted(p.name for p in valid_samples())
