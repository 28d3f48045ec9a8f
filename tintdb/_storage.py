"""The SQLite layer: the single source of truth.

One ``Store`` owns one connection (a file in WAL mode, or ``:memory:``). Every public
write of tintdb is one call to ``Store.write()``, a ``BEGIN IMMEDIATE`` transaction,
so a failed call leaves nothing behind, and several processes on one file serialise
their writes through SQLite's own lock.

Alongside the records, each write appends one row to ``ops``, the change log that the
vector index replays (see ``_local``).

Its size (over 1,500 lines) is a debt, not a design: the schema and its migrations,
the catalog, the change log and the filtered reads still share the class. The vector
block codec is out (``_vblocks``), the migrations are named steps (``MIGRATIONS``), and
the row-level methods refuse to run outside ``write()`` (``_inside_write``); the rest
is to follow.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np
import orjson

from . import _vblocks as vblocks
from ._filters import (
    KIND_LIST_OFFSET,
    compile_record_test,
    compile_where,
    compile_where_document,
    evaluate_sets,
    regexp,
    sorted_unique,
    text_list,
    value_kind,
)
from ._validation import check_dimension
from ._vblocks import BLOCK_SHIFT, block_runs
from .config import DEFAULT_DATABASE, DEFAULT_DATABASE_ID, DEFAULT_TENANT
from .errors import (
    InvalidArgumentError,
    NotFoundError,
    UniqueConstraintError,
)
from .types import CollectionModel

__all__ = ["OP_DELETE", "OP_SET", "OP_TOUCH", "CollectionRow", "Store"]

# The kinds of change in the log: vectors set, records deleted, and records changed
# without their vectors (metadata, documents or uris only). A touch carries no seqs, so
# the index has nothing to replay, but its lsn still marks a new version of the records.
OP_SET, OP_DELETE, OP_TOUCH = 1, 2, 3
SCHEMA_VERSION = 4
DB_FILENAME = "tintdb.sqlite3"

# Vectors are stored in blocks: one row per collection and run of 2**BLOCK_SHIFT seqs,
# holding the slots present (seq % 64, ascending, one byte each) and their float32
# vectors in that order. Reading vectors back in blocks is several times faster than at
# one row per vector (docs/benchmarks.md), which is what lets the index snapshot leave the
# vectors out (stored once, in SQLite) and still reopen quickly.
_VBLOCKS_TABLE = (
    "CREATE TABLE IF NOT EXISTS vblocks(coll INTEGER NOT NULL, blk INTEGER NOT NULL, "
    "slots BLOB NOT NULL, data BLOB NOT NULL, PRIMARY KEY(coll, blk))"
)
# Changed vectors of existing records are written into their block in place, and a
# deleted record's slot is marked dead in place (Python 3.11's incremental blob I/O);
# without it, the block is rewritten. Tests switch it.
IN_PLACE_UPDATES = hasattr(sqlite3.Connection, "blobopen")
# Blocks read per statement when looking up scattered seqs.
_BLOCKS_PER_READ = 256
# How a sparse vector shows in a record's stored metadata JSON (orjson writes it compactly).
_SPARSE_TAG = b'"#type":"sparse_vector"'
# The WAL is copied into the database file by a thread of its own once it passes this
# size (see Store._after_commit), not by SQLite inside whichever commit crosses its
# line: that commit then also wrote and synced the whole file's changed pages.
WAL_CHECKPOINT_BYTES = 32 << 20

# The metadata keys a collection's records have used, with each value type seen
# ('string', 'int', 'float', 'bool'; list values count as their elements' type): the
# "discovered" keys of the collection's schema. Only grows, as in Chroma.
_KEYS_TABLE = (
    "CREATE TABLE IF NOT EXISTS collection_keys(coll INTEGER NOT NULL, key TEXT NOT NULL, "
    "vtype TEXT NOT NULL, PRIMARY KEY(coll, key, vtype)) WITHOUT ROWID"
)
# Fills collection_keys from the metadata already stored, for a file written before it
# existed. meta keeps ints and floats in one kind; SQLite's typeof() tells them apart.
_KEYS_BACKFILL = (
    "INSERT OR IGNORE INTO collection_keys(coll, key, vtype) SELECT DISTINCT coll, key, "
    "CASE WHEN kind IN (0, 3) THEN 'string' WHEN kind IN (2, 5) THEN 'bool' "
    "WHEN typeof(v) = 'integer' THEN 'int' ELSE 'float' END FROM meta"
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tenants(name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS databases(
    id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant TEXT NOT NULL, UNIQUE(tenant, name));
CREATE TABLE IF NOT EXISTS collections(
    coll INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    database_id TEXT NOT NULL,
    metadata BLOB,
    configuration BLOB NOT NULL,
    dimension INTEGER,
    last_lsn INTEGER NOT NULL DEFAULT 0,
    log_floor INTEGER NOT NULL DEFAULT 0,
    -- Kept by every write in its own transaction: count() reads it instead of a pass.
    n_records INTEGER NOT NULL DEFAULT 0,
    UNIQUE(database_id, name));
CREATE TABLE IF NOT EXISTS records(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    coll INTEGER NOT NULL,
    id TEXT NOT NULL,
    document TEXT,
    uri TEXT,
    metadata BLOB);
-- Vectors apart from the rest: every query result and get() reads records, which stay
-- small enough to sit in SQLite's cache; the large vectors are read in bulk, rarely.
{_VBLOCKS_TABLE};
CREATE UNIQUE INDEX IF NOT EXISTS records_by_id ON records(coll, id);
CREATE INDEX IF NOT EXISTS records_by_coll ON records(coll, seq);
CREATE TABLE IF NOT EXISTS meta(
    coll INTEGER NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, kind INTEGER NOT NULL, v);
CREATE INDEX IF NOT EXISTS meta_lookup ON meta(coll, key, kind, v, seq);
CREATE INDEX IF NOT EXISTS meta_by_seq ON meta(seq);
CREATE VIRTUAL TABLE IF NOT EXISTS docs USING fts5(
    document, content='records', content_rowid='seq', tokenize='trigram case_sensitive 1');
-- Inserts reach the FTS index in bulk from Store.insert (a per-row trigger cost more);
-- schema 1 files had that trigger.
DROP TRIGGER IF EXISTS docs_insert;
CREATE TRIGGER IF NOT EXISTS docs_delete AFTER DELETE ON records
WHEN old.document IS NOT NULL BEGIN
    INSERT INTO docs(docs, rowid, document) VALUES ('delete', old.seq, old.document);
END;
CREATE TRIGGER IF NOT EXISTS docs_update AFTER UPDATE OF document ON records BEGIN
    INSERT INTO docs(docs, rowid, document)
        SELECT 'delete', old.seq, old.document WHERE old.document IS NOT NULL;
    INSERT INTO docs(rowid, document)
        SELECT new.seq, new.document WHERE new.document IS NOT NULL;
END;
{_KEYS_TABLE};
-- Sparse vectors (metadata values), an inverted index: one posting per (metadata key of
-- a collection, dimension, record). A search reads only its query's dimensions.
CREATE TABLE IF NOT EXISTS sparse_keys(
    slot INTEGER PRIMARY KEY, coll INTEGER NOT NULL, key TEXT NOT NULL, UNIQUE(coll, key));
CREATE TABLE IF NOT EXISTS sparse(
    slot INTEGER NOT NULL, dim INTEGER NOT NULL, seq INTEGER NOT NULL, v REAL NOT NULL,
    PRIMARY KEY(slot, dim, seq)) WITHOUT ROWID;
-- Which collection each fork was made from (Collection.fork), for fork_count.
CREATE TABLE IF NOT EXISTS forks(child INTEGER PRIMARY KEY, parent INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ops(
    lsn INTEGER PRIMARY KEY AUTOINCREMENT,
    coll INTEGER NOT NULL, kind INTEGER NOT NULL, seqs BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS ops_by_coll ON ops(coll, lsn);
"""

_COLLECTION_COLUMNS = (
    "c.coll, c.id, c.name, d.tenant, d.name, c.metadata, c.configuration, c.dimension, "
    "c.last_lsn, c.log_floor"
)


class CollectionRow(CollectionModel):
    """A collection as stored, plus the internal fields the local backend needs.

    ``declared_schema`` is the schema the collection was created with, when not the
    default one (stored under "schema" in the configuration column, and left out of
    ``configuration``, which holds Chroma's three sections). ``schema`` (the wire form,
    with the keys the records use) costs a read and some JSON to build, and most calls
    never look at it: the backend sets ``schema_source`` and it is built on first access.
    """

    coll: int = 0
    last_lsn: int = 0
    log_floor: int = 0
    declared_schema: dict[str, Any] | None = None
    schema_source: Callable[[], dict[str, Any]] | None = None
    _schema: dict[str, Any] | None = None

    @property
    def schema(self) -> dict[str, Any] | None:
        if self._schema is None and self.schema_source is not None:
            self._schema = self.schema_source()
        return self._schema

    @schema.setter
    def schema(self, value: dict[str, Any] | None) -> None:
        self._schema = value


def _loads(blob: bytes | None) -> Any:
    return None if blob is None else orjson.loads(blob)


def _collection(row: Sequence[Any]) -> CollectionRow:
    configuration = _loads(row[6])
    declared = configuration.pop("schema", None)  # kept in the same column; see _schema
    c = CollectionRow(
        id=row[1],
        name=row[2],
        tenant=row[3],
        database=row[4],
        metadata=_loads(row[5]),
        configuration=configuration,
        dimension=row[7],
    )
    c.coll, c.last_lsn, c.log_floor = row[0], row[8], row[9]
    c.declared_schema = declared
    return c


def _id_list(ids: Sequence[str]) -> tuple[str, list[Any]]:
    """Any number of ids as SQL rows through one parameter (no SQLite variable limit),
    each exactly as given, NUL included."""
    return text_list(list(ids))


def _order(ids: Sequence[str] | None) -> str:
    """With ids, look them up by (coll, id) and sort after; the unary + stops SQLite from
    walking the whole collection in seq order instead (far slower for a list of ids)."""
    return "+r.seq" if ids is not None else "r.seq"


def _select_columns(columns: Sequence[str]) -> str:
    """The select list for ``columns`` of records; embeddings (in vector blocks, not in
    records) get a placeholder that ``Store._with_vectors`` fills."""
    return "".join(", NULL" if n == "embedding" else f", r.{n}" for n in columns)


def _by_collection(
    rows: Sequence[tuple[int, int, bytes]],
) -> Iterator[tuple[int, tuple[np.ndarray, np.ndarray]]]:
    """Rows (coll, seq, float32 blob) sorted by coll, as (coll, (seqs, vectors)) runs."""
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i][0] != rows[start][0]:
            run = rows[start:i]
            seqs = np.array([r[1] for r in run], dtype=np.int64)
            vecs = np.frombuffer(b"".join(r[2] for r in run), np.float32).reshape(len(run), -1)
            yield run[0][0], (seqs, vecs)
            start = i


def _joined(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _json_ints(values: Sequence[int] | np.ndarray) -> str:
    return orjson.dumps(np.asarray(values, dtype=np.int64).tolist()).decode()


def complement(universe: np.ndarray, seqs: np.ndarray) -> np.ndarray:
    """The seqs of sorted ``universe`` not in ``seqs``: a pass over the universe, which
    only a filter made of negations alone needs (its answer is most records)."""
    if len(seqs) == 0:
        return universe
    return universe[~np.isin(universe, seqs, kind="table")]


def pack_seqs(seqs: Sequence[int] | np.ndarray) -> bytes:
    return np.asarray(seqs, dtype="<i8").tobytes()


def unpack_seqs(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<i8")


def meta_rows(coll: int, seq: int, md: dict[str, Any] | None) -> list[tuple[Any, ...]]:
    """Rows of the typed metadata index for one record (sparse vectors have their own)."""
    rows: list[tuple[Any, ...]] = []
    for key, value in (md or {}).items():
        if isinstance(value, dict):
            continue
        if isinstance(value, list):
            for item in value:
                kind = KIND_LIST_OFFSET + value_kind(item)
                rows.append((coll, seq, key, kind, int(item) if isinstance(item, bool) else item))
        else:
            kind = value_kind(value)
            rows.append((coll, seq, key, kind, int(value) if isinstance(value, bool) else value))
    return rows


def _same_value(a: Any, b: Any) -> bool:
    """Equal and of the same types (``1``, ``1.0`` and ``True`` are stored apart)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def meta_changes(
    coll: int,
    seqs: Sequence[int],
    before: Sequence[dict[str, Any] | None],
    after: Sequence[dict[str, Any] | None],
) -> tuple[list[tuple[int, str]], list[tuple[Any, ...]]]:
    """What changes in the typed metadata index when records ``seqs`` go from metadata
    ``before`` to ``after``: the (seq, key) whose rows go, and the rows that come. Keys
    whose value stays are left alone: an update of a few keys rewrites only their rows
    (each row sits in its key's part of the index, so fewer pages change)."""
    gone: list[tuple[int, str]] = []
    rows: list[tuple[Any, ...]] = []
    for seq, old, new in zip(seqs, before, after, strict=True):
        old, new = old or {}, new or {}
        for key in old.keys() | new.keys():
            if key in old and key in new and _same_value(old[key], new[key]):
                continue
            if key in old:
                gone.append((seq, key))
            if key in new:
                rows.extend(meta_rows(coll, seq, {key: new[key]}))
    return gone, rows


_F = TypeVar("_F", bound=Callable[..., Any])


def _inside_write(method: _F) -> _F:
    """A row-level method of Store: it changes rows (or relies on a write's lock) and
    so runs only inside ``Store.write()``, never in a transaction of its own."""

    @functools.wraps(method)
    def checked(self: Store, *args: Any, **kwargs: Any) -> Any:
        if not self._writing:
            raise RuntimeError(f"Store.{method.__name__} runs only inside Store.write()")
        return method(self, *args, **kwargs)

    return checked  # type: ignore[return-value]


class Store:
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
        self._writing = False  # inside write(): the row-level methods may run
        self._checkpointing: threading.Thread | None = None
        self._init_schema()

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
        other = copy.copy(self)
        other.lock, other._in_tx, other._writing = threading.RLock(), False, False
        other._conn = self._connect(str(self.path / DB_FILENAME))
        try:
            yield other
        finally:
            other._conn.close()

    # ------------------------------------------------------------ plumbing

    def _init_schema(self) -> None:
        c = self._conn
        if self.path is not None:
            # Both must precede the first table, page_size first (auto_vacuum fixes it):
            # 16 KiB pages: a 384-dimension vector block spans 6 overflow pages, not 12
            # (it reads back faster than with 8 KiB pages), and deletes hand pages back
            # to the OS. Existing files keep
            # their page size.
            c.execute("PRAGMA page_size = 16384")
            c.execute("PRAGMA auto_vacuum = INCREMENTAL")
            c.execute("PRAGMA journal_mode = WAL")
            # NORMAL: a commit reaches the OS before the call returns (it survives the
            # process being killed) and is synced by the next checkpoint; FULL synced
            # every commit (docs/internals.md, "Durability").
            c.execute("PRAGMA synchronous = NORMAL")
            c.execute("PRAGMA wal_autocheckpoint = 0")  # see WAL_CHECKPOINT_BYTES
            # The WAL starts over after a checkpoint but keeps its size unless told: it
            # would stay past the line and start a checkpoint after every commit.
            c.execute(f"PRAGMA journal_size_limit = {WAL_CHECKPOINT_BYTES}")
        c.execute("PRAGMA cache_size = -16384")
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise InvalidArgumentError(
                f"{self.path} was written by a newer tintdb (schema {version}); upgrade tintdb"
            )
        migrated = 0 < version < SCHEMA_VERSION
        if migrated:
            self._migrate(version)
        # A file from before collection_keys gets it filled once, in the script below.
        backfill = (
            version > 0
            and not c.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'collection_keys'"
            ).fetchone()
        )
        seed = (
            f"INSERT OR IGNORE INTO tenants(name) VALUES ('{DEFAULT_TENANT}');"
            "INSERT OR IGNORE INTO databases(id, name, tenant) VALUES "
            f"('{DEFAULT_DATABASE_ID}', '{DEFAULT_DATABASE}', '{DEFAULT_TENANT}');"
        )
        try:
            # executescript commits any open transaction, so the script carries its own.
            c.executescript(
                "BEGIN IMMEDIATE;"
                + _SCHEMA
                + seed
                + (_KEYS_BACKFILL + ";" if backfill else "")
                + f"PRAGMA user_version = {SCHEMA_VERSION};"
                "COMMIT;"
            )
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        if migrated:
            self.reclaim_space()  # the old vector rows' pages

    def _migrate(self, version: int) -> None:
        """Upgrade an older file in place, in one transaction.

        Schema 1 kept vectors inside ``records`` and fed FTS5 from a per-row trigger;
        schema 2 kept one row per vector in ``vectors``. Both become vector blocks.
        Schemas 1 to 3 counted a collection's records at every count(); the count is
        now kept with the collection.
        """
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            if c.execute("PRAGMA user_version").fetchone()[0] == version:  # not done meanwhile
                self._migrate_steps(version)
        except sqlite3.OperationalError as e:
            c.execute("ROLLBACK")
            raise InvalidArgumentError(
                f"{self.path} needs a one-time upgrade from schema {version}, which failed "
                f"(schema 1 needs SQLite 3.35 or newer; this Python has "
                f"{sqlite3.sqlite_version}): {e}"
            ) from e
        except BaseException:
            c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def _migrate_steps(self, version: int) -> None:
        """Run the MIGRATIONS that lead from ``version`` to SCHEMA_VERSION, in order."""
        for source, target, step in MIGRATIONS:
            if source == version:
                step(self)
                version = target
        if version != SCHEMA_VERSION:
            raise InvalidArgumentError(f"no upgrade leads from schema {version}")
        self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self.lock:
            if self._checkpointing is not None:
                self._checkpointing.join()
            self._conn.close()

    def start_checkpoint(self) -> threading.Thread | None:
        """Copy the WAL into the database file on a thread of its own, now.

        Closing the last connection checkpoints the WAL, which after a day of writes is
        most of close(). Started
        before the index snapshots are written, it runs beside them, and the close
        finds little left to copy. PASSIVE: it never blocks a writer, and what it
        cannot copy now is copied at close as before.
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

        Each commit still syncs the WAL (synchronous=FULL): only the copy into the
        database file moves off the caller's path. PASSIVE, so it never waits for or
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

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside commits together or not at all."""
        with self.lock:
            if self._in_tx:
                yield self._conn
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._in_tx = self._writing = True
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
                self._after_commit()
            finally:
                self._in_tx = self._writing = False

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

    # ------------------------------------------------------------ tenants / databases

    def create_tenant(self, name: str) -> None:
        with self.write() as c:
            if c.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                raise UniqueConstraintError(f"Tenant [{name}] already exists")
            c.execute("INSERT INTO tenants(name) VALUES (?)", (name,))

    def get_tenant(self, name: str) -> dict[str, Any]:
        with self.read() as c:
            if not c.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                raise NotFoundError(f"Tenant [{name}] not found")
        return {"name": name}

    def create_database(self, name: str, tenant: str) -> None:
        with self.write() as c:
            self.get_tenant(tenant)
            if c.execute(
                "SELECT 1 FROM databases WHERE tenant = ? AND name = ?", (tenant, name)
            ).fetchone():
                raise UniqueConstraintError(f"Database [{name}] already exists")
            c.execute(
                "INSERT INTO databases(id, name, tenant) VALUES (?, ?, ?)",
                (str(uuid.uuid4()), name, tenant),
            )

    def _database_id(self, c: sqlite3.Connection, name: str, tenant: str) -> str:
        row = c.execute(
            "SELECT id FROM databases WHERE tenant = ? AND name = ?", (tenant, name)
        ).fetchone()
        if row is None:
            self.get_tenant(tenant)
            raise NotFoundError(f"Database [{name}] not found. Are you sure it exists?")
        return str(row[0])

    def get_database(self, name: str, tenant: str) -> dict[str, Any]:
        with self.read() as c:
            return {"id": self._database_id(c, name, tenant), "name": name, "tenant": tenant}

    def list_databases(
        self, tenant: str, limit: int | None, offset: int | None
    ) -> list[dict[str, Any]]:
        with self.read() as c:
            self.get_tenant(tenant)
            rows = c.execute(
                "SELECT id, name, tenant FROM databases WHERE tenant = ? ORDER BY rowid "
                "LIMIT ? OFFSET ?",
                (tenant, -1 if limit is None else limit, offset or 0),
            ).fetchall()
        return [{"id": r[0], "name": r[1], "tenant": r[2]} for r in rows]

    def delete_database(self, name: str, tenant: str) -> list[str]:
        """Delete a database and its collections; returns the deleted collection ids."""
        with self.write() as c:
            db_id = self._database_id(c, name, tenant)
            ids = [
                r[0]
                for r in c.execute(
                    "SELECT id FROM collections WHERE database_id = ?", (db_id,)
                ).fetchall()
            ]
            for cid in ids:
                self._delete_collection_rows(c, self.collection_by_id(cid))
            c.execute("DELETE FROM databases WHERE id = ?", (db_id,))
        return ids

    # ------------------------------------------------------------ collections

    def _select_collection(self, where: str, params: Sequence[Any]) -> CollectionRow | None:
        row = self._conn.execute(
            f"SELECT {_COLLECTION_COLUMNS} FROM collections c "
            f"JOIN databases d ON d.id = c.database_id WHERE {where}",
            params,
        ).fetchone()
        return None if row is None else _collection(row)

    def collection_by_id(self, collection_id: str) -> CollectionRow:
        with self.lock:
            found = self._select_collection("c.id = ?", (collection_id,))
        if found is None:
            raise NotFoundError(f"Collection [{collection_id}] does not exist.")
        return found

    def collection_by_name(self, name: str, tenant: str, database: str) -> CollectionRow:
        with self.read() as c:
            db_id = self._database_id(c, database, tenant)
            found = self._select_collection("c.database_id = ? AND c.name = ?", (db_id, name))
        if found is None:
            raise NotFoundError(f"Collection [{name}] does not exist")
        return found

    def create_collection(
        self,
        name: str,
        metadata: dict[str, Any] | None,
        configuration: dict[str, Any],
        get_or_create: bool,
        tenant: str,
        database: str,
    ) -> tuple[CollectionRow, bool]:
        """Returns the collection and whether it was created by this call."""
        with self.write() as c:
            db_id = self._database_id(c, database, tenant)
            existing = self._select_collection("c.database_id = ? AND c.name = ?", (db_id, name))
            if existing is not None:
                if get_or_create:
                    return existing, False
                raise UniqueConstraintError(f"Collection [{name}] already exists")
            cid = str(uuid.uuid4())
            c.execute(
                "INSERT INTO collections(id, name, database_id, metadata, configuration) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    cid,
                    name,
                    db_id,
                    None if metadata is None else orjson.dumps(metadata),
                    orjson.dumps(configuration),
                ),
            )
            return self.collection_by_id(cid), True

    def list_collections(
        self, limit: int | None, offset: int | None, tenant: str, database: str
    ) -> list[CollectionRow]:
        with self.read() as c:
            db = c.execute(
                "SELECT id FROM databases WHERE tenant = ? AND name = ?", (tenant, database)
            ).fetchone()
            if db is None:
                return []
            rows = c.execute(
                f"SELECT {_COLLECTION_COLUMNS} FROM collections c "
                "JOIN databases d ON d.id = c.database_id WHERE c.database_id = ? "
                "ORDER BY c.coll LIMIT ? OFFSET ?",
                (db[0], -1 if limit is None else limit, offset or 0),
            ).fetchall()
        return [_collection(r) for r in rows]

    def count_collections(self, tenant: str, database: str) -> int:
        with self.read() as c:
            return int(
                c.execute(
                    "SELECT count(*) FROM collections c JOIN databases d ON d.id = c.database_id "
                    "WHERE d.tenant = ? AND d.name = ?",
                    (tenant, database),
                ).fetchone()[0]
            )

    def modify_collection(
        self,
        collection_id: str,
        new_name: str | None,
        new_metadata: dict[str, Any] | None,
        new_configuration: dict[str, Any] | None,
    ) -> CollectionRow:
        with self.write() as c:
            col = self.collection_by_id(collection_id)
            if new_name is not None and new_name != col.name:
                db_id = c.execute(
                    "SELECT database_id FROM collections WHERE id = ?", (collection_id,)
                ).fetchone()[0]
                if self._select_collection("c.database_id = ? AND c.name = ?", (db_id, new_name)):
                    raise UniqueConstraintError(
                        f"Cannot rename collection [{col.name}] to [{new_name}]: "
                        "a collection with that name already exists"
                    )
                c.execute("UPDATE collections SET name = ? WHERE id = ?", (new_name, collection_id))
            if new_metadata is not None:
                c.execute(
                    "UPDATE collections SET metadata = ? WHERE id = ?",
                    (orjson.dumps(new_metadata), collection_id),
                )
            if new_configuration is not None:
                c.execute(
                    "UPDATE collections SET configuration = ? WHERE id = ?",
                    (orjson.dumps(new_configuration), collection_id),
                )
            return self.collection_by_id(collection_id)

    @_inside_write
    def fork_collection(self, col: CollectionRow, new_name: str) -> tuple[CollectionRow, int]:
        """Inside a write: a new collection named ``new_name`` beside ``col`` holding a
        copy of its records, vectors, metadata index, documents' text index and sparse
        postings, all copied by SQL statements (nothing decoded, nothing re-embedded).

        The copies get new seqs, ``seq + shift`` with ``shift`` a multiple of the block
        size past every seq in use, so each vector block is copied byte for byte under a
        new block number. Returns the new collection and ``shift``.
        """
        c = self._conn
        db_id = c.execute(
            "SELECT database_id FROM collections WHERE coll = ?", (col.coll,)
        ).fetchone()[0]
        if self._select_collection("c.database_id = ? AND c.name = ?", (db_id, new_name)):
            raise UniqueConstraintError(f"Collection [{new_name}] already exists")
        cid = str(uuid.uuid4())
        cur = c.execute(
            "INSERT INTO collections(id, name, database_id, metadata, configuration, dimension, "
            "n_records) SELECT ?, ?, database_id, metadata, configuration, dimension, n_records "
            "FROM collections WHERE coll = ?",
            (cid, new_name, col.coll),
        )
        new = int(cur.lastrowid)  # type: ignore[arg-type]
        c.execute("INSERT INTO forks(child, parent) VALUES (?, ?)", (new, col.coll))
        low = c.execute("SELECT min(seq) FROM records WHERE coll = ?", (col.coll,)).fetchone()[0]
        shift = 0
        if low is not None:
            shift = -(-(self.next_seq() - low) // vblocks.BLOCK) * vblocks.BLOCK
            c.execute(
                "INSERT INTO records(seq, coll, id, document, uri, metadata) "
                "SELECT seq + ?, ?, id, document, uri, metadata FROM records WHERE coll = ? "
                "ORDER BY seq",
                (shift, new, col.coll),
            )
            c.execute(
                "INSERT INTO vblocks(coll, blk, slots, data) "
                "SELECT ?, blk + ?, slots, data FROM vblocks WHERE coll = ?",
                (new, shift >> BLOCK_SHIFT, col.coll),
            )
            c.execute(
                "INSERT INTO meta(coll, seq, key, kind, v) "
                "SELECT ?, seq + ?, key, kind, v FROM meta WHERE coll = ?",
                (new, shift, col.coll),
            )
            c.execute(
                "INSERT INTO docs(rowid, document) SELECT seq, document FROM records "
                "WHERE coll = ? AND document IS NOT NULL",
                (new,),
            )
            c.execute(
                "INSERT INTO collection_keys(coll, key, vtype) "
                "SELECT ?, key, vtype FROM collection_keys WHERE coll = ?",
                (new, col.coll),
            )
            for slot, key in c.execute(
                "SELECT slot, key FROM sparse_keys WHERE coll = ?", (col.coll,)
            ).fetchall():
                copy = self._sparse_slot(new, key, create=True)
                c.execute(
                    "INSERT INTO sparse(slot, dim, seq, v) "
                    "SELECT ?, dim, seq + ?, v FROM sparse WHERE slot = ?",
                    (copy, shift, slot),
                )
        forked = self.collection_by_id(cid)
        self.touch(forked)  # its first version: an lsn of its own for the index to carry
        return self.collection_by_id(cid), shift

    def fork_count(self, col: CollectionRow) -> int:
        """Collections that exist and were forked from ``col``, or from its forks."""
        with self.read() as c:
            return int(
                c.execute(
                    "WITH RECURSIVE made(coll) AS (SELECT child FROM forks WHERE parent = ? "
                    "UNION SELECT f.child FROM forks f JOIN made ON f.parent = made.coll) "
                    "SELECT count(*) FROM made JOIN collections USING (coll)",
                    (col.coll,),
                ).fetchone()[0]
            )

    def value_types(self, coll: int) -> list[tuple[str, str]]:
        """The (metadata key, value type) pairs the records of ``coll`` have used."""
        with self.read() as c:
            rows = c.execute(
                "SELECT key, vtype FROM collection_keys WHERE coll = ?", (coll,)
            ).fetchall()
        return [(key, vtype) for key, vtype in rows]

    def add_value_types(self, coll: int, pairs: Sequence[tuple[str, str]]) -> None:
        """Remember newly seen (key, value type) pairs (within the caller's write)."""
        with self.write() as c:
            c.executemany(
                "INSERT OR IGNORE INTO collection_keys(coll, key, vtype) VALUES (?, ?, ?)",
                [(coll, key, vtype) for key, vtype in pairs],
            )

    def _delete_collection_rows(self, c: sqlite3.Connection, col: CollectionRow) -> None:
        c.execute("DELETE FROM vblocks WHERE coll = ?", (col.coll,))
        c.execute("DELETE FROM records WHERE coll = ?", (col.coll,))
        c.execute("DELETE FROM meta WHERE coll = ?", (col.coll,))
        c.execute(
            "DELETE FROM sparse WHERE slot IN (SELECT slot FROM sparse_keys WHERE coll = ?)",
            (col.coll,),
        )
        c.execute("DELETE FROM sparse_keys WHERE coll = ?", (col.coll,))
        c.execute("DELETE FROM collection_keys WHERE coll = ?", (col.coll,))
        c.execute("DELETE FROM ops WHERE coll = ?", (col.coll,))
        c.execute("DELETE FROM collections WHERE coll = ?", (col.coll,))

    def delete_collection(self, name: str, tenant: str, database: str) -> CollectionRow:
        with self.write() as c:
            col = self.collection_by_name(name, tenant, database)
            self._delete_collection_rows(c, col)
        self.reclaim_space()
        return col

    def reset(self) -> None:
        with self.write() as c:
            for table in (
                "records",
                "vblocks",
                "meta",
                "sparse",
                "sparse_keys",
                "forks",
                "collection_keys",
                "ops",
                "collections",
                "databases",
                "tenants",
            ):
                c.execute(f"DELETE FROM {table}")
            c.execute("INSERT INTO docs(docs) VALUES ('delete-all')")
            c.execute("INSERT INTO tenants(name) VALUES (?)", (DEFAULT_TENANT,))
            c.execute(
                "INSERT INTO databases(id, name, tenant) VALUES (?, ?, ?)",
                (DEFAULT_DATABASE_ID, DEFAULT_DATABASE, DEFAULT_TENANT),
            )
        self.reclaim_space()

    # ------------------------------------------------------------ space

    def reclaim_space(self, *, full: bool = False) -> None:
        """Give freed pages back to the file system.

        Called after bulk deletes. Deletes only mark pages free; this truncates the file
        (incrementally, cheap) when a good share of it is free, or rewrites it entirely
        with ``full=True``.
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
        marks its slot dead while the block is at most half dead (see _drop_vectors),
        so the bytes of up to half a block stay until this runs. A few hundred blocks
        per transaction, each read again inside it (another process may have changed
        it since): a block is rewritten whole or not at all, and a writer never waits
        for long."""
        keys = self._conn.execute(
            "SELECT coll, blk FROM vblocks WHERE instr(slots, ?) > 0 ORDER BY coll, blk",
            (bytes([vblocks.DEAD]),),
        ).fetchall()
        by_coll: dict[int, list[int]] = {}
        for coll, blk in keys:
            by_coll.setdefault(coll, []).append(blk)
        for coll, blks in by_coll.items():
            for i in range(0, len(blks), 256):
                with self.write():
                    old = self._blocks(coll, blks[i : i + 256], "slots, data")
                    live = {
                        b: np.frombuffer(v[0], dtype=np.uint8) != vblocks.DEAD
                        for b, v in old.items()
                    }
                    holed = {b: k for b, k in live.items() if k.any() and not k.all()}
                    self._keep_slots(coll, holed, old)
                    self._delete_blocks(coll, [b for b, k in live.items() if not k.any()])

    # ------------------------------------------------------------ records: writes

    @_inside_write
    def set_dimension(self, col: CollectionRow, dim: int) -> None:
        """Fix the dimension on first write; afterwards refuse any other length."""
        if col.dimension is None:
            self._conn.execute(
                "UPDATE collections SET dimension = ? WHERE coll = ?", (dim, col.coll)
            )
            col.dimension = dim
        else:
            check_dimension(col.dimension, dim)

    def existing(
        self, coll: int, ids: Sequence[str]
    ) -> dict[str, tuple[int, bytes | None, str | None]]:
        """id -> (seq, metadata json, document) for the ids that exist."""
        listed, params = _id_list(ids)
        rows = self._conn.execute(
            f"SELECT id, seq, metadata, document FROM records WHERE coll = ? AND id IN ({listed})",
            (coll, *params),
        ).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    @_inside_write
    def next_seq(self) -> int:
        """The seq the next inserted record gets (stable while this write is open)."""
        row = self._conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'records'"
        ).fetchone()
        return (row[0] if row else 0) + 1

    @_inside_write
    def insert(
        self,
        coll: int,
        ids: Sequence[str],
        embeddings: np.ndarray,
        metadatas: Sequence[dict[str, Any] | None] | None,
        documents: Sequence[str | None] | None,
        uris: Sequence[str | None] | None,
    ) -> np.ndarray:
        """Insert new records; returns their seqs (storage order)."""
        c = self._conn
        n = len(ids)
        mds = [md or None for md in metadatas] if metadatas is not None else [None] * n
        docs = documents if documents is not None else [None] * n
        us = uris if uris is not None else [None] * n
        first = self.next_seq()
        c.executemany(
            "INSERT INTO records(coll, id, document, uri, metadata) VALUES (?, ?, ?, ?, ?)",
            (
                (coll, ids[i], docs[i], us[i], None if mds[i] is None else orjson.dumps(mds[i]))
                for i in range(n)
            ),
        )
        last = c.execute("SELECT last_insert_rowid()").fetchone()[0]
        self._add_count(coll, n)
        if last - first + 1 == n:
            seqs = np.arange(first, last + 1, dtype=np.int64)
        else:  # never expected under the write lock; stay correct anyway
            found = self.existing(coll, ids)
            seqs = np.array([found[i][0] for i in ids], dtype=np.int64)
        c.execute(
            "INSERT INTO docs(rowid, document) SELECT seq, document FROM records "
            "WHERE seq IN (SELECT value FROM json_each(?)) AND document IS NOT NULL",
            (orjson.dumps(seqs.tolist()).decode(),),
        )
        self._put_vectors(coll, seqs, embeddings)
        c.executemany(
            "INSERT INTO meta(coll, seq, key, kind, v) VALUES (?, ?, ?, ?, ?)",
            (r for i in range(n) for r in meta_rows(coll, int(seqs[i]), mds[i])),
        )
        self._put_sparse(coll, seqs.tolist(), mds)
        return seqs

    @_inside_write
    def update_rows(
        self,
        coll: int,
        seqs: Sequence[int],
        embeddings: np.ndarray | None,
        metadatas: Sequence[dict[str, Any] | None] | None,
        documents: Sequence[str | None] | None,
        uris: Sequence[str | None] | None,
        previous: Sequence[dict[str, Any] | None] | None = None,
    ) -> None:
        """Overwrite the given fields of existing rows (metadatas already merged;
        ``previous``, if given, the stored metadatas they replace: only the keys that
        changed are rewritten in the metadata index)."""
        c = self._conn
        if embeddings is not None:
            self._put_vectors(coll, np.asarray(seqs, dtype=np.int64), embeddings)
        if documents is not None:
            c.executemany(
                "UPDATE records SET document = ? WHERE seq = ?",
                ((d, int(s)) for d, s in zip(documents, seqs, strict=False) if d is not None),
            )
        if uris is not None:
            c.executemany(
                "UPDATE records SET uri = ? WHERE seq = ?",
                ((u, int(s)) for u, s in zip(uris, seqs, strict=False) if u is not None),
            )
        if metadatas is not None:
            self._drop_sparse(coll, seqs)
            self._put_sparse(coll, [int(x) for x in seqs], metadatas)
            c.executemany(
                "UPDATE records SET metadata = ? WHERE seq = ?",
                (
                    (None if not md else orjson.dumps(md), int(s))
                    for md, s in zip(metadatas, seqs, strict=False)
                ),
            )
            if previous is not None:
                gone, rows = meta_changes(coll, [int(s) for s in seqs], previous, metadatas)
                c.executemany("DELETE FROM meta WHERE seq = ? AND key = ?", gone)
                c.executemany(
                    "INSERT INTO meta(coll, seq, key, kind, v) VALUES (?, ?, ?, ?, ?)", rows
                )
                return
            c.executemany("DELETE FROM meta WHERE seq = ?", ((int(s),) for s in seqs))
            c.executemany(
                "INSERT INTO meta(coll, seq, key, kind, v) VALUES (?, ?, ?, ?, ?)",
                (
                    r
                    for md, s in zip(metadatas, seqs, strict=False)
                    for r in meta_rows(coll, int(s), md)
                ),
            )

    @_inside_write
    def delete_rows(self, coll: int, seqs: np.ndarray) -> None:
        c = self._conn
        self._drop_sparse(coll, seqs)
        param = _json_ints(seqs)
        gone = c.execute(
            "DELETE FROM records WHERE seq IN (SELECT value FROM json_each(?))", (param,)
        ).rowcount
        self._add_count(coll, -gone)
        c.execute("DELETE FROM meta WHERE seq IN (SELECT value FROM json_each(?))", (param,))
        self._drop_vectors(coll, seqs)

    # ------------------------------------------------------------ sparse postings

    def _sparse_slot(self, coll: int, key: str, *, create: bool) -> int | None:
        row = self._conn.execute(
            "SELECT slot FROM sparse_keys WHERE coll = ? AND key = ?", (coll, key)
        ).fetchone()
        if row is not None or not create:
            return None if row is None else int(row[0])
        cur = self._conn.execute("INSERT INTO sparse_keys(coll, key) VALUES (?, ?)", (coll, key))
        return int(cur.lastrowid)  # type: ignore[arg-type]

    def _put_sparse(
        self, coll: int, seqs: Sequence[int], metadatas: Sequence[dict[str, Any] | None]
    ) -> None:
        """Postings of the sparse vectors (tagged dicts) in ``metadatas[i]`` of ``seqs[i]``."""
        slots: dict[str, int] = {}
        rows: list[tuple[int, int, int, float]] = []
        for seq, md in zip(seqs, metadatas, strict=True):
            for key, value in (md or {}).items():
                if isinstance(value, dict):
                    if key not in slots:
                        slots[key] = self._sparse_slot(coll, key, create=True)  # type: ignore[assignment]
                    slot = slots[key]
                    rows.extend(
                        (slot, d, seq, v)
                        for d, v in zip(value["indices"], value["values"], strict=True)
                    )
        if rows:
            self._conn.executemany(
                "INSERT INTO sparse(slot, dim, seq, v) VALUES (?, ?, ?, ?)", rows
            )

    def _drop_sparse(self, coll: int, seqs: Sequence[int] | np.ndarray) -> None:
        """Remove the postings of ``seqs``, read from their stored metadata (before it
        changes): only the records holding a sparse vector are looked at."""
        if not self._conn.execute(
            "SELECT 1 FROM sparse_keys WHERE coll = ? LIMIT 1", (coll,)
        ).fetchone():
            return
        found = self._conn.execute(
            "SELECT seq, metadata FROM records WHERE seq IN (SELECT value FROM json_each(?)) "
            "AND instr(metadata, ?) > 0",
            (_json_ints(seqs), _SPARSE_TAG),
        ).fetchall()
        slots: dict[str, int | None] = {}
        rows: list[tuple[int, int, int]] = []
        for seq, blob in found:
            for key, value in orjson.loads(blob).items():
                if isinstance(value, dict):
                    if key not in slots:
                        slots[key] = self._sparse_slot(coll, key, create=False)
                    slot = slots[key]
                    if slot is not None:
                        rows.extend((slot, d, seq) for d in value["indices"])
        if rows:
            self._conn.executemany(
                "DELETE FROM sparse WHERE slot = ? AND dim = ? AND seq = ?", rows
            )

    def sparse_postings(
        self, coll: int, key: str, dims: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dims, seqs, values) of every posting of ``key`` on the given dimensions."""
        slot = self._sparse_slot(coll, key, create=False)
        if slot is None or len(dims) == 0:
            empty = np.empty(0, np.int64)
            return empty, empty, np.empty(0, np.float64)
        rows = self._conn.execute(
            "SELECT dim, seq, v FROM sparse WHERE slot = ? AND dim IN "
            "(SELECT value FROM json_each(?))",
            (slot, _json_ints(dims)),
        ).fetchall()
        if not rows:
            empty = np.empty(0, np.int64)
            return empty, empty, np.empty(0, np.float64)
        dim_col, seq_col, v_col = zip(*rows, strict=True)
        return (
            np.array(dim_col, dtype=np.int64),
            np.array(seq_col, dtype=np.int64),
            np.array(v_col, dtype=np.float64),
        )

    def _add_count(self, coll: int, change: int) -> None:
        """Keep the collection's record count, in the transaction of the write."""
        self._conn.execute(
            "UPDATE collections SET n_records = n_records + ? WHERE coll = ?", (change, coll)
        )

    # ------------------------------------------------------------ vector blocks

    def _blocks(self, coll: int, blks: Sequence[int], columns: str) -> dict[int, tuple[Any, ...]]:
        """blk -> the given columns of each block that exists: ``"slots, data"`` to read
        or rewrite one, ``"rowid, slots"`` for blob I/O into it."""
        out: dict[int, tuple[Any, ...]] = {}
        for i in range(0, len(blks), _BLOCKS_PER_READ):
            for blk, *values in self._conn.execute(
                f"SELECT blk, {columns} FROM vblocks WHERE coll = ? AND blk IN "
                "(SELECT value FROM json_each(?))",
                (coll, _json_ints(blks[i : i + _BLOCKS_PER_READ])),
            ):
                out[blk] = tuple(values)
        return out

    def _put_vectors(self, coll: int, seqs: np.ndarray, vectors: np.ndarray) -> None:
        """Set the vectors of ``seqs`` (new or existing), rewriting each touched block once."""
        if len(seqs) == 0:
            return
        order = np.argsort(seqs, kind="stable")
        seqs = np.asarray(seqs, dtype=np.int64)[order]
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)[order]
        runs = block_runs(seqs)
        if IN_PLACE_UPDATES:
            runs = self._overwrite_in_place(coll, seqs, vectors, runs)
            if not runs:
                return
        old = self._blocks(coll, [blk for blk, _, _ in runs], "slots, data")
        rows = []
        for blk, a, b in runs:
            before = old.get(blk)
            slots, data = vblocks.merged(
                None if before is None else (before[0], before[1]),
                vblocks.slots_of(seqs[a:b]),
                vectors[a:b],
            )
            rows.append((coll, blk, slots, data))
        self._conn.executemany(
            "INSERT OR REPLACE INTO vblocks(coll, blk, slots, data) VALUES (?, ?, ?, ?)", rows
        )

    def _overwrite_in_place(
        self, coll: int, seqs: np.ndarray, vectors: np.ndarray, runs: list[tuple[int, int, int]]
    ) -> list[tuple[int, int, int]]:
        """Write new vectors of seqs a block already holds straight into its bytes.

        A rewritten block is a whole row (about 100 KB at 384 dimensions) in the WAL;
        incremental blob I/O writes only the pages the vector lies on, a fraction of
        that for scattered updates. Returns the runs left for a rewrite (blocks that are
        new or gain slots).
        """
        heads = self._blocks(coll, [blk for blk, _, _ in runs], "rowid, slots")
        width = vectors.shape[1] * 4
        rest = []
        for blk, a, b in runs:
            head = heads.get(blk)
            if head is None:
                rest.append((blk, a, b))
                continue
            at = vblocks.positions(head[1], vblocks.slots_of(seqs[a:b]))
            if at is None:
                rest.append((blk, a, b))  # a slot to add: the row changes length
                continue
            # Connection.blobopen is Python 3.11's; this runs only when IN_PLACE_UPDATES.
            with self._conn.blobopen("vblocks", "data", head[0]) as blob:  # type: ignore[attr-defined,unused-ignore]
                for j, row in zip(at.tolist(), vectors[a:b], strict=True):
                    blob.seek(j * width)
                    blob.write(row.tobytes())  # in seq order: a repeated seq ends last
        return rest

    def _drop_vectors(self, coll: int, seqs: np.ndarray) -> None:
        """Remove the vectors of ``seqs``: a block left empty is deleted; otherwise the
        slots are marked dead in place while at most half the block is dead (seqs are
        never reused, so a dead slot never comes back), else it is rewritten compactly.
        Rewriting a block for each delete put about 100 KB per record into the WAL."""
        if len(seqs) == 0:
            return
        seqs = np.sort(np.asarray(seqs, dtype=np.int64))
        runs = block_runs(seqs)
        heads = self._blocks(coll, [blk for blk, _, _ in runs], "rowid, slots")
        compact: dict[int, np.ndarray] = {}
        gone = []
        for blk, a, b in runs:
            if blk not in heads:
                continue
            rowid, slots = heads[blk]
            drop, live = vblocks.dropped(slots, vblocks.slots_of(seqs[a:b]))
            if not drop.any():
                continue
            if not live.any():
                gone.append(blk)
            elif IN_PLACE_UPDATES and 2 * int(live.sum()) >= len(drop):
                # Python 3.11's Connection.blobopen (IN_PLACE_UPDATES is checked above).
                with self._conn.blobopen("vblocks", "slots", rowid) as blob:  # type: ignore[attr-defined,unused-ignore]
                    for j in np.flatnonzero(drop).tolist():
                        blob.seek(j)
                        blob.write(bytes([vblocks.DEAD]))
            else:
                compact[blk] = live
        if compact:
            self._keep_slots(coll, compact, self._blocks(coll, list(compact), "slots, data"))
        self._delete_blocks(coll, gone)

    def _keep_slots(
        self, coll: int, keep: dict[int, np.ndarray], old: dict[int, tuple[Any, ...]]
    ) -> None:
        """Rewrite each block in ``keep`` with only the slots its mask selects; ``old``
        holds the blocks' current slots and data, read in this transaction."""
        rows = []
        for blk, live in keep.items():
            rows.append((*vblocks.kept(old[blk][0], old[blk][1], live), coll, blk))
        self._conn.executemany(
            "UPDATE vblocks SET slots = ?, data = ? WHERE coll = ? AND blk = ?", rows
        )

    def _delete_blocks(self, coll: int, blks: Sequence[int]) -> None:
        self._conn.execute(
            "DELETE FROM vblocks WHERE coll = ? AND blk IN (SELECT value FROM json_each(?))",
            (coll, _json_ints(blks)),
        )

    @_inside_write
    def log(self, col: CollectionRow, kind: int, seqs: np.ndarray) -> int:
        """Append one change to the log and stamp the collection with its lsn."""
        c = self._conn
        c.execute(
            "INSERT INTO ops(coll, kind, seqs) VALUES (?, ?, ?)", (col.coll, kind, pack_seqs(seqs))
        )
        lsn = int(c.execute("SELECT last_insert_rowid()").fetchone()[0])
        c.execute("UPDATE collections SET last_lsn = ? WHERE coll = ?", (lsn, col.coll))
        return lsn

    @_inside_write
    def touch(self, col: CollectionRow) -> int:
        """Log a change to records that left their vectors alone, so that anything keyed
        on the collection's lsn (the filter cache, here or in another process) sees a
        new version. A touch right after another replaces it: nothing replays them, and
        the log does not grow with metadata-only writes."""
        self._conn.execute(
            "DELETE FROM ops WHERE lsn = ? AND coll = ? AND kind = ?",
            (col.last_lsn, col.coll, OP_TOUCH),
        )
        return self.log(col, OP_TOUCH, np.empty(0, dtype=np.int64))

    # ------------------------------------------------------------ records: reads

    def lsn_state(self, collection_id: str) -> tuple[int, int] | None:
        """(last_lsn, log_floor) of a collection, or None if it is gone."""
        with self.lock:
            row = self._conn.execute(
                "SELECT last_lsn, log_floor FROM collections WHERE id = ?", (collection_id,)
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def ops_since(self, coll: int, lsn: int) -> list[tuple[int, int, np.ndarray]]:
        rows = self._conn.execute(
            "SELECT lsn, kind, seqs FROM ops WHERE coll = ? AND lsn > ? ORDER BY lsn", (coll, lsn)
        ).fetchall()
        return [(int(r[0]), int(r[1]), unpack_seqs(r[2])) for r in rows]

    def prune_log(self, col: CollectionRow, upto: int) -> None:
        """Forget log entries that an on-disk index snapshot already contains."""
        with self.write() as c:
            c.execute("DELETE FROM ops WHERE coll = ? AND lsn <= ?", (col.coll, upto))
            c.execute(
                "UPDATE collections SET log_floor = max(log_floor, ?) WHERE coll = ?",
                (upto, col.coll),
            )

    def vectors(
        self, coll: int, seqs: np.ndarray | None, dim: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(seqs, float32 vectors) for the given seqs (all of the collection if None),
        in seq order; seqs without a vector are left out.

        Blocks are copied into one preallocated array one by one, so loading a large
        collection never holds the blocks and the array at once.
        """
        total = self.count(coll) if seqs is None else len(seqs)
        found = np.empty(total, dtype=np.int64)
        vecs = np.empty((total, dim), dtype=np.float32)
        n = 0
        for part, block in self.vector_chunks(coll, dim, seqs, rows=0):
            if n + len(part) > total:  # more than counted (a writer in between): grow
                total = max(n + len(part), total * 2)
                found = np.resize(found, total)
                vecs = np.resize(vecs, (total, dim))
            found[n : n + len(part)] = part
            vecs[n : n + len(part)] = block
            n += len(part)
        return found[:n], vecs[:n]

    def vector_chunks(
        self, coll: int, dim: int, seqs: np.ndarray | None = None, rows: int = 4096
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(seqs, float32 vectors) in seq order, about ``rows`` records at a time (one
        block at a time with ``rows=0``): the whole collection if ``seqs`` is None."""
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        held = 0
        for part in self._block_parts(coll, seqs):
            if rows <= 0:
                yield part
                continue
            pending.append(part)
            held += len(part[0])
            if held >= rows:
                yield _joined(pending)
                pending, held = [], 0
        if pending:
            yield _joined(pending)

    def _block_parts(
        self, coll: int, seqs: np.ndarray | None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(seqs, vectors) of each block, in seq order, restricted to ``seqs`` if given."""
        if seqs is None:
            # Row by row, not fetchmany: each block's bytes are freed before the next
            # arrives, so they are allocated in the same, cache-warm memory.
            for blk, slots, data in self._conn.execute(
                "SELECT blk, slots, data FROM vblocks WHERE coll = ? ORDER BY blk", (coll,)
            ):
                yield vblocks.live(blk, slots, data)
            return
        wanted = np.unique(np.asarray(seqs, dtype=np.int64))
        runs = block_runs(wanted)
        for i in range(0, len(runs), _BLOCKS_PER_READ):
            chunk = runs[i : i + _BLOCKS_PER_READ]
            got = self._blocks(coll, [blk for blk, _, _ in chunk], "slots, data")
            for blk, a, b in chunk:
                if blk not in got:
                    continue
                have, vecs = vblocks.decode(got[blk][0], got[blk][1])
                hit = np.isin(have, vblocks.slots_of(wanted[a:b]))
                if hit.any():
                    yield (blk << BLOCK_SHIFT) + have[hit].astype(np.int64), vecs[hit]

    def vector_bytes(self, coll: int, seqs: Sequence[int]) -> dict[int, bytes]:
        """seq -> float32 vector bytes, for ``include=["embeddings"]``.

        A query's few winners lie one or two to a block: each is read alone from its
        block's bytes (blob I/O) rather than the whole block decoded for it."""
        wanted = np.unique(np.asarray(seqs, dtype=np.int64))
        if not IN_PLACE_UPDATES or len(wanted) > _BLOCKS_PER_READ:
            return {
                seq: row.tobytes()
                for part, vecs in self._block_parts(coll, wanted)
                for seq, row in zip(part.tolist(), vecs, strict=True)
            }
        by_block: dict[int, list[int]] = {}
        for seq in wanted.tolist():
            by_block.setdefault(seq >> BLOCK_SHIFT, []).append(seq)
        heads = self._blocks(coll, list(by_block), "rowid, slots")
        out: dict[int, bytes] = {}
        for blk, in_block in by_block.items():
            head = heads.get(blk)
            if head is None:
                continue
            rowid, slots = head
            # Python 3.11's Connection.blobopen (IN_PLACE_UPDATES is checked above).
            with self._conn.blobopen("vblocks", "data", rowid, readonly=True) as blob:  # type: ignore[attr-defined,unused-ignore]
                width = len(blob) // len(slots)
                for seq in in_block:
                    j = slots.find(seq & (vblocks.BLOCK - 1))  # a dead slot is not found
                    if j >= 0:
                        blob.seek(j * width)
                        out[seq] = blob.read(width)
        return out

    def filter_sql(
        self,
        coll: int,
        ids: Sequence[str] | None,
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
    ) -> tuple[str, list[Any]]:
        clauses, params = ["r.coll = ?"], [coll]
        if ids is not None:
            listed, listed_params = _id_list(ids)
            clauses.append(f"r.id IN ({listed})")
            params.extend(listed_params)
        if where:
            sql, p = compile_where(where, coll)
            clauses.append(sql)
            params.extend(p)
        if where_document:
            sql, p = compile_where_document(where_document)
            clauses.append(sql)
            params.extend(p)
        return " AND ".join(clauses), params

    def matching_seqs(
        self,
        coll: int,
        ids: Sequence[str] | None,
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> np.ndarray:
        cond, params = self.filter_sql(coll, ids, where, where_document)
        rows = self._conn.execute(
            f"SELECT r.seq FROM records r WHERE {cond} ORDER BY {_order(ids)} LIMIT ? OFFSET ?",
            (*params, -1 if limit is None else limit, offset or 0),
        ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def seq_array(self, sql: str, params: Sequence[Any]) -> np.ndarray:
        """Run ``sql`` (selecting a ``seq`` column) and return the seqs as one int64 array.

        group_concat hands the whole column over as one string, where fetching one
        Python tuple per row costs far more when tens of thousands match.
        """
        row = self._conn.execute(f"SELECT group_concat(seq) FROM ({sql})", params).fetchone()
        if not row or not row[0]:
            return np.empty(0, dtype=np.int64)
        return np.fromstring(row[0], dtype=np.int64, sep=",")

    @overload
    def candidate_seqs(
        self,
        coll: int,
        ids: Sequence[str] | None,
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
        universe: np.ndarray,
    ) -> np.ndarray: ...
    @overload
    def candidate_seqs(
        self,
        coll: int,
        ids: Sequence[str] | None,
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
        universe: None,
    ) -> np.ndarray | None: ...
    def candidate_seqs(
        self,
        coll: int,
        ids: Sequence[str] | None,
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
        universe: np.ndarray | None,
    ) -> np.ndarray | None:
        """Sorted seqs matching every filter (see _filters.evaluate_sets).

        ``universe`` (the sorted live seqs of the index) lists the complement of what
        the conditions found, for a filter of negations alone. Without one, that case
        gives None (only a pass over the collection could list it); the caller then
        asks SQLite in one statement. A set is not cut down to the universe: what
        SQLite holds is the truth, and a search skips seqs its index does not have.
        """
        within = None
        if ids is not None:
            listed, params = _id_list(ids)
            within = sorted_unique(
                self.seq_array(
                    f"SELECT seq FROM records WHERE coll = ? AND id IN ({listed})",
                    [coll, *params],
                )
            )
        found = evaluate_sets(where, where_document, coll, self.seq_array, within)
        if found is None:
            return universe
        seqs, negated = found
        if universe is None:
            return None if negated else seqs
        return complement(universe, seqs) if negated else seqs

    def matching_among(
        self,
        seqs: np.ndarray,
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
    ) -> np.ndarray:
        """The sorted seqs among ``seqs`` that match, tested record by record: for a few
        hundred records (a sample, a search's neighbours), whatever the filter matches
        in all."""
        if len(seqs) == 0:
            return np.empty(0, dtype=np.int64)
        cond, params = compile_record_test(where, where_document)
        return np.sort(
            self.seq_array(
                f"SELECT r.seq AS seq FROM records r WHERE r.seq IN "
                f"(SELECT value FROM json_each(?)) AND {cond}",
                [_json_ints(seqs), *params],
            )
        )

    def fetch_walk(
        self,
        coll: int,
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
        limit: int,
        offset: int | None,
        columns: Sequence[str],
    ) -> list[tuple[Any, ...]]:
        """A page of a filter that matches many records: walk them in storage order,
        testing each, until the page is full (about (offset + limit) / share records)."""
        cond, params = compile_record_test(where, where_document)
        rows = self._conn.execute(
            f"SELECT r.seq, r.id{_select_columns(columns)} FROM records r "
            f"WHERE r.coll = ? AND {cond} ORDER BY r.seq LIMIT ? OFFSET ?",
            (coll, *params, limit, offset or 0),
        ).fetchall()
        return self._with_vectors(coll, rows, columns)

    def fetch(
        self,
        coll: int,
        ids: Sequence[str] | None,
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
        limit: int | None,
        offset: int | None,
        columns: Sequence[str],
    ) -> list[tuple[Any, ...]]:
        """Rows (seq, id, *columns) matching the filters, in storage order."""
        cond, params = self.filter_sql(coll, ids, where, where_document)
        rows = self._conn.execute(
            f"SELECT r.seq, r.id{_select_columns(columns)} FROM records r WHERE {cond} "
            f"ORDER BY {_order(ids)} LIMIT ? OFFSET ?",
            (*params, -1 if limit is None else limit, offset or 0),
        ).fetchall()
        return self._with_vectors(coll, rows, columns)

    def fetch_seqs(
        self, coll: int, seqs: Sequence[int], columns: Sequence[str]
    ) -> dict[int, tuple[Any, ...]]:
        """seq -> (seq, id, *columns) for the given seqs of collection ``coll``.

        One primary-key lookup per seq. The unary + keeps SQLite from serving
        ``coll = ?`` from an index instead: it chose a covering walk of records_by_id
        for ``include=[]``, most of a query's time, and growing with the collection.
        """
        rows = self._conn.execute(
            f"SELECT r.seq, r.id{_select_columns(columns)} FROM records r WHERE r.seq IN "
            "(SELECT value FROM json_each(?)) AND +r.coll = ?",
            (_json_ints(seqs), coll),
        ).fetchall()
        return {r[0]: r for r in self._with_vectors(coll, rows, columns)}

    def _with_vectors(
        self, coll: int, rows: list[tuple[Any, ...]], columns: Sequence[str]
    ) -> list[tuple[Any, ...]]:
        """Fill the embedding placeholder of each row (one read per block, not per row);
        a row without a vector is left out, as a join would."""
        if "embedding" not in columns or not rows:
            return rows
        pos = 2 + list(columns).index("embedding")
        vecs = self.vector_bytes(coll, [r[0] for r in rows])
        return [(*r[:pos], vecs[r[0]], *r[pos + 1 :]) for r in rows if r[0] in vecs]

    def count(self, coll: int) -> int:
        """The number of records, as kept by every write (no pass over them)."""
        with self.lock:
            row = self._conn.execute(
                "SELECT n_records FROM collections WHERE coll = ?", (coll,)
            ).fetchone()
        return 0 if row is None else int(row[0])


# ---------------------------------------------------------------- schema migrations
# Each upgrades a file of one schema version to a later one, inside the transaction
# Store._migrate opens; MIGRATIONS lists them in the order they run.


def _copy_vectors_into_blocks(store: Store, source: str) -> None:
    c = store._conn
    c.execute(_VBLOCKS_TABLE)
    cur = c.execute(f"{source} ORDER BY 1, 2")
    while rows := cur.fetchmany(4096):
        for coll, part in _by_collection(rows):
            store._put_vectors(coll, *part)


def vectors_from_records_into_blocks(store: Store) -> None:
    """1 -> 3: schema 1 kept each vector in its ``records`` row and fed FTS5 from a
    per-row trigger; the vectors move into blocks, the column and trigger go."""
    _copy_vectors_into_blocks(store, "SELECT coll, seq, embedding FROM records")
    store._conn.execute("ALTER TABLE records DROP COLUMN embedding")
    store._conn.execute("DROP TRIGGER IF EXISTS docs_insert")


def vector_rows_into_blocks(store: Store) -> None:
    """2 -> 3: schema 2 kept one row per vector in ``vectors``; they move into blocks."""
    _copy_vectors_into_blocks(
        store,
        "SELECT r.coll, r.seq, v.embedding FROM records r JOIN vectors v ON v.seq = r.seq",
    )
    store._conn.execute("DROP TABLE vectors")


def record_counts_in_collections(store: Store) -> None:
    """3 -> 4: schemas 1 to 3 counted a collection's records at every count(); the
    count is kept with the collection from now on."""
    c = store._conn
    c.execute("ALTER TABLE collections ADD COLUMN n_records INTEGER NOT NULL DEFAULT 0")
    c.execute(
        "UPDATE collections SET n_records = "
        "(SELECT count(*) FROM records r WHERE r.coll = collections.coll)"
    )


# (from version, to version, step), in the order they run.
MIGRATIONS: list[tuple[int, int, Callable[[Store], None]]] = [
    (1, 3, vectors_from_records_into_blocks),
    (2, 3, vector_rows_into_blocks),
    (3, 4, record_counts_in_collections),
]
