#!/usr/bin/env bash
# Builds a kind node image without a registry or release downloads, from the pins in
# hack/versions.env, into an image archive cached once per machine.
#
#   hack/build-node-image.sh           build what is missing; print "ARCHIVE REF"
#   hack/build-node-image.sh --print   print the same line, build nothing
#
# Why not `kind build node-image`: it drives the docker CLI and pulls every image it does not
# build. This script assembles what kind's own base image definition holds (the module cache
# of sigs.k8s.io/kind at $KIND_VERSION, images/base) from other sources:
#
# - root filesystem: Debian $DEBIAN_SUITE from debootstrap (the mirror apt uses here) with the
#   packages kind's base image installs, plus Debian's containerd, runc and CNI plugins;
# - kind's base files (entrypoint, systemd units, containerd config) from the kind module;
# - kubelet, kubeadm, kubectl, crictl from hack/install-cluster-bins.sh --node;
# - the images kubeadm runs (apiserver, controller-manager, scheduler, etcd, kube-proxy,
#   CoreDNS, pause), each one pinned binary in an image of ours under localhost/kind/, which
#   the cluster's kubeadm config names as its imageRepository (e2e/providers.py). They are
#   imported into the node's containerd at boot, before the kubelet starts;
# - /kind/manifests/default-cni.yaml: a small CNI DaemonSet in place of kindnetd (ptp per node,
#   routes to the other nodes' pod ranges, masquerade for pod egress), from e2e/kind-cni.yaml;
# - /kind/manifests/default-storage.yaml: a default StorageClass without a provisioner (tests
#   create static PersistentVolumes).
#
# Host quirks are detected here and baked in (the key of the archive includes them):
# containerd's restrict_oom_score_adj where this host cannot lower oom_score_adj (no
# CAP_SYS_RESOURCE: runc then fails with "can't get final child's PID from pipe").
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=podman-env.sh
source "$here/podman-env.sh"
log() { echo "build-node-image: $*" >&2; }

mode=build
case "${1:-}" in
  --print) mode=print ;;
  "") ;;
  *) echo "build-node-image: unknown argument $1" >&2; exit 2 ;;
esac

# CAP_SYS_RESOURCE is bit 24 of the effective capability set.
cap_eff=$(sed -n 's/^CapEff:\s*//p' /proc/self/status)
restrict_oom=false
(( (16#$cap_eff >> 24) & 1 )) || restrict_oom=true

cache="$EPD_CACHE_ROOT/images"
mkdir -p "$cache"
kind_files="$(go env GOMODCACHE 2>/dev/null || echo "$HOME/go/pkg/mod")/sigs.k8s.io/kind@$KIND_VERSION/images/base/files"
node_pkgs=systemd,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2
node_pkgs+=,pigz,fuse-overlayfs,e2fsprogs,bash,ca-certificates,curl,jq,procps
node_pkgs+=,containerd,runc,containernetworking-plugins
mirror=$(apt_mirror)
rootfs_key=$(echo "$DEBIAN_SUITE $node_pkgs $mirror $NODE_BUILD_REV" | sha256sum | cut -c1-12)
rootfs_tar="$cache/node-rootfs-$rootfs_key.tar"
key=$( { grep -vE '^\s*(#|$)' "$here/versions.env"; echo "$rootfs_key restrict_oom=$restrict_oom";
  cat "$here/build-node-image.sh" "$root/e2e/kind-cni.yaml"; } | sha256sum | cut -c1-12)
node_ref="localhost/epd-kind-node:$KUBE_VERSION-$key"
node_tar="$cache/kind-node-$KUBE_VERSION-$key.tar"
if [[ $mode == print ]]; then echo "$node_tar $node_ref"; exit 0; fi

need_tools podman buildah debootstrap
[[ -d $kind_files ]] || go mod download "sigs.k8s.io/kind@$KIND_VERSION"
podman_env

exec 8>"$cache/.node-lock"
flock 8
if [[ -s $node_tar ]]; then
  podman image exists "$node_ref" || podman load -q -i "$node_tar" >/dev/null
  echo "$node_tar $node_ref"
  exit 0
fi
start=$(date +%s)
work=$(mktemp -d "$cache/node-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

if [[ ! -s $rootfs_tar ]]; then
  log "debootstrap $DEBIAN_SUITE for the node ($node_pkgs)"
  debootstrap --variant=minbase --include="$node_pkgs" "$DEBIAN_SUITE" "$work/rootfs" "$mirror" >&2
  rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/*
  tar -C "$work/rootfs" --numeric-owner -cf "$rootfs_tar.part" .
  mv "$rootfs_tar.part" "$rootfs_tar"
  rm -rf "$work/rootfs"
fi

bins=$("$here/install-cluster-bins.sh")
node_bins=$("$here/install-cluster-bins.sh" --node)
# The node-tools image is built on our local Debian base.
base_ref=$("$here/build-images.sh" | awk '$1 == "base" {print $3}')

# --- the images kubeadm runs, one archive -------------------------------------------------
repo=localhost/kind
mkdir -p "$work/ctx"
scratch_image() { # scratch_image REF BINARY [ENTRYPOINT]
  local ref=$1 binary=$2 entry=${3:-}
  rm -rf "$work/ctx"/* && cp "$binary" "$work/ctx/"
  { echo "FROM scratch"
    if [[ -n $entry ]]; then
      echo "COPY $(basename "$binary") /$(basename "$binary")"
      echo "ENTRYPOINT [\"/$(basename "$binary")\"]"
    else
      echo "COPY $(basename "$binary") /usr/local/bin/$(basename "$binary")"
    fi; } > "$work/ctx/Containerfile"
  podman build -q --pull=never -t "$ref" "$work/ctx" >/dev/null
}
etcd_tag=$(sed -n 's/.*DefaultEtcdVersion = "\(.*\)"/\1/p' \
  "$(go env GOMODCACHE)/k8s.io/kubernetes@$KUBE_VERSION/cmd/kubeadm/app/constants/constants.go")
log "component images under $repo"
scratch_image "$repo/kube-apiserver:$KUBE_VERSION" "$bins/kube-apiserver"
scratch_image "$repo/kube-controller-manager:$KUBE_VERSION" "$bins/kube-controller-manager"
scratch_image "$repo/kube-scheduler:$KUBE_VERSION" "$bins/kube-scheduler"
scratch_image "$repo/etcd:$etcd_tag" "$bins/etcd"
scratch_image "$repo/coredns:$COREDNS_VERSION" "$node_bins/coredns" entry
scratch_image "$repo/pause:$PAUSE_VERSION" "$node_bins/pause" entry
# kube-proxy and the CNI DaemonSet need iptables, ip and conntrack: one image, two names.
rm -rf "$work/ctx"/* && cp "$node_bins/kube-proxy" "$bins/kubectl" "$work/ctx/"
cat > "$work/ctx/Containerfile" <<EOF
FROM $base_ref
RUN apt-get update && apt-get install -y --no-install-recommends iptables iproute2 conntrack \\
    && rm -rf /var/lib/apt/lists/*
COPY kube-proxy kubectl /usr/local/bin/
EOF
podman build -q --network=host --pull=never -t "$repo/kube-proxy:$KUBE_VERSION" "$work/ctx" >/dev/null
podman tag "$repo/kube-proxy:$KUBE_VERSION" "$repo/node-tools:$KUBE_VERSION"
images=("$repo/kube-apiserver:$KUBE_VERSION" "$repo/kube-controller-manager:$KUBE_VERSION"
  "$repo/kube-scheduler:$KUBE_VERSION" "$repo/etcd:$etcd_tag" "$repo/coredns:$COREDNS_VERSION"
  "$repo/pause:$PAUSE_VERSION" "$repo/kube-proxy:$KUBE_VERSION" "$repo/node-tools:$KUBE_VERSION")

# --- the node's root filesystem -------------------------------------------------------------
log "assembling the node root filesystem"
r="$work/rootfs"
mkdir -p "$r"
tar -C "$r" -xf "$rootfs_tar"
install -m 0755 "$kind_files"/usr/local/bin/* "$r/usr/local/bin/"
mkdir -p "$r/kind/bin" "$r/etc/kubernetes/manifests" "$r/kind/manifests" "$r/kind/images" "$r/opt/cni/bin"
install -m 0644 "$kind_files"/kind/README.txt "$r/kind/"
install -m 0755 "$kind_files"/kind/bin/* "$r/kind/bin/"
install -m 0644 "$kind_files"/etc/crictl.yaml "$r/etc/"
install -m 0644 "$kind_files"/etc/default/kubelet "$r/etc/default/"
install -m 0644 "$kind_files"/etc/sysctl.d/* "$r/etc/sysctl.d/"
mkdir -p "$r/etc/containerd" "$r/etc/systemd/system/kubelet.service.d"
install -m 0644 "$kind_files"/etc/systemd/system/*.service "$kind_files"/etc/systemd/system/*.slice \
  "$r/etc/systemd/system/"
install -m 0644 "$kind_files"/etc/systemd/system/kubelet.service.d/* "$r/etc/systemd/system/kubelet.service.d/"
sed -e "s|^\(\s*sandbox_image = \).*|\1\"$repo/pause:$PAUSE_VERSION\"|" \
  -e "s|^\(\s*restrict_oom_score_adj = \).*|\1$restrict_oom|" \
  "$kind_files/etc/containerd/config.toml" > "$r/etc/containerd/config.toml"
# kind's units and scripts expect these paths; Debian installs them elsewhere.
for b in containerd ctr containerd-shim-runc-v2; do ln -sf "/usr/bin/$b" "$r/usr/local/bin/$b"; done
for p in host-local loopback ptp portmap; do ln -sf "/usr/lib/cni/$p" "$r/opt/cni/bin/$p"; done
install -m 0755 "$node_bins/kubelet" "$node_bins/kubeadm" "$bins/kubectl" "$r/usr/bin/"
install -m 0755 "$node_bins/crictl" "$r/usr/local/bin/"
chroot "$r" ctr oci spec |
  chroot "$r" jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' |
  chroot "$r" jq 'del(.process.rlimits)' > "$r/etc/containerd/cri-base.json"
echo "$KUBE_VERSION" > "$r/kind/version"
podman save -m -o "$r/kind/images/components.tar" "${images[@]}" >/dev/null
sed "s/KUBE_VERSION/$KUBE_VERSION/" "$root/e2e/kind-cni.yaml" > "$r/kind/manifests/default-cni.yaml"
cat > "$r/kind/manifests/default-storage.yaml" <<'EOF'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
EOF
# The component images enter containerd before the kubelet can ask for them.
cat > "$r/etc/systemd/system/kind-images.service" <<'EOF'
[Unit]
Description=Import the node's preloaded images into containerd
After=containerd.service
Requires=containerd.service
Before=kubelet.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'for f in /kind/images/*.tar; do ctr -n k8s.io images import --all-platforms "$f"; done'

[Install]
WantedBy=multi-user.target
EOF
# As kind's base image does (images/base/Dockerfile), in the chroot.
find "$r/lib/systemd/system/sysinit.target.wants/" -name "systemd-tmpfiles-setup.service" -delete
rm -f "$r"/lib/systemd/system/multi-user.target.wants/* "$r"/etc/systemd/system/*.wants/* \
  "$r"/lib/systemd/system/local-fs.target.wants/* "$r"/lib/systemd/system/sockets.target.wants/*udev* \
  "$r"/lib/systemd/system/sockets.target.wants/*initctl* "$r"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >> "$r/etc/systemd/journald.conf"
ln -sf /usr/lib/systemd/systemd "$r/sbin/init"
chroot "$r" systemctl enable kubelet.service containerd.service undo-mount-hacks.service \
  kind-images.service >/dev/null 2>&1
chroot "$r" systemctl mask systemd-binfmt.service >/dev/null 2>&1
tar -C "$r" --numeric-owner -cf "$work/node.tar" .
podman rmi -f "$node_ref" >/dev/null 2>&1 || true
podman import --change 'ENV container=docker' --change 'STOPSIGNAL SIGRTMIN+3' \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' "$work/node.tar" "$node_ref" >/dev/null
rm -f "$node_tar.part"
podman save -o "$node_tar.part" "$node_ref"
mv "$node_tar.part" "$node_tar"
find "$cache" -maxdepth 1 -name 'kind-node-*.tar' ! -name "$(basename "$node_tar")" -delete
log "node image $node_ref ($(du -h "$node_tar" | cut -f1)) in $(( $(date +%s) - start ))s"
echo "$node_tar $node_ref"
