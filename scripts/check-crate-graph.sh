#!/usr/bin/env bash
# The crate graph's promises (docs/architecture.md), checked with `cargo tree`:
# - the router compiles no candle, safetensors or object_store, and the test kit no candle;
# - shardctl compiles no HTTP server of ours (shardline-service without `http`);
# - no crate depends on itself through its dev-dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
tree() { cargo tree --locked --offline "$@" --prefix none 2>/dev/null || cargo tree --locked "$@" --prefix none; }

heavy=$(tree -p shardline-router -e normal | grep -E '^(candle-|safetensors |object_store )' | sort -u || true)
if [ -n "$heavy" ]; then
    echo "check-crate-graph: the router depends on: $heavy" >&2
    fail=1
fi
if tree -p shardline-testkit --all-features -e normal | grep -q '^candle-'; then
    echo "check-crate-graph: the test kit depends on candle" >&2
    fail=1
fi
if tree -p shardline-shardctl -e normal,features | grep -q 'shardline-service feature "http"'; then
    echo "check-crate-graph: shardctl takes shardline-service's http feature (an HTTP server)" >&2
    fail=1
fi
crates=$(cargo metadata --locked --format-version 1 --no-deps |
    python3 -c 'import json, sys; print("\n".join(p["name"] for p in json.load(sys.stdin)["packages"]))')
for crate in $crates; do
    n=$(tree -p "$crate" -e normal,dev | grep -c "^$crate v" || true)
    if [ "$n" -ne 1 ]; then
        echo "check-crate-graph: $crate depends on itself through its dev-dependencies" >&2
        fail=1
    fi
done
[ "$fail" -eq 0 ] && echo "check-crate-graph: $(echo "$crates" | wc -l) crates, no cycles; router without candle, safetensors, object_store"
exit "$fail"
