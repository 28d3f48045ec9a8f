"""A graph worn by deletes and updates is rebuilt behind the writes, not inside one.

What must hold: writes and queries go on (and are right) while the fresh graph is
built; the fresh graph replays what was written meanwhile, even across a snapshot that
would otherwise have pruned the log; closing gives a rebuild up instead of waiting for
it; and whatever happens, the store reopens holding exactly SQLite's records.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _held import Held
from _workers import index_contents

import tintdb
from tintdb import _index, _planning
from tintdb._exact import Mirror
from tintdb._local import indexes as keeper

DIM = 8
N = 1200


def _wear(col: Any, rng: np.random.Generator, vecs: dict[str, np.ndarray]) -> None:
    """Update records in place until the churn passes the rebuild line."""
    live = sorted(vecs)
    line = max(_index.WORN_MIN, len(live) // _index.WORN_SHARE)
    moved = [str(x) for x in rng.choice(live, line + 1, replace=False)]
    new = rng.normal(size=(len(moved), DIM)).astype(np.float32)
    col.update(ids=moved, embeddings=new)
    vecs.update(zip(moved, new, strict=True))


def _nearest(vecs: dict[str, np.ndarray], q: np.ndarray, k: int) -> list[str]:
    ids = sorted(vecs)
    d = ((np.stack([vecs[i] for i in ids]) - q) ** 2).sum(axis=1)
    return [ids[i] for i in np.argsort(d, kind="stable")[:k]]


def _loaded(client: Any, seed: int) -> tuple[Any, dict[str, np.ndarray], np.random.Generator]:
    """Collection ``worn`` of N random records, every one in the graph (so that updates
    and deletes wear it); with its records' vectors and the generator for more."""
    rng = np.random.default_rng(seed)
    vecs = {f"r{i}": v for i, v in enumerate(rng.normal(size=(N, DIM)).astype(np.float32))}
    col = client.create_collection("worn", embedding_function=None)
    col.add(ids=list(vecs), embeddings=np.stack(list(vecs.values())))
    col._backend.keeper.wait_jobs()
    return col, vecs, rng


def _held_rebuild(monkeypatch: pytest.MonkeyPatch) -> Held:
    """A rebuild held right after it has read SQLite (its next step sizes the graph)."""
    return Held(monkeypatch, _index.VectorIndex, "reserve")


@pytest.fixture(autouse=True)
def _rebuild_behind_at_every_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keeper, "REBUILD_NOW_BELOW", 0)


@pytest.fixture(autouse=True)
def _no_failed_rebuild(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A rebuild behind the writes logs its failure and leaves the worn graph in place,
    which most assertions here cannot tell from a rebuild given up: fail on the log."""
    yield
    records = [r for when in ("setup", "call") for r in caplog.get_records(when)]
    failed = [r for r in records if r.name == "tintdb" and r.levelno >= logging.ERROR]
    assert not failed, [r.getMessage() for r in failed]


@pytest.mark.usefixtures("graph_search_for_every_size")
def test_writes_and_queries_go_on_while_a_worn_graph_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col, vecs, rng = _loaded(client, 21)
        backend = col._backend
        worn = backend.keeper.indexes[str(col.id)]
        with _held_rebuild(monkeypatch) as held:
            _wear(col, rng, vecs)
            assert held.reached.wait(60) and str(col.id) in backend.keeper.rebuilding
            # Meanwhile: adds, deletes, updates and a snapshot, all answered at once.
            extra = rng.normal(size=(50, DIM)).astype(np.float32)
            col.add(ids=[f"x{i}" for i in range(50)], embeddings=extra)
            vecs.update({f"x{i}": v for i, v in enumerate(extra)})
            gone = [f"r{i}" for i in range(0, 60, 3)]
            col.delete(ids=gone)
            for g in gone:
                del vecs[g]
            col.update(ids=["r1"], embeddings=extra[:1] + 0.5)
            vecs["r1"] = extra[0] + 0.5
            backend.keeper.snapshot(str(col.id), force=True)  # must not prune what is replayed
            assert backend.keeper.indexes[str(col.id)] is worn
            q = vecs["r1"]
            assert col.query(query_embeddings=q[None, :], n_results=1)["ids"] == [["r1"]]
            assert col.count() == len(vecs)
        backend.keeper.wait_jobs()
        fresh = backend.keeper.indexes[str(col.id)]
        assert fresh is not worn and not backend.keeper.rebuilding
        assert index_contents(col) is None  # every record since the read replayed
        # Only what was replayed after the read: the deletes, and r1's old node.
        assert fresh.free_slots == len(gone) + 1
        assert fresh.churn < worn.churn
        q = rng.normal(size=DIM).astype(np.float32)
        got = col.query(query_embeddings=q[None, :], n_results=5)["ids"][0]
        assert got == _nearest(vecs, q, 5)
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("worn")
        assert col.count() == len(vecs)
        col.query(query_embeddings=q[None, :], n_results=5)
        assert index_contents(col) is None


def _mirror_contents(col: Any) -> str | None:
    """None if the current index's exact-search mirror holds exactly SQLite's records
    and vectors; otherwise what differs."""
    backend = col._backend
    index = backend.keeper.indexes[str(col.id)]
    mirror = index._mirror
    if mirror is None:
        return "no mirror"
    row = backend.store.collection_by_id(str(col.id))
    with backend.store.read():
        seqs, vecs = backend.store.vectors(row.coll, None, row.dimension)
    if not np.array_equal(mirror.live_seqs(), seqs):
        return "the mirror's records differ from SQLite's"
    if not np.array_equal(mirror.vecs[mirror.rows(seqs)], vecs):
        return "the mirror holds vectors SQLite does not"
    return None


def test_no_mirror_is_held_beside_two_graphs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a worn graph is replaced the process holds the two graphs and no mirror
    (the three together set a workload's peak memory). The worn graph lets its mirror
    go before the fresh one is built; exact searches read SQLite meanwhile, right with
    every write since, even one that had found the mirror before it went; the fresh
    graph gets a mirror once the worn one is gone, brought up to date with the writes
    made while it was read."""
    monkeypatch.setattr(_planning, "EXACT_BELOW", 10 * N)  # every query searched exactly
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col, vecs, rng = _loaded(client, 24)
        backend = col._backend
        cid = str(col.id)
        worn = backend.keeper.indexes[cid]
        q = rng.normal(size=DIM).astype(np.float32)

        def nearest_now() -> None:
            got = col.query(query_embeddings=q[None, :], n_results=7)["ids"]
            assert got == [_nearest(vecs, q, 7)]

        nearest_now()  # the first exact search reads the mirror
        assert worn.has_mirror()

        answer: list[Any] = []
        query = threading.Thread(
            target=lambda: answer.append(col.query(query_embeddings=q[None, :], n_results=7))
        )
        with Held(monkeypatch, _index.VectorIndex, "exact") as searching:
            query.start()
            assert searching.reached.wait(60)  # past ensure_mirror, the mirror in place
            with _held_rebuild(monkeypatch) as held:
                _wear(col, rng, vecs)
                assert held.reached.wait(60)
                assert worn._mirror is None and worn.mirror_deferred
                searching.release.set()  # finds no mirror, and reads SQLite instead
                query.join(60)
                assert answer and answer[0]["ids"] == [_nearest(vecs, q, 7)]
                extra = rng.normal(size=(30, DIM)).astype(np.float32)
                col.add(ids=[f"x{i}" for i in range(30)], embeddings=extra)
                vecs.update({f"x{i}": v for i, v in enumerate(extra)})
                col.delete(ids=["r3", "r4"])
                del vecs["r3"], vecs["r4"]
                nearest_now()
                assert worn._mirror is None
                with Held(monkeypatch, Mirror, "reserve") as mirroring:
                    held.release.set()  # the fresh graph is built and replaces the worn one
                    assert mirroring.reached.wait(60)  # its mirror is being read
                    fresh = backend.keeper.indexes[cid]
                    assert fresh is not worn and fresh._mirror is None and fresh.mirror_deferred
                    nearest_now()
                    # Written after the mirror's read began: replayed into it.
                    col.update(ids=["r5"], embeddings=extra[:1] - 1)
                    vecs["r5"] = extra[0] - 1
                    col.delete(ids=["x0"])
                    del vecs["x0"]
                    nearest_now()
        backend.keeper.wait_jobs()
        assert backend.keeper.indexes[cid] is fresh
        assert fresh._mirror is not None and not fresh.mirror_deferred
        assert _mirror_contents(col) is None
        assert index_contents(col) is None
        nearest_now()
        # Later writes keep it in step.
        col.update(ids=["r6"], embeddings=extra[1:2] + 2)
        vecs["r6"] = extra[1] + 2
        backend.keeper.wait_jobs()
        assert _mirror_contents(col) is None
        nearest_now()


def test_a_rebuild_given_up_leaves_the_mirror_to_be_built_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A rebuild that fails after the worn graph let its mirror go ends the deferral:
    the next exact search builds the mirror from SQLite, as after an open."""
    monkeypatch.setattr(_planning, "EXACT_BELOW", 10 * N)
    real_reserve = _index.VectorIndex.reserve
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col, vecs, rng = _loaded(client, 26)
        backend = col._backend
        worn = backend.keeper.indexes[str(col.id)]

        def fail(index: Any, rows: int) -> None:
            if threading.current_thread().name == "tintdb-behind":
                raise OSError("no room")
            real_reserve(index, rows)

        monkeypatch.setattr(_index.VectorIndex, "reserve", fail)
        _wear(col, rng, vecs)
        backend.keeper.wait_jobs()
        assert "background rebuild" in caplog.text
        caplog.clear()  # the failure expected here
        assert backend.keeper.indexes[str(col.id)] is worn
        assert worn._mirror is None and not worn.mirror_deferred
        q = rng.normal(size=DIM).astype(np.float32)
        got = col.query(query_embeddings=q[None, :], n_results=7)["ids"]
        assert got == [_nearest(vecs, q, 7)]
        assert _mirror_contents(col) is None


def test_the_worn_graph_is_let_go_before_the_fresh_one_is_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two graphs are held only while the fresh one is built: the worn one's memory is
    freed when it is replaced, before the fresh one's snapshot is written (which has
    a peak of its own)."""
    saved: list[bool] = []
    real_save = _index.VectorIndex.save
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col, vecs, rng = _loaded(client, 25)
        backend = col._backend
        worn = weakref.ref(backend.keeper.indexes[str(col.id)])

        def save(index: Any, directory: Path) -> int:
            if index is not worn():
                saved.append(worn() is None)
            return real_save(index, directory)

        monkeypatch.setattr(_index.VectorIndex, "save", save)
        _wear(col, rng, vecs)
        backend.keeper.wait_jobs()
        assert backend.keeper.indexes[str(col.id)] is not worn()
        assert saved and saved[0], "the worn graph was still in memory at the snapshot"
        assert index_contents(col) is None


def test_closing_gives_up_a_rebuild_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() does not wait for a whole rebuild: the rebuild stops at its next step,
    the worn graph is what is saved, and the store reopens with every record."""
    monkeypatch.setattr(keeper, "REBUILD_STEP", 100)
    rng = np.random.default_rng(22)
    vecs = {f"r{i}": v for i, v in enumerate(rng.normal(size=(N, DIM)).astype(np.float32))}
    steps: list[int] = []
    inside = threading.Event()
    real = _index.VectorIndex.upsert
    client = tintdb.PersistentClient(path=str(tmp_path))
    col = client.create_collection("worn", embedding_function=None)
    backend = col._backend

    def slow_steps(index: Any, seqs: Any, vectors: Any, threads: int | None = None) -> None:
        if threads is not None:  # only the rebuild passes a thread count
            steps.append(len(seqs))
            inside.set()
            deadline = time.monotonic() + 60  # the test fails below if close never comes
            while not backend.keeper.closing and time.monotonic() < deadline:
                time.sleep(0.01)
        real(index, seqs, vectors, threads)

    monkeypatch.setattr(_index.VectorIndex, "upsert", slow_steps)
    col.add(ids=list(vecs), embeddings=np.stack(list(vecs.values())))
    backend.keeper.wait_jobs()  # every record in the graph, so updates wear it
    worn = backend.keeper.indexes[str(col.id)]
    _wear(col, rng, vecs)
    # The write that wore the graph out has its rebuild started once its change is made
    # (on the keeper's thread, right after it returned), and the rebuild cannot end
    # before the close: it waits inside its first step.
    assert inside.wait(60), "the rebuild never reached its first step"
    assert worn.worn() and backend.keeper.indexes[str(col.id)] is worn
    rebuild = backend.keeper.rebuilding[str(col.id)][0]
    client.close()
    assert not rebuild.is_alive()
    assert len(steps) == 1 and steps[0] < 200  # one step (whole blocks), then the close
    assert backend.keeper.indexes == {}
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("worn")
        q = vecs["r7"]
        assert col.query(query_embeddings=q[None, :], n_results=1)["ids"] == [["r7"]]
        assert index_contents(col) is None
        assert col._backend.keeper.indexes[str(col.id)].churn == worn.churn  # saved as it was


def test_a_small_worn_graph_is_rebuilt_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not behind the writes: by the keeper's thread that made the wearing change, right
    after the write returned, and before that thread ends."""
    monkeypatch.setattr(keeper, "REBUILD_NOW_BELOW", 2048)
    behind: list[Any] = []
    real = keeper.IndexKeeper._rebuild_behind
    monkeypatch.setattr(
        keeper.IndexKeeper, "_rebuild_behind", lambda *a: (behind.append(a), real(*a))[1]
    )
    rng = np.random.default_rng(23)
    vecs = rng.normal(size=(1000, DIM)).astype(np.float32)
    with tintdb.EphemeralClient() as client:
        col = client.create_collection("small", embedding_function=None)
        col.add(ids=[str(i) for i in range(1000)], embeddings=vecs)
        col._backend.keeper.wait_jobs()  # every record in the graph, so deletes wear it
        worn = col._backend.keeper.indexes[str(col.id)]
        col.delete(ids=[str(i) for i in range(300)])
        col._backend.keeper.wait_jobs()
        fresh = col._backend.keeper.indexes[str(col.id)]
        assert fresh is not worn and not behind
        assert len(fresh) == 700 and fresh.free_slots == 0 and fresh.churn == 0


def test_in_memory_the_fresh_graph_builds_its_mirror_on_first_need() -> None:
    """An in-memory store has one connection: the fresh graph's mirror is not read
    behind the swap but built by the first exact search, with SQLite's records."""
    with tintdb.EphemeralClient() as client:
        col, vecs, rng = _loaded(client, 27)
        backend = col._backend
        worn = backend.keeper.indexes[str(col.id)]
        _wear(col, rng, vecs)
        backend.keeper.wait_jobs()
        fresh = backend.keeper.indexes[str(col.id)]
        assert fresh is not worn and fresh._mirror is None and not fresh.mirror_deferred
        q = rng.normal(size=DIM).astype(np.float32)
        few = [f"r{x}" for x in range(0, N, 97)]  # searched exactly among these
        got = col.query(query_embeddings=q[None, :], n_results=5, ids=few)["ids"]
        assert got == [_nearest({i: vecs[i] for i in few}, q, 5)]
        assert _mirror_contents(col) is None


def test_a_large_mirror_is_read_behind_the_first_exact_search(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After an open, the first exact search over a collection whose mirror would be
    large does not read the mirror inside the call (under the store lock, stalling
    every call behind it): it reads its candidates from SQLite, the mirror is read
    behind it, and the writes made meanwhile are replayed into it."""
    monkeypatch.setattr(keeper, "MIRROR_INLINE_BYTES", 0)  # every mirror read behind
    monkeypatch.setattr(_planning, "EXACT_BELOW", 10 * N)  # every query searched exactly
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col, vecs, rng = _loaded(client, 28)
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("worn")
        backend = col._backend
        q = rng.normal(size=DIM).astype(np.float32)

        def nearest_now() -> None:
            got = col.query(query_embeddings=q[None, :], n_results=7)["ids"]
            assert got == [_nearest(vecs, q, 7)]

        col.query(query_embeddings=q[None, :], n_results=1)  # the graph loads behind
        backend.keeper.wait_jobs()
        index = backend.keeper.indexes[str(col.id)]
        assert not index.has_mirror() and not index.mirror_deferred
        with Held(monkeypatch, Mirror, "reserve") as mirroring:
            nearest_now()  # answered from SQLite, and starts the mirror's read
            assert mirroring.reached.wait(60)
            assert index.mirror_deferred and not index.has_mirror()
            extra = rng.normal(size=(20, DIM)).astype(np.float32)
            col.add(ids=[f"x{i}" for i in range(20)], embeddings=extra)  # not waiting
            vecs.update({f"x{i}": v for i, v in enumerate(extra)})
            col.delete(ids=["r8"])
            del vecs["r8"]
            nearest_now()
        backend.keeper.wait_jobs()
        assert backend.keeper.indexes[str(col.id)] is index
        assert index.has_mirror() and not index.mirror_deferred
        assert _mirror_contents(col) is None
        nearest_now()


def test_a_small_mirror_is_read_inside_the_first_exact_search(tmp_path: Path) -> None:
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        _loaded(client, 29)
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("worn")
        col.query(query_embeddings=np.zeros((1, DIM), np.float32), n_results=1)
        col._backend.keeper.wait_jobs()
        index = col._backend.keeper.indexes[str(col.id)]
        assert not index.has_mirror()
        few = [f"r{x}" for x in range(0, N, 97)]  # searched exactly among these
        col.query(query_embeddings=np.ones((1, DIM), np.float32), n_results=3, ids=few)
        assert index.has_mirror() and not col._backend.keeper.mirroring
        assert _mirror_contents(col) is None


def test_a_graph_never_searched_exactly_is_rebuilt_without_a_mirror(tmp_path: Path) -> None:
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col, vecs, rng = _loaded(client, 30)
        backend = col._backend
        worn = backend.keeper.indexes[str(col.id)]
        assert not worn.has_mirror()
        _wear(col, rng, vecs)
        backend.keeper.wait_jobs()
        fresh = backend.keeper.indexes[str(col.id)]
        assert fresh is not worn and not fresh.has_mirror() and not fresh.mirror_deferred
        q = rng.normal(size=DIM).astype(np.float32)
        few = [f"r{x}" for x in range(0, N, 97)]  # searched exactly among these
        got = col.query(query_embeddings=q[None, :], n_results=5, ids=few)["ids"]
        assert got == [_nearest({i: vecs[i] for i in few}, q, 5)]
        assert fresh.has_mirror() and _mirror_contents(col) is None


def _levels(index: _index.VectorIndex) -> np.ndarray:
    """The level hnswlib drew for each node, in insertion order."""
    state = index._hnsw.__getstate__()[0]
    return np.asarray(state["element_levels"])[: int(state["cur_element_count"])]


def test_each_collection_draws_its_own_levels_and_a_rebuild_draws_them_again() -> None:
    """With one seed for every graph, two graphs of the same records on one thread drew
    the same hierarchy, so a poor draw was every build's. Each collection's graph is
    seeded from its id: two collections differ, a rebuild of one repeats its draw."""
    rng = np.random.default_rng(31)
    vecs = rng.normal(size=(3000, DIM)).astype(np.float32)
    ids = [f"r{i}" for i in range(len(vecs))]
    with tintdb.EphemeralClient() as client:
        backend = client._backend
        levels = {}
        for name in ("first", "second"):
            col = client.create_collection(
                name, embedding_function=None, metadata={"hnsw:num_threads": 1}
            )
            col.add(ids=ids, embeddings=vecs)
            backend.keeper.wait_jobs()
            levels[name] = _levels(backend.keeper.indexes[str(col.id)])
            assert len(levels[name]) == len(vecs) and levels[name].max() > 0
        assert not np.array_equal(levels["first"], levels["second"])
        row = backend.store.collection_by_id(str(client.get_collection("first").id))
        fresh = backend.keeper.rebuild(row)
        assert fresh is not None
        np.testing.assert_array_equal(_levels(fresh), levels["first"])
