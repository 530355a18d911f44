#!/usr/bin/env bash
# The `kind` tier of `make test`: our images built offline (hack/build-images.sh), the kind node
# image (hack/build-node-image.sh), a 2-node kind cluster, and the tests marked `kind` on it.
# Runs wherever podman is present or installable (root on Debian); elsewhere it says why it
# did not run and exits 1, unless EPD_KIND_TIER=auto (then 0: `make test` on a machine that
# cannot run containers). EPD_KIND_TIER=off turns it off.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mode=${EPD_KIND_TIER:-on}
log() { echo "kind-tier: $*" >&2; }
if [[ $mode == off ]]; then log "off (EPD_KIND_TIER=off)"; exit 0; fi
if ! command -v podman >/dev/null 2>&1 && ! command -v docker >/dev/null 2>&1 && [[ $(id -u) -ne 0 ]]; then
  log "NOT RUN: no podman or docker, and not root to install podman"
  [[ $mode == auto ]] && exit 0
  exit 1
fi
start=$(date +%s)
mkdir -p artifacts
# Outside pytest, so the build time is printed on its own and a build failure reads as one
# (its output is in artifacts/kind-tier-build.log, printed on failure).
build() {
  if ! "$@" >>artifacts/kind-tier-build.log 2>&1; then
    tail -40 artifacts/kind-tier-build.log >&2
    log "FAILED: $*"
    exit 1
  fi
}
: >artifacts/kind-tier-build.log
build hack/build-images.sh
log "images ready in $(( $(date +%s) - start ))s"
if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  build hack/build-node-image.sh
  log "node image ready in $(( $(date +%s) - start ))s"
fi
EPD_CLUSTER_PROVIDER=kind .venv/bin/python -m pytest -m kind --durations=10 ${PYTEST_ARGS:-} \
  e2e/test_image_container.py e2e/test_kind_cluster.py
log "done in $(( $(date +%s) - start ))s"
