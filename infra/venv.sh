#!/usr/bin/env bash
# Creates (or refreshes) .venv/ with the Python-side test tools of infra/requirements.txt.
# Idempotent and quick when nothing changed: the requirements' hash is remembered.
# Prints nothing on success; source-free: callers use .venv/bin/<tool> or put .venv/bin on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
req=infra/requirements.txt
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
echo "$want" >"$stamp"
