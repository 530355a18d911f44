#!/usr/bin/env bash
# The `kind` tier's gate and build step. Its tests (marked `kind`: e2e/test_image_container.py,
# e2e/test_kind_cluster.py) run inside `make test`'s one pytest run whenever this machine can
# run containers; EPD_KIND_TIER says what happens where it cannot:
#
#   auto (default)  say "NOT RUN" and why, and deselect the tier
#   on              fail
#   off             never run the tier
#
#   hack/kind-tier.sh --check    exit 0 when the tier runs here; else say why on stderr and exit
#                                1 (auto, off) or 2 (on)
#   hack/kind-tier.sh --build    build our images and the kind node image (hack/build-images.sh,
#                                hack/build-node-image.sh; both cached per machine). Output in
#                                artifacts/kind-tier-build.log, its tail printed on failure.
#   hack/kind-tier.sh --marker   the pytest marker expression `make test` selects with
#
# hack/bootstrap.sh runs --build in the background while the cluster binaries build, so a cold
# machine downloads and unpacks the two Debian roots while the Go compiler has the cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mode=${EPD_KIND_TIER:-auto}
log() { echo "kind-tier: $*" >&2; }
# What the tier writes, measured here: ~2.5 GB of image archives in the cache, ~5 GB of
# container storage (node image, its two running nodes, our image loaded into both).
min_free_gb=15

# cannot: the reason this machine cannot run the tier, or nothing.
cannot() {
  if [[ $mode == off ]]; then echo "EPD_KIND_TIER=off"; return; fi
  if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    if ! command -v podman >/dev/null 2>&1 && { [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; }; then
      echo "no container engine: no Docker engine answers, podman is missing and cannot be installed (needs root and apt)"
      return
    fi
  fi
  local cache=${EPD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/epd-operator} dir free
  mkdir -p "$cache"
  for dir in "$cache" /var/lib; do
    free=$(df -Pk "$dir" | awk 'NR == 2 {print int($4 / 1048576)}')
    if (( free < min_free_gb )); then
      echo "$free GiB free under $dir; the tier needs $min_free_gb GiB (images and container storage)"
      return
    fi
  done
}

check() {
  local why
  why=$(cannot)
  [[ -z $why ]] && return 0
  if [[ $mode == on ]]; then log "FAILED: EPD_KIND_TIER=on but $why"; return 2; fi
  log "NOT RUN: $why"
  return 1
}

build() {
  mkdir -p artifacts
  local out=artifacts/kind-tier-build.log start rc=0
  : >"$out"
  start=$(date +%s)
  # shellcheck source=podman-env.sh
  source hack/podman-env.sh
  need_tools podman buildah debootstrap >>"$out" 2>&1 || { tail -20 "$out" >&2; return 1; }
  # Both at once: each starts with its own debootstrap (network and dpkg); the node image waits
  # for the cluster binaries and the base image on their locks.
  hack/build-images.sh >>"$out" 2>&1 &
  local images=$!
  hack/build-node-image.sh >>"$out" 2>&1 || rc=$?
  wait "$images" || rc=$?
  if [[ $rc -ne 0 ]]; then
    tail -40 "$out" >&2
    log "FAILED: building the images (log: $out)"
    return 1
  fi
  log "images and node image ready in $(( $(date +%s) - start ))s"
}

case "${1:-}" in
  --check) check ;;
  --build)
    rc=0; check || rc=$?
    if [[ $rc -eq 0 ]]; then build; elif [[ $rc -eq 1 ]]; then exit 0; else exit "$rc"; fi ;;
  --marker)
    rc=0; check || rc=$?
    # kind_engine (real vLLM in a 7 GB image on kind) is run by hand, never here.
    if [[ $rc -eq 0 ]]; then echo "not gpu and not kind_engine"; elif [[ $rc -eq 1 ]]; then echo "not gpu and not kind and not kind_engine"; else exit "$rc"; fi ;;
  *) echo "usage: hack/kind-tier.sh --check | --build | --marker" >&2; exit 2 ;;
esac
