"""Cross-field rules, written once: the CEL the apiserver evaluates and the same check in Python.

A `CelRule` is attached to a model class (`__cel__`); `crdgen` writes it into the CRD as an
`x-kubernetes-validations` entry and `parse` evaluates `check` on the parsed model, reporting
`message` at the same field path. So `epdctl render` on a laptop rejects exactly what the
apiserver rejects, with the same words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CelRule:
    rule: str
    """CEL expression over `self` (the object the rule is attached to)."""
    message: str
    """Shown by the apiserver and by `parse`; says what to change."""
    check: Callable[[Any], bool]
    """The same predicate in Python, over the parsed pydantic model."""
    field_path: str = ""
    """Where the error is reported, relative to `self` (".roles.encoder.parallelism")."""

    def to_crd(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out
