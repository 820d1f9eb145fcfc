#!/usr/bin/env bash
# Build monlat's OpenTelemetry Collector distribution (monlat-otelcol) from
# builder-config.yaml with the OpenTelemetry Collector Builder (ocb).
#
#   deploy/otel-collector/build.sh            # prints the binary path last
#   BIN=$(deploy/otel-collector/build.sh | tail -n1)
#
# Needs only Go (>= 1.25) and the Go module proxy: ocb itself is installed
# from the proxy. Output, keyed by the manifest's content hash:
#
#   ${MONLAT_CACHE:-$HOME/.cache/monlat}/otelcol/
#     tools/ocb-<version>               the builder
#     <hash>/builder-config.yaml        copy of the manifest that was built
#     <hash>/src/                       generated main.go, components.go, go.mod, go.sum
#     <hash>/monlat-otelcol             the binary
#
# If <hash>/monlat-otelcol already exists nothing is built. Go's own caches
# stay where `go env GOMODCACHE GOCACHE` says (by default ~/go/pkg/mod and
# ~/.cache/go-build); set those variables to move them, e.g. for CI caching.
#
# Environment:
#   MONLAT_CACHE              cache root (default $HOME/.cache/monlat)
#   MONLAT_OTELCOL_MANIFEST   manifest to build (default: builder-config.yaml here)
#   MONLAT_OTELCOL_REBUILD=1  build even if the binary for this hash exists
#   GO                        go executable (default: go on PATH, else /usr/local/go/bin/go)
#
# Everything except the final path goes to stderr.
set -euo pipefail

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
manifest=${MONLAT_OTELCOL_MANIFEST:-$here/builder-config.yaml}
[[ -f $manifest ]] || die "manifest not found: $manifest"
manifest=$(cd "$(dirname "$manifest")" && pwd)/$(basename "$manifest")

# --- Go -------------------------------------------------------------------
if [[ -n ${GO:-} ]]; then
    command -v "$GO" >/dev/null 2>&1 || die "GO=$GO is not an executable"
elif command -v go >/dev/null 2>&1; then
    GO=$(command -v go)
elif [[ -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
else
    die "Go is not installed (need go >= 1.25 on PATH, in /usr/local/go/bin, or GO=/path/to/go)"
fi
GO=$(command -v "$GO")
# ocb runs "go" from PATH for go mod tidy/download; make it the same one.
export PATH="$(dirname "$GO"):$PATH"
go_version=$("$GO" env GOVERSION) || die "'$GO env GOVERSION' failed"
go_minor=$(sed -E 's/^go1\.([0-9]+).*/\1/' <<<"$go_version")
[[ $go_minor =~ ^[0-9]+$ ]] && (( go_minor >= 25 )) || die "need Go >= 1.25, found $go_version ($GO)"

# Reproducible, static build: no cgo, no VCS stamping, no user GOFLAGS.
export CGO_ENABLED=0
export GOFLAGS=
export GO111MODULE=on

# --- builder version: the core (v0.x) version in the manifest ---------------
ocb_version=$(sed -nE 's#^[[:space:]]*-?[[:space:]]*gomod:[[:space:]]*go\.opentelemetry\.io/collector/receiver/otlpreceiver[[:space:]]+(v[0-9][^[:space:]]*).*#\1#p' "$manifest" | head -n1)
[[ -n $ocb_version ]] || die "cannot find the otlpreceiver version in $manifest (ocb is pinned to it)"

# --- cache layout ------------------------------------------------------------
cache_root=${MONLAT_CACHE:-${HOME:?HOME is not set and MONLAT_CACHE is not set}/.cache/monlat}
otel_cache=$cache_root/otelcol
hash=$(sha256sum "$manifest" | cut -c1-16)
out_dir=$otel_cache/$hash
bin=$out_dir/monlat-otelcol

if [[ -x $bin && -z ${MONLAT_OTELCOL_REBUILD:-} ]]; then
    log "up to date: $bin (manifest hash $hash)"
    printf '%s\n' "$bin"
    exit 0
fi

mkdir -p "$otel_cache/tools" || die "cannot create cache directory $otel_cache"

# --- install ocb ---------------------------------------------------------------
ocb=$otel_cache/tools/ocb-$ocb_version
if [[ ! -x $ocb ]]; then
    log "installing go.opentelemetry.io/collector/cmd/builder@$ocb_version"
    gobin=$(mktemp -d "$otel_cache/tools/.gobin.XXXXXX")
    if ! GOBIN=$gobin "$GO" install -trimpath "go.opentelemetry.io/collector/cmd/builder@$ocb_version" >&2; then
        rm -rf "$gobin"
        die "could not install the collector builder $ocb_version from the Go module proxy ($("$GO" env GOPROXY))"
    fi
    mv -f "$gobin/builder" "$ocb"
    rm -rf "$gobin"
fi

# --- generate and build in a scratch dir, then move into place ------------------
work=$(mktemp -d "$otel_cache/.build-$hash.XXXXXX")
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
cp "$manifest" "$work/builder-config.yaml"

start=$(date +%s)
log "generating sources with ocb $ocb_version into $work/src"
# ocb logs to stderr; keep stdout clean for the final path.
if ! (cd "$work" && "$ocb" --config builder-config.yaml --skip-compilation --skip-strict-versioning=false) >&2; then
    die "ocb failed to generate the distribution (see above); are all components on one collector release?"
fi

log "compiling monlat-otelcol ($go_version, CGO_ENABLED=0, -trimpath)"
if ! (cd "$work/src" && "$GO" build -trimpath -buildvcs=false -ldflags='-s -w' -o "$work/monlat-otelcol" .) >&2; then
    die "go build failed in $work/src"
fi
"$work/monlat-otelcol" --version >&2 || die "the built binary does not run"

# Publish atomically: a concurrent build of the same hash may have won.
rm -rf "$out_dir.old"
[[ -d $out_dir ]] && mv "$out_dir" "$out_dir.old"
if ! mv -T "$work" "$out_dir"; then
    [[ -x $bin ]] || die "could not move the build into $out_dir"
fi
trap - EXIT
rm -rf "$out_dir.old" "$work"

log "built $bin in $(( $(date +%s) - start ))s ($(du -h "$bin" | cut -f1))"
printf '%s\n' "$bin"
