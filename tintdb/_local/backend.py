"""``LocalBackend``: the Backend that runs in this process, on SQLite plus a vector index.

It keeps one rule: SQLite is the truth and every index is caught up with the change
log before it answers (``IndexKeeper.current``). Writes commit to SQLite first and only
then touch the in-memory index, so a crash between the two loses nothing: the next
``current`` (in this process, another one, or after a restart) replays the log.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .. import __version__, _planning, _schema
from .._filters import uses_regex
from .._index import VectorIndex, scan_knn
from .._planning import FILTERED_EF_FACTOR, postfilter_beam, postfilter_fetch
from .._results import columns_for, get_result, query_result
from .._storage import OP_DELETE, OP_SET, OP_TOUCH, CollectionRow, Store
from ..config import Settings
from ..errors import (
    IDAlreadyExistsError,
    InvalidArgumentError,
    InvalidDimensionException,
    NotFoundError,
)
from ..types import CollectionModel, GetResult, Metadata, QueryResult, Where, WhereDocument
from .indexes import EarlyIndexing, IndexKeeper
from .planner import EXACT_LIMIT, FilterMemory, Matches, dense, exact_among, filter_key, walks

__all__ = ["EXACT_LIMIT", "LocalBackend", "postfilter_fetch"]

log = logging.getLogger("tintdb")

# A query of at most this many embeddings and results, on a collection whose index is
# not in memory, scans SQLite's vectors exactly while the index loads (_scan_query).
# Larger ones wait for the index: scanning costs grow with queries times records.
COLD_SCAN_QUERIES = 8
COLD_SCAN_RESULTS = 1024


def _check_query_dimension(col: CollectionRow, query_embeddings: np.ndarray) -> None:
    if col.dimension is not None and query_embeddings.shape[1] != col.dimension:
        raise InvalidDimensionException(
            f"Collection expecting embedding with dimension of {col.dimension}, "
            f"got {query_embeddings.shape[1]}"
        )


def _merge_metadata(stored: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any] | None:
    """Key-by-key merge; a None value deletes the key; nothing left -> None."""
    merged = dict(stored or {})
    for key, value in new.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged or None


def _stored_configuration(col: CollectionRow) -> dict[str, Any]:
    """The configuration column as written: Chroma's sections plus the declared schema."""
    if col.declared_schema is None:
        return dict(col.configuration)
    return {**col.configuration, "schema": col.declared_schema}


def _strip_none(md: dict[str, Any] | None) -> dict[str, Any] | None:
    if md is None:
        return None
    return {k: v for k, v in md.items() if v is not None} or None


class LocalBackend:
    """SQLite + HNSW in this process. ``path=None`` keeps everything in memory."""

    def __init__(self, path: str | Path | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.path = None if path is None else Path(path)
        self.store = Store(self.path)
        self.keeper = IndexKeeper(self.store, self.path)
        self._filters = FilterMemory()
        # Per collection (coll), the (metadata key, value type) pairs known to be stored
        # in collection_keys; loaded on a collection's first write here.
        self._value_types: dict[int, set[tuple[str, str]]] = {}
        self._closed = False
        if self.path is not None:
            ref = weakref.ref(self)
            self._atexit = lambda: (b := ref()) is not None and b.close()
            atexit.register(self._atexit)

    # ------------------------------------------------------------ lifecycle

    def heartbeat(self) -> int:
        return time.time_ns()

    def version(self) -> str:
        return __version__

    def close(self) -> None:
        """Snapshot the indexes whose log replay would cost more than the snapshot
        (see IndexKeeper.close), then release the files."""
        if self._closed:
            return
        self.keeper.stop()  # no more loads or rebuilds behind the calls
        with self.store.lock:
            self._filters.clear()
            checkpoint = self.store.start_checkpoint() if self.keeper.indexes else None
            self.keeper.close()
            if checkpoint is not None:
                checkpoint.join()
            self.store.close()
            self._closed = True
        if self.path is not None:
            atexit.unregister(self._atexit)

    def reset(self) -> bool:
        with self.store.lock:
            self.store.reset()
            self.keeper.clear()
            self._value_types.clear()
        return True

    def vacuum(self) -> None:
        """Rewrite the database file compactly and re-snapshot every index."""
        self.keeper.wait_jobs()  # an index loading behind a query is snapshotted too
        with self.store.lock:
            self.store.reclaim_space(full=True)
            self.keeper.vacuum()

    # ------------------------------------------------------------ tenants and databases

    def create_tenant(self, name: str) -> None:
        self.store.create_tenant(name)

    def get_tenant(self, name: str) -> dict[str, Any]:
        return self.store.get_tenant(name)

    def create_database(self, name: str, tenant: str) -> None:
        self.store.create_database(name, tenant)

    def get_database(self, name: str, tenant: str) -> dict[str, Any]:
        return self.store.get_database(name, tenant)

    def list_databases(
        self, tenant: str, limit: int | None = None, offset: int | None = None
    ) -> list[dict[str, Any]]:
        return self.store.list_databases(tenant, limit, offset)

    def delete_database(self, name: str, tenant: str) -> None:
        with self.store.lock:
            for cid in self.store.delete_database(name, tenant):
                self.keeper.drop(cid)

    # ------------------------------------------------------------ collections

    def _shown(self, col: CollectionRow) -> CollectionRow:
        """``col``, able to show its schema (discovered metadata keys included) when asked."""

        def source() -> dict[str, Any]:
            if self._closed:
                raise InvalidArgumentError("This client is closed; create a new one")
            return _schema.collection_schema(
                _stored_configuration(col), self.store.value_types(col.coll)
            )

        col.schema_source = source
        return col

    def create_collection(
        self,
        name: str,
        metadata: dict[str, Any] | None,
        configuration: dict[str, Any] | None,
        get_or_create: bool,
        tenant: str,
        database: str,
    ) -> CollectionModel:
        """``configuration`` is what the client sent (sections, ``schema``); the
        collection stores it resolved (see _schema.resolve_create)."""
        resolved = _schema.resolve_create(metadata, configuration)
        col, _ = self.store.create_collection(
            name, metadata, resolved, get_or_create, tenant, database
        )
        return self._shown(col)

    def get_collection(self, name: str, tenant: str, database: str) -> CollectionModel:
        return self._shown(self.store.collection_by_name(name, tenant, database))

    def get_collection_by_id(self, collection_id: str) -> CollectionModel:
        return self._shown(self.store.collection_by_id(collection_id))

    def list_collections(
        self, limit: int | None, offset: int | None, tenant: str, database: str
    ) -> list[CollectionModel]:
        return [
            self._shown(c) for c in self.store.list_collections(limit, offset, tenant, database)
        ]

    def count_collections(self, tenant: str, database: str) -> int:
        return self.store.count_collections(tenant, database)

    def modify_collection(
        self,
        collection_id: str,
        new_name: str | None,
        new_metadata: dict[str, Any] | None,
        new_configuration: dict[str, Any] | None,
    ) -> CollectionModel:
        """``new_configuration`` is the change asked for (see _schema.apply_update),
        applied to the stored configuration inside the write."""
        with self.store.lock:
            with self.store.write():
                config = None
                if new_configuration is not None:
                    current = _stored_configuration(self.store.collection_by_id(collection_id))
                    config = _schema.apply_update(current, new_configuration)
                col = self.store.modify_collection(collection_id, new_name, new_metadata, config)
            if config is not None:
                self.keeper.set_params(collection_id, col.configuration["hnsw"])
        return self._shown(col)

    def delete_collection(self, name: str, tenant: str, database: str) -> None:
        with self.store.lock:
            col = self.store.delete_collection(name, tenant, database)
            self.keeper.drop(col.id)
            self._value_types.pop(col.coll, None)

    # ------------------------------------------------------------ records: writes

    def _note_value_types(
        self, col: CollectionRow, metadatas: list[Metadata | None] | None
    ) -> set[tuple[str, str]]:
        """Inside a write: store the (key, value type) pairs of ``metadatas`` that the
        collection has not used before (its schema's discovered keys). Returns them; the
        caller adds them to ``_value_types`` once the write has committed."""
        known = self._value_types.get(col.coll)
        if known is None:
            known = self._value_types[col.coll] = set(self.store.value_types(col.coll))
        if not metadatas:
            return set()
        new = _schema.metadata_value_types(metadatas) - known
        if new:
            self.store.add_value_types(col.coll, sorted(new))
        return new

    @contextlib.contextmanager
    def _write(self, collection_id: str) -> Iterator[_Change]:
        """The one path of every record mutation.

        Under the store lock, in one ``BEGIN IMMEDIATE`` transaction: the collection is
        read, the call changes its records and says what it changed (``_Change``), and
        the change is logged (``ops``) with the metadata value types it brought. Once
        committed, the index keeper applies it to the in-memory index. A failure
        anywhere before the commit rolls everything back, and an index that took
        vectors early (``EarlyIndexing``) is dropped, to be rebuilt from the log.
        """
        with self.store.lock:
            change: _Change | None = None
            try:
                with self.store.write():
                    change = _Change(self.store.collection_by_id(collection_id))
                    yield change
                    if change.kind is not None:
                        col, seqs = change.col, change.seqs
                        if change.kind == OP_TOUCH:
                            change.lsn = self.store.touch(col)
                        else:
                            assert seqs is not None
                            change.lsn = self.store.log(col, change.kind, seqs)
                        if change.kind != OP_DELETE:
                            change.seen = self._note_value_types(col, change.metadatas)
            except BaseException:
                if change is not None and change.early is not None:
                    change.early.join()  # the index holds vectors the store refused
                    self.keeper.forget(change.col.id)
                raise
            if change.lsn is not None:
                self._committed(change)

    def _committed(self, change: _Change) -> None:
        """After the commit of ``change``, still under the store lock: remember the value
        types it stored, bring the index up to it, and reclaim space after a bulk delete."""
        col, lsn, seqs = change.col, change.lsn, change.seqs
        assert lsn is not None
        if change.seen:
            self._value_types[col.coll] |= change.seen
        if change.kind == OP_TOUCH:
            self.keeper.touched(col, change.prev, lsn)
        elif change.kind == OP_DELETE:
            assert seqs is not None
            self.keeper.after_write(col, change.prev, lsn, None, None, seqs)
            if len(seqs) > 1000 and len(seqs) * 3 > self.store.count(col.coll):
                self.store.reclaim_space()
        elif change.early is None:
            self.keeper.after_write(col, change.prev, lsn, seqs, change.vectors, None)
        elif change.early.finish(seqs):  # the vectors are in: only the lsn and upkeep left
            self.keeper.after_write(col, change.prev, lsn, None, None, None)
        else:  # the next call replays the log into a fresh index
            self.keeper.forget(col.id)

    def _open_vector_write(
        self, col: CollectionRow, ids: list[str], embeddings: np.ndarray
    ) -> dict[str, tuple[int, bytes | None, str | None]]:
        """In an open write: which of ``ids`` exist; the first vectors written fix the
        collection's dimension (and start its index, see IndexKeeper.start_empty)."""
        self.store.set_dimension(col, embeddings.shape[1])
        self.keeper.start_empty(col, embeddings.shape[1])
        return self.store.existing(col.coll, ids)

    def add(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: np.ndarray,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        with self._write(collection_id) as change:
            if not ids:
                return
            col = change.col
            taken = self._open_vector_write(col, ids, embeddings)
            if taken:
                shown = ", ".join(sorted(taken)[:10]) + (" ..." if len(taken) > 10 else "")
                raise IDAlreadyExistsError(
                    f"{len(taken)} of the ids already exist in collection {col.name!r}: "
                    f"{shown}. Nothing was added; use upsert() to overwrite."
                )
            mds = None if metadatas is None else [_strip_none(m) for m in metadatas]
            change.early = self.keeper.index_early(col, change.prev, embeddings)
            seqs = self.store.insert(col.coll, ids, embeddings, mds, documents, uris)
            change.set_vectors(seqs, embeddings, mds)

    def _apply_update(
        self,
        col: CollectionRow,
        found: dict[str, tuple[int, bytes | None, str | None]],
        ids: list[str],
        rows: list[int],
        embeddings: np.ndarray | None,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> np.ndarray:
        """Update existing records ``ids[i] for i in rows``; returns their seqs."""
        seqs = np.array([found[ids[i]][0] for i in rows], dtype=np.int64)
        if metadatas is not None:
            change = [i for i in rows if metadatas[i] is not None]
            if change:
                merged_rows = [
                    _merge_metadata(
                        orjson.loads(found[ids[i]][1]) if found[ids[i]][1] else None,
                        metadatas[i] or {},
                    )
                    for i in change
                ]
                self.store.update_rows(
                    col.coll,
                    [found[ids[i]][0] for i in change],
                    None,
                    merged_rows,
                    None,
                    None,
                )
        self.store.update_rows(
            col.coll,
            seqs.tolist(),
            None if embeddings is None else embeddings[rows],
            None,
            None if documents is None else [documents[i] for i in rows],
            None if uris is None else [uris[i] for i in rows],
        )
        return seqs

    def update(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: np.ndarray | None,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        with self._write(collection_id) as change:
            col = change.col
            if embeddings is not None and col.dimension is not None:
                self.store.set_dimension(col, embeddings.shape[1])
            found = self.store.existing(col.coll, ids)
            rows = [i for i, x in enumerate(ids) if x in found]
            if not rows:
                return
            seqs = self._apply_update(col, found, ids, rows, embeddings, metadatas, documents, uris)
            changed = None if metadatas is None else [metadatas[i] for i in rows]
            if embeddings is not None:
                change.set_vectors(seqs, embeddings[rows], changed)
            else:  # filters read the new metadata and documents from this version on
                change.touch(changed)

    def upsert(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: np.ndarray,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        with self._write(collection_id) as change:
            if not ids:
                return
            col = change.col
            found = self._open_vector_write(col, ids, embeddings)
            old = [i for i, x in enumerate(ids) if x in found]
            new = [i for i, x in enumerate(ids) if x not in found]
            parts, vec_parts = [], []
            if old:
                parts.append(
                    self._apply_update(col, found, ids, old, embeddings, metadatas, documents, uris)
                )
                vec_parts.append(embeddings[old])
            if new:
                parts.append(
                    self.store.insert(
                        col.coll,
                        [ids[i] for i in new],
                        embeddings[new],
                        None if metadatas is None else [_strip_none(metadatas[i]) for i in new],
                        None if documents is None else [documents[i] for i in new],
                        None if uris is None else [uris[i] for i in new],
                    )
                )
                vec_parts.append(embeddings[new])
            change.set_vectors(np.concatenate(parts), np.concatenate(vec_parts), metadatas)

    def delete(
        self,
        collection_id: str,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        limit: int | None = None,
    ) -> int:
        with self._write(collection_id) as change:
            coll = change.col.coll
            seqs = self.store.candidate_seqs(coll, ids, where, where_document, None)
            if seqs is None:  # a filter of negations alone: one statement
                seqs = self.store.matching_seqs(coll, ids, where, where_document, limit)
            elif limit is not None:
                seqs = seqs[:limit]
            if len(seqs) == 0:
                return 0
            self.store.delete_rows(coll, seqs)
            change.delete(seqs)
        return len(seqs)

    # ------------------------------------------------------------ records: reads

    def count(self, collection_id: str) -> int:
        col = self.store.collection_by_id(collection_id)
        return self.store.count(col.coll)

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
        col = self.store.collection_by_id(collection_id)
        filtered = bool(where or where_document)
        paged = ids is None and (limit is not None or bool(offset))
        # Without an index in memory, SQLite answers alone: no load for a get.
        index = self.keeper.current(col) if (filtered or paged) and col.id in self.keeper else None
        rows = None
        if index is not None:
            # The same (cached) candidate set a filtered query uses, or for a page of
            # everything the index's sorted seqs (no walk past `offset` records).
            share = None
            if filtered and limit is not None:
                share = self._sampled_share(col, index, ids, where, where_document)
            if walks(share, offset, limit):
                # Many match: the page is a short walk in order (no list of every match).
                with self._scanning(where_document) as store, store.read():
                    return get_result(
                        store.fetch_walk(col.coll, where, where_document, limit, offset, columns),
                        columns,
                        include,
                        col.dimension,
                    )
            if filtered:
                cand = self._candidates(col, index, ids, where, where_document).seqs
            else:
                cand = index.universe()
            with self.store.read():
                # None: a record was deleted since the candidates were read (a concurrent
                # write), and the page would be short and shifted; asked again below.
                rows = self._page(self.store, col, cand, limit, offset, columns)
        if rows is None and filtered:
            # Candidates and records from one snapshot.
            with self._scanning(where_document) as store, store.read():
                cand = store.candidate_seqs(col.coll, ids, where, where_document, None)
                if cand is not None:
                    rows = self._page(store, col, cand, limit, offset, columns)
        if rows is None:  # no filter, or one of negations alone: one statement
            with self._scanning(where_document) as store, store.read():
                rows = store.fetch(col.coll, ids, where, where_document, limit, offset, columns)
        return get_result(rows, columns, include, col.dimension)

    def _scanning(
        self, where_document: WhereDocument | None
    ) -> contextlib.AbstractContextManager[Store]:
        """The store to read a filter's matches from. A regex reads every document: on
        disk it does so on a connection of its own, leaving the store's lock to other
        calls meanwhile (RE2 releases the GIL while it matches). Inside a transaction
        of the store's, the read belongs to that snapshot."""
        if (
            self.store.path is not None
            and not self.store.in_transaction
            and uses_regex(where_document)
        ):
            return self.store.reader()
        return contextlib.nullcontext(self.store)

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
        rest = (query_embeddings, n_results, ids, where, where_document, include)
        if self._cold(collection_id, len(query_embeddings), n_results):
            # On a connection of its own: a load under way holds the store's lock.
            with self.store.reader() as store, store.read():
                col = store.collection_by_id(collection_id)
                _check_query_dimension(col, query_embeddings)
                if col.dimension is not None:
                    result = self._scan_query(store, col, *rest)
                    self.keeper.load_behind(col)
                    return result
        col = self.store.collection_by_id(collection_id)
        _check_query_dimension(col, query_embeddings)
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
        where: Where | None,
        where_document: WhereDocument | None,
        include: list[str],
        *,
        whole: bool,
    ) -> QueryResult | None:
        """One search and the read of its records; None if ``whole`` and one of them was
        gone by the time it was read."""
        nq = len(query_embeddings)
        index = self.keeper.current(col)
        labels: list[np.ndarray]
        dists: list[np.ndarray]
        if ids is not None:
            self._check_ids_exist(col, ids)
        if index is None or len(index) == 0:
            labels = [np.empty(0, np.int64)] * nq
            dists = [np.empty(0, np.float32)] * nq
        elif ids is None and not where and not where_document:
            found = (
                None
                if _planning.searched_exactly(len(index))
                else index.knn(query_embeddings, n_results)
            )
            if found is None:
                labels, dists = self.keeper.exact(
                    col, index, query_embeddings, n_results, index.universe()
                )
            else:
                labels, dists = list(found[0]), list(found[1])
        else:
            labels, dists = self._filtered(
                col, index, query_embeddings, n_results, ids, where, where_document
            )
        return self._query_result(labels, dists, include, col, whole=whole)

    def _cold(self, collection_id: str, nq: int, n_results: int) -> bool:
        """Whether to answer by scanning SQLite rather than wait for the index: a store
        on disk whose index is not in memory (not loaded yet, or loading)."""
        return (
            self.path is not None
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
        where: Where | None,
        where_document: WhereDocument | None,
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
        if ids is not None or where or where_document:
            cand = store.candidate_seqs(col.coll, ids, where, where_document, None)
            if cand is None:  # a filter of negations alone: one statement
                cand = store.matching_seqs(col.coll, ids, where, where_document)
        chunks = store.vector_chunks(col.coll, dim, cand)
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
        where: Where | None,
        where_document: WhereDocument | None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        ef_search = int(col.configuration["hnsw"]["ef_search"])
        share = self._sampled_share(col, index, ids, where, where_document)
        if share is not None and dense(share):
            fetch = postfilter_fetch(round(share * len(index)), len(index), k, ef_search)
            if fetch is not None:
                found = index.knn_postfilter(
                    q,
                    k,
                    lambda seqs: self._matching_among(seqs, where, where_document),
                    fetch,
                    postfilter_beam(fetch, ef_search),
                )
                return self._answer_rest(col, index, q, k, found, ids, where, where_document)
        matches = self._candidates(col, index, ids, where, where_document)
        fetch = postfilter_fetch(len(matches.seqs), len(index), k, ef_search)
        if fetch is None or matches.correlated():
            return self._exact_or_callback(col, index, q, k, matches)
        # Queries with fewer than k matches among their neighbours (a filter correlated
        # with position) take a slower plan: a wider window would reach into the
        # inaccurate tail of the HNSW list.
        found = index.knn_postfilter(q, k, matches.seqs, fetch, postfilter_beam(fetch, ef_search))
        labels: list[np.ndarray] = [np.empty(0, np.int64)] * len(q)
        dists: list[np.ndarray] = [np.empty(0, np.float32)] * len(q)
        for i, f in enumerate(found):
            if f is not None:
                labels[i], dists[i] = f
        rest = [i for i, f in enumerate(found) if f is None]
        matches.tries += len(found)
        matches.misses += len(rest)
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
        where: Where | None,
        where_document: WhereDocument | None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The post-filtered answers, and for the queries that came up short (too few
        matches among their neighbours) those of the plan over every match."""
        labels = [f[0] if f is not None else np.empty(0, np.int64) for f in found]
        dists = [f[1] if f is not None else np.empty(0, np.float32) for f in found]
        rest = [i for i, f in enumerate(found) if f is None]
        if rest:
            matches = self._candidates(col, index, ids, where, where_document)
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
        where: Where | None,
        where_document: WhereDocument | None,
    ) -> float | None:
        """See FilterMemory.sampled_share; None for a list of ids (cheap to list)."""
        if ids is not None:
            return None
        return self._filters.sampled_share(
            filter_key(col.id, index.lsn, ids, where, where_document),
            index.universe,
            len(index),
            lambda seqs: self._matching_among(seqs, where, where_document),
        )

    def _matching_among(
        self, seqs: np.ndarray, where: Where | None, where_document: WhereDocument | None
    ) -> np.ndarray:
        with self._scanning(where_document) as store, store.read():
            return store.matching_among(seqs, where, where_document)

    def _exact_or_callback(
        self, col: CollectionRow, index: VectorIndex, q: np.ndarray, k: int, matches: Matches
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Exact search over the matches, or HNSW with a filter callback when they are many."""
        cand = matches.seqs
        if exact_among(len(cand), k):
            return self.keeper.exact(col, index, q, k, cand)
        if matches.allowed is None:
            matches.allowed = set(cand.tolist())
        ef = int(col.configuration["hnsw"]["ef_search"]) * FILTERED_EF_FACTOR
        found = index.knn(q, k, matches.allowed, ef=ef)
        if found is None:
            return self.keeper.exact(col, index, q, k, cand)
        return list(found[0]), list(found[1])

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
        where: Where | None,
        where_document: WhereDocument | None,
    ) -> Matches:
        """Matching seqs, from the cache when this filter ran on this version before.

        The key includes the index's lsn, so any write, from any process, retires it.
        """
        key = filter_key(col.id, index.lsn, ids, where, where_document)
        cached = self._filters.matches(key)
        if cached is not None:
            return cached
        with self._scanning(where_document) as store, store.read():
            cand = store.candidate_seqs(col.coll, ids, where, where_document, index.universe())
        return self._filters.remember(key, cand)

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
        with store.read():
            rows = store.fetch_seqs(col.coll, wanted, columns) if wanted else {}
        if whole and len(rows) < len(wanted):
            return None
        return query_result(labels, dists, rows, include, col.dimension)


class _Change:
    """What one write call changed, said by the call inside its transaction (see
    LocalBackend._write): the kind of change, its seqs, and the vectors it set."""

    __slots__ = ("col", "early", "kind", "lsn", "metadatas", "prev", "seen", "seqs", "vectors")

    def __init__(self, col: CollectionRow) -> None:
        self.col = col
        self.prev = col.last_lsn  # the collection's version before this write
        self.kind: int | None = None  # OP_SET, OP_DELETE, OP_TOUCH; None: nothing changed
        self.seqs: np.ndarray | None = None
        self.vectors: np.ndarray | None = None
        self.metadatas: list[Metadata | None] | None = None
        self.early: EarlyIndexing | None = None
        self.lsn: int | None = None  # set when logged
        self.seen: set[tuple[str, str]] = set()

    def set_vectors(
        self, seqs: np.ndarray, vectors: np.ndarray, metadatas: list[Metadata | None] | None
    ) -> None:
        self.kind, self.seqs, self.vectors, self.metadatas = OP_SET, seqs, vectors, metadatas

    def touch(self, metadatas: list[Metadata | None] | None) -> None:
        self.kind, self.metadatas = OP_TOUCH, metadatas

    def delete(self, seqs: np.ndarray) -> None:
        self.kind, self.seqs = OP_DELETE, seqs
