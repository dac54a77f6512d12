# syntax=docker/dockerfile:1
# The `worker` binary on debian-slim, as non-root. Unlike the router it keeps a shell:
# deploy/k8s derives --memory-budget from the container's memory limit with shell
# arithmetic at start. `shardctl` is included for operators (`kubectl exec ... shardctl`).
# Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile -t shardline/worker:0.1.0 .
FROM rust:1-bookworm AS build
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shardline-worker --bin worker \
    && cargo build --release --locked -p shardline-shardctl --bin shardctl \
    && cp target/release/worker target/release/shardctl /

FROM debian:bookworm-slim
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 shardline \
    && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin shardline
COPY --from=build /worker /shardctl /usr/local/bin/
USER 65532:65532
# Internal OIP API and /metrics (set with --listen and --metrics-listen).
EXPOSE 9100 9090
ENTRYPOINT ["/usr/local/bin/worker"]
