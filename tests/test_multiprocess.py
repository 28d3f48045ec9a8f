"""Two processes, one path: every committed write is visible on the other's next call.

docs/internals.md promises that a second process on the same path sees every committed
write, vectors included, on its next call, and never stale vectors. Here the test process
is writer A (an in-process client) and B is a worker process that keeps its own
in-memory index between calls; or two worker processes write at once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _workers import (
    COLLECTION,
    DIM,
    Lines,
    Model,
    Server,
    acknowledged,
    apply_op,
    check_answers,
    model_from_get,
    spawn,
)
from conftest import hnsw_for_every_size

import tintdb
from tintdb import _planning

# The subject is the derived HNSW index: search it even in small collections.
pytestmark = pytest.mark.usefixtures("graph_search_for_every_size")


def _records(n: int, seed: int, prefix: str) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "ids": [f"{prefix}{k}" for k in range(n)],
        "embeddings": rng.random((n, DIM), dtype=np.float32),
        "metadatas": [{"k": k, "prefix": prefix} for k in range(n)],
        "documents": [f"text of {prefix}{k}" for k in range(n)],
    }


def _state(col: Any) -> Model:
    return model_from_get(col.get(include=["embeddings", "metadatas", "documents"]))


class Pair:
    """Writer A in this process, reader B in a worker, both open on one store."""

    def __init__(self, tmp_path: Path, n: int = 600) -> None:
        self.path = tmp_path / "store"
        self.log = tmp_path / "worker.log"
        self.a = tintdb.PersistentClient(path=str(self.path))
        self.col = self.a.create_collection(COLLECTION, embedding_function=None)
        self.col.add(**_records(n, 1, "r"))
        self.b = Server(self.path, self.log)
        self.probes = np.random.default_rng(2).random((30, DIM), dtype=np.float32)
        self.check()  # B now holds an index in memory

    def check(self, queries: np.ndarray | None = None, min_recall: float = 0.95) -> Model:
        """B answers like brute force over what A's store holds; returns that state."""
        state = _state(self.col)
        assert self.b.call("count") == len(state)
        got = self.b.call("get")
        assert model_from_get(got) == state, "B reads different records than A wrote"
        qs = self.probes if queries is None else queries
        r = self.b.query(qs, k=10)
        check_answers("B", qs, (r["ids"], r["distances"]), state, 10, min_recall)
        return state

    def finds_itself(self, ids: list[str], vectors: np.ndarray) -> None:
        r = self.b.query(vectors, k=1)
        assert [row[:1] for row in r["ids"]] == [[i] for i in ids]
        assert max(row[0] for row in r["distances"]) <= 1e-6

    def close(self) -> None:
        try:
            if self.b.proc.poll() is None:  # B still alive: it must exit cleanly
                assert self.b.exit() == 0, self.log.read_text()
        finally:
            self.b.kill()
            self.a.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.close()


def test_second_process_sees_new_records(pair: Pair) -> None:
    new = _records(50, 3, "new")
    pair.col.add(**new)
    pair.finds_itself(new["ids"], new["embeddings"])
    pair.check(new["embeddings"])
    more = _records(20, 4, "more")
    pair.col.upsert(**more)
    pair.finds_itself(more["ids"], more["embeddings"])
    pair.check()


def test_second_process_sees_deletes(pair: Pair) -> None:
    gone = _records(600, 1, "r")
    ids, vecs = gone["ids"][::20], gone["embeddings"][::20]
    pair.col.delete(ids=ids)
    r = pair.b.query(vecs, k=5)
    assert not set(ids) & {i for row in r["ids"] for i in row}
    pair.check(vecs)
    pair.col.delete(where={"k": {"$lt": 100}})
    pair.check()


def test_second_process_sees_updated_vectors(pair: Pair) -> None:
    """Updates with no earlier delete: B's answers move with the vectors."""
    old = _records(600, 1, "r")
    fresh = _records(40, 5, "r")  # new vectors for r0..r39
    pair.col.update(ids=fresh["ids"], embeddings=fresh["embeddings"])
    pair.finds_itself(fresh["ids"], fresh["embeddings"])
    pair.check(old["embeddings"][:40], min_recall=0.9)
    moved = _records(10, 6, "r")
    pair.col.upsert(**moved)
    pair.finds_itself(moved["ids"], moved["embeddings"])
    pair.check(fresh["embeddings"][:10], min_recall=0.9)


def test_second_process_sees_updates_after_deletes(pair: Pair) -> None:
    """A delete frees index slots; a later vector update must not leave the old vector."""
    old = _records(600, 1, "r")
    pair.col.delete(ids=old["ids"][500:520])
    fresh = _records(40, 5, "r")  # new vectors for r0..r39
    pair.col.update(ids=fresh["ids"], embeddings=fresh["embeddings"])
    pair.finds_itself(fresh["ids"], fresh["embeddings"])
    # Querying with the old vectors must not find r0..r39 where they no longer are.
    pair.check(old["embeddings"][:40], min_recall=0.9)


def test_second_process_catches_up_on_a_full_index(tmp_path: Path) -> None:
    """B's graph is full (1024 slots): A deletes, updates and adds; B must still answer."""
    pair = Pair(tmp_path, n=1024)
    try:
        pair.col.delete(ids=[f"r{k}" for k in range(10)])
        fresh = _records(20, 5, "r")
        pair.col.update(ids=fresh["ids"][10:], embeddings=fresh["embeddings"][10:])
        new = _records(10, 6, "new")
        pair.col.add(**new)
        pair.finds_itself(new["ids"], new["embeddings"])
        pair.check()
    finally:
        pair.close()


def test_second_process_survives_snapshot_and_log_pruning(pair: Pair) -> None:
    """A closes (snapshot, then the log it covers is pruned) while B's index is older."""
    lsn_seen_by_b = _lsn(pair.path)
    add = _records(400, 7, "s")
    pair.col.add(**add)
    fresh = _records(50, 8, "r")
    pair.col.update(ids=fresh["ids"], embeddings=fresh["embeddings"])
    pair.col.delete(ids=[f"r{k}" for k in range(100, 200)])
    pair.col.query(query_embeddings=add["embeddings"][:1], n_results=1)  # A has an index
    pair.a.close()
    last, floor, ops_left = _log(pair.path)
    assert floor == last > lsn_seen_by_b and ops_left == 0, "A's close did not prune the log"

    pair.a = tintdb.PersistentClient(path=str(pair.path))
    pair.col = pair.a.get_collection(COLLECTION, embedding_function=None)
    pair.finds_itself(add["ids"], add["embeddings"])
    pair.finds_itself(fresh["ids"], fresh["embeddings"])
    pair.check()

    # Again, with B current this time and A writing, snapshotting and pruning once more.
    more = _records(300, 9, "t")
    pair.col.add(**more)
    pair.col.delete(ids=add["ids"][:50])
    pair.a.close()
    assert _log(pair.path)[2] == 0
    pair.a = tintdb.PersistentClient(path=str(pair.path))
    pair.col = pair.a.get_collection(COLLECTION, embedding_function=None)
    pair.finds_itself(more["ids"], more["embeddings"])
    pair.check()


def _log(path: Path) -> tuple[int, int, int]:
    """(last_lsn, log_floor, rows left in the change log), read straight from SQLite."""
    db = sqlite3.connect(f"file:{path / 'tintdb.sqlite3'}?mode=ro", uri=True)
    try:
        last, floor = db.execute(
            "SELECT last_lsn, log_floor FROM collections WHERE name = ?", (COLLECTION,)
        ).fetchone()
        (left,) = db.execute("SELECT count(*) FROM ops").fetchone()
    finally:
        db.close()
    return int(last), int(floor), int(left)


def _lsn(path: Path) -> int:
    return _log(path)[0]


def test_two_writers_at_once_lose_nothing(tmp_path: Path) -> None:
    """Two processes add, upsert and delete at the same time; every acknowledged write stays.

    Its subject is the store, and its "own vector is nearest" checks want exact answers:
    this one runs with the default exact search for small collections.
    """
    with hnsw_for_every_size(_planning.EXACT_BELOW_DEFAULT):
        _two_writers(tmp_path)


def _two_writers(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with tintdb.PersistentClient(path=str(path)) as c:
        c.create_collection(
            COLLECTION, embedding_function=None, configuration={"hnsw": {"sync_threshold": 50}}
        )
    workers = []
    for name, seed in (("p", 1), ("q", 2)):
        log = tmp_path / f"{name}.log"
        args = {"path": str(path), "seed": seed, "prefix": name, "calls": 150}
        proc = spawn("writer", args, log)
        workers.append((name, proc, Lines(proc, log)))

    models: dict[str, Model] = {}
    shared: dict[str, list[Any]] = {}  # shared id -> the last value each writer gave it
    for name, proc, lines in workers:
        seen = lines.drain()
        assert proc.wait(timeout=120) == 0, lines.stderr()
        assert seen[-1] == "DONE\n", lines.stderr()
        bad = [json.loads(line[4:]) for line in seen if line.startswith("BAD ")]
        assert not bad, f"writer {name}: its own write was not its nearest answer: {bad[:3]}"
        acked, in_flight = acknowledged(seen)
        assert in_flight is None and len(acked) == 150
        model: Model = {}
        last: dict[str, Any] = {}
        for op in acked:
            model = apply_op(model, op)
        for i in [i for i in model if i.startswith("shared")]:
            last[i] = model.pop(i)
        models[name] = model
        for i, value in last.items():
            shared.setdefault(i, []).append(value)

    with tintdb.PersistentClient(path=str(path)) as c:
        col = c.get_collection(COLLECTION, embedding_function=None)
        state = _state(col)
        for name, model in models.items():
            own = {i: v for i, v in state.items() if i.startswith(name)}
            assert own == model, f"writer {name}: acknowledged writes differ from the store"
        rest = {i: v for i, v in state.items() if i.startswith("shared")}
        assert set(rest) == set(shared)
        for i, value in rest.items():
            # Upserts of the same id are serialised: one of the two last values wins whole.
            assert value in shared[i], f"{i} holds a value neither writer left it with"
        assert col.count() == sum(map(len, models.values())) + len(shared) == len(state)
        ids = sorted(state)
        vecs = np.stack([np.frombuffer(state[i][0], dtype=np.float32) for i in ids])
        r = col.query(query_embeddings=vecs, n_results=1, include=["distances"])
        assert [row[0] for row in r["ids"]] == ids
        assert max(row[0] for row in r["distances"]) <= 1e-6
