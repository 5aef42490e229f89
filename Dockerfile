# syntax=docker/dockerfile:1.7
# The authwatch image: `authwatch run` on a small Debian runtime, as uid 10001, with the built-in
# rules and SQL detections. The runtime layout (below) is the one helm/authwatch mounts over;
# tests/integration/helm.rs checks that the two agree and lints this file with hadolint.
#
#   docker build -t authwatch:dev .
#
#   /usr/local/bin/authwatch        the binary
#   /etc/authwatch/config.toml      configuration (the chart mounts its ConfigMap here)
#   /etc/authwatch/rules/           built-in rules (the chart mounts its rules ConfigMap here)
#   /etc/authwatch/sql/             built-in windowed SQL detections (likewise)
#   /usr/share/GeoIP/               GeoIP databases (mounted; none are shipped)
#   /var/lib/authwatch/             state and local checkpoints (writable, a volume)
#   /var/run/secrets/authwatch/     secrets, one directory per Secret (mounted)

# Declared before the first FROM, so both stages' FROM lines see them: the runtime runs on the
# Debian suite the binary was built on (its OpenSSL and SASL libraries).
ARG RUST_VERSION=1.95
ARG DEBIAN_SUITE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_SUITE} AS build
# librdkafka is compiled from source by rdkafka-sys (its configure script needs a C/C++ toolchain
# and make); TLS and SASL link the system OpenSSL and Cyrus SASL, compression the system zlib.
# Package versions follow the pinned Debian suite.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake libsasl2-dev libssl-dev pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The registry and target caches survive between builds on one builder (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked --bin authwatch \
 && install -D -m 0755 target/dist/authwatch /out/usr/local/bin/authwatch \
 && install -d /out/etc/authwatch/rules /out/etc/authwatch/sql \
 && find rules -maxdepth 1 -name '*.yaml' -exec install -m 0644 {} /out/etc/authwatch/rules/ \; \
 && find sql -maxdepth 1 -name '*.sql' -exec install -m 0644 {} /out/etc/authwatch/sql/ \; \
 && install -m 0644 config/authwatch.example.toml /out/etc/authwatch/config.toml

FROM debian:${DEBIAN_SUITE}-slim AS runtime
# Shared libraries of the binary (OpenSSL, Cyrus SASL, zlib) and the CA store for TLS to Kafka,
# object storage and identity providers. Package versions follow the suite's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libsasl2-2 libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 authwatch \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/authwatch --shell /usr/sbin/nologin authwatch \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/authwatch \
 && install -d -m 0755 /usr/share/GeoIP /var/run/secrets/authwatch
COPY --from=build /out/ /
USER 10001:10001
WORKDIR /var/lib/authwatch
# /metrics, /livez, /readyz, /startupz; the read-only Postgres-wire SQL endpoint.
EXPOSE 9464 5433
ENTRYPOINT ["/usr/local/bin/authwatch"]
CMD ["run", "--config", "/etc/authwatch/config.toml"]
