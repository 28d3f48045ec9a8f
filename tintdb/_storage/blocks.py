"""The rows of the vector blocks (``vblocks``): reading them, and the changes a write
makes to them. The codec of one block's bytes is ``_vblocks`` (pure); this module is
the SQL around it. Its writing functions are called by ``Tx`` alone, inside a write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .. import _vblocks as vblocks
from .._vblocks import BLOCK_SHIFT, block_runs
from .rows import json_ints

# Changed vectors of existing records are written into their block in place, and a
# deleted record's slot is marked dead in place (Python 3.11's incremental blob I/O);
# without it, the block is rewritten. Tests switch it.
IN_PLACE_UPDATES = hasattr(sqlite3.Connection, "blobopen")
# Blocks read per statement when looking up scattered seqs.
BLOCKS_PER_READ = 256
# A block of which at most this many records are wanted gives just their bytes (blob
# I/O) instead of being read and decoded whole (64 vectors). Scattered records, as an
# exact search over a filter's matches reads them, took a quarter of the time for 100
# or 1,000 of 100k, half for 20,000; a block wanted whole reads a little faster whole.
SPARSE_SLOTS = 32


def read_blocks(
    conn: sqlite3.Connection, coll: int, blks: Sequence[int], columns: str
) -> dict[int, tuple[Any, ...]]:
    """blk -> the given columns of each block that exists: ``"slots, data"`` to read
    or rewrite one, ``"rowid, slots"`` for blob I/O into it."""
    out: dict[int, tuple[Any, ...]] = {}
    for i in range(0, len(blks), BLOCKS_PER_READ):
        for blk, *values in conn.execute(
            f"SELECT blk, {columns} FROM vblocks WHERE coll = ? AND blk IN "
            "(SELECT value FROM json_each(?))",
            (coll, json_ints(blks[i : i + BLOCKS_PER_READ])),
        ):
            out[blk] = tuple(values)
    return out


def block_parts(
    conn: sqlite3.Connection, coll: int, seqs: np.ndarray | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(seqs, vectors) of each block, in seq order, restricted to ``seqs`` if given."""
    if seqs is None:
        # Row by row, not fetchmany: each block's bytes are freed before the next
        # arrives, so they are allocated in the same, cache-warm memory.
        for blk, slots, data in conn.execute(
            "SELECT blk, slots, data FROM vblocks WHERE coll = ? ORDER BY blk", (coll,)
        ):
            yield vblocks.live(blk, slots, data)
        return
    wanted = np.unique(np.asarray(seqs, dtype=np.int64))
    runs = block_runs(wanted)
    for i in range(0, len(runs), BLOCKS_PER_READ):
        chunk = runs[i : i + BLOCKS_PER_READ]
        few = {blk for blk, a, b in chunk if IN_PLACE_UPDATES and b - a <= SPARSE_SLOTS}
        heads = read_blocks(conn, coll, [blk for blk, _, _ in chunk if blk in few], "rowid, slots")
        got = read_blocks(conn, coll, [blk for blk, _, _ in chunk if blk not in few], "slots, data")
        for blk, a, b in chunk:
            if blk in few:
                if blk in heads:
                    part = _some_of_block(conn, heads[blk], wanted[a:b])
                    if part is not None:
                        yield part
                continue
            if blk not in got:
                continue
            have, vecs = vblocks.decode(got[blk][0], got[blk][1])
            hit = np.isin(have, vblocks.slots_of(wanted[a:b]))
            if hit.any():
                yield (blk << BLOCK_SHIFT) + have[hit].astype(np.int64), vecs[hit]


def _some_of_block(
    conn: sqlite3.Connection, head: tuple[Any, ...], seqs: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | None:
    """(seqs, vectors) of those of ``seqs`` (sorted, all in one block) that it holds,
    each read alone from the block's bytes; None if it holds none."""
    rowid, slots = head
    if not slots:
        return None
    found: list[int] = []
    rows = bytearray()  # writable, as a decoded block's rows are
    # Python 3.11's Connection.blobopen (IN_PLACE_UPDATES is checked by the caller).
    with conn.blobopen("vblocks", "data", rowid, readonly=True) as blob:  # type: ignore[attr-defined,unused-ignore]
        width = len(blob) // len(slots)
        for seq in seqs.tolist():
            j = slots.find(seq & (vblocks.BLOCK - 1))  # a dead slot is not found
            if j >= 0:
                blob.seek(j * width)
                rows += blob.read(width)
                found.append(seq)
    if not found:
        return None
    vecs = np.frombuffer(rows, dtype=np.float32).reshape(len(found), -1)
    return np.array(found, dtype=np.int64), vecs


def vectors_by_slot(conn: sqlite3.Connection, coll: int, seqs: np.ndarray) -> dict[int, bytes]:
    """seq -> float32 vector bytes of scattered ``seqs`` (a query's winners lie one or
    two to a block, so each is read alone from its block's bytes: see SPARSE_SLOTS)."""
    return {
        seq: row.tobytes()
        for part, vecs in block_parts(conn, coll, seqs)
        for seq, row in zip(part.tolist(), vecs, strict=True)
    }


# ---------------------------------------------------------------- changes (inside a write)


def put_vectors(conn: sqlite3.Connection, coll: int, seqs: np.ndarray, vectors: np.ndarray) -> None:
    """Set the vectors of ``seqs`` (new or existing), rewriting each touched block once."""
    if len(seqs) == 0:
        return
    order = np.argsort(seqs, kind="stable")
    seqs = np.asarray(seqs, dtype=np.int64)[order]
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)[order]
    runs = block_runs(seqs)
    if IN_PLACE_UPDATES:
        runs = _overwrite_in_place(conn, coll, seqs, vectors, runs)
        if not runs:
            return
    old = read_blocks(conn, coll, [blk for blk, _, _ in runs], "slots, data")
    rows = []
    for blk, a, b in runs:
        before = old.get(blk)
        slots, data = vblocks.merged(
            None if before is None else (before[0], before[1]),
            vblocks.slots_of(seqs[a:b]),
            vectors[a:b],
        )
        rows.append((coll, blk, slots, data))
    conn.executemany(
        "INSERT OR REPLACE INTO vblocks(coll, blk, slots, data) VALUES (?, ?, ?, ?)", rows
    )


def _overwrite_in_place(
    conn: sqlite3.Connection,
    coll: int,
    seqs: np.ndarray,
    vectors: np.ndarray,
    runs: list[tuple[int, int, int]],
) -> list[tuple[int, int, int]]:
    """Write new vectors of seqs a block already holds straight into its bytes.

    A rewritten block is a whole row (about 100 KB at 384 dimensions) in the WAL;
    incremental blob I/O writes only the pages the vector lies on, a fraction of
    that for scattered updates. Returns the runs left for a rewrite (blocks that are
    new or gain slots).
    """
    heads = read_blocks(conn, coll, [blk for blk, _, _ in runs], "rowid, slots")
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
        with conn.blobopen("vblocks", "data", head[0]) as blob:  # type: ignore[attr-defined,unused-ignore]
            for j, row in zip(at.tolist(), vectors[a:b], strict=True):
                blob.seek(j * width)
                blob.write(row.tobytes())  # in seq order: a repeated seq ends last
    return rest


def drop_vectors(conn: sqlite3.Connection, coll: int, seqs: np.ndarray) -> None:
    """Remove the vectors of ``seqs``: a block left empty is deleted; otherwise the
    slots are marked dead in place while at most half the block is dead (seqs are
    never reused, so a dead slot never comes back), else it is rewritten compactly.
    Rewriting a block for each delete put about 100 KB per record into the WAL."""
    if len(seqs) == 0:
        return
    seqs = np.sort(np.asarray(seqs, dtype=np.int64))
    runs = block_runs(seqs)
    heads = read_blocks(conn, coll, [blk for blk, _, _ in runs], "rowid, slots")
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
            with conn.blobopen("vblocks", "slots", rowid) as blob:  # type: ignore[attr-defined,unused-ignore]
                for j in np.flatnonzero(drop).tolist():
                    blob.seek(j)
                    blob.write(bytes([vblocks.DEAD]))
        else:
            compact[blk] = live
    if compact:
        _keep_slots(conn, coll, compact, read_blocks(conn, coll, list(compact), "slots, data"))
    _delete_blocks(conn, coll, gone)


def compact_blocks(conn: sqlite3.Connection, coll: int, blks: Sequence[int]) -> None:
    """Rewrite the given blocks without their dead slots (read again here: another
    process may have changed them since they were listed); drop the all-dead ones."""
    old = read_blocks(conn, coll, blks, "slots, data")
    live = {b: np.frombuffer(v[0], dtype=np.uint8) != vblocks.DEAD for b, v in old.items()}
    holed = {b: k for b, k in live.items() if k.any() and not k.all()}
    _keep_slots(conn, coll, holed, old)
    _delete_blocks(conn, coll, [b for b, k in live.items() if not k.any()])


def _keep_slots(
    conn: sqlite3.Connection,
    coll: int,
    keep: dict[int, np.ndarray],
    old: dict[int, tuple[Any, ...]],
) -> None:
    """Rewrite each block in ``keep`` with only the slots its mask selects; ``old``
    holds the blocks' current slots and data, read in this transaction."""
    rows = []
    for blk, live in keep.items():
        rows.append((*vblocks.kept(old[blk][0], old[blk][1], live), coll, blk))
    conn.executemany("UPDATE vblocks SET slots = ?, data = ? WHERE coll = ? AND blk = ?", rows)


def _delete_blocks(conn: sqlite3.Connection, coll: int, blks: Sequence[int]) -> None:
    conn.execute(
        "DELETE FROM vblocks WHERE coll = ? AND blk IN (SELECT value FROM json_each(?))",
        (coll, json_ints(blks)),
    )
