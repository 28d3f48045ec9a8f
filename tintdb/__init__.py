"""tintdb: an embedding database with Chroma's API.

import tintdb
client = tintdb.PersistentClient(path="./data")
docs = client.get_or_create_collection("docs")
docs.add(ids=["a"], documents=["hello world"])
docs.query(query_texts=["hi"], n_results=1)
"""

__version__ = "0.1.0"

from . import errors
from ._client import (
    AdminClient,
    Client,
    CloudClient,
    Collection,
    EphemeralClient,
    PersistentClient,
    RustClient,
)
from ._http import AsyncHttpClient, HttpClient
from ._search import K, Key, Knn, Rrf, Search, SparseVector
from .api import AdminAPI, AsyncClientAPI, ClientAPI
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
    "Client",
    "ClientAPI",
    "CloudClient",
    "Collection",
    "CollectionMetadata",
    "Documents",
    "EmbeddingFunction",
    "Embeddings",
    "EphemeralClient",
    "GetResult",
    "HttpClient",
    "IDs",
    "Include",
    "K",
    "Key",
    "Knn",
    "Metadata",
    "Metadatas",
    "PersistentClient",
    "QueryResult",
    "ReadLevel",
    "Rrf",
    "RustClient",
    "Search",
    "Settings",
    "SparseEmbeddingFunction",
    "SparseVector",
    "SparseVectors",
    "TokenTransportHeader",
    "URIs",
    "UpdateCollectionMetadata",
    "UpdateMetadata",
    "Where",
    "WhereDocument",
    "__version__",
    "configure",
    "errors",
    "get_settings",
]

for _name in (
    "AdminClient",
    "AsyncHttpClient",
    "Client",
    "CloudClient",
    "Collection",
    "EphemeralClient",
    "PersistentClient",
    "RustClient",
    "Settings",
):
    globals()[_name].__module__ = "tintdb"
del _name
