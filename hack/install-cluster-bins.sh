#!/usr/bin/env bash
# Builds the pinned cluster binaries (hack/versions.env) with the Go toolchain from the Go
# module proxy into a versioned cache directory outside the repository, once per machine.
#
#   hack/install-cluster-bins.sh            build what is missing, print the bin directory
#   hack/install-cluster-bins.sh --print    print the bin directory only (nothing is built)
#
# Why a generated Go module for Kubernetes and etcd: their go.mod files carry replace
# directives, so `go install pkg@version` refuses them. A tiny module of ours requires them at
# the pinned version and maps each staging module to its published v0.X.Y, which the module
# proxy serves and the checksum database verifies.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

# The cache key is the pinned versions: bump them (or BUILD_REV) to rebuild.
key=$(sha256sum "$here/versions.env" | cut -c1-12)
cache_root=${EPD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/epd-operator}
dest="$cache_root/cluster-bins/$KUBE_VERSION-$key"
bin="$dest/bin"

if [[ "${1:-}" == "--print" ]]; then
  echo "$bin"
  exit 0
fi

want=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok kwokctl helm kind)
missing=()
for b in "${want[@]}"; do [[ -x "$bin/$b" ]] || missing+=("$b"); done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "$bin"
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
work="$dest/build"
rm -rf "$work"
mkdir -p "$work"
export GOFLAGS="-mod=mod -trimpath -buildvcs=false"
# Newer modules may ask for a newer toolchain; let the module proxy provide it.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
start=$(date +%s)

# Kubernetes: one module, all four commands built in one go so shared packages compile once.
if [[ ! -x "$bin/kube-apiserver" || ! -x "$bin/kube-controller-manager" || ! -x "$bin/kube-scheduler" || ! -x "$bin/kubectl" ]]; then
  log "building Kubernetes $KUBE_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl)"
  mkdir -p "$work/kube" && cd "$work/kube"
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
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy
  CGO_ENABLED=0 go build -tags tools -ldflags "$ldflags" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
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

# These three have no replace directives: plain `go install module@version`.
gi() { # gi NAME PACKAGE VERSION
  [[ -x "$bin/$1" ]] && return 0
  log "building $1 $3"
  GOBIN="$bin" CGO_ENABLED=0 go install -ldflags "-s -w ${4:-}" "$2@$3"
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

rm -rf "$work"
for b in "${want[@]}"; do
  [[ -x "$bin/$b" ]] || { log "expected $bin/$b after the build, it is missing"; exit 1; }
done
log "built ${missing[*]} in $(( $(date +%s) - start ))s"
echo "$bin"
