# monlat agent image: `monlat agent` as uid/gid 65532, no writes at runtime.
#
#   deploy/image.sh image                                   # docker.io/monlat/monlat:<version>
#   BASE_IMAGE=$(deploy/image.sh base) deploy/image.sh image   # without registry access
#
# BASE_IMAGE is the base of both stages: the venv built in the first stage links to that
# base's python3 (/usr/local/bin/python3 in the official image, /usr/bin/python3 in Debian's
# python3 package), so any base with python3 >= 3.11 and its venv module works.
# Behind a TLS-intercepting proxy, hand pip a CA bundle as the build secret "ca-bundle"
# (deploy/image.sh does this when CA_BUNDLE or PIP_CERT is set); it never lands in a layer.
ARG BASE_IMAGE=docker.io/library/python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# The runtime dependencies first, exactly as locked (every version pinned, every file
# hash-checked: `hatch run lock:refresh` re-resolves requirements.lock from pyproject.toml):
# this layer survives source edits.
COPY requirements.lock ./
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && python3 -m venv /opt/monlat \
    && /opt/monlat/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock

# The project's wheel, without dependencies (nothing unlocked gets in; `pip check` proves the
# locked set satisfies it). Then pip and
# setuptools leave the venv, and so does the kubernetes client's asyncio twin (kubernetes/aio,
# ~70 MB with bytecode, never imported: monlat uses the synchronous client and nothing outside
# aio/ imports it). Every module is compiled once, to hash-based .pyc that stay valid whatever
# the file times after COPY (the runtime never writes bytecode); the smoke test imports what
# the agent imports, Kubernetes discovery included.
COPY pyproject.toml README.md ./
COPY monlat ./monlat
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export PIP_CERT=/run/secrets/ca-bundle; fi \
    && /opt/monlat/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/dist . \
    && /opt/monlat/bin/pip install --no-cache-dir --no-deps /tmp/dist/monlat-*.whl \
    && /opt/monlat/bin/pip check \
    && /opt/monlat/bin/pip uninstall --yes pip setuptools \
    && rm -rf /opt/monlat/lib/python3.*/site-packages/kubernetes/aio \
    && /opt/monlat/bin/python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /opt/monlat \
    && /opt/monlat/bin/python -c "import monlat.agent.agent, monlat.agent.discovery.kubernetes, opentelemetry.exporter.prometheus, opentelemetry.exporter.otlp.proto.grpc.metric_exporter, opentelemetry.exporter.otlp.proto.http.metric_exporter" \
    && /opt/monlat/bin/monlat --help >/dev/null

FROM ${BASE_IMAGE}
ARG BASE_IMAGE
# deploy/image.sh passes pyproject.toml's version and the git commit.
ARG VERSION=""
ARG REVISION=""
LABEL org.opencontainers.image.title="monlat" \
      org.opencontainers.image.description="Kubernetes node-to-node ICMP latency, loss and jitter, exported with OpenTelemetry" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

COPY --from=builder /opt/monlat /opt/monlat
ENV PATH=/opt/monlat/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Numeric, so that Kubernetes' runAsNonRoot can verify it without an /etc/passwd entry.
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/opt/monlat/bin/monlat"]
CMD ["agent"]
