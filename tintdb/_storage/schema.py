"""The file format: the tables, the version, and the named migrations that upgrade an
older file in place, once, on open.

Each migration upgrades a file of one version to a later one inside the transaction
``migrate`` opens, through that transaction's ``Tx``; ``MIGRATIONS`` lists them in the
order they run, and each is tested alone on a fixture written by the older tintdb.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..config import DEFAULT_DATABASE, DEFAULT_DATABASE_ID, DEFAULT_TENANT
from ..errors import InvalidArgumentError

if TYPE_CHECKING:
    from .tx import Tx

SCHEMA_VERSION = 5
DB_FILENAME = "tintdb.sqlite3"

# Vectors are stored in blocks: one row per collection and run of 2**BLOCK_SHIFT seqs,
# holding the slots present (seq % 64, ascending, one byte each) and their float32
# vectors in that order. Reading vectors back in blocks is several times faster than at
# one row per vector (docs/benchmarks.md), which is what lets the index snapshot leave the
# vectors out (stored once, in SQLite) and still reopen quickly.
VBLOCKS_TABLE = (
    "CREATE TABLE IF NOT EXISTS vblocks(coll INTEGER NOT NULL, blk INTEGER NOT NULL, "
    "slots BLOB NOT NULL, data BLOB NOT NULL, PRIMARY KEY(coll, blk))"
)

# The metadata keys a collection's records have used, with each value type seen
# ('string', 'int', 'float', 'bool'; list values count as their elements' type): the
# "discovered" keys of the collection's schema. Only grows, as in Chroma.
KEYS_TABLE = (
    "CREATE TABLE IF NOT EXISTS collection_keys(coll INTEGER NOT NULL, key TEXT NOT NULL, "
    "vtype TEXT NOT NULL, PRIMARY KEY(coll, key, vtype)) WITHOUT ROWID"
)
# Fills collection_keys from the metadata already stored, for a file written before it
# existed. meta keeps ints and floats in one kind; SQLite's typeof() tells them apart.
KEYS_BACKFILL = (
    "INSERT OR IGNORE INTO collection_keys(coll, key, vtype) SELECT DISTINCT coll, key, "
    "CASE WHEN kind IN (0, 3) THEN 'string' WHEN kind IN (2, 5) THEN 'bool' "
    "WHEN typeof(v) = 'integer' THEN 'int' ELSE 'float' END FROM meta"
)

# Sparse vectors (metadata values), an inverted index: one posting per (metadata key of
# a collection, dimension, record). A search reads only its query's dimensions.
SPARSE_TABLES = """
CREATE TABLE IF NOT EXISTS sparse_keys(
    slot INTEGER PRIMARY KEY, coll INTEGER NOT NULL, key TEXT NOT NULL, UNIQUE(coll, key));
CREATE TABLE IF NOT EXISTS sparse(
    slot INTEGER NOT NULL, dim INTEGER NOT NULL, seq INTEGER NOT NULL, v REAL NOT NULL,
    PRIMARY KEY(slot, dim, seq)) WITHOUT ROWID;
"""
# Which collection each fork was made from (Collection.fork), for fork_count.
FORKS_TABLE = "CREATE TABLE IF NOT EXISTS forks(child INTEGER PRIMARY KEY, parent INTEGER NOT NULL)"

SCHEMA = f"""
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
{VBLOCKS_TABLE};
CREATE UNIQUE INDEX IF NOT EXISTS records_by_id ON records(coll, id);
CREATE INDEX IF NOT EXISTS records_by_coll ON records(coll, seq);
CREATE TABLE IF NOT EXISTS meta(
    coll INTEGER NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL, kind INTEGER NOT NULL, v);
CREATE INDEX IF NOT EXISTS meta_lookup ON meta(coll, key, kind, v, seq);
CREATE INDEX IF NOT EXISTS meta_by_seq ON meta(seq);
CREATE VIRTUAL TABLE IF NOT EXISTS docs USING fts5(
    document, content='records', content_rowid='seq', tokenize='trigram case_sensitive 1');
-- Inserts reach the FTS index in bulk from Tx.insert (a per-row trigger cost more);
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
{KEYS_TABLE};
{SPARSE_TABLES}
{FORKS_TABLE};
CREATE TABLE IF NOT EXISTS ops(
    lsn INTEGER PRIMARY KEY AUTOINCREMENT,
    coll INTEGER NOT NULL, kind INTEGER NOT NULL, seqs BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS ops_by_coll ON ops(coll, lsn);
"""

_SEED = (
    f"INSERT OR IGNORE INTO tenants(name) VALUES ('{DEFAULT_TENANT}');"
    "INSERT OR IGNORE INTO databases(id, name, tenant) VALUES "
    f"('{DEFAULT_DATABASE_ID}', '{DEFAULT_DATABASE}', '{DEFAULT_TENANT}');"
)


def file_version(conn: sqlite3.Connection, path: Path | None) -> int:
    """The file's format version (0: a new file); refuses one newer than this tintdb's."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise InvalidArgumentError(
            f"{path} was written by a newer tintdb (schema {version}); upgrade tintdb"
        )
    return version


def create(conn: sqlite3.Connection) -> None:
    """Create what is missing (all of it in a new file) and stamp the current version, in
    one transaction of its own. An older file is migrated before this."""
    try:
        # executescript commits any open transaction, so the script carries its own.
        conn.executescript(
            f"BEGIN IMMEDIATE;{SCHEMA}{_SEED}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
        )
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def upgrade(tx: Tx, version: int, path: Path | None) -> None:
    """Run the MIGRATIONS that lead from ``version`` to SCHEMA_VERSION, in order, inside
    the open transaction of ``tx``, and stamp the new version."""
    try:
        for source, target, step in MIGRATIONS:
            if source == version:
                step(tx)
                version = target
    except sqlite3.OperationalError as e:
        raise InvalidArgumentError(
            f"{path} needs a one-time upgrade from schema {version}, which failed "
            f"(schema 1 needs SQLite 3.35 or newer; this Python has "
            f"{sqlite3.sqlite_version}): {e}"
        ) from e
    if version != SCHEMA_VERSION:
        raise InvalidArgumentError(f"no upgrade leads from schema {version}")
    tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


# ---------------------------------------------------------------- the migrations


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


def _copy_vectors_into_blocks(tx: Tx, source: str) -> None:
    tx.execute(VBLOCKS_TABLE)
    cur = tx.execute(f"{source} ORDER BY 1, 2")
    while rows := cur.fetchmany(4096):
        for coll, part in _by_collection(rows):
            tx.put_vectors(coll, *part)


def vectors_from_records_into_blocks(tx: Tx) -> None:
    """1 -> 3: schema 1 kept each vector in its ``records`` row and fed FTS5 from a
    per-row trigger; the vectors move into blocks, the column and trigger go."""
    _copy_vectors_into_blocks(tx, "SELECT coll, seq, embedding FROM records")
    tx.execute("ALTER TABLE records DROP COLUMN embedding")
    tx.execute("DROP TRIGGER IF EXISTS docs_insert")


def vector_rows_into_blocks(tx: Tx) -> None:
    """2 -> 3: schema 2 kept one row per vector in ``vectors``; they move into blocks."""
    _copy_vectors_into_blocks(
        tx, "SELECT r.coll, r.seq, v.embedding FROM records r JOIN vectors v ON v.seq = r.seq"
    )
    tx.execute("DROP TABLE vectors")


def record_counts_in_collections(tx: Tx) -> None:
    """3 -> 4: schemas 1 to 3 counted a collection's records at every count(); the
    count is kept with the collection from now on."""
    tx.execute("ALTER TABLE collections ADD COLUMN n_records INTEGER NOT NULL DEFAULT 0")
    tx.execute(
        "UPDATE collections SET n_records = "
        "(SELECT count(*) FROM records r WHERE r.coll = collections.coll)"
    )


def keys_sparse_and_forks(tx: Tx) -> None:
    """4 -> 5: the metadata keys each collection's records use (``collection_keys``,
    filled from the metadata index of a file that lacks it), sparse vector postings
    (``sparse_keys``, ``sparse``) and which collection each fork came from (``forks``).
    Files stamped 4 by a tintdb that already had these tables keep them as they are."""
    had_keys = tx.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'collection_keys'"
    ).fetchone()
    tx.execute(KEYS_TABLE)
    if not had_keys:
        tx.execute(KEYS_BACKFILL)
    for statement in SPARSE_TABLES.split(";"):
        if statement.strip():
            tx.execute(statement)
    tx.execute(FORKS_TABLE)


# (from version, to version, step), in the order they run.
MIGRATIONS: list[tuple[int, int, Callable[[Tx], None]]] = [
    (1, 3, vectors_from_records_into_blocks),
    (2, 3, vector_rows_into_blocks),
    (3, 4, record_counts_in_collections),
    (4, 5, keys_sparse_and_forks),
]
