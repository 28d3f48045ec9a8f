#!/usr/bin/env bash
# Install the official Chroma clients that tests/test_official_clients.py drives against tintdb:
#   - the Python client (PyPI `chromadb-client`, pinned) in its own virtualenv, never the project's;
#   - the JavaScript client (npm `chromadb`, pinned by tests/official/js/package-lock.json).
# Idempotent: each half writes a stamp file and is skipped while its stamp is newer than its inputs.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

CHROMA_CLIENT_VERSION="1.5.9"
venv="${TINTDB_CHROMA_CLIENT_VENV:-$root/.venv-chroma-client}"
py_stamp="$venv/.installed-chromadb-client-$CHROMA_CLIENT_VERSION"

if [ ! -f "$py_stamp" ]; then
    echo "setup.sh: installing chromadb-client==$CHROMA_CLIENT_VERSION into $venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q "chromadb-client==$CHROMA_CLIENT_VERSION"
    touch "$py_stamp"
fi

js="$here/js"
js_stamp="$js/node_modules/.installed"
if [ ! -f "$js_stamp" ] || [ "$js/package-lock.json" -nt "$js_stamp" ] || [ "$js/package.json" -nt "$js_stamp" ]; then
    echo "setup.sh: installing the npm chromadb client from $js/package-lock.json"
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$js_stamp"
fi
