# syntax=docker/dockerfile:1
#
# Crier server image.
#
#   docker build -t crier .
#   docker build -t crier --build-arg WITH_FAYE_CLIENT=true .   # also serve the Faye browser client
#   docker run --rm -p 8000:8000 crier
#
# The entrypoint is `crier serve`; extra arguments are passed on (e.g. `--config FILE`,
# `--redis URL`). Configure with CRIER_* environment variables (docs/configuration.md).
# No HEALTHCHECK: orchestrators probe GET /healthz and GET /readyz themselves.

# `true` bundles the Faye browser client (faye-browser-min.js from npm) and serves it at
# <mount>/client.js and <mount>.js.
ARG WITH_FAYE_CLIENT=false
ARG FAYE_VERSION=1.4.3

# ---- build ------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and build artefacts between builds (BuildKit); the
# binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p crier \
    && install -m 0755 target/release/crier /usr/local/bin/crier

# ---- optional: the Faye browser client ---------------------------------------------------
FROM node:20-bookworm-slim AS faye
ARG FAYE_VERSION
WORKDIR /faye
RUN npm install --no-save --no-audit --no-fund --ignore-scripts "faye@${FAYE_VERSION}" \
    && cp node_modules/faye/client/faye-browser-min.js /faye/faye-browser-min.js

# ---- runtime ------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime-false
RUN groupadd --system --gid 10001 crier \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin crier
COPY --from=builder /usr/local/bin/crier /usr/local/bin/crier
# Numeric user, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
ENTRYPOINT ["crier", "serve"]

FROM runtime-false AS runtime-true
COPY --from=faye /faye/faye-browser-min.js /usr/share/crier/faye-browser-min.js
ENV CRIER_SERVER__CLIENT_JS=/usr/share/crier/faye-browser-min.js

# The last stage is the image; BuildKit builds only the stages it needs.
# hadolint ignore=DL3006
FROM runtime-${WITH_FAYE_CLIENT}
