"""Codecs for Chroma's v2 REST protocol, shared by the server and the HTTP clients.

Both ends of the wire live in this package (``server.py`` and ``_http.py``); keeping
their encodings in one module means they cannot drift apart.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any

import numpy as np
import orjson

from ._search.sparse import SparseVector
from .errors import InvalidArgumentError
from .types import CollectionModel

__all__ = [
    "API_PREFIX",
    "GET_INCLUDE_DEFAULT",
    "MAX_BATCH_SIZE",
    "QUERY_INCLUDE_DEFAULT",
    "WIRE_GET_INCLUDE",
    "WIRE_QUERY_INCLUDE",
    "collection_from_json",
    "collection_to_json",
    "decode_vector",
    "dumps",
    "encode_vectors",
    "loads",
]

API_PREFIX = "/api/v2"

# What a server without an ``include`` key returns (observed on Chroma's server).
GET_INCLUDE_DEFAULT = ("documents", "metadatas")
QUERY_INCLUDE_DEFAULT = ("documents", "metadatas", "distances")

# The include values the wire knows ("data" exists only in the Python API).
WIRE_GET_INCLUDE = frozenset({"documents", "embeddings", "metadatas", "uris", "distances"})
WIRE_QUERY_INCLUDE = WIRE_GET_INCLUDE

# Advertised in pre-flight: official clients refuse batches above it. tintdb itself has
# no batch limit (only the request body size is bounded), so the number is just large.
MAX_BATCH_SIZE = 100_000

_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_PASSTHROUGH_DATACLASS


def _default(value: Any) -> Any:
    if isinstance(value, SparseVector):
        return value.to_dict()  # the tagged object Chroma's wire carries
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """JSON bytes; numpy arrays are written directly, float32 with float32 precision,
    sparse vectors as Chroma's tagged objects."""
    return orjson.dumps(value, option=_DUMP_OPTIONS, default=_default)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def encode_vectors(vectors: np.ndarray) -> list[str]:
    """One padded standard-base64 string per row of little-endian float32."""
    rows = np.ascontiguousarray(vectors, dtype="<f4")
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in rows]


def decode_vector(text: str, index: int) -> np.ndarray:
    """Inverse of ``encode_vectors`` for one item; errors name the item."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgumentError(f"Invalid base64 string in embeddings[{index}]: {exc}") from exc
    if len(raw) % 4:
        raise InvalidArgumentError(
            f"embeddings[{index}] decodes to {len(raw)} bytes, not a whole number of float32 values"
        )
    return np.frombuffer(raw, dtype="<f4")


def collection_to_json(model: CollectionModel) -> dict[str, Any]:
    """The Collection object both official clients parse (wire-protocol §4)."""
    config = dict(model.configuration or {})
    return {
        "id": model.id,
        "name": model.name,
        "configuration_json": {
            "hnsw": config.get("hnsw"),
            "spann": config.get("spann"),
            "embedding_function": config.get("embedding_function"),
        },
        "schema": model.schema,
        "metadata": model.metadata,
        "dimension": model.dimension,
        "tenant": model.tenant,
        "database": model.database,
        "log_position": 0,
        "version": 0,
    }


def collection_from_json(data: dict[str, Any]) -> CollectionModel:
    config = data.get("configuration_json")
    return CollectionModel(
        id=str(data["id"]),
        name=str(data["name"]),
        tenant=str(data["tenant"]),
        database=str(data["database"]),
        metadata=data.get("metadata"),
        configuration=dict(config) if isinstance(config, dict) else {},
        dimension=data.get("dimension"),
        schema=data["schema"] if isinstance(data.get("schema"), dict) else None,
    )
