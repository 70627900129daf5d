# syntax=docker/dockerfile:1
#
# hookgate container image. Build from the repository root:
#
#   docker build -t hookgate .
#
# BuildKit is required (the default builder since Docker 23): the build keeps
# the cargo registry and target/ in cache mounts, so a source change rebuilds
# only hookgate itself, not its ~200 dependencies.
#
# Runtime: distroless (glibc + libgcc, no shell, no package manager), uid/gid
# 65532, read-only root filesystem friendly: the only writes go to /data.

# The toolchain the project is developed and tested with (Cargo.toml's
# rust-version is the floor, not the target).
ARG RUST_VERSION=1.95

# ---- build -------------------------------------------------------------------
# Debian 12 (bookworm) on purpose: the binary links against glibc, and the
# runtime image below is Debian 12 too. A newer build distro (trixie) would
# produce a binary needing a newer glibc than the runtime has.
#
# The official rust:*-slim images already ship gcc and libc6-dev, which is all
# the C code in the build needs (rusqlite's bundled SQLite, ring, mimalloc).
# So there is no apt-get step: nothing to pin (hadolint DL3008), nothing to
# keep up to date.
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src

# Only what `cargo build` reads: the manifest and lock file, the sources, the
# embedded default config (include_str!) and the bench targets Cargo.toml
# declares (cargo refuses a manifest whose declared targets are missing).
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY benches ./benches
COPY config ./config
COPY src ./src

# The binary is copied out of the cache-mounted target/ in the same step
# (cache mounts are not part of the image). /out/data becomes /data below.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
 && install -D -m 0755 target/release/hookgate /out/hookgate \
 && mkdir -p /out/data

# ---- runtime -----------------------------------------------------------------
# For reproducible production builds, pin this (and the build image) by digest:
#   FROM gcr.io/distroless/cc-debian12:nonroot@sha256:...
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="hookgate" \
      org.opencontainers.image.description="Webhook sidecar: verify, deduplicate, durably queue and forward inbound webhooks" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /out/hookgate /usr/local/bin/hookgate
# Default configuration: one SigSentry route in queue mode, secret from the
# SIGSENTRY_SECRET environment variable. Mount your own over this path.
COPY config/example.toml /etc/hookgate/hookgate.toml
# The SQLite store's directory, owned by the runtime user so that a fresh
# named volume (which copies the image's /data) is writable.
COPY --from=build --chown=65532:65532 /out/data /data

# Container defaults, layered over the config file (env wins): listen on all
# interfaces (the admin listener too, for probes and scrapes; hookgate then
# refuses to start without an admin token: set [admin] token or token_env,
# e.g. HOOKGATE_ADMIN__TOKEN_ENV=ADMIN_TOKEN with ADMIN_TOKEN from a
# secret), store on the volume, JSON logs for collectors.
ENV HOOKGATE_SERVER__LISTEN=0.0.0.0:8080 \
    HOOKGATE_ADMIN__LISTEN=0.0.0.0:9090 \
    HOOKGATE_STORE__PATH=/data/hookgate.db \
    HOOKGATE_LOG__FORMAT=json

# Numeric (the image's "nonroot" user), so that Kubernetes' runAsNonRoot can
# verify it without a runAsUser.
USER 65532:65532

# 8080: webhooks in. 9090: /healthz, /readyz, /metrics, /admin/ (token).
EXPOSE 8080 9090
VOLUME ["/data"]

# Exec form: distroless has no shell. `hookgate healthcheck` GETs
# http://127.0.0.1:9090/readyz (override: HOOKGATE_HEALTHCHECK_URL) and gives
# up after 5s by itself.
HEALTHCHECK --interval=10s --timeout=6s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/hookgate", "healthcheck"]

# SIGTERM drains (readiness off, listeners closed, in-flight requests and
# delivery attempts finish) within [server] shutdown_grace (20s by default):
# give the container more than that to stop (docker stop -t 30, compose
# stop_grace_period: 30s, Kubernetes terminationGracePeriodSeconds: 30).
ENTRYPOINT ["/usr/local/bin/hookgate"]
CMD ["run", "--config", "/etc/hookgate/hookgate.toml"]
