# The two images the Helm chart runs, built from this repository:
#
#   docker build --target operator -t sluice/sluice-operator:0.1.0 .
#   docker build --target limiter  -t sluice/sluice-limiter:0.1.0 .
#
# Both run as user 65532 and write no file, so that they work under the
# chart's and the operator's read-only root filesystem. No test of this
# repository builds them (its machines have no container engine); see
# docs/install.md.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sluice-operator -p sluice-limiter

# Shared by both images: the system's CA certificates, for https
# Prometheus and rediss:// Redis.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
USER 65532:65532

FROM runtime AS limiter
COPY --from=build /src/target/release/sluice-limiter /usr/local/bin/sluice-limiter
ENTRYPOINT ["sluice-limiter"]

# Last, so that a plain `docker build .` makes the operator.
FROM runtime AS operator
COPY --from=build /src/target/release/sluice-operator /usr/local/bin/sluice-operator
ENTRYPOINT ["sluice-operator"]
