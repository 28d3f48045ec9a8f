"""``Tx``: one open write, and the only holder of the methods that change rows.

``Store.write()`` yields one; everything done through it commits together or not at
all. Records, their metadata index, documents' text index, sparse postings, vector
blocks, the change log and the catalog are changed here and nowhere else, so a change
outside a write cannot be written. A ``Tx`` also reads (``Catalog``, ``RecordReads``),
seeing what it has written. Once its write has ended, any use of it fails.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import orjson

from .. import _vblocks as vblocks
from .._vblocks import BLOCK_SHIFT
from ..errors import UniqueConstraintError
from . import blocks
from .catalog import CatalogChanges
from .reads import RecordReads
from .rows import OP_TOUCH, CollectionRow, json_ints, meta_changes, meta_rows, pack_seqs

__all__ = ["Tx"]

# How a sparse vector shows in a record's stored metadata JSON (orjson writes it compactly).
SPARSE_TAG = b'"#type":"sparse_vector"'


class _Ended:
    """The connection of a Tx whose write has ended: every use is refused."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("this transaction has ended; open another with Store.write()")


class Tx(CatalogChanges, RecordReads):
    """The rows changed by one write (see Store.write)."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock) -> None:
        self._conn = conn
        self.lock = lock

    def end(self) -> None:
        """Called by Store.write once the write has committed or rolled back."""
        self._conn = _Ended()  # type: ignore[assignment]

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """Reads inside the write are already consistent: its own transaction."""
        yield self._conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """One statement in this write (the schema migrations' own SQL)."""
        return self._conn.execute(sql, params)

    # ------------------------------------------------------------ vector blocks

    def put_vectors(self, coll: int, seqs: np.ndarray, vectors: np.ndarray) -> None:
        """Set the vectors of ``seqs`` (new or existing) in their blocks."""
        blocks.put_vectors(self._conn, coll, seqs, vectors)

    def drop_vectors(self, coll: int, seqs: np.ndarray) -> None:
        """Remove the vectors of ``seqs`` from their blocks."""
        blocks.drop_vectors(self._conn, coll, seqs)

    def compact_blocks(self, coll: int, blks: Sequence[int]) -> None:
        """Rewrite the given blocks of ``coll`` without their dead slots."""
        blocks.compact_blocks(self._conn, coll, blks)

    # ------------------------------------------------------------ records

    def fork_collection(self, col: CollectionRow, new_name: str) -> tuple[CollectionRow, int]:
        """A new collection named ``new_name`` beside ``col`` holding a
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
        if self.select_collection("c.database_id = ? AND c.name = ?", (db_id, new_name)):
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
                copy = self._new_sparse_slot(new, key)
                c.execute(
                    "INSERT INTO sparse(slot, dim, seq, v) "
                    "SELECT ?, dim, seq + ?, v FROM sparse WHERE slot = ?",
                    (copy, shift, slot),
                )
        forked = self.collection_by_id(cid)
        self.touch(forked)  # its first version: an lsn of its own for the index to carry
        return self.collection_by_id(cid), shift

    def next_seq(self) -> int:
        """The seq the next inserted record gets (stable while this write is open)."""
        row = self._conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'records'"
        ).fetchone()
        return (row[0] if row else 0) + 1

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
        self.put_vectors(coll, seqs, embeddings)
        c.executemany(
            "INSERT INTO meta(coll, seq, key, kind, v) VALUES (?, ?, ?, ?, ?)",
            (r for i in range(n) for r in meta_rows(coll, int(seqs[i]), mds[i])),
        )
        self._put_sparse(coll, seqs.tolist(), mds)
        return seqs

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
            self.put_vectors(coll, np.asarray(seqs, dtype=np.int64), embeddings)
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

    def delete_rows(self, coll: int, seqs: np.ndarray) -> None:
        c = self._conn
        self._drop_sparse(coll, seqs)
        param = json_ints(seqs)
        gone = c.execute(
            "DELETE FROM records WHERE seq IN (SELECT value FROM json_each(?))", (param,)
        ).rowcount
        self._add_count(coll, -gone)
        c.execute("DELETE FROM meta WHERE seq IN (SELECT value FROM json_each(?))", (param,))
        self.drop_vectors(coll, seqs)

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
                        slots[key] = self._new_sparse_slot(coll, key)
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
            (json_ints(seqs), SPARSE_TAG),
        ).fetchall()
        slots: dict[str, int | None] = {}
        rows: list[tuple[int, int, int]] = []
        for seq, blob in found:
            for key, value in orjson.loads(blob).items():
                if isinstance(value, dict):
                    if key not in slots:
                        slots[key] = self.sparse_slot(coll, key)
                    slot = slots[key]
                    if slot is not None:
                        rows.extend((slot, d, seq) for d in value["indices"])
        if rows:
            self._conn.executemany(
                "DELETE FROM sparse WHERE slot = ? AND dim = ? AND seq = ?", rows
            )

    def _add_count(self, coll: int, change: int) -> None:
        """Keep the collection's record count, in the transaction of the write."""
        self._conn.execute(
            "UPDATE collections SET n_records = n_records + ? WHERE coll = ?", (change, coll)
        )

    def log(self, col: CollectionRow, kind: int, seqs: np.ndarray) -> int:
        """Append one change to the log and stamp the collection with its lsn."""
        c = self._conn
        c.execute(
            "INSERT INTO ops(coll, kind, seqs) VALUES (?, ?, ?)", (col.coll, kind, pack_seqs(seqs))
        )
        lsn = int(c.execute("SELECT last_insert_rowid()").fetchone()[0])
        c.execute("UPDATE collections SET last_lsn = ? WHERE coll = ?", (lsn, col.coll))
        return lsn

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

    def _new_sparse_slot(self, coll: int, key: str) -> int:
        slot = self.sparse_slot(coll, key)
        if slot is not None:
            return slot
        cur = self._conn.execute("INSERT INTO sparse_keys(coll, key) VALUES (?, ?)", (coll, key))
        return int(cur.lastrowid)  # type: ignore[arg-type]
