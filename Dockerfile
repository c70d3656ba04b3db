# syntax=docker/dockerfile:1
# Rootward's container image: docker build -t REGISTRY/rootward:0.1.0 .
#
# Two stages: the builder has a C compiler, because installing the package compiles its Cython kernels
# (receiver/_wire.pyx, topology/_index.pyx); the runtime image gets only the installed virtual environment (the
# package and its runtime dependencies: no compiler, no dev extras, no tests) and runs as a non-root user.
# Both stages use the same base image, so the environment's interpreter path is valid in the second. For
# reproducible builds pin the base image by digest (python:3.11-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/rootward
WORKDIR /src
# What the build reads: pyproject.toml (and the README it names), and the package's folders (package-dir).
COPY pyproject.toml README.md ./
COPY rootward/ rootward/
COPY receiver/ receiver/
COPY topology/ topology/
COPY detector/ detector/
COPY agent/ agent/
COPY actions/ actions/
COPY policies/ policies/
RUN /opt/rootward/bin/pip install . \
    && /opt/rootward/bin/rootward version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="rootward" \
      org.opencontainers.image.description="Telemetry-plane sidecar for autonomous operations on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 rootward \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/rootward --shell /usr/sbin/nologin rootward \
    && mkdir -p /var/lib/rootward \
    && chown 10001:10001 /var/lib/rootward
COPY --from=builder /opt/rootward /opt/rootward
ENV PATH=/opt/rootward/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes' runAsNonRoot can check it. State (storage.data_dir, default ./rootward-data)
# lands under the working directory: mount a volume there or at the configured data_dir.
USER 10001:10001
WORKDIR /var/lib/rootward
# OTLP gRPC, OTLP HTTP, the API (Rootward's defaults: rootward config show).
EXPOSE 4317 4318 8080
# The slim image has no curl: the interpreter asks /healthz (200 while the receiver runs) on the API port.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ROOTWARD_API__LISTEN__PORT', '8080'), timeout=2)"]
ENTRYPOINT ["rootward"]
CMD ["serve"]
