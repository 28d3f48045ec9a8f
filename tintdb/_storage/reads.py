"""The store's reads of records: by filter, by seq, their vectors, sparse postings and
the change log. ``RecordReads`` is shared by ``Store`` (reads in a transaction of their
own, or none) and ``Tx`` (reads inside a write, seeing what it has written)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from .._conditions import Node
from .._filter_sets import evaluate_sets, sorted_unique
from .._filter_sql import compile_record_test, compile_sql
from .blocks import block_parts, vectors_by_slot
from .rows import id_list, json_ints, unpack_seqs


def complement(universe: np.ndarray, seqs: np.ndarray) -> np.ndarray:
    """The seqs of sorted ``universe`` not in ``seqs``: a pass over the universe, which
    only a filter made of negations alone needs (its answer is most records)."""
    if len(seqs) == 0:
        return universe
    return universe[~np.isin(universe, seqs, kind="table")]


def _order(ids: Sequence[str] | None) -> str:
    """With ids, look them up by (coll, id) and sort after; the unary + stops SQLite from
    walking the whole collection in seq order instead (far slower for a list of ids)."""
    return "+r.seq" if ids is not None else "r.seq"


def _select_columns(columns: Sequence[str]) -> str:
    """The select list for ``columns`` of records; embeddings (in vector blocks, not in
    records) get a placeholder that ``RecordReads._with_vectors`` fills."""
    return "".join(", NULL" if n == "embedding" else f", r.{n}" for n in columns)


def _joined(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class RecordReads:
    """Reads of records on ``_conn``, in whatever transaction its owner has open."""

    _conn: sqlite3.Connection
    lock: threading.RLock

    def sparse_slot(self, coll: int, key: str) -> int | None:
        """The slot of a collection's sparse metadata key, if any record has used it."""
        row = self._conn.execute(
            "SELECT slot FROM sparse_keys WHERE coll = ? AND key = ?", (coll, key)
        ).fetchone()
        return None if row is None else int(row[0])

    def existing(
        self, coll: int, ids: Sequence[str]
    ) -> dict[str, tuple[int, bytes | None, str | None]]:
        """id -> (seq, metadata json, document) for the ids that exist."""
        listed, params = id_list(ids)
        rows = self._conn.execute(
            f"SELECT id, seq, metadata, document FROM records WHERE coll = ? AND id IN ({listed})",
            (coll, *params),
        ).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def sparse_postings(
        self, coll: int, key: str, dims: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dims, seqs, values) of every posting of ``key`` on the given dimensions."""
        slot = self.sparse_slot(coll, key)
        if slot is None or len(dims) == 0:
            empty = np.empty(0, np.int64)
            return empty, empty, np.empty(0, np.float64)
        rows = self._conn.execute(
            "SELECT dim, seq, v FROM sparse WHERE slot = ? AND dim IN "
            "(SELECT value FROM json_each(?))",
            (slot, json_ints(dims)),
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

    def ops_since(self, coll: int, lsn: int) -> list[tuple[int, int, np.ndarray]]:
        rows = self._conn.execute(
            "SELECT lsn, kind, seqs FROM ops WHERE coll = ? AND lsn > ? ORDER BY lsn", (coll, lsn)
        ).fetchall()
        return [(int(r[0]), int(r[1]), unpack_seqs(r[2])) for r in rows]

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
        for part in block_parts(self._conn, coll, seqs):
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

    def vector_bytes(self, coll: int, seqs: Sequence[int]) -> dict[int, bytes]:
        """seq -> float32 vector bytes, for ``include=["embeddings"]``."""
        return vectors_by_slot(self._conn, coll, np.asarray(seqs, dtype=np.int64))

    def filter_sql(
        self,
        coll: int,
        ids: Sequence[str] | None,
        cond: Node | None,
    ) -> tuple[str, list[Any]]:
        clauses, params = ["r.coll = ?"], [coll]
        if ids is not None:
            listed, listed_params = id_list(ids)
            clauses.append(f"r.id IN ({listed})")
            params.extend(listed_params)
        if cond is not None:
            sql, p = compile_sql(cond, coll)
            clauses.append(sql)
            params.extend(p)
        return " AND ".join(clauses), params

    def matching_seqs(
        self,
        coll: int,
        ids: Sequence[str] | None,
        cond: Node | None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> np.ndarray:
        test, params = self.filter_sql(coll, ids, cond)
        rows = self._conn.execute(
            f"SELECT r.seq FROM records r WHERE {test} ORDER BY {_order(ids)} LIMIT ? OFFSET ?",
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
        cond: Node | None,
        universe: np.ndarray,
    ) -> np.ndarray: ...
    @overload
    def candidate_seqs(
        self,
        coll: int,
        ids: Sequence[str] | None,
        cond: Node | None,
        universe: None,
    ) -> np.ndarray | None: ...
    def candidate_seqs(
        self,
        coll: int,
        ids: Sequence[str] | None,
        cond: Node | None,
        universe: np.ndarray | None,
    ) -> np.ndarray | None:
        """Sorted seqs matching every filter (see _filter_sets.evaluate_sets).

        ``universe`` (the sorted live seqs of the index) lists the complement of what
        the conditions found, for a filter of negations alone. Without one, that case
        gives None (only a pass over the collection could list it); the caller then
        asks SQLite in one statement. A set is not cut down to the universe: what
        SQLite holds is the truth, and a search skips seqs its index does not have.
        """
        within = None
        if ids is not None:
            listed, params = id_list(ids)
            within = sorted_unique(
                self.seq_array(
                    f"SELECT seq FROM records WHERE coll = ? AND id IN ({listed})",
                    [coll, *params],
                )
            )
        found = evaluate_sets(cond, coll, self.seq_array, within, universe)
        if found is None:
            return universe
        seqs, negated = found
        if universe is None:
            return None if negated else seqs
        return complement(universe, seqs) if negated else seqs

    def matching_among(
        self,
        seqs: np.ndarray,
        cond: Node | None,
    ) -> np.ndarray:
        """The sorted seqs among ``seqs`` that match, tested record by record: for a few
        hundred records (a sample, a search's neighbours), whatever the filter matches
        in all."""
        if len(seqs) == 0:
            return np.empty(0, dtype=np.int64)
        test, params = compile_record_test(cond)
        return np.sort(
            self.seq_array(
                f"SELECT r.seq AS seq FROM records r WHERE r.seq IN "
                f"(SELECT value FROM json_each(?)) AND {test}",
                [json_ints(seqs), *params],
            )
        )

    def fetch_walk(
        self,
        coll: int,
        cond: Node | None,
        limit: int,
        offset: int | None,
        columns: Sequence[str],
    ) -> list[tuple[Any, ...]]:
        """A page of a filter that matches many records: walk them in storage order,
        testing each, until the page is full (about (offset + limit) / share records)."""
        test, params = compile_record_test(cond)
        rows = self._conn.execute(
            f"SELECT r.seq, r.id{_select_columns(columns)} FROM records r "
            f"WHERE r.coll = ? AND {test} ORDER BY r.seq LIMIT ? OFFSET ?",
            (coll, *params, limit, offset or 0),
        ).fetchall()
        return self._with_vectors(coll, rows, columns)

    def fetch(
        self,
        coll: int,
        ids: Sequence[str] | None,
        cond: Node | None,
        limit: int | None,
        offset: int | None,
        columns: Sequence[str],
    ) -> list[tuple[Any, ...]]:
        """Rows (seq, id, *columns) matching the filters, in storage order."""
        test, params = self.filter_sql(coll, ids, cond)
        rows = self._conn.execute(
            f"SELECT r.seq, r.id{_select_columns(columns)} FROM records r WHERE {test} "
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
            (json_ints(seqs), coll),
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
