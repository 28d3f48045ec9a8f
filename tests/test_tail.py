"""A write returns once SQLite has committed it; its vectors reach the graph behind it.

Until they do they wait in the index's tail, which every query searches exactly beside
the graph. What must hold: a query sees every committed write, whether its records are
in the graph, in the tail or moving between them (the same answers as brute force over
the store); an updated record is never found at its old vector; a deleted one never at
all; the tail stays bounded; closing, snapshots and a kill -9 lose nothing of it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _held import Held, hold_the_tail
from _profiles import examples
from _workers import index_contents
from hypothesis import given, settings
from hypothesis import strategies as st

import tintdb
from tintdb import _index, _planning
from tintdb._local import indexes as keeper
from tintdb.api.types import IndexingStatus

DIM = 8


def _truth(
    space: str, model: dict[str, np.ndarray], q: np.ndarray, k: int, keep: set[str] | None
) -> tuple[list[str], np.ndarray]:
    ids = sorted(i for i in model if keep is None or i in keep)
    if not ids:
        return [], np.empty(0, np.float32)
    x = np.stack([model[i] for i in ids]).astype(np.float64)
    qq = q.astype(np.float64)
    if space == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        qq = qq / np.linalg.norm(qq)
    d = ((x - qq) ** 2).sum(axis=1) if space == "l2" else 1 - x @ qq
    order = np.argsort(d, kind="stable")[:k]
    return [ids[i] for i in order], d[order]


_ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "upsert", "update", "delete", "apply"]),
        st.integers(1, 300),
        st.integers(0, 2**31 - 1),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=examples(40), deadline=None)
@given(
    space=st.sampled_from(["l2", "cosine", "ip"]),
    ops=_ops,
    k=st.sampled_from([1, 7, 50]),
)
def test_queries_see_the_graph_and_the_tail_as_one(
    space: str, ops: list[tuple[str, int, int]], k: int
) -> None:
    """Random writes, with the tail put in the graph in steps of random size between
    them: unfiltered and filtered queries (each plan: exact, window, callback) give the
    records and distances brute force over the model gives. The beam is wider than
    the collection, so the graph's approximation cannot be what differs."""
    model: dict[str, np.ndarray] = {}
    side: dict[str, int] = {}
    rng = np.random.default_rng([ops[0][2], 7])  # not the seed of any write's vectors
    next_id = 0
    with pytest.MonkeyPatch.context() as mp:
        hold_the_tail(mp)
        with tintdb.EphemeralClient() as client:
            col = client.create_collection(
                "tail",
                embedding_function=None,
                configuration={"hnsw": {"space": space, "ef_search": 5000}},
            )
            # Above EXACT_BELOW, so the graph is searched at all.
            base = rng.normal(size=(_planning.EXACT_BELOW + 50, DIM)).astype(np.float32)
            ids = [f"b{i}" for i in range(len(base))]
            col.add(ids=ids, embeddings=base, metadatas=[{"side": i % 4} for i in range(len(ids))])
            model.update(zip(ids, base, strict=True))
            side.update({x: i % 4 for i, x in enumerate(ids)})
            index = client._backend.keeper.indexes[str(col.id)]
            for step, (verb, size, seed) in enumerate(ops):
                r = np.random.default_rng([seed, step])  # no two writes share vectors
                if verb == "apply":
                    index.apply_pending(size)
                    continue
                if verb == "add":
                    who = [f"n{next_id + j}" for j in range(size)]
                    next_id += size
                elif verb == "upsert":  # half existing, half new
                    old = list(r.choice(sorted(model), min(size // 2, len(model)), replace=False))
                    who = old + [f"n{next_id + j}" for j in range(size - len(old))]
                    next_id += size - len(old)
                else:
                    who = list(r.choice(sorted(model), min(size, len(model) - 1), replace=False))
                if verb == "delete":
                    col.delete(ids=who)
                    for x in who:
                        del model[x]
                    continue
                vecs = r.normal(size=(len(who), DIM)).astype(np.float32)
                mds = [{"side": int(s)} for s in r.integers(0, 4, len(who))]
                getattr(col, verb)(ids=who, embeddings=vecs, metadatas=mds)
                model.update(zip(who, vecs, strict=True))
                side.update({x: m["side"] for x, m in zip(who, mds, strict=True)})
            assert col.count() == len(model) == len(index)
            q = rng.normal(size=(3, DIM)).astype(np.float32)
            for where in (None, {"side": 1}, {"side": {"$in": [0, 1, 2]}}, {"side": {"$ne": 9}}):
                keep = None
                if where is not None:
                    keep = {x for x in model if side[x] in _sides(where)}
                got = col.query(query_embeddings=q, n_results=k, where=where, include=["distances"])
                for i in range(len(q)):
                    want_ids, want_d = _truth(space, model, q[i], k, keep)
                    assert got["ids"][i] == want_ids, (where, i, index.pending)
                    np.testing.assert_allclose(got["distances"][i], want_d, rtol=1e-4, atol=1e-4)


def _sides(where: dict[str, Any]) -> set[int]:
    cond = where["side"]
    if isinstance(cond, int):
        return {cond}
    if "$in" in cond:
        return set(cond["$in"])
    return {0, 1, 2, 3} - {cond["$ne"]}


def test_a_write_returns_before_its_vectors_are_in_the_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The insertion into the graph is held: the add returns anyway, its records are
    found (by their own vectors, at distance 0); once released, the tail empties and
    the snapshot the write would have written is written behind it."""
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(3000, DIM)).astype(np.float32)
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection("held", embedding_function=None)
        with Held(monkeypatch, _index.VectorIndex, "apply_pending") as held:
            col.add(ids=[f"r{i}" for i in range(3000)], embeddings=vecs)
            index = client._backend.keeper.indexes[str(col.id)]
            assert held.reached.wait(60) and index.pending == 3000
            got = col.query(query_embeddings=vecs[:20], n_results=1, include=["distances"])
            assert got["ids"] == [[f"r{i}"] for i in range(20)]
            assert np.allclose(got["distances"], 0)
            assert not list(tmp_path.glob("index/*/v*"))  # no snapshot inside the write
        client._backend.keeper.wait_jobs()
        assert index.pending == 0 and index.free_slots == 0
        assert list(tmp_path.glob("index/*/v*")), "no snapshot once the tail was in"
        assert index_contents(col) is None


def test_a_query_waits_for_one_step_of_the_tail_not_the_whole_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The graph takes the tail APPLY_STEP records at a time, releasing the index in
    between: a query issued while the second step is held gets its answer before the
    rest of the tail is in."""
    rng = np.random.default_rng(2)
    vecs = rng.normal(size=(5 * keeper.APPLY_STEP, DIM)).astype(np.float32)
    steps: list[int] = []
    second = threading.Event()
    release = threading.Event()
    real = _index.VectorIndex.apply_pending

    def counted(index: Any, limit: int, threads: int | None = None) -> int:
        steps.append(limit)
        if len(steps) == 2:
            second.set()
            assert release.wait(60)
        return real(index, limit, threads)

    monkeypatch.setattr(_index.VectorIndex, "apply_pending", counted)
    with tintdb.EphemeralClient() as client:
        col = client.create_collection("steps", embedding_function=None)
        col.add(ids=[f"r{i}" for i in range(len(vecs))], embeddings=vecs)
        try:
            assert second.wait(60)
            index = client._backend.keeper.indexes[str(col.id)]
            assert index.pending == len(vecs) - keeper.APPLY_STEP
            got = col.query(query_embeddings=vecs[-3:], n_results=1)["ids"]
            assert got == [[f"r{i}"] for i in range(len(vecs) - 3, len(vecs))]
        finally:
            release.set()
        client._backend.keeper.wait_jobs()
        assert index.pending == 0
        assert set(steps) == {keeper.APPLY_STEP} and len(steps) == 5


def _asking(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """A thread (not started) that makes one call; and the list its answer goes to."""
    answered: list[Any] = []
    return threading.Thread(target=lambda: answered.append(call())), answered


def _plain(value: Any) -> Any:
    """``value`` with numpy arrays as lists, for ``==`` (embeddings come as arrays)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _writing_beside(
    client: Any, name: str, seed: int, arm: Callable[[], None]
) -> tuple[Any, np.ndarray, threading.Thread]:
    """A collection of 200 records a0... (in the graph); then ``arm()``, and a started
    thread adding 200 more, b0..., far from the first: (collection, their vectors, it)."""
    rng = np.random.default_rng(seed)
    first = rng.normal(size=(200, DIM)).astype(np.float32)
    second = rng.normal(size=(200, DIM)).astype(np.float32) + 50.0
    col = client.create_collection(name, embedding_function=None)
    col.add(ids=[f"a{i}" for i in range(200)], embeddings=first)
    client._backend.keeper.wait_jobs()
    arm()
    writer = threading.Thread(
        target=lambda: col.add(ids=[f"b{i}" for i in range(200)], embeddings=second)
    )
    writer.start()
    return col, second, writer


# Reads that do not wait for a write on another thread, each with what it must return
# on the test's collection (300 records r0..., 2 query vectors: r0's and r1's own).
_Read = Callable[[Any, np.ndarray], Any]
_READS_BESIDE_A_WRITE: dict[str, tuple[_Read, Callable[[Any, Any], bool]]] = {
    f"query include={inc}": (
        lambda col, v, inc=inc: col.query(query_embeddings=v, n_results=3, include=inc),
        lambda col, got: [row[0] for row in got["ids"]] == ["r0", "r1"],
    )
    for inc in ([], ["distances"], ["documents", "metadatas", "distances"], ["embeddings"])
}
_READS_BESIDE_A_WRITE["count"] = (lambda col, v: col.count(), lambda col, got: got == 300)
# get: by ids, everything, a page (peek), filtered (metadata, document), a filtered page.
_READS_BESIDE_A_WRITE.update(
    {
        f"get {name}": (
            lambda col, v, kw=kw: col.get(**kw)["ids"],
            lambda col, got, w=want: got == w,
        )
        for name, kw, want in [
            ("by ids", {"ids": ["r7", "r3"]}, ["r3", "r7"]),
            ("everything", {"include": []}, [f"r{i}" for i in range(300)]),
            ("a page", {"limit": 2, "offset": 5}, ["r5", "r6"]),
            ("where", {"where": {"i": {"$in": [4, 250]}}}, ["r4", "r250"]),
            (
                "where_document",
                {"where_document": {"$contains": "r29"}},
                ["r29"] + [f"r29{i}" for i in range(10)],
            ),
            ("where, a page", {"where": {"i": {"$gte": 100}}, "limit": 2}, ["r100", "r101"]),
        ]
    }
)
_READS_BESIDE_A_WRITE["peek"] = (
    lambda col, v: col.peek(3)["ids"],
    lambda col, got: got == ["r0", "r1", "r2"],
)
# What `tintdb run` does first on every request about a collection; and by name.
_READS_BESIDE_A_WRITE["get_collection_by_id"] = (
    lambda col, v: col._backend.get_collection_by_id(str(col.id)).name,
    lambda col, got: got == "busy",
)
_READS_BESIDE_A_WRITE["get_collection by name"] = (
    lambda col, v: str(col._backend.get_collection("busy", col.tenant, col.database).id),
    lambda col, got: got == str(col.id),
)


@pytest.mark.parametrize("read", list(_READS_BESIDE_A_WRITE))
def test_reads_do_not_wait_for_a_write_in_another_thread(tmp_path: Path, read: str) -> None:
    """A write holds the store's lock from its first statement to its commit; a query
    (its catalog row, its answer's records) or a count on another thread reads on a
    connection of its own meanwhile (WAL), and gets the last commit's answer without
    waiting. An in-memory store has one connection: there the read waits."""
    call, right = _READS_BESIDE_A_WRITE[read]
    rng = np.random.default_rng(4)
    vecs = rng.normal(size=(300, DIM)).astype(np.float32)
    with tintdb.PersistentClient(path=tmp_path) as client:
        col = client.create_collection("busy", embedding_function=None)
        ids = [f"r{i}" for i in range(len(vecs))]
        col.add(ids=ids, embeddings=vecs, documents=ids, metadatas=[{"i": i} for i in range(300)])
        want = call(col, vecs[:2])
        assert right(col, want)
        store = client._backend.store
        inside, release = threading.Event(), threading.Event()

        def writer() -> None:
            with store.write():
                inside.set()
                assert release.wait(60)

        held = threading.Thread(target=writer)
        held.start()
        asker, answered = _asking(lambda: call(col, vecs[:2]))
        try:
            assert inside.wait(60)
            asker.start()
            asker.join(30)
            assert not asker.is_alive(), f"{read} waited for the write"
            assert not release.is_set() and held.is_alive()
        finally:
            release.set()
            held.join(60)
            asker.join(60)
        assert _plain(answered) == _plain([want])


@pytest.mark.usefixtures("graph_search_for_every_size")
def test_a_query_does_not_wait_for_a_snapshot_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot holds the index (which searches take) only while hnswlib dumps its
    file; reading it back, compressing and fsyncing come after: a graph query on another
    thread answers while they are held. The snapshot written meanwhile is whole: a new
    process answers from it alone, with the same answer."""
    rng = np.random.default_rng(8)
    vecs = rng.normal(size=(300, DIM)).astype(np.float32)
    with tintdb.PersistentClient(path=tmp_path) as client:
        col = client.create_collection("saved", embedding_function=None)
        col.add(ids=[f"r{i}" for i in range(300)], embeddings=vecs)
        backend = client._backend
        backend.keeper.wait_jobs()
        want = col.query(query_embeddings=vecs[:2], n_results=5, include=["distances"])
        with Held(monkeypatch, _index.VectorIndex, "_write_graph") as held:

            def save() -> None:
                with backend.store.lock:
                    backend.keeper.snapshot(str(col.id), force=True)

            saver = threading.Thread(target=save)
            saver.start()
            assert held.reached.wait(60)
            asker, answered = _asking(
                lambda: col.query(query_embeddings=vecs[:2], n_results=5, include=["distances"])
            )
            asker.start()
            asker.join(30)
            assert not asker.is_alive(), "the query waited for the snapshot's writing"
            assert saver.is_alive()  # still held
        saver.join(60)
        assert _plain(answered) == _plain([want])
    snaps = list((tmp_path / "index" / str(col.id)).glob(f"{_index.SNAPSHOT_PREFIX}*"))
    assert len(snaps) == 1
    script = f"""
import json, numpy as np, tintdb
from tintdb import _index
loaded = []
real = _index.VectorIndex.load.__func__
def load(cls, *args, **kwargs):
    index = real(cls, *args, **kwargs)
    loaded.append(None if index is None else index.lsn)
    return index
_index.VectorIndex.load = classmethod(load)
c = tintdb.PersistentClient(path={str(tmp_path)!r})
col = c.get_collection("saved", embedding_function=None)
c._backend.keeper.current(c._backend.store.collection_by_id(str(col.id)))
got = col.query(query_embeddings=np.array({vecs[:2].tolist()!r}, dtype=np.float32),
                n_results=5, include=["distances"])
last = c._backend.store.collection_by_id(str(col.id)).last_lsn
print(json.dumps([got["ids"], [list(map(float, d)) for d in got["distances"]], loaded, last]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    ids, dists, loaded, last = json.loads(out.stdout)
    assert loaded == [last]  # the snapshot, at the store's last write: nothing to replay
    assert ids == want["ids"]
    assert np.allclose(dists, np.asarray(want["distances"]), rtol=1e-5)


@pytest.mark.usefixtures("graph_search_for_every_size")
def test_a_query_sees_a_write_the_graph_is_still_taking_without_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past TAIL_MAX a write moves its excess into the graph itself, holding the store
    lock. Its vectors are in the tail from the start of that: a query on another thread
    (which reads the catalog row on a connection of its own, seeing the commit) answers
    with them, and does not wait for the graph or for the lock."""
    monkeypatch.setattr(keeper, "TAIL_MAX", 0)
    holds: list[Held] = []

    def arm() -> None:
        holds.append(Held(monkeypatch, _index.VectorIndex, "apply_pending"))

    with tintdb.PersistentClient(path=tmp_path) as client:
        col, second, writer = _writing_beside(client, "behind", 6, arm)
        (graph,) = holds
        asker, answered = _asking(
            lambda: col.query(query_embeddings=second[:3], n_results=1, include=[])
        )
        try:
            assert graph.reached.wait(60)  # committed; moving its tail, lock held
            asker.start()
            asker.join(30)
            assert not asker.is_alive(), "the query waited for the write's graph work"
            assert writer.is_alive()
        finally:
            graph.release.set()
            writer.join(60)
        assert [a["ids"] for a in answered] == [[["b0"], ["b1"], ["b2"]]]


@pytest.mark.usefixtures("graph_search_for_every_size")
def test_a_query_that_reads_a_commit_before_the_index_has_it_waits_for_that_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a write's commit and its vectors reaching the tail, a query on another
    thread can read the committed catalog row: it waits for that write to reach the
    index, not for the store lock, which the write holds on while the graph takes its
    excess (and the next write may take after it)."""
    monkeypatch.setattr(keeper, "TAIL_MAX", 0)
    holds: list[Held] = []

    def arm() -> None:
        holds.append(Held(monkeypatch, _index.VectorIndex, "defer"))
        holds.append(Held(monkeypatch, _index.VectorIndex, "apply_pending"))
        holds.append(Held(monkeypatch, keeper.IndexKeeper, "_taken_meanwhile"))

    with tintdb.PersistentClient(path=tmp_path) as client:
        col, second, writer = _writing_beside(client, "commit", 7, arm)
        tail, graph, behind = holds
        asker, answered = _asking(
            lambda: col.query(query_embeddings=second[:3], n_results=1, include=[])
        )
        try:
            assert tail.reached.wait(60)  # committed, not yet in the index
            asker.start()
            assert behind.reached.wait(60)  # the query found the index one write behind
            tail.release.set()
            assert graph.reached.wait(60)  # the write now moves its excess, lock held
            behind.release.set()
            asker.join(30)
            assert not asker.is_alive(), "the query waited for the store lock"
            assert writer.is_alive()
        finally:
            for held in holds:
                held.release.set()
            writer.join(60)
            asker.join(60)
        assert [a["ids"] for a in answered] == [[["b0"], ["b1"], ["b2"]]]


def _added(
    client: Any, name: str, n: int, rng: np.random.Generator
) -> tuple[Any, _index.VectorIndex]:
    """A new collection holding ``n`` random records ``a0``...; and its index."""
    col = client.create_collection(name, embedding_function=None)
    col.add(ids=[f"a{i}" for i in range(n)], embeddings=rng.normal(size=(n, DIM)))
    return col, client._backend.keeper.indexes[str(col.id)]


def _tail_of(index: _index.VectorIndex) -> Any:
    """The index's tail, holding every write that returned: a write's changes wait in
    the index's inbox until the next holder of its lock makes them."""
    with index.lock:
        return index._tail


def test_a_write_of_new_records_does_not_wait_for_a_step_of_the_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a step of the graph's insertion holds the index's lock, a write of new
    records returns all the same (its vectors wait in the index's inbox); the next
    query finds them."""
    rng = np.random.default_rng(11)
    with tintdb.PersistentClient(path=tmp_path) as client:
        col = client.create_collection("inbox", embedding_function=None)
        col.add(ids=[f"a{i}" for i in range(100)], embeddings=rng.normal(size=(100, DIM)))
        with Held(monkeypatch, _index._Tail, "taken") as step:
            col.add(ids=[f"b{i}" for i in range(100)], embeddings=rng.normal(size=(100, DIM)))
            assert step.reached.wait(60)  # the graph took b's vectors; lock held
            index = client._backend.keeper.indexes[str(col.id)]
            vecs = rng.normal(size=(50, DIM)).astype(np.float32)
            writer, _ = _asking(lambda: col.add(ids=[f"c{i}" for i in range(50)], embeddings=vecs))
            writer.start()
            writer.join(30)
            assert not writer.is_alive(), "the write waited for the graph's step"
            assert index.pending >= 50
        got = col.query(query_embeddings=vecs[:10], n_results=1, include=["distances"])
        assert got["ids"] == [[f"c{i}"] for i in range(10)]
        assert np.allclose(got["distances"], 0, atol=1e-5)
        client._backend.keeper.wait_jobs()
        assert index.pending == 0 and col.count() == 250


def test_the_inbox_keeps_its_own_copy_of_the_vectors() -> None:
    """Vectors handed to the index wait in its inbox until the lock's next holder: the
    array they came in may change meanwhile (it is the caller's), the index's may not."""
    index = _index.VectorIndex(
        "l2", DIM, {"ef_search": 10, "ef_construction": 50, "max_neighbors": 8}
    )
    vecs = np.random.default_rng(13).normal(size=(5, DIM)).astype(np.float32)
    kept = vecs.copy()
    index.defer(np.arange(1, 6), vecs)
    assert index.pending == 5 and len(index) == 5
    vecs[:] = 0
    with index.lock:
        assert index._tail.seqs[: index._tail.n].tolist() == [1, 2, 3, 4, 5]
        assert np.array_equal(index._full_vectors(np.arange(1, 6)), kept)


def test_a_write_moved_in_by_a_failing_holder_is_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If moving a write's records from the inbox into the index fails (out of memory),
    the index counts itself behind the log from then on, even when stamped after, and
    the query that met it asks again and finds a rebuilt index holding the write."""
    hold_the_tail(monkeypatch)
    rng = np.random.default_rng(12)
    with tintdb.EphemeralClient() as client:
        col, index = _added(client, "failing", 100, rng)
        vecs = rng.normal(size=(20, DIM)).astype(np.float32)
        col.add(ids=[f"b{i}" for i in range(20)], embeddings=vecs)
        real = _index._Tail.set
        failed = []

        def fails(*args: Any, **kwargs: Any) -> None:
            monkeypatch.setattr(_index._Tail, "set", real)
            failed.append(True)
            raise MemoryError("no room for the tail")

        monkeypatch.setattr(_index._Tail, "set", fails)
        got = col.query(query_embeddings=vecs[:3], n_results=1, include=["distances"])
        assert failed and index.lsn == -1
        assert got["ids"] == [["b0"], ["b1"], ["b2"]]
        assert np.allclose(got["distances"], 0, atol=1e-5)
        assert client._backend.keeper.indexes[str(col.id)] is not index
        index.lsn = 10**6  # as a writer whose records were in the inbox would stamp it
        assert index.lsn == -1


def test_the_tail_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that takes the tail past TAIL_MAX puts the excess in the graph itself."""
    monkeypatch.setattr(keeper, "TAIL_MAX", 500)
    hold_the_tail(monkeypatch)
    rng = np.random.default_rng(3)
    with tintdb.EphemeralClient() as client:
        col, index = _added(client, "bounded", 400, rng)
        assert index.pending == 400
        more = rng.normal(size=(3000, DIM)).astype(np.float32)
        col.add(ids=[f"b{i}" for i in range(3000)], embeddings=more)
        assert 500 - keeper.APPLY_STEP < index.pending <= 500
        got = col.query(query_embeddings=more[::300], n_results=1)["ids"]
        assert got == [[f"b{i}"] for i in range(0, 3000, 300)]


def test_an_emptied_tail_lets_its_arrays_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """Arrays grown for a bulk write are not kept while the tail is empty (by being put
    in the graph, or by deletes); a small tail keeps its own for the next writes."""
    hold_the_tail(monkeypatch)
    rng = np.random.default_rng(5)
    with tintdb.EphemeralClient() as client:
        col, index = _added(client, "shrinks", 3000, rng)
        tail = _tail_of(index)
        assert len(tail.vecs) >= 3000
        index.drain()
        assert index.pending == 0 and len(tail.vecs) <= _index._TAIL_KEPT_ROWS
        col.add(ids=[f"b{i}" for i in range(2000)], embeddings=rng.normal(size=(2000, DIM)))
        assert _tail_of(index) is tail and len(tail.vecs) >= 2000
        col.delete(ids=[f"b{i}" for i in range(2000)])
        assert _tail_of(index) is tail
        assert index.pending == 0 and len(tail.vecs) <= _index._TAIL_KEPT_ROWS
        col.add(ids=["c0", "c1"], embeddings=rng.normal(size=(2, DIM)))
        small = _tail_of(index).vecs
        index.drain()
        assert tail.vecs is small  # kept: small arrays are reused
        assert col.count() == 3002
        got = col.query(query_embeddings=index._full_vectors(index.universe()[:5]), n_results=1)
        assert [row[0] for row in got["ids"]] == [f"a{i}" for i in range(5)]


def test_indexing_status_counts_the_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_indexing_status(): the records waiting in the tail are the unindexed ones."""
    hold_the_tail(monkeypatch)
    rng = np.random.default_rng(6)
    with tintdb.EphemeralClient() as client:
        col, index = _added(client, "status", 300, rng)
        assert col.get_indexing_status() == IndexingStatus(0, 300, 300, 0.0)
        index.apply_pending(100)
        col.delete(ids=["a0", "a299"])  # one in the graph, one in the tail
        assert col.get_indexing_status() == IndexingStatus(99, 199, 298, 99 / 298)
        index.drain()
        assert col.get_indexing_status() == IndexingStatus(298, 0, 298, 1.0)


def test_updates_and_deletes_of_records_in_the_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record updated while in the graph is not found at its old vector; one updated
    twice in the tail is found at its last; one deleted from the tail is gone and
    leaves no dead node; none of them wears the graph but the first."""
    hold_the_tail(monkeypatch)
    rng = np.random.default_rng(4)
    vecs = rng.normal(size=(3000, DIM)).astype(np.float32)
    ids = [f"r{i}" for i in range(3000)]
    with tintdb.EphemeralClient() as client:
        col = client.create_collection(
            "moves", embedding_function=None, configuration={"hnsw": {"ef_search": 4000}}
        )
        col.add(ids=ids, embeddings=vecs)
        index = client._backend.keeper.indexes[str(col.id)]
        index.drain()
        far = vecs[:3] + 50
        col.update(ids=ids[:3], embeddings=far)  # in the graph: old nodes marked deleted
        _tail_of(index)
        assert index.pending == 3 and index.churn == 3 and index.free_slots == 3
        got = col.query(query_embeddings=vecs[:3], n_results=1)["ids"]
        assert all(row[0] not in ids[:3] for row in got)
        farther = far + 50
        col.update(ids=ids[:3], embeddings=farther)  # in the tail: replaced in place
        _tail_of(index)
        assert index.pending == 3 and index.churn == 3
        col.add(ids=["t0", "t1"], embeddings=farther[:2] + 1)
        col.delete(ids=["t0", ids[2]])
        _tail_of(index)
        assert index.pending == 3 and index.churn == 3  # r0, r1, t1
        got = col.query(query_embeddings=farther, n_results=1, include=["distances"])
        assert got["ids"][:2] == [[ids[0]], [ids[1]]] and got["ids"][2] != [ids[2]]
        assert np.allclose(got["distances"][0], 0)
        index.drain()
        assert index.pending == 0 and index.free_slots == 3  # r0-r2's old nodes only
        again = col.query(query_embeddings=farther, n_results=1, include=["distances"])
        assert again == got


def test_closing_and_forking_with_a_tail_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold_the_tail(monkeypatch)
    rng = np.random.default_rng(5)
    vecs = rng.normal(size=(4000, DIM)).astype(np.float32)
    ids = [f"r{i}" for i in range(len(vecs))]
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection("closing", embedding_function=None)
        col.add(ids=ids[:2000], embeddings=vecs[:2000])
        client._backend.keeper.indexes[str(col.id)].drain()
        col.add(ids=ids[2000:], embeddings=vecs[2000:])
        assert client._backend.keeper.indexes[str(col.id)].pending == 2000
        fork = col.fork("forked")
        got = fork.query(query_embeddings=vecs[1990:2010], n_results=1)["ids"]
        assert got == [[x] for x in ids[1990:2010]]
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        for name in ("closing", "forked"):
            col = client.get_collection(name, embedding_function=None)
            assert col.count() == 4000
            got = col.query(query_embeddings=vecs[::400], n_results=1)["ids"]
            assert got == [[x] for x in ids[::400]]
            assert index_contents(col) is None


def test_a_kill_with_a_tail_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """A process adds records, says so once add() returned, and is killed at once,
    with most of them still in the tail: reopened, the store has every one."""
    n = 20_000
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, tintdb
        client = tintdb.PersistentClient(path={str(tmp_path)!r})
        col = client.create_collection("kill", embedding_function=None)
        vecs = np.random.default_rng(6).normal(size=({n}, {DIM})).astype(np.float32)
        col.add(ids=[f"r{{i}}" for i in range({n})], embeddings=vecs)
        index = client._backend.keeper.indexes[str(col.id)]
        print("added", index.pending, flush=True)
        sys.stdin.read()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(60)
    assert line[0] == "added" and int(line[1]) > 0  # killed with a tail
    vecs = np.random.default_rng(6).normal(size=(n, DIM)).astype(np.float32)
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("kill", embedding_function=None)
        assert col.count() == n
        got = col.query(query_embeddings=vecs[::2000], n_results=1)["ids"]
        assert got == [[f"r{i}"] for i in range(0, n, 2000)]
        assert index_contents(col) is None
