#!/usr/bin/env bash
# Static checks run by `make lint` and `make test`: ruff, mypy --strict on the sources and (as
# strictly) on the tests, e2e/ and bench/, import-linter layers. Needs only .venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/ruff check .
.venv/bin/python hack/code_shape.py --check --limit 60
.venv/bin/ruff format --check .
.venv/bin/mypy
# Tests import their helpers by directory (pytest's rootdir-relative imports), so each group is
# checked with its own search path; two groups because both hold a top-level `conftest`.
MYPYPATH=operator/tests:. .venv/bin/mypy --explicit-package-bases operator/tests conftest.py
MYPYPATH=connector/tests/dataplane:. .venv/bin/mypy --explicit-package-bases connector/tests e2e bench \
  hack/code_shape.py
.venv/bin/lint-imports
