# syntax=docker/dockerfile:1
# The `router` binary on distroless (glibc, CA certificates, no shell), as non-root.
# Build from the repository root:
#   docker build -f deploy/docker/router.Dockerfile -t shardline/router:0.1.0 .
FROM rust:1-bookworm AS build
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shardline-router --bin router \
    && cp target/release/router /router

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /router /usr/local/bin/router
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/router"]
# Public OIP API and /metrics (set with --listen and --metrics-listen).
EXPOSE 8080 9090
