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

test: bootstrap
	hack/lint.sh
	.venv/bin/python -m pytest -m "not gpu" --durations=25 $(PYTEST_ARGS)
