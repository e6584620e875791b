#!/usr/bin/env bash
# clients.sh TPKIT_SERVE MODEL OPENAPI_YAML VENV: runs clients.py in a venv holding the official
# `openai` client and schemathesis (pinned), made on first use. Exits 77 (skipped) where PyPI
# cannot be reached.
set -euo pipefail
serve=$1 model=$2 spec=$3 venv=$4
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import openai, schemathesis, httpx" 2>/dev/null; then
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install -q --disable-pip-version-check openai==1.55.0 schemathesis==4.32.5 httpx==0.27.2; then
    echo "SKIPPED: the openai client and schemathesis could not be installed (is PyPI reachable?)"
    exit 77
  fi
fi
exec "$venv/bin/python" "$(dirname "$0")/clients.py" "$serve" "$model" "$spec"
