#!/usr/bin/env bash
# Installs the Debian packages Bulkhead's tests call, when missing and when
# running as root: ip (iproute2), ping (iputils-ping), sysctl (procps),
# nft (nftables: only to cross-check the test harness against a ruleset
# written by hand; Bulkhead itself programs the kernel through netlink),
# etcd (etcd-server: the store's tests run against a separately started
# etcd server as well as the embedded one), podman and runc (the CNI
# plugin's test with the real Podman; crun refuses this machine's cgroups),
# containerd (containerd, ctr and the runc shim: the CNI plugin's test with
# the real containerd; its CRI also runs the loopback plugin of
# containernetworking-plugins), unshare, nsenter and mount (util-linux, mount),
# qemu-system-x86 and busybox-static (real VMs in internal/vmtest, which
# downloads Debian's kernel package itself with apt-get download).
# Without root it only reports what is missing; the tests that need it
# skip with a clear reason (in CI, where CI=true, they fail instead).
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v sysctl >/dev/null || need+=(procps)
command -v nft >/dev/null || need+=(nftables)
command -v etcd >/dev/null || need+=(etcd-server)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v containerd >/dev/null || need+=(containerd)
command -v ctr >/dev/null || need+=(containerd)
command -v containerd-shim-runc-v2 >/dev/null || need+=(containerd)
[ -x /usr/lib/cni/loopback ] || need+=(containernetworking-plugins)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v busybox >/dev/null || need+=(busybox-static)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v unshare >/dev/null || need+=(util-linux)
command -v nsenter >/dev/null || need+=(util-linux)
command -v mount >/dev/null || need+=(mount)
if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing ${need[*]} (run as root to install them)" >&2
	exit 0
fi
echo "deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
