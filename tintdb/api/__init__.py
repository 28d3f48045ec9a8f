"""``tintdb.api``: chromadb's ``chromadb.api`` names, for imports and type hints.

chromadb's ``ClientAPI``, ``AdminAPI`` and ``AsyncClientAPI`` are abstract classes that
its clients implement; here they name the client classes themselves, so both
``client: ClientAPI`` and ``isinstance(client, ClientAPI)`` hold for every tintdb client
(embedded or HTTP) as they do for chromadb's.
"""

from typing import TYPE_CHECKING

from .._client import AdminClient, Client, Collection
from ..config import DEFAULT_DATABASE, DEFAULT_TENANT, Settings
from .collection_configuration import (
    CreateCollectionConfiguration,
    UpdateCollectionConfiguration,
)
from .types import (
    ID,
    URI,
    CollectionMetadata,
    DataLoader,
    Document,
    Documents,
    Embeddable,
    Embedding,
    EmbeddingFunction,
    Embeddings,
    GetResult,
    IDs,
    Image,
    Images,
    Include,
    IncludeMetadataDocuments,
    IncludeMetadataDocumentsDistances,
    IncludeMetadataDocumentsEmbeddings,
    IncludeMetadataDocumentsEmbeddingsDistances,
    Loadable,
    Metadata,
    Metadatas,
    QueryResult,
    UpdateCollectionMetadata,
    UpdateMetadata,
    URIs,
    Where,
    WhereDocument,
)

if TYPE_CHECKING:
    from .._http import AsyncClient as AsyncClientAPI

BaseAPI = Client
ClientAPI = Client
AdminAPI = AdminClient

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_TENANT",
    "ID",
    "URI",
    "AdminAPI",
    "AsyncClientAPI",
    "BaseAPI",
    "ClientAPI",
    "Collection",
    "CollectionMetadata",
    "CreateCollectionConfiguration",
    "DataLoader",
    "Document",
    "Documents",
    "Embeddable",
    "Embedding",
    "EmbeddingFunction",
    "Embeddings",
    "GetResult",
    "IDs",
    "Image",
    "Images",
    "Include",
    "IncludeMetadataDocuments",
    "IncludeMetadataDocumentsDistances",
    "IncludeMetadataDocumentsEmbeddings",
    "IncludeMetadataDocumentsEmbeddingsDistances",
    "Loadable",
    "Metadata",
    "Metadatas",
    "QueryResult",
    "ReadLevel",
    "Settings",
    "URIs",
    "UpdateCollectionConfiguration",
    "UpdateCollectionMetadata",
    "UpdateMetadata",
    "Where",
    "WhereDocument",
]


def __getattr__(name: str) -> object:
    if name == "DefaultEmbeddingFunction":  # the full package only (see .types)
        from . import types

        return types.DefaultEmbeddingFunction
    if name == "AsyncClientAPI":  # imported on first use, as tintdb.AsyncHttpClient
        from .._http import AsyncClient

        globals()[name] = AsyncClient
        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
