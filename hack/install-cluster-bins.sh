#!/usr/bin/env bash
# Builds the pinned cluster binaries (hack/versions.env) with the Go toolchain from the Go
# module proxy into a versioned cache directory outside the repository, once per machine.
#
#   hack/install-cluster-bins.sh            build what is missing, print the bin directory
#   hack/install-cluster-bins.sh --print    print the bin directory only (nothing is built)
#   hack/install-cluster-bins.sh --node     also build the kind node's binaries (kubelet, kubeadm,
#                                           kube-proxy, crictl, coredns, pause) into node-bin/
#                                           next to bin/, print that directory
#
# Why a generated Go module for Kubernetes and etcd: their go.mod files carry replace
# directives, so `go install pkg@version` refuses them. A tiny module of ours requires them at
# the pinned version and maps each staging module to its published v0.X.Y, which the module
# proxy serves and the checksum database verifies.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

# The cache key is the pinned versions these binaries are built from (not the whole file: a
# pin only the node image uses must not rebuild them); bump them (or BUILD_REV) to rebuild.
key=$(grep -E '^(KUBE_VERSION|KUBE_STAGING_VERSION|ETCD_VERSION|KWOK_VERSION|HELM_VERSION|KIND_VERSION|BUILD_REV)=' \
  "$here/versions.env" | sha256sum | cut -c1-12)
cache_root=${EPD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/epd-operator}
dest="$cache_root/cluster-bins/$KUBE_VERSION-$key"
bin="$dest/bin"
# The node binaries sit next to bin/ under their own key (their pins and the control plane's).
node_key=$(grep -E '^(CRICTL_VERSION|COREDNS_VERSION|PAUSE_VERSION|NODE_BUILD_REV)=' "$here/versions.env" |
  cat - <(echo "$key") | sha256sum | cut -c1-12)
node_bin="$dest/node-bin-$node_key"

node=0
case "${1:-}" in
  --print) echo "$bin"; exit 0 ;;
  --node) node=1 ;;
  "") ;;
  *) echo "install-cluster-bins: unknown argument ${1}" >&2; exit 2 ;;
esac

want=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok kwokctl helm kind)
node_want=(kubelet kubeadm kube-proxy crictl coredns pause)
missing=()
for b in "${want[@]}"; do [[ -x "$bin/$b" ]] || missing+=("$b"); done
if [[ $node -eq 1 ]]; then
  for b in "${node_want[@]}"; do [[ -x "$node_bin/$b" ]] || missing+=("node-bin/$b"); done
fi
out() { if [[ $node -eq 1 ]]; then echo "$node_bin"; else echo "$bin"; fi; }
if [[ ${#missing[@]} -eq 0 ]]; then
  out
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "install-cluster-bins: the Go toolchain ('go') is missing; install Go >= 1.26 first" >&2
  exit 1
fi
if [[ "$(go env GOPROXY)" == "off" ]]; then
  echo "install-cluster-bins: GOPROXY is 'off'; the Go module proxy is needed to fetch modules" >&2
  exit 1
fi

log() { echo "install-cluster-bins: $*" >&2; }
mkdir -p "$bin"
# One build at a time per cache directory (parallel bootstraps of several worktrees).
exec 9>"$dest/.lock"
flock 9
work="$dest/build"
rm -rf "$work"
mkdir -p "$work"
export GOFLAGS="-mod=mod -trimpath -buildvcs=false"
# Newer modules may ask for a newer toolchain; let the module proxy provide it.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
start=$(date +%s)

# kube_build DIR OUT CMD...: build k8s.io/kubernetes/cmd/CMD... at the pinned version into OUT,
# all in one go so shared packages compile once.
kube_build() {
  local dir=$1 out=$2 modfile major minor ldflags p; shift 2
  mkdir -p "$dir" && cd "$dir"
  go mod init epd-operator.local/cluster-bins/kube >/dev/null 2>&1
  go mod edit -require="k8s.io/kubernetes@$KUBE_VERSION"
  modfile=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  # Every "k8s.io/x => ./staging/src/k8s.io/x" becomes "k8s.io/x => k8s.io/x v0.X.Y".
  grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$modfile" | awk '{print $1}' |
    while read -r m; do go mod edit -replace="$m=$m@$KUBE_STAGING_VERSION"; done
  major=${KUBE_VERSION#v}; major=${major%%.*}
  minor=${KUBE_VERSION#v*.}; minor=${minor%%.*}
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  local pkgs=() c
  for c in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  { printf '//go:build tools\n\npackage tools\n\nimport (\n'
    printf '\t_ "%s"\n' "${pkgs[@]}"
    printf ')\n'; } > tools.go
  go mod tidy
  CGO_ENABLED=0 go build -tags tools -ldflags "$ldflags" -o "$out/" "${pkgs[@]}"
}

if [[ ! -x "$bin/kube-apiserver" || ! -x "$bin/kube-controller-manager" || ! -x "$bin/kube-scheduler" || ! -x "$bin/kubectl" ]]; then
  log "building Kubernetes $KUBE_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)"
  kube_build "$work/kube" "$bin" kube-apiserver kube-controller-manager kube-scheduler kubectl
fi

if [[ ! -x "$bin/etcd" ]]; then
  log "building etcd $ETCD_VERSION"
  mkdir -p "$work/etcd" && cd "$work/etcd"
  go mod init epd-operator.local/cluster-bins/etcd >/dev/null 2>&1
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
  go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  go mod tidy
  CGO_ENABLED=0 go build -tags tools -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
fi

# These have no replace directives: plain `go install module@version` (into $gobin).
gobin=$bin
gi() { # gi NAME PACKAGE VERSION [LDFLAGS]
  [[ -x "$gobin/$1" ]] && return 0
  log "building $1 $3"
  GOBIN="$gobin" CGO_ENABLED=0 go install -ldflags "-s -w ${4:-}" "$2@$3"
}
cd "$work"
gi kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"
gi kwokctl sigs.k8s.io/kwok/cmd/kwokctl "$KWOK_VERSION"
# As helm's own release build does: the default Kubernetes version `helm template` and
# `helm lint` assume is the client-go minor helm is built with (else it says 1.20).
helm_k8s_minor=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' |
  xargs grep -E '^\s*k8s\.io/client-go v0\.' | sed -E 's/.*v0\.([0-9]+)\..*/\1/')
helm_pkg=helm.sh/helm/v3/pkg
gi helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
  -X $helm_pkg/chartutil.k8sVersionMajor=1 -X $helm_pkg/chartutil.k8sVersionMinor=$helm_k8s_minor \
  -X $helm_pkg/lint/rules.k8sVersionMajor=1 -X $helm_pkg/lint/rules.k8sVersionMinor=$helm_k8s_minor"
gi kind sigs.k8s.io/kind "$KIND_VERSION"

# The kind node's binaries (hack/build-node-image.sh): the node components from the same
# Kubernetes module, crictl and CoreDNS by plain `go install`, and pause compiled statically
# from the C source the Kubernetes module ships (the pause image is that one binary).
if [[ $node -eq 1 ]]; then
  mkdir -p "$node_bin"
  if [[ ! -x "$node_bin/kubelet" || ! -x "$node_bin/kubeadm" || ! -x "$node_bin/kube-proxy" ]]; then
    log "building Kubernetes $KUBE_VERSION node components (kubelet, kubeadm, kube-proxy)"
    kube_build "$work/node" "$node_bin" kubelet kubeadm kube-proxy
  fi
  cd "$work"
  gobin=$node_bin
  gi crictl sigs.k8s.io/cri-tools/cmd/crictl "$CRICTL_VERSION" "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
  gi coredns github.com/coredns/coredns "$COREDNS_VERSION"
  if [[ ! -x "$node_bin/pause" ]]; then
    log "compiling pause $PAUSE_VERSION"
    command -v gcc >/dev/null 2>&1 || { log "gcc is needed to compile pause"; exit 1; }
    src=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    gcc -Os -Wall -Werror -static -DVERSION="$PAUSE_VERSION" -o "$node_bin/pause" "$src/build/pause/linux/pause.c"
  fi
fi

rm -rf "$work"
for b in "${want[@]}"; do
  [[ -x "$bin/$b" ]] || { log "expected $bin/$b after the build, it is missing"; exit 1; }
done
if [[ $node -eq 1 ]]; then
  for b in "${node_want[@]}"; do
    [[ -x "$node_bin/$b" ]] || { log "expected $node_bin/$b after the build, it is missing"; exit 1; }
  done
fi
log "built ${missing[*]} in $(( $(date +%s) - start ))s"
out
