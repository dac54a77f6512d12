#!/usr/bin/env bash
# Offline checks of deploy/ (part of `just test`): Grafana dashboards lint, Prometheus
# rules (check + unit tests) and config, Kubernetes manifests rendered with kustomize
# and validated against the Kubernetes JSON schemas, Dockerfiles. Needs promtool
# (Debian's `prometheus`, installed by scripts/ensure-deps.sh), kubectl (for kustomize),
# and kubernetes-validate and PyYAML in ./.venv (scripts/ensure-venv.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# The Kubernetes version the manifests are validated against (the oldest we support:
# the router's preStop `sleep` action is on by default from 1.30).
K8S_VERSION=${SHARDLINE_K8S_VERSION:-1.30.0}
python=.venv/bin/python
[ -x "$python" ] || { echo "check-deploy: no ./.venv: run scripts/ensure-venv.sh" >&2; exit 1; }
command -v promtool >/dev/null || { echo "check-deploy: promtool missing: run scripts/ensure-deps.sh (Debian package prometheus)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== grafana dashboards"
"$python" scripts/lint_deploy.py dashboards deploy/grafana

echo "== prometheus rules"
"$python" scripts/lint_deploy.py rule-names deploy/prometheus/alerts.yml
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

echo "== prometheus config"
if promtool check config deploy/prometheus/prometheus.yml >"$tmp/config.out" 2>&1; then
    cat "$tmp/config.out"
elif grep -q 'field kubernetes_sd_configs not found' "$tmp/config.out"; then
    # Debian builds Prometheus without Kubernetes discovery. Check everything else with
    # promtool (relabelling included) and the discovery blocks' fields by hand.
    echo "promtool has no Kubernetes discovery (Debian build): checking the config with kubernetes_sd_configs swapped for static_configs"
    cp deploy/prometheus/alerts.yml "$tmp/"
    "$python" scripts/lint_deploy.py without-kubernetes-sd deploy/prometheus/prometheus.yml "$tmp/prometheus.yml"
    promtool check config "$tmp/prometheus.yml"
else
    cat "$tmp/config.out" >&2
    exit 1
fi

echo "== kubernetes manifests (kustomize, schemas of Kubernetes $K8S_VERSION)"
if ! command -v kubectl >/dev/null; then
    echo "check-deploy: kubectl is needed to render deploy/k8s (kustomize is built in); install it from your distribution or the Kubernetes package repository" >&2
    exit 1
fi
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
    dir=${dir%/}
    out="$tmp/$(echo "$dir" | tr / _).yaml"
    kubectl kustomize "$dir" >"$out"
    .venv/bin/kubernetes-validate --quiet --strict --kubernetes-version "$K8S_VERSION" "$out"
    echo "$dir: $(grep -c '^kind:' "$out") objects valid"
done

echo "== dockerfiles"
for f in deploy/docker/*.Dockerfile; do
    [ "$(grep -c '^FROM ' "$f")" -ge 2 ] || { echo "check-deploy: $f is not multi-stage" >&2; exit 1; }
    grep -q '^USER 65532' "$f" || { echo "check-deploy: $f does not run as non-root (USER 65532)" >&2; exit 1; }
    grep '^FROM ' "$f" | tail -1 | grep -Eq '^FROM (gcr.io/distroless/|debian:[a-z]+-slim)' || { echo "check-deploy: $f final image is neither distroless nor debian-slim" >&2; exit 1; }
done
echo "$(ls deploy/docker/*.Dockerfile | wc -l) Dockerfiles ok"
echo "check-deploy: all passed"
