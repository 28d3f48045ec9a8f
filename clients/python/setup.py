"""Build step of tintdb-client: ship only the modules of ``tintdb`` that a client needs.

``pyproject.toml`` points the ``tintdb`` package at the repository's ``tintdb/``; this
keeps the listed modules and nothing else, and refuses to build if one is missing, so
the wheel's contents are exactly ``THIN_PACKAGES`` plus ``py.typed``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# What `import tintdb` and tintdb.HttpClient / AsyncHttpClient import, and no more.
THIN_MODULES = frozenset(
    {
        "__init__",  # the public names
        "_client",  # Client, Collection, AdminClient (over any backend)
        "_backend",  # the Backend protocol
        "_validation",  # argument checks, run before anything is sent
        "_filters",  # where / where_document checks
        "_regex",  # $regex syntax checks (the server runs the patterns)
        "_schema",  # collection schema and configuration: checks, precedence, JSON
        "_schema_api",  # Schema and the index config classes
        "config",  # Settings, default tenant and database
        "errors",  # the error classes, also rebuilt from the server's answers
        "types",  # result types
        "_wire",  # the JSON wire format
        "_http",  # HttpBackend, HttpClient, AsyncHttpClient
    }
)
# The import paths chromadb users write (tintdb.api, tintdb.api.types, the
# EmbeddingFunction protocol for functions of their own, tintdb.api.models.Collection,
# tintdb.auth.token_authn).
THIN_PACKAGES = {
    "tintdb": THIN_MODULES,
    # The Search API's builders and checks, SparseVector, and BM25 (sparse vectors are
    # made where documents are added; it needs `pip install snowballstemmer`, as
    # chromadb's does); not the engine that runs searches.
    "tintdb._search": frozenset({"__init__", "expr", "plan", "result", "sparse", "client", "bm25"}),
    "tintdb.execution": frozenset({"__init__"}),
    "tintdb.execution.expression": frozenset({"__init__", "operator", "plan"}),
    "tintdb.api": frozenset({"__init__", "types", "collection_configuration"}),
    "tintdb.api.models": frozenset({"__init__", "Collection", "AsyncCollection"}),
    "tintdb.auth": frozenset({"__init__", "token_authn"}),
}


class ThinBuildPy(build_py):
    """``build_py`` limited to the modules THIN_PACKAGES lists."""

    def run(self) -> None:
        # pip builds in this directory: a build/ left by an earlier build must not leak
        # modules that are no longer listed into the wheel.
        shutil.rmtree(Path(self.build_lib) / "tintdb", ignore_errors=True)
        super().run()

    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        found = super().find_package_modules(package, package_dir)
        wanted = THIN_PACKAGES.get(package)
        if wanted is None:
            raise RuntimeError(f"tintdb-client does not ship the package {package}")
        kept = [entry for entry in found if entry[1] in wanted]
        missing = wanted - {entry[1] for entry in kept}
        if missing:
            raise RuntimeError(f"tintdb-client: modules not found in {package_dir}: {missing}")
        return kept


setup(cmdclass={"build_py": ThinBuildPy})
