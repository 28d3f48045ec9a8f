"""``tintdb.api.types``: the names chromadb users import from ``chromadb.api.types``.

Type aliases for arguments and results, the include presets, and ``EmbeddingFunction``,
the shape of an embedding function (also in the thin ``tintdb-client``, for functions
of your own). ``DefaultEmbeddingFunction`` is here too in the full package.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Literal, Protocol, TypeVar

import numpy.typing as npt

from .._schema_api import (
    BOOL_INVERTED_INDEX_NAME,
    BOOL_VALUE_NAME,
    DOCUMENT_KEY,
    EMBEDDING_KEY,
    FLOAT_INVERTED_INDEX_NAME,
    FLOAT_LIST_VALUE_NAME,
    FLOAT_VALUE_NAME,
    FTS_INDEX_NAME,
    HNSW_INDEX_NAME,
    INT_INVERTED_INDEX_NAME,
    INT_VALUE_NAME,
    SPANN_INDEX_NAME,
    SPARSE_VECTOR_INDEX_NAME,
    SPARSE_VECTOR_TYPE_VALUE,
    SPARSE_VECTOR_VALUE_NAME,
    STRING_INVERTED_INDEX_NAME,
    STRING_VALUE_NAME,
    TYPE_KEY,
    VECTOR_INDEX_NAME,
    BoolInvertedIndexConfig,
    BoolInvertedIndexType,
    BoolValueType,
    Cmek,
    CmekProvider,
    FloatInvertedIndexConfig,
    FloatInvertedIndexType,
    FloatListValueType,
    FloatValueType,
    FtsIndexConfig,
    FtsIndexType,
    HnswIndexConfig,
    IndexConfig,
    IntInvertedIndexConfig,
    IntInvertedIndexType,
    IntValueType,
    Schema,
    SpannIndexConfig,
    SparseVectorIndexConfig,
    SparseVectorIndexType,
    SparseVectorValueType,
    StringInvertedIndexConfig,
    StringInvertedIndexType,
    StringValueType,
    ValueTypes,
    VectorIndexConfig,
    VectorIndexType,
)
from .._search.result import SearchResult, SearchResultRow
from .._search.sparse import SparseVector
from ..types import (
    ID,
    Document,
    Documents,
    Embedding,
    Embeddings,
    GetResult,
    IDs,
    Include,
    IncludeField,
    IndexingStatus,
    Metadata,
    MetadataValue,
    QueryResult,
    ReadLevel,
    Where,
    WhereDocument,
)

__all__ = [
    "ID",
    "URI",
    "CollectionMetadata",
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
    "IncludeField",
    "IncludeMetadataDocuments",
    "IncludeMetadataDocumentsDistances",
    "IncludeMetadataDocumentsEmbeddings",
    "IncludeMetadataDocumentsEmbeddingsDistances",
    "IndexingStatus",
    "Loadable",
    "Metadata",
    "MetadataValue",
    "Metadatas",
    "QueryResult",
    "ReadLevel",
    "SearchResult",
    "SearchResultRow",
    "Space",
    "SparseEmbeddingFunction",
    "SparseVector",
    "SparseVectors",
    "URIs",
    "UpdateCollectionMetadata",
    "UpdateMetadata",
    "Where",
    "WhereDocument",
    # Schema and its index configurations (tintdb/_schema_api.py)
    "BOOL_INVERTED_INDEX_NAME",
    "BOOL_VALUE_NAME",
    "DOCUMENT_KEY",
    "EMBEDDING_KEY",
    "FLOAT_INVERTED_INDEX_NAME",
    "FLOAT_LIST_VALUE_NAME",
    "FLOAT_VALUE_NAME",
    "FTS_INDEX_NAME",
    "HNSW_INDEX_NAME",
    "INT_INVERTED_INDEX_NAME",
    "INT_VALUE_NAME",
    "SPANN_INDEX_NAME",
    "SPARSE_VECTOR_INDEX_NAME",
    "SPARSE_VECTOR_TYPE_VALUE",
    "SPARSE_VECTOR_VALUE_NAME",
    "STRING_INVERTED_INDEX_NAME",
    "STRING_VALUE_NAME",
    "TYPE_KEY",
    "VECTOR_INDEX_NAME",
    "BoolInvertedIndexConfig",
    "BoolInvertedIndexType",
    "BoolValueType",
    "Cmek",
    "CmekProvider",
    "FloatInvertedIndexConfig",
    "FloatInvertedIndexType",
    "FloatListValueType",
    "FloatValueType",
    "FtsIndexConfig",
    "FtsIndexType",
    "HnswIndexConfig",
    "IndexConfig",
    "IntInvertedIndexConfig",
    "IntInvertedIndexType",
    "IntValueType",
    "Schema",
    "SpannIndexConfig",
    "SparseVectorIndexConfig",
    "SparseVectorIndexType",
    "SparseVectorValueType",
    "StringInvertedIndexConfig",
    "StringInvertedIndexType",
    "StringValueType",
    "ValueTypes",
    "VectorIndexConfig",
    "VectorIndexType",
]

URI = str
URIs = list[URI]
Metadatas = list[Metadata]
UpdateMetadata = dict[str, MetadataValue]  # a None value deletes the key
CollectionMetadata = dict[str, Any]
UpdateCollectionMetadata = CollectionMetadata
Image = npt.NDArray[Any]
Images = list[Image]
Embeddable = Documents | Images
Loadable = list[Image | None]
Space = Literal["cosine", "l2", "ip"]

IncludeMetadataDocuments: Include = ["metadatas", "documents"]
IncludeMetadataDocumentsEmbeddings: Include = ["metadatas", "documents", "embeddings"]
IncludeMetadataDocumentsDistances: Include = ["metadatas", "documents", "distances"]
IncludeMetadataDocumentsEmbeddingsDistances: Include = [
    "metadatas",
    "documents",
    "embeddings",
    "distances",
]


D = TypeVar("D", contravariant=True)
L = TypeVar("L", covariant=True)

_SPACES: list[Space] = ["cosine", "l2", "ip"]


class EmbeddingFunction(Protocol[D]):
    """What tintdb calls to embed documents and query texts (chromadb's shape).

    Subclass it (``class Mine(EmbeddingFunction[Documents])``) to inherit the defaults
    below; implement ``name``, ``get_config`` and ``build_from_config`` as well if the
    function should be described in the collection's stored configuration, and register
    the class (``tintdb.utils.embedding_functions.register_embedding_function``) so that
    the full package can rebuild it when the collection is opened.
    """

    def __call__(self, input: D) -> Embeddings:
        """One float32 vector per input string, in order."""
        ...

    def embed_query(self, input: D) -> Embeddings:
        """Vectors for query texts; the same as for documents unless a model says otherwise."""
        return self(input)

    @staticmethod
    def name() -> str:
        """The name stored with a collection; must be unique among known functions."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable settings that rebuild this function; never secrets."""
        raise NotImplementedError

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> EmbeddingFunction[D]:
        """The function that ``get_config()`` described."""
        raise NotImplementedError

    def default_space(self) -> Space:
        """The distance space the model was trained for."""
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        """Distance spaces that give meaningful results with these vectors."""
        return list(_SPACES)

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        """Refuse a stored configuration this function cannot be built from (none here)."""
        return None

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        """Refuse a change of configuration that would change the vectors (none here)."""
        return None

    def is_legacy(self) -> bool:
        """True for functions that cannot describe themselves (no ``get_config``)."""
        return type(self).get_config is EmbeddingFunction.get_config


SparseVectors = list[SparseVector]


class SparseEmbeddingFunction(Protocol[D]):
    """What fills a sparse vector index from text (chromadb's shape): one
    ``SparseVector`` per input string. Describe and register it as an
    ``EmbeddingFunction`` (``name``, ``get_config``, ``build_from_config``) so a
    collection's schema can name it; ``ChromaBm25EmbeddingFunction`` is one."""

    def __call__(self, input: D) -> SparseVectors:
        """One sparse vector per input, in order."""
        ...

    def embed_query(self, input: D) -> SparseVectors:
        """Sparse vectors for query texts; the same as for documents unless overridden."""
        return self(input)

    @staticmethod
    def name() -> str:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> SparseEmbeddingFunction[D]:
        raise NotImplementedError

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        return None

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        return None


class DataLoader(Protocol[L]):
    """Loads the data behind URIs (chromadb's shape; tintdb does not call data loaders)."""

    def __call__(self, uris: URIs) -> L: ...


def __getattr__(name: str) -> Any:
    # The default function lives with the model, which the thin client does not ship.
    if name == "DefaultEmbeddingFunction":
        try:
            from ..utils.embedding_functions import DefaultEmbeddingFunction
        except ImportError as exc:
            raise ImportError(
                "DefaultEmbeddingFunction needs the full package (pip install tintdb); the "
                "thin client has no default embedding function"
            ) from exc
        return DefaultEmbeddingFunction
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if importlib.util.find_spec("tintdb.utils") is not None:  # the full package
    __all__ += ["DefaultEmbeddingFunction"]  # noqa: F822 (module __getattr__ below)
