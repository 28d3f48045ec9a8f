"""How a query is answered: exact, post-filtered HNSW, or HNSW with a filter callback,
and adds whose graph insertion overlaps the SQLite write.

Whatever the plan, the answer must be the nearest matching records (exactly, or as
closely as HNSW finds them) and never short when enough records match.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _held import hold_the_tail
from _profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

import tintdb
from tintdb import _exact, _index, _local, _planning, _regex, _snapshot
from tintdb._index import VectorIndex
from tintdb._local.indexes import IndexKeeper
from tintdb._local.reads import Reads
from tintdb._planning import (
    POSTFILTER_COST_RATIO,
    POSTFILTER_MAX_FETCH,
    postfilter_beam,
    postfilter_fetch,
)
from tintdb._storage import Store, Tx, reads
from tintdb._storage.reads import RecordReads

DIM = 16
N = 6000


@given(
    matches=st.integers(0, 10**7),
    total=st.integers(0, 10**7),
    k=st.integers(1, 1000),
    ef_search=st.integers(1, 1000),
)
def test_postfilter_fetch_obeys_its_cost_model(
    matches: int, total: int, k: int, ef_search: int
) -> None:
    matches = min(matches, total)
    fetch = postfilter_fetch(matches, total, k, ef_search)
    if fetch is None:
        return
    assert matches > k
    assert k <= fetch <= POSTFILTER_MAX_FETCH
    beam = postfilter_beam(fetch, ef_search)
    assert beam >= 2 * fetch
    assert beam * POSTFILTER_COST_RATIO <= matches
    # Enough are looked at that about twice k should match.
    assert fetch * matches >= 2 * k * total - total


def test_postfilter_fetch_plans() -> None:
    assert postfilter_fetch(10_000, 100_000, 10) == 200  # 10 %: 200 neighbours, ~20 match
    assert postfilter_beam(200, 100) == 400
    assert postfilter_fetch(36_000, 100_000, 10) == 56
    assert postfilter_beam(56, 100) == 200
    assert postfilter_fetch(500, 100_000, 10) is None  # few matches: exact is cheaper
    assert postfilter_fetch(10, 100_000, 10) is None  # no more matches than asked for


def _data(seed: int = 7) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, DIM)).astype(np.float32) * 4
    cluster = rng.integers(0, 20, N)
    vecs = (centres[cluster] + rng.normal(size=(N, DIM))).astype(np.float32)
    ids = [f"r{i}" for i in range(N)]
    mds = [
        {"half": i % 2, "fifth": i % 5, "tenth": i % 10, "rare": i % 1000 == 0} for i in range(N)
    ]
    return ids, vecs, mds


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Any:
    ids, vecs, mds = _data()
    client = tintdb.PersistentClient(path=str(tmp_path_factory.mktemp("plans")))
    col = client.create_collection("plans", embedding_function=None)
    for s in range(0, N, 1000):  # batches large enough for the overlapped add
        col.add(ids=ids[s : s + 1000], embeddings=vecs[s : s + 1000], metadatas=mds[s : s + 1000])
    yield col, ids, vecs, mds
    client.close()


def _truth(vecs: np.ndarray, mask: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    rows = np.flatnonzero(mask)
    d = ((vecs[rows] - q) ** 2).sum(axis=1)
    return rows[np.argsort(d, kind="stable")[:k]].tolist()


class _Spy:
    """Records what the post-filter plan returned, to know which plan answered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.results: list[bool] = []  # per query: did post-filtering answer it?
        real = VectorIndex.knn_postfilter

        def spy(index: VectorIndex, *args: Any, **kwargs: Any) -> Any:
            out = real(index, *args, **kwargs)
            self.results += [f is not None for f in out]
            return out

        monkeypatch.setattr(VectorIndex, "knn_postfilter", spy)


@pytest.mark.parametrize(
    ("field", "value", "k", "share", "cap", "plan"),
    [
        ("tenth", 3, 10, 0.15, 200_000, "exact"),  # 600 matches, 10% of the collection
        ("tenth", 3, 10, 0.0, 200_000, "callback"),  # no share rule: past EXACT_LIMIT
        ("tenth", 3, 10, 0.15, 500, "callback"),  # past EXACT_CAP
        ("fifth", 3, 300, 0.15, 200_000, "callback"),  # 1,200 matches, 20%
    ],
)
def test_many_matches_are_searched_exactly_up_to_a_share_of_the_collection(
    big: Any,
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    value: Any,
    k: int,
    share: float,
    cap: int,
    plan: str,
) -> None:
    """Past EXACT_LIMIT matches, exact search is still the plan while they are at most
    EXACT_SHARE of the collection (and EXACT_CAP): hnswlib's filter callback would visit
    many nodes per match found, and miss more. Beyond, the callback."""
    col, ids, vecs, mds = big
    monkeypatch.setattr(_local.planner, "EXACT_LIMIT", 100)
    monkeypatch.setattr(_local.planner, "EXACT_SHARE", share)
    monkeypatch.setattr(_local.planner, "EXACT_CAP", cap)
    used: list[str] = []
    real_knn, real_exact = VectorIndex.knn, IndexKeeper.exact

    def knn(index: VectorIndex, q: Any, k: int, allowed: Any = None, ef: Any = None) -> Any:
        if allowed is not None:
            used.append("callback")
        return real_knn(index, q, k, allowed, ef)

    def exact(keeper: IndexKeeper, *args: Any) -> Any:
        used.append("exact")
        return real_exact(keeper, *args)

    monkeypatch.setattr(VectorIndex, "knn", knn)
    monkeypatch.setattr(IndexKeeper, "exact", exact)
    mask = np.array([md[field] == value for md in mds])
    queries = np.random.default_rng(5).normal(size=(5, DIM)).astype(np.float32) * 4
    got = col.query(query_embeddings=queries, n_results=k, where={field: value})
    assert set(used) == {plan}
    assert all(len(row) == k for row in got["ids"])
    if plan == "exact":
        assert got["ids"] == [[ids[r] for r in _truth(vecs, mask, q, k)] for q in queries]


@pytest.mark.parametrize(
    ("field", "value", "k", "post"),
    [
        ("half", 1, 10, True),  # 3,000 matches: 40 neighbours looked at, ~20 match
        ("fifth", 3, 3, True),  # 1,200 matches: 30 looked at (beam 200)
        ("fifth", 3, 10, True),  # 1,200 matches: 100 looked at (beam 200)
        ("tenth", 3, 10, False),  # 600 matches: exact is cheaper
        ("rare", True, 10, False),  # 6 matches: all of them
    ],
)
def test_filtered_queries_find_the_nearest_matches(
    big: Any, monkeypatch: pytest.MonkeyPatch, field: str, value: Any, k: int, post: bool
) -> None:
    col, ids, vecs, mds = big
    spy = _Spy(monkeypatch)
    mask = np.array([md[field] == value for md in mds])
    queries = np.random.default_rng(1).normal(size=(30, DIM)).astype(np.float32) * 4
    found = col.query(
        query_embeddings=queries, n_results=k, where={field: value}, include=["metadatas"]
    )
    if post:  # tried for every query; a few may find too few matches and fall back
        assert len(spy.results) == 30 and sum(spy.results) >= 24
    else:
        assert not spy.results
    hits = total = 0
    for q, got, got_mds in zip(queries, found["ids"], found["metadatas"], strict=True):
        want = _truth(vecs, mask, q, k)
        assert len(got) == min(k, int(mask.sum()))
        assert all(md[field] == value for md in got_mds)
        hits += len({ids[i] for i in want} & set(got))
        total += len(want)
    assert hits / total >= (0.97 if post else 1.0)


def test_a_filter_far_from_the_query_falls_back_and_is_not_short(
    big: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """About half the records match, all on the far side from the query: none land among its
    unfiltered neighbours, so post-filtering comes up short and exact search answers."""
    col, ids, vecs, _ = big
    spy = _Spy(monkeypatch)
    mask = vecs[:, 0] > 0
    col.update(
        ids=[ids[i] for i in np.flatnonzero(mask)], metadatas=[{"far": True}] * int(mask.sum())
    )
    try:
        assert mask.sum() > 1000
        q = np.zeros(DIM, np.float32)
        q[0] = -40.0
        got = col.query(query_embeddings=q[None], n_results=25, where={"far": True})
        assert spy.results and not any(spy.results)  # tried, and came up short
        assert got["ids"][0] == [ids[i] for i in _truth(vecs, mask, q, 25)]
    finally:
        col.update(
            ids=[ids[i] for i in np.flatnonzero(mask)], metadatas=[{"far": None}] * int(mask.sum())
        )


@pytest.mark.parametrize(
    ("pattern", "often"),
    [
        ("^amber ", True),  # every document holding the literal matches
        ("^amber [0-9]*7$", False),  # a tenth of them
        ("^amber 1999$", False),  # one record: the superset is tested to its end
        ("^amber x", False),  # none
    ],
)
@pytest.mark.parametrize("large", [False, True], ids=["superset", "large-superset"])
def test_a_regex_query_tests_only_the_nearest_of_its_literal_superset(
    monkeypatch: pytest.MonkeyPatch, pattern: str, often: bool, large: bool
) -> None:
    """A $regex with a required literal is searched among the records holding the
    literal (read from the trigram index alone); the pattern runs only on the nearest
    of them, as many as it takes to find k that match, and the answer is the exact one.

    ``large``: the superset is over EXACT_LIMIT (the size past which matches are not
    searched exactly): it is still searched exactly, its nearest records tested, when
    a query's window of neighbours comes up short."""
    if large:
        monkeypatch.setattr(_local.planner, "EXACT_LIMIT", 100)
    ids, vecs, _ = _data()
    docs = [f"{'amber' if i % 3 else 'birch'} {i}" for i in range(N)]
    mask = np.array([_regex.search(pattern, d) for d in docs])
    tested: list[str] = []
    real = _regex.search

    def counted(p: str, text: str) -> bool:
        tested.append(text)
        return real(p, text)

    with tintdb.EphemeralClient() as client:
        col = client.create_collection("regex-plans", embedding_function=None)
        for s in range(0, N, 1000):
            col.add(
                ids=ids[s : s + 1000], embeddings=vecs[s : s + 1000], documents=docs[s : s + 1000]
            )
        monkeypatch.setattr(_regex, "search", counted)
        queries = np.random.default_rng(3).normal(size=(6, DIM)).astype(np.float32) * 4
        for round_ in range(2):  # the second time, the superset is remembered
            for i, q in enumerate(queries):
                tested.clear()
                got = col.query(
                    query_embeddings=q[None], n_results=10, where_document={"$regex": pattern}
                )
                want = [ids[r] for r in _truth(vecs, mask, q, 10)]
                assert got["ids"][0] == want, (round_, i)
                if often:  # a window's worth at most, never the ~4,000 holding the literal
                    assert len(tested) <= 200, len(tested)
        # Several queries in one call, and beside a where.
        got = col.query(query_embeddings=queries, n_results=10, where_document={"$regex": pattern})
        assert got["ids"] == [[ids[r] for r in _truth(vecs, mask, q, 10)] for q in queries]
        assert all(not t.startswith("birch") for t in tested)  # only the literal's records
        # A page of get: the superset's records tested in order until the page is full.
        matching = [ids[r] for r in np.flatnonzero(mask)]
        for offset, limit in ((0, 10), (7, 5), (max(0, len(matching) - 2), 10)):
            tested.clear()
            page = col.get(where_document={"$regex": pattern}, limit=limit, offset=offset)
            assert page["ids"] == matching[offset : offset + limit]
            if often and offset < 10:
                assert len(tested) <= 600, len(tested)


def test_small_collections_are_searched_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vecs = rng.random((_planning.EXACT_BELOW, DIM), dtype=np.float32)
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection(
            "small", embedding_function=None, configuration={"hnsw": {"ef_search": 1}}
        )
        col.add(ids=[str(i) for i in range(len(vecs))], embeddings=vecs)
        queries = rng.random((20, DIM), dtype=np.float32)
        got = col.query(query_embeddings=queries, n_results=5)["ids"]
    for q, row in zip(queries, got, strict=True):
        d = ((vecs - q) ** 2).sum(axis=1)
        assert row == [str(i) for i in np.argsort(d, kind="stable")[:5]]


def _failing_log(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Make every write fail at its change-log row, the last statement before the
    commit; returns the count of calls to it."""
    calls = {"n": 0}

    def failing_log(self: Tx, *args: Any) -> int:
        calls["n"] += 1
        raise OSError("disk full (injected)")

    monkeypatch.setattr(Tx, "log", failing_log)
    return calls


@pytest.mark.parametrize("pending", [False, True], ids=["graph", "tail"])
def test_a_failed_add_leaves_nothing_in_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pending: bool
) -> None:
    """A write that fails before its commit leaves the index as it was, whether the
    earlier records are in the graph or still in the tail; later writes work."""
    rng = np.random.default_rng(5)
    first = rng.random((3000, DIM), dtype=np.float32)
    refused = rng.random((500, DIM), dtype=np.float32) + 5  # far from everything else
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection("failed", embedding_function=None)
        if pending:
            hold_the_tail(monkeypatch)
        col.add(ids=[f"a{i}" for i in range(3000)], embeddings=first)
        client._backend.keeper.wait_jobs()
        index = client._backend.keeper.indexes[str(col.id)]
        assert index.pending == (3000 if pending else 0)
        real_log = Tx.log
        calls = _failing_log(monkeypatch)
        with pytest.raises(OSError, match="injected"):
            col.add(ids=[f"b{i}" for i in range(500)], embeddings=refused)
        assert calls["n"] == 1
        monkeypatch.setattr(Tx, "log", real_log)
        assert col.count() == 3000 and len(index) == 3000
        assert index.pending == (3000 if pending else 0)
        got = col.query(query_embeddings=refused[:3], n_results=3)["ids"]
        assert all(i.startswith("a") for row in got for i in row)
        col.add(ids=[f"c{i}" for i in range(500)], embeddings=refused)
        got = col.query(query_embeddings=refused[:3], n_results=1)["ids"]
        assert got == [["c0"], ["c1"], ["c2"]]
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("failed", embedding_function=None)
        assert col.count() == 3500
        assert col.query(query_embeddings=refused[:2], n_results=1)["ids"] == [["c0"], ["c1"]]


@pytest.mark.parametrize("verb", ["update", "upsert"])
def test_a_failed_update_leaves_the_old_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    """An update or upsert that fails before its commit leaves the records at their old
    vectors, and a later update of them works.

    The beam covers the whole graph (ef_search above the record count), so what is
    checked is which vector each node holds, not how well a moved node was relinked.
    """
    rng = np.random.default_rng(6)
    first = rng.random((3000, DIM), dtype=np.float32)
    moved = rng.random((500, DIM), dtype=np.float32) + 5  # far from everything else
    ids = [f"a{i}" for i in range(3000)]
    whole_graph = {"hnsw": {"ef_search": 4000}}
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection("failed", embedding_function=None, configuration=whole_graph)
        col.add(ids=ids, embeddings=first)
        client._backend.keeper.wait_jobs()
        calls = _failing_log(monkeypatch)
        with pytest.raises(OSError, match="injected"):
            getattr(col, verb)(ids=ids[:500], embeddings=moved)
        assert calls["n"] == 1
        monkeypatch.undo()
        got = col.query(query_embeddings=first[:3], n_results=1)["ids"]
        assert got == [["a0"], ["a1"], ["a2"]]
        far = col.query(query_embeddings=moved[:3], n_results=1)["ids"]
        assert all(row[0] not in ("a0", "a1", "a2") for row in far)
        getattr(col, verb)(ids=ids[:500], embeddings=moved)
        assert col.query(query_embeddings=moved[:3], n_results=1)["ids"] == [
            ["a0"],
            ["a1"],
            ["a2"],
        ]
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("failed", embedding_function=None)
        assert col.query(query_embeddings=moved[:2], n_results=1)["ids"] == [["a0"], ["a1"]]


@settings(max_examples=examples(25), deadline=None)
@given(data=st.data())
def test_adds_in_the_tail_and_the_graph_match_the_store(data: st.DataObject) -> None:
    """Batches of any size, with the tail put in the graph in steps of any size at any
    point (or not at all): every record is found by its own vector, at distance 0.

    The collection is above EXACT_BELOW, so queries go through the graph and the tail
    together. The search beam is wide enough (ef_search past the collection's size)
    that the graph's approximation cannot miss a record."""
    step = _local.indexes.APPLY_STEP
    sizes = data.draw(st.lists(st.sampled_from([1, step - 1, step, 700]), min_size=1, max_size=6))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    with pytest.MonkeyPatch.context() as mp:
        hold_the_tail(mp)
        with tintdb.EphemeralClient() as client:
            col = client.create_collection(
                "mix", embedding_function=None, configuration={"hnsw": {"ef_search": 6000}}
            )
            base = rng.random((_planning.EXACT_BELOW + 1, DIM), dtype=np.float32)
            col.add(ids=[f"base{i}" for i in range(len(base))], embeddings=base)
            index = client._backend.keeper.indexes[str(col.id)]
            added: list[tuple[str, np.ndarray]] = []
            for b, size in enumerate(sizes):
                vecs = rng.random((size, DIM), dtype=np.float32) + 2 + b
                batch = [f"b{b}-{i}" for i in range(size)]
                col.add(ids=batch, embeddings=vecs)
                added += list(zip(batch, vecs, strict=True))
                index.apply_pending(data.draw(st.sampled_from([0, 1, 100, 5000])))
            assert col.count() == len(base) + len(added) == len(index)
            sample = [added[i] for i in rng.choice(len(added), min(40, len(added)), replace=False)]
            got = col.query(
                query_embeddings=np.stack([v for _, v in sample]),
                n_results=1,
                include=["distances"],
            )
            assert [row[0] for row in got["ids"]] == [i for i, _ in sample]
            assert all(row[0] == 0 for row in got["distances"])


def test_a_filter_that_keeps_coming_up_short_stops_trying_post_filtering(
    big: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    col, ids, vecs, _ = big
    mask = vecs[:, 0] > 0
    col.update(
        ids=[ids[i] for i in np.flatnonzero(mask)], metadatas=[{"side": 1}] * int(mask.sum())
    )
    try:
        spy = _Spy(monkeypatch)
        rng = np.random.default_rng(11)
        for n in range(12):
            q = np.zeros(DIM, np.float32)
            q[0] = -40.0
            q[1:] = rng.normal(size=DIM - 1)
            got = col.query(query_embeddings=q[None], n_results=10, where={"side": 1})
            assert got["ids"][0] == [ids[i] for i in _truth(vecs, mask, q, 10)], n
        assert len(spy.results) == _local.planner.POSTFILTER_TRIES  # then the plan changed
        assert not any(spy.results)
    finally:
        col.update(
            ids=[ids[i] for i in np.flatnonzero(mask)], metadatas=[{"side": None}] * int(mask.sum())
        )


def test_a_key_whose_values_keep_coming_up_short_skips_the_window_for_them_all(
    big: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both values of ``zone`` lie on the far side from the queries: once post-filtering
    came up short for filters of that shape (once for each value), the next query goes
    straight to the plan over its matches, though its own filter came up short only
    once; its answer is still the exact one."""
    col, ids, vecs, _ = big
    far = np.flatnonzero(vecs[:, 0] > -1)
    zones = (far // 7) % 2  # over 1,000 each, and not alike on an even sample
    col.update(ids=[ids[i] for i in far], metadatas=[{"zone": int(z)} for z in zones])
    try:
        spy = _Spy(monkeypatch)
        rng = np.random.default_rng(5)
        for zone in (0, 1, 0):
            q = np.zeros(DIM, np.float32)
            q[0] = -40.0
            q[1:] = rng.normal(size=DIM - 1)
            mask = np.zeros(len(ids), dtype=bool)
            mask[far[zones == zone]] = True
            # Post-filtering is the plan for 3 results among over 1,000 matches.
            got = col.query(query_embeddings=q[None], n_results=3, where={"zone": zone})
            assert got["ids"][0] == [ids[i] for i in _truth(vecs, mask, q, 3)], zone
        assert spy.results == [False, False]  # tried for the first two queries only
    finally:
        col.update(ids=[ids[i] for i in far], metadatas=[{"zone": None}] * len(far))


@settings(max_examples=examples(60), deadline=None)
@given(
    n=st.integers(1, 300),
    block=st.integers(1, 64),
    space=st.sampled_from(["l2", "ip", "cosine"]),
    nq=st.integers(1, 6),
    k=st.integers(1, 20),
    seed=st.integers(0, 2**16),
    drop=st.floats(0, 0.9),
    compact_above=st.sampled_from([0, 37 * 8 * 4, 10**12]),  # bytes of float32
    reloaded=st.booleans(),
    ties=st.sampled_from(["none", "exact", "near"]),
)
def test_exact_search_is_brute_force(
    n: int,
    block: int,
    space: str,
    nq: int,
    k: int,
    seed: int,
    drop: float,
    compact_above: int,
    reloaded: bool,
    ties: str,
) -> None:
    """Exact search over a subset, however the mirror holds the vectors: float32 or
    bfloat16 with error bounds (a threshold the test moves), kept in step or rebuilt
    in chunks after a snapshot load, scored in blocks of any size (uneven last
    blocks, one-row blocks), with deleted rows, many identical or all but identical
    vectors (ties, and near ties that only float32 can order) and multi-query batches.
    The answer is the true nearest of the subset, in order."""
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, 8)).astype(np.float32) * rng.choice([1e-3, 1.0, 1e3])
    if ties != "none":  # a few distinct vectors, each repeated
        vecs = vecs[rng.integers(0, min(4, n), n)]
    if ties == "near":  # ... then moved apart by less than bfloat16 can tell
        vecs = vecs * (1 + rng.normal(scale=1e-3, size=vecs.shape)).astype(np.float32)
    seqs = np.arange(1, n + 1, dtype=np.int64) * 3  # labels are not row numbers
    params = {"ef_construction": 100, "max_neighbors": 16, "ef_search": 10}
    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as tmp:
        mp.setattr(_exact, "COMPACT_ABOVE", compact_above)
        mp.setattr(_exact, "EXACT_BLOCK", block)
        index = VectorIndex(space, 8, params)
        index.upsert(seqs, vecs)
        gone = seqs[rng.random(n) < drop]
        index.remove(gone)
        if reloaded:
            live = np.setdiff1d(seqs, gone)
            cuts = np.sort(rng.integers(0, len(live) + 1, 3))

            def chunks() -> Any:
                for part in np.split(live, cuts):
                    yield part, vecs[part // 3 - 1]

            index.save(Path(tmp))
            loaded = VectorIndex.load(Path(tmp), space, 8, params, chunks)
            assert loaded is not None
            index = loaded
            index.ensure_mirror(chunks)
        subset = np.sort(rng.choice(seqs, size=int(rng.integers(1, n + 1)), replace=False))
        q = rng.normal(size=(nq, 8)).astype(np.float32)
        labels, dists = index.exact(q, k, subset)
    live = np.setdiff1d(subset, gone)
    base = vecs[live // 3 - 1].astype(np.float64)
    if space == "cosine":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
    for i in range(nq):
        qi = q[i].astype(np.float64)
        if space == "l2":
            truth = ((base - qi) ** 2).sum(1)
        else:
            qi = qi / np.linalg.norm(qi) if space == "cosine" else qi
            truth = 1 - base @ qi
        want = min(k, len(live))
        assert len(labels[i]) == want
        scale = max(1.0, float(np.abs(truth).max(initial=0)))
        assert np.allclose(dists[i], np.sort(truth)[:want], rtol=1e-4, atol=1e-5 * scale)
        assert set(labels[i].tolist()) <= set(live.tolist())
        assert len(set(labels[i].tolist())) == want
        assert np.all(np.diff(dists[i]) >= 0)


@pytest.mark.parametrize("space", ["l2", "ip", "cosine"])
def test_bfloat16_scores_leave_near_ties_to_float32(space: str) -> None:
    """Groups of vectors that differ by less than bfloat16 resolves: only the error
    bounds make the compact mirror send them all to the float32 comparison (ranking by
    the compact scores alone gets about one case in four wrong here)."""
    check = test_exact_search_is_brute_force.hypothesis.inner_test  # type: ignore[attr-defined]
    for seed in range(24):
        check(
            n=300, block=64, space=space, nq=3, k=10, seed=seed, drop=0.1,
            compact_above=0, reloaded=seed % 2 == 1, ties="near",
        )  # fmt: skip


def _exact_below_in_a_new_process(value: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TINTDB_EXACT_BELOW": value}
    code = "from tintdb import _planning; print(_planning.EXACT_BELOW)"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_mirror_is_read_on_the_first_exact_search_and_kept_from_the_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process that wrote the records never reads their vectors back for its
    graph, and reads them once for exact search, on its first exact plan (a collection
    never searched exactly never holds the mirror); the writes after it keep the mirror
    in step. A process that opens the path reads them once to put its graph together
    (the snapshot holds no vectors), and once more on its first exact plan; not for
    queries the graph answers."""
    ids, vecs, mds = _data()
    reads: list[str] = []  # one entry per load of a collection's vectors from SQLite
    real = IndexKeeper.loader

    def counted(backend: Any, col: Any, rows: int = 4096) -> Any:
        load = real(backend, col, rows)

        def counting() -> Any:
            reads.append("graph" if rows == 0 else "mirror")
            return load()

        return counting

    monkeypatch.setattr(IndexKeeper, "loader", counted)
    scans: list[int] = []  # every read of vectors out of SQLite, for the index or mirror
    chunks = RecordReads.vector_chunks

    def scanned(store: RecordReads, *args: Any, **kwargs: Any) -> Any:
        scans.append(1)
        return chunks(store, *args, **kwargs)

    monkeypatch.setattr(RecordReads, "vector_chunks", scanned)
    mask = np.array([md["rare"] for md in mds])
    q = np.random.default_rng(5).normal(size=(1, DIM)).astype(np.float32)
    want = [ids[i] for i in _truth(vecs, mask, q[0], 3)]
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection("kept", embedding_function=None)
        col.add(ids=ids, embeddings=vecs, metadatas=mds)
        assert col.query(query_embeddings=q, n_results=3)["ids"][0]  # the graph alone
        assert reads == [] and scans == []  # the add indexed the vectors it was given
        index = col._backend.keeper.indexes[str(col.id)]
        assert not index.has_mirror()
        assert col.query(query_embeddings=q, n_results=3, where={"rare": True})["ids"] == [want]
        assert reads == ["mirror"] and len(scans) == 1
        # Writes the answers below do not see: far records, not rare; a record of
        # neither answer deleted.
        more = np.random.default_rng(6).normal(size=(5, DIM)).astype(np.float32) + 100
        col.add(ids=[f"m{i}" for i in range(5)], embeddings=more, metadatas=[mds[1]] * 5)
        answers = set(want) | {ids[i] for i in _truth(vecs, np.ones(N, dtype=bool), q[0], 3)}
        col.delete(ids=[next(i for i in ids[1:] if i not in answers)])
        col._backend.keeper.wait_jobs()
        assert col.query(query_embeddings=q, n_results=3, where={"rare": True})["ids"]
        assert reads == ["mirror"] and len(scans) == 1  # kept in step, not read again
        mirror = index._mirror
        with col._backend.store.read():
            row = col._backend.store.collection_by_id(str(col.id))
            seqs, stored = col._backend.store.vectors(row.coll, None, DIM)
        assert np.array_equal(mirror.live_seqs(), seqs)
        assert np.array_equal(mirror.vecs[mirror.rows(seqs)], stored)  # float32 at this size
        reads.clear()
        scans.clear()
    nearest = [ids[i] for i in _truth(vecs, np.ones(len(vecs), dtype=bool), q[0], 3)]
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("kept")
        # The first query scans SQLite's vectors; the graph loads behind it.
        assert col.query(query_embeddings=q, n_results=3)["ids"] == [nearest]
        col._backend.keeper.wait_jobs()
        assert reads == ["graph"]
        assert len(scans) == 2
        assert col.query(query_embeddings=q, n_results=3)["ids"][0]  # the graph alone
        assert col.query(query_embeddings=q, n_results=3, where={"rare": True})["ids"] == [want]
        assert col.query(query_embeddings=q, n_results=3, where={"rare": True})["ids"] == [want]
        assert reads == ["graph", "mirror"]
        assert len(scans) == 3


@pytest.mark.parametrize("where", [None, {"half": 1}], ids=["plain", "filtered"])
def test_a_record_deleted_between_search_and_read_back_does_not_shorten_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: dict[str, Any] | None
) -> None:
    """A concurrent delete lands after the index answered but before its records are
    read: the query must still return n_results records, none of them the deleted one."""
    ids, vecs, mds = _data()
    raced: list[str] = []
    real = Reads._query_result

    def racing(backend: Any, labels: Any, *args: Any, **kwargs: Any) -> Any:
        if not raced:  # the first read back only: delete the nearest record first
            with backend.store.read():
                coll = backend.store.collection_by_id(str(col.id)).coll
                row = backend.store.fetch_seqs(coll, [int(labels[0][0])], [])
            raced.append(row[int(labels[0][0])][1])
            col._backend.delete(str(col.id), [raced[0]], None, None)
        return real(backend, labels, *args, **kwargs)

    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection("race", embedding_function=None)
        col.add(ids=ids[:1000], embeddings=vecs[:1000], metadatas=mds[:1000])
        monkeypatch.setattr(Reads, "_query_result", racing)
        got = col.query(query_embeddings=vecs[:1], n_results=5, where=where)
        assert raced and len(got["ids"][0]) == 5 and raced[0] not in got["ids"][0]
        mask = np.array([i < 1000 and ids[i] != raced[0] for i in range(N)])
        if where is not None:
            mask &= np.array([md["half"] == 1 for md in mds])
        assert got["ids"][0] == [ids[i] for i in _truth(vecs, mask, vecs[0], 5)]
        assert col.count() == 999


@pytest.mark.parametrize("change", ["deleted", "no longer matching"])
def test_a_record_changed_between_filtering_and_read_back_is_not_in_a_get(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    """get(where, limit, offset) reads its page from the cached candidate set; a delete,
    or an update after which a record no longer matches, landing before the page is
    read must give the page of the store after that write: not a shorter one, and not
    one holding a record that does not match."""
    ids, vecs, mds = _data()
    raced: list[str] = []
    real = Reads._candidates

    def racing(backend: Any, *args: Any, **kwargs: Any) -> Any:
        matches = real(backend, *args, **kwargs)
        if not raced:  # change the page's first record after the candidates are known
            with backend.store.read():
                coll = backend.store.collection_by_id(str(col.id)).coll
                seq = int(matches.seqs[2])
                raced.append(backend.store.fetch_seqs(coll, [seq], [])[seq][1])
            if change == "deleted":
                col._backend.delete(str(col.id), [raced[0]], None, None)
            else:
                col.update(ids=[raced[0]], metadatas=[{"half": 0}])
        return matches

    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection("race", embedding_function=None)
        col.add(ids=ids[:1000], embeddings=vecs[:1000], metadatas=mds[:1000])
        col.query(query_embeddings=vecs[:1], n_results=1)  # the index is in memory
        monkeypatch.setattr(Reads, "_candidates", racing)
        got = col.get(where={"half": 1}, limit=5, offset=2, include=["metadatas"])
        assert raced
        want = [ids[i] for i in range(1000) if mds[i]["half"] == 1 and ids[i] != raced[0]]
        assert got["ids"] == want[2:7]
        assert got["metadatas"] == [mds[ids.index(r)] for r in want[2:7]]


def test_a_graph_loaded_through_released_pages_holds_every_vector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading fills hnswlib's file through a mapping whose written pages are handed back
    to the page cache every RELEASE_ROWS records (so the process never holds the whole
    file beside the index read from it); what hnswlib reads must still be every link and
    vector: live ones from SQLite, updated ones out of slot order, deleted ones from the
    snapshot."""
    monkeypatch.setattr(_snapshot, "RELEASE_ROWS", 50)
    released: list[int] = []
    real = _snapshot._releaser

    def counting(mapped: Any) -> Any:
        inner = real(mapped)

        def release() -> None:
            released.append(1)
            if inner is not None:
                inner()

        return release

    monkeypatch.setattr(_snapshot, "_releaser", counting)
    rng = np.random.default_rng(21)
    n = 3000
    vecs = rng.normal(size=(n, DIM)).astype(np.float32)
    ids = [f"r{i}" for i in range(n)]
    path = str(tmp_path / "store")
    with tintdb.PersistentClient(path=path) as client:
        col = client.create_collection("released", embedding_function=None)
        col.add(ids=ids, embeddings=vecs)
        moved = rng.choice(n, 300, replace=False)
        vecs[moved] = rng.normal(size=(300, DIM)).astype(np.float32)
        col.update(ids=[ids[i] for i in moved], embeddings=vecs[moved])  # new nodes
        gone = rng.choice(np.setdiff1d(np.arange(n), moved), 200, replace=False)
        col.delete(ids=[ids[i] for i in gone])  # tombstones: vectors kept in the snapshot
    live = np.setdiff1d(np.arange(n), gone)
    with tintdb.PersistentClient(path=path) as client:
        col = client.get_collection("released", embedding_function=None)
        col.query(query_embeddings=vecs[:1])  # answered by a scan; the graph loads behind
        col._backend.keeper.wait_jobs()
        index = col._backend.keeper.indexes[str(col.id)]
        assert len(released) > 3000 // 50
        held = np.asarray(index._full_vectors(index.universe()), dtype=np.float32)
        assert np.array_equal(held, vecs[live])
        found = index.knn(vecs[live[:200]], 1)
        assert found is not None
        assert np.mean(found[0][:, 0] == index.universe()[:200]) >= 0.99


def test_plain_empty_gives_writable_arrays_of_any_size() -> None:
    for shape in [(0, 4), (3, 5), (20_000, 384)]:  # the last is above numpy's huge-page size
        a = _index.plain_empty(shape, np.float32)
        assert a.shape == shape and a.dtype == np.float32 and a.flags.writeable
        a[...] = 1.5
        assert float(a.sum()) == 1.5 * a.size
    h = _index.plain_empty((70_000, 64), np.uint16)
    h[-1, -1] = 7
    assert h.shape == (70_000, 64) and h[-1, -1] == 7


def test_exact_search_threshold_comes_from_the_environment() -> None:
    assert _exact_below_in_a_new_process("77").stdout.strip() == "77"
    bad = _exact_below_in_a_new_process("lots")
    assert bad.returncode != 0
    assert "TINTDB_EXACT_BELOW must be a whole number of records, got 'lots'" in bad.stderr


def test_a_graph_worn_by_deletes_and_updates_is_rebuilt_at_the_line() -> None:
    """Deletes and in-place updates are counted; the write that takes the count past a
    quarter of the live records (and WORN_MIN) starts building a fresh graph behind the
    writes, which then replaces the worn one."""
    rng = np.random.default_rng(8)
    n = 2400
    vecs = rng.random((n, DIM), dtype=np.float32)
    ids = [str(i) for i in range(n)]
    with tintdb.EphemeralClient() as client:
        col = client.create_collection("worn", embedding_function=None)
        col.add(ids=ids, embeddings=vecs)
        keeper = col._backend.keeper
        keeper.wait_jobs()  # every record in the graph: what wears it is counted
        first = keeper.indexes[str(col.id)]
        live = list(ids)
        churn = 0
        for step in range(200):
            if step % 2:
                gone = [str(x) for x in rng.choice(live, 10, replace=False)]
                col.delete(ids=gone)
                live = [i for i in live if i not in set(gone)]
            else:
                moved = [str(x) for x in rng.choice(live, 10, replace=False)]
                new = rng.random((10, DIM), dtype=np.float32)
                col.update(ids=moved, embeddings=new)
                vecs[[int(i) for i in moved]] = new
            keeper.wait_jobs()  # the updated records' new nodes are in (not in the tail)
            churn += 10
            if churn > max(_index.WORN_MIN, len(live) // _index.WORN_SHARE):
                break
            index = col._backend.keeper.indexes[str(col.id)]
            assert not col._backend.keeper.rebuilding, f"rebuilt early, at {churn}"
            with index.lock:  # its holder makes the changes still in the index's inbox
                assert index is first and index.churn == churn, f"rebuilt early, at {churn}"
        col._backend.keeper.wait_jobs()
        index = col._backend.keeper.indexes[str(col.id)]
        assert index is not first, "not rebuilt past the line"
        assert index.churn == 0 and index.free_slots == 0 and len(index) == len(live)
        held = np.asarray(index._full_vectors(index.universe()), dtype=np.float32)
        assert np.array_equal(held, vecs[[int(i) for i in live]])


# ---------------------------------------------------------------- no full pass on a hot path
#
# Every public read and write runs over a collection of 20,000 records while every SQL
# statement is captured and explained, and while the Python functions whose work grows
# with the collection are counted. A statement that walks a whole collection (a SCAN of
# one of its tables, or a SEARCH constrained by the collection alone) or a call into one
# of those functions fails the test, unless the call is one listed in FULL_PASSES, each
# with the reason it must read everything. Run with and without planner statistics
# (sqlite_stat1): the plans must not depend on them.

PLAN_N = 20_000
# Tables (and the FTS5 index) whose rows belong to collections: walking one of them
# whole costs time in proportion to the data.
_PER_COLLECTION = {"records", "meta", "vblocks", "ops", "docs"}
_SQL_WORDS = {"WHERE", "SET", "JOIN", "ON", "ORDER", "GROUP", "LIMIT", "AND", "OR", "USING"}
_SQL_WORDS |= {"INDEXED", "NOT", "AS", "LEFT", "INNER", "UNION", "VALUES", "SELECT"}

# The calls that must read every record, by name, and why. Nothing else may.
FULL_PASSES = {
    "get()": "no filter and no limit: the answer is every record",
    "get(include=[embeddings])": "no filter and no limit: every record and vector",
    "where_document $regex": "a regular expression cannot use an index: every document",
    "where_document $not_regex": "a regular expression cannot use an index: every document",
    "where_document $not_contains": "every document, to find those without the text",
    "where_document $contains of 2 chars": "shorter than a trigram: every document",
    "first query after opening": (
        "the index is not in memory yet: the query scans every stored vector exactly "
        "while the index loads behind it"
    ),
    "index load behind the first query": "reads every vector once to put the graph back",
    "first exact search after the index loads": (
        "builds the exact-search copy of the vectors (the mirror) from SQLite, once per "
        "loaded index; later exact searches read only the rows they score"
    ),
    "where of negations alone": (
        "$ne, $nin and $not_contains alone match the records a lookup does not find: the "
        "answer is the complement, listed by a pass over the live seqs (or, before the "
        "index is in memory, by SQLite walking the records in order until the page is full)"
    ),
    "get(limit, offset) before the index is in memory": (
        "SQLite's OFFSET walks the records before the page; once the index is in memory "
        "the page is cut from its sorted seqs"
    ),
    "a page walked in order": (
        "get(where, limit) of a filter that matched at least a twentieth of an even sample "
        "of the records: it walks them in order, testing each, until the page is full "
        "(about (offset + limit) / share records, at most _local.planner.WALK_MAX by the sample)"
    ),
    "vacuum()": "rewrites the whole file",
    "close()": (
        "writes the index snapshot when more than a fiftieth of a collection changed since "
        "the last one: work in proportion to those changes"
    ),
}

# Python functions whose work grows with the collection, and the condition under which a
# call to them is such work (None: always).
_PER_RECORD: dict[str, tuple[Any, str, Any]] = {}


def _aliases(sql: str) -> dict[str, str]:
    found = re.findall(r"\b(records|meta|vblocks|ops|docs)\s+(?:AS\s+)?([A-Za-z_]\w*)", sql)
    return {alias: table for table, alias in found if alias.upper() not in _SQL_WORDS}


def full_pass_lines(conn: sqlite3.Connection, sql: str) -> list[str]:
    """The lines of ``sql``'s query plan that walk a whole collection."""
    try:
        plan = conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
    except sqlite3.Error:
        return []  # not explainable (BEGIN, PRAGMA, ...)
    aliases = _aliases(sql)
    bad = []
    for *_, detail in plan:
        m = re.match(r"(SCAN|SEARCH) (\S+)(.*)", detail)
        if not m:
            continue
        kind, name, rest = m.groups()
        table = aliases.get(name, name)
        if table not in _PER_COLLECTION:
            continue
        if table == "docs":  # FTS5: the index string says what constrains it
            used = re.search(r"INDEX \d+:(\S*)", rest)
            if kind == "SCAN" and not (used and re.search(r"[M=]", used.group(1))):
                bad.append(detail)
            continue
        if kind == "SCAN":
            bad.append(detail)
            continue
        cons = re.search(r"\(([^()]*)\)\s*$", rest)
        columns = set(re.findall(r"(\w+)\s*(?:=|>|<)", cons.group(1))) if cons else set()
        if columns <= {"coll", "key", "kind"}:  # the collection (or one key of it) whole
            bad.append(detail)
    return bad


class _Watch:
    """Captures the SQL of every connection the store opens, and counts calls into the
    per-record Python paths, attributed to the public call running at the time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.label = "setup"
        self.sql: list[tuple[str, str]] = []
        self.per_record: list[tuple[str, str]] = []
        real_connect = Store._connect

        def connect(target: str) -> sqlite3.Connection:
            conn = real_connect(target)
            conn.set_trace_callback(self._trace)
            return conn

        monkeypatch.setattr(Store, "_connect", staticmethod(connect))

        def counted(owner: Any, name: str, when: Any) -> None:
            real = getattr(owner, name)

            def wrapper(obj: Any, *args: Any, **kwargs: Any) -> Any:
                if when is None or when(obj, *args, **kwargs):
                    self.per_record.append((self.label, f"{owner.__name__}.{name}"))
                return real(obj, *args, **kwargs)

            monkeypatch.setattr(owner, name, wrapper)

        # Reads of every vector of a collection.
        # (On the reads the store and a write's Tx share.)
        counted(RecordReads, "vector_chunks", lambda s, coll, dim, seqs=None, **_: seqs is None)
        counted(RecordReads, "vectors", lambda s, coll, seqs, dim: seqs is None)
        # Building the exact-search copy of the vectors.
        counted(VectorIndex, "ensure_mirror", lambda ix, loader: ix._mirror is None)
        # Whole-index work: snapshots, rebuilds, filter complements.
        counted(VectorIndex, "save", None)
        counted(IndexKeeper, "rebuild", None)
        counted(Store, "reclaim_space", None)
        # The complement of a set of seqs: a pass over the live seqs.
        real_complement = reads.complement

        def complement(universe: np.ndarray, seqs: np.ndarray) -> np.ndarray:
            self.per_record.append((self.label, "complement"))
            return real_complement(universe, seqs)

        monkeypatch.setattr(reads, "complement", complement)

    def _trace(self, sql: str) -> None:
        if not sql.startswith("--"):  # "--": statements SQLite runs inside (FTS5, triggers)
            self.sql.append((self.label, sql))

    def run(self, label: str, call: Any, category: str | None = None) -> Any:
        """Run one public call; its full passes are checked against ``category`` (by
        default the label itself) in FULL_PASSES."""
        self.label = category or label
        try:
            return call()
        finally:
            self.label = "setup"


def _plan_data() -> tuple[list[str], np.ndarray, list[dict[str, Any]], list[str]]:
    rng = np.random.default_rng(21)
    vecs = rng.normal(size=(PLAN_N, DIM)).astype(np.float32)
    ids = [f"id{i}" for i in range(PLAN_N)]
    words = ["amber", "birch", "cobalt", "dune", "ember"]
    mds = [
        {
            "cat": f"c{i % 10}",
            "n": i % 1000,
            "f": (i % 97) / 7,
            "flag": i % 3 == 0,
            "tags": [words[i % 5], words[(i // 5) % 5]],
            "nums": [i % 7, i % 11],
        }
        for i in range(PLAN_N)
    ]
    docs = [f"{words[i % 5]} note {i} of the {words[(i // 7) % 5]}" for i in range(PLAN_N)]
    return ids, vecs, mds, docs


_WHERES: list[dict[str, Any]] = [
    {"cat": "c3"},
    {"cat": {"$eq": "c3"}},
    {"n": 7},
    {"f": {"$eq": 1.0}},
    {"flag": True},
    {"cat": {"$ne": "c3"}},
    {"n": {"$gt": 990}},
    {"n": {"$gte": 990}},
    {"n": {"$lt": 5}},
    {"n": {"$lte": 5}},
    {"cat": {"$in": ["c1", "c2"]}},
    {"n": {"$nin": [1, 2, 3]}},
    {"tags": {"$contains": "amber"}},
    {"nums": {"$not_contains": 3}},
    {"$and": [{"cat": "c3"}, {"n": {"$lt": 500}}]},
    {"$or": [{"cat": "c3"}, {"n": {"$gte": 995}}]},
    {"$and": [{"$or": [{"cat": "c1"}, {"cat": "c2"}]}, {"flag": {"$ne": True}}]},
]
_DOC_WHERES: list[tuple[str, dict[str, Any]]] = [
    ("where_document $contains", {"$contains": "note 12"}),
    ("where_document $contains of 2 chars", {"$contains": "12"}),
    ("where_document $not_contains", {"$not_contains": "amber"}),
    ("where_document $regex", {"$regex": "note 1[0-9]+ "}),
    ("where_document $not_regex", {"$not_regex": "^amber"}),
    (
        "where_document $and of $contains",
        {"$and": [{"$contains": "amber"}, {"$contains": "note 1"}]},
    ),
    (
        "where_document $or of $contains",
        {"$or": [{"$contains": "note 17"}, {"$contains": "note 5"}]},
    ),
]
_GET_FIELDS = ["embeddings", "documents", "metadatas", "uris"]


def _negations_only(where: dict[str, Any]) -> bool:
    key, value = next(iter(where.items()))
    if key in ("$and", "$or"):
        return all(_negations_only(c) for c in value)
    return isinstance(value, dict) and next(iter(value)) in ("$ne", "$nin", "$not_contains")


def _kind(where: dict[str, Any]) -> str | None:
    """The FULL_PASSES entry a where falls under, if any."""
    return "where of negations alone" if _negations_only(where) else None


def _includes(fields: list[str]) -> list[list[str]]:
    return [[f for j, f in enumerate(fields) if mask >> j & 1] for mask in range(1 << len(fields))]


def _battery(col: Any, watch: _Watch, vecs: np.ndarray, ids: list[str]) -> None:
    """Every public read and write, each labelled."""
    rng = np.random.default_rng(4)
    q1, q5 = vecs[:1] + 0.01, vecs[100:105] + 0.01
    some = [ids[i] for i in rng.choice(PLAN_N, 100, replace=False)]
    run = watch.run
    run("count()", col.count)
    run("peek()", col.peek)
    for inc in _includes(_GET_FIELDS):
        run(f"get(ids=1, include={inc})", lambda inc=inc: col.get(ids=ids[5], include=inc))
        run(f"get(ids=100, include={inc})", lambda inc=inc: col.get(ids=some, include=inc))
        run(f"get(limit=10, include={inc})", lambda inc=inc: col.get(limit=10, include=inc))
    run("get(limit=100, offset=15000)", lambda: col.get(limit=100, offset=15_000))
    run(
        "get(where, limit=10, offset=5000)",
        lambda: col.get(where={"n": {"$lt": 900}}, limit=10, offset=5000),
    )
    for w in _WHERES:
        run(f"get(where={w})", lambda w=w: col.get(where=w), _kind(w))
        run(f"get(where={w}, limit=10)", lambda w=w: col.get(where=w, limit=10), _kind(w))
        run(f"get(ids=100, where={w})", lambda w=w: col.get(ids=some, where=w))
    for label, wd in _DOC_WHERES:
        run(label, lambda wd=wd: col.get(where_document=wd, limit=10))
        run(label, lambda wd=wd: col.get(where_document=wd))
    for label, wd in _DOC_WHERES:  # narrowed by a selective where: no longer a full pass
        run(f"get(where, {label[15:]})", lambda wd=wd: col.get(where={"n": 7}, where_document=wd))
    for inc in _includes([*_GET_FIELDS, "distances"]):
        run(f"query(include={inc})", lambda inc=inc: col.query(query_embeddings=q1, include=inc))
    for k in (1, 10, 100):
        for q, nq in ((q1, 1), (q5, 5)):
            run(
                f"query(n_results={k}, {nq} vectors)",
                lambda q=q, k=k: col.query(query_embeddings=q, n_results=k),
            )
    for w in _WHERES:
        run(f"query(where={w})", lambda w=w: col.query(query_embeddings=q5, where=w), _kind(w))
    for label, wd in _DOC_WHERES:
        run(label, lambda wd=wd: col.query(query_embeddings=q1, where_document=wd))
        run(
            f"query(where, {label[15:]})",
            lambda wd=wd: col.query(query_embeddings=q1, where={"n": 7}, where_document=wd),
        )
    run("query(ids=100)", lambda: col.query(query_embeddings=q1, ids=some, n_results=5))
    run(
        "query(ids=100, where)",
        lambda: col.query(query_embeddings=q1, ids=some, where={"cat": {"$ne": "c1"}}),
    )
    # Writes.
    new = rng.normal(size=(100, DIM)).astype(np.float32)
    run(
        "add(1)",
        lambda: col.add(
            ids=["new0"], embeddings=new[:1], metadatas=[{"cat": "c1"}], documents=["fresh"]
        ),
    )
    run(
        "add(100)",
        lambda: col.add(
            ids=[f"new{i}" for i in range(1, 100)], embeddings=new[1:], documents=["fresh"] * 99
        ),
    )
    run("update(1, embeddings)", lambda: col.update(ids=[ids[7]], embeddings=new[:1]))
    run("update(100, metadatas)", lambda: col.update(ids=some, metadatas=[{"n": 5}] * 100))
    run(
        "update(100, documents and embeddings)",
        lambda: col.update(ids=some, embeddings=new, documents=["changed"] * 100),
    )
    run("upsert(1 existing)", lambda: col.upsert(ids=[ids[9]], embeddings=new[:1]))
    run(
        "upsert(100, half new)",
        lambda: col.upsert(ids=some[:50] + [f"up{i}" for i in range(50)], embeddings=new),
    )
    run("query after writes", lambda: col.query(query_embeddings=q1, where={"cat": "c3"}))
    run("get after writes", lambda: col.get(where={"cat": "c3"}, limit=10))
    run("count after writes", col.count)
    run("delete(ids=1)", lambda: col.delete(ids=[ids[11]]))
    run(
        "delete(ids=100)",
        lambda: col.delete(ids=[f"up{i}" for i in range(50)] + [f"new{i}" for i in range(50)]),
    )
    run("delete(where)", lambda: col.delete(where={"n": 999}))
    run("delete(where, limit)", lambda: col.delete(where={"n": 998}, limit=3))
    run("delete(where_document)", lambda: col.delete(where_document={"$contains": "note 1234 "}))
    run("query after deletes", lambda: col.query(query_embeddings=q5, where={"cat": "c3"}))
    run("count after deletes", col.count)


@pytest.mark.parametrize("stats", [False, True], ids=["no-stats", "analyzed"])
def test_no_public_call_walks_a_whole_collection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stats: bool
) -> None:
    watch = _Watch(monkeypatch)
    ids, vecs, mds, docs = _plan_data()
    path = tmp_path / "store"
    with tintdb.PersistentClient(path=str(path)) as client:
        col = client.create_collection("plans", embedding_function=None)
        for s in range(0, PLAN_N, 5000):
            sl = slice(s, s + 5000)
            col.add(ids=ids[sl], embeddings=vecs[sl], metadatas=mds[sl], documents=docs[sl])
        # Other collections: with statistics, a collection is then a small part of a table.
        for c in range(3):
            other = client.create_collection(f"other{c}", embedding_function=None)
            other.add(ids=ids[:50], embeddings=vecs[:50], metadatas=mds[:50], documents=docs[:50])
    if stats:
        with sqlite3.connect(path / "tintdb.sqlite3") as conn:
            conn.execute("ANALYZE")
            assert conn.execute("SELECT count(*) FROM sqlite_stat1").fetchone()[0] > 0
    watch.sql.clear()
    watch.per_record.clear()
    with tintdb.PersistentClient(path=str(path)) as client:
        col = client.get_collection("plans", embedding_function=None)
        watch.run("first query after opening", lambda: col.query(query_embeddings=vecs[:1]))
        watch.run("index load behind the first query", col._backend.keeper.wait_jobs)
        watch.run("count()", col.count)
        watch.run(
            "first exact search after the index loads",
            lambda: col.query(query_embeddings=vecs[:1], where={"n": 3}),
        )
        _battery(col, watch, vecs, ids)
        watch.run("close()", client.close)
    with tintdb.PersistentClient(path=str(path)) as client:  # SQLite alone: no index loaded
        col = client.get_collection("plans", embedding_function=None)
        for w in _WHERES:
            watch.run(
                f"get(where={w}, limit=10) before any query",
                lambda w=w: col.get(where=w, limit=10),
                _kind(w),
            )
            watch.run(f"get(where={w}) before any query", lambda w=w: col.get(where=w), _kind(w))
        watch.run(
            "get(limit=100, offset=15000) before any query",
            lambda: col.get(limit=100, offset=15_000),
            "get(limit, offset) before the index is in memory",
        )
        watch.run("count() before any query", col.count)
        watch.run("get()", col.get)
        watch.run("get(include=[embeddings])", lambda: col.get(include=["embeddings"]))
        watch.run("vacuum()", client.vacuum)
        watch.run("close()", client.close)
    conn = sqlite3.connect(path / "tintdb.sqlite3")
    conn.create_function("regexp", 2, lambda p, t: False, deterministic=True)
    walk = re.compile(r"WHERE r\.coll = \d+ AND .* ORDER BY r\.seq LIMIT \d+ OFFSET \d+$")
    problems = []
    for label, sql in watch.sql:
        if walk.search(sql) and "SELECT seq FROM meta" not in sql:
            label = "a page walked in order"
        if label in FULL_PASSES or label == "setup":
            continue
        for line in full_pass_lines(conn, sql):
            problems.append(f"{label}: {line}\n    {sql[:300]}")
    for label, name in watch.per_record:
        if label not in FULL_PASSES and label != "setup":
            problems.append(f"{label}: Python {name}")
    conn.close()
    assert not problems, f"{len(problems)} full passes:\n" + "\n".join(dict.fromkeys(problems))
    assert {label for label, _ in watch.sql} >= {"count()", "get()", "vacuum()"}


def test_the_plan_check_sees_walks_of_a_collection(tmp_path: Path) -> None:
    """The check above is only as good as its reading of a plan: these statements walk a
    whole collection (the first is the read-back that once did so for every query with
    include=[]), and these do not."""
    store = Store(tmp_path)
    store.close()
    conn = sqlite3.connect(tmp_path / "tintdb.sqlite3")
    walks = [
        "SELECT r.seq, r.id FROM records r INDEXED BY records_by_id "
        "WHERE r.seq IN (SELECT value FROM json_each('[1,2]')) AND r.coll = 1",
        "SELECT count(*) FROM records WHERE coll = 1",
        "SELECT seq FROM records WHERE coll = 1 AND instr(document, 'ab') > 0",
        "SELECT blk, slots, data FROM vblocks WHERE coll = 1 ORDER BY blk",
        "SELECT rowid FROM docs",
        "SELECT seq FROM meta NOT INDEXED WHERE coll = 1 AND key = 'a' AND v = 2",
    ]
    lookups = [
        "SELECT r.seq, r.id FROM records r "
        "WHERE r.seq IN (SELECT value FROM json_each('[1,2]')) AND +r.coll = 1",
        "SELECT seq FROM meta WHERE coll = 1 AND key = 'a' AND kind = 1 AND v > 2",
        "SELECT rowid FROM docs WHERE docs MATCH '\"abc\"'",
        "SELECT slots FROM vblocks WHERE coll = 1 AND blk IN (SELECT value FROM json_each('[3]'))",
        "SELECT n_records FROM collections WHERE coll = 1",
    ]
    try:
        for sql in walks:
            assert full_pass_lines(conn, sql), sql
        for sql in lookups:
            assert not full_pass_lines(conn, sql), sql
    finally:
        conn.close()
