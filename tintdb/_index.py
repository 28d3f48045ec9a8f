"""The vector index of one collection: derived data, rebuildable from SQLite at any time.

An HNSW graph (hnswlib) whose labels are the records' ``seq`` numbers (plus a
generation, once a record's vector changed), for approximate k-NN, optionally
restricted by a filter callback; beside it the ``Mirror`` for exact search
(``_exact``), kept in step with every change from the first record, or built on first
need after a snapshot is loaded.

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
    "Loader",
    "VectorIndex",
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


class VectorIndex:
    """HNSW + exact-search mirror for one collection."""

    def __init__(self, space: str, dim: int, params: dict[str, Any]) -> None:
        self.space = space
        self.dim = dim
        self.params = params
        self.lsn = 0
        self.churn = 0  # in-place updates and deletes since the graph was built
        self.lock = threading.RLock()
        self._live = _LiveSeqs()
        self._moved: dict[int, int] = {}  # seq -> its label, where that is not the seq
        self._hnsw = hnswlib.Index(space=hnsw_space(space), dim=dim)
        self._hnsw.init_index(
            max_elements=_MIN_CAPACITY,
            ef_construction=int(params["ef_construction"]),
            M=int(params["max_neighbors"]),
        )
        self._apply_ef()
        # A new index keeps its mirror in step from the first record: the vectors pass
        # through here anyway. One loaded from a snapshot builds it on first need.
        self._mirror: Mirror | None = Mirror(dim, space == "cosine")
        self.unsaved = 0
        # A graph built afresh from SQLite, not yet saved: a snapshot at its lsn (of the
        # graph it replaced) is replaced by it, not kept.
        self.rebuilt = False

    # ------------------------------------------------------------ basics

    def __len__(self) -> int:
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
            known = self._live.contains(seqs)
            labels = np.asarray(seqs, dtype=np.int64).copy()
            if known.any():
                # A changed vector: a new node under the next generation's label, the old
                # node marked deleted (see GENERATION_SHIFT).
                old = self._label_of(seqs[known])
                labels[known] = (old & SEQ_MASK) + (
                    ((old >> GENERATION_SHIFT) + 1) << GENERATION_SHIFT
                )
                for label in np.unique(old).tolist():
                    self._hnsw.mark_deleted(label)
                self._moved.update(zip(seqs[known].tolist(), labels[known].tolist(), strict=True))
            # Deleted slots are not reused (hnswlib's slot replacement can leave records
            # unreachable); the owner rebuilds the graph when they pile up (free_slots).
            cap = self._hnsw.get_max_elements()
            needed = self._hnsw.get_current_count() + len(np.unique(labels))
            if needed > cap:
                factor = max(float(self.params.get("resize_factor") or 1.2), 1.2)
                self._hnsw.resize_index(max(needed, math.ceil(cap * factor)))
            self._hnsw.add_items(vectors, labels, num_threads=threads)
            self.churn += int(known.sum())
            self._live.add(seqs)
            if self._mirror is not None:
                self._mirror.set(seqs, vectors)
            self.unsaved += len(seqs)

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
            return int(self._hnsw.get_current_count()) - len(self)

    def worn(self) -> bool:
        """Whether the graph has seen enough deletes and in-place updates to rebuild it.

        Both leave hnswlib's graph less connected (tombstones still route searches; an
        updated node keeps links chosen for its old position), and records start to be
        missed even by their own vector. Measured on 24 randomised write histories of
        ~2,500 records: 22 such misses over 1,440 checks with the line at half the live
        records (and 1,024), 8 at a quarter (and 256), 6 at a fifth (and 64). A quarter
        costs about four re-inserts per churned record; a fresh graph is also smaller.
        """
        with self.lock:
            return self.churn > max(WORN_MIN, len(self) // WORN_SHARE)

    def remove(self, seqs: np.ndarray) -> None:
        with self.lock:
            if len(seqs) == 0:
                return
            gone = self._live.remove(seqs)
            for label in self._label_of(gone).tolist():
                self._hnsw.mark_deleted(label)
            for s in gone.tolist() if self._moved else ():
                self._moved.pop(s, None)
            if self._mirror is not None:
                self._mirror.remove(seqs)
            self.unsaved += len(seqs)
            self.churn += len(seqs)

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
        """Approximate k-NN; None when hnswlib cannot return k results (use exact)."""
        with self.lock:
            k = min(k, len(self))
            if k == 0:
                return np.empty((len(queries), 0), np.int64), np.empty(
                    (len(queries), 0), np.float32
                )
            base = int(self.params["ef_search"])
            self._hnsw.set_ef(max(base, k, ef or 0))
            try:
                if allowed is None:
                    threads = 1 if len(queries) == 1 else self._threads()
                    labels, dists = self._hnsw.knn_query(queries, k=k, num_threads=threads)
                else:
                    labels, dists = self._hnsw.knn_query(
                        queries, k=k, num_threads=1, filter=self._allowed(allowed)
                    )
            except RuntimeError:
                return None
            finally:
                self._hnsw.set_ef(base)
            return labels.astype(np.int64) & SEQ_MASK, dists

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
            base = int(self.params["ef_search"])
            self._hnsw.set_ef(max(base, fetch, beam))
            threads = 1 if len(queries) == 1 else self._threads()
            try:
                labels, dists = self._hnsw.knn_query(queries, k=fetch, num_threads=threads)
            except RuntimeError:  # fewer than `fetch` reachable: let the caller fall back
                return [None] * len(queries)
            finally:
                self._hnsw.set_ef(base)
        out: list[tuple[np.ndarray, np.ndarray] | None] = []
        seqs = labels.astype(np.int64) & SEQ_MASK
        if callable(allowed):
            allowed = allowed(np.unique(seqs))
        if len(allowed) == 0:
            return [None] * len(queries)
        last = len(allowed) - 1
        for row_labels, row_dists in zip(seqs, dists, strict=True):
            pos = np.minimum(np.searchsorted(allowed, row_labels), last)
            keep = np.flatnonzero(allowed[pos] == row_labels)[:k]
            out.append((row_labels[keep], row_dists[keep]) if len(keep) == k else None)
        return out

    def exact(
        self, queries: np.ndarray, k: int, seqs: np.ndarray
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """True k nearest among ``seqs``, per query (lists: rows may be shorter than k).

        Needs the mirror, built beforehand with ``ensure_mirror``. The lock is held
        throughout: a write may compact the mirror, which moves its rows.
        """
        q = self._prepare(queries).astype(np.float32)
        with self.lock:
            mirror = self._mirror
            assert mirror is not None
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
        labels = self._label_of(seqs)
        return np.asarray(self._hnsw.get_items(labels, return_type="numpy"), dtype=np.float32)

    def distances(self, q: np.ndarray, vecs: np.ndarray) -> np.ndarray:
        return space_distances(self.space, q, vecs)

    # ------------------------------------------------------------ persistence

    def save(self, directory: Path) -> None:
        """Write a snapshot stamped with ``self.lsn``; older snapshots are removed."""
        with self.lock:
            directory.mkdir(parents=True, exist_ok=True)
            final = directory / f"{SNAPSHOT_PREFIX}{self.lsn:020d}"
            if final.exists() and not self.rebuilt:
                if snapshot_format(final) == SNAPSHOT_FORMAT:
                    self.unsaved = 0
                    return
                shutil.rmtree(final, ignore_errors=True)  # an older format at this lsn
            tmp = directory / f".tmp-{os.getpid()}-{threading.get_ident()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            graph, labels = tmp / GRAPH_FILE, tmp / LABELS_FILE
            state = self._save_graph(graph)
            np.save(labels, self._label_of(self.universe()))
            manifest = {
                "format": SNAPSHOT_FORMAT,
                "lsn": self.lsn,
                "space": self.space,
                "dim": self.dim,
                "count": len(self),
                "churn": self.churn,
                "hnsw": state,
                # graph.npz needs none of its own: zip checks each member's CRC-32 as
                # np.load reads it (a flipped byte is a BadZipFile), which saves a pass.
                "crc": {LABELS_FILE: crc(labels)},
            }
            (tmp / "manifest.json").write_bytes(orjson.dumps(manifest))
            for f in (graph, labels, tmp / "manifest.json"):
                fsync_path(f)
            fsync_path(tmp)
            if final.exists() and self.rebuilt:
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
            self.unsaved = 0
            self.rebuilt = False
        for old in directory.glob(f"{SNAPSHOT_PREFIX}*"):
            if old.name < final.name:
                shutil.rmtree(old, ignore_errors=True)

    def _save_graph(self, path: Path) -> dict[str, Any]:
        """Write hnswlib's state without the vectors; returns its scalar fields.

        The graph's links are about a tenth of its bytes at 384 dimensions; the rest is
        a float32 copy of every vector, which SQLite holds already. Deleted records'
        vectors are kept, though: SQLite no longer has them, and searches still route
        through them. The state is read from hnswlib's own index file, written to a
        scratch file beside ``path`` (page cache, not process memory) and streamed a
        few thousand records at a time: hnswlib's ``__getstate__`` would copy the whole
        index into memory, which made closing set the process's peak.
        """
        scratch = path.with_name(path.name + ".scratch")
        self._hnsw.save_index(str(scratch))
        try:
            state, parts = state_from_file(scratch, self._label_of(self.universe()))
        finally:
            scratch.unlink(missing_ok=True)
        state.update(
            ser_version=1,
            space=self.space,
            dim=self.dim,
            index_inited=True,
            ep_added=state["cur_element_count"] > 0,
            normalize=self.space == "cosine",
            num_threads=int(self._hnsw.num_threads),
            seed=100,
            ef=int(self._hnsw.ef),
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
        index.lock = threading.RLock()
        index.lsn = int(manifest["lsn"])
        index.churn = int(manifest.get("churn", 0))
        index._live = _LiveSeqs(np.sort(live & SEQ_MASK))
        index._moved = {int(x) & SEQ_MASK: int(x) for x in live[live > SEQ_MASK].tolist()}
        index._hnsw = load_graph(snap / GRAPH_FILE, manifest["hnsw"], space, dim, vectors)
        index._apply_ef()
        index._mirror = None
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
        copy.lock = threading.RLock()
        copy.lsn, copy.churn = lsn, churn
        # A label is a seq plus its generation in the bits from 40 up: shifted alike.
        copy._live = _LiveSeqs(universe + delta)
        copy._moved = {seq + delta: label + delta for seq, label in moved.items()}
        copy._hnsw = graph
        copy._apply_ef()
        copy._mirror = None
        copy.unsaved = len(universe) or 1
        copy.rebuilt = False
        return copy

    @staticmethod
    def discard(directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)
