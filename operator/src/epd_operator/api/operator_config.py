"""`OperatorConfig`: operator-wide settings the renderer needs (default images, pull policy,
what engine pods run), read from `EPD_OPERATOR_*` environment variables (the Helm chart sets
them) with defaults. Pure: `from_env` takes the mapping, errors name the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import __version__
from .quantity import QuantityError, canonical_quantity

ENV_PREFIX = "EPD_OPERATOR_"


class OperatorConfigError(ValueError):
    """A bad operator setting; the message names the environment variable."""


class OperatorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    engine_image: str = Field(
        default=f"epd-operator/epd-engine:{__version__}",
        min_length=1,
        description="Default image of encoder/prefill/decode pods (connector/Dockerfile).",
    )
    engine_mode: Literal["vllm", "sim"] = Field(
        default="vllm",
        description="EPD_ENGINE in engine pods: vllm (engine image) or sim (control-plane "
        "image: the simulator, for GPU-free clusters).",
    )
    router_image: str = Field(
        default=f"epd-operator/epd-operator:{__version__}",
        min_length=1,
        description="Image of the router Deployment (the control-plane image holds epd-router).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    termination_grace_period_seconds: int = Field(default=60, ge=0)
    shm_size: str = Field(default="16Gi", description="sizeLimit of the /dev/shm emptyDir.")
    startup_timeout_seconds: int = Field(
        default=1800, ge=10, description="How long an engine may take to load before restart."
    )
    router_port: int = Field(default=8000, ge=1, le=65535, description="Router container port.")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read `EPD_OPERATOR_<FIELD>` variables; unset ones keep their defaults."""
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        for name in cls.model_fields:
            var = ENV_PREFIX + name.upper()
            if var not in source:
                continue
            raw = source[var].strip()
            if name == "image_pull_secrets":
                values[name] = tuple(s.strip() for s in raw.split(",") if s.strip())
            elif name == "shm_size":
                try:
                    values[name] = canonical_quantity(raw)
                except QuantityError as exc:
                    raise OperatorConfigError(f"{var}: {exc}") from exc
            else:
                values[name] = raw
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            var = ENV_PREFIX + str(first["loc"][0]).upper()
            raise OperatorConfigError(f"{var}: {first['msg']}") from exc
