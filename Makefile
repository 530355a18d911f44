# The README's two commands are `make up` (main job) and `make test` (every check CI runs).
# Both install what they need first (hack/bootstrap.sh: idempotent, cached). The edit loop:
# `make unit` (the pure tier, no cluster binaries or vLLM envs), `make lint`, `make fmt`,
# and `make crds` / `make golden` after changing the API models or the renderer.
.PHONY: up down test unit lint fmt crds golden bootstrap

PY := .venv/bin/python

bootstrap:
	hack/bootstrap.sh

up:
	hack/bootstrap.sh --no-vllm
	$(PY) -m e2e.devcluster up

down:
	$(PY) -m e2e.devcluster down

# The pure tier (docs/architecture.md, "Test tiers"): .venv only.
unit:
	hack/bootstrap.sh --venv-only
	$(PY) -m pytest -m unit -q $(PYTEST_ARGS)

lint:
	hack/bootstrap.sh --venv-only
	hack/lint.sh

# Formats and sorts imports of the given files (default: the whole tree).
fmt:
	hack/bootstrap.sh --venv-only
	.venv/bin/ruff check --select I --fix $(or $(FILES),.)
	.venv/bin/ruff format $(or $(FILES),.)

# Regenerate what the API models and the renderer produce (the tests name these targets when
# the committed copies are stale).
crds:
	$(PY) -m epd_operator.api.crdgen --write

golden:
	EPD_UPDATE_GOLDEN=1 $(PY) -m pytest -q -p no:cacheprovider operator/tests/test_render_golden.py

# One pytest run of every tier but gpu. The kind tier (a 2-node kind cluster of podman
# containers from images built offline) is in it wherever this machine can run containers;
# hack/kind-tier.sh --marker deselects it, saying why, where it cannot (EPD_KIND_TIER: README).
test: bootstrap
	hack/lint.sh
	marker=$$(hack/kind-tier.sh --marker) && \
	  $(PY) -m pytest -m "$$marker" --durations=25 $(PYTEST_ARGS)
