"""The shapes of a collection's ``configuration`` argument, as chromadb names them.

Type hints only (``TypedDict``): ``create_collection(configuration=...)`` and
``Collection.modify(configuration=...)`` take plain dicts of this shape.
"""

from __future__ import annotations

from typing import Any, TypedDict

from .types import Space

__all__ = [
    "CollectionConfiguration",
    "CreateCollectionConfiguration",
    "CreateHNSWConfiguration",
    "CreateSpannConfiguration",
    "HNSWConfiguration",
    "SpannConfiguration",
    "UpdateCollectionConfiguration",
    "UpdateHNSWConfiguration",
    "UpdateSpannConfiguration",
]


class CreateHNSWConfiguration(TypedDict, total=False):
    space: Space
    ef_construction: int
    max_neighbors: int
    ef_search: int
    num_threads: int
    batch_size: int
    sync_threshold: int
    resize_factor: float


class CreateSpannConfiguration(TypedDict, total=False):
    search_nprobe: int
    write_nprobe: int
    space: Space
    ef_construction: int
    ef_search: int
    max_neighbors: int
    reassign_neighbor_count: int
    split_threshold: int
    merge_threshold: int


class UpdateHNSWConfiguration(TypedDict, total=False):
    ef_search: int
    num_threads: int
    batch_size: int
    sync_threshold: int
    resize_factor: float


class UpdateSpannConfiguration(TypedDict, total=False):
    search_nprobe: int
    ef_search: int


HNSWConfiguration = CreateHNSWConfiguration
SpannConfiguration = CreateSpannConfiguration


class CreateCollectionConfiguration(TypedDict, total=False):
    hnsw: CreateHNSWConfiguration | None
    spann: CreateSpannConfiguration | None
    embedding_function: Any


class UpdateCollectionConfiguration(TypedDict, total=False):
    hnsw: UpdateHNSWConfiguration | None
    spann: UpdateSpannConfiguration | None
    embedding_function: Any


class CollectionConfiguration(TypedDict):
    hnsw: HNSWConfiguration | None
    spann: SpannConfiguration | None
    embedding_function: Any
