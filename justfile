# Shardline's tasks. `just --list` shows them all.
set shell := ["bash", "-euo", "pipefail", "-c"]

export PATH := justfile_directory() / ".venv/bin" + ":" + env_var("PATH")

demo_profile := env_var_or_default("SHARDLINE_DEMO_PROFILE", "release")
demo_dir := if demo_profile == "dev" { "debug" } else { demo_profile }
# Where cargo puts what it builds: `./target`, or `$CARGO_TARGET_DIR` (or a configured
# target directory) as cargo itself reports it.
target_dir := `cargo metadata --format-version 1 --no-deps --offline 2>/dev/null | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo target`
bin_dir := target_dir / demo_dir

# Show the available recipes.
default:
    @just --list

# Install what builds and tests need: etcd, protoc (apt, when permitted) and the Python venv.
setup:
    scripts/ensure-deps.sh
    scripts/ensure-venv.sh

# The whole system on this machine: trains 20 tenants' risk models, starts 1 router + 4
# workers (etcd, file:// store), drives 30 s of Zipf traffic and prints a summary; the
# fleet keeps running (`just demo-down`). Flags go to `loadtest demo`, e.g.
# `just demo --duration 5s --tenants 5`, `--size-mb 50`, `--s3`.
# SHARDLINE_DEMO_PROFILE=dev uses debug binaries (CI, after `just test` built them).
demo *ARGS: setup
    cargo build --locked --profile {{demo_profile}} -p shardline-router -p shardline-worker -p shardline-shardctl -p shardline-loadtest --bins
    "{{bin_dir}}/loadtest" demo --run-dir "{{target_dir}}/demo" --bin-dir "{{bin_dir}}" {{ARGS}}

# Stop the demo's fleet (only the processes the demo started).
demo-down:
    "{{bin_dir}}/loadtest" fleet down --run-dir "{{target_dir}}/demo"

# Static checks: format, clippy, the crate graph and module cycles.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    scripts/check-crate-graph.sh
    scripts/check-module-cycles.py

# The quick loop: `lint`, then the unit and property tests of every crate (no etcd, no S3,
# no processes; under 3 minutes once built).
check: lint
    if cargo nextest --version >/dev/null 2>&1; then \
        cargo nextest run --workspace --locked --lib --bins; \
    else \
        cargo test --workspace --locked --lib --bins; \
    fi

# Format check, clippy, deploy/ checks, and every test (unit, property, real etcd and S3
# integration, Prometheus scraping a live fleet for the dashboards).
test: setup lint
    scripts/check-deploy.sh
    if cargo nextest --version >/dev/null 2>&1; then \
        cargo nextest run --workspace --locked; \
    else \
        cargo test --workspace --locked; \
    fi
    cargo test --workspace --doc --locked

# Offline checks of deploy/: dashboards lint, promtool rules/config, kustomize + schemas.
check-deploy:
    scripts/check-deploy.sh

# Format the code.
fmt:
    cargo fmt --all

# Every benchmark (ratios against a baseline measured in the same run); each writes its
# section of docs/benchmarks.md with the machine, the command and the date.
bench: bench-placement bench-worker bench-router bench-churn bench-mlserver bench-scale

# Placement: 100,000 tenant models (k=4) onto 1,000 workers, and repair after one leaves.
bench-placement: setup
    mkdir -p "{{target_dir}}"
    cargo bench --locked -p shardline-shared --bench placement | tee "{{target_dir}}/bench-placement.txt"
    cargo run --release --locked -p shardline-loadtest --bin loadtest -- write-docs --section placement --heading '## Placement (`just bench-placement`)' --command 'cargo bench -p shardline-shared --bench placement' --from "{{target_dir}}/bench-placement.txt"

# Worker: warm infer over HTTP vs in-process, cold first score vs fetch + parse (50 MB MLP, etcd + moto).
# Runs with the worker binary's malloc setting (see docs/worker.md), since the worker is in-process here.
bench-worker: setup
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072 cargo run --release --locked -p shardline-loadtest --bin loadtest -- bench-worker --write-docs docs/benchmarks.md

# Router hop: req/s and p50/p99 through the router vs direct to one worker vs nginx in
# front of it (MLP 64→256→256→1 and 64→1, 32 connections, 9 rounds of 3 s with the order
# rotated; router with its default runtime threads, one per core, like nginx
# `worker_processes auto`: see docs/benchmarks.md). Extra flags go to the benchmark
# (`--json`, `--rounds 15`, `--router-threads 1`).
bench-router *ARGS: setup
    scripts/ensure-deps.sh nginx
    cargo build --release --locked -p shardline-router -p shardline-worker
    cargo run --release --locked -p shardline-loadtest --bin loadtest -- bench-router --write-docs docs/benchmarks.md {{ARGS}}

# Model churn: one worker whose budget holds 5 models of 50 MB scoring 25 (uniform mix
# through a router), RSS sampled from /proc against budget × 1.1 + 64 MiB, with a warm
# baseline on the 5 that fit. Extra flags go to the benchmark (`--size-mb 20`, `--json`).
bench-churn *ARGS: setup
    cargo build --release --locked -p shardline-router -p shardline-worker -p shardline-loadtest --bins
    "{{target_dir}}/release/loadtest" bench-churn --write-docs docs/benchmarks.md {{ARGS}}

# Peer comparison: Shardline end to end (router → worker) vs MLServer + mlserver-sklearn
# (from ./.venv-peer, loadtest/peer/requirements.txt) serving the same scikit-learn
# MLPRegressor 64→256→256→1: req/s, p50/p99 and RSS with the same client and 32
# connections, 9 rounds of 3 s alternating; writes the figures into docs/benchmarks.md.
# Extra flags go to the benchmark (`--json`, `--rounds 5`, `--parallel-workers 0`).
bench-mlserver *ARGS: setup
    scripts/ensure-venv.sh peer
    cargo build --release --locked -p shardline-router -p shardline-worker
    cargo run --release --locked -p shardline-loadtest --bin loadtest -- bench-mlserver --write-docs docs/benchmarks.md {{ARGS}}

# Scale: 100,000 tenants (one model each) and 1,000 simulated workers (leased records,
# one leased key per resident model, keep-alives and 100 resident changes a second) in
# one etcd (--quota-backend-bytes 8 GiB; the data directory stays under ~1 GiB), measured
# through real routers, a real worker and shardctl: ready times, router RSS per
# tenant-model, change propagation p99, router CPU, a compaction re-list. About 10 min;
# not part of `just test`. Extra flags go to the benchmark (`--tenants 20000`, `--json`).
bench-scale *ARGS: setup
    cargo build --release --locked -p shardline-router -p shardline-worker -p shardline-shardctl -p shardline-loadtest --bins
    "{{target_dir}}/release/loadtest" bench-scale --write-docs docs/benchmarks.md {{ARGS}}
