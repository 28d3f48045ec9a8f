"""tintdb: an embedding database with Chroma's API.

import tintdb
client = tintdb.PersistentClient(path="./data")
docs = client.get_or_create_collection("docs")
docs.add(ids=["a"], documents=["hello world"])
docs.query(query_texts=["hi"], n_results=1)
"""

__version__ = "0.1.0"  # the one place it is written: both pyproject.toml files read it

from typing import TYPE_CHECKING, Any

from . import errors
from ._client import (
    AdminClient,
    Client,
    CloudClient,
    Collection,
    EphemeralClient,
    PersistentClient,
    PostgresClient,
    RustClient,
)
from ._schema_api import (
    BoolInvertedIndexConfig,
    Cmek,
    FloatInvertedIndexConfig,
    FtsIndexConfig,
    HnswIndexConfig,
    IntInvertedIndexConfig,
    Schema,
    SpannIndexConfig,
    SparseVectorIndexConfig,
    StringInvertedIndexConfig,
    VectorIndexConfig,
)
from ._search import K, Key, Knn, Rrf, Search, SparseVector
from .api import AdminAPI, ClientAPI
from .api.types import (
    URI,
    CollectionMetadata,
    Documents,
    EmbeddingFunction,
    Embeddings,
    GetResult,
    IDs,
    Include,
    Metadata,
    Metadatas,
    QueryResult,
    ReadLevel,
    SparseEmbeddingFunction,
    SparseVectors,
    UpdateCollectionMetadata,
    UpdateMetadata,
    URIs,
    Where,
    WhereDocument,
)
from .config import (
    DEFAULT_DATABASE,
    DEFAULT_TENANT,
    Settings,
    TokenTransportHeader,
    configure,
    get_settings,
)

__all__ = [
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

for _name in (
    "AdminClient",
    "Client",
    "CloudClient",
    "Collection",
    "EphemeralClient",
    "PersistentClient",
    "PostgresClient",
    "RustClient",
    "Settings",
):
    globals()[_name].__module__ = "tintdb"
del _name

if TYPE_CHECKING:
    from ._http import AsyncHttpClient, HttpClient
    from .api import AsyncClientAPI


def __getattr__(name: str) -> Any:
    """The HTTP clients, imported on first use: they load httpx (and through it its
    command line's libraries), about 60 ms and 16 MB that a process using only the
    embedded store does not need."""
    if name == "AsyncClientAPI":  # tintdb.api resolves it the same way
        from . import api

        return api.AsyncClientAPI
    if name in ("HttpClient", "AsyncHttpClient"):
        from . import _http

        value = getattr(_http, name)
        if name == "AsyncHttpClient":
            value.__module__ = "tintdb"
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def copy(source: Any, dest: Any, **options: Any) -> Any:
    """Copy collections and their records between tintdb stores, Chroma directories and
    servers, and export files, as ``tintdb copy`` does; options and the report it
    returns are described in ``tintdb._copy.copy`` and docs/moving-data.md."""
    try:
        from ._copy import copy as run
    except ModuleNotFoundError as exc:  # the thin HTTP client ships without it
        raise ImportError("tintdb.copy needs the full package: pip install tintdb") from exc
    return run(source, dest, **options)
