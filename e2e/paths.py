"""Where things live in the checkout: the one definition of the repository root for tests,
the e2e harness and the benchmarks (they import it; nothing else spells `parents[N]`)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[1]
SAMPLES: Final = REPO / "crds" / "samples"
CHART: Final = REPO / "charts" / "epd-operator"
GOLDEN: Final = REPO / "operator" / "tests" / "golden"
HACK: Final = REPO / "hack"
