"""The CRD is generated from the models: the committed copies match, and the schema is
structural (what the apiserver demands) with a description on every field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.paths import REPO
from epd_operator.api import constants as c
from epd_operator.api import crdgen

HINT = "regenerate with: make crds"


@pytest.mark.parametrize("path", crdgen.targets(REPO), ids=lambda p: str(p.relative_to(REPO)))
def test_committed_crd_matches_models(path: Path) -> None:
    assert path.exists(), f"{path} is missing; {HINT}"
    assert path.read_text(encoding="utf-8") == crdgen.render_yaml(), f"{path} is stale; {HINT}"


@pytest.mark.parametrize(
    "path", crdgen.targets(REPO, c.SCALER_CRD_FILENAME), ids=lambda p: str(p.relative_to(REPO))
)
def test_committed_scaler_crd_matches_models(path: Path) -> None:
    assert path.exists(), f"{path} is missing; {HINT}"
    assert path.read_text(encoding="utf-8") == crdgen.render_scaler_yaml(), (
        f"{path} is stale; {HINT}"
    )


def _walk(node: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, child in node.get("properties", {}).items():
        out += _walk(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        out += _walk(node["items"], f"{path}[]")
    return out


SCHEMA = crdgen.openapi_schema()
NODES = _walk(SCHEMA, "") + _walk(crdgen.scaler_openapi_schema(), "")


def test_schema_is_structural() -> None:
    for path, node in NODES:
        for forbidden in ("$ref", "$defs", "title", "const"):
            assert forbidden not in node, path
        assert node.get("additionalProperties") is not False, path
        assert not ("additionalProperties" in node and "properties" in node), path
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}], path
        else:
            assert "anyOf" not in node, path
            assert node.get("type") in (
                "object",
                "array",
                "string",
                "integer",
                "number",
                "boolean",
            ), path
        if "default" in node and node.get("type") == "object":
            # Written out in full: the apiserver evaluates CEL on defaults without defaulting.
            assert set(node["default"]) <= set(node["properties"]), path


def test_every_field_is_described() -> None:
    undocumented = [
        path
        for path, node in NODES
        if path.startswith((".spec", ".status"))
        and not path.endswith(("*", "[]"))
        and not node.get("description")
    ]
    assert undocumented == []


def _resolve(node: dict[str, Any], field_path: str) -> bool:
    for part in field_path.strip(".").split("."):
        props = node.get("properties", {})
        if part not in props:
            return False
        node = props[part]
    return True


def test_cel_field_paths_exist() -> None:
    rules = 0
    for path, node in NODES:
        for rule in node.get("x-kubernetes-validations", []):
            rules += 1
            assert rule["message"], path
            assert rule["rule"], path
            if "fieldPath" in rule:
                assert _resolve(node, rule["fieldPath"]), f"{path}: {rule['fieldPath']}"
    assert rules >= 15


def test_lists_are_bounded() -> None:
    # CEL cost estimation and etcd size: every list in spec has maxItems.
    for path, node in NODES:
        if path.startswith(".spec") and node.get("type") == "array":
            assert "maxItems" in node, path


def test_crd_shape() -> None:
    crd = yaml.safe_load(crdgen.render_yaml())
    assert crd["metadata"]["name"] == c.CRD_NAME
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (c.KIND, c.PLURAL, ["epdc"])
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert version["name"] == c.VERSION
    assert version["storage"]
    assert version["served"]
    assert version["subresources"] == {"status": {}}
    columns = {col["name"]: col["jsonPath"] for col in version["additionalPrinterColumns"]}
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert {"Encoder", "Prefill", "Decode", "Age"} <= columns.keys()
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
        "conditions"
    ]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert "&id" not in crdgen.render_yaml()  # no YAML anchors


def test_write_and_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    written = crdgen.write(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        f"crds/{c.CRD_FILENAME}",
        f"charts/epd-operator/crds/{c.CRD_FILENAME}",
        f"crds/{c.SCALER_CRD_FILENAME}",
        f"charts/epd-operator/crds/{c.SCALER_CRD_FILENAME}",
    ]
    assert all(p.read_text() == crdgen.render_yaml() for p in written[:2])
    assert all(p.read_text() == crdgen.render_scaler_yaml() for p in written[2:])
    assert crdgen.main([]) == 0
    assert capsys.readouterr().out == crdgen.render_yaml() + crdgen.render_scaler_yaml()
    assert crdgen.main(["--write", "--root", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "crds" / c.CRD_FILENAME).exists()


def test_scaler_crd_has_the_scale_subresource_hpa_reads() -> None:
    crd = yaml.safe_load(crdgen.render_scaler_yaml())
    assert crd["metadata"]["name"] == c.SCALER_CRD_NAME
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        c.SCALER_KIND,
        c.SCALER_PLURAL,
        ["epdrs"],
    )
    (version,) = crd["spec"]["versions"]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    props = version["schema"]["openAPIV3Schema"]["properties"]
    # Each path the scale subresource maps exists in the schema with the type it needs.
    assert props["spec"]["properties"]["replicas"]["type"] == "integer"
    assert props["status"]["properties"]["replicas"]["type"] == "integer"
    assert props["status"]["properties"]["selector"]["type"] == "string"
    assert props["spec"]["properties"]["replicas"]["minimum"] == 1
