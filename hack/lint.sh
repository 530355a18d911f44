#!/usr/bin/env bash
# Static checks run by `make test`: ruff, mypy --strict on both src trees, import-linter layers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
