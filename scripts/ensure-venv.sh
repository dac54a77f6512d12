#!/usr/bin/env bash
# Creates ./.venv with the Python tools from loadtest/requirements.txt (moto's S3 server,
# just). Re-installs only when the requirements change.
set -euo pipefail
cd "$(dirname "$0")/.."

req=loadtest/requirements.txt
stamp=.venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
    echo "shardline: python3 is needed for the test S3 server (moto); install python3 and python3-venv" >&2
    exit 1
fi
echo "shardline: preparing .venv ($req)" >&2
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
