"""The names and import paths Chroma users write, under ``tintdb``.

``tintdb.__all__`` is pinned, so that adding or removing a public name is deliberate.
``fixtures/chroma_imports.txt`` holds import statements collected from Chroma's docs,
langchain-chroma, llama-index-vector-stores-chroma and tutorials; each runs here with
``chromadb`` replaced by ``tintdb`` (tests/test_thin_client.py runs the client subset
in the thin ``tintdb-client``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import tintdb

STATEMENTS = Path(__file__).parent / "fixtures" / "chroma_imports.txt"

PUBLIC = [
    "DEFAULT_DATABASE",
    "DEFAULT_TENANT",
    "URI",
    "AdminAPI",
    "AdminClient",
    "AsyncClientAPI",
    "AsyncHttpClient",
    "BoolInvertedIndexConfig",
    "Client",
    "ClientAPI",
    "CloudClient",
    "Cmek",
    "Collection",
    "CollectionMetadata",
    "Documents",
    "EmbeddingFunction",
    "Embeddings",
    "EphemeralClient",
    "FloatInvertedIndexConfig",
    "FtsIndexConfig",
    "GetResult",
    "HnswIndexConfig",
    "HttpClient",
    "IDs",
    "Include",
    "IntInvertedIndexConfig",
    "K",
    "Key",
    "Knn",
    "Metadata",
    "Metadatas",
    "PersistentClient",
    "PostgresClient",
    "QueryResult",
    "ReadLevel",
    "Rrf",
    "RustClient",
    "Schema",
    "Search",
    "Settings",
    "SpannIndexConfig",
    "SparseEmbeddingFunction",
    "SparseVector",
    "SparseVectorIndexConfig",
    "SparseVectors",
    "StringInvertedIndexConfig",
    "TokenTransportHeader",
    "URIs",
    "UpdateCollectionMetadata",
    "UpdateMetadata",
    "VectorIndexConfig",
    "Where",
    "WhereDocument",
    "__version__",
    "configure",
    "copy",
    "errors",
    "get_settings",
]


def statements(kind: str) -> list[str]:
    """The statements of one kind ("thin", "full" or "missing"), rewritten for tintdb."""
    found = []
    for line in STATEMENTS.read_text().splitlines():
        line = line.split("  #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        tag, _, rest = line.partition(": ")
        if tag not in ("full", "missing"):
            tag, rest = "thin", line
        if tag == kind:
            found.append(re.sub(r"\bchromadb\b", "tintdb", rest))
    return found


def test_public_names_are_pinned() -> None:
    assert tintdb.__all__ == PUBLIC
    for name in PUBLIC:
        assert hasattr(tintdb, name), name


@pytest.mark.parametrize("statement", statements("thin") + statements("full"))
def test_chroma_import_statement_works(statement: str) -> None:
    exec(statement, {})


@pytest.mark.parametrize("statement", statements("missing"))
def test_unsupported_import_fails_plainly(statement: str) -> None:
    with pytest.raises(ImportError):
        exec(statement, {})


def test_the_list_covers_each_kind() -> None:
    assert len(statements("thin")) >= 40
    assert statements("full") and statements("missing")


def test_the_api_classes_are_the_clients(tmp_path: Path) -> None:
    from tintdb.api import AdminAPI, ClientAPI
    from tintdb.api.models.Collection import Collection
    from tintdb.api.types import EmbeddingFunction
    from tintdb.utils import embedding_functions

    with tintdb.PersistentClient(str(tmp_path)) as client:
        assert isinstance(client, ClientAPI)
        assert isinstance(client.create_collection("typed"), Collection)
    assert isinstance(tintdb.AdminClient(), AdminAPI)
    assert embedding_functions.EmbeddingFunction is EmbeddingFunction is tintdb.EmbeddingFunction
    assert embedding_functions.Embeddings is tintdb.Embeddings  # defined once
    assert embedding_functions.Documents is tintdb.Documents


def test_the_embedded_package_imports_without_the_http_stack() -> None:
    """``import tintdb`` leaves httpx (and the libraries its command line pulls in) to
    the first use of an HTTP client; every public name still resolves, the same object
    by each path."""
    code = (
        "import sys, tintdb, tintdb.api, tintdb.api.types\n"
        "client = tintdb.PersistentClient\n"
        "assert 'httpx' not in sys.modules, 'httpx loaded by import tintdb'\n"
        "from tintdb import AsyncClientAPI, AsyncHttpClient, HttpClient\n"
        "from tintdb.api import AsyncClientAPI as api_async\n"
        "from tintdb.api.models.AsyncCollection import AsyncCollection\n"
        "assert 'httpx' in sys.modules\n"
        "assert AsyncClientAPI is api_async is tintdb._http.AsyncClient\n"
        "assert HttpClient is tintdb._http.HttpClient and AsyncHttpClient.__module__ == 'tintdb'\n"
        "assert AsyncCollection is tintdb._http.AsyncCollection\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
