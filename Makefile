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

# The kind tier (hack/kind-tier.sh: images and a kind node image built offline, a 2-node
# cluster) is opt-in for now: EPD_KIND_TIER=on (or auto: when podman can run) adds it. Its cold
# build (~40 min on a loaded 2-core machine) does not fit the CI budget yet (README).
test: bootstrap
	hack/lint.sh
	EPD_KIND_TIER=$${EPD_KIND_TIER:-off} hack/kind-tier.sh
	$(PY) -m pytest -m "not gpu and not kind" --durations=25 $(PYTEST_ARGS)
