#!/usr/bin/env bash
# Makes sure the system tools Shardline's build and tests need are present:
# etcd + etcdctl (real etcd for integration tests), protoc + protobuf headers (etcd-client
# build), prometheus + promtool (metrics, rules and config checks, the dashboards' live
# test). kubectl (kustomize, for scripts/check-deploy.sh) has no Debian 12 package: it is
# reported, not installed. Installs them with apt when missing and permitted (root, or passwordless sudo);
# otherwise says exactly what to install and fails.
#
# Optional arguments name extra tools for one task: `nginx` (the router benchmark runs it
# as a plain reverse proxy to compare against), e.g. `scripts/ensure-deps.sh nginx`.
set -euo pipefail

packages=()
for extra in "$@"; do
    case "$extra" in
        nginx)
            command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || packages+=(nginx)
            ;;
        *)
            echo "shardline: unknown optional dependency: $extra (known: nginx)" >&2
            exit 2
            ;;
    esac
done
command -v etcd >/dev/null 2>&1 || [ -x /usr/bin/etcd ] || packages+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || packages+=(etcd-client)
command -v protoc >/dev/null 2>&1 || packages+=(protobuf-compiler)
# The TLS tests and bench-router make certificates with openssl and score with curl.
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
command -v curl >/dev/null 2>&1 || packages+=(curl)
[ -f /usr/include/google/protobuf/descriptor.proto ] || packages+=(libprotobuf-dev)
{ command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; } || packages+=(prometheus)
command -v kubectl >/dev/null 2>&1 ||
    echo "shardline: kubectl is missing: scripts/check-deploy.sh needs it to render deploy/k8s" >&2

if [ ${#packages[@]} -eq 0 ]; then
    exit 0
fi

echo "shardline: installing missing system packages: ${packages[*]}" >&2
if ! command -v apt-get >/dev/null 2>&1; then
    echo "shardline: no apt-get here; install etcd (server + etcdctl, 3.4 or later), protoc with the protobuf headers, prometheus (with promtool), openssl and curl${1:+ (and: $*)}, then retry" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "shardline: missing packages; run: sudo apt-get install -y ${packages[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${packages[@]}" >/dev/null
