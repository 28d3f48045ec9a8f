#!/usr/bin/env bash
# The full chromadb 1.5.9 package (with its `chroma` server) and tintdb itself (editable, so
# the tests see this tree) in a virtualenv of their own, never the project's: the migration
# tests make real Chroma directories and a real `chroma run` with it, and read Chroma
# directories through the chromadb package in the same interpreter as tintdb.
# Idempotent: skipped while its stamp is newer than its inputs.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
venv="${TINTDB_CHROMADB_VENV:-$root/.venv-chromadb}"
reqs="$here/requirements.txt"
stamp="$venv/.installed"

if [ -f "$stamp" ] && [ ! "$reqs" -nt "$stamp" ] && [ ! "$root/pyproject.toml" -nt "$stamp" ]; then
    exit 0
fi
echo "setup.sh: installing chromadb and tintdb ($reqs) into $venv"
rm -f "$stamp"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r "$reqs" -e "$root"
touch "$stamp"
