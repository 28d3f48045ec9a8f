"""The index keeper: the only owner of each collection's in-memory vector index.

SQLite is the truth; an index is derived data, caught up with the change log before it
answers (``current``). The keeper loads indexes from their snapshots (or rebuilds them
from SQLite), applies each committed write to them (``after_write``), writes snapshots
and prunes the log they cover, replaces graphs worn by deletes on a thread of its own,
and loads indexes behind queries. Lock order, everywhere: the store's lock first, then
an index's own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._exact import Mirror, release_free_heap
from .._index import IndexDamaged, VectorIndex, graph_seed, scan_knn
from .._storage import OP_SET, CollectionRow, Store
from ..errors import NotFoundError, TintError

__all__ = ["APPLY_STEP", "CLOSE_REPLAY_SHARE", "TAIL_MAX", "IndexKeeper"]

log = logging.getLogger("tintdb")

# close() snapshots an index only if more than 1/CLOSE_REPLAY_SHARE of its records
# changed since its last snapshot; fewer are replayed from the log by the next open, on
# the load behind its first query (a snapshot costs several microseconds a record, a
# replayed change a fraction of a millisecond: see docs/internals.md, "Vectors,
# snapshots and the log").
CLOSE_REPLAY_SHARE = 50
# A worn graph rebuilt behind the writes is filled this many records at a time, so that
# closing the store never waits long for it, and so that the vectors read for a step
# (held twice, as SQLite's blocks and as an array) stay small beside the two graphs:
# steps of 8,192 added about 20 MB to the peak at 100k x 384. One of at most
# REBUILD_NOW_BELOW live records is rebuilt inside the write (quick at that size).
REBUILD_STEP = 1024
REBUILD_NOW_BELOW = 2048
# Rows of vectors read from SQLite at a time by an exact search without a mirror.
EXACT_READ_ROWS = 4096
# A mirror of at most this many bytes of float32 vectors (about 21,800 records at 384
# dimensions, some 80 ms to read) is built inside the exact search that first needs
# it; a larger one behind the calls (IndexKeeper.mirror_behind_first).
MIRROR_INLINE_BYTES = 32 << 20
# A write's vectors wait in the index's tail (searched exactly) until a thread of the
# keeper puts them in the graph, APPLY_STEP at a time: each step holds the index's lock,
# so a query arriving meanwhile waits for one step at most (about ten milliseconds at
# 100k records), not for a whole write. A tail past TAIL_MAX (an exact scan of it costs
# each query a few milliseconds) is put in the graph by the write that made it so.
APPLY_STEP = 64
TAIL_MAX = 16_384

Jobs = dict[str, tuple[threading.Thread, int]]


class IndexKeeper:
    """Per-collection indexes of one store, kept in step with its change log."""

    def __init__(self, store: Store, path: Path | None) -> None:
        self.store = store
        self.path = path
        self.indexes: dict[str, VectorIndex] = {}
        # Indexes being loaded on a thread of their own (see load_behind), and worn
        # graphs being rebuilt (see replace_worn), each thread with the lsn it started
        # at (a rebuild's holds back log pruning; see snapshot).
        self.loading: Jobs = {}
        self.rebuilding: Jobs = {}
        self.applying: Jobs = {}  # tails being put in their graphs (see apply_behind)
        self.mirroring: Jobs = {}  # exact-search mirrors being read (see exact)
        self._jobs_lock = threading.Lock()
        self.closing = False
        # Writes of this process between their commit and the index taking them:
        # collection id -> (the lsn before, the lsn committed). See committing.
        self._in_flight: dict[str, tuple[int, int]] = {}
        self._taken = threading.Condition()

    @contextlib.contextmanager
    def committing(self, collection_id: str, prev_lsn: int, lsn: int) -> Iterator[None]:
        """Around the commit of a write and its handing to the index (under the store
        lock). A query on another thread that reads the catalog row after the commit
        (it does not wait for the store lock, see Store.quick_read) finds the index one
        write behind: it waits for this write to be taken (current), not for the store
        lock, which the next write may take first."""
        with self._taken:
            self._in_flight[collection_id] = (prev_lsn, lsn)
        try:
            yield
        finally:
            with self._taken:
                self._in_flight.pop(collection_id, None)
                self._taken.notify_all()

    def _taken_meanwhile(self, col: CollectionRow, index: VectorIndex) -> bool:
        """Whether ``index``, one write of this process behind ``col``'s row, has taken
        that write by the time this returns (waiting for it if it is in flight)."""
        with self._taken:
            while True:
                if self.indexes.get(col.id) is not index:
                    return False
                if index.lsn >= col.last_lsn:
                    return True
                flight = self._in_flight.get(col.id)
                if flight is None or flight != (index.lsn, col.last_lsn):
                    return False
                self._taken.wait(1.0)

    def get(self, collection_id: str) -> VectorIndex | None:
        """The collection's index if it is in memory, as it is (maybe behind the log)."""
        return self.indexes.get(collection_id)

    def __contains__(self, collection_id: str) -> bool:
        return collection_id in self.indexes

    def forget(self, collection_id: str) -> None:
        """Drop the in-memory index (its snapshot stays): the next call reloads it."""
        self.indexes.pop(collection_id, None)

    def start_empty(self, col: CollectionRow, dim: int) -> None:
        """Inside a collection's first write: start its (empty) index now, so its first
        vectors are indexed from the arrays in hand rather than read back from SQLite.
        Its exact-search mirror waits for the first exact search (see exact): a
        collection that is never searched exactly never holds one."""
        if col.last_lsn == 0 and col.id not in self.indexes:
            self.indexes[col.id] = self._new_index(col, dim)

    @staticmethod
    def _new_index(col: CollectionRow, dim: int) -> VectorIndex:
        """An empty graph for ``col``: its level draw seeded from the collection's id
        (graph_seed), no exact-search mirror until an exact search needs one."""
        return VectorIndex(
            col.space, dim, col.configuration["hnsw"], mirror=False, seed=graph_seed(col.id)
        )

    def touched(self, col: CollectionRow, prev_lsn: int, lsn: int) -> None:
        """A committed write that changed no vector: an index that was current moves to
        its lsn (nothing to replay); one behind replays the log when next asked."""
        index = self.indexes.get(col.id)
        if index is not None and index.lsn == prev_lsn:
            index.lsn = lsn

    def adopt_fork(self, forked: CollectionRow, index: VectorIndex, shift: int) -> None:
        """After a fork committed: the fork's index is ``index`` (the source's, current)
        with its labels shifted by ``shift``. Derived data: if the copy fails, the fork's
        index is built from SQLite on first need instead."""
        scratch = self.path / "index" if self.path is not None else None
        try:
            self.indexes[forked.id] = index.relabeled(
                shift, forked.last_lsn, scratch or Path(tempfile.gettempdir())
            )
        except Exception:
            log.exception("could not copy the index of its source into fork %s", forked.id)

    def set_params(self, collection_id: str, hnsw: dict[str, Any]) -> None:
        index = self.indexes.get(collection_id)
        if index is not None:
            index.set_params(hnsw)

    def stop(self) -> None:
        """No more work behind the calls; wait for what runs."""
        with self._jobs_lock:
            self.closing = True
        self.wait_jobs()

    def wait_jobs(self) -> None:
        """Return once every index load and rebuild running behind the calls is done
        (in memory, given up or failed)."""
        while True:  # a job may start another (the apply thread a rebuild) before it ends
            with self._jobs_lock:
                jobs = [
                    *self.loading.values(),
                    *self.rebuilding.values(),
                    *self.applying.values(),
                    *self.mirroring.values(),
                ]
                me = threading.current_thread()
                running = [t for t, _ in jobs if t.is_alive() and t is not me]
            if not running:
                return
            for thread in running:
                thread.join()

    def close(self) -> None:
        """Under the store lock: snapshot the indexes whose log replay would cost more
        than the snapshot (see CLOSE_REPLAY_SHARE), one index in memory at a time."""
        for cid in list(self.indexes):
            # The mirror goes first: writing the snapshot copies hnswlib's state, and
            # the two together would set the process's peak memory.
            try:
                self.indexes[cid].drop_mirror()
                self.snapshot(cid, closing=True)
            except (TintError, OSError, IndexDamaged):  # gone, or the disk refused
                log.warning("could not snapshot the index of collection %s", cid)
            del self.indexes[cid]

    def clear(self) -> None:
        """Under the store lock, after the store was emptied: forget every index."""
        self.indexes.clear()
        if self.path is not None:
            VectorIndex.discard(self.path / "index")

    def vacuum(self) -> None:
        """Under the store lock: rebuild worn graphs now and snapshot every index."""
        for cid in list(self.indexes):
            self.replace_worn(self.store.collection_by_id(cid), wait=True)
            self.snapshot(cid, force=True)

    def drop(self, collection_id: str) -> None:
        self.indexes.pop(collection_id, None)
        if self.path is not None:
            VectorIndex.discard(self.directory(collection_id))

    def directory(self, collection_id: str) -> Path:
        assert self.path is not None
        return self.path / "index" / collection_id

    def loader(self, col: CollectionRow, rows: int = 4096) -> Any:
        dim = col.dimension
        assert dim is not None

        def load() -> Generator[tuple[np.ndarray, np.ndarray], None, None]:
            with self.store.read():
                yield from self.store.vector_chunks(col.coll, dim, rows=rows)

        return load

    def exact(
        self, col: CollectionRow, index: VectorIndex, q: np.ndarray, k: int, cand: np.ndarray
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Exact search over ``cand``, building the mirror on first use: here if it is
        small, else behind the call (see mirror_behind_first)."""
        while True:
            # Locks are always taken store first, then index (as writes do): build the
            # mirror under the store lock so its loader never waits on it from inside.
            # An index with its mirror in needs neither (a write on another thread holds
            # the store lock until it commits): if the mirror goes meanwhile,
            # index.exact says so and the loop comes back here.
            if index.has_mirror() and not index.mirror_deferred:
                deferred = False
            else:
                with self.store.lock:
                    deferred = index.mirror_deferred or self.mirror_behind_first(col, index)
                    if not deferred:
                        index.ensure_mirror(self.loader(col))
            if deferred:  # being read behind, or a graph being replaced (_rebuild_behind)
                return self._exact_from_store(col, q, k, cand)
            found = index.exact(q, k, cand)
            if found is not None:
                return found
            # The mirror went in between: let go for a rebuild, or the graph was
            # replaced by a fresh one (holding the same records or more recent ones).
            with self.store.lock:
                index = self.indexes.get(col.id, index)

    def mirror_behind_first(self, col: CollectionRow, index: VectorIndex) -> bool:
        """Under the store lock, for an index that may have no mirror: if it has none
        and its vectors pass MIRROR_INLINE_BYTES (a store on disk), start reading one
        behind the calls and say so; exact searches read SQLite until it is in.

        Read inside the first exact search, under the store lock, a mirror stalled that
        search and every call behind it: 0.4 s at 100k x 384, seconds at 1M.
        """
        assert col.dimension is not None
        if self.path is None or index.has_mirror():
            return False
        if len(index) * col.dimension * 4 <= MIRROR_INLINE_BYTES:
            return False
        index.defer_mirror()

        def read() -> None:
            try:
                self._mirror_behind(col, index, during_rebuild=False)
            except Exception:  # the next exact search tries again
                log.exception("reading the exact-search mirror of %s failed", col.id)
            finally:
                index.resume_mirror()

        if not self._run_behind(self.mirroring, col.id, read, index.lsn):
            index.resume_mirror()  # closing, or one is being read: SQLite meanwhile
        return True

    def _exact_from_store(
        self, col: CollectionRow, q: np.ndarray, k: int, cand: np.ndarray
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Exact search over ``cand`` with SQLite's vectors, a block at a time (an index
        without its mirror: see VectorIndex.mirror_deferred). On disk it reads on a
        connection of its own: writes need not wait for it."""
        assert col.dimension is not None
        with contextlib.ExitStack() as stack:
            store = self.store if self.path is None else stack.enter_context(self.store.reader())
            stack.enter_context(store.read())
            chunks = store.vector_chunks(col.coll, col.dimension, cand, rows=EXACT_READ_ROWS)
            return scan_knn(col.space, q, k, chunks)

    def current(self, col: CollectionRow, *, row_is_fresh: bool = False) -> VectorIndex | None:
        """The collection's index, caught up with every committed change (None if empty).

        ``row_is_fresh``: ``col`` was read from SQLite by this very call, so its
        ``last_lsn`` is the store's as of that read; an index at that lsn is current
        without reading the lsn again (the common case of a query: no transaction).
        """
        if row_is_fresh:
            index = self.indexes.get(col.id)
            if index is not None and (
                index.lsn == col.last_lsn or self._taken_meanwhile(col, index)
            ):
                return index
        # One read transaction: the log floor and the ops replayed come from one snapshot,
        # so another process pruning the log in between cannot hide changes.
        with self.store.lock, self.store.read():
            state = self.store.lsn_state(col.id)
            if state is None:
                self.drop(col.id)
                raise NotFoundError(f"Collection [{col.id}] does not exist.")
            last_lsn, floor = state
            index = self.indexes.get(col.id)
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
                        self.directory(col.id),
                        col.space,
                        col.dimension,
                        hnsw,
                        self.loader(col, rows=0),
                    )
                if index is None or index.lsn < floor or index.lsn > last_lsn:
                    index = self.rebuild(col)
                    assert index is not None
            self.catch_up(col, index)
            self.indexes[col.id] = index
            return index

    def rebuild(self, col: CollectionRow, *, behind: bool = False) -> VectorIndex | None:
        """A fresh index of the collection as SQLite holds it, stamped with the lsn read.

        ``behind``: built on a thread of its own while writes go on. SQLite is read on a
        connection of its own (the store lock stays free), insertion leaves one core to
        the caller's work, and it gives up (None) when the backend starts closing.
        """
        assert col.dimension is not None
        # Its mirror comes with the first exact search; behind the writes, the fresh
        # graph replaces a worn one and gets its mirror once the worn one is gone
        # (_mirror_behind).
        index = self._new_index(col, col.dimension)
        index.mirror_deferred = behind
        threads = None  # inside a call: num_threads as set
        if behind:
            configured = int(col.configuration["hnsw"].get("num_threads") or 0)
            threads = configured or max(1, (os.cpu_count() or 2) - 1)
        if behind and self.path is not None:
            # No copy of every vector beside the two graphs (the worn one answers
            # meanwhile).
            read = self._read_behind(
                col, index.reserve, lambda seqs, vecs: index.upsert(seqs, vecs, threads=threads)
            )
            if read is None:
                return None
            total, lsn = read
        else:
            with self.store.read():
                lsn = self.store.lsn_state(col.id)
                seqs, vecs = self.store.vectors(col.coll, None, col.dimension)
            total = len(seqs)
            step = REBUILD_STEP if behind else max(total, 1)  # inside a call: at once
            index.reserve(total)
            for start in range(0, total, step):
                if behind and self.closing:
                    return None
                part = slice(start, start + step)
                index.upsert(seqs[part], vecs[part], threads=threads)
        index.lsn = lsn[0] if lsn else 0
        index.unsaved = total or 1
        index.rebuilt = True
        return index

    def catch_up(self, col: CollectionRow, index: VectorIndex) -> None:
        changes = self._changes_since(col, index.lsn)
        if changes is None:
            return
        gone, found, vecs, lsn = changes
        index.remove(gone)
        index.upsert(found, vecs)
        index.lsn = lsn

    def _changes_since(
        self, col: CollectionRow, lsn: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int] | None:
        """What the log holds after ``lsn``, each record's last change: (seqs gone,
        seqs set, their vectors, the last lsn); None if nothing."""
        assert col.dimension is not None
        with self.store.read():
            ops = self.store.ops_since(col.coll, lsn)
            if not ops:
                return None
            final: dict[int, int] = {}
            for _, kind, seqs in ops:
                for s in seqs.tolist():
                    final[s] = kind
            to_set = np.array([s for s, k in final.items() if k == OP_SET], dtype=np.int64)
            found, vecs = self.store.vectors(col.coll, to_set, col.dimension)
        gone = np.array(sorted(set(final) - set(found.tolist())), dtype=np.int64)
        return gone, found, vecs, ops[-1][0]

    def after_write(
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
        index = self.indexes.get(col.id)
        if index is None or index.lsn != prev_lsn:
            # Not current (first write, or another process wrote in between): load or
            # build it and replay the log, so the index never falls behind the data.
            try:
                self.current(col)
            except Exception:
                log.exception("index catch-up failed; it will be rebuilt from the log")
                self.indexes.pop(col.id, None)
                return
            self.replace_worn(col)
            self.snapshot(col.id)
            return
        try:
            if deleted is not None:
                index.remove(deleted)
            if set_seqs is not None and vectors is not None:
                index.defer(set_seqs, vectors)
            # The index answers for this write from here (its vectors are in the tail):
            # a query waiting for it goes on while the graph catches up below.
            index.lsn = lsn
            with self._taken:
                self._taken.notify_all()
            while index.pending > TAIL_MAX:  # the graph fell behind: catch up here
                index.apply_pending(APPLY_STEP)
        except Exception:  # the write is durable; a fresh index will be built from the log
            log.exception("index update failed; it will be rebuilt from the log")
            self.indexes.pop(col.id, None)
            return
        self.replace_worn(col)
        if index.behind:  # made and snapshotted behind the call, worn asked again
            self.apply_behind(col.id)
            return
        try:
            self.snapshot(col.id)
        except IndexDamaged:  # the write is durable; a fresh index will be built from the log
            log.exception("index update failed; it will be rebuilt from the log")
            self.indexes.pop(col.id, None)

    def apply_behind(self, collection_id: str) -> None:
        """Put the index's tail in its graph on a thread of its own, a step at a time,
        until the tail is empty, the index is replaced or dropped, or the keeper closes.

        Then it writes the snapshot the writes would have written (see snapshot). It
        leaves the job list only in the same locked step that sees the tail empty, so a
        write that finds a job listed knows its vectors will be taken.
        """
        index = self.indexes.get(collection_id)
        if index is None or not index.behind:
            return

        def gone() -> bool:
            return self.closing or self.indexes.get(collection_id) is not index

        def apply() -> None:
            try:
                while True:
                    while index.behind and not gone():
                        index.apply_pending(APPLY_STEP)  # makes the inbox's changes first
                        time.sleep(0)  # let a query waiting on the index's lock in first
                    with self.store.lock:
                        if not gone() and not index.behind:
                            try:
                                # The churn of changes made here, now counted.
                                self.replace_worn(self.store.collection_by_id(collection_id))
                                self.snapshot(collection_id)
                            except (TintError, OSError):  # dropped meanwhile, or disk full
                                log.warning("could not snapshot collection %s", collection_id)
                    with self._jobs_lock:
                        if not index.behind or gone():
                            self.applying.pop(collection_id, None)
                            return
            except Exception:  # the tail still answers exactly; a fresh index will do
                log.exception("index insertion failed; it will be rebuilt from the log")
                with self.store.lock:
                    if self.indexes.get(collection_id) is index:
                        self.indexes.pop(collection_id, None)
                with self._jobs_lock:
                    self.applying.pop(collection_id, None)

        with self._jobs_lock:
            if collection_id in self.applying or self.closing:
                return
            thread = threading.Thread(target=apply, name="tintdb-apply", daemon=True)
            self.applying[collection_id] = (thread, index.lsn)
            thread.start()

    def replace_worn(self, col: CollectionRow, *, wait: bool = False) -> None:
        """Replace a graph worn by deletes (tombstones) and in-place updates (see worn())
        with a fresh one, built behind the writes unless ``wait``.

        A rebuild takes about as long as adding every record again (tens of seconds at
        100k); made inside the write that crossed the line, it stalled that write and
        every call behind it. Behind them, the worn graph keeps answering and taking
        writes meanwhile, the fresh one replays the log from where it read SQLite, and
        replaces it. The log is kept from there until then (see snapshot). A graph of
        few live records (a collection emptied by deletes, say) is rebuilt at once.
        """
        index = self.indexes.get(col.id)
        if index is None or not index.worn():
            return
        if wait or len(index) <= REBUILD_NOW_BELOW:
            fresh = self.rebuild(col)
            assert fresh is not None
            self.indexes[col.id] = fresh
            return
        # Referenced weakly behind: once replaced, the worn graph's memory goes back
        # before the fresh one's snapshot is written, not when the thread ends.
        worn = weakref.ref(index)
        self._run_behind(
            self.rebuilding, col.id, lambda: self._rebuild_behind(col, worn), index.lsn
        )

    def _run_behind(
        self, jobs: dict[str, tuple[threading.Thread, int]], cid: str, work: Any, lsn: int = 0
    ) -> bool:
        """Run ``work`` for collection ``cid`` on a thread of its own, listed in ``jobs``
        (with ``lsn``) while it runs; not if one is listed already or the backend closes
        (False). close() and vacuum() wait for them (wait_jobs)."""

        def run() -> None:
            try:
                work()
            finally:
                with self._jobs_lock:
                    jobs.pop(cid, None)

        with self._jobs_lock:
            if cid in jobs or self.closing:
                return False
            thread = threading.Thread(target=run, name="tintdb-behind", daemon=True)
            jobs[cid] = (thread, lsn)
            thread.start()
        return True

    def _rebuild_behind(self, col: CollectionRow, worn_ref: weakref.ref[VectorIndex]) -> None:
        """Build a fresh graph beside the worn one and swap them; then the mirror.

        The process holds at most two graphs and one mirror's worth of vectors at a
        time: the worn graph lets its mirror go first (exact searches read SQLite until
        the fresh graph has one), and the fresh graph's mirror is built once the worn
        graph is gone. With the mirror kept throughout, the rebuild set the peak memory
        of a whole workload (docs/benchmarks.md).
        """
        fresh: VectorIndex | None = None
        try:
            worn = worn_ref()
            if worn is None:
                return
            used = worn.has_mirror() or worn.mirror_deferred  # searched exactly so far
            worn.defer_mirror()
            del worn
            # The fresh graph is the largest allocation of the process's life beside the
            # worn one: first hand back what earlier calls freed (see release_free_heap).
            release_free_heap()
            fresh = self.rebuild(col, behind=True)
            if fresh is None:
                return
            with self.store.lock:
                state = self.store.lsn_state(col.id)
                worn = worn_ref()
                if worn is None or self.indexes.get(col.id) is not worn or state is None:
                    return  # dropped, replaced or reloaded meanwhile: nothing to replace
                if fresh.lsn < state[1]:
                    # Another process pruned the log past the read: the changes since
                    # cannot be replayed. The next write past the line tries again.
                    return
                self.catch_up(col, fresh)
                self.indexes[col.id] = fresh
                del worn  # freed here unless a query still holds it
                release_free_heap()
                self.snapshot(col.id)
            if used:  # else the first exact search reads it, if one ever comes
                self._mirror_behind(col, fresh)
        except Exception:  # the worn graph is still correct; the next write tries again
            log.exception("background rebuild of collection %s failed", col.id)
        finally:
            # Whatever is left without a mirror builds one on its next exact search.
            for index in (worn_ref(), fresh):
                if index is not None:
                    index.resume_mirror()

    def _read_behind(
        self, col: CollectionRow, reserve: Any, put: Any
    ) -> tuple[int, tuple[int, int] | None] | None:
        """The collection's vectors into ``put``, REBUILD_STEP at a time, after
        ``reserve`` of their number: streamed from one read transaction on a connection
        of its own, so no lock is held and no copy of every vector is made. (The number
        of records, (last_lsn, log_floor) as read or None if the collection is gone);
        None if the backend started closing meanwhile."""
        assert col.dimension is not None
        with self.store.reader() as store, store.read():
            state = store.lsn_state(col.id)
            total = store.count(col.coll)
            reserve(total)
            for seqs, vecs in store.vector_chunks(col.coll, col.dimension, rows=REBUILD_STEP):
                if self.closing:
                    return None
                put(seqs, vecs)
        return total, state

    def _mirror_behind(
        self, col: CollectionRow, index: VectorIndex, *, during_rebuild: bool = True
    ) -> None:
        """Give an index its mirror: read from SQLite on a connection of its own (no
        lock held meanwhile), brought to the index's lsn from the log under the store
        lock, then installed. In memory (one connection) it is built on the next exact
        search instead. Not installed into a graph being replaced meanwhile (unless
        ``during_rebuild``: the call that replaces it), which must hold no mirror."""
        assert col.dimension is not None
        if self.path is None:
            return
        mirror = Mirror(col.dimension, col.space == "cosine")
        read = self._read_behind(col, mirror.reserve, mirror.set)
        if read is None or read[1] is None:
            return  # closing, or the collection is gone
        lsn = read[1][0]
        with self.store.lock:
            state = self.store.lsn_state(col.id)
            if self.indexes.get(col.id) is not index or state is None or lsn < state[1]:
                return  # replaced, dropped, or the log pruned past the read meanwhile
            if not during_rebuild and col.id in self.rebuilding:
                return
            changes = self._changes_since(col, lsn)
            if changes is not None:
                gone, found, vecs, _ = changes
                mirror.remove(gone)
                mirror.set(found, vecs)
            index.install_mirror(mirror)

    def snapshot(self, collection_id: str, *, force: bool = False, closing: bool = False) -> None:
        """Persist the index when enough has changed: half its records while writes go
        on, a 1/CLOSE_REPLAY_SHARE when closing; whenever it differs, with ``force``."""
        index = self.indexes.get(collection_id)
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
        upto = index.save(self.directory(collection_id))  # the index may be further on
        for jobs in (self.rebuilding, self.mirroring):
            job = jobs.get(collection_id)
            if job is not None:  # a fresh graph or mirror will replay the log from its read
                upto = min(upto, job[1])
        with self.store.write() as tx:
            tx.prune_log(col, upto)

    def load_behind(self, col: CollectionRow) -> None:
        """Load (or build) the collection's index on a thread of its own."""

        def load() -> None:
            try:
                self.current(col)
            except Exception:  # the next call that needs the index loads it, or says why
                log.debug("background index load failed", exc_info=True)

        self._run_behind(self.loading, col.id, load)
