"""Contract with vLLM 0.33.0 for what the operator renders (marker `vllm`).

For every valid sample: render it, read the launch config back out of the rendered ConfigMap
(the bytes a pod reads), build each role's argv/env with the launcher (pod ordinal 0), and run
them through vLLM 0.33.0's own parser, transfer configs and Mooncake EC validation with the
connector's harness (one vLLM import for all cases). FAILS, never skips, without the cached
vLLM env (hack/bootstrap.sh builds it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from api_samples import valid_samples

from connector.tests.vllm_contract.vllm_harness import Case, assert_contract, run_checker
from epd_connector.launch.config import CONFIGMAP_KEY
from epd_connector.launch.config import parse as parse_launch
from epd_connector.launch.pod import PodContext
from epd_operator.api.operator_config import OperatorConfig
from epd_operator.cli import load_clusters
from epd_operator.render import render_cluster
from epd_operator.render.names import role_name

pytestmark = pytest.mark.vllm


def _cases() -> list[Case]:
    cases = []
    for sample in valid_samples():
        (cluster,) = load_clusters(str(sample), namespace="demo")
        manifests = render_cluster(cluster, OperatorConfig.from_env({}))
        config = parse_launch(manifests[0]["data"][CONFIGMAP_KEY])
        for i, role in enumerate(config.present_roles()):
            pod = PodContext.create(
                ip=f"10.42.0.{i + 10}",
                ordinal=0,
                name=f"{role_name(cluster.metadata.name, role)}-0",
                namespace="demo",
                role=role,
            )
            cases.append(Case(f"{sample.stem}/{role}", config, role, pod))
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
    return run_checker(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_vllm_accepts_the_rendered_pod(results: dict[str, dict[str, Any]], case: Case) -> None:
    assert_contract(case, results[case.id])


def test_every_sample_is_covered() -> None:
    assert {c.id.split("/")[0] for c in CASES} == {Path(p).stem for p in valid_samples()}
