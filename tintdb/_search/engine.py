"""Running checked search plans against a backend's ``Source``.

The engine does the order of work, the Source does the data: which records match a
filter, the nearest records to a dense query (with the backend's own planning), the
sparse postings of some dimensions, and the records' fields. For each search:

1. filter: the matching records (None when there is no filter);
2. each Knn: its ``limit`` best records among the matches;
3. rank: the algebra of ``rank.evaluate`` over those lists; no rank: the matches in
   storage order, each scored by its position in the page returned (as Chroma does);
4. group_by, then offset and limit;
5. select: the fields asked for.

A backend runs a whole batch inside one consistent read, so every search of a call
sees the same version of the collection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import orjson

from ..errors import InvalidArgumentError, InvalidDimensionException
from . import rank as ranking
from .plan import (
    DOCUMENT,
    EMBEDDING,
    METADATA,
    SCORE,
    FilterNode,
    KnnSpec,
    Plan,
    sparse_index_configs,
)

__all__ = ["Source", "as_lookup", "filter_seqs", "idf_weights", "run"]


class Source(Protocol):
    """What a backend gives the engine, for one collection at one version."""

    dimension: int | None

    def universe(self) -> np.ndarray:
        """Every record's seq, sorted."""

    def count(self) -> int:
        """How many records the collection holds."""

    def lookup(
        self,
        ids: list[str] | None,
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
    ) -> np.ndarray:
        """Sorted seqs matching all of the given filters."""

    def matches(self, node: FilterNode) -> Any:
        """The records ``node`` matches, as a handle with ``.seqs`` (sorted) that
        ``dense`` accepts; a backend may cache it."""

    def dense(self, query: np.ndarray, k: int, matches: Any) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest records (seqs, distances) among ``matches`` (all if None),
        never fewer than ``min(k, matches)``."""

    def postings(self, key: str, dims: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dims, seqs, values) of every posting of key ``key`` on dimensions ``dims``."""

    def rows(self, seqs: list[int], columns: list[str]) -> dict[int, tuple[Any, ...]]:
        """seq -> (seq, id, *columns) with columns among document, metadata, embedding;
        a record gone since is missing."""


def filter_seqs(node: FilterNode, source: Source, universe: np.ndarray | None = None) -> np.ndarray:
    """The sorted seqs a filter tree matches: one lookup per leaf, set algebra above."""
    kind = node[0]
    if kind == "meta":
        return source.lookup(None, node[1], None)
    if kind == "doc":
        return source.lookup(None, None, node[1])
    if kind == "ids":
        found = source.lookup(node[1], None, None)
        if not node[2]:
            return found
        whole = source.universe() if universe is None else universe
        return np.setdiff1d(whole, found, assume_unique=True)
    parts = [filter_seqs(child, source, universe) for child in node[1]]
    out = parts[0]
    for part in parts[1:]:
        if kind == "and":
            out = np.intersect1d(out, part, assume_unique=True)
        else:
            out = np.union1d(out, part)
    return out


def as_lookup(node: FilterNode) -> tuple[Any, Any, Any] | None:
    """(ids, where, where_document) answering ``node`` in one lookup, if it has that
    shape: one leaf, or an $and of at most one leaf of each kind (ids not negated)."""
    leaves = node[1] if node[0] == "and" else [node]
    ids = where = where_document = None
    for leaf in leaves:
        if leaf[0] == "meta" and where is None:
            where = leaf[1]
        elif leaf[0] == "doc" and where_document is None:
            where_document = leaf[1]
        elif leaf[0] == "ids" and not leaf[2] and ids is None:
            ids = leaf[1]
        else:
            return None
    return ids, where, where_document


def _check_knns(plan: Plan, source: Source, schema: Mapping[str, Any] | None) -> None:
    indexed = None
    for i, knn in enumerate(plan.knns):
        if not knn.sparse:
            dim = source.dimension
            assert knn.dense is not None
            if dim is not None and knn.dense.shape[1] != dim:
                raise InvalidDimensionException(
                    f"Knn {i}: the query has dimension {knn.dense.shape[1]}, the collection's "
                    f"embeddings have {dim}"
                )
            continue
        if indexed is None:
            indexed = sparse_index_configs(schema)
        if knn.key not in indexed:
            have = f" (it has one on {sorted(indexed)[0]!r})" if indexed else ""
            raise InvalidArgumentError(
                f"Knn {i} searches key {knn.key!r}, which has no sparse vector index{have}; "
                "declare one when creating the collection: Schema().create_index("
                f"SparseVectorIndexConfig(...), key={knn.key!r})"
            )


def idf_weights(
    q_indices: np.ndarray, q_values: np.ndarray, posting_dims: np.ndarray, n: int
) -> np.ndarray:
    """A BM25 query weighted by each term's inverse document frequency, Chroma's
    ``ln(1 + (n - n_t + 0.5) / (n_t + 0.5))``: ``n`` the collection's records, ``n_t``
    those with a posting on the term (filters do not change either)."""
    dims, counts = np.unique(posting_dims, return_counts=True)
    per_dim = dict(zip(dims.tolist(), counts.tolist(), strict=True))
    n_t = np.array([per_dim.get(int(d), 0) for d in q_indices], dtype=np.float64)
    return q_values * np.log1p((n - n_t + 0.5) / (n_t + 0.5))


def _knn_result(
    spec: KnnSpec, source: Source, matches: Any, bm25: bool
) -> tuple[np.ndarray, np.ndarray]:
    if spec.sparse:
        assert spec.indices is not None and spec.values is not None
        cand = None if matches is None else matches.seqs
        dims, seqs, values = source.postings(spec.key, spec.indices)
        weights = spec.values
        if bm25:
            weights = idf_weights(spec.indices, spec.values, dims, source.count())
        return ranking.sparse_top_k(spec.indices, weights, dims, seqs, values, spec.limit, cand)
    assert spec.dense is not None
    if source.dimension is None:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    seqs, dists = source.dense(spec.dense, spec.limit, matches)
    seqs = np.asarray(seqs, dtype=np.int64)
    dists = np.asarray(dists, dtype=np.float64)
    best = np.lexsort((seqs, dists))  # ties in storage order, as every list here
    return seqs[best], dists[best]


def run(plans: list[Plan], source: Source, schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """The column-major answer to a batch of searches (Chroma's SearchResponse);
    ``schema`` is the collection's declared one (JSON), which names its sparse indexes."""
    for plan in plans:
        _check_knns(plan, source, schema)
    bm25 = {key: config.get("bm25") for key, config in sparse_index_configs(schema).items()}
    out: dict[str, list[Any]] = {
        "ids": [],
        "documents": [],
        "embeddings": [],
        "metadatas": [],
        "scores": [],
        "select": [],
    }
    universe: np.ndarray | None = None
    for plan in plans:
        # A handle; its .seqs may be listed only when asked for (a dense Knn may not).
        matches = None if plan.filter is None else source.matches(plan.filter)
        if plan.rank is None:
            if matches is None:
                if universe is None:
                    universe = source.universe()
                cand = universe
            else:
                cand = matches.seqs
            chosen = [int(s) for s in ranking.page(cand.tolist(), plan.offset, plan.limit)]
            scored = [(s, float(i)) for i, s in enumerate(chosen)]
        else:
            domains = [
                ranking.knn_domain(
                    _knn_result(spec, source, matches, bool(bm25.get(spec.key))),
                    spec.default,
                    spec.return_rank,
                )
                for spec in plan.knns
            ]
            support, _ = ranking.evaluate(plan.rank, domains.__getitem__)
            ranked = ranking.order(support)
            if plan.group_keys is not None and plan.aggregate is not None:
                rows = source.rows([s for s, _ in ranked], ["metadata"])
                metadata = {s: _metadata(r[2]) for s, r in rows.items()}
                ranked = ranking.group(ranked, metadata, plan.group_keys, plan.aggregate)
            scored = ranking.page(ranked, plan.offset, plan.limit)
        _emit(out, plan, scored, source)
    return out


def _metadata(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if isinstance(raw, (bytes, str)):
        return orjson.loads(raw)
    return dict(raw)


def _emit(
    out: dict[str, list[Any]], plan: Plan, scored: list[tuple[int, float]], source: Source
) -> None:
    wants = plan.wants
    fields = [k for k in plan.select if not k.startswith("#")]
    columns = []
    if DOCUMENT in wants:
        columns.append("document")
    if METADATA in wants or fields:
        columns.append("metadata")
    if EMBEDDING in wants:
        columns.append("embedding")
    rows = source.rows([s for s, _ in scored], columns)
    # A record deleted between ranking and reading cannot happen inside the backend's
    # one read; if a backend allows it, the record is left out rather than invented.
    scored = [(s, v) for s, v in scored if s in rows]
    at = {c: i for i, c in enumerate(columns, start=2)}
    out["ids"].append([rows[s][1] for s, _ in scored])
    out["select"].append(list(plan.select))
    out["documents"].append(
        [rows[s][at["document"]] for s, _ in scored] if "document" in at else None
    )
    if "embedding" in at:
        out["embeddings"].append(
            [np.frombuffer(rows[s][at["embedding"]], dtype=np.float32).tolist() for s, _ in scored]
        )
    else:
        out["embeddings"].append(None)
    if "metadata" in at:
        mds = []
        for s, _ in scored:
            md = _metadata(rows[s][at["metadata"]])
            if md is not None and METADATA not in wants:
                md = {k: v for k, v in md.items() if k in fields}
            mds.append(md or None)
        out["metadatas"].append(mds)
    else:
        out["metadatas"].append(None)
    # Ids always come back: selecting K.ID adds nothing.
    out["scores"].append([_score(v) for _, v in scored] if SCORE in wants else None)


def _score(value: float) -> float | None:
    """JSON has no NaN or infinity: such a score comes back as None."""
    return value if np.isfinite(value) else None
