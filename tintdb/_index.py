"""The vector index of one collection: derived data, rebuildable from SQLite at any time.

An HNSW graph (hnswlib) whose labels are the records' ``seq`` numbers (plus a
generation, once a record's vector changed), for approximate k-NN, optionally
restricted by a filter callback; beside it the ``Mirror`` for exact search
(``_exact``), kept in step with every change from the first record, or built on first
need after a snapshot is loaded.

A write's vectors need not be in the graph when the write returns: ``defer`` puts them
in the *tail*, searched exactly beside the graph by every query, and ``apply_pending``
moves them into the graph a step at a time (the keeper runs it on a thread of its own).
A changed vector's old node is marked deleted at once, so the graph never answers with
it. Anything that reads or writes the graph as a whole (a snapshot, a copy, an inline
``upsert``) drains the tail first.

Snapshots (``_snapshot`` for their file format) are written to a temporary directory,
fsynced and renamed, so a snapshot is either complete or absent; one that fails its
checksum is ignored (and the caller rebuilds), so hnswlib never reads a damaged file.

Over 500 lines because ``VectorIndex`` is one object with one lock: changes, the three
searches (graph, post-filtered window, exact) and saving/loading all guard the same
graph and label map, and splitting the class would split its lock.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import threading
import uuid
import weakref
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np
import orjson

from ._exact import (
    COMPACT_ABOVE,
    RERANK_EXTRA,
    Mirror,
    plain_empty,
    scan_knn,
    space_distances,
    unit,
)
from ._filter_sets import member
from ._snapshot import (
    GENERATION_SHIFT,
    GRAPH_FILE,
    HEADER,
    LABELS_FILE,
    LOAD_PREFIX,
    READABLE_FORMATS,
    SEQ_MASK,
    SNAPSHOT_FORMAT,
    SNAPSHOT_PREFIX,
    Loader,
    crc,
    fsync_path,
    hnsw_space,
    load_graph,
    remove_abandoned,
    snapshot_format,
    state_from_file,
    write_graph,
)

__all__ = [
    "COMPACT_ABOVE",
    "GENERATION_SHIFT",
    "GRAPH_FILE",
    "LABELS_FILE",
    "IndexDamaged",
    "Loader",
    "VectorIndex",
    "graph_seed",
    "plain_empty",
    "scan_knn",
    "space_distances",
]

log = logging.getLogger(__name__)

_MIN_CAPACITY = 1024
# A graph is rebuilt once its deletes and in-place updates pass 1/WORN_SHARE of its live
# records (and WORN_MIN): see VectorIndex.worn.
WORN_MIN = 256
WORN_SHARE = 4
# hnswlib's own seed for the draw of each node's level. The keeper seeds each
# collection's graph from its id instead (graph_seed): with one seed for every graph,
# every graph of the same records drew the same hierarchy, and on a data set where that
# draw is a poor one every build was poor alike (docs/benchmarks.md, "the level draw").
DEFAULT_SEED = 100


def graph_seed(collection_id: str) -> int:
    """The level generator's seed for a collection's graph: stable across processes and
    rebuilds of that collection, different from one collection to the next."""
    return zlib.crc32(collection_id.encode()) & 0x7FFFFFFF


class _LiveSeqs:
    """The live labels, sorted, in an array with room to grow at its end.

    Seqs only grow, so a new record's label goes after every other one: adding is an
    append, membership a binary search, and the sorted array a filter or a page needs
    is always at hand. Rebuilding it from a set after every write cost a pass over the
    collection on the next filtered query. An array handed out stays
    valid: appending writes past its end, and removing builds a new array.
    """

    def __init__(self, seqs: np.ndarray | None = None) -> None:
        self._buf = np.empty(0, np.int64) if seqs is None else np.asarray(seqs, np.int64)
        self._n = len(self._buf)

    def __len__(self) -> int:
        return self._n

    def array(self) -> np.ndarray:
        return self._buf[: self._n]

    def contains(self, seqs: np.ndarray) -> np.ndarray:
        """A mask of which of ``seqs`` are live."""
        live = self.array()
        if self._n == 0:
            return np.zeros(len(seqs), dtype=bool)
        pos = np.minimum(np.searchsorted(live, seqs), self._n - 1)
        return live[pos] == seqs

    def add(self, seqs: np.ndarray) -> None:
        new = np.unique(np.asarray(seqs, np.int64)[~self.contains(seqs)])
        if len(new) == 0:
            return
        n = self._n
        if n and new[0] < self._buf[n - 1]:  # not after the others (unexpected): merge
            self._buf = np.union1d(self.array(), new)
            self._n = len(self._buf)
            return
        if n + len(new) > len(self._buf):
            grown = np.empty(max(n + len(new), 2 * len(self._buf), 1024), np.int64)
            grown[:n] = self._buf[:n]
            self._buf = grown
        self._buf[n : n + len(new)] = new
        self._n = n + len(new)

    def remove(self, seqs: np.ndarray) -> np.ndarray:
        """Drop ``seqs``; returns those that were live."""
        seqs = np.asarray(seqs, np.int64)
        gone = np.unique(seqs[self.contains(seqs)])
        if len(gone):
            self._buf = np.delete(self.array(), np.searchsorted(self.array(), gone))
            self._n = len(self._buf)
        return gone


# Changes of up to this many records go through the index's inbox (VectorIndex.defer,
# VectorIndex.remove) rather than wait for its lock. A larger one waits (a few
# milliseconds beside a write of that size) instead of holding a second copy of its
# vectors until the lock's next holder.
INBOX_MAX_ROWS = 4096
# An empty tail keeps arrays of up to this many rows for the next writes.
_TAIL_KEPT_ROWS = 1024


class _Tail:
    """Vectors set in the index but not yet in its graph, in the order they came.

    Rows are appended at the end and taken from the front (``head``); a row whose
    record was deleted, or whose seq was set again, is marked dead or overwritten in
    place. Vectors are kept as the graph will take them (unit length for cosine), with
    their squared norms for the l2 ranking formula.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.seqs = np.empty(0, np.int64)
        self.labels = np.empty(0, np.int64)
        self.vecs = np.empty((0, dim), np.float32)
        self.sq = np.empty(0, np.float32)
        self.alive = np.empty(0, bool)
        self.head = self.n = 0
        self.pos: dict[int, int] = {}  # seq -> its row

    def __len__(self) -> int:
        return len(self.pos)

    def contains(self, seqs: np.ndarray) -> np.ndarray:
        if not self.pos:
            return np.zeros(len(seqs), dtype=bool)
        pos = self.pos
        return np.fromiter((s in pos for s in seqs.tolist()), bool, len(seqs))

    def rows_of(self, seqs: np.ndarray) -> np.ndarray:
        """The rows of ``seqs``, all in the tail."""
        return np.fromiter((self.pos[s] for s in seqs.tolist()), np.int64, len(seqs))

    def set(self, seqs: np.ndarray, labels: np.ndarray, vecs: np.ndarray) -> None:
        """Set each seq's vector: in place if it is in the tail already, else appended."""
        vecs = np.asarray(vecs, np.float32)
        had = self.contains(seqs)
        if had.any():
            rows = self.rows_of(seqs[had])
            self.vecs[rows] = vecs[had]
            self.sq[rows] = np.einsum("ij,ij->i", vecs[had], vecs[had])
        new = ~had
        m = int(new.sum())
        if m == 0:
            return
        if self.n + m > len(self.seqs):
            self._make_room(m)
        n = self.n
        self.seqs[n : n + m] = seqs[new]
        self.labels[n : n + m] = labels[new]
        self.vecs[n : n + m] = vecs[new]
        self.sq[n : n + m] = np.einsum("ij,ij->i", vecs[new], vecs[new])
        self.alive[n : n + m] = True
        self.pos.update(zip(seqs[new].tolist(), range(n, n + m), strict=True))
        self.n = n + m

    def _make_room(self, m: int) -> None:
        """Move the live rows to the front, growing the arrays if that is not enough."""
        rows = self._rows()
        k = len(self.pos)
        need = k + m
        size = max(need, 2 * len(self.seqs), 256) if need > len(self.seqs) else len(self.seqs)
        seqs, labels = np.empty(size, np.int64), np.empty(size, np.int64)
        vecs, sq = np.empty((size, self.dim), np.float32), np.empty(size, np.float32)
        alive = np.zeros(size, bool)
        seqs[:k], labels[:k], vecs[:k], sq[:k] = (
            self.seqs[rows],
            self.labels[rows],
            self.vecs[rows],
            self.sq[rows],
        )
        alive[:k] = True
        self.seqs, self.labels, self.vecs, self.sq, self.alive = seqs, labels, vecs, sq, alive
        self.head, self.n = 0, k
        self.pos = dict(zip(seqs[:k].tolist(), range(k), strict=True))

    def remove(self, seqs: np.ndarray) -> np.ndarray:
        """Drop ``seqs``; returns the mask of those that were in the tail."""
        had = self.contains(seqs)
        if had.any():
            rows = [self.pos.pop(s) for s in seqs[had].tolist()]
            self.alive[rows] = False
            if not self.pos:
                self._emptied()
        return had

    def _emptied(self) -> None:
        """Start again from the front; arrays grown by a bulk write are let go (25 MB
        for 16,384 rows of 384 dimensions, idle until the next one)."""
        self.head = self.n = 0
        if len(self.seqs) > _TAIL_KEPT_ROWS:
            self.seqs = np.empty(0, np.int64)
            self.labels = np.empty(0, np.int64)
            self.vecs = np.empty((0, self.dim), np.float32)
            self.sq = np.empty(0, np.float32)
            self.alive = np.empty(0, bool)

    def _rows(self) -> np.ndarray | slice:
        """The live rows, oldest first (a slice when none in between died)."""
        if self.n - self.head == len(self.pos):
            return slice(self.head, self.n)
        return np.flatnonzero(self.alive[self.head : self.n]) + self.head

    def view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(seqs, vectors, squared norms) of the live rows."""
        rows = self._rows()
        return self.seqs[rows], self.vecs[rows], self.sq[rows]

    def first(self, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The oldest ``limit`` live rows: (rows, labels, vectors)."""
        rows = self._rows()
        if isinstance(rows, slice):
            rows = np.arange(rows.start, min(rows.stop, rows.start + limit))
        else:
            rows = rows[:limit]
        return rows, self.labels[rows], self.vecs[rows]

    def taken(self, rows: np.ndarray) -> None:
        """The graph now holds ``rows`` (the oldest live ones): forget them."""
        for s in self.seqs[rows].tolist():
            del self.pos[s]
        self.alive[rows] = False
        if not self.pos:
            self._emptied()
        elif len(rows):
            self.head = int(rows[-1]) + 1

    def vectors_of(self, seqs: np.ndarray) -> np.ndarray:
        return self.vecs[self.rows_of(seqs)]


def _tail_nearest(
    space: str,
    q: np.ndarray,
    k: int,
    part: tuple[np.ndarray, np.ndarray, np.ndarray],
    keep: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query (prepared), the ``k`` nearest of a tail's ``part`` (seqs, vectors,
    squared norms), restricted to the mask ``keep`` if given: exact, nearest first."""
    seqs, vecs, sq = part
    if keep is not None:
        seqs, vecs, sq = seqs[keep], vecs[keep], sq[keep]
    k = min(k, len(seqs))
    if k == 0:
        return [(np.empty(0, np.int64), np.empty(0, np.float32))] * len(q)
    dots = q @ vecs.T  # (queries, rows)
    # Each space's ranking score (l2 without the query's own norm), then the distance
    # itself for the few best, as the exact search does.
    score = sq[None, :] - 2 * dots if space == "l2" else -dots
    pick = min(len(seqs), k + RERANK_EXTRA)
    every = np.arange(len(seqs))
    out = []
    for i in range(len(q)):
        cand = np.argpartition(score[i], pick - 1)[:pick] if pick < len(seqs) else every
        d = space_distances(space, q[i], vecs[cand])
        order = np.argsort(d, kind="stable")[:k]
        out.append((seqs[cand[order]], d[order]))
    return out


def _merge(
    graph: tuple[np.ndarray, np.ndarray], tail: tuple[np.ndarray, np.ndarray], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest of a graph answer and a tail answer (disjoint records)."""
    if len(tail[0]) == 0:
        return graph[0][:k], graph[1][:k]
    seqs = np.concatenate([graph[0], tail[0]])
    dists = np.concatenate([graph[1], tail[1]]).astype(np.float32)
    order = np.argsort(dists, kind="stable")[:k]
    return seqs[order], dists[order]


class _Inbox:
    """Changes a write handed over without the index's lock (VectorIndex.defer and
    remove), waiting for the lock's next holder to make them."""

    __slots__ = ("guard", "items", "ops", "rows")

    def __init__(self) -> None:
        self.guard = threading.Lock()  # held for a list append or swap, never longer
        # In order: (seqs, float32 vectors) to set, (seqs, None) to remove.
        self.items: list[tuple[np.ndarray, np.ndarray | None]] = []
        self.ops = 0  # changes in items or being made (taken from items, not yet made)
        self.rows = 0  # records those changes give vectors


class IndexDamaged(RuntimeError):
    """The index could not make a change from its inbox (out of memory, say). It answers
    lsn -1 from then on, so the keeper builds it again on the next call; a read that
    meets this asks once more (LocalBackend)."""


class _IndexLock:
    """The index's re-entrant lock. Whoever takes it first makes the inbox's changes,
    so every holder (a search, a graph step, a snapshot) sees every write that
    returned. It refers to its index weakly: the keeper lets a replaced graph's memory
    go when the last strong reference does, without waiting for the cycle collector."""

    __slots__ = ("_inbox", "_index", "_lock")

    def __init__(self, index: VectorIndex) -> None:
        self._lock = threading.RLock()
        self._inbox = index._inbox
        self._index = weakref.ref(index)

    def __enter__(self) -> _IndexLock:
        self._lock.acquire()
        if self._inbox.items:
            index = self._index()
            try:
                if index is not None:
                    index._absorb()
            except BaseException as exc:
                self._lock.release()
                if isinstance(exc, Exception):
                    raise IndexDamaged(f"the index could not take a write: {exc!r}") from exc
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class VectorIndex:
    """HNSW + exact-search mirror for one collection."""

    def __init__(
        self,
        space: str,
        dim: int,
        params: dict[str, Any],
        *,
        mirror: bool = True,
        seed: int = DEFAULT_SEED,
    ) -> None:
        self.space = space
        self.dim = dim
        self.params = params
        self.lsn = 0
        self.churn = 0  # in-place updates and deletes since the graph was built
        self._live = _LiveSeqs()
        self._start_lock()
        self._moved: dict[int, int] = {}  # seq -> its label, where that is not the seq
        self._hnsw = hnswlib.Index(space=hnsw_space(space), dim=dim)
        self._hnsw.init_index(
            max_elements=_MIN_CAPACITY,
            ef_construction=int(params["ef_construction"]),
            M=int(params["max_neighbors"]),
            random_seed=seed,
        )
        self._apply_ef()
        # ``mirror``: kept in step from the first record. The keeper starts every index
        # without one and reads it when an exact search first needs it (a collection
        # never searched exactly never holds it); see also mirror_deferred.
        self._mirror: Mirror | None = Mirror(dim, space == "cosine") if mirror else None
        # While a fresh graph is built to replace this one (and until the fresh one has
        # a mirror of its own) there is no mirror: the two graphs and a mirror beside
        # them set the process's peak memory. Exact searches read SQLite meanwhile.
        self.mirror_deferred = False
        self._tail = _Tail(dim)
        self.unsaved = 0
        # A graph built afresh from SQLite, not yet saved: a snapshot at its lsn (of the
        # graph it replaced) is replaced by it, not kept.
        self.rebuilt = False

    # ------------------------------------------------------------ basics

    @property
    def lsn(self) -> int:
        """The last change of the log this index holds; -1 once making its inbox's
        changes failed, whatever a writer stamps on it after (see _absorb)."""
        return -1 if self._damaged else self._lsn

    @lsn.setter
    def lsn(self, value: int) -> None:
        self._lsn = value

    def _start_lock(self) -> None:
        """The lock and its inbox (see defer), for an index made by any constructor."""
        self._inbox = _Inbox()
        self._damaged = False
        self.lock = _IndexLock(self)

    def __len__(self) -> int:
        """The records the index holds, its inbox's changes made (so this waits for the
        lock when a write just handed one over, or while one is being made)."""
        if self._inbox.ops:
            with self.lock:
                pass
        return len(self._live)

    def _threads(self) -> int:
        n = int(self.params.get("num_threads") or 0)
        return n if n > 0 else -1

    def _apply_ef(self) -> None:
        self._hnsw.set_ef(int(self.params["ef_search"]))

    def set_params(self, params: dict[str, Any]) -> None:
        """Apply changed search-time parameters (ef_search, num_threads...)."""
        with self.lock:
            self.params = params
            self._apply_ef()

    def _prepare(self, v: np.ndarray) -> np.ndarray:
        """hnswlib normalises vectors for cosine, so exact search must too."""
        return unit(v) if self.space == "cosine" else v

    # ------------------------------------------------------------ changes

    def reserve(self, rows: int) -> None:
        """Room for ``rows`` records, so a bulk load in parts resizes the graph once."""
        with self.lock:
            if rows > self._hnsw.get_max_elements():
                self._hnsw.resize_index(rows)
            if self._mirror is not None:
                self._mirror.reserve(rows)

    def upsert(self, seqs: np.ndarray, vectors: np.ndarray, threads: int | None = None) -> None:
        """Add new labels or replace the vectors of existing ones (on ``threads``
        threads; default: the collection's num_threads)."""
        if len(seqs) == 0:
            return
        threads = threads or self._threads()
        with self.lock:
            self.drain()
            known = self._live.contains(seqs)
            labels = np.asarray(seqs, dtype=np.int64).copy()
            if known.any():
                labels[known] = self._renew(seqs[known])
            self._room_for(len(np.unique(labels)))
            self._hnsw.add_items(vectors, labels, num_threads=threads)
            self.churn += int(known.sum())
            self._live.add(seqs)
            if self._mirror is not None:
                self._mirror.set(seqs, vectors)
            self.unsaved += len(seqs)

    def _renew(self, seqs: np.ndarray) -> np.ndarray:
        """Under the lock, for live records in the graph getting a new vector: their
        labels of the next generation (see GENERATION_SHIFT), their old nodes marked
        deleted."""
        old = self._label_of(seqs)
        labels = (old & SEQ_MASK) + (((old >> GENERATION_SHIFT) + 1) << GENERATION_SHIFT)
        for label in np.unique(old).tolist():
            self._hnsw.mark_deleted(label)
        self._moved.update(zip(seqs.tolist(), labels.tolist(), strict=True))
        return labels

    def _room_for(self, extra: int) -> None:
        """Under the lock: capacity for ``extra`` more nodes. Deleted slots are not reused
        (hnswlib's slot replacement can leave records unreachable); the owner rebuilds
        the graph when they pile up (free_slots)."""
        cap = self._hnsw.get_max_elements()
        needed = self._hnsw.get_current_count() + extra
        if needed > cap:
            factor = max(float(self.params.get("resize_factor") or 1.2), 1.2)
            self._hnsw.resize_index(max(needed, math.ceil(cap * factor)))

    def defer(self, seqs: np.ndarray, vectors: np.ndarray) -> None:
        """Set vectors as ``upsert`` does, but leave them in the tail (searched exactly)
        for ``apply_pending`` to put in the graph: a write need not wait for it.

        A record already in the graph has its old node marked deleted now, so no search
        finds its old vector; its new one goes in under the next generation's label.

        A change of up to INBOX_MAX_ROWS records does not wait for the lock, which a
        step of the graph's insertion holds for milliseconds: it goes to the inbox, and
        the lock's next holder makes it before it does anything else (_IndexLock).
        Waiting there cost an add of 100 records some 4 ms of its 20 while the graph
        took the write before it, an update of 100 some 7 ms of 11.
        """
        self._hand_over(seqs, vectors)

    def _hand_over(self, seqs: np.ndarray, vectors: np.ndarray | None) -> None:
        """A change (``vectors`` set, or the records removed when None): to the inbox,
        or made under the lock past INBOX_MAX_ROWS."""
        if len(seqs) == 0:
            return
        seqs = np.array(seqs, np.int64)
        if len(seqs) <= INBOX_MAX_ROWS:
            # Copied: the caller's arrays may change after the write returns.
            vecs = None if vectors is None else np.array(vectors, dtype=np.float32)
            inbox = self._inbox
            with inbox.guard:
                inbox.items.append((seqs, vecs))
                inbox.ops += 1
                inbox.rows += 0 if vecs is None else len(seqs)
        else:
            with self.lock:
                self._make(seqs, vectors)
        self.unsaved += len(seqs)

    def _make(self, seqs: np.ndarray, vectors: np.ndarray | None) -> None:
        """Under the lock: one change, from the write itself or from the inbox."""
        if vectors is None:
            self._remove_seqs(seqs)
        else:
            self._set_vectors(seqs, vectors)

    def _set_vectors(self, seqs: np.ndarray, vectors: np.ndarray) -> None:
        """Under the lock: ``defer``'s change."""
        in_tail = self._tail.contains(seqs)
        known = self._live.contains(seqs) & ~in_tail
        labels = seqs.copy()
        if known.any():
            labels[known] = self._renew(seqs[known])
        if in_tail.any():
            labels[in_tail] = self._tail.labels[self._tail.rows_of(seqs[in_tail])]
        self._tail.set(seqs, labels, self._prepare(vectors).astype(np.float32, copy=False))
        self.churn += int(known.sum())
        self._live.add(seqs)
        if self._mirror is not None:
            self._mirror.set(seqs, vectors)

    def _absorb(self) -> None:
        """Under the lock: make the inbox's changes, in the order they came. Should that
        fail (memory), the index says it is behind the log (lsn -1) from then on, even
        if the writer whose change it was stamps its lsn after, so the keeper builds it
        again before it answers."""
        inbox = self._inbox
        with inbox.guard:
            items, inbox.items = inbox.items, []
        try:
            for seqs, vectors in items:
                self._make(seqs, vectors)
                with inbox.guard:
                    inbox.ops -= 1
                    inbox.rows -= 0 if vectors is None else len(seqs)
        except BaseException:
            self._damaged = True
            raise

    @property
    def pending(self) -> int:
        """Records whose current vector is not yet in the graph (tail and inbox)."""
        return len(self._tail) + self._inbox.rows

    @property
    def behind(self) -> bool:
        """Whether the graph lacks a change: vectors in the tail, or changes in the inbox
        (a removal too, whose churn worn() counts only once it is made)."""
        return bool(len(self._tail) or self._inbox.ops)

    def apply_pending(self, limit: int, threads: int | None = None) -> int:
        """Put up to ``limit`` of the oldest tail records in the graph; returns how many.

        Holds the lock throughout (hnswlib's insertion is not safe beside its search),
        so a caller keeps ``limit`` small enough for searches waiting on it.
        """
        with self.lock:
            rows, labels, vecs = self._tail.first(limit)
            if len(rows) == 0:
                return 0
            self._room_for(len(rows))
            self._hnsw.add_items(vecs, labels, num_threads=threads or self._threads())
            self._tail.taken(rows)
            return len(rows)

    def drain(self) -> None:
        """Put the whole tail in the graph now."""
        with self.lock:
            while self._tail:
                self.apply_pending(len(self._tail))

    def _label_of(self, seqs: np.ndarray) -> np.ndarray:
        """The hnswlib labels of live ``seqs``."""
        seqs = np.asarray(seqs, dtype=np.int64)
        if not self._moved:
            return seqs
        moved = self._moved
        return np.fromiter((moved.get(s, s) for s in seqs.tolist()), np.int64, len(seqs))

    def _allowed(self, allowed: set[int]) -> Callable[[int], bool]:
        """hnswlib's filter callback (it passes labels) for a set of seqs."""
        if not self._moved:
            return allowed.__contains__
        return lambda label: (label & SEQ_MASK) in allowed

    @property
    def free_slots(self) -> int:
        """Slots still held by deleted records (in memory and in snapshots)."""
        with self.lock:
            return int(self._hnsw.get_current_count()) - (len(self) - len(self._tail))

    def worn(self) -> bool:
        """Whether the graph has seen enough deletes and in-place updates to rebuild it.

        Both leave hnswlib's graph less connected (tombstones still route searches; an
        updated node keeps links chosen for its old position), and records start to be
        missed even by their own vector. Measured on 24 randomised write histories of
        ~2,500 records: 22 such misses over 1,440 checks with the line at half the live
        records (and 1,024), 8 at a quarter (and 256), 6 at a fifth (and 64). A quarter
        costs about four re-inserts per churned record; a fresh graph is also smaller.

        Read without the lock: every write asks after its change, and waiting here for
        a step of the graph's insertion (which holds the lock) cost a write of 100
        records 4 ms. The counts are of the changes made: one still in the inbox counts
        once made (whether a changed record was in the graph or still in the tail is
        known only then), so the keeper asks again after making them (apply_behind).
        A rebuild's own start is guarded by the keeper's job list, not by this answer.
        """
        return self.churn > max(WORN_MIN, len(self._live) // WORN_SHARE)

    def remove(self, seqs: np.ndarray) -> None:
        """Drop records: through the inbox for up to INBOX_MAX_ROWS, as ``defer``."""
        self._hand_over(seqs, None)

    def _remove_seqs(self, seqs: np.ndarray) -> None:
        """Under the lock: ``remove``'s change."""
        gone = self._live.remove(seqs)
        # A record in the tail has no node of its own yet (an old one, if it had one,
        # was marked deleted when its new vector came).
        in_graph = gone[~self._tail.remove(gone)]
        for label in self._label_of(in_graph).tolist():
            self._hnsw.mark_deleted(label)
        for s in gone.tolist() if self._moved else ():
            self._moved.pop(s, None)
        if self._mirror is not None:
            self._mirror.remove(seqs)
        self.churn += len(in_graph)

    # ------------------------------------------------------------ exact-search mirror

    def ensure_mirror(self, loader: Loader) -> None:
        with self.lock:
            if self._mirror is not None:
                return
            mirror = Mirror(self.dim, self.space == "cosine")
            mirror.reserve(len(self))
            with contextlib.closing(loader()) as chunks:
                for seqs, vectors in chunks:
                    mirror.set(seqs, vectors)
            self._mirror = mirror

    def has_mirror(self) -> bool:
        return self._mirror is not None

    def defer_mirror(self) -> None:
        """Let the mirror go until ``install_mirror`` (see ``mirror_deferred``)."""
        with self.lock:
            self.mirror_deferred = True
            self._mirror = None

    def resume_mirror(self) -> None:
        """End a deferral: the next exact search builds the mirror if it has none."""
        with self.lock:
            self.mirror_deferred = False

    def install_mirror(self, mirror: Mirror) -> bool:
        """Use ``mirror``, built beside the index, if it holds exactly its records (the
        caller brought it to this index's lsn); ends a deferral either way."""
        with self.lock:
            self.mirror_deferred = False
            if self._mirror is not None or not np.array_equal(mirror.live_seqs(), self.universe()):
                return False
            self._mirror = mirror
            return True

    def drop_mirror(self) -> None:
        """Free the mirror (it is rebuilt from SQLite if an exact search needs it)."""
        with self.lock:
            self._mirror = None

    def universe(self) -> np.ndarray:
        """Sorted seqs of every record in the index (an array later writes leave as it is)."""
        with self.lock:
            return self._live.array()

    # ------------------------------------------------------------ search

    def knn(
        self,
        queries: np.ndarray,
        k: int,
        allowed: set[int] | None = None,
        ef: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Approximate k-NN (the graph's, merged with the tail's exact answer); None when
        hnswlib cannot return its share of k results (use exact)."""
        with self.lock:
            k = min(k, len(self))
            graph_k = min(k, len(self) - len(self._tail))
            labels: np.ndarray = np.empty((len(queries), 0), np.int64)
            dists: np.ndarray = np.empty((len(queries), 0), np.float32)
            if graph_k > 0:
                base = int(self.params["ef_search"])
                self._hnsw.set_ef(max(base, k, ef or 0))
                try:
                    if allowed is None:
                        threads = 1 if len(queries) == 1 else self._threads()
                        labels, dists = self._hnsw.knn_query(
                            queries, k=graph_k, num_threads=threads
                        )
                    else:
                        labels, dists = self._hnsw.knn_query(
                            queries, k=graph_k, num_threads=1, filter=self._allowed(allowed)
                        )
                except RuntimeError:
                    return None
                finally:
                    self._hnsw.set_ef(base)
                labels = labels.astype(np.int64) & SEQ_MASK
            if not self._tail or k == 0:
                return labels, dists
            part = self._tail.view()
            keep = None
            if allowed is not None:
                keep = np.fromiter((x in allowed for x in part[0].tolist()), bool, len(part[0]))
            q = self._prepare(queries).astype(np.float32)
            near = _tail_nearest(self.space, q, k, part, keep)
        merged = [_merge((labels[i], dists[i]), near[i], k) for i in range(len(q))]
        return np.stack([m[0] for m in merged]), np.stack([m[1] for m in merged])

    def knn_postfilter(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray | Callable[[np.ndarray], np.ndarray],
        fetch: int,
        beam: int,
    ) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Per query, the first ``k`` of its ``fetch`` unfiltered neighbours that are in
        ``allowed`` (sorted seqs), or None where fewer than ``k`` of them are.
        ``allowed`` may be a function giving, of the sorted neighbours' seqs, the
        sorted ones that are allowed: then no set of every allowed record is needed.

        The allowed neighbours among the true nearest ``fetch`` are exactly the nearest
        allowed records, so this is filtered search at plain HNSW speed whenever enough
        of them land in that window (see ``_planning.postfilter_fetch``).
        """
        with self.lock:
            fetch = min(fetch, len(self))
            graph_fetch = min(fetch, len(self) - len(self._tail))
            seqs: np.ndarray = np.empty((len(queries), 0), np.int64)
            dists: np.ndarray = np.empty((len(queries), 0), np.float32)
            if graph_fetch > 0:
                base = int(self.params["ef_search"])
                self._hnsw.set_ef(max(base, fetch, beam))
                threads = 1 if len(queries) == 1 else self._threads()
                try:
                    labels, dists = self._hnsw.knn_query(
                        queries, k=graph_fetch, num_threads=threads
                    )
                except RuntimeError:  # fewer than `fetch` reachable: let the caller fall back
                    return [None] * len(queries)
                finally:
                    self._hnsw.set_ef(base)
                seqs = labels.astype(np.int64) & SEQ_MASK
            if self._tail and fetch > 0:
                # The window is the nearest `fetch` of the graph's and the tail's records.
                q = self._prepare(queries).astype(np.float32)
                near = _tail_nearest(self.space, q, fetch, self._tail.view())
                merged = [_merge((seqs[i], dists[i]), near[i], fetch) for i in range(len(q))]
                seqs = np.stack([m[0] for m in merged])
                dists = np.stack([m[1] for m in merged])
        if seqs.shape[1] == 0:
            return [None] * len(queries)
        out: list[tuple[np.ndarray, np.ndarray] | None] = []
        if callable(allowed):
            allowed = allowed(np.unique(seqs))
        if len(allowed) == 0:
            return [None] * len(queries)
        for row_seqs, row_dists in zip(seqs, dists, strict=True):
            keep = np.flatnonzero(member(row_seqs, allowed))[:k]
            out.append((row_seqs[keep], row_dists[keep]) if len(keep) == k else None)
        return out

    def exact(
        self, queries: np.ndarray, k: int, seqs: np.ndarray
    ) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
        """True k nearest among ``seqs``, per query (lists: rows may be shorter than k).

        Needs the mirror, built beforehand with ``ensure_mirror``; None if it is gone
        since (dropped, or taken by the index that replaced this one). The lock is held
        throughout: a write may compact the mirror, which moves its rows.
        """
        q = self._prepare(queries).astype(np.float32)
        with self.lock:
            mirror = self._mirror
            if mirror is None:
                return None
            rows = mirror.rows(seqs)
            k = min(k, len(rows))
            if k == 0:
                return [np.empty(0, np.int64)] * len(q), [np.empty(0, np.float32)] * len(q)
            approx, slack = mirror.scores(rows, q, self.space == "l2")
            out_labels, out_dists = [], []
            for i in range(len(q)):
                if slack is None:
                    # Exact float32 scores: a few more than k by the fast formula, then
                    # ranked by the distance itself.
                    pick = min(len(rows), k + RERANK_EXTRA)
                    if pick < len(rows):
                        cand = rows[np.argpartition(approx[i], pick - 1)[:pick]]
                    else:
                        cand = rows
                    full = mirror.vecs[cand]
                else:
                    # bfloat16 scores with bounds: every row whose lowest possible score
                    # is within the k-th best highest possible one may be in the answer.
                    upper = approx[i] + slack[i]
                    bound = np.partition(upper, k - 1)[k - 1]
                    cand = rows[approx[i] - slack[i] <= bound]
                    full = self._full_vectors(mirror.seqs[cand])
                d = self.distances(q[i], full)
                order = np.argsort(d, kind="stable")[:k]
                out_labels.append(mirror.seqs[cand[order]])
                out_dists.append(d[order])
            return out_labels, out_dists

    def _full_vectors(self, seqs: np.ndarray) -> np.ndarray:
        """float32 vectors of live labels, from hnswlib's copy (normalised for cosine,
        as the mirror's are). Slow per row: for the few rows a bound leaves open."""
        if len(seqs) == 0:
            return np.empty((0, self.dim), np.float32)
        in_tail = self._tail.contains(seqs)
        if not in_tail.any():
            labels = self._label_of(seqs)
            return np.asarray(self._hnsw.get_items(labels, return_type="numpy"), np.float32)
        out = np.empty((len(seqs), self.dim), np.float32)
        out[in_tail] = self._tail.vectors_of(seqs[in_tail])
        if not in_tail.all():
            labels = self._label_of(seqs[~in_tail])
            out[~in_tail] = self._hnsw.get_items(labels, return_type="numpy")
        return out

    def distances(self, q: np.ndarray, vecs: np.ndarray) -> np.ndarray:
        return space_distances(self.space, q, vecs)

    # ------------------------------------------------------------ persistence

    def save(self, directory: Path) -> int:
        """Write a snapshot of the index as it is now; older snapshots are removed.
        Returns the lsn it is stamped with (the index may be further on by then).

        The index's lock, which searches take, is held only while hnswlib writes its
        file to a scratch file and the labels are read (0.1 s at 100k x 384): reading
        that file back, compressing, writing and fsyncing the snapshot come after, so
        queries do not wait for the disk. Callers do not save one index from two
        threads at once (the keeper saves under the store lock).
        """
        with self.lock:
            self.drain()
            lsn, rebuilt, unsaved = self.lsn, self.rebuilt, self.unsaved
            directory.mkdir(parents=True, exist_ok=True)
            final = directory / f"{SNAPSHOT_PREFIX}{lsn:020d}"
            if final.exists() and not rebuilt:
                if snapshot_format(final) == SNAPSHOT_FORMAT:
                    self.unsaved = 0
                    return lsn
                shutil.rmtree(final, ignore_errors=True)  # an older format at this lsn
            tmp = directory / f".tmp-{os.getpid()}-{threading.get_ident()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            graph, labels = tmp / GRAPH_FILE, tmp / LABELS_FILE
            scratch = graph.with_name(graph.name + ".scratch")
            self._hnsw.save_index(str(scratch))
            live = self._label_of(self.universe())
            count, churn = len(self), self.churn
            search = {"num_threads": int(self._hnsw.num_threads), "ef": int(self._hnsw.ef)}
        state = self._write_graph(scratch, graph, live, search)
        np.save(labels, live)
        manifest = {
            "format": SNAPSHOT_FORMAT,
            "lsn": lsn,
            "space": self.space,
            "dim": self.dim,
            "count": count,
            "churn": churn,
            "hnsw": state,
            # graph.npz needs none of its own: zip checks each member's CRC-32 as
            # np.load reads it (a flipped byte is a BadZipFile), which saves a pass.
            "crc": {LABELS_FILE: crc(labels)},
        }
        (tmp / "manifest.json").write_bytes(orjson.dumps(manifest))
        for f in (graph, labels, tmp / "manifest.json"):
            fsync_path(f)
        fsync_path(tmp)
        if final.exists() and rebuilt:
            # The same records in a fresh graph: it replaces the worn one saved at this
            # lsn. Moved aside first (a rename cannot replace a directory); the loader
            # skips and later removes what a crash leaves in between.
            aside = directory / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
            with contextlib.suppress(OSError):
                os.rename(final, aside)
                shutil.rmtree(aside, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:  # another process wrote the same snapshot first
            shutil.rmtree(tmp, ignore_errors=True)
        fsync_path(directory)
        with self.lock:
            self.unsaved -= unsaved  # changes made meanwhile are not in this snapshot
            if rebuilt:
                self.rebuilt = False
        for old in directory.glob(f"{SNAPSHOT_PREFIX}*"):
            if old.name < final.name:
                shutil.rmtree(old, ignore_errors=True)
        return lsn

    def _write_graph(
        self, scratch: Path, path: Path, live: np.ndarray, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Write hnswlib's state from its index file ``scratch`` (then removed) without
        the vectors of the ``live`` labels; returns its scalar fields, with ``fields``.

        The graph's links are about a tenth of its bytes at 384 dimensions; the rest is
        a float32 copy of every vector, which SQLite holds already. Deleted records'
        vectors are kept, though: SQLite no longer has them, and searches still route
        through them. The file is hnswlib's own (page cache, not process memory),
        streamed a few thousand records at a time: hnswlib's ``__getstate__`` would
        copy the whole index into memory, which made closing set the process's peak.
        """
        try:
            state, parts = state_from_file(scratch, live)
        finally:
            scratch.unlink(missing_ok=True)
        state.update(
            ser_version=1,
            space=self.space,
            dim=self.dim,
            index_inited=True,
            ep_added=state["cur_element_count"] > 0,
            normalize=self.space == "cosine",
            seed=100,
            **fields,
        )
        write_graph(path, parts)
        return state

    @classmethod
    def load(
        cls,
        directory: Path,
        space: str,
        dim: int,
        params: dict[str, Any],
        vectors: Loader,
    ) -> VectorIndex | None:
        """The newest valid snapshot in ``directory``, or None if there is none;
        ``vectors`` yields the collection's vectors from SQLite."""
        if not directory.is_dir():
            return None
        remove_abandoned(directory)
        for snap in sorted(directory.glob(f"{SNAPSHOT_PREFIX}*"), reverse=True):
            with contextlib.suppress(Exception):
                index = cls._load_snapshot(snap, space, dim, params, vectors)
                if index is not None:
                    return index
        return None

    @classmethod
    def _load_snapshot(
        cls, snap: Path, space: str, dim: int, params: dict[str, Any], vectors: Loader
    ) -> VectorIndex | None:
        manifest = orjson.loads((snap / "manifest.json").read_bytes())
        if manifest["space"] != space or manifest["dim"] != dim:
            return None
        if manifest.get("format") not in READABLE_FORMATS:
            return None  # an older format: rebuilt from SQLite, once
        for name, expected in manifest["crc"].items():
            if crc(snap / name) != expected:
                return None
        live = np.load(snap / LABELS_FILE)
        if len(live) != manifest["count"]:
            return None
        index = cls.__new__(cls)
        index.space, index.dim, index.params = space, dim, params
        index.lsn = int(manifest["lsn"])
        index.churn = int(manifest.get("churn", 0))
        index._live = _LiveSeqs(np.sort(live & SEQ_MASK))
        index._start_lock()
        index._moved = {int(x) & SEQ_MASK: int(x) for x in live[live > SEQ_MASK].tolist()}
        index._hnsw = load_graph(snap / GRAPH_FILE, manifest["hnsw"], space, dim, vectors)
        index._apply_ef()
        index._mirror = None
        index.mirror_deferred = False
        index._tail = _Tail(dim)
        index.unsaved = 0
        index.rebuilt = False
        return index

    def relabeled(self, delta: int, lsn: int, scratch_dir: Path) -> VectorIndex:
        """A copy of this index whose labels are shifted by ``delta`` (a fork's records
        are the same vectors under new seqs), stamped ``lsn``: the graph is reused, not
        rebuilt. hnswlib's own file is written to ``scratch_dir``, each record's label
        patched in place there, and read back (hnswlib rebuilds its label map on load)."""
        scratch_dir.mkdir(parents=True, exist_ok=True)
        scratch = scratch_dir / f"{LOAD_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        try:
            with self.lock:
                self.drain()
                self._hnsw.save_index(str(scratch))
                universe = self.universe()
                moved = dict(self._moved)
                churn = self.churn
            head = np.fromfile(scratch, dtype=HEADER, count=1)[0]
            n, size = int(head["cur_element_count"]), int(head["size_data_per_element"])
            lab = int(head["label_offset"])
            if n:
                records = np.memmap(
                    scratch, dtype=np.uint8, mode="r+", offset=HEADER.itemsize, shape=(n, size)
                )
                labels = records[:, lab : lab + 8].view("<u8")
                labels += np.uint64(delta)
                records.flush()
                del labels, records
            graph = hnswlib.Index(space=hnsw_space(self.space), dim=self.dim)
            graph.load_index(str(scratch))
        finally:
            scratch.unlink(missing_ok=True)
        copy = VectorIndex.__new__(VectorIndex)
        copy.space, copy.dim, copy.params = self.space, self.dim, self.params
        copy.lsn, copy.churn = lsn, churn
        # A label is a seq plus its generation in the bits from 40 up: shifted alike.
        copy._live = _LiveSeqs(universe + delta)
        copy._start_lock()
        copy._moved = {seq + delta: label + delta for seq, label in moved.items()}
        copy._hnsw = graph
        copy._apply_ef()
        copy._mirror = None
        copy.mirror_deferred = False
        copy._tail = _Tail(self.dim)
        copy.unsaved = len(universe) or 1
        copy.rebuilt = False
        return copy

    @staticmethod
    def discard(directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)
