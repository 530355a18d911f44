#!/usr/bin/env bash
# Builds (once per machine) the cached virtualenv in which the launch-contract tests run vLLM
# 0.33.0's own argument parser and config validation, and prints its directory on stdout.
#
#   hack/install-vllm-env.sh           build if missing or stale, then print the path
#   hack/install-vllm-env.sh --print   print the path only; build nothing
#
# The env lives outside the repository, in
#   ${EPD_CACHE_DIR:-$HOME/.cache/epd-operator}/vllm-0.33.0-<hash>
# where <hash> covers the two pinned lists it is built from (hack/vllm-env-requirements.txt and
# connector/engine-requirements.txt, the file the engine image installs) and the Python version,
# so changing a pin yields a new directory. Both lists are installed with --no-deps: every
# package is pinned there, nothing is resolved. A stamp file, written last, marks a finished
# build; an unfinished one is removed and rebuilt.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { echo "install-vllm-env: $*" >&2; }
die() { log "error: $*"; exit 1; }

mode=build
case "${1:-}" in
  "") ;;
  --print) mode=print ;;
  -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument '$1' (use --print or nothing)" ;;
esac

py=${PYTHON:-python3}
reqs=("$root/hack/vllm-env-requirements.txt" "$root/connector/engine-requirements.txt")
for f in "${reqs[@]}"; do [[ -f "$f" ]] || die "missing pinned list $f"; done
pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
  || die "cannot run '$py' (set PYTHON to a Python 3.11 interpreter)"
hash=$( { cat "${reqs[@]}"; echo "python$pyver"; } | sha256sum | cut -c1-12)
cache=${EPD_CACHE_DIR:-$HOME/.cache/epd-operator}
env_dir="$cache/vllm-0.33.0-$hash"
stamp="$env_dir/.epd-complete"

if [[ $mode == print ]]; then
  echo "$env_dir"
  exit 0
fi

mkdir -p "$cache"
# One builder at a time per cache (parallel test sessions, several checkouts).
exec 9>"$cache/.vllm-env.lock"
flock 9

if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
  echo "$env_dir"
  exit 0
fi

start=$(date +%s)
rm -rf "$env_dir"
# Any failure below removes the half-built env, so the next run starts clean.
fail() { rm -rf "$env_dir"; die "$*"; }
log "building $env_dir (vLLM 0.33.0 + CUDA torch 2.14.0, several GB; once per machine)"
"$py" -m venv "$env_dir" || fail "python -m venv failed for $env_dir"
pip=("$env_dir/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q pip==26.3 || fail "pip self-upgrade to pip==26.3 failed (see above)"
"${pip[@]}" install -q --no-deps --only-binary=:all: -r "${reqs[0]}" -r "${reqs[1]}" \
  || fail "pip install of ${reqs[*]} failed (see the pip output above); nothing was kept"
# The smallest proof that the env does what the tests need: vLLM's configs import.
VLLM_TARGET_DEVICE=cpu "$env_dir/bin/python" -c \
    'from vllm.config import ECTransferConfig, KVTransferConfig' >/dev/null 2>&1 \
  || fail "the built env cannot import vllm.config; a pin in ${reqs[0]} is wrong"
echo "$hash" > "$stamp"
size=$(du -sh "$env_dir" | cut -f1)
log "built in $(( $(date +%s) - start ))s, $size on disk"
echo "$env_dir"
