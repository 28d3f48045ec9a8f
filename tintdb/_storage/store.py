"""``Store``: the connection, its lock, and the two ways in: ``read()`` and ``write()``.

One ``Store`` owns one connection (a file in WAL mode, or ``:memory:``). Every change
is made through the ``Tx`` that ``write()`` yields, a ``BEGIN IMMEDIATE`` transaction,
so a failed call leaves nothing behind, and several processes on one file serialise
their writes through SQLite's own lock. The store itself reads (``Catalog``,
``RecordReads``) and keeps the file: its schema on open, checkpoints, freed space.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from .. import _vblocks as vblocks
from .._filter_sql import regexp
from . import schema
from .catalog import Catalog
from .reads import RecordReads
from .schema import DB_FILENAME
from .tx import Tx

__all__ = ["WAL_CHECKPOINT_BYTES", "Store"]

# The WAL is copied into the database file by a thread of its own once it passes this
# size (see Store._after_commit), not by SQLite inside whichever commit crosses its
# line: that commit then also wrote and synced the whole file's changed pages.
WAL_CHECKPOINT_BYTES = 32 << 20

# The page size of a new file (see Store._open_schema).
PAGE_SIZE = 4096

# FULL (the default) syncs the WAL in every commit: a returned write survives a power
# cut. TINTDB_SYNCHRONOUS=NORMAL leaves the sync to the next checkpoint: a returned
# write still survives the process being killed, not the machine losing power, and
# small writes are several times faster (docs/internals.md, "Durability").
SYNCHRONOUS_MODES = ("FULL", "NORMAL")


def synchronous_mode() -> str:
    """The SQLite synchronous mode asked for by ``TINTDB_SYNCHRONOUS`` (FULL if unset)."""
    raw = os.environ.get("TINTDB_SYNCHRONOUS", "FULL").strip().upper()
    if raw not in SYNCHRONOUS_MODES:
        raise ValueError(f"TINTDB_SYNCHRONOUS must be FULL or NORMAL, got {raw!r}")
    return raw


class Store(Catalog, RecordReads):
    """SQLite storage for tenants, databases, collections and records."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is None:
            target = ":memory:"
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            target = str(self.path / DB_FILENAME)
        self.lock = threading.RLock()
        self._conn = self._connect(target)
        self._in_tx = False
        self._tx: Tx | None = None  # the open write, if any
        self._checkpointing: threading.Thread | None = None
        # Each thread's own connection to the file, for one-statement reads while
        # another thread's write holds ``lock`` (see quick_read); closed with the store.
        self._thread_readers = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_conns_lock = threading.Lock()
        self._readers_closed = False
        self._open_schema()

    @staticmethod
    def _connect(target: str) -> sqlite3.Connection:
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=60.0)
        conn.create_function("regexp", 2, regexp, deterministic=True)
        conn.execute("PRAGMA busy_timeout = 60000")
        return conn

    @property
    def in_transaction(self) -> bool:
        """A transaction is open on this connection (its opener holds ``lock``)."""
        return self._in_tx

    @contextlib.contextmanager
    def reader(self) -> Iterator[Store]:
        """This store on a connection of its own, for reads that must not wait for this
        one: a query answered while an index loads under ``lock`` (see _local)."""
        assert self.path is not None, "an in-memory database has one connection"
        other = self._on_connection(self._connect(str(self.path / DB_FILENAME)))
        try:
            yield other
        finally:
            other._conn.close()

    def _on_connection(self, conn: sqlite3.Connection) -> Store:
        """This store reading through ``conn`` (another connection to its file), with a
        lock of its own and no transaction open."""
        other = copy.copy(self)
        other.lock, other._in_tx, other._tx = threading.RLock(), False, None
        other._conn = conn
        return other

    @contextlib.contextmanager
    def quick_read(self) -> Iterator[Store]:
        """A store to read on without waiting for a write: one statement, a snapshot of
        its own, or several in one transaction with ``read()``.

        This one, when its lock is free (or held by this thread); when another thread's
        write holds it, this thread's own connection to the file, on which WAL lets the
        read see the last commit meanwhile (a query used to wait for the whole write:
        55-110 ms a query at p50 during a bulk load, docs/benchmarks.md). An in-memory
        database has one connection: there, the read waits.
        """
        if self.lock.acquire(blocking=False):
            try:
                yield self
            finally:
                self.lock.release()
            return
        if self.path is None:
            with self.lock:
                yield self
            return
        mine: Store | None = getattr(self._thread_readers, "store", None)
        if mine is None:
            conn = self._connect(str(self.path / DB_FILENAME))
            with self._reader_conns_lock:
                if self._readers_closed:
                    conn.close()
                    raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
                self._reader_conns.append(conn)
            mine = self._thread_readers.store = self._on_connection(conn)
        yield mine

    # ------------------------------------------------------------ the file

    def _open_schema(self) -> None:
        c = self._conn
        if self.path is not None:
            # Both must precede the first table, page_size first (auto_vacuum fixes it).
            # 4 KiB pages: a write of scattered records dirties one page per record in
            # each table and index it touches, and every dirty page goes through the
            # WAL and its sync; with 16 KiB pages a delete of 100 records wrote 20 MB
            # (docs/benchmarks.md). Reading vector blocks back costs a little more
            # (24 overflow pages a block instead of 6). Deletes hand pages back to the
            # OS. Existing files keep their page size.
            c.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            c.execute("PRAGMA auto_vacuum = INCREMENTAL")
            c.execute("PRAGMA journal_mode = WAL")
            c.execute(f"PRAGMA synchronous = {synchronous_mode()}")
            c.execute("PRAGMA wal_autocheckpoint = 0")  # see WAL_CHECKPOINT_BYTES
            # The WAL starts over after a checkpoint but keeps its size unless told: it
            # would stay past the line and start a checkpoint after every commit.
            c.execute(f"PRAGMA journal_size_limit = {WAL_CHECKPOINT_BYTES}")
        c.execute("PRAGMA cache_size = -16384")
        version = schema.file_version(c, self.path)
        migrated = 0 < version < schema.SCHEMA_VERSION
        if migrated:
            self._migrate(version)
        schema.create(c)
        if migrated:
            self.reclaim_space()  # the old vector rows' pages

    def _migrate(self, version: int) -> None:
        """Upgrade an older file in place, in one transaction (see schema.MIGRATIONS).
        Another process opening the same file may have done it meanwhile."""
        with self.write() as tx:
            if schema.file_version(self._conn, self.path) == version:
                schema.upgrade(tx, version, self.path)

    def close(self) -> None:
        with self.lock:
            if self._checkpointing is not None:
                self._checkpointing.join()
            with self._reader_conns_lock:
                for conn in self._reader_conns:
                    conn.close()
                self._reader_conns.clear()
                self._readers_closed = True
            self._conn.close()

    def start_checkpoint(self) -> threading.Thread | None:
        """Copy the WAL into the database file on a thread of its own, now.

        Closing the last connection checkpoints the WAL, which after a day of writes is
        most of close(). Started before the index snapshots are written, it runs beside
        them, and the close finds little left to copy. PASSIVE: it never blocks a
        writer, and what it cannot copy now is copied at close as before.
        """
        if self.path is None:
            return None
        db_file = str(self.path / DB_FILENAME)

        def checkpoint() -> None:
            with contextlib.suppress(sqlite3.Error):
                conn = sqlite3.connect(db_file, timeout=0.1)
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                finally:
                    conn.close()

        thread = threading.Thread(target=checkpoint, name="tintdb-checkpoint", daemon=True)
        thread.start()
        return thread

    def _after_commit(self) -> None:
        """Start a checkpoint behind the writes once the WAL has grown past its line.

        Each commit still syncs the WAL (unless TINTDB_SYNCHRONOUS=NORMAL): only the
        copy into the database file moves off the caller's path. PASSIVE, so it never waits for or
        blocks a writer; a commit finding one still running leaves it be.
        """
        if self.path is None or (self._checkpointing and self._checkpointing.is_alive()):
            return
        try:
            size = os.path.getsize(self.path / (DB_FILENAME + "-wal"))
        except OSError:
            return
        if size > WAL_CHECKPOINT_BYTES:
            self._checkpointing = self.start_checkpoint()

    # ------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        """One atomic write: everything done through the yielded ``Tx`` commits together
        or not at all. Inside an open write, the same ``Tx`` again."""
        with self.lock:
            if self._tx is not None:
                yield self._tx
                return
            if self._in_tx:
                raise RuntimeError("Store.write() inside Store.read(): open the write first")
            self._conn.execute("BEGIN IMMEDIATE")
            tx = self._tx = Tx(self._conn, self.lock)
            self._in_tx = True
            try:
                yield tx
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
                self._after_commit()
            finally:
                tx.end()
                self._in_tx, self._tx = False, None

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for multi-statement reads."""
        with self.lock:
            if self._in_tx:
                yield self._conn
                return
            self._conn.execute("BEGIN")
            self._in_tx = True
            try:
                yield self._conn
            finally:
                self._in_tx = False
                self._conn.execute("COMMIT")

    # ------------------------------------------------------------ space

    def reclaim_space(self, *, full: bool = False) -> None:
        """Give freed pages back to the file system.

        Called after bulk deletes, outside any transaction. Deletes only mark pages
        free; this truncates the file (incrementally, cheap) when a good share of it is
        free, or rewrites it entirely with ``full=True``.
        """
        if self.path is None:
            return
        with self.lock:
            c = self._conn
            if full:
                self._compact_blocks()
                # FTS5 keeps deleted documents' postings until its segments are merged.
                c.execute("INSERT INTO docs(docs) VALUES ('optimize')")
                c.execute("VACUUM")
            else:
                # Merging FTS5 segments drops deleted documents' postings.
                c.execute("INSERT INTO docs(docs) VALUES ('optimize')")
                free = c.execute("PRAGMA freelist_count").fetchone()[0]
                total = c.execute("PRAGMA page_count").fetchone()[0]
                if free > 256 and free * 4 > total:
                    # execute() steps this pragma once (one page); executescript runs it
                    # to completion. No transaction is open here, so nothing is committed.
                    c.executescript("PRAGMA incremental_vacuum;")
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _compact_blocks(self) -> None:
        """Rewrite every vector block that holds dead slots without them. A delete only
        marks its slot dead while the block is at most half dead (see blocks.drop_vectors),
        so the bytes of up to half a block stay until this runs. A few hundred blocks
        per write, each read again inside it (another process may have changed it
        since): a block is rewritten whole or not at all, and a writer never waits for
        long."""
        keys = self._conn.execute(
            "SELECT coll, blk FROM vblocks WHERE instr(slots, ?) > 0 ORDER BY coll, blk",
            (bytes([vblocks.DEAD]),),
        ).fetchall()
        by_coll: dict[int, list[int]] = {}
        for coll, blk in keys:
            by_coll.setdefault(coll, []).append(blk)
        for coll, blks in by_coll.items():
            for i in range(0, len(blks), 256):
                with self.write() as tx:
                    tx.compact_blocks(coll, blks[i : i + 256])
