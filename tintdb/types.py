"""Public type aliases and result shapes, the same names chromadb uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, TypedDict

import numpy as np
import numpy.typing as npt

__all__ = [
    "CollectionModel",
    "Document",
    "Documents",
    "Embedding",
    "Embeddings",
    "GetResult",
    "ID",
    "IDs",
    "Include",
    "IncludeField",
    "IndexingStatus",
    "Metadata",
    "MetadataValue",
    "QueryResult",
    "ReadLevel",
    "Where",
    "WhereDocument",
]

ID = str
IDs = list[ID]
Document = str
Documents = list[Document]
Scalar = str | int | float | bool
MetadataValue = Scalar | list[str] | list[int] | list[float] | list[bool] | None
Metadata = dict[str, MetadataValue]
Embedding = list[float] | npt.NDArray[np.floating[Any]]
Embeddings = list[Embedding] | npt.NDArray[np.floating[Any]]
Where = dict[str, Any]
WhereDocument = dict[str, Any]
IncludeField = Literal["documents", "embeddings", "metadatas", "distances", "uris", "data"]
Include = list[IncludeField]


class ReadLevel(str, Enum):
    """How much of the recent writes a read sees, in chromadb's distributed deployments;
    tintdb reads every committed write whatever the level."""

    INDEX_AND_WAL = "index_and_wal"
    INDEX_ONLY = "index_only"
    INDEX_AND_BOUNDED_WAL = "index_and_bounded_wal"


class GetResult(TypedDict):
    ids: list[str]
    embeddings: npt.NDArray[np.float32] | None
    documents: list[str | None] | None
    uris: list[str | None] | None
    data: Any
    metadatas: list[Metadata | None] | None
    included: list[str]


class QueryResult(TypedDict):
    ids: list[list[str]]
    embeddings: list[npt.NDArray[np.float32]] | None
    documents: list[list[str | None]] | None
    uris: list[list[str | None]] | None
    data: Any
    metadatas: list[list[Metadata | None]] | None
    distances: list[list[float]] | None
    included: list[str]


@dataclass
class IndexingStatus:
    """How much of a collection's writes its vector index holds (chromadb's shape).

    tintdb counts records: a write is searchable once committed, its vectors exactly
    from the index's tail until a thread puts them in the graph; ``num_unindexed_ops``
    is how many wait there, and 0 once the graph holds every record.
    """

    num_indexed_ops: int
    num_unindexed_ops: int
    total_ops: int
    op_indexing_progress: float

    @classmethod
    def of(cls, indexed: int, unindexed: int) -> IndexingStatus:
        total = indexed + unindexed
        return cls(indexed, unindexed, total, 1.0 if total == 0 else indexed / total)


@dataclass
class CollectionModel:
    """What a backend knows about a collection: plain data, safe to send over the wire."""

    id: str
    name: str
    tenant: str
    database: str
    metadata: dict[str, Any] | None = None
    configuration: dict[str, Any] = field(default_factory=dict)
    dimension: int | None = None
    # The collection's schema as the wire shows it (Chroma's Collection JSON ``schema``).
    schema: dict[str, Any] | None = None

    @property
    def space(self) -> str:
        hnsw = self.configuration.get("hnsw") or {}
        return str(hnsw.get("space") or "l2")
