"""Result shaping shared by the backends: per-query rows and distances into the
``QueryResult`` chromadb returns. Rows are ``(seq, id, *columns)`` as
``_local._get_result`` reads them (embeddings as float32 bytes, metadata as JSON)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._local import _columns, _get_result
from .types import GetResult, QueryResult

__all__ = ["columns_for", "get_result", "query_result"]

columns_for = _columns
get_result = _get_result


def query_result(
    labels: list[np.ndarray],
    dists: list[np.ndarray],
    rows: dict[int, tuple[Any, ...]],
    include: list[str],
    dim: int | None,
) -> QueryResult:
    """One answer per query: its labels (seqs) in rank order with their distances,
    each record read from ``rows``; a label missing from ``rows`` is left out."""
    columns = _columns(include)
    per_query: list[GetResult] = []
    out_dists: list[list[float]] = []
    for row_labels, row_dists in zip(labels, dists, strict=False):
        keep = [i for i, s in enumerate(row_labels.tolist()) if s in rows]
        per_query.append(
            _get_result([rows[int(row_labels[i])] for i in keep], columns, include, dim)
        )
        out_dists.append([float(row_dists[i]) for i in keep])
    result: dict[str, Any] = {"ids": [g["ids"] for g in per_query]}
    for field in ("embeddings", "documents", "uris", "metadatas"):
        result[field] = [g[field] for g in per_query] if field in include else None  # type: ignore[literal-required]
    result["distances"] = out_dists if "distances" in include else None
    result["data"] = None
    result["included"] = list(include)
    return result  # type: ignore[return-value]
