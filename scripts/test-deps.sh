#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages, on Debian, as root:
# the Prometheus server and promtool, iproute2 and util-linux (lab namespaces, setpriv),
# iputils-ping, fping and tcpdump, podman, runc and debootstrap (the image tests), iptables,
# ipset and gcc (the lab cluster's kube-proxy, NetworkPolicy firewall and pod sandbox); then builds
# the slim collector (cached by manifest hash), the local base image (cached as a tarball) and
# a Kubernetes control plane (cached by version).
# Idempotent and quick when everything is already there.
set -euo pipefail

packages=(prometheus iproute2 util-linux iputils-ping fping tcpdump procps podman runc debootstrap openssl
          iptables ipset gcc libc6-dev)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "test-deps: missing Debian packages (${missing[*]}); run as root to install" >&2
        exit 1
    fi
    echo "test-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian package starts a Prometheus service where systemd runs; tests start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl stop prometheus || true
fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$here/deploy/otel-collector/build.sh" >/dev/null
"$here/deploy/image.sh" base >/dev/null
# kube-apiserver and etcd from the Go module proxy (about 6 minutes the first time, then cached),
# and the rest of the lab cluster: controller-manager, scheduler, kubelet, kube-proxy (about
# 2.5 minutes more), containerd, the CNI plugins, CoreDNS and helm (about 11 minutes).
bash "$here/scripts/build-control-plane.sh" --cluster >/dev/null
bash "$here/scripts/build-cluster-runtime.sh" >/dev/null
