#!/usr/bin/env bash
# Build and push monlat's container images.
#
#   deploy/image.sh image        build the agent image $REGISTRY/$NAME:$TAG from ./Dockerfile
#   deploy/image.sh push         build it, then push it
#   deploy/image.sh base         build (or reuse) a local Debian base image with debootstrap and
#                                print its name: for machines that cannot pull from a registry
#   deploy/image.sh collector    build the collector image $REGISTRY/$NAME-otelcol:<dist version>
#                                from deploy/otel-collector/Dockerfile
#
# Without a registry:  BASE_IMAGE=$(deploy/image.sh base) deploy/image.sh image
#
# Environment:
#   REGISTRY      image repository prefix (default docker.io/monlat)
#   NAME          image name (default monlat)
#   TAG           image tag (default: the version in pyproject.toml)
#   BASE_IMAGE    base of both agent stages (--build-arg; default: the Dockerfile's pinned python
#                 image). It must provide python3 (>= 3.11) with the venv module.
#   ENGINE        podman or docker (default: podman if installed, else docker)
#   ENGINE_OPTS   extra global engine options, split on spaces (e.g. "--storage-driver vfs")
#   BUILD_OPTS    extra build options, split on spaces (e.g. "--isolation chroot --pull=never")
#   CA_BUNDLE     a CA bundle for pip and Go inside the build (TLS-intercepting proxies), default
#                 $PIP_CERT; handed to the build as the secret "ca-bundle" (never in a layer)
#   MONLAT_CACHE  cache root (default $HOME/.cache/monlat); base images are kept as root
#                 file-system tarballs in $MONLAT_CACHE/images/
#   MONLAT_BASE_REBUILD=1   rebuild the base even if the image or its tarball exists
#   DEBIAN_MIRROR           Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   BUILDER_IMAGE, RUNTIME_IMAGE   collector: override the Go builder and the runtime base
#   OTELCOL_PREBUILT=1      collector: package the binary of deploy/otel-collector/build.sh
#                           instead of compiling inside the build (no Go image needed;
#                           BUILDER_IMAGE then defaults to RUNTIME_IMAGE: any image with a shell)
#
# Logs go to stderr; `base` prints only the image name on stdout, `image`, `push` and
# `collector` print the image reference last.
set -euo pipefail

log() { printf 'image.sh: %s\n' "$*" >&2; }
die() { printf 'image.sh: error: %s\n' "$*" >&2; exit 1; }
usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit "${1:-2}"
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

REGISTRY=${REGISTRY:-docker.io/monlat}
NAME=${NAME:-monlat}
REGISTRY=${REGISTRY%/}
[[ -n $REGISTRY && -n $NAME ]] || die "REGISTRY and NAME must not be empty"

# --- the container engine ---------------------------------------------------------
engine=()
find_engine() {
    local name=${ENGINE:-}
    if [[ -z $name ]]; then
        if command -v podman >/dev/null 2>&1; then
            name=podman
        elif command -v docker >/dev/null 2>&1; then
            name=docker
        else
            die "neither podman nor docker is installed (apt-get install -y podman runc)"
        fi
    fi
    command -v "$name" >/dev/null 2>&1 || die "ENGINE=$name is not an executable"
    # shellcheck disable=SC2206  # ENGINE_OPTS is a list of options, split on purpose
    engine=("$name" ${ENGINE_OPTS:-})
}

image_exists() { "${engine[@]}" image inspect "$1" >/dev/null 2>&1; }

project_version() {
    local version
    version=$(sed -nE 's/^version[[:space:]]*=[[:space:]]*"([^"]+)".*/\1/p' "$repo/pyproject.toml" | head -n1)
    [[ -n $version ]] || die "no version = \"...\" in $repo/pyproject.toml"
    printf '%s\n' "$version"
}

# --- local base image --------------------------------------------------------------
# What goes into the base. Any change here or in build_base_rootfs changes the recipe hash,
# hence the image name and the cached tarball.
BASE_SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
BASE_REPO=localhost/monlat-base

# Fill directory $1 with a minimal Debian: python3 and venv (for the builder stage), CA
# certificates, security updates; no documentation, apt lists or logs.
build_base_rootfs() {
    local root=$1 mirror=$2 suite=$3 packages=$4
    debootstrap --variant=minbase --components=main --include="$packages" \
        "$suite" "$root" "$mirror" >&2
    cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF
    # Like the official Debian images: no documentation from later apt-get installs.
    cat >"$root/etc/dpkg/dpkg.cfg.d/excludes" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
    chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 sh -ec '
        apt-get update -q
        apt-get -y -q -o Dpkg::Options::=--force-confold upgrade
        apt-get clean
    ' >&2
    find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/{man,info,locale,lintian}/* "$root"/var/lib/apt/lists/* \
        "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
        "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/* "$root"/root/.cache
    : >"$root/etc/hostname"
    rm -f "$root/etc/resolv.conf" "$root/etc/machine-id"
}

base_hash() {
    {
        declare -f build_base_rootfs
        printf '%s\n' "$BASE_SUITE" "$BASE_PACKAGES" "$(dpkg --print-architecture 2>/dev/null || uname -m)"
    } | sha256sum | cut -c1-16
}

cmd_base() {
    find_engine
    local hash name cache tarball
    hash=$(base_hash)
    name=$BASE_REPO:$BASE_SUITE-$hash
    cache=${MONLAT_CACHE:-${HOME:?HOME is not set and MONLAT_CACHE is not set}/.cache/monlat}/images
    tarball=$cache/monlat-base-$BASE_SUITE-$hash.tar.gz

    if [[ -z ${MONLAT_BASE_REBUILD:-} ]] && image_exists "$name"; then
        log "base image up to date: $name"
        printf '%s\n' "$name"
        return
    fi
    if [[ -n ${MONLAT_BASE_REBUILD:-} || ! -s $tarball ]]; then
        [[ $(id -u) -eq 0 ]] || die "base: debootstrap needs root"
        command -v debootstrap >/dev/null 2>&1 || die "base: debootstrap is not installed (apt-get install -y debootstrap)"
        mkdir -p "$cache" || die "cannot create $cache"
        local work start
        work=$(mktemp -d "$cache/.base-$hash.XXXXXX")
        # shellcheck disable=SC2064  # expand $work now
        trap "rm -rf '$work'" EXIT
        start=$(date +%s)
        log "debootstrapping Debian $BASE_SUITE ($BASE_PACKAGES) into $work/root"
        build_base_rootfs "$work/root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
            "$BASE_SUITE" "$BASE_PACKAGES" || die "base: building the root file system failed"
        tar --numeric-owner --one-file-system -C "$work/root" \
            --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
            -czf "$work/rootfs.tar.gz" . || die "base: cannot archive the root file system"
        mv -f "$work/rootfs.tar.gz" "$tarball"
        rm -rf "$work"
        trap - EXIT
        log "built $tarball in $(($(date +%s) - start))s ($(du -h "$tarball" | cut -f1))"
    else
        log "importing the cached $tarball"
    fi
    "${engine[@]}" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        "$tarball" "$name" >&2 || die "base: '${engine[0]} import' failed"
    printf '%s\n' "$name"
}

# --- agent image -------------------------------------------------------------------------
build_args=()
common_build_args() {
    # shellcheck disable=SC2206  # BUILD_OPTS is a list of options, split on purpose
    build_args=(${BUILD_OPTS:-})
    local bundle=${CA_BUNDLE:-${PIP_CERT:-}}
    if [[ -n $bundle ]]; then
        [[ -r $bundle ]] || die "CA_BUNDLE/PIP_CERT: $bundle is not a readable file"
        build_args+=(--secret "id=ca-bundle,src=$bundle")
    fi
}

ref=""
build_image() {
    find_engine
    local version revision=""
    version=$(project_version)
    ref=$REGISTRY/$NAME:${TAG:-$version}
    if command -v git >/dev/null 2>&1; then
        revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || true)
    fi
    common_build_args
    build_args+=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision")
    if [[ -n ${BASE_IMAGE:-} ]]; then
        build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
    fi
    log "building $ref with ${engine[0]}${BASE_IMAGE:+ from $BASE_IMAGE}"
    "${engine[@]}" build "${build_args[@]}" -f "$repo/Dockerfile" -t "$ref" "$repo" >&2 \
        || die "building $ref failed"
}

cmd_image() {
    build_image
    printf '%s\n' "$ref"
}

cmd_push() {
    build_image
    log "pushing $ref"
    "${engine[@]}" push "$ref" >&2 || die "pushing $ref failed (logged in to ${ref%%/*}?)"
    printf '%s\n' "$ref"
}

# --- collector image ---------------------------------------------------------------------
cmd_collector() {
    find_engine
    local dir=$repo/deploy/otel-collector version context
    version=$(sed -nE 's/^[[:space:]]*version:[[:space:]]*([^[:space:]#]+).*/\1/p' "$dir/builder-config.yaml" | head -n1)
    [[ -n $version ]] || die "no dist version in $dir/builder-config.yaml"
    ref=$REGISTRY/$NAME-otelcol:${TAG:-$version}
    common_build_args
    local builder=${BUILDER_IMAGE:-}
    context=$dir
    if [[ -n ${OTELCOL_PREBUILT:-} ]]; then
        local bin
        bin=$("$dir/build.sh" | tail -n1) || die "deploy/otel-collector/build.sh failed"
        context=$(mktemp -d)
        # shellcheck disable=SC2064  # expand $context now
        trap "rm -rf '$context'" EXIT
        cp "$dir/Dockerfile" "$dir/builder-config.yaml" "$dir/config.yaml" "$bin" "$context/"
        build_args+=(--build-arg OTELCOL_PREBUILT=true)
        builder=${builder:-${RUNTIME_IMAGE:-}}
    fi
    [[ -n $builder ]] && build_args+=(--build-arg "BUILDER_IMAGE=$builder")
    [[ -n ${RUNTIME_IMAGE:-} ]] && build_args+=(--build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")
    log "building $ref with ${engine[0]}${OTELCOL_PREBUILT:+ from the prebuilt binary}"
    "${engine[@]}" build "${build_args[@]}" -f "$context/Dockerfile" -t "$ref" "$context" >&2 \
        || die "building $ref failed"
    printf '%s\n' "$ref"
}

[[ $# -eq 1 ]] || usage
case $1 in
    image) cmd_image ;;
    push) cmd_push ;;
    base) cmd_base ;;
    collector) cmd_collector ;;
    -h | --help | help) usage 0 ;;
    *) log "unknown command: $1"; usage ;;
esac
