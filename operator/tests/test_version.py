"""One version: epd_operator.__version__ is what the distributions, the chart, the default
images and the CRD labels say (a release bumps the literal and Chart.yaml, and this test
names any copy that was missed)."""

from __future__ import annotations

from importlib.metadata import version

import yaml

import epd_connector
import epd_operator
from e2e.paths import CHART, REPO
from epd_operator.api import constants as c
from epd_operator.api import crdgen
from epd_operator.api.operator_config import OperatorConfig

V = epd_operator.__version__


def test_the_connector_is_released_in_lockstep() -> None:
    assert epd_connector.__version__ == V


def test_the_installed_distributions_read_the_literal() -> None:
    # pyproject.toml: dynamic = ["version"] from __version__ (an editable install reads it
    # at install time, so a stale .venv shows up here too).
    assert version("epd-operator") == V
    assert version("epd-connector") == V


def test_the_chart_version_and_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert (chart["version"], chart["appVersion"]) == (V, V), "bump charts/epd-operator/Chart.yaml"


def test_the_default_images_are_tagged_with_it() -> None:
    cfg = OperatorConfig.from_env({})
    assert cfg.engine_image.rpartition(":")[2] == V
    assert cfg.router_image.rpartition(":")[2] == V


def test_the_crds_carry_it_as_a_label() -> None:
    for crd in (crdgen.crd(), crdgen.scaler_crd()):
        assert crd["metadata"]["labels"][c.LABEL_VERSION] == V
    committed = list(yaml.safe_load_all((REPO / "crds" / c.CRD_FILENAME).read_text()))
    assert committed[0]["metadata"]["labels"][c.LABEL_VERSION] == V
