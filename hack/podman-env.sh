# shellcheck shell=bash
# Sourced by hack/build-images.sh and hack/build-node-image.sh (and read by e2e/providers.py
# through `hack/build-images.sh --env`): the cache root, the tools podman builds need, and a
# podman configuration for THIS host, detected rather than assumed:
#
# - cgroup manager: systemd only where systemd runs the host, else cgroupfs;
# - OCI runtime: runc on a cgroup v1 / hybrid host (crun refuses that layout), else podman's own;
# - default ulimits: this host's hard limits (a process without CAP_SYS_RESOURCE cannot raise a
#   limit above its hard limit, and podman's defaults ask for more than many VMs allow); nproc
#   at most 32768: on a VM whose hard nproc was 96363, runc could set 32768 but not 40000
#   (the limit runc inherits is lower than the shell's).
#
# The file is written under the cache and named by CONTAINERS_CONF, so the host's own
# /etc/containers configuration is never changed.

EPD_CACHE_ROOT=${EPD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/epd-operator}

# need_tools CMD...: install the Debian packages of missing commands (as root), else fail.
# podman comes with its companions: runc (see above), the CNI plugins of its network backend
# and their DNS plugin (kind's nodes find each other by name: `kubeadm join` fails without
# it), uidmap and iptables.
need_tools() {
  local c pkgs=()
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || pkgs+=("$c"); done
  if [[ " $* " == *" podman "* ]]; then
    command -v runc >/dev/null 2>&1 || pkgs+=(runc)
    [[ -x /usr/lib/cni/bridge ]] || pkgs+=(containernetworking-plugins)
    [[ -x /usr/lib/cni/dnsname ]] || pkgs+=(golang-github-containernetworking-plugin-dnsname)
    command -v newuidmap >/dev/null 2>&1 || pkgs+=(uidmap)
    command -v iptables >/dev/null 2>&1 || pkgs+=(iptables)
  fi
  [[ ${#pkgs[@]} -eq 0 ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing (install these Debian packages or run as root): ${pkgs[*]}" >&2
    return 1
  fi
  echo "installing Debian packages: ${pkgs[*]}" >&2
  # Wait for dpkg's lock rather than fail: other installers may run at the same time.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${pkgs[@]}" >/dev/null
}

# The Debian mirror apt is configured with on this machine (deb822 or one-line sources).
apt_mirror() {
  local m
  m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | sed -n 's/^URIs: *\([^ ]*\).*/\1/p' |
    grep -v -- '-security' | head -1)
  [[ -n $m ]] || m=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '{print $2}' | grep -v -- '-security' | head -1)
  [[ -n $m ]] || { echo "no Debian mirror found in the apt sources" >&2; return 1; }
  echo "$m"
}

# podman_conf: the containers.conf for this host, on stdout.
podman_conf() {
  local manager=cgroupfs runtime="" nofile nproc
  [[ -d /run/systemd/system ]] && manager=systemd
  [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]] || runtime=runc
  nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
  [[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768
  echo "[containers]"
  local limits=()
  [[ $nofile != unlimited ]] && limits+=("\"nofile=$nofile:$nofile\"")
  [[ $nproc != unlimited ]] && limits+=("\"nproc=$nproc:$nproc\"")
  if [[ ${#limits[@]} -gt 0 ]]; then
    local IFS=,
    echo "default_ulimits = [${limits[*]}]"
  fi
  echo "[engine]"
  echo "cgroup_manager = \"$manager\""
  [[ -n $runtime ]] && echo "runtime = \"$runtime\""
  return 0
}

# podman_env: write the file and export CONTAINERS_CONF (and the storage driver).
podman_env() {
  mkdir -p "$EPD_CACHE_ROOT/podman"
  podman_conf > "$EPD_CACHE_ROOT/podman/containers.conf"
  export CONTAINERS_CONF="$EPD_CACHE_ROOT/podman/containers.conf"
}
