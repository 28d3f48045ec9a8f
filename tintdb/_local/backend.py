"""``LocalBackend``: the Backend that runs in this process, on SQLite plus a vector index.

It keeps one rule: SQLite is the truth and every index is caught up with the change
log before it answers (``IndexKeeper.current``). Writes commit to SQLite first and only
then touch the in-memory index, so a crash between the two loses nothing: the next
``current`` (in this process, another one, or after a restart) replays the log.

A little over 500 lines because it is every Backend method of the embedded engine, each
write's rules (dimension, ids taken, metadata merge) beside the one
``_write`` they go through; reads live in ``reads``, indexes in ``indexes``, plans in
``planner``. What would split off next: the catalog methods (tenants, databases,
collections, fork), which only pass through to the store's ``Tx``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson

from .. import __version__, _schema
from .._conditions import condition_tree
from .._index import IndexDamaged
from .._storage import OP_DELETE, OP_SET, OP_TOUCH, CollectionRow, Store, Tx
from .._validation import merge_metadata, strip_none
from ..config import Settings
from ..errors import (
    IDAlreadyExistsError,
    InvalidArgumentError,
)
from ..types import (
    CollectionModel,
    GetResult,
    IndexingStatus,
    Metadata,
    QueryResult,
    Where,
    WhereDocument,
)
from .indexes import IndexKeeper
from .reads import Reads

__all__ = ["LocalBackend"]

log = logging.getLogger("tintdb")

T = TypeVar("T")


def _stored_configuration(col: CollectionRow) -> dict[str, Any]:
    """The configuration column as written: Chroma's sections plus the declared schema."""
    if col.declared_schema is None:
        return dict(col.configuration)
    return {**col.configuration, "schema": col.declared_schema}


class LocalBackend:
    """SQLite + HNSW in this process. ``path=None`` keeps everything in memory."""

    def __init__(self, path: str | Path | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.path = None if path is None else Path(path)
        self.store = Store(self.path)
        self.keeper = IndexKeeper(self.store, self.path)
        self.reads = Reads(self.store, self.keeper)
        # Per collection (coll), the (metadata key, value type) pairs known to be stored
        # in collection_keys; loaded on a collection's first write here.
        self._value_types: dict[int, set[tuple[str, str]]] = {}
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
        (see IndexKeeper.close), then release the files."""
        if self._closed:
            return
        self.keeper.stop()  # no more loads or rebuilds behind the calls
        with self.store.lock:
            self.reads.filters.clear()
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
            with self.store.write() as tx:
                tx.reset()
            self.store.reclaim_space()
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
        with self.store.write() as tx:
            tx.create_tenant(name)

    def get_tenant(self, name: str) -> dict[str, Any]:
        return self.store.get_tenant(name)

    def create_database(self, name: str, tenant: str) -> None:
        with self.store.write() as tx:
            tx.create_database(name, tenant)

    def get_database(self, name: str, tenant: str) -> dict[str, Any]:
        return self.store.get_database(name, tenant)

    def list_databases(
        self, tenant: str, limit: int | None = None, offset: int | None = None
    ) -> list[dict[str, Any]]:
        return self.store.list_databases(tenant, limit, offset)

    def delete_database(self, name: str, tenant: str) -> None:
        with self.store.lock:
            with self.store.write() as tx:
                dropped = tx.delete_database(name, tenant)
            for cid in dropped:
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
        with self.store.write() as tx:
            col, _ = tx.create_collection(name, metadata, resolved, get_or_create, tenant, database)
        return self._shown(col)

    def get_collection(self, name: str, tenant: str, database: str) -> CollectionModel:
        with self.store.quick_read() as store:  # not waiting for a write on another thread
            return self._shown(store.collection_by_name(name, tenant, database))

    def get_collection_by_id(self, collection_id: str) -> CollectionModel:
        # What every request of `tintdb run` on a collection starts with.
        with self.store.quick_read() as store:
            return self._shown(store.collection_by_id(collection_id))

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
            with self.store.write() as tx:
                config = None
                if new_configuration is not None:
                    current = _stored_configuration(tx.collection_by_id(collection_id))
                    config = _schema.apply_update(current, new_configuration)
                col = tx.modify_collection(collection_id, new_name, new_metadata, config)
            if config is not None:
                self.keeper.set_params(collection_id, col.configuration["hnsw"])
        return self._shown(col)

    def delete_collection(self, name: str, tenant: str, database: str) -> None:
        with self.store.lock:
            with self.store.write() as tx:
                col = tx.delete_collection(name, tenant, database)
            self.store.reclaim_space()
            self.keeper.drop(col.id)
            self._value_types.pop(col.coll, None)

    def fork(self, collection_id: str, new_name: str) -> CollectionModel:
        """A copy of the collection under ``new_name`` (see Tx.fork_collection); its
        vector index is the source's graph with its labels shifted, not a rebuild."""
        with self.store.lock:
            with self.store.write() as tx:
                col = tx.collection_by_id(collection_id)
                index = None if col.dimension is None else self.keeper.current(col)
                forked, shift = tx.fork_collection(col, new_name)
            if index is not None:
                self.keeper.adopt_fork(forked, index, shift)
        return forked

    def fork_count(self, collection_id: str) -> int:
        return self.store.fork_count(self.store.collection_by_id(collection_id))

    def indexing_status(self, collection_id: str) -> IndexingStatus:
        col = self.store.collection_by_id(collection_id)
        index = None if col.dimension is None else self.keeper.current(col)
        if index is None:
            return IndexingStatus.of(0, 0)
        total = len(index)  # first: it makes the changes still in the index's inbox
        waiting = index.pending
        return IndexingStatus.of(total - waiting, waiting)

    # ------------------------------------------------------------ records: writes

    def _note_value_types(
        self, tx: Tx, col: CollectionRow, metadatas: list[Metadata | None] | None
    ) -> set[tuple[str, str]]:
        """Inside a write: store the (key, value type) pairs of ``metadatas`` that the
        collection has not used before (its schema's discovered keys). Returns them; the
        caller adds them to ``_value_types`` once the write has committed."""
        known = self._value_types.get(col.coll)
        if known is None:
            known = self._value_types[col.coll] = set(tx.value_types(col.coll))
        if not metadatas:
            return set()
        new = _schema.metadata_value_types(metadatas) - known
        if new:
            tx.add_value_types(col.coll, sorted(new))
        return new

    @contextlib.contextmanager
    def _write(self, collection_id: str) -> Iterator[_Change]:
        """The one path of every record mutation.

        Under the store lock, in one ``BEGIN IMMEDIATE`` transaction: the collection is
        read, the call changes its records and says what it changed (``_Change``), and
        the change is logged (``ops``) with the metadata value types it brought. Once
        committed, the index keeper applies it to the in-memory index (new vectors go
        to its tail, and into the graph behind the call). A failure anywhere before the
        commit rolls everything back; the index is not touched before the commit.
        """
        with self.store.lock, contextlib.ExitStack() as flight:
            with self.store.write() as tx:
                change = _Change(tx, tx.collection_by_id(collection_id))
                yield change
                if change.kind is not None:
                    col, seqs = change.col, change.seqs
                    if change.kind == OP_TOUCH:
                        change.lsn = tx.touch(col)
                    else:
                        assert seqs is not None
                        change.lsn = tx.log(col, change.kind, seqs)
                    if change.kind != OP_DELETE:
                        change.seen = self._note_value_types(tx, col, change.metadatas)
                    # From the commit until the index has it (see keeper.committing).
                    flight.enter_context(self.keeper.committing(col.id, change.prev, change.lsn))
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
        else:
            self.keeper.after_write(col, change.prev, lsn, seqs, change.vectors, None)

    def _open_vector_write(
        self, tx: Tx, col: CollectionRow, ids: list[str], embeddings: np.ndarray
    ) -> dict[str, tuple[int, bytes | None, str | None]]:
        """In an open write: which of ``ids`` exist; the first vectors written fix the
        collection's dimension (and start its index, see IndexKeeper.start_empty)."""
        tx.set_dimension(col, embeddings.shape[1])
        self.keeper.start_empty(col, embeddings.shape[1])
        return tx.existing(col.coll, ids)

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
            col, tx = change.col, change.tx
            taken = self._open_vector_write(tx, col, ids, embeddings)
            if taken:
                shown = ", ".join(sorted(taken)[:10]) + (" ..." if len(taken) > 10 else "")
                raise IDAlreadyExistsError(
                    f"{len(taken)} of the ids already exist in collection {col.name!r}: "
                    f"{shown}. Nothing was added; use upsert() to overwrite."
                )
            mds = None if metadatas is None else [strip_none(m) for m in metadatas]
            seqs = tx.insert(col.coll, ids, embeddings, mds, documents, uris)
            change.set_vectors(seqs, embeddings, mds)

    def _apply_update(
        self,
        tx: Tx,
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
                stored = [orjson.loads(raw) if (raw := found[ids[i]][1]) else None for i in change]
                merged_rows = [
                    merge_metadata(old, metadatas[i] or {})
                    for old, i in zip(stored, change, strict=True)
                ]
                tx.update_rows(
                    col.coll,
                    [found[ids[i]][0] for i in change],
                    None,
                    merged_rows,
                    None,
                    None,
                    previous=stored,
                )
        tx.update_rows(
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
            col, tx = change.col, change.tx
            if embeddings is not None and col.dimension is not None:
                tx.set_dimension(col, embeddings.shape[1])
            found = tx.existing(col.coll, ids)
            rows = [i for i, x in enumerate(ids) if x in found]
            if not rows:
                return
            seqs = self._apply_update(
                tx, col, found, ids, rows, embeddings, metadatas, documents, uris
            )
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
            col, tx = change.col, change.tx
            found = self._open_vector_write(tx, col, ids, embeddings)
            old = [i for i, x in enumerate(ids) if x in found]
            new = [i for i, x in enumerate(ids) if x not in found]
            parts, vec_parts = [], []
            if old:
                parts.append(
                    self._apply_update(
                        tx, col, found, ids, old, embeddings, metadatas, documents, uris
                    )
                )
                vec_parts.append(embeddings[old])
            if new:
                parts.append(
                    tx.insert(
                        col.coll,
                        [ids[i] for i in new],
                        embeddings[new],
                        None if metadatas is None else [strip_none(metadatas[i]) for i in new],
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
            coll, tx = change.col.coll, change.tx
            cond = condition_tree(where, where_document)  # the filter, read once
            seqs = tx.candidate_seqs(coll, ids, cond, None)
            if seqs is None:  # a filter of negations alone: one statement
                seqs = tx.matching_seqs(coll, ids, cond, limit)
            elif limit is not None:
                seqs = seqs[:limit]
            if len(seqs) == 0:
                return 0
            tx.delete_rows(coll, seqs)
            change.delete(seqs)
        return len(seqs)

    # ------------------------------------------------------------ records: reads

    def count(self, collection_id: str) -> int:
        return self.reads.count(collection_id)

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
        args = (collection_id, ids, where, where_document, limit, offset, include)
        return _once_more_if_damaged(lambda: self.reads.get(*args))

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
        args = (collection_id, query_embeddings, n_results, ids, where, where_document, include)
        return _once_more_if_damaged(lambda: self.reads.query(*args))

    def search(
        self, collection_id: str, searches: list[dict[str, Any]], read_level: str = ""
    ) -> dict[str, Any]:
        """A batch of Search API payloads (see tintdb._search). Every read level reads
        every committed write: there is no unindexed log to skip here."""
        from .._search.local import search

        return _once_more_if_damaged(lambda: search(self.reads, collection_id, searches))


def _once_more_if_damaged(read: Callable[[], T]) -> T:
    """A read, asked again if it met an index that could not take a write: that index
    answers lsn -1 from then on, so the second asking finds it rebuilt."""
    try:
        return read()
    except IndexDamaged:
        log.warning("an index could not take a write; it is rebuilt from the log")
        return read()


class _Change:
    """What one write call changed, said by the call inside its transaction (see
    LocalBackend._write): the kind of change, its seqs, and the vectors it set. ``tx``
    is the open write the call changes rows through."""

    __slots__ = (
        "col",
        "kind",
        "lsn",
        "metadatas",
        "prev",
        "seen",
        "seqs",
        "tx",
        "vectors",
    )

    def __init__(self, tx: Tx, col: CollectionRow) -> None:
        self.tx = tx
        self.col = col
        self.prev = col.last_lsn  # the collection's version before this write
        self.kind: int | None = None  # OP_SET, OP_DELETE, OP_TOUCH; None: nothing changed
        self.seqs: np.ndarray | None = None
        self.vectors: np.ndarray | None = None
        self.metadatas: list[Metadata | None] | None = None
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
