#!/usr/bin/env bash
# Build what a lab Kubernetes node runs besides the kubelet, from the Go module proxy:
# containerd v2 (containerd, containerd-shim-runc-v2, ctr), the CNI reference plugins the lab
# cluster uses (bridge, host-local, loopback, portmap), kube-router (its NetworkPolicy firewall
# only: iptables and ipset, so the lab enforces policies as Calico or Cilium clusters do), CoreDNS,
# and helm. runc comes from
# Debian (scripts/test-deps.sh). None of these modules has replace directives, so each command
# is a plain `go install module/cmd@version`.
#
#   scripts/build-cluster-runtime.sh          # prints the output directory last
#   DIR=$(scripts/build-cluster-runtime.sh | tail -n1)   # $DIR/containerd, $DIR/cni/bridge, ...
#
# Output, keyed by the pinned versions (a binary already there is not rebuilt):
#
#   ${MONLAT_CACHE:-$HOME/.cache/monlat}/cluster-runtime/<versions>/
#     containerd  containerd-shim-runc-v2  ctr  kube-router  coredns  helm  cni/{bridge,host-local,loopback,portmap}
#
# Go's own caches stay where `go env GOMODCACHE GOCACHE` say. Everything but the final path
# goes to stderr. Environment: MONLAT_CACHE, MONLAT_CLUSTER_RUNTIME_REBUILD=1, GO.
set -euo pipefail

CONTAINERD_VERSION=v2.4.2
CNI_PLUGINS_VERSION=v1.7.1
# CoreDNS 1.12 is what Kubernetes 1.32 ships as cluster DNS.
COREDNS_VERSION=v1.12.4
HELM_VERSION=v3.21.4
# The only kube-router the module proxy serves here; security advisories are reported against it.
# It runs only inside the lab cluster (a test fixture that enforces the policies monlat ships),
# never in anything monlat ships.
KUBE_ROUTER_VERSION=v2.1.0

log() { printf 'build-cluster-runtime: %s\n' "$*" >&2; }
die() { printf 'build-cluster-runtime: error: %s\n' "$*" >&2; exit 1; }

if [[ -n ${GO:-} ]]; then
    command -v "$GO" >/dev/null 2>&1 || die "GO=$GO is not an executable"
elif command -v go >/dev/null 2>&1; then
    GO=$(command -v go)
elif [[ -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
else
    die "Go is not installed (need go >= 1.26 on PATH, in /usr/local/go/bin, or GO=/path/to/go)"
fi
GO=$(command -v "$GO")
export PATH="$(dirname "$GO"):$PATH"
export CGO_ENABLED=0 GOFLAGS='' GO111MODULE=on
nice_cmd=(nice -n 10)
command -v nice >/dev/null 2>&1 || nice_cmd=()

cache_root=${MONLAT_CACHE:-${HOME:?HOME is not set and MONLAT_CACHE is not set}/.cache/monlat}
key=containerd-${CONTAINERD_VERSION}_cni-${CNI_PLUGINS_VERSION}_coredns-${COREDNS_VERSION}_helm-${HELM_VERSION}_kube-router-${KUBE_ROUTER_VERSION}
out_dir=$cache_root/cluster-runtime/$key
mkdir -p "$out_dir/cni" || die "cannot create $out_dir"
rebuild=${MONLAT_CLUSTER_RUNTIME_REBUILD:-}

# install OUTPUT PACKAGE@VERSION [LDFLAGS]: go install into a scratch GOBIN, then move into place.
install() {
    local output=$1 package=$2 ldflags=${3:--s -w} bin
    if [[ -x $out_dir/$output && -z $rebuild ]]; then return 0; fi
    local start=$SECONDS scratch
    scratch=$(mktemp -d "$out_dir/.gobin.XXXXXX")
    log "building $package"
    GOBIN=$scratch "${nice_cmd[@]}" "$GO" install -trimpath -ldflags="$ldflags" "$package" >&2 \
        || { rm -rf "$scratch"; die "go install $package failed (see above)"; }
    bin=$(find "$scratch" -type f | head -n1)
    [[ -n $bin ]] || die "go install $package produced no binary"
    chmod 0755 "$bin" && mv -f "$bin" "$out_dir/$output"
    rm -rf "$scratch"
    log "built $output in $((SECONDS - start))s"
}

containerd=github.com/containerd/containerd/v2
version_flags="-s -w -X $containerd/version.Version=$CONTAINERD_VERSION"
install containerd "$containerd/cmd/containerd@$CONTAINERD_VERSION" "$version_flags"
install containerd-shim-runc-v2 "$containerd/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" "$version_flags"
install ctr "$containerd/cmd/ctr@$CONTAINERD_VERSION" "$version_flags"
for plugin in main/bridge ipam/host-local main/loopback meta/portmap; do
    install "cni/${plugin#*/}" "github.com/containernetworking/plugins/plugins/$plugin@$CNI_PLUGINS_VERSION"
done
install kube-router "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION" \
    "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION"
install coredns "github.com/coredns/coredns@$COREDNS_VERSION"
install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"

"$out_dir/containerd" --version >&2 || die "the built containerd does not run"
"$out_dir/coredns" -version >&2 || die "the built coredns does not run"
log "ready: $out_dir"
printf '%s\n' "$out_dir"
