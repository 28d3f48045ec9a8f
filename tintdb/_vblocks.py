"""The vector-block codec: how a run of 64 seqs' float32 vectors is one SQLite row.

A block row (``vblocks``: coll, blk, slots, data) holds the slots present, ``seq % 64``
ascending, one byte each, and their float32 vectors in that order. A slot byte DEAD
marks a deleted record whose bytes await a rewrite. Pure functions on bytes and numpy
arrays: the store (``_storage``) reads and writes the rows; every decision about a
block's bytes is here, where it can be tested alone.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BLOCK",
    "BLOCK_SHIFT",
    "DEAD",
    "block_runs",
    "decode",
    "dropped",
    "kept",
    "live",
    "merged",
    "positions",
    "slots_of",
]

BLOCK_SHIFT = 6
BLOCK = 1 << BLOCK_SHIFT
DEAD = 0xFF


def block_runs(seqs: np.ndarray) -> list[tuple[int, int, int]]:
    """(blk, start, stop) for each run of equal blocks in sorted ``seqs``."""
    if len(seqs) == 0:
        return []
    blks = seqs >> BLOCK_SHIFT
    cuts = np.flatnonzero(np.diff(blks)) + 1
    starts = np.concatenate(([0], cuts)).tolist()
    stops = np.concatenate((cuts, [len(seqs)])).tolist()
    return [(int(blks[a]), a, b) for a, b in zip(starts, stops, strict=True)]


def slots_of(seqs: np.ndarray) -> np.ndarray:
    """Each seq's slot in its block."""
    return (np.asarray(seqs, dtype=np.int64) & (BLOCK - 1)).astype(np.uint8)


def decode(slots: bytes, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """A block's slot bytes (dead ones included) and its vectors, one row per slot."""
    have = np.frombuffer(slots, dtype=np.uint8)
    return have, np.frombuffer(data, dtype=np.float32).reshape(len(have), -1)


def live(blk: int, slots: bytes, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(seqs, vectors) of a block's live records, in seq order."""
    have, vecs = decode(slots, data)
    if DEAD.to_bytes(1, "little") in slots:
        alive = have != DEAD
        have, vecs = have[alive], vecs[alive]
    return np.int64(blk << BLOCK_SHIFT) + have, vecs


def merged(
    old: tuple[bytes, bytes] | None, slots: np.ndarray, vectors: np.ndarray
) -> tuple[bytes, bytes]:
    """The (slots, data) of a block after setting ``vectors`` at ``slots`` (ascending
    within a run; a repeated slot keeps its last vector) over the block ``old`` (None:
    a new block). Dead slots' bytes are dropped."""
    if old is None and (len(slots) == 1 or bool(np.all(np.diff(slots.astype(np.int64)) > 0))):
        return slots.tobytes(), np.ascontiguousarray(vectors, dtype=np.float32).tobytes()
    dim = vectors.shape[1]
    present = np.zeros(BLOCK, dtype=bool)
    buf = np.empty((BLOCK, dim), dtype=np.float32)
    if old is not None:
        have, data = decode(*old)
        alive = have != DEAD
        buf[have[alive]] = data[alive]
        present[have[alive]] = True
    buf[slots] = vectors
    present[slots] = True
    keep = np.flatnonzero(present)
    return keep.astype(np.uint8).tobytes(), buf[keep].tobytes()


def positions(slots: bytes, wanted: np.ndarray) -> np.ndarray | None:
    """The row of each of ``wanted`` (slots) inside a block whose slot bytes are
    ``slots``; None if one is not there (the block would gain a slot)."""
    where = np.full(256, -1, dtype=np.int64)
    where[np.frombuffer(slots, dtype=np.uint8)] = np.arange(len(slots))
    at = where[wanted]
    return None if bool((at < 0).any()) else at


def dropped(slots: bytes, gone: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a block whose slot bytes are ``slots``, with the records at slots ``gone``
    deleted: (which rows are deleted now, which stay live)."""
    have = np.frombuffer(slots, dtype=np.uint8)
    hit = np.zeros(256, dtype=bool)  # a table, not np.isin: this runs once per block
    hit[gone] = True
    drop = hit[have]
    return drop, (have != DEAD) & ~drop


def kept(slots: bytes, data: bytes, mask: np.ndarray) -> tuple[bytes, bytes]:
    """The (slots, data) of a block rewritten with only the rows ``mask`` selects."""
    have, vecs = decode(slots, data)
    return have[mask].tobytes(), vecs[mask].tobytes()
