# syntax=docker/dockerfile:1
# One image for the services (write-service, projector, read-service, fulfilment, and
# payment-sandbox, the sandbox of Stripe's test mode); each compose service picks its binary
# with `command`, e.g. `docker run IMAGE projector status`.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# --- build -----------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src

# The context is the workspace less what .dockerignore drops. The migrations must be in it:
# sqlx::migrate! embeds them into the binaries at compile time.
COPY . .

# The crate registry and the target directory live in BuildKit cache mounts that survive
# between builds, so a source change recompiles our crates only, never every dependency.
# A cache mount is not part of the image layer: copy the binaries out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
        --bin write-service --bin projector --bin read-service \
        --bin fulfilment --bin payment-sandbox \
 && mkdir -p /out \
 && cp target/release/write-service target/release/projector target/release/read-service \
        target/release/fulfilment target/release/payment-sandbox /out/

# --- runtime ---------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# ca-certificates for TLS to managed databases (MongoDB speaks rustls).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app

COPY --from=builder /out/write-service /out/projector /out/read-service \
     /out/fulfilment /out/payment-sandbox /usr/local/bin/

USER 10001:10001
ENV RUST_LOG=info,sqlx=warn
# write-service, read-service, projector and fulfilment (health and metrics), payment-sandbox
EXPOSE 8081 8082 8083 8084 12111
CMD ["write-service"]
