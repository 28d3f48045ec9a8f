"""The seam between the public API and whatever stores the data.

``Client`` and ``Collection`` validate arguments, run embedding functions and shape
results; then they call a ``Backend``. ``LocalBackend`` (SQLite + ANN index, in this
process) and ``HttpBackend`` (a tintdb or Chroma server) implement it; a distributed
engine can too. Arguments arriving here are already validated and normalised:
ids are lists of str, embeddings a float32 array of shape (n, dim) or None,
metadatas/documents/uris lists of length n or None.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .types import (
    CollectionModel,
    GetResult,
    IndexingStatus,
    Metadata,
    QueryResult,
    Where,
    WhereDocument,
)

__all__ = ["Backend", "Vectors"]

Vectors = npt.NDArray[np.float32]


class Backend(Protocol):
    # server
    def heartbeat(self) -> int: ...
    def version(self) -> str: ...
    def reset(self) -> bool: ...
    def close(self) -> None: ...

    # tenants and databases
    def create_tenant(self, name: str) -> None: ...
    def get_tenant(self, name: str) -> dict[str, Any]: ...
    def create_database(self, name: str, tenant: str) -> None: ...
    def get_database(self, name: str, tenant: str) -> dict[str, Any]: ...
    def list_databases(
        self, tenant: str, limit: int | None = None, offset: int | None = None
    ) -> list[dict[str, Any]]: ...
    def delete_database(self, name: str, tenant: str) -> None: ...

    # collections
    def create_collection(
        self,
        name: str,
        metadata: dict[str, Any] | None,
        configuration: dict[str, Any] | None,
        get_or_create: bool,
        tenant: str,
        database: str,
    ) -> CollectionModel: ...
    def get_collection(self, name: str, tenant: str, database: str) -> CollectionModel: ...
    def get_collection_by_id(self, collection_id: str) -> CollectionModel: ...
    def list_collections(
        self, limit: int | None, offset: int | None, tenant: str, database: str
    ) -> list[CollectionModel]: ...
    def count_collections(self, tenant: str, database: str) -> int: ...
    def modify_collection(
        self,
        collection_id: str,
        new_name: str | None,
        new_metadata: dict[str, Any] | None,
        new_configuration: dict[str, Any] | None,
    ) -> CollectionModel: ...
    def delete_collection(self, name: str, tenant: str, database: str) -> None: ...

    # records
    def add(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: Vectors,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None: ...
    def update(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: Vectors | None,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None: ...
    def upsert(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: Vectors,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None: ...
    def delete(
        self,
        collection_id: str,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        limit: int | None = None,
    ) -> int: ...
    def count(self, collection_id: str) -> int: ...
    def get(
        self,
        collection_id: str,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        limit: int | None,
        offset: int | None,
        include: list[str],
    ) -> GetResult: ...
    def query(
        self,
        collection_id: str,
        query_embeddings: Vectors,
        n_results: int,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        include: list[str],
    ) -> QueryResult: ...

    # search and fork
    def search(
        self, collection_id: str, searches: list[dict[str, Any]], read_level: str
    ) -> dict[str, Any]:
        """Search API payloads (checked JSON, text already embedded); returns Chroma's
        column-major SearchResponse with metadata sparse vectors as tagged dicts."""
        ...

    def fork(self, collection_id: str, new_name: str) -> CollectionModel: ...
    def fork_count(self, collection_id: str) -> int: ...
    def indexing_status(self, collection_id: str) -> IndexingStatus: ...
