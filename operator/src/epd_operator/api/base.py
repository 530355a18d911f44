"""The building blocks of the API models: the model base classes (camelCase aliases, strict
types, CEL attached per class), and the field types and patterns the models share."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from epd_connector.launch.rules import (
    NO_CONTROL_PATTERN,
)

from .cel import CelRule
from .quantity import QUANTITY_PATTERN, quantity_value


def _check_quantity(value: int | str) -> int | str:
    quantity_value(value)  # raises QuantityError (a ValueError) with the offending text
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
        }
    ),
]
Port = Annotated[int, Field(ge=1, le=65535)]
# Free-form objects handed to Kubernetes or vLLM unchanged (x-kubernetes-preserve-unknown-fields).
FreeForm = dict[str, Any]

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Absolute, and (like every string that reaches an argv or an environment) no control
# characters: exec refuses NUL, the rest corrupt flags and logs.
ABS_PATH = r"^/[^\x00-\x1f\x7f]*$"
# Strings handed to `vllm serve` or the environment (launch contract rule, one definition).
ArgText = Annotated[str, Field(pattern=NO_CONTROL_PATTERN)]
_EXTENDED_RESOURCE = (
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
MAX_CLUSTER_NAME = 63


def _default_of(model: type[BaseModel]) -> dict[str, Any]:
    """The schema default of an object field: the model's defaults written out in full (the
    apiserver checks a default against the CEL rules as is, without nested defaulting)."""
    return {"default": model().model_dump(mode="json", by_alias=True, exclude_none=True)}


CLUSTER_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


class _Model(BaseModel):
    """Base: camelCase aliases, unknown fields rejected (a typo must not be ignored)."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        # Like the apiserver: "3" is not an integer and "true" is not a boolean.
        strict=True,
    )
    __cel__: ClassVar[tuple[CelRule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        if cls.__cel__:
            target["x-kubernetes-validations"] = [r.to_crd() for r in cls.__cel__]
        return schema


class _Open(_Model):
    """An embedded Kubernetes object: its known fields are typed, the rest passes through."""

    model_config = ConfigDict(extra="allow")
