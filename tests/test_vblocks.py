"""The vector-block codec alone (tintdb/_vblocks.py): bytes in, bytes out, no SQLite."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tintdb import _vblocks as vb

DIM = 3


def _block(entries: dict[int, np.ndarray]) -> tuple[bytes, bytes] | None:
    """A block holding ``entries`` (slot -> vector), written as one merge from nothing."""
    if not entries:
        return None
    slots = np.array(sorted(entries), dtype=np.uint8)
    return vb.merged(None, slots, np.stack([entries[s] for s in slots.tolist()]))


def _contents(blk: int, block: tuple[bytes, bytes] | None) -> dict[int, list[float]]:
    if block is None:
        return {}
    seqs, vecs = vb.live(blk, *block)
    assert seqs.tolist() == sorted(seqs.tolist())
    return {int(s): v.tolist() for s, v in zip(seqs, vecs, strict=True)}


slot_sets = st.sets(st.integers(0, vb.BLOCK - 1), max_size=vb.BLOCK)


@given(before=slot_sets, written=st.lists(st.integers(0, vb.BLOCK - 1), max_size=80))
def test_a_merge_keeps_the_old_vectors_and_the_last_new_one_of_each_slot(
    before: set[int], written: list[int]
) -> None:
    blk = 5
    old = {s: np.full(DIM, s, np.float32) for s in before}
    block = _block(old)
    written = sorted(written)  # a run is in seq order; repeats keep their last vector
    new = [np.full(DIM, 1000 + i, np.float32) for i in range(len(written))]
    want = {(blk << vb.BLOCK_SHIFT) + s: v.tolist() for s, v in old.items()}
    for s, v in zip(written, new, strict=True):
        want[(blk << vb.BLOCK_SHIFT) + s] = v.tolist()
    if written:
        block = vb.merged(block, np.array(written, np.uint8), np.stack(new))
    assert _contents(blk, block) == want


@given(present=slot_sets, gone=slot_sets)
def test_dropped_slots_leave_exactly_the_others_live(present: set[int], gone: set[int]) -> None:
    block = _block({s: np.full(DIM, s, np.float32) for s in present})
    if block is None:
        return
    drop, live = vb.dropped(block[0], np.array(sorted(gone), np.uint8))
    have = np.frombuffer(block[0], np.uint8).tolist()
    assert [have[i] for i in np.flatnonzero(drop)] == sorted(present & gone)
    if not live.any():  # the store deletes such a block rather than keeping it empty
        assert present <= gone
        return
    rewritten = vb.kept(*block, live)
    assert sorted(_contents(0, rewritten)) == sorted(present - gone)
    # Marked dead in place instead (the other way a delete is stored): the same records.
    marked = bytes(vb.DEAD if d else s for s, d in zip(have, drop.tolist(), strict=True))
    assert _contents(0, (marked, block[1])) == _contents(0, rewritten)


@given(present=slot_sets, wanted=slot_sets)
def test_positions_find_every_slot_or_say_one_is_missing(
    present: set[int], wanted: set[int]
) -> None:
    block = _block({s: np.full(DIM, s, np.float32) for s in present})
    slots = b"" if block is None else block[0]
    at = vb.positions(slots, np.array(sorted(wanted), np.uint8))
    if not wanted <= present:
        assert at is None
    else:
        assert at is not None
        assert [slots[i] for i in at.tolist()] == sorted(wanted)


def test_block_runs_cut_sorted_seqs_at_block_edges() -> None:
    seqs = np.array([0, 1, 63, 64, 65, 200, 1000], dtype=np.int64)
    assert vb.block_runs(seqs) == [(0, 0, 3), (1, 3, 5), (3, 5, 6), (15, 6, 7)]
    assert vb.block_runs(np.empty(0, np.int64)) == []


@given(present=slot_sets, dead=slot_sets, gone=slot_sets)
def test_a_slot_marked_dead_is_neither_dropped_again_nor_live(
    present: set[int], dead: set[int], gone: set[int]
) -> None:
    block = _block({s: np.full(DIM, s, np.float32) for s in present})
    if block is None:
        return
    marked = bytes(vb.DEAD if s in dead else s for s in block[0])
    drop, live = vb.dropped(marked, np.array(sorted(gone), np.uint8))
    have = list(block[0])
    assert [have[i] for i in np.flatnonzero(drop)] == sorted((present - dead) & gone)
    assert [have[i] for i in np.flatnonzero(live)] == sorted(present - dead - gone)
