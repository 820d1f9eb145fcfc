#!/usr/bin/env bash
# Fetches the pinned Kubernetes OpenAPI v3 schemas (k8s.io/kubernetes) and the prometheus-operator
# CRDs through the Go module proxy into ${MONLAT_CACHE:-$HOME/.cache/monlat}/k8s-openapi, so that
# tests/unit/test_manifests.py then runs offline. The test fetches on first use anyway; this only warms
# the cache (e.g. before going offline). Needs Go; idempotent and instant once cached.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec python3 -m tests.support.k8s_schema fetch
