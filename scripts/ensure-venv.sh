#!/usr/bin/env bash
# Creates a Python venv from a requirements file and re-installs only when it changes:
#   scripts/ensure-venv.sh        ./.venv from loadtest/requirements.txt (moto's S3 server,
#                                 just, kubernetes-validate, tritonclient and KServe's SDK;
#                                 tests and CI use it);
#   scripts/ensure-venv.sh peer   ./.venv-peer from loadtest/peer/requirements.txt (MLServer
#                                 and scikit-learn, for `just bench-mlserver` only).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    "") venv=.venv req=loadtest/requirements.txt what="the test S3 server (moto) and clients" ;;
    peer) venv=.venv-peer req=loadtest/peer/requirements.txt what="the MLServer peer benchmark" ;;
    *) echo "usage: $0 [peer]" >&2; exit 64 ;;
esac
stamp=$venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
    echo "shardline: python3 is needed for $what; install python3 and python3-venv" >&2
    exit 1
fi
echo "shardline: preparing $venv ($req)" >&2
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
