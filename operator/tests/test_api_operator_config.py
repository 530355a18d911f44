"""OperatorConfig from EPD_OPERATOR_* variables: defaults, overrides, errors naming the variable."""

from __future__ import annotations

import pytest

from epd_operator import __version__
from epd_operator.api.operator_config import OperatorConfig, OperatorConfigError


def test_defaults() -> None:
    cfg = OperatorConfig.from_env({})
    assert cfg.engine_mode == "vllm"
    assert cfg.image_pull_policy == "IfNotPresent"
    assert cfg.engine_image == f"epd-operator/epd-engine:{__version__}"
    assert cfg.image_pull_secrets == ()


def test_overrides() -> None:
    cfg = OperatorConfig.from_env(
        {
            "EPD_OPERATOR_ENGINE_IMAGE": "reg.local/engine:1",
            "EPD_OPERATOR_ENGINE_MODE": "sim",
            "EPD_OPERATOR_IMAGE_PULL_SECRETS": "a, b,,",
            "EPD_OPERATOR_TERMINATION_GRACE_PERIOD_SECONDS": "30",
            "EPD_OPERATOR_SHM_SIZE": "1024Mi",
            "UNRELATED": "x",
        }
    )
    assert cfg.engine_image == "reg.local/engine:1"
    assert cfg.engine_mode == "sim"
    assert cfg.image_pull_secrets == ("a", "b")
    assert cfg.termination_grace_period_seconds == 30
    assert cfg.shm_size == "1Gi"


@pytest.mark.parametrize(
    ("env", "var"),
    [
        ({"EPD_OPERATOR_ENGINE_MODE": "gpu"}, "EPD_OPERATOR_ENGINE_MODE"),
        ({"EPD_OPERATOR_IMAGE_PULL_POLICY": "Sometimes"}, "EPD_OPERATOR_IMAGE_PULL_POLICY"),
        (
            {"EPD_OPERATOR_TERMINATION_GRACE_PERIOD_SECONDS": "soon"},
            "EPD_OPERATOR_TERMINATION_GRACE_PERIOD_SECONDS",
        ),
        ({"EPD_OPERATOR_SHM_SIZE": "big"}, "EPD_OPERATOR_SHM_SIZE"),
        ({"EPD_OPERATOR_ENGINE_IMAGE": ""}, "EPD_OPERATOR_ENGINE_IMAGE"),
        ({"EPD_OPERATOR_STARTUP_TIMEOUT_SECONDS": "1"}, "EPD_OPERATOR_STARTUP_TIMEOUT_SECONDS"),
    ],
)
def test_errors_name_the_variable(env: dict[str, str], var: str) -> None:
    with pytest.raises(OperatorConfigError, match=f"^{var}: "):
        OperatorConfig.from_env(env)
