"""Generates the EPDCluster CustomResourceDefinition from the pydantic models.

The models are the one definition of the API (docs/architecture.md, "Where each rule
lives"); this module turns their JSON schema into a Kubernetes structural schema (no $ref, no
nullable unions, int-or-string and preserve-unknown-fields markers, CEL rules from `__cel__`)
and wraps it in the CRD with the status subresource and printer columns. `make crds` (or
`epdctl crds --write`) rewrites `crds/` and the chart's copy; a test fails on drift.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .. import __version__
from . import constants as c
from .models import ROOT_RULES, EPDClusterSpec, EPDClusterStatus
from .scaler import EPDRoleScalerSpec, EPDRoleScalerStatus

Schema = dict[str, Any]

# Keys that may sit beside a $ref / union on the field and win over the referenced schema.
_FIELD_KEYS = ("default", "x-kubernetes-validations")


def _text(doc: str) -> str:
    """Docstrings are wrapped at 100 columns; `kubectl explain` re-wraps, so join the lines."""
    paragraphs = [" ".join(p.split()) for p in doc.strip().split("\n\n")]
    return "\n\n".join(p for p in paragraphs if p)


def _merge(outer: Schema, inner: Schema) -> Schema:
    merged = dict(inner)
    for key, value in outer.items():
        if key == "description" and "description" in inner:
            if not _text(inner["description"]).startswith(_text(value).rstrip(".")):
                merged["description"] = f"{_text(value)}\n\n{_text(inner['description'])}"
        elif key == "x-kubernetes-validations" and key in inner:
            merged[key] = inner[key] + value
        else:
            merged[key] = value
    return merged


def _openapi_v3_keywords(node: Schema) -> None:
    """JSON Schema 2020 spellings -> what a CRD's OpenAPI v3 schema takes (in place): no
    titles, numeric exclusive bounds as booleans, no null or list defaults."""
    node.pop("title", None)
    if "description" in node:
        node["description"] = _text(node["description"])
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[flag] = node.pop(bound)
            node[bound] = True
    if "default" in node:
        default = node["default"]
        if default is None or isinstance(default, list):
            del node["default"]


def _structural(node: Schema, defs: dict[str, Schema]) -> Schema:
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        node = _merge(node, _structural(defs[ref.rsplit("/", 1)[-1]], defs))
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express union {branches} in a structural schema")
        node = _merge(node, _structural(branches[0], defs))
    _openapi_v3_keywords(node)
    if node.get("type") == "object":
        extra = node.pop("additionalProperties", None)
        if extra is True:
            node["x-kubernetes-preserve-unknown-fields"] = True
        elif isinstance(extra, dict):
            node["additionalProperties"] = _structural(extra, defs)
        if "properties" in node:
            node["properties"] = {k: _structural(v, defs) for k, v in node["properties"].items()}
    if node.get("type") == "array":
        node["items"] = _structural(node["items"], defs)
    return node


def model_schema(model: type[BaseModel]) -> Schema:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def openapi_schema() -> Schema:
    return {
        "type": "object",
        "description": _text(
            "EPDCluster is one vLLM encoder / prefill / decode (EPD) disaggregated serving "
            "cluster: encoder, optional prefill and decode StatefulSets, their launch config "
            "and a router in front."
        ),
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "Versioned schema of this representation of an object.",
            },
            "kind": {"type": "string", "description": "REST resource this object represents."},
            "metadata": {"type": "object"},
            "spec": model_schema(EPDClusterSpec),
            "status": model_schema(EPDClusterStatus),
        },
        "required": ["spec"],
        "x-kubernetes-validations": [r.to_crd() for r in ROOT_RULES],
    }


def _ready_column(role: str) -> dict[str, Any]:
    return {
        "name": role.capitalize(),
        "type": "string",
        "description": f"Ready {role} pods / desired.",
        "jsonPath": f".status.roles.{role}.ready",
    }


def _labels() -> dict[str, str]:
    """The CRDs' labels; the version label tells which release installed a CRD."""
    return {
        c.LABEL_NAME: c.APP_NAME,
        c.LABEL_MANAGED_BY: c.MANAGED_BY,
        c.LABEL_VERSION: __version__,
    }


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": c.CRD_NAME,
            "labels": _labels(),
        },
        "spec": {
            "group": c.GROUP,
            "names": {
                "kind": c.KIND,
                "listKind": c.LIST_KIND,
                "plural": c.PLURAL,
                "singular": c.SINGULAR,
                "shortNames": list(c.SHORT_NAMES),
                "categories": list(c.CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Ready",
                            "type": "string",
                            "description": "Status of the Ready condition.",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {
                            "name": "Phase",
                            "type": "string",
                            "description": "One-word summary.",
                            "jsonPath": ".status.phase",
                        },
                        _ready_column("encoder"),
                        _ready_column("prefill"),
                        _ready_column("decode"),
                        {
                            "name": "Model",
                            "type": "string",
                            "priority": 1,
                            "description": "Served model.",
                            "jsonPath": ".spec.model.name",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def scaler_crd() -> dict[str, Any]:
    """The EPDRoleScaler CRD: a per-role scale target with the /scale subresource."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": c.SCALER_CRD_NAME,
            "labels": _labels(),
        },
        "spec": {
            "group": c.GROUP,
            "names": {
                "kind": c.SCALER_KIND,
                "listKind": c.SCALER_LIST_KIND,
                "plural": c.SCALER_PLURAL,
                "singular": c.SCALER_SINGULAR,
                "shortNames": list(c.SCALER_SHORT_NAMES),
                "categories": list(c.CATEGORIES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": c.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": _scaler_columns(),
                    "schema": {"openAPIV3Schema": scaler_openapi_schema()},
                }
            ],
        },
    }


# (name, type, jsonPath, description) of `kubectl get epdrs`'s columns.
_SCALER_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("Role", "string", ".status.role", "The role this object scales."),
    (
        "Owner",
        "string",
        ".status.replicasFrom",
        "Who owns the number: Spec (EPDCluster) or Scaler.",
    ),
    ("Wanted", "integer", ".spec.replicas", "spec.replicas (what /scale reads and writes)."),
    (
        "Desired",
        "integer",
        ".status.desiredReplicas",
        "Pods asked of the StatefulSet, after the bounds.",
    ),
    ("Current", "integer", ".status.replicas", "Pods that exist."),
    ("Ready", "integer", ".status.readyReplicas", "Pods passing readiness."),
)


def _scaler_columns() -> list[dict[str, str]]:
    cols = [
        {"name": n, "type": t, "jsonPath": path, "description": d}
        for n, t, path, d in _SCALER_COLUMNS
    ]
    return [*cols, {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]


def scaler_openapi_schema() -> Schema:
    return {
        "type": "object",
        "description": _text(
            "EPDRoleScaler is the scale target of one role (encoder, prefill or decode) of an "
            "EPDCluster, created and owned by the operator and named <cluster>-<role>. "
            "`kubectl scale`, HPA and KEDA drive its /scale subresource; the EPDCluster's "
            "roles.<role>.replicasFrom says whether that number (Scaler) or the EPDCluster "
            "spec's (Spec) sizes the role's StatefulSet."
        ),
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "Versioned schema of this representation of an object.",
            },
            "kind": {"type": "string", "description": "REST resource this object represents."},
            "metadata": {"type": "object"},
            "spec": model_schema(EPDRoleScalerSpec),
            "status": model_schema(EPDRoleScalerStatus),
        },
    }


_HEADER = (
    "# Generated by `python -m epd_operator.api.crdgen --write` from epd_operator.api.models.\n"
    "# Do not edit: change the models and regenerate.\n"
)


class _Dumper(yaml.SafeDumper):
    """No anchors/aliases: every schema node is written out in full, as kubectl shows it."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _yaml(obj: dict[str, Any]) -> str:
    return _HEADER + "---\n" + yaml.dump(obj, Dumper=_Dumper, sort_keys=True, width=100)


def render_yaml() -> str:
    """The EPDCluster CRD."""
    return _yaml(crd())


def render_scaler_yaml() -> str:
    """The EPDRoleScaler CRD."""
    return _yaml(scaler_crd())


def render_all_yaml() -> str:
    """Every CRD of the operator, one YAML stream (what `kubectl apply -f -` takes)."""
    return render_yaml() + render_scaler_yaml()


def repo_root() -> Path:
    """The checkout holding this source file (crds/ and charts/ live there)."""
    return Path(__file__).resolve().parents[4]


def targets(root: Path, filename: str = c.CRD_FILENAME) -> list[Path]:
    return [
        root / "crds" / filename,
        root / "charts" / "epd-operator" / "crds" / filename,
    ]


def generated(root: Path) -> list[tuple[Path, str]]:
    """(path, text) of every generated CRD file under `root`."""
    return [(p, render_yaml()) for p in targets(root)] + [
        (p, render_scaler_yaml()) for p in targets(root, c.SCALER_CRD_FILENAME)
    ]


def write(root: Path) -> list[Path]:
    written = []
    for path, text in generated(root):
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m epd_operator.api.crdgen", description="Print or write the CRDs."
    )
    parser.add_argument(
        "--write", action="store_true", help="write crds/ and charts/epd-operator/crds/"
    )
    parser.add_argument("--root", type=Path, default=None, help="repository root to write into")
    args = parser.parse_args(argv)
    if args.write:
        for path in write(args.root or repo_root()):
            sys.stdout.write(f"wrote {path}\n")
    else:
        sys.stdout.write(render_all_yaml())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
