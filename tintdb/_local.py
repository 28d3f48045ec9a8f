"""``LocalBackend``: the Backend that runs in this process, on SQLite plus a vector index.

It keeps one rule: SQLite is the truth and every index is caught up with the change
log before it answers (``_sync``). Writes commit to SQLite first and only then touch
the in-memory index, so a crash between the two loses nothing: the next ``_sync``
(in this process, another one, or after a restart) replays the log.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from . import __version__, _planning, _schema
from ._filters import uses_regex
from ._index import VectorIndex, scan_knn
from ._planning import FILTERED_EF_FACTOR, postfilter_beam, postfilter_fetch
from ._results import columns_for, get_result, query_result
from ._storage import OP_DELETE, OP_SET, CollectionRow, Store
from .config import Settings
from .errors import (
    IDAlreadyExistsError,
    InvalidArgumentError,
    InvalidDimensionException,
    NotFoundError,
    TintError,
)
from .types import CollectionModel, GetResult, Metadata, QueryResult, Where, WhereDocument

__all__ = ["EXACT_LIMIT", "LocalBackend", "postfilter_fetch"]

log = logging.getLogger("tintdb")

# A filtered query with at most this many matching records is answered by exact search
# over just those vectors (cheap, and recall is 1.0); above it, by HNSW with a filter.
EXACT_LIMIT = 20_000
# Filter results kept per (collection, version, filter): repeated filters skip SQL.
FILTER_CACHE_SIZE = 32
# A query of at most this many embeddings and results, on a collection whose index is
# not in memory, scans SQLite's vectors exactly while the index loads (_scan_query).
# Larger ones wait for the index: scanning costs grow with queries times records.
COLD_SCAN_QUERIES = 8
COLD_SCAN_RESULTS = 1024
# close() snapshots an index only if more than 1/CLOSE_REPLAY_SHARE of its records
# changed since its last snapshot; fewer are replayed from the log by the next open, on
# the load behind its first query. A snapshot costs about as much as replaying that
# share of changes (docs/benchmarks.md).
CLOSE_REPLAY_SHARE = 50
# A worn graph rebuilt behind the writes is filled this many records at a time, so that
# closing the store never waits long for it. One of at most REBUILD_NOW_BELOW live
# records is rebuilt inside the write (quick at that size).
REBUILD_STEP = 8192
REBUILD_NOW_BELOW = 2048


# Adds of at least this many records index their vectors while SQLite writes them.
EARLY_INDEX_MIN = 256
# A filter whose post-filtered queries came up short this many times, more often than not,
# goes straight to the fallback plan for the rest of this version of the collection. Each
# short try costs a wide HNSW search on top of the fallback.
POSTFILTER_TRIES = 2


# A filter not seen on this version of a collection is first tried on an even sample of
# this many of its records (when it has at least SAMPLE_ABOVE): where at least
# DENSE_SHARE of them match, a query post-filters its neighbours, tested record by
# record, and a get(where, limit) walks the records in order until its page is full
# (if that takes at most WALK_MAX records), instead of listing every match (which, when
# many match, costs more than the search).
# A filter that comes again on the same version is listed (and cached) instead, the
# list then answering its later queries without SQL, unless its sample put it above
# LIST_MAX matches (listing that many costs more than the query it would serve).
SAMPLE_SIZE = 128
LIST_MAX = 50_000
SAMPLE_ABOVE = 4096
DENSE_SHARE = 0.05
WALK_MAX = 4096


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
        self._indexes: dict[str, VectorIndex] = {}
        # Indexes being loaded on a thread of their own (see _scan_query), and worn
        # graphs being rebuilt (see _compact), each thread with the lsn it started at
        # (a rebuild's holds back log pruning; see _snapshot).
        self._loading: dict[str, tuple[threading.Thread, int]] = {}
        self._rebuilding: dict[str, tuple[threading.Thread, int]] = {}
        self._loading_lock = threading.Lock()
        self._closing = False
        self._filter_cache: OrderedDict[tuple[str, int, bytes], _Matches] = OrderedDict()
        # Per collection (coll), the (metadata key, value type) pairs known to be stored
        # in collection_keys; loaded on a collection's first write here.
        self._value_types: dict[int, set[tuple[str, str]]] = {}
        self._sampled: OrderedDict[tuple[str, int, bytes], float] = OrderedDict()
        self._closed = False
        if self.path is not None:
            ref = weakref.ref(self)

            def close_at_exit() -> None:
                backend = ref()
                if backend is not None:
                    backend.close()

            self._atexit = close_at_exit
            atexit.register(self._atexit)

    # ------------------------------------------------------------ lifecycle

    def heartbeat(self) -> int:
        return time.time_ns()

    def version(self) -> str:
        return __version__

    def close(self) -> None:
        """Snapshot the indexes whose log replay would cost more than the snapshot
        (see CLOSE_REPLAY_SHARE), then release the files."""
        if self._closed:
            return
        with self._loading_lock:
            self._closing = True  # no more loads behind queries
        self._wait_loads()
        with self.store.lock:
            self._filter_cache.clear()
            self._sampled.clear()
            checkpoint = self.store.start_checkpoint() if self._indexes else None
            for cid in list(self._indexes):
                # The mirror goes first: writing the snapshot copies hnswlib's state, and
                # the two together would set the process's peak memory.
                self._indexes[cid].drop_mirror()
                try:
                    self._snapshot(cid, closing=True)
                except (TintError, OSError):  # the collection is gone, or the disk refused
                    log.warning("could not snapshot the index of collection %s", cid)
                del self._indexes[cid]  # one index in memory at a time while closing
            if checkpoint is not None:
                checkpoint.join()
            self.store.close()
            self._closed = True
        if self.path is not None:
            atexit.unregister(self._atexit)

    def _wait_loads(self) -> None:
        """Return once every index load and rebuild running behind the calls is done
        (in memory, given up or failed)."""
        with self._loading_lock:
            running = [t for t, _ in [*self._loading.values(), *self._rebuilding.values()]]
        for thread in running:
            thread.join()

    def reset(self) -> bool:
        with self.store.lock:
            self.store.reset()
            self._indexes.clear()
            self._value_types.clear()
            if self.path is not None:
                VectorIndex.discard(self.path / "index")
        return True

    def vacuum(self) -> None:
        """Rewrite the database file compactly and re-snapshot every index."""
        self._wait_loads()  # an index loading behind a query is snapshotted too
        with self.store.lock:
            self.store.reclaim_space(full=True)
            for cid in list(self._indexes):
                self._compact(self.store.collection_by_id(cid), wait=True)
                self._snapshot(cid, force=True)

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
                self._drop_index(cid)

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
            index = self._indexes.get(collection_id)
            if index is not None and config is not None:
                index.set_params(col.configuration["hnsw"])
        return self._shown(col)

    def delete_collection(self, name: str, tenant: str, database: str) -> None:
        with self.store.lock:
            col = self.store.delete_collection(name, tenant, database)
            self._drop_index(col.id)
            self._value_types.pop(col.coll, None)

    def fork(self, collection_id: str, new_name: str) -> CollectionModel:
        """A copy of the collection under ``new_name`` (see Store.fork_collection); its
        vector index is the source's graph with its labels shifted, not a rebuild."""
        with self.store.lock:
            with self.store.write():
                col = self.store.collection_by_id(collection_id)
                index = None if col.dimension is None else self._sync(col)
                forked, shift = self.store.fork_collection(col, new_name)
            if index is not None:
                scratch = self.path / "index" if self.path is not None else None
                try:
                    self._indexes[forked.id] = index.relabeled(
                        shift, forked.last_lsn, scratch or Path(tempfile.gettempdir())
                    )
                except Exception:  # derived data: built from SQLite on first need instead
                    log.exception("could not copy the index of %s into its fork", collection_id)
        return forked

    def fork_count(self, collection_id: str) -> int:
        return self.store.fork_count(self.store.collection_by_id(collection_id))

    def _drop_index(self, collection_id: str) -> None:
        self._indexes.pop(collection_id, None)
        if self.path is not None:
            VectorIndex.discard(self._index_dir(collection_id))

    # ------------------------------------------------------------ the index, kept in step

    def _index_dir(self, collection_id: str) -> Path:
        assert self.path is not None
        return self.path / "index" / collection_id

    def _loader(self, col: CollectionRow, rows: int = 4096) -> Any:
        dim = col.dimension
        assert dim is not None

        def load() -> Generator[tuple[np.ndarray, np.ndarray], None, None]:
            with self.store.read():
                yield from self.store.vector_chunks(col.coll, dim, rows=rows)

        return load

    def _exact(
        self, col: CollectionRow, index: VectorIndex, q: np.ndarray, k: int, cand: np.ndarray
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Exact search over ``cand``, building the mirror on first use."""
        # Locks are always taken store first, then index (as writes do): build the
        # mirror under the store lock so its loader never waits on it from inside.
        with self.store.lock:
            index.ensure_mirror(self._loader(col))
        return index.exact(q, k, cand)

    def _sync(self, col: CollectionRow) -> VectorIndex | None:
        """The collection's index, caught up with every committed change (None if empty)."""
        # One read transaction: the log floor and the ops replayed come from one snapshot,
        # so another process pruning the log in between cannot hide changes.
        with self.store.lock, self.store.read():
            state = self.store.lsn_state(col.id)
            if state is None:
                self._drop_index(col.id)
                raise NotFoundError(f"Collection [{col.id}] does not exist.")
            last_lsn, floor = state
            index = self._indexes.get(col.id)
            if index is not None and index.lsn == last_lsn:
                return index
            col = self.store.collection_by_id(col.id)
            if col.dimension is None:
                return None
            hnsw = col.configuration["hnsw"]
            if index is None or index.lsn < floor:
                index = None
                if self.path is not None:
                    # One vector block at a time: no joined copies while loading.
                    index = VectorIndex.load(
                        self._index_dir(col.id),
                        col.space,
                        col.dimension,
                        hnsw,
                        self._loader(col, rows=0),
                    )
                if index is None or index.lsn < floor or index.lsn > last_lsn:
                    index = self._rebuild(col)
                    assert index is not None
            self._catch_up(col, index)
            self._indexes[col.id] = index
            return index

    def _rebuild(self, col: CollectionRow, *, behind: bool = False) -> VectorIndex | None:
        """A fresh index of the collection as SQLite holds it, stamped with the lsn read.

        ``behind``: built on a thread of its own while writes go on. SQLite is read on a
        connection of its own (the store lock stays free), insertion leaves one core to
        the caller's work, and it gives up (None) when the backend starts closing.
        """
        assert col.dimension is not None
        index = VectorIndex(col.space, col.dimension, col.configuration["hnsw"])
        own = behind and self.path is not None
        source = self.store.reader() if own else contextlib.nullcontext(self.store)
        with source as store, store.read():
            lsn = store.lsn_state(col.id)
            seqs, vecs = store.vectors(col.coll, None, col.dimension)
        step, threads = max(len(seqs), 1), None  # inside a call: at once, num_threads as set
        if behind:
            configured = int(col.configuration["hnsw"].get("num_threads") or 0)
            step, threads = REBUILD_STEP, configured or max(1, (os.cpu_count() or 2) - 1)
        index.reserve(len(seqs))
        for start in range(0, len(seqs), step):
            if behind and self._closing:
                return None
            index.upsert(seqs[start : start + step], vecs[start : start + step], threads=threads)
        index.lsn = lsn[0] if lsn else 0
        index.unsaved = len(seqs) or 1
        index.rebuilt = True
        return index

    def _catch_up(self, col: CollectionRow, index: VectorIndex) -> None:
        assert col.dimension is not None
        with self.store.read():
            ops = self.store.ops_since(col.coll, index.lsn)
            if not ops:
                return
            final: dict[int, int] = {}
            for _, kind, seqs in ops:
                for s in seqs.tolist():
                    final[s] = kind
            to_set = np.array([s for s, k in final.items() if k == OP_SET], dtype=np.int64)
            found, vecs = self.store.vectors(col.coll, to_set, col.dimension)
        gone = np.array(sorted(set(final) - set(found.tolist())), dtype=np.int64)
        index.remove(gone)
        index.upsert(found, vecs)
        index.lsn = ops[-1][0]

    def _after_write(
        self,
        col: CollectionRow,
        prev_lsn: int,
        lsn: int | None,
        set_seqs: np.ndarray | None,
        vectors: np.ndarray | None,
        deleted: np.ndarray | None,
    ) -> None:
        """Apply a committed change to the in-memory index, if it was current before it."""
        if lsn is None:
            return
        index = self._indexes.get(col.id)
        if index is None or index.lsn != prev_lsn:
            # Not current (first write, or another process wrote in between): load or
            # build it and replay the log, so the index never falls behind the data.
            try:
                self._sync(col)
            except Exception:
                log.exception("index catch-up failed; it will be rebuilt from the log")
                self._indexes.pop(col.id, None)
                return
            self._compact(col)
            self._snapshot(col.id)
            return
        try:
            if deleted is not None:
                index.remove(deleted)
            if set_seqs is not None and vectors is not None:
                index.upsert(set_seqs, vectors)
            index.lsn = lsn
        except Exception:  # the write is durable; a fresh index will be built from the log
            log.exception("index update failed; it will be rebuilt from the log")
            self._indexes.pop(col.id, None)
            return
        self._compact(col)
        self._snapshot(col.id)

    def _index_early(
        self, col: CollectionRow, prev_lsn: int, vectors: np.ndarray
    ) -> _EarlyIndexing | None:
        """Start inserting a large add's vectors into the index while SQLite writes them.

        hnswlib releases the GIL, so the graph insertion (most of an add's cost) overlaps
        the SQLite work instead of following it. The seqs are known before the insert:
        the write lock is held and seqs only grow. If the transaction then fails, the
        index is dropped and rebuilt from the log (it is derived data).
        """
        index = self._indexes.get(col.id)
        if index is None or index.lsn != prev_lsn or len(vectors) < EARLY_INDEX_MIN:
            return None
        first = self.store.next_seq()
        return _EarlyIndexing(index, np.arange(first, first + len(vectors)), vectors)

    def _compact(self, col: CollectionRow, *, wait: bool = False) -> None:
        """Replace a graph worn by deletes (tombstones) and in-place updates (see worn())
        with a fresh one, built behind the writes unless ``wait``.

        A rebuild takes about as long as adding every record again (tens of seconds at
        100k); made inside the write that crossed the line, it stalled that write and
        every call behind it. Behind them, the worn graph keeps answering and taking
        writes meanwhile, the fresh one replays the log from where it read SQLite, and
        replaces it. The log is kept from there until then (see _snapshot). A graph of
        few live records (a collection emptied by deletes, say) is rebuilt at once.
        """
        index = self._indexes.get(col.id)
        if index is None or not index.worn():
            return
        if wait or len(index) <= REBUILD_NOW_BELOW:
            fresh = self._rebuild(col)
            assert fresh is not None
            self._indexes[col.id] = fresh
            return
        self._behind(self._rebuilding, col.id, lambda: self._rebuild_behind(col, index), index.lsn)

    def _behind(
        self, jobs: dict[str, tuple[threading.Thread, int]], cid: str, work: Any, lsn: int = 0
    ) -> None:
        """Run ``work`` for collection ``cid`` on a thread of its own, listed in ``jobs``
        (with ``lsn``) while it runs; not if one is listed already or the backend closes.
        close() and vacuum() wait for them (_wait_loads)."""

        def run() -> None:
            try:
                work()
            finally:
                with self._loading_lock:
                    jobs.pop(cid, None)

        with self._loading_lock:
            if cid in jobs or self._closing:
                return
            thread = threading.Thread(target=run, name="tintdb-behind", daemon=True)
            jobs[cid] = (thread, lsn)
            thread.start()

    def _rebuild_behind(self, col: CollectionRow, worn: VectorIndex) -> None:
        try:
            fresh = self._rebuild(col, behind=True)
            if fresh is None:
                return
            with self.store.lock:
                state = self.store.lsn_state(col.id)
                if self._indexes.get(col.id) is not worn or state is None:
                    return  # dropped, replaced or reloaded meanwhile: nothing to replace
                if fresh.lsn < state[1]:
                    # Another process pruned the log past the read: the changes since
                    # cannot be replayed. The next write past the line tries again.
                    return
                self._catch_up(col, fresh)
                self._indexes[col.id] = fresh
                self._snapshot(col.id)
        except Exception:  # the worn graph is still correct; the next write tries again
            log.exception("background rebuild of collection %s failed", col.id)

    def _snapshot(self, collection_id: str, *, force: bool = False, closing: bool = False) -> None:
        """Persist the index when enough has changed: half its records while writes go
        on, a 1/CLOSE_REPLAY_SHARE when closing; whenever it differs, with ``force``."""
        index = self._indexes.get(collection_id)
        if self.path is None or index is None:
            return
        if index.unsaved == 0:
            return
        col = self.store.collection_by_id(collection_id)
        if force:
            threshold = 1
        elif closing:
            threshold = max(1, len(index) // CLOSE_REPLAY_SHARE)
        else:
            threshold = max(
                int(col.configuration["hnsw"].get("sync_threshold") or 1000), len(index) // 2
            )
        if index.unsaved < threshold:
            return
        index.save(self._index_dir(collection_id))
        upto = index.lsn
        rebuilding = self._rebuilding.get(collection_id)
        if rebuilding is not None:  # a fresh graph will replay the log from its read
            upto = min(upto, rebuilding[1])
        self.store.prune_log(col, upto)

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

    def add(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: np.ndarray,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        with self.store.lock:
            early: _EarlyIndexing | None = None
            try:
                with self.store.write():
                    if not ids:
                        self.store.collection_by_id(collection_id)  # NotFoundError if gone
                        return
                    col, prev, taken = self._open_vector_write(collection_id, ids, embeddings)
                    if taken:
                        shown = ", ".join(sorted(taken)[:10]) + (" ..." if len(taken) > 10 else "")
                        raise IDAlreadyExistsError(
                            f"{len(taken)} of the ids already exist in collection {col.name!r}: "
                            f"{shown}. Nothing was added; use upsert() to overwrite."
                        )
                    mds = None if metadatas is None else [_strip_none(m) for m in metadatas]
                    early = self._index_early(col, prev, embeddings)
                    seqs = self.store.insert(col.coll, ids, embeddings, mds, documents, uris)
                    lsn = self.store.log(col, OP_SET, seqs)
                    seen = self._note_value_types(col, mds)
            except BaseException:
                if early is not None:  # the index holds vectors the store refused: drop it
                    early.join()
                    self._indexes.pop(col.id, None)
                raise
            self._value_types[col.coll] |= seen
            if early is None:
                self._after_write(col, prev, lsn, seqs, embeddings, None)
            elif early.finish(seqs):  # the vectors are in: only the lsn and upkeep are left
                self._after_write(col, prev, lsn, None, None, None)
            else:  # the next call replays the log into a fresh index
                self._indexes.pop(col.id, None)

    def _open_vector_write(
        self, collection_id: str, ids: list[str], embeddings: np.ndarray
    ) -> tuple[CollectionRow, int, dict[str, tuple[int, bytes | None, str | None]]]:
        """In an open write: the collection, its lsn before this write, and which of
        ``ids`` exist; the first vectors written fix the collection's dimension."""
        col = self.store.collection_by_id(collection_id)
        self.store.set_dimension(col, embeddings.shape[1])
        if col.last_lsn == 0 and col.id not in self._indexes:
            # The collection's first change: start its (empty) index now, so these vectors
            # are indexed from the arrays in hand (during the write, for a large add)
            # rather than read back out of SQLite after it.
            hnsw = col.configuration["hnsw"]
            self._indexes[col.id] = VectorIndex(col.space, embeddings.shape[1], hnsw)
        return col, col.last_lsn, self.store.existing(col.coll, ids)

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
                        orjson.loads(raw) if (raw := found[ids[i]][1]) else None,
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
        with self.store.lock:
            with self.store.write():
                col = self.store.collection_by_id(collection_id)
                prev = col.last_lsn
                if embeddings is not None and col.dimension is not None:
                    self.store.set_dimension(col, embeddings.shape[1])
                found = self.store.existing(col.coll, ids)
                rows = [i for i, x in enumerate(ids) if x in found]
                if not rows:
                    return
                seqs = self._apply_update(
                    col, found, ids, rows, embeddings, metadatas, documents, uris
                )
                if embeddings is not None:
                    lsn = self.store.log(col, OP_SET, seqs)
                else:  # filters read the new metadata and documents from this version on
                    lsn = self.store.touch(col)
                seen = self._note_value_types(
                    col, None if metadatas is None else [metadatas[i] for i in rows]
                )
            self._value_types[col.coll] |= seen
            if embeddings is not None:
                self._after_write(col, prev, lsn, seqs, embeddings[rows], None)
            elif (index := self._indexes.get(col.id)) is not None and index.lsn == prev:
                index.lsn = lsn  # nothing to replay; an index behind replays the log later

    def upsert(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: np.ndarray,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        with self.store.lock:
            with self.store.write():
                if not ids:
                    self.store.collection_by_id(collection_id)  # NotFoundError if gone
                    return
                col, prev, found = self._open_vector_write(collection_id, ids, embeddings)
                old = [i for i, x in enumerate(ids) if x in found]
                new = [i for i, x in enumerate(ids) if x not in found]
                parts, vec_parts = [], []
                if old:
                    parts.append(
                        self._apply_update(
                            col, found, ids, old, embeddings, metadatas, documents, uris
                        )
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
                seqs = np.concatenate(parts)
                vectors = np.concatenate(vec_parts)
                lsn = self.store.log(col, OP_SET, seqs)
                seen = self._note_value_types(col, metadatas)
            self._value_types[col.coll] |= seen
            self._after_write(col, prev, lsn, seqs, vectors, None)

    def delete(
        self,
        collection_id: str,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        limit: int | None = None,
    ) -> int:
        with self.store.lock:
            with self.store.write():
                col = self.store.collection_by_id(collection_id)
                prev = col.last_lsn
                seqs = self.store.candidate_seqs(col.coll, ids, where, where_document, None)
                if seqs is None:  # a filter of negations alone: one statement
                    seqs = self.store.matching_seqs(col.coll, ids, where, where_document, limit)
                elif limit is not None:
                    seqs = seqs[:limit]
                if len(seqs) == 0:
                    return 0
                self.store.delete_rows(col.coll, seqs)
                lsn = self.store.log(col, OP_DELETE, seqs)
            self._after_write(col, prev, lsn, None, None, seqs)
            if len(seqs) > 1000 and len(seqs) * 3 > self.store.count(col.coll):
                self.store.reclaim_space()
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
        index = self._sync(col) if (filtered or paged) and col.id in self._indexes else None
        rows = None
        if index is not None:
            # The same (cached) candidate set a filtered query uses, or for a page of
            # everything the index's sorted seqs (no walk past `offset` records).
            share = None
            if filtered and limit is not None:
                share = self._sampled_share(col, index, ids, where, where_document)
            if (
                share is not None
                and limit is not None
                and share > 0
                and ((offset or 0) + limit) / share <= WALK_MAX
            ):
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
                listed = store.candidate_seqs(col.coll, ids, where, where_document, None)
                if listed is not None:
                    rows = self._page(store, col, listed, limit, offset, columns)
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
                    scanned = self._scan_query(store, col, *rest)
                    self._load_behind(col)
                    return scanned
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
        index = self._sync(col)
        labels: list[np.ndarray]
        dists: list[np.ndarray]
        if ids is not None:
            self._check_ids_exist(col, ids)
        if index is None or len(index) == 0:
            labels = [np.empty(0, np.int64)] * nq
            dists = [np.empty(0, np.float32)] * nq
        elif ids is None and not where and not where_document:
            labels, dists = self._knn_all(col, index, query_embeddings, n_results)
        else:
            labels, dists = self._filtered(
                col, index, query_embeddings, n_results, ids, where, where_document
            )
        return self._query_result(labels, dists, include, col, whole=whole)

    def search(
        self, collection_id: str, searches: list[dict[str, Any]], read_level: str = ""
    ) -> dict[str, Any]:
        """A batch of Search API payloads (see tintdb._search). Every read level reads
        every committed write: there is no unindexed log to skip here."""
        from ._search.local import search

        return search(self, collection_id, searches)

    def _cold(self, collection_id: str, nq: int, n_results: int) -> bool:
        """Whether to answer by scanning SQLite rather than wait for the index: a store
        on disk whose index is not in memory (not loaded yet, or loading)."""
        return (
            self.path is not None
            and not self._closing
            and nq <= COLD_SCAN_QUERIES
            and n_results <= COLD_SCAN_RESULTS
            and collection_id not in self._indexes
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

    def _load_behind(self, col: CollectionRow) -> None:
        """Load (or build) the collection's index on a thread of its own."""

        def load() -> None:
            try:
                self._sync(col)
            except Exception:  # the next call that needs the index loads it, or says why
                log.debug("background index load failed", exc_info=True)

        self._behind(self._loading, col.id, load)

    def _knn_all(
        self, col: CollectionRow, index: VectorIndex, q: np.ndarray, k: int
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The ``k`` nearest records to each query: HNSW, or exact in a collection small
        enough (_planning.searched_exactly)."""
        found = None if _planning.searched_exactly(len(index)) else index.knn(q, k)
        if found is None:
            return self._exact(col, index, q, k, index.universe())
        return list(found[0]), list(found[1])

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
        if share is not None and share >= DENSE_SHARE:
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
        return self._knn_matches(col, index, q, k, matches)

    def _knn_matches(
        self, col: CollectionRow, index: VectorIndex, q: np.ndarray, k: int, matches: _Matches
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The ``k`` nearest records to each query among a filter's listed ``matches``,
        by cost (post-filtering, exact search, or hnswlib's filter callback)."""
        ef_search = int(col.configuration["hnsw"]["ef_search"])
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
        """The share of an even sample of the collection that a filter not yet in the
        cache matches; None where listing its matches is cheap anyway (ids, a small
        collection, a cached filter) or pays for itself (a filter seen before)."""
        if ids is not None or len(index) < SAMPLE_ABOVE:
            return None
        key = self._filter_key(col, index, ids, where, where_document)
        if key in self._filter_cache:
            return None
        seen = self._sampled.get(key)
        if seen is not None:  # seen before: list its matches, once, and keep them
            return seen if seen * len(index) > LIST_MAX else None
        universe = index.universe()
        sample = universe[:: max(1, len(universe) // SAMPLE_SIZE)][:SAMPLE_SIZE]
        share = len(self._matching_among(sample, where, where_document)) / len(sample)
        self._sampled[key] = share
        while len(self._sampled) > 4 * FILTER_CACHE_SIZE:
            self._sampled.popitem(last=False)
        return share

    def _matching_among(
        self, seqs: np.ndarray, where: Where | None, where_document: WhereDocument | None
    ) -> np.ndarray:
        with self._scanning(where_document) as store, store.read():
            return store.matching_among(seqs, where, where_document)

    def _exact_or_callback(
        self, col: CollectionRow, index: VectorIndex, q: np.ndarray, k: int, matches: _Matches
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Exact search over the matches, or HNSW with a filter callback when they are many."""
        cand = matches.seqs
        if len(cand) <= max(EXACT_LIMIT, k):
            return self._exact(col, index, q, k, cand)
        if matches.allowed is None:
            matches.allowed = set(cand.tolist())
        ef = int(col.configuration["hnsw"]["ef_search"]) * FILTERED_EF_FACTOR
        found = index.knn(q, k, matches.allowed, ef=ef)
        if found is None:
            return self._exact(col, index, q, k, cand)
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

    @staticmethod
    def _filter_key(
        col: CollectionRow, index: VectorIndex, ids: Any, where: Any, where_document: Any
    ) -> tuple[str, int, bytes]:
        return (
            col.id,
            index.lsn,
            orjson.dumps([ids, where, where_document], option=orjson.OPT_SORT_KEYS),
        )

    def _candidates(
        self,
        col: CollectionRow,
        index: VectorIndex,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
    ) -> _Matches:
        """Matching seqs, from the cache when this filter ran on this version before.

        The key includes the index's lsn, so any write, from any process, retires it.
        """

        def compute() -> np.ndarray:
            with self._scanning(where_document) as store, store.read():
                return store.candidate_seqs(col.coll, ids, where, where_document, index.universe())

        key = self._filter_key(col, index, ids, where, where_document)
        return self._cached_matches(col, index, key[2], compute)

    def _cached_matches(
        self, col: CollectionRow, index: VectorIndex, key: bytes, compute: Any
    ) -> _Matches:
        """The cache entry of filter ``key`` on the index's version, ``compute()``d once."""
        full = (col.id, index.lsn, key)
        cached = self._filter_cache.get(full)
        if cached is not None:
            self._filter_cache.move_to_end(full)
            return cached
        entry = self._filter_cache[full] = _Matches(compute())
        while len(self._filter_cache) > FILTER_CACHE_SIZE:
            self._filter_cache.popitem(last=False)
        return entry

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


class _Matches:
    """The records one filter matches on one version of a collection, and what queries
    with that filter have learnt: the HNSW filter set and how often post-filtering came
    up short."""

    __slots__ = ("allowed", "misses", "seqs", "tries")

    def __init__(self, seqs: np.ndarray) -> None:
        self.seqs = seqs
        self.allowed: set[int] | None = None
        self.tries = self.misses = 0

    def correlated(self) -> bool:
        """Whether post-filtering keeps coming up short for this filter (its matches lie
        away from where queries look), so trying it first only costs time."""
        return self.tries >= POSTFILTER_TRIES and self.misses * 2 > self.tries


class _EarlyIndexing:
    """An index insertion running on a worker thread (see LocalBackend._index_early)."""

    def __init__(self, index: VectorIndex, seqs: np.ndarray, vectors: np.ndarray) -> None:
        self.index, self.seqs = index, seqs
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(index, seqs, vectors), name="tintdb-index", daemon=True
        )
        self._thread.start()

    def _run(self, index: VectorIndex, seqs: np.ndarray, vectors: np.ndarray) -> None:
        try:
            index.upsert(seqs, vectors)
        except BaseException as e:  # reported by finish(); the caller drops the index
            self.error = e

    def join(self) -> None:
        self._thread.join()

    def finish(self, stored: np.ndarray) -> bool:
        """Wait; True if the index now holds exactly the records the store wrote."""
        self.join()
        if self.error is not None:
            log.error("index update failed; it will be rebuilt from the log", exc_info=self.error)
            return False
        return bool(np.array_equal(self.seqs, stored))
