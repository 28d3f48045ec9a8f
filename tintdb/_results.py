"""Result shaping shared by the backends: stored rows into the ``GetResult`` and
``QueryResult`` chromadb returns. Rows are ``(seq, id, *columns)``, the columns in the
order ``columns_for`` names them (embeddings as float32 bytes, metadata as JSON)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from .types import GetResult, QueryResult

__all__ = ["columns_for", "get_result", "query_result"]

_COLUMNS = {
    "documents": "document",
    "metadatas": "metadata",
    "uris": "uri",
    "embeddings": "embedding",
}


def columns_for(include: list[str]) -> list[str]:
    """The records columns an include list asks for, in the order get_result reads them."""
    return [_COLUMNS[f] for f in ("embeddings", "documents", "uris", "metadatas") if f in include]


def get_result(
    rows: list[tuple[Any, ...]], columns: list[str], include: list[str], dim: int | None
) -> GetResult:
    result: dict[str, Any] = {
        "ids": [r[1] for r in rows],
        "embeddings": None,
        "documents": None,
        "uris": None,
        "data": None,
        "metadatas": None,
        "included": list(include),
    }
    for pos, column in enumerate(columns, start=2):
        values = [r[pos] for r in rows]
        if column == "embedding":
            result["embeddings"] = (
                np.frombuffer(b"".join(values), dtype=np.float32)
                .reshape(len(values), dim or 0)
                .copy()
                if values
                else np.empty((0, dim or 0), dtype=np.float32)
            )
        elif column == "metadata":
            result["metadatas"] = [None if v is None else orjson.loads(v) for v in values]
        elif column == "document":
            result["documents"] = values
        else:
            result["uris"] = values
    return result  # type: ignore[return-value]


def query_result(
    labels: list[np.ndarray],
    dists: list[np.ndarray],
    rows: dict[int, tuple[Any, ...]],
    include: list[str],
    dim: int | None,
) -> QueryResult:
    """One answer per query: its labels (seqs) in rank order with their distances,
    each record read from ``rows``; a label missing from ``rows`` is left out."""
    columns = columns_for(include)
    per_query: list[GetResult] = []
    out_dists: list[list[float]] = []
    for row_labels, row_dists in zip(labels, dists, strict=False):
        keep = [i for i, s in enumerate(row_labels.tolist()) if s in rows]
        per_query.append(
            get_result([rows[int(row_labels[i])] for i in keep], columns, include, dim)
        )
        out_dists.append([float(row_dists[i]) for i in keep])
    result: dict[str, Any] = {"ids": [g["ids"] for g in per_query]}
    for field in ("embeddings", "documents", "uris", "metadatas"):
        result[field] = [g[field] for g in per_query] if field in include else None
    result["distances"] = out_dists if "distances" in include else None
    result["data"] = None
    result["included"] = list(include)
    return result  # type: ignore[return-value]
