#!/usr/bin/env bash
# Build a real Kubernetes control plane for the tests: kube-apiserver and etcd, from source
# published on the Go module proxy (nothing is downloaded from anywhere else).
#
#   scripts/build-control-plane.sh            # prints the output directory last
#   DIR=$(scripts/build-control-plane.sh | tail -n1)   # $DIR/kube-apiserver, $DIR/etcd
#   scripts/build-control-plane.sh --cluster  # also the rest of a cluster: kube-controller-manager,
#                                             # kube-scheduler, kubelet, kube-proxy (same version)
#
# kube-apiserver: module k8s.io/kubernetes (cmd/kube-apiserver) at $K8S_VERSION, built in a
# generated throwaway module that requires it and replaces every k8s.io/<staging> module (which
# k8s.io/kubernetes's own go.mod points at ./staging/src/...) with its published v0.<minor>.<patch>.
# The replace list is read from the go.mod the proxy serves for that release, so it always
# matches. etcd: the main package of go.etcd.io/etcd/server/v3 (server/main.go, which calls
# etcdmain.Main) built in a second throwaway module; `go install ...@version` cannot be used
# because that module's go.mod has relative replace directives.
#
# Output, keyed by the pinned versions:
#
#   ${MONLAT_CACHE:-$HOME/.cache/monlat}/control-plane/kubernetes-<v>_etcd-<v>/
#     kube-apiserver   etcd   versions.txt   [kubectl, only when none is on PATH]
#     [kube-controller-manager kube-scheduler kubelet kube-proxy, with --cluster]
#
# A binary that is already there is not rebuilt. Go's own caches stay where
# `go env GOMODCACHE GOCACHE` say. The first build downloads ~250 modules and compiles
# for several minutes on 2 cores; it runs under `nice -n 10`.
#
# Environment:
#   MONLAT_CACHE                   cache root (default $HOME/.cache/monlat)
#   MONLAT_K8S_VERSION             k8s.io/kubernetes release (default below)
#   MONLAT_ETCD_VERSION            go.etcd.io/etcd/server/v3 release (default below)
#   MONLAT_CONTROL_PLANE_REBUILD=1 build even if the binaries exist
#   MONLAT_BUILD_KUBECTL=1         also build kubectl (done anyway when none is on PATH)
#   GO                             go executable (default: go on PATH, else /usr/local/go/bin/go)
#
# Everything except the final path goes to stderr.
set -euo pipefail

# Kubernetes 1.32 matches kubectl's minor (v1.32 on the test machines) and the 1.32 OpenAPI
# schemas the manifests are validated against; etcd 3.5 is what 1.32 ships with (its client
# is go.etcd.io/etcd/client/v3 v3.5.x).
K8S_VERSION=${MONLAT_K8S_VERSION:-v1.32.13}
ETCD_VERSION=${MONLAT_ETCD_VERSION:-v3.5.21}

log() { printf 'build-control-plane: %s\n' "$*" >&2; }
die() { printf 'build-control-plane: error: %s\n' "$*" >&2; exit 1; }

[[ $K8S_VERSION =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] \
    || die "MONLAT_K8S_VERSION must look like v1.32.13, got '$K8S_VERSION'"
k8s_minor=${BASH_REMATCH[1]}
cluster_cmds=()
case ${1:-} in
    "") ;;
    --cluster) cluster_cmds=(kube-controller-manager kube-scheduler kubelet kube-proxy) ;;
    *) die "unknown argument '$1' (the only one is --cluster)" ;;
esac
staging_version=v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}
[[ $ETCD_VERSION =~ ^v3\.[0-9]+\.[0-9]+$ ]] \
    || die "MONLAT_ETCD_VERSION must look like v3.5.21, got '$ETCD_VERSION'"

# --- Go -------------------------------------------------------------------------
if [[ -n ${GO:-} ]]; then
    command -v "$GO" >/dev/null 2>&1 || die "GO=$GO is not an executable"
elif command -v go >/dev/null 2>&1; then
    GO=$(command -v go)
elif [[ -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
else
    die "Go is not installed (need go >= 1.23 on PATH, in /usr/local/go/bin, or GO=/path/to/go)"
fi
GO=$(command -v "$GO")
PATH="$(dirname "$GO"):$PATH"
export PATH
go_version=$("$GO" env GOVERSION) || die "'$GO env GOVERSION' failed"

# Static, reproducible builds; no user GOFLAGS (e.g. -mod=vendor) leaking in.
export CGO_ENABLED=0 GOFLAGS='' GO111MODULE=on
nice_cmd=(nice -n 10)
command -v nice >/dev/null 2>&1 || nice_cmd=()

# --- cache layout -----------------------------------------------------------------
cache_root=${MONLAT_CACHE:-${HOME:?HOME is not set and MONLAT_CACHE is not set}/.cache/monlat}
out_dir=$cache_root/control-plane/kubernetes-${K8S_VERSION}_etcd-${ETCD_VERSION}
mkdir -p "$out_dir" || die "cannot create $out_dir"

rebuild=${MONLAT_CONTROL_PLANE_REBUILD:-}
need_apiserver=1 need_etcd=1 need_kubectl=
[[ -x $out_dir/kube-apiserver && -z $rebuild ]] && need_apiserver=
[[ -x $out_dir/etcd && -z $rebuild ]] && need_etcd=
# kubectl only where none is installed (or when asked): the tests use the one on PATH first.
if [[ -n ${MONLAT_BUILD_KUBECTL:-} ]] || ! command -v kubectl >/dev/null 2>&1; then
    [[ -x $out_dir/kubectl && -z $rebuild ]] || need_kubectl=1
fi
need_cluster=()
for name in "${cluster_cmds[@]}"; do
    [[ -x $out_dir/$name && -z $rebuild ]] || need_cluster+=("$name")
done
if [[ -z $need_apiserver && -z $need_etcd && -z $need_kubectl && ${#need_cluster[@]} -eq 0 ]]; then
    log "up to date: $out_dir"
    printf '%s\n' "$out_dir"
    exit 0
fi

work=$(mktemp -d "$out_dir/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Field of `go mod download -json` output (one module), e.g. GoMod, Time, Error.
json_field() { sed -nE "s/^[[:space:]]*\"$1\": \"(.*)\",?$/\1/p" | head -n1; }

# Move a finished binary into place atomically (a concurrent build may have won: fine).
publish() { chmod 0755 "$1" && mv -f "$1" "$2"; }

# --- kube-apiserver (and kubectl) -----------------------------------------------------------
k8s_mod_dir=$work/kubernetes
substitutions=
k8s_ldflags=

# Generate the throwaway module: require k8s.io/kubernetes, replace its staging modules.
prepare_kubernetes_module() {
    local info gomod release_time staging module v
    mkdir -p "$k8s_mod_dir"
    log "reading k8s.io/kubernetes@$K8S_VERSION's go.mod from the module proxy"
    info=$(cd "$k8s_mod_dir" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" 2>&1) || true
    gomod=$(json_field GoMod <<<"$info")
    if [[ -z $gomod || ! -f $gomod ]]; then
        die "cannot download k8s.io/kubernetes@$K8S_VERSION: $(json_field Error <<<"$info")"
    fi
    release_time=$(json_field Time <<<"$info")
    # Every staging module k8s.io/kubernetes replaces with ./staging/src/k8s.io/<name>.
    staging=$(sed -nE 's#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+)[[:space:]]+=>[[:space:]]+\./staging/src/k8s\.io/[A-Za-z0-9._-]+[[:space:]]*$#\1#p' "$gomod" | sort -u)
    [[ -n $staging ]] || die "no ./staging replace directives found in $gomod"
    {
        printf 'module monlat.test/control-plane/kubernetes\n\n'
        printf 'go %s\n\n' "$(sed -nE 's/^go[[:space:]]+([0-9.]+).*/\1/p' "$gomod" | head -n1)"
        printf 'require k8s.io/kubernetes %s\n\n' "$K8S_VERSION"
        printf 'replace (\n'
        for module in $staging; do
            printf '\t%s => %s %s\n' "$module" "$module" "$staging_version"
        done
        printf ')\n'
    } >"$k8s_mod_dir/go.mod"
    log "pinned $(wc -w <<<"$staging") staging modules to $staging_version"

    # The version the binaries report (/version, kubectl version); else v0.0.0-master.
    k8s_ldflags='-s -w'
    for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        k8s_ldflags+=" -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$k8s_minor"
        k8s_ldflags+=" -X $v.gitTreeState=clean"
        if [[ -n $release_time ]]; then k8s_ldflags+=" -X $v.buildDate=$release_time"; fi
    done
}

# resolve_kubernetes_cmd PACKAGE: `go get` it. A staging module the proxy does not serve at
# $staging_version (k8s.io/endpointslice v0.32.13 is refused there) is pinned to the newest
# patch of the same minor it does serve; each substitution is logged and kept in versions.txt.
resolve_kubernetes_cmd() {
    local pkg=$1 attempt output missing module served
    # go.sum may lack k8s.io/kubernetes's own entry when its go.mod came from the cache.
    (cd "$k8s_mod_dir" && "$GO" mod download k8s.io/kubernetes) >&2 || true
    for attempt in 1 2 3 4 5 6; do
        if output=$(cd "$k8s_mod_dir" && "$GO" get "$pkg@$K8S_VERSION" 2>&1); then
            printf '%s\n' "$output" >&2
            return 0
        fi
        missing=$(sed -nE "s#.*(k8s\.io/[A-Za-z0-9._-]+)@$staging_version: reading .*(403|404|410).*#\1#p" \
            <<<"$output" | sort -u)
        if [[ -z $missing ]]; then
            printf '%s\n' "$output" >&2
            die "go get $pkg@$K8S_VERSION failed in $k8s_mod_dir (see above)"
        fi
        for module in $missing; do
            served=$(cd "$k8s_mod_dir" && "$GO" list -m -versions "$module" | tr ' ' '\n' \
                | grep -E "^v0\.$k8s_minor\.[0-9]+$" | sort -t. -k3,3n | tail -n1)
            [[ -n $served && $served != "$staging_version" ]] \
                || die "the module proxy serves no $module v0.$k8s_minor.x"
            log "$module $staging_version is not served; using $served"
            sed -i -E "s#^([[:space:]]*$module => $module) .*#\1 $served#" "$k8s_mod_dir/go.mod"
            substitutions+="$module $served (for $staging_version)"$'\n'
        done
    done
    die "go get $pkg@$K8S_VERSION still failing after substitutions"
}

# build_kubernetes_cmd NAME: k8s.io/kubernetes/cmd/NAME into $out_dir/NAME.
build_kubernetes_cmd() {
    local name=$1 pkg=k8s.io/kubernetes/cmd/$1
    [[ -n $k8s_ldflags ]] || prepare_kubernetes_module
    log "resolving $pkg (downloads on first run)"
    resolve_kubernetes_cmd "$pkg"
    local start=$SECONDS
    log "compiling $name $K8S_VERSION ($go_version, CGO_ENABLED=0, -trimpath)"
    (cd "$k8s_mod_dir" && "${nice_cmd[@]}" "$GO" build -trimpath -ldflags="$k8s_ldflags" \
        -o "$work/$name.bin" "$pkg") >&2 \
        || die "go build $pkg ($K8S_VERSION, $go_version) failed in $k8s_mod_dir (see above)"
    local check=(--version)
    [[ $name == kubectl ]] && check=(version --client)
    "$work/$name.bin" "${check[@]}" >&2 || die "the built $name does not run"
    publish "$work/$name.bin" "$out_dir/$name"
    log "built $name in $((SECONDS - start))s ($(du -h "$out_dir/$name" | cut -f1))"
}

# --- etcd ------------------------------------------------------------------------------
build_etcd() {
    local mod_dir=$work/etcd pkg=go.etcd.io/etcd/server/v3
    mkdir -p "$mod_dir"
    printf 'module monlat.test/control-plane/etcd\n\ngo 1.23\n\nrequire %s %s\n' \
        "$pkg" "$ETCD_VERSION" >"$mod_dir/go.mod"
    log "resolving $pkg@$ETCD_VERSION (downloads on first run)"
    (cd "$mod_dir" && "$GO" get "$pkg@$ETCD_VERSION") >&2 \
        || die "go get $pkg@$ETCD_VERSION failed in $mod_dir (see above)"
    local start=$SECONDS
    log "compiling etcd $ETCD_VERSION ($go_version, CGO_ENABLED=0, -trimpath)"
    (cd "$mod_dir" && "${nice_cmd[@]}" "$GO" build -trimpath -ldflags='-s -w' \
        -o "$work/etcd.bin" "$pkg") >&2 \
        || die "go build $pkg ($ETCD_VERSION, $go_version) failed in $mod_dir (see above)"
    "$work/etcd.bin" --version >&2 || die "the built etcd does not run"
    publish "$work/etcd.bin" "$out_dir/etcd"
    log "built etcd in $((SECONDS - start))s ($(du -h "$out_dir/etcd" | cut -f1))"
}

if [[ -n $need_etcd ]]; then build_etcd; fi
if [[ -n $need_apiserver ]]; then build_kubernetes_cmd kube-apiserver; fi
if [[ -n $need_kubectl ]]; then build_kubernetes_cmd kubectl; fi
for name in "${need_cluster[@]}"; do build_kubernetes_cmd "$name"; done
printf 'kubernetes %s (staging %s)\netcd %s\n%s\n%s' \
    "$K8S_VERSION" "$staging_version" "$ETCD_VERSION" "$go_version" "$substitutions" \
    >"$out_dir/versions.txt"

log "ready: $out_dir"
printf '%s\n' "$out_dir"
