"""Exact search: the mirror, a numpy copy of a collection's vectors, and scans.

hnswlib keeps its own float32 copy of every vector but hands them out slowly, so exact
search (a filtered query with few matches, a small collection) needs vectors of its
own: the ``Mirror``, in seq order, float32 while small and bfloat16 beyond
COMPACT_ABOVE bytes, each bfloat16 row with the bound of its rounding error so that the
answer is still the exact one. ``scan_knn`` answers from vectors streamed out of SQLite
when no index is in memory. Pure numpy: no graph, no files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import mmap
import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "COMPACT_ABOVE",
    "RERANK_EXTRA",
    "Mirror",
    "plain_empty",
    "release_free_heap",
    "scan_knn",
    "space_distances",
    "unit",
]

# Exact search takes this many more than k by the fast ranking score (float32 rounding
# can swap near ties), then orders them by the distance itself.
RERANK_EXTRA = 8
# Exact search scores the mirror's rows this many at a time, through one small buffer.
EXACT_BLOCK = 1024
# Rows written into the mirror per step (bounds the temporaries of a bulk load).
_ENCODE_ROWS = 4096
# A mirror whose float32 vectors would take more bytes than this keeps bfloat16 (see
# Mirror): 16,384 rows of 384 dimensions, 4,096 of 1,536.
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


def _malloc_trim() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_heap() -> None:
    """Hand the heap's free pages back to the operating system (glibc only).

    glibc keeps what a large write freed (its copies of 10,000 vectors, say) in the
    process for reuse once its mmap threshold has risen, where it still counts in the
    RSS. Called before building a second graph beside a worn one, whose memory comes
    from fresh mappings that could not reuse it: otherwise the two add up.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def unit(v: np.ndarray) -> np.ndarray:
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
    space: str,
    queries: np.ndarray,
    k: int,
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """True k nearest per query over (seqs, vectors) chunks read straight from SQLite:
    what a store answers with before its graph is loaded. Only a few candidates per
    query are kept between chunks, so no copy of the collection is ever made."""
    cosine, l2 = space == "cosine", space == "l2"
    q = (unit(queries) if cosine else queries).astype(np.float32)
    keep = k + RERANK_EXTRA
    seqs = [np.empty(0, np.int64) for _ in q]
    vecs = [np.empty((0, q.shape[1]), np.float32) for _ in q]
    score = [np.empty(0, np.float32) for _ in q]
    for part, block in chunks:
        block = (unit(block) if cosine else block).astype(np.float32, copy=False)
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


def _to_bf16(v: np.ndarray) -> np.ndarray:
    """The top 16 bits of each float32 (bfloat16 by truncation, so it never overflows):
    8 bits of mantissa, a relative error below 2**-7."""
    return (np.ascontiguousarray(v, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _from_bf16(h: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Widen bfloat16 rows into the float32 array ``out`` (same shape)."""
    np.left_shift(h, 16, out=out.view(np.uint32), dtype=np.uint32, casting="unsafe")
    return out


class Mirror:
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
        self.bf16 = False
        self.n = 0
        self.dead = 0
        self.seqs = np.empty(0, dtype=np.int64)
        self.vecs = np.empty((0, dim), dtype=np.float32)  # float32, or uint16 when compact
        self.sqn = np.empty(0, dtype=np.float32)  # exact squared norms
        self.err = np.empty(0, dtype=np.float32)  # norm of the bfloat16 rounding error
        self.alive = np.empty(0, dtype=bool)

    def _prepare(self, v: np.ndarray) -> np.ndarray:
        return (unit(v) if self.cosine else v).astype(np.float32, copy=False)

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
            if self.bf16:
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
            self._drop_dead_rows(resort=True)

    def _grow(self, cap: int) -> None:
        """Room for ``cap`` rows; a mirror sized beyond COMPACT_ABOVE bytes turns bfloat16."""
        n, old = self.n, self.vecs[: self.n]
        self.seqs = np.resize(self.seqs[:n], cap)
        self.sqn = np.resize(self.sqn[:n], cap)
        self.err = np.resize(self.err[:n], cap)
        self.alive = np.resize(self.alive[:n], cap)
        if not self.bf16 and cap * self.dim * 4 > COMPACT_ABOVE:
            self.bf16 = True
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
            self._drop_dead_rows()

    def _drop_dead_rows(self, resort: bool = False) -> None:
        """Rewrite the rows without the deleted ones (in seq order again, if ``resort``)."""
        keep = np.flatnonzero(self.alive[: self.n])
        if resort:
            keep = keep[np.argsort(self.seqs[keep], kind="stable")]
        self.seqs, self.sqn, self.err = self.seqs[keep], self.sqn[keep], self.err[keep]
        kept = plain_empty((len(keep), self.dim), self.vecs.dtype)
        np.take(self.vecs, keep, axis=0, out=kept, mode="clip")
        self.vecs, self.alive = kept, np.ones(len(keep), dtype=bool)
        self.n, self.dead = len(keep), 0

    def live_seqs(self) -> np.ndarray:
        """The seqs of the rows not deleted, in order."""
        return self.seqs[: self.n][self.alive[: self.n]]

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
        block = np.empty((min(len(rows), EXACT_BLOCK), self.dim), dtype=np.float32)
        raw = np.empty(block.shape, dtype=self.vecs.dtype) if self.bf16 else block
        for start in range(0, len(rows), EXACT_BLOCK):
            part = rows[start : start + EXACT_BLOCK]
            buf = raw[: len(part)]
            # mode="clip" skips the bounds-checked (buffered) copy; rows are in range.
            np.take(self.vecs, part, axis=0, out=buf, mode="clip")
            if self.bf16:
                buf = _from_bf16(buf, block[: len(part)])
            out[:, start : start + len(part)] = _dot(buf, queries)
        sqn = self.sqn[rows]
        _ranking(out, sqn, l2)
        if not self.bf16:
            return out, None
        qn = np.linalg.norm(queries, axis=1).astype(np.float32)[:, None]
        slack = qn * (self.err[rows] + self.dim * 2.0**-22 * np.sqrt(sqn))[None, :]
        if l2:
            slack *= 2
            slack += self.dim * 2.0**-22 * sqn[None, :]
        return out, slack
