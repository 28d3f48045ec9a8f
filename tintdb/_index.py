"""The vector index of one collection: derived data, rebuildable from SQLite at any time.

Two parts:

* an HNSW graph (hnswlib) whose labels are the records' ``seq`` numbers (plus a
  generation, once a record's vector changed), for approximate k-NN, optionally
  restricted by a filter callback;
* a numpy copy of the vectors for exact search (a filtered query with few matches),
  float32 while small and bfloat16 beyond COMPACT_ABOVE bytes; kept in step with every
  change from the first record, or built on first need after a snapshot is loaded.

Snapshots on disk are directories ``v<lsn>/`` holding the graph without its vectors
(hnswlib's state minus the float32 copies, which SQLite already stores), the live
labels and a manifest with CRC32 checksums. Loading one puts the vectors back from
SQLite. They are written to a temporary directory, fsynced and renamed, so a snapshot
is either complete or absent; a snapshot that fails its checksum is ignored (and the
caller rebuilds), so hnswlib never reads a damaged file.
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
import os
import shutil
import struct
import threading
import uuid
import zlib
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any, Literal, cast

import hnswlib
import numpy as np
import orjson

__all__ = ["Loader", "VectorIndex", "plain_empty", "scan_knn", "space_distances"]

HnswSpace = Literal["l2", "ip", "cosine"]


def _hnsw_space(space: str) -> HnswSpace:
    """The space as hnswlib's type names it (tintdb checks spaces before any index exists)."""
    if space not in ("l2", "ip", "cosine"):
        raise ValueError(f"hnswlib has no space {space!r}")
    return cast(HnswSpace, space)


# Yields (seqs, vectors) chunks of every record of the collection, in seq order.
Loader = Callable[[], Generator[tuple[np.ndarray, np.ndarray], None, None]]

_SNAPSHOT_PREFIX = "v"
GRAPH_FILE = "graph.npz"
LABELS_FILE = "labels.npy"
# Older snapshots are rebuilt: 1 was hnswlib's own file, vectors included; 3 kept the
# upper links as pickled-state arrays, where 4 keeps them as hnswlib's file does; 5 may
# hold labels with a generation (see GENERATION_SHIFT), which 4 never has.
_SNAPSHOT_FORMAT = 5
_READABLE_FORMATS = (4, 5)
# A record whose vector changes gets a new node under a new label, its seq plus the next
# generation above this many bits, and its old node is marked deleted: inserting a node
# costs a fraction of hnswlib's in-place update, which also re-selects the links of
# every neighbour (docs/benchmarks.md), and a fresh node is reached like any other,
# where a moved one could be left with no way in.
GENERATION_SHIFT = 40
_SEQ_MASK = (1 << GENERATION_SHIFT) - 1
_LOAD_PREFIX = ".load-"  # scratch files of loads in progress, named by pid

log = logging.getLogger(__name__)
_MIN_CAPACITY = 1024
# A graph is rebuilt once its deletes and in-place updates pass 1/WORN_SHARE of its live
# records (and WORN_MIN): see VectorIndex.worn.
WORN_MIN = 256
WORN_SHARE = 4
# Exact search takes this many more than k by the fast ranking score (float32 rounding
# can swap near ties), then orders them by the distance itself.
_RERANK_EXTRA = 8
# Exact search scores the mirror's rows this many at a time, through one small buffer.
_EXACT_BLOCK = 1024
# Rows written into the mirror per step (bounds the temporaries of a bulk load).
_ENCODE_ROWS = 4096
# A mirror whose float32 vectors would take more bytes than this keeps bfloat16 (see
# _Mirror): 16,384 rows of 384 dimensions, 4,096 of 1,536.
COMPACT_ABOVE = 24 << 20


def plain_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array in anonymous memory of ordinary pages.

    numpy asks the kernel for transparent huge pages for arrays of 4 MiB and more. Where
    the kernel must compact memory to find them (defrag=madvise, a common default), the
    first touch of a large mirror waits for that compaction, and huge pages were not
    obtained anyway. The mirror is long-lived and filled once, so it opts out.
    """
    count = math.prod(shape)
    nbytes = count * np.dtype(dtype).itemsize
    if nbytes < 1 << 22:
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(mmap.mmap(-1, nbytes), dtype=dtype, count=count).reshape(shape)


def _crc(path: Path) -> int:
    crc = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unit(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norms == 0, 1, norms)


def _dot(vecs: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(n, d) x (m, d) -> (m, n) dot products.

    A single query uses einsum rather than BLAS: a multi-threaded BLAS matrix-vector
    product pays thread start-up that dwarfs the work at these sizes.
    """
    if len(queries) <= 4:
        return np.stack([np.einsum("ij,j->i", vecs, q) for q in queries])
    return queries @ vecs.T


def _ranking(dots: np.ndarray, sqn: np.ndarray, l2: bool) -> np.ndarray:
    """Turn (m, n) dot products into ranking scores, in place: lower is nearer. Squared
    L2 less the query's own squared norm (``sqn``: the rows' squared norms), or the
    negated dot product."""
    if l2:
        dots *= -2
        dots += sqn[None, :]
    else:
        np.negative(dots, out=dots)
    return dots


def space_distances(space: str, q: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    """The space's distance, as hnswlib defines it, computed directly in float32 (``q``
    and ``vecs`` of unit length already for cosine)."""
    if space == "l2":
        diff = vecs - q[None, :]
        return np.einsum("ij,ij->i", diff, diff).astype(np.float32)
    return (np.float32(1.0) - vecs @ q).astype(np.float32)


def scan_knn(
    space: str, queries: np.ndarray, k: int, chunks: Iterable[tuple[np.ndarray, np.ndarray]]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """True k nearest per query over (seqs, vectors) chunks read straight from SQLite:
    what a store answers with before its graph is loaded. Only a few candidates per
    query are kept between chunks, so no copy of the collection is ever made."""
    cosine, l2 = space == "cosine", space == "l2"
    q = (_unit(queries) if cosine else queries).astype(np.float32)
    keep = k + _RERANK_EXTRA
    seqs = [np.empty(0, np.int64) for _ in q]
    vecs = [np.empty((0, q.shape[1]), np.float32) for _ in q]
    score = [np.empty(0, np.float32) for _ in q]
    for part, block in chunks:
        block = (_unit(block) if cosine else block).astype(np.float32, copy=False)
        sqn = np.einsum("ij,ij->i", block, block) if l2 else np.empty(0, np.float32)
        ranking = _ranking(_dot(block, q), sqn, l2)
        for i in range(len(q)):
            s = np.concatenate([score[i], ranking[i]])
            pick = np.argpartition(s, keep - 1)[:keep] if len(s) > keep else np.arange(len(s))
            old = pick < len(score[i])
            new = pick[~old] - len(score[i])
            seqs[i] = np.concatenate([seqs[i][pick[old]], part[new]])
            vecs[i] = np.concatenate([vecs[i][pick[old]], block[new]])
            score[i] = s[np.concatenate([pick[old], pick[~old]])]
    labels, dists = [], []
    for i in range(len(q)):
        d = space_distances(space, q[i], vecs[i])
        order = np.argsort(d, kind="stable")[:k]
        labels.append(seqs[i][order])
        dists.append(d[order])
    return labels, dists


def _snapshot_format(snap: Path) -> int | None:
    try:
        return int(orjson.loads((snap / "manifest.json").read_bytes()).get("format", 1))
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def _remove_abandoned(directory: Path) -> None:
    """Delete temporary snapshot directories and load scratch files left by a process
    that died writing them."""
    for tmp in [*directory.glob(".tmp-*"), *directory.glob(f"{_LOAD_PREFIX}*")]:
        try:
            os.kill(int(tmp.name.split("-")[1]), 0)
        except ProcessLookupError:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError):
            continue


def _to_bf16(v: np.ndarray) -> np.ndarray:
    """The top 16 bits of each float32 (bfloat16 by truncation, so it never overflows):
    8 bits of mantissa, a relative error below 2**-7."""
    return (np.ascontiguousarray(v, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _from_bf16(h: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Widen bfloat16 rows into the float32 array ``out`` (same shape)."""
    np.left_shift(h, 16, out=out.view(np.uint32), dtype=np.uint32, casting="unsafe")
    return out


class _Mirror:
    """The vectors in seq order, for exact search over any subset of records.

    New records always have larger seqs than existing ones, so rows are appended in
    order and a lookup is a binary search; deletes leave holes that compaction removes.

    Up to COMPACT_ABOVE bytes the vectors are kept as float32. Beyond, as bfloat16: half
    the memory, beside hnswlib's own float32 copy. Each row then also keeps the norm of
    its rounding error, so a score computed from it is known to within a bound (see
    ``scores``), and exact search settles the few rows the bound leaves open at full
    precision.
    """

    def __init__(self, dim: int, cosine: bool) -> None:
        self.dim, self.cosine = dim, cosine
        self.compact = False
        self.n = 0
        self.dead = 0
        self.seqs = np.empty(0, dtype=np.int64)
        self.vecs = np.empty((0, dim), dtype=np.float32)  # float32, or uint16 when compact
        self.sqn = np.empty(0, dtype=np.float32)  # exact squared norms
        self.err = np.empty(0, dtype=np.float32)  # norm of the bfloat16 rounding error
        self.alive = np.empty(0, dtype=bool)

    def _prepare(self, v: np.ndarray) -> np.ndarray:
        return (_unit(v) if self.cosine else v).astype(np.float32, copy=False)

    def _find(self, seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row positions of ``seqs`` and a mask of those present (alive or not)."""
        pos = np.searchsorted(self.seqs[: self.n], seqs)
        if self.n == 0:
            return pos, np.zeros(len(seqs), dtype=bool)
        clipped = np.minimum(pos, self.n - 1)
        return clipped, (pos < self.n) & (self.seqs[clipped] == seqs)

    def _store(self, rows: slice | np.ndarray, vectors: np.ndarray) -> None:
        """Write prepared float32 vectors into ``rows``, a few thousand at a time, so a
        bulk load never makes whole-matrix temporaries."""
        count = rows.stop - rows.start if isinstance(rows, slice) else len(rows)
        for start in range(0, count, _ENCODE_ROWS):
            v = vectors[start : start + _ENCODE_ROWS]
            if isinstance(rows, slice):  # contiguous: plain slices, no fancy indexing
                part: slice | np.ndarray = slice(rows.start + start, rows.start + start + len(v))
            else:
                part = rows[start : start + _ENCODE_ROWS]
            self.sqn[part] = np.einsum("ij,ij->i", v, v)
            if self.compact:
                h = _to_bf16(v)
                self.vecs[part] = h
                diff = v - _from_bf16(h, np.empty_like(v))
                self.err[part] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
            else:
                self.vecs[part] = v
                self.err[part] = 0

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` rows in all, so a bulk load grows the arrays once."""
        if rows > len(self.seqs):
            self._grow(rows)

    def set(self, seqs: np.ndarray, vectors: np.ndarray) -> None:
        after_last = len(seqs) and (self.n == 0 or seqs[0] > self.seqs[self.n - 1])
        if after_last and np.all(seqs[1:] > seqs[:-1]):  # all new and in order: append
            self._append(seqs, self._prepare(vectors))
            return
        order = np.argsort(seqs, kind="stable")
        seqs, vectors = seqs[order], self._prepare(vectors[order])
        pos, hit = self._find(seqs)
        rows = pos[hit]
        self.dead -= int((~self.alive[rows]).sum())
        self._store(rows, vectors[hit])
        self.alive[rows] = True
        new = ~hit
        if new.any():
            self._append(seqs[new], vectors[new])

    def _append(self, seqs: np.ndarray, vectors: np.ndarray) -> None:
        n, m = self.n, len(seqs)
        if n + m > len(self.seqs):
            self._grow(max(n + m, int(len(self.seqs) * 1.5), 64))
        self.seqs[n : n + m] = seqs
        self._store(slice(n, n + m), vectors)
        self.alive[n : n + m] = True
        self.n = n + m
        if n and seqs[0] < self.seqs[n - 1]:  # not expected: keep the order invariant anyway
            self._compact(resort=True)

    def _grow(self, cap: int) -> None:
        """Room for ``cap`` rows; a mirror sized beyond COMPACT_ABOVE bytes turns bfloat16."""
        n, old = self.n, self.vecs[: self.n]
        self.seqs = np.resize(self.seqs[:n], cap)
        self.sqn = np.resize(self.sqn[:n], cap)
        self.err = np.resize(self.err[:n], cap)
        self.alive = np.resize(self.alive[:n], cap)
        if not self.compact and cap * self.dim * 4 > COMPACT_ABOVE:
            self.compact = True
            self.vecs = plain_empty((cap, self.dim), np.uint16)
            self._store(slice(0, n), old)
        else:
            self.vecs = plain_empty((cap, self.dim), self.vecs.dtype)
            self.vecs[:n] = old

    def remove(self, seqs: np.ndarray) -> None:
        pos, hit = self._find(seqs)
        rows = pos[hit]
        self.dead += int(self.alive[rows].sum())
        self.alive[rows] = False
        if self.dead > 1024 and self.dead * 2 > self.n:
            self._compact()

    def _compact(self, resort: bool = False) -> None:
        keep = np.flatnonzero(self.alive[: self.n])
        if resort:
            keep = keep[np.argsort(self.seqs[keep], kind="stable")]
        self.seqs, self.sqn, self.err = self.seqs[keep], self.sqn[keep], self.err[keep]
        kept = plain_empty((len(keep), self.dim), self.vecs.dtype)
        np.take(self.vecs, keep, axis=0, out=kept, mode="clip")
        self.vecs, self.alive = kept, np.ones(len(keep), dtype=bool)
        self.n, self.dead = len(keep), 0

    def rows(self, seqs: np.ndarray) -> np.ndarray:
        pos, hit = self._find(seqs)
        rows = pos[hit]
        return rows[self.alive[rows]]

    def scores(
        self, rows: np.ndarray, queries: np.ndarray, l2: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(m, len(rows)) ranking scores, lower is nearer: squared L2 minus the query's
        own squared norm, or minus the dot product. With them, for a compact mirror, how
        far each may be from the score of the float32 vector (None: they are exact).

        The bound: a dot product with a vector off by ``e`` (the row's stored error
        norm) is off by at most |q|·e (Cauchy-Schwarz); L2 counts it twice. A margin of
        d·2**-22·|q|·|v| covers float32 rounding in the sums.

        The rows are copied a block at a time into one buffer that stays in cache, so
        scoring 10,000 scattered rows neither allocates 15 MB nor faults in its pages:
        that copy used to cost three times the arithmetic.
        """
        out = np.empty((len(queries), len(rows)), dtype=np.float32)
        block = np.empty((min(len(rows), _EXACT_BLOCK), self.dim), dtype=np.float32)
        raw = np.empty(block.shape, dtype=self.vecs.dtype) if self.compact else block
        for start in range(0, len(rows), _EXACT_BLOCK):
            part = rows[start : start + _EXACT_BLOCK]
            buf = raw[: len(part)]
            # mode="clip" skips the bounds-checked (buffered) copy; rows are in range.
            np.take(self.vecs, part, axis=0, out=buf, mode="clip")
            if self.compact:
                buf = _from_bf16(buf, block[: len(part)])
            out[:, start : start + len(part)] = _dot(buf, queries)
        sqn = self.sqn[rows]
        _ranking(out, sqn, l2)
        if not self.compact:
            return out, None
        qn = np.linalg.norm(queries, axis=1).astype(np.float32)[:, None]
        slack = qn * (self.err[rows] + self.dim * 2.0**-22 * np.sqrt(sqn))[None, :]
        if l2:
            slack *= 2
            slack += self.dim * 2.0**-22 * sqn[None, :]
        return out, slack


# hnswlib's index file (hnswalg.h, saveIndex) starts with 96 bytes: offsetLevel0,
# max_elements, cur_element_count, size_data_per_element, label_offset, offsetData (six
# size_t), maxlevel (int), enterpoint (uint32), maxM, maxM0, M (size_t), mult (double),
# ef_construction (size_t). One record per element follows (links, vector, label), then
# each element's upper-level links, prefixed by their byte length (uint32).
_HEADER = np.dtype(
    [
        ("offset_level0", "<u8"),
        ("max_elements", "<u8"),
        ("cur_element_count", "<u8"),
        ("size_data_per_element", "<u8"),
        ("label_offset", "<u8"),
        ("offset_data", "<u8"),
        ("max_level", "<i4"),
        ("enterpoint_node", "<u4"),
        ("max_M", "<u8"),
        ("max_M0", "<u8"),
        ("M", "<u8"),
        ("mult", "<f8"),
        ("ef_construction", "<u8"),
    ]
)
_HEADER_NAMES: tuple[str, ...] = _HEADER.names or ()  # a structured dtype always has names
_STREAM_ROWS = 4096  # records read per step when cutting the vectors out


def _place_links(level0: np.ndarray, links: np.ndarray, off: int, lab: int) -> None:
    level0[:, :off] = links[:, :off]
    level0[:, lab:] = links[:, off:]


def _state_from_file(path: Path, live: np.ndarray) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """hnswlib's state from its index file, without the live records' vectors: (scalar
    fields, arrays for the snapshot). ``tail`` is the file's upper-level link lists as
    they are, so that loading can write the file back without parsing them."""
    with path.open("rb") as f:
        head = np.frombuffer(f.read(_HEADER.itemsize), dtype=_HEADER)[0]
        state: dict[str, Any] = {name: head[name].item() for name in _HEADER_NAMES}
        n, size = state["cur_element_count"], state["size_data_per_element"]
        off, lab = state["offset_data"], state["label_offset"]
        if state["offset_level0"] != 0 or not off < lab <= size - 8:
            raise ValueError("unexpected hnswlib file layout")
        links = np.empty((n, size - (lab - off)), dtype=np.uint8)
        dead_ids, dead_vecs, deleted = [], [], False
        # Sorted once; each chunk is then binary searches (np.isin sorted all of `live`
        # again for every chunk, most of a large snapshot's time).
        live = np.sort(np.asarray(live, dtype=np.int64))
        last = max(len(live) - 1, 0)
        for start in range(0, n, _STREAM_ROWS):
            m = min(_STREAM_ROWS, n - start)
            recs = np.frombuffer(f.read(m * size), dtype=np.uint8).reshape(m, size)
            links[start : start + m, :off] = recs[:, :off]
            links[start : start + m, off:] = recs[:, lab:]
            deleted = deleted or bool((recs[:, 2] & 1).any())  # hnswlib's DELETE_MARK
            labels = np.ascontiguousarray(recs[:, lab : lab + 8]).view("<u8").ravel()
            labels = labels.astype(np.int64)
            found = (
                live[np.minimum(np.searchsorted(live, labels), last)] == labels
                if len(live)
                else labels < 0
            )
            dead = np.flatnonzero(~found)
            if len(dead):
                dead_ids.append(dead + start)
                dead_vecs.append(np.ascontiguousarray(recs[dead, off:lab]))
        tail = np.frombuffer(f.read(), dtype=np.uint8)
    state.update(has_deletions=deleted, size_links_per_element=state["max_M"] * 4 + 4)
    parts = {
        "links": links,
        "dead": np.concatenate(dead_ids) if dead_ids else np.empty(0, np.int64),
        "dead_vectors": np.concatenate(dead_vecs)
        if dead_vecs
        else np.empty((0, lab - off), np.uint8),
        "tail": tail,
    }
    return state, parts


def _tail_arrays(state: dict[str, Any], links: np.ndarray, tail: np.ndarray) -> dict[str, Any]:
    """The arrays of hnswlib's pickled state that the file keeps in other forms: label
    lookups (from the records) and each element's level and upper links (from the tail)."""
    n, off = int(state["cur_element_count"]), int(state["offset_data"])
    per_level = int(state["size_links_per_element"])
    raw = tail.tobytes()
    levels = np.zeros(int(state["max_elements"]), dtype=np.int32)
    chunks, pos = [], 0
    for i in range(n):
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if length:
            levels[i] = length // per_level
            chunks.append(raw[pos : pos + length])
            pos += length
    if pos != len(raw):
        raise ValueError("snapshot tail longer than its link lists")
    labels = np.ascontiguousarray(links[:, off : off + 8]).view("<u8").ravel()
    return {
        "label_lookup_external": labels.copy(),
        "label_lookup_internal": np.arange(n, dtype=np.uint32),
        "element_levels": levels,
        "link_lists": np.frombuffer(b"".join(chunks), dtype=np.int8),
    }


# What _fill_level0 needs besides the buffer: links, dead slots and their vectors,
# (offset_data, label_offset), the space, and SQLite's vectors.
_Parts = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int], str, Loader]


def _fill_level0(
    level0: np.ndarray,
    links: np.ndarray,
    dead: np.ndarray,
    dead_vectors: np.ndarray,
    layout: tuple[int, int],
    space: str,
    vectors: Loader,
) -> None:
    """Write every record of hnswlib's level 0 into ``level0``: links from the snapshot,
    live vectors from SQLite, deleted records' vectors from the snapshot."""
    n = len(links)
    off, lab = layout
    # numpy copies without the GIL: the links go in while SQLite is read.
    helper = threading.Thread(
        target=_place_links, args=(level0, links, off, lab), name="tintdb-load", daemon=True
    )
    helper.start()
    vecs = level0[:, off:lab].view(np.float32)
    labels = np.ascontiguousarray(links[:, off : off + 8]).view(np.uint64).astype(np.int64)
    labels = labels.ravel() & _SEQ_MASK  # the seq of each node
    labels[dead] = -1  # a deleted node, maybe an older generation of a live seq's
    in_order = bool(np.all(labels[1:] > labels[:-1]))  # usual: slots in seq order
    order = np.arange(n) if in_order else np.argsort(labels, kind="stable")
    by_label = labels[order]
    filled = np.zeros(n, dtype=bool)
    try:
        with contextlib.closing(vectors()) as chunks:
            for seqs, block in chunks:
                if space == "cosine":
                    block = _unit(block)
                if in_order and len(seqs):
                    # A run of seqs that is a run of slots needs no per-row lookup.
                    a, b = np.searchsorted(by_label, seqs[[0, -1]]).tolist()
                    if b - a == len(seqs) - 1 and np.array_equal(by_label[a : b + 1], seqs):
                        vecs[a : b + 1] = block
                        filled[a : b + 1] = True
                        continue
                pos = np.minimum(np.searchsorted(by_label, seqs), n - 1)
                hit = by_label[pos] == seqs
                rows = order[pos[hit]]
                vecs[rows] = block[hit]
                filled[rows] = True
    finally:
        helper.join()
    level0[dead, off:lab] = dead_vectors
    filled[dead] = True
    # Records deleted after the snapshot was taken are in neither place; the log replay
    # marks them deleted next. Until then they route like a neighbour.
    for i in np.flatnonzero(~filled).tolist():
        count = int(level0[i, :2].view(np.uint16)[0])
        near = level0[i, 4 : 4 + 4 * count].view(np.uint32)
        done = near[filled[near]]
        vecs[i] = vecs[done[0]] if len(done) else 0


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
        self._hnsw = hnswlib.Index(space=_hnsw_space(space), dim=dim)
        self._hnsw.init_index(
            max_elements=_MIN_CAPACITY,
            ef_construction=int(params["ef_construction"]),
            M=int(params["max_neighbors"]),
        )
        self._apply_ef()
        # A new index keeps its mirror in step from the first record: the vectors pass
        # through here anyway. One loaded from a snapshot builds it on first need.
        self._mirror: _Mirror | None = _Mirror(dim, space == "cosine")
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
        return _unit(v) if self.space == "cosine" else v

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
                labels[known] = (old & _SEQ_MASK) + (
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
        return lambda label: (label & _SEQ_MASK) in allowed

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
            mirror = _Mirror(self.dim, self.space == "cosine")
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
        self, queries: np.ndarray, k: int, allowed: set[int] | None = None, ef: int | None = None
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
            return labels.astype(np.int64) & _SEQ_MASK, dists

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
        seqs = labels.astype(np.int64) & _SEQ_MASK
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
                    pick = min(len(rows), k + _RERANK_EXTRA)
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
            final = directory / f"{_SNAPSHOT_PREFIX}{self.lsn:020d}"
            if final.exists() and not self.rebuilt:
                if _snapshot_format(final) == _SNAPSHOT_FORMAT:
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
                "format": _SNAPSHOT_FORMAT,
                "lsn": self.lsn,
                "space": self.space,
                "dim": self.dim,
                "count": len(self),
                "churn": self.churn,
                "hnsw": state,
                # graph.npz needs none of its own: zip checks each member's CRC-32 as
                # np.load reads it (a flipped byte is a BadZipFile), which saves a pass.
                "crc": {LABELS_FILE: _crc(labels)},
            }
            (tmp / "manifest.json").write_bytes(orjson.dumps(manifest))
            for f in (graph, labels, tmp / "manifest.json"):
                _fsync_path(f)
            _fsync_path(tmp)
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
            _fsync_path(directory)
            self.unsaved = 0
            self.rebuilt = False
        for old in directory.glob(f"{_SNAPSHOT_PREFIX}*"):
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
            state, parts = _state_from_file(scratch, self._label_of(self.universe()))
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
        with path.open("wb") as f:
            np.savez(
                f,
                links=parts["links"],
                tail=parts["tail"],
                dead=parts["dead"],
                dead_vectors=parts["dead_vectors"],
            )
        return state

    @staticmethod
    def _load_graph(
        path: Path, state: dict[str, Any], space: str, dim: int, vectors: Loader
    ) -> hnswlib.Index:
        """Put a snapshot's graph and SQLite's vectors back together into hnswlib.

        The records are assembled in hnswlib's own file format, in a scratch file beside
        the snapshots, which hnswlib then loads: the assembled copy sits in the page
        cache, not in this process, so the index is in memory once. Handing hnswlib the
        records in memory instead (its pickled state) held them twice for a moment,
        which set the peak memory of a whole workload. Where the file cannot be made (no
        room), that is the way.
        """
        with np.load(path) as arrays:
            links, tail = arrays["links"], arrays["tail"]
            dead, dead_vectors = arrays["dead"], arrays["dead_vectors"]
        n, size = int(state["cur_element_count"]), int(state["size_data_per_element"])
        off, lab = int(state["offset_data"]), int(state["label_offset"])
        if links.shape != (n, size - (lab - off)) or lab - off != dim * 4:
            raise ValueError("snapshot graph does not match its manifest")
        parts: _Parts = (links, dead, dead_vectors, (off, lab), space, vectors)
        scratch = path.parent.parent / f"{_LOAD_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        body = _HEADER.itemsize + n * size
        head = np.zeros(1, dtype=_HEADER)
        for name in _HEADER_NAMES:
            head[name] = state[name]
        fd = -1
        try:
            try:
                fd = os.open(scratch, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
                # Blocks are reserved up front: a full disk is an error here, not a
                # SIGBUS when the mapping below is written.
                os.posix_fallocate(fd, 0, body + len(tail))
                os.pwrite(fd, head.tobytes(), 0)
                os.pwrite(fd, tail.data, body)
            except OSError as exc:
                log.warning("index load in memory (scratch file: %s)", exc)
                return VectorIndex._load_in_memory(state, tail, parts)
            with mmap.mmap(fd, body + len(tail)) as mapped:
                level0 = np.frombuffer(mapped, np.uint8, n * size, _HEADER.itemsize)
                _fill_level0(level0.reshape(n, size), *parts)
                del level0  # the mapping closes only once no array points into it
            del links, parts
            index = hnswlib.Index(space=_hnsw_space(space), dim=dim)
            index.load_index(str(scratch))
            return index
        finally:
            if fd >= 0:
                os.close(fd)
                # Dropping a large file's page cache takes a moment; nothing waits. A file
                # left by a process that exits first goes with the next load.
                threading.Thread(target=scratch.unlink, args=(True,), daemon=True).start()

    @staticmethod
    def _load_in_memory(state: dict[str, Any], tail: np.ndarray, parts: _Parts) -> hnswlib.Index:
        """The same records assembled in this process and handed over as hnswlib's
        pickled state (which it copies: two copies at once, briefly)."""
        n, size = int(state["cur_element_count"]), int(state["size_data_per_element"])
        level0 = plain_empty((n, size), np.uint8)
        full = _tail_arrays(state, parts[0], tail)
        _fill_level0(level0, *parts)
        return hnswlib.Index({**state, **full, "data_level0": level0.reshape(-1).view(np.int8)})

    @classmethod
    def load(
        cls, directory: Path, space: str, dim: int, params: dict[str, Any], vectors: Loader
    ) -> VectorIndex | None:
        """The newest valid snapshot in ``directory``, or None if there is none;
        ``vectors`` yields the collection's vectors from SQLite."""
        if not directory.is_dir():
            return None
        _remove_abandoned(directory)
        for snap in sorted(directory.glob(f"{_SNAPSHOT_PREFIX}*"), reverse=True):
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
        if manifest.get("format") not in _READABLE_FORMATS:
            return None  # an older format: rebuilt from SQLite, once
        for name, crc in manifest["crc"].items():
            if _crc(snap / name) != crc:
                return None
        live = np.load(snap / LABELS_FILE)
        if len(live) != manifest["count"]:
            return None
        index = cls.__new__(cls)
        index.space, index.dim, index.params = space, dim, params
        index.lock = threading.RLock()
        index.lsn = int(manifest["lsn"])
        index.churn = int(manifest.get("churn", 0))
        index._live = _LiveSeqs(np.sort(live & _SEQ_MASK))
        index._moved = {int(x) & _SEQ_MASK: int(x) for x in live[live > _SEQ_MASK].tolist()}
        index._hnsw = cls._load_graph(snap / GRAPH_FILE, manifest["hnsw"], space, dim, vectors)
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
        scratch = scratch_dir / f"{_LOAD_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        try:
            with self.lock:
                self._hnsw.save_index(str(scratch))
                universe = self.universe()
                moved = dict(self._moved)
                churn = self.churn
            head = np.fromfile(scratch, dtype=_HEADER, count=1)[0]
            n, size = int(head["cur_element_count"]), int(head["size_data_per_element"])
            lab = int(head["label_offset"])
            if n:
                records = np.memmap(
                    scratch, dtype=np.uint8, mode="r+", offset=_HEADER.itemsize, shape=(n, size)
                )
                labels = records[:, lab : lab + 8].view("<u8")
                labels += np.uint64(delta)
                records.flush()
                del labels, records
            graph = hnswlib.Index(space=_hnsw_space(self.space), dim=self.dim)
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
