# The README's two commands are `make up` (main job) and `make test` (every check CI runs).
# Both install what they need first (hack/bootstrap.sh: idempotent, cached).
.PHONY: up down test lint bootstrap

bootstrap:
	hack/bootstrap.sh

up:
	hack/bootstrap.sh --no-vllm
	.venv/bin/python -m e2e.devcluster up

down:
	.venv/bin/python -m e2e.devcluster down

lint: bootstrap
	hack/lint.sh

# The kind tier (hack/kind-tier.sh) runs last, wherever podman is present or installable;
# EPD_KIND_TIER=off skips it, EPD_KIND_TIER=on makes a machine that cannot run it fail.
test: bootstrap
	hack/lint.sh
	.venv/bin/python -m pytest -m "not gpu and not kind" --durations=25 $(PYTEST_ARGS)
	EPD_KIND_TIER=$${EPD_KIND_TIER:-auto} hack/kind-tier.sh
