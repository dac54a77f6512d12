# syntax=docker/dockerfile:1
# The `shardctl` binary on distroless (glibc, CA certificates, no shell), as non-root.
# Build from the repository root:
#   docker build -f deploy/docker/shardctl.Dockerfile -t shardline/shardctl:0.1.0 .
FROM rust:1-bookworm AS build
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shardline-shardctl --bin shardctl \
    && cp target/release/shardctl /shardctl

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /shardctl /usr/local/bin/shardctl
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/shardctl"]
