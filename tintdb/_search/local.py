"""The embedded store's side of search: ``LocalBackend.search`` hands the work here.

Two sources of data, chosen as ``query`` chooses:

* ``IndexSource``: the collection's vector index is in memory. Dense Knn goes through
  the backend's own query planning (``_local.reads.Reads``: ``_knn_all`` /
  ``_filtered`` for a filter ``query`` could take, ``_knn_matches`` over any other
  filter's matches: HNSW, sampled or listed post-filtering, exact search over the
  matches), and filters through its filter memory, so a search keeps every promise ``query`` makes.
* ``SqlSource``: SQLite alone. For a store whose index is not in memory yet (dense
  Knn scans the stored vectors exactly, as a first ``query`` does, and the index loads
  behind), and for searches without a dense Knn, which need no index at all.

The whole batch runs inside one read transaction, with the index caught up to it: every
search of a call sees one version of the collection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from .._conditions import condition_tree
from .._index import scan_knn
from . import engine
from .plan import FilterNode, parse

if TYPE_CHECKING:
    from .._index import VectorIndex
    from .._local.reads import Reads
    from .._storage import CollectionRow, Store

__all__ = ["search"]


class _Seqs:
    """A filter's matches without a cache (see _local.planner.Matches for the cached kind)."""

    __slots__ = ("seqs",)

    def __init__(self, seqs: np.ndarray) -> None:
        self.seqs = seqs


class _Lookup:
    """A filter that is one lookup, as ``query`` takes it: its matches are listed (and
    cached) only when asked for, so that a dense Knn can take ``query``'s own plan,
    which may test a sample and post-filter instead of listing them."""

    __slots__ = ("_listed", "args", "col", "index", "reads")

    def __init__(self, reads: Reads, col: CollectionRow, index: VectorIndex, args: tuple) -> None:
        ids, where, where_document = args
        # (ids, condition tree): the arguments query's own planning takes.
        self.args = (ids, condition_tree(where, where_document))
        self.reads, self.col, self.index = reads, col, index
        self._listed: Any = None

    @property
    def seqs(self) -> np.ndarray:
        if self._listed is None:
            self._listed = self.reads._candidates(self.col, self.index, *self.args)
        return self._listed.seqs


class SqlSource:
    """Search data read from SQLite only, inside the caller's read transaction."""

    def __init__(self, reads: Reads, store: Store, col: CollectionRow) -> None:
        self.reads, self.store, self.col = reads, store, col
        self.dimension = col.dimension
        self._universe: np.ndarray | None = None

    def universe(self) -> np.ndarray:
        if self._universe is None:
            found = self.store.seq_array("SELECT seq FROM records WHERE coll = ?", [self.col.coll])
            self._universe = np.sort(found)
        return self._universe

    def count(self) -> int:
        return len(self.universe())

    def lookup(self, ids: Any, where: Any, where_document: Any) -> np.ndarray:
        cond = condition_tree(where, where_document)
        return self.store.candidate_seqs(self.col.coll, ids, cond, self.universe())

    def matches(self, node: FilterNode) -> Any:
        return _Seqs(engine.filter_seqs(node, self))

    def dense(self, query: np.ndarray, k: int, matches: Any) -> tuple[np.ndarray, np.ndarray]:
        dim = self.dimension
        assert dim is not None
        cand = None if matches is None else matches.seqs
        if cand is not None and len(cand) == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        chunks = self.store.vector_chunks(self.col.coll, dim, cand)
        labels, dists = scan_knn(self.col.space, query, k, chunks)
        return labels[0], dists[0]

    def postings(self, key: str, dims: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.store.sparse_postings(self.col.coll, key, dims)

    def rows(self, seqs: list[int], columns: list[str]) -> dict[int, tuple[Any, ...]]:
        if not seqs:
            return {}
        return self.store.fetch_seqs(self.col.coll, seqs, columns)


class IndexSource(SqlSource):
    """Search data with the collection's in-memory vector index."""

    def __init__(
        self, reads: Reads, store: Store, col: CollectionRow, index: VectorIndex | None
    ) -> None:
        super().__init__(reads, store, col)
        self.index = index

    def universe(self) -> np.ndarray:
        if self.index is None:
            return np.empty(0, np.int64)
        return self.index.universe()

    def matches(self, node: FilterNode) -> Any:
        if self.index is None:
            return _Seqs(np.empty(0, np.int64))
        single = engine.as_lookup(node)
        if single is not None:  # the very plan and cache entry a query with it uses
            return _Lookup(self.reads, self.col, self.index, single)
        key = orjson.dumps(["search", node], option=orjson.OPT_SORT_KEYS)
        return self.reads._cached_matches(
            self.col, self.index, key, lambda: engine.filter_seqs(node, self)
        )

    def dense(self, query: np.ndarray, k: int, matches: Any) -> tuple[np.ndarray, np.ndarray]:
        index = self.index
        if index is None or len(index) == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        if matches is None:
            labels, dists = self.reads._knn_all(self.col, index, query, k)
        elif isinstance(matches, _Lookup):
            labels, dists = self.reads._filtered(self.col, index, query, k, *matches.args)
        elif len(matches.seqs) == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        else:
            labels, dists = self.reads._knn_matches(self.col, index, query, k, matches)
        return labels[0], dists[0]


def search(reads: Reads, collection_id: str, payloads: list[Any]) -> dict[str, Any]:
    """Run a batch of search payloads (checked again here: the server passes raw JSON)."""
    plans = [parse(p, i if len(payloads) > 1 else 0) for i, p in enumerate(payloads)]
    dense = [k for p in plans for k in p.knns if not k.sparse]
    store = reads.store
    if dense and reads._cold(collection_id, len(dense), max(k.limit for k in dense)):
        # The index is not in memory: answer from SQLite on a connection of our own (an
        # index load may hold the store's lock), and load the index behind the answer.
        with store.reader() as own, own.read():
            col = own.collection_by_id(collection_id)
            if col.dimension is not None:
                result = engine.run(plans, SqlSource(reads, own, col), col.declared_schema)
                reads.keeper.load_behind(col)
                return result
    col = store.collection_by_id(collection_id)
    with store.read():
        col = store.collection_by_id(collection_id)
        if not dense:  # no dense Knn: no index needed
            return engine.run(plans, SqlSource(reads, store, col), col.declared_schema)
        index = reads.keeper.current(col)
        return engine.run(plans, IndexSource(reads, store, col, index), col.declared_schema)
