"""The reads of the embedded backend: count, get and query.

Each read takes the plan ``planner`` and ``tintdb._planning`` choose, over the index the
keeper holds (``IndexKeeper.current``) or, when none is in memory, over SQLite alone.
A filtered read lists or samples its matches through the store, remembered per
version of the collection in ``FilterMemory``; results are shaped by
``tintdb._results``. Reads take the store lock only where an answer must come from one
snapshot (a record deleted between the search and its read back) or SQLite must hold
what the index does (a filter's matches for the index's version); other reads run on
any commit's snapshot, without waiting for a write on another thread (``_scanning``).
A regex filter reads on a connection of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _planning
from .._conditions import Node, condition_tree, uses_regex
from .._filter_sets import member
from .._filter_sql import relaxed
from .._index import VectorIndex, scan_knn
from .._planning import FILTERED_EF_FACTOR, postfilter_beam, postfilter_fetch
from .._results import columns_for, get_result, query_result
from .._storage import CollectionRow, Store
from .._validation import check_dimension
from ..errors import NotFoundError
from ..types import GetResult, QueryResult, Where, WhereDocument
from .indexes import IndexKeeper
from .planner import (
    VERIFY_FIRST,
    FilterKey,
    FilterMemory,
    Matches,
    dense,
    exact_among,
    filter_key,
    shape_key,
    walks,
)

__all__ = ["COLD_SCAN_QUERIES", "COLD_SCAN_RESULTS", "Reads"]

# A query of at most this many embeddings and results, on a collection whose index is
# not in memory, scans SQLite's vectors exactly while the index loads (_scan_query).
# Larger ones wait for the index: scanning costs grow with queries times records.
COLD_SCAN_QUERIES = 8
COLD_SCAN_RESULTS = 1024
# Vectors a cold scan reads and scores at a time. These scans run while the graph loads
# beside them, so their buffers add to the process's peak memory (4,096 at a time: a
# peak 18 MB higher at 100k x 384, and no faster).
SCAN_ROWS = 1024
# A filter tested on at most this many records runs on the store's own connection,
# even a regex (see _matching_among).
SHORT_TEST = 1024


class Reads:
    """count, get and query over one store and its index keeper."""

    def __init__(self, store: Store, keeper: IndexKeeper) -> None:
        self.store = store
        self.keeper = keeper
        self.filters = FilterMemory()

    def count(self, collection_id: str) -> int:
        with self.store.quick_read() as store:  # not waiting for a write on another thread
            col = store.collection_by_id(collection_id)
            return store.count(col.coll)

    def get(
        self,
        collection_id: str,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        limit: int | None,
        offset: int | None,
        include: list[str],
    ) -> GetResult:
        columns = columns_for(include)
        cond = condition_tree(where, where_document)  # the filter, read once
        with self.store.quick_read() as store:  # not waiting for a write on another thread
            col = store.collection_by_id(collection_id)
        filtered = cond is not None
        paged = ids is None and (limit is not None or bool(offset))
        # Without an index in memory, SQLite answers alone: no load for a get.
        index = (
            self.keeper.current(col, row_is_fresh=True)
            if (filtered or paged) and col.id in self.keeper
            else None
        )
        rows = None
        if index is not None:
            lsn = index.lsn  # the version the candidates below are of, or older
            # The same (cached) candidate set a filtered query uses, or for a page of
            # everything the index's sorted seqs (no walk past `offset` records).
            share = None
            superset = None
            if cond is not None and limit is not None and relaxed(cond) != cond:
                superset = self._query_matches(col, index, ids, cond)
                if superset.verify is None:
                    superset = None
            elif filtered and limit is not None:
                share = self._sampled_share(col, index, ids, cond)
            if superset is not None and limit is not None:
                # A $regex with a required text: the records holding it, in order, are
                # tested until the page is full (the pattern runs on those alone).
                cand = self._verified_prefix(superset, (offset or 0) + limit)
            elif limit is not None and walks(share, offset, limit):
                # Many match: the page is a short walk in order (no list of every match).
                with self._scanning(cond, any_commit=True) as store, store.read():
                    return get_result(
                        store.fetch_walk(col.coll, cond, limit, offset, columns),
                        columns,
                        include,
                        col.dimension,
                    )
            else:
                cand = (
                    self._candidates(col, index, ids, cond).seqs if filtered else index.universe()
                )
            with self.store.quick_read() as store, store.read():
                # The page is right only from the commit the candidates are of: at another,
                # a record may be gone or no longer match (a write since, from any thread
                # or process). Then it is asked again below, candidates and page from one
                # snapshot; so the page need not wait for a write on another thread.
                state = store.lsn_state(col.id)
                if state is not None and state[0] == lsn:
                    rows = self._page(store, col, cand, limit, offset, columns)
        if rows is None and filtered:
            # Candidates and records from one snapshot.
            with self._scanning(cond, any_commit=True) as store, store.read():
                listed = store.candidate_seqs(col.coll, ids, cond, None)
                if listed is not None:
                    rows = self._page(store, col, listed, limit, offset, columns)
        if rows is None:  # no filter, or one of negations alone: one statement
            with self._scanning(cond, any_commit=True) as store, store.read():
                rows = store.fetch(col.coll, ids, cond, limit, offset, columns)
        return get_result(rows, columns, include, col.dimension)

    def _scanning(
        self, cond: Node | None, *, any_commit: bool = False
    ) -> contextlib.AbstractContextManager[Store]:
        """The store to read a filter's matches from. A regex reads every document: on
        disk it does so on a connection of its own, leaving the store's lock to other
        calls meanwhile (RE2 releases the GIL while it matches). Inside a transaction
        of the store's, the read belongs to that snapshot.

        Other reads take the store's lock, so that SQLite holds what the index does
        (matches listed for the index's version); with ``any_commit`` (a page of ``get``
        read whole from SQLite, whose answer does not depend on the index) any commit's
        snapshot will do, and the read does not wait for a write on another thread
        (see Store.quick_read)."""
        if self.store.path is not None and not self.store.in_transaction and uses_regex(cond):
            return self.store.reader()
        return self.store.quick_read() if any_commit else contextlib.nullcontext(self.store)

    @staticmethod
    def _page(
        store: Store,
        col: CollectionRow,
        cand: np.ndarray,
        limit: int | None,
        offset: int | None,
        columns: list[str],
    ) -> list[tuple[Any, ...]] | None:
        """The records of ``cand[offset:offset + limit]``, in order; None if one of them is
        gone (or has no vector when embeddings are asked for)."""
        start = offset or 0
        chosen = cand[start : None if limit is None else start + limit].tolist()
        found = store.fetch_seqs(col.coll, chosen, columns) if chosen else {}
        rows = [found[s] for s in chosen if s in found]
        return rows if len(rows) == len(chosen) else None

    def query(
        self,
        collection_id: str,
        query_embeddings: np.ndarray,
        n_results: int,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        include: list[str],
    ) -> QueryResult:
        cond = condition_tree(where, where_document)  # the filter, read once
        rest = (query_embeddings, n_results, ids, cond, include)
        if self._cold(collection_id, len(query_embeddings), n_results):
            # On a connection of its own: a load under way holds the store's lock.
            with self.store.reader() as store, store.read():
                col = store.collection_by_id(collection_id)
                check_dimension(col.dimension, query_embeddings.shape[1])
                if col.dimension is not None:
                    scanned = self._scan_query(store, col, *rest)
                    self.keeper.load_behind(col)
                    return scanned
        with self.store.quick_read() as store:
            col = store.collection_by_id(collection_id)
        check_dimension(col.dimension, query_embeddings.shape[1])
        args = (col, *rest)
        result = self._query_once(*args, whole=True)
        if result is None:
            # A record of the answer was deleted between the search and reading it back
            # (a concurrent write). Search again with this process's writers held off and
            # the store read in one snapshot, which the index is caught up to: the answer
            # is then whole.
            with self.store.lock, self.store.read():
                result = self._query_once(*args, whole=False)
        assert result is not None
        return result

    def _query_once(
        self,
        col: CollectionRow,
        query_embeddings: np.ndarray,
        n_results: int,
        ids: list[str] | None,
        cond: Node | None,
        include: list[str],
        *,
        whole: bool,
    ) -> QueryResult | None:
        """One search and the read of its records; None if ``whole`` and one of them was
        gone by the time it was read."""
        nq = len(query_embeddings)
        # A retry (not whole) must catch up inside its snapshot: no fast path for it.
        index = self.keeper.current(col, row_is_fresh=whole)
        labels: list[np.ndarray]
        dists: list[np.ndarray]
        if ids is not None:
            self._check_ids_exist(col, ids)
        if index is None or len(index) == 0:
            labels = [np.empty(0, np.int64)] * nq
            dists = [np.empty(0, np.float32)] * nq
        elif ids is None and cond is None:
            labels, dists = self._knn_all(col, index, query_embeddings, n_results)
        else:
            labels, dists = self._filtered(col, index, query_embeddings, n_results, ids, cond)
        return self._query_result(labels, dists, include, col, whole=whole)

    def _cold(self, collection_id: str, nq: int, n_results: int) -> bool:
        """Whether to answer by scanning SQLite rather than wait for the index: a store
        on disk whose index is not in memory (not loaded yet, or loading)."""
        return (
            self.store.path is not None
            and not self.keeper.closing
            and nq <= COLD_SCAN_QUERIES
            and n_results <= COLD_SCAN_RESULTS
            and collection_id not in self.keeper
        )

    def _scan_query(
        self,
        store: Store,
        col: CollectionRow,
        query_embeddings: np.ndarray,
        n_results: int,
        ids: list[str] | None,
        cond: Node | None,
        include: list[str],
    ) -> QueryResult:
        """Exact search over SQLite's vectors, read in ``store``'s one transaction: the
        answer of a collection whose index is not in memory yet.

        Loading a graph reads the same vectors and then hands them to hnswlib, which
        copies them into memory it has just allocated (most of the load, on a VM whose
        page faults are slow); scanning them is the part before that alone. So the first
        query after opening a store returns in a fraction of the load's time, with the
        true nearest neighbours, and the graph loads behind it for the queries after.
        A store whose index must be rebuilt (tens of seconds at 100k records) answers
        the same way meanwhile.
        """
        dim = col.dimension
        assert dim is not None
        if ids is not None:
            self._check_ids_exist(col, ids, store)
        cand = None
        if ids is not None or cond is not None:
            cand = store.candidate_seqs(col.coll, ids, cond, None)
            if cand is None:  # a filter of negations alone: one statement
                cand = store.matching_seqs(col.coll, ids, cond)
        chunks = store.vector_chunks(col.coll, dim, cand, rows=SCAN_ROWS)
        labels, dists = scan_knn(col.space, query_embeddings, n_results, chunks)
        result = self._query_result(labels, dists, include, col, whole=False, store=store)
        assert result is not None
        return result

    def _filtered(
        self,
        col: CollectionRow,
        index: VectorIndex,
        q: np.ndarray,
        k: int,
        ids: list[str] | None,
        cond: Node | None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        ef_search = int(col.configuration["hnsw"]["ef_search"])
        shape = None if ids is not None or cond is None else shape_key(col.id, index.lsn, cond)
        if cond is not None and relaxed(cond) != cond:
            # A superset listed from the indexes alone: no sample (each of its records
            # would run the pattern), the window tests only its neighbours in the set.
            matches = self._query_matches(col, index, ids, cond)
            return self._knn_matches(col, index, q, k, matches, shape)
        share = self._sampled_share(col, index, ids, cond)
        skip = shape is not None and self.filters.shape_correlated(shape)
        if share is not None and dense(share) and not skip:
            fetch = postfilter_fetch(round(share * len(index)), len(index), k, ef_search)
            if fetch is not None:
                found = index.knn_postfilter(
                    q,
                    k,
                    lambda seqs: self._matching_among(seqs, cond),
                    fetch,
                    postfilter_beam(fetch, ef_search),
                )
                return self._answer_rest(col, index, q, k, found, ids, cond, shape)
        matches = self._query_matches(col, index, ids, cond)
        return self._knn_matches(col, index, q, k, matches, shape)

    def _knn_all(
        self, col: CollectionRow, index: VectorIndex, q: np.ndarray, k: int
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The ``k`` nearest records to each query: HNSW, or exact for a small collection."""
        found = None if _planning.searched_exactly(len(index)) else index.knn(q, k)
        if found is None:
            return self.keeper.exact(col, index, q, k, index.universe())
        return list(found[0]), list(found[1])

    def _knn_matches(
        self,
        col: CollectionRow,
        index: VectorIndex,
        q: np.ndarray,
        k: int,
        matches: Matches,
        shape: FilterKey | None = None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The ``k`` nearest records to each query among a filter's listed ``matches``,
        by cost (post-filtering, exact search, or hnswlib's filter callback). ``shape``:
        the filter's shape, whose record of short windows counts too."""
        ef_search = int(col.configuration["hnsw"]["ef_search"])
        fetch = postfilter_fetch(len(matches.seqs), len(index), k, ef_search)
        skip = shape is not None and self.filters.shape_correlated(shape)
        if fetch is None or matches.correlated() or skip:
            return self._exact_or_callback(col, index, q, k, matches)
        # Queries with fewer than k matches among their neighbours (a filter correlated
        # with position) take a slower plan: a wider window would reach into the
        # inaccurate tail of the HNSW list.
        allowed = matches.seqs if matches.verify is None else self._verifier(matches)
        found = index.knn_postfilter(q, k, allowed, fetch, postfilter_beam(fetch, ef_search))
        labels: list[np.ndarray] = [np.empty(0, np.int64)] * len(q)
        dists: list[np.ndarray] = [np.empty(0, np.float32)] * len(q)
        for i, f in enumerate(found):
            if f is not None:
                labels[i], dists[i] = f
        rest = [i for i, f in enumerate(found) if f is None]
        matches.tries += len(found)
        matches.misses += len(rest)
        if shape is not None:
            self.filters.shape_tried(shape, len(found), len(rest))
        if rest:
            more = self._exact_or_callback(col, index, q[rest], k, matches)
            for j, i in enumerate(rest):
                labels[i], dists[i] = more[0][j], more[1][j]
        return labels, dists

    def _answer_rest(
        self,
        col: CollectionRow,
        index: VectorIndex,
        q: np.ndarray,
        k: int,
        found: list[tuple[np.ndarray, np.ndarray] | None],
        ids: list[str] | None,
        cond: Node | None,
        shape: FilterKey | None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The post-filtered answers, and for the queries that came up short (too few
        matches among their neighbours) those of the plan over every match."""
        labels = [f[0] if f is not None else np.empty(0, np.int64) for f in found]
        dists = [f[1] if f is not None else np.empty(0, np.float32) for f in found]
        rest = [i for i, f in enumerate(found) if f is None]
        if shape is not None:
            self.filters.shape_tried(shape, len(found), len(rest))
        if rest:
            matches = self._query_matches(col, index, ids, cond)
            matches.tries += len(found)  # what was learnt counts for the next queries
            matches.misses += len(rest)
            more = self._exact_or_callback(col, index, q[rest], k, matches)
            for j, i in enumerate(rest):
                labels[i], dists[i] = more[0][j], more[1][j]
        return labels, dists

    def _sampled_share(
        self,
        col: CollectionRow,
        index: VectorIndex,
        ids: list[str] | None,
        cond: Node | None,
    ) -> float | None:
        """See FilterMemory.sampled_share; None for a list of ids (cheap to list)."""
        if ids is not None:
            return None
        return self.filters.sampled_share(
            filter_key(col.id, index.lsn, ids, cond),
            index.universe,
            len(index),
            lambda seqs: self._matching_among(seqs, cond),
        )

    def _matching_among(self, seqs: np.ndarray, cond: Node | None) -> np.ndarray:
        """The records of ``seqs`` that pass ``cond``, one statement. A few hundred (a
        sample, a window, the nearest of a superset) are tested on the store's own
        connection: opening one for a regex would cost more than the test, and starts
        with an empty page cache."""
        if len(seqs) <= SHORT_TEST:
            with self.store.lock:
                return self.store.matching_among(seqs, cond)
        with self._scanning(cond) as store, store.read():
            return store.matching_among(seqs, cond)

    def _exact_or_callback(
        self, col: CollectionRow, index: VectorIndex, q: np.ndarray, k: int, matches: Matches
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Exact search over the matches, or HNSW with a filter callback when they are many."""
        cand = matches.seqs
        if matches.verify is not None:
            return self._exact_verified(col, index, q, k, matches)
        if exact_among(len(cand), k, len(index)):
            return self.keeper.exact(col, index, q, k, cand)
        if matches.allowed is None:
            matches.allowed = set(cand.tolist())
        ef = int(col.configuration["hnsw"]["ef_search"]) * FILTERED_EF_FACTOR
        found = index.knn(q, k, matches.allowed, ef=ef)
        if found is None:
            return self.keeper.exact(col, index, q, k, cand)
        return list(found[0]), list(found[1])

    def _verifier(self, matches: Matches) -> Callable[[np.ndarray], np.ndarray]:
        """The records of sorted seqs that are in the superset ``matches`` and pass its
        filter (a window's neighbours, a few hundred at most)."""
        cond = matches.verify

        def allowed(seqs: np.ndarray) -> np.ndarray:
            return self._matching_among(seqs[member(seqs, matches.seqs)], cond)

        return allowed

    def _verified_prefix(self, matches: Matches, need: int) -> np.ndarray:
        """The first ``need`` records, in seq order, of the superset ``matches`` that pass
        its filter (all of them if fewer pass), testing it a growing run at a time."""
        cand, cond = matches.seqs, matches.verify
        passed: list[np.ndarray] = []
        found = start = 0
        step = max(2 * need, 256)
        while start < len(cand) and found < need:
            part = self._matching_among(cand[start : start + step], cond)
            passed.append(part)
            found += len(part)
            start += step
            step *= 2
        return np.concatenate(passed) if passed else np.empty(0, np.int64)

    def _exact_verified(
        self, col: CollectionRow, index: VectorIndex, q: np.ndarray, k: int, matches: Matches
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The ``k`` nearest records that pass ``matches.verify`` among the superset
        ``matches.seqs``: exact search for its nearest few, of which the filter tests
        only those (the pattern runs on a few dozen documents, not on every one the
        index found); a query with fewer than ``k`` passing asks for four times as
        many, until the whole superset is tested. The passing ones, in distance order,
        are then exactly the nearest matches."""
        cand, cond = matches.seqs, matches.verify
        labels: list[np.ndarray] = [np.empty(0, np.int64)] * len(q)
        dists: list[np.ndarray] = [np.empty(0, np.float32)] * len(q)
        todo = list(range(len(q)))
        take = min(len(cand), VERIFY_FIRST * k)
        while todo:
            got, got_d = self.keeper.exact(col, index, q[todo], take, cand)
            tested = np.unique(np.concatenate(got)) if got else np.empty(0, np.int64)
            passed = self._matching_among(tested, cond)
            later = []
            for j, i in enumerate(todo):
                keep = np.flatnonzero(member(got[j], passed))[:k]
                if len(keep) >= k or take >= len(cand):
                    labels[i], dists[i] = got[j][keep], got_d[j][keep]
                else:
                    later.append(i)
            todo, take = later, min(len(cand), take * 4)
        return labels, dists

    def _query_matches(
        self,
        col: CollectionRow,
        index: VectorIndex,
        ids: list[str] | None,
        cond: Node | None,
    ) -> Matches:
        """What a query searches among: for a filter with a ``$regex`` that has a
        required literal, the records of its relaxed tree (``_filter_sql.relaxed``: a
        superset listed from the indexes alone, which the filter then tests only where
        a search needs it), of any size: at 1M x 384 a ``$regex`` matching 10% took 38 ms
        this way, and 126 ms running the pattern on each of the 100,000 documents that
        hold its literal."""
        loose = None if cond is None else relaxed(cond)
        if loose is None or loose == cond:
            return self._candidates(col, index, ids, cond)

        def compute() -> np.ndarray:
            with self._scanning(loose) as store, store.read():
                return store.candidate_seqs(col.coll, ids, loose, index.universe())

        key = filter_key(col.id, index.lsn, ids, cond)[2] + b"~superset"
        found = self._cached_matches(col, index, key, compute)
        found.verify = cond
        return found

    def _check_ids_exist(
        self, col: CollectionRow, ids: list[str], store: Store | None = None
    ) -> None:
        store = store or self.store
        with store.read():
            missing = set(ids) - set(store.existing(col.coll, ids))
        if missing:
            shown = ", ".join(sorted(missing)[:10])
            raise NotFoundError(
                f"Error finding id: query(ids=...) names {len(missing)} id(s) not in "
                f"collection {col.name!r}: {shown}"
            )

    def _candidates(
        self,
        col: CollectionRow,
        index: VectorIndex,
        ids: list[str] | None,
        cond: Node | None,
    ) -> Matches:
        """Matching seqs, from the cache when this filter ran on this version before.

        The key includes the index's lsn, so any write, from any process, retires it.
        """

        def compute() -> np.ndarray:
            with self._scanning(cond) as store, store.read():
                return store.candidate_seqs(col.coll, ids, cond, index.universe())

        key = filter_key(col.id, index.lsn, ids, cond)
        return self._cached_matches(col, index, key[2], compute)

    def _cached_matches(
        self, col: CollectionRow, index: VectorIndex, key: bytes, compute: Any
    ) -> Matches:
        """The memory's entry of filter ``key`` on the index's version, ``compute()``d once."""
        full = (col.id, index.lsn, key)
        cached = self.filters.matches(full)
        if cached is not None:
            return cached
        return self.filters.remember(full, compute())

    def _query_result(
        self,
        labels: list[np.ndarray],
        dists: list[np.ndarray],
        include: list[str],
        col: CollectionRow,
        *,
        whole: bool,
        store: Store | None = None,
    ) -> QueryResult | None:
        columns = columns_for(include)
        wanted = sorted({int(s) for row in labels for s in row.tolist()})
        store = store or self.store
        # Without embeddings the read back is one statement, a snapshot of its own (on a
        # connection of this thread's while another thread writes); with them, the
        # vectors must come from the same snapshot as the records: one transaction, on
        # that connection too.
        vectors_too = "embedding" in columns
        with store.quick_read() as one, one.read() if vectors_too else contextlib.nullcontext():
            rows = one.fetch_seqs(col.coll, wanted, columns) if wanted else {}
        if whole and len(rows) < len(wanted):
            return None
        return query_result(labels, dists, rows, include, col.dimension)
