"""The first query after opening a store: an exact scan of SQLite's vectors, answered
without waiting for the graph, which loads behind it; and what close() leaves for it.

The subject is what a user sees: the true nearest neighbours, at once, whatever the
space or filter; the graph in memory afterwards; close() and batch queries still
correct while or instead of loading.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _held import Held
from _profiles import examples
from _workers import index_contents
from hypothesis import given, settings
from hypothesis import strategies as st

import tintdb
from tintdb._index import VectorIndex, scan_knn
from tintdb._local import indexes as keeper
from tintdb._local import reads as local_reads
from tintdb.errors import InvalidDimensionException, NotFoundError

DIM = 12
N = 3000
SPACES = ["l2", "ip", "cosine"]


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n == 0, 1, n)


def _distances(space: str, vecs: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The distance each space reports, in float64 (the reference)."""
    vecs, q = vecs.astype(np.float64), q.astype(np.float64)
    if space == "l2":
        return ((vecs - q) ** 2).sum(axis=1)
    if space == "cosine":
        vecs, q = _unit(vecs), _unit(q)
    return 1 - vecs @ q


def _data(seed: int = 3) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(N, DIM)).astype(np.float32)
    ids = [f"r{i}" for i in range(N)]
    mds = [{"part": i % 7, "even": i % 2 == 0} for i in range(N)]
    return ids, vecs, mds


def _store(path: Path, space: str) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    """A store on disk with a saved index; a few records deleted and one updated after
    the add, so the scan must skip dead slots and see changed vectors."""
    ids, vecs, mds = _data()
    with tintdb.PersistentClient(path=str(path)) as client:
        col = client.create_collection(
            "cold", embedding_function=None, configuration={"hnsw": {"space": space}}
        )
        col.add(ids=ids, embeddings=vecs, metadatas=mds, documents=[f"doc {i}" for i in ids])
        col.delete(ids=ids[:30:3])
        vecs[5] = vecs[2000] + 0.01
        col.update(ids=[ids[5]], embeddings=vecs[5:6])
    gone = set(ids[:30:3])
    keep = [i for i, r in enumerate(ids) if r not in gone]
    return [ids[i] for i in keep], vecs[keep], [mds[i] for i in keep]


def _held_load(monkeypatch: pytest.MonkeyPatch) -> Held:
    """Every index load held until released: a query that returns meanwhile cannot
    have waited for one."""
    return Held(monkeypatch, VectorIndex, "load", static=True)


@pytest.mark.parametrize("space", SPACES)
def test_the_first_query_is_exact_and_does_not_wait_for_the_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, space: str
) -> None:
    ids, vecs, mds = _store(tmp_path, space)
    q = np.random.default_rng(11).normal(size=(2, DIM)).astype(np.float32)
    q[1] = vecs[ids.index("r5")]  # the updated record
    with tintdb.PersistentClient(path=str(tmp_path)) as client, _held_load(monkeypatch) as held:
        col = client.get_collection("cold")
        got = col.query(
            query_embeddings=q, n_results=7, include=["distances", "metadatas", "documents"]
        )
        backend = col._backend
        assert str(col.id) not in backend.keeper.indexes  # answered with the load held
        for row, qv in enumerate(q):
            d = _distances(space, vecs, qv)
            order = np.argsort(d, kind="stable")[:7]
            assert got["ids"][row] == [ids[i] for i in order]
            np.testing.assert_allclose(got["distances"][row], d[order], rtol=1e-4, atol=1e-4)
            assert got["metadatas"][row] == [mds[i] for i in order]
            assert got["documents"][row] == [f"doc {ids[i]}" for i in order]
        assert "r0" not in {r for row in got["ids"] for r in row}  # deleted: never a slot
        if space != "ip":  # under ip a record need not be its own nearest
            assert got["ids"][1][0] == "r5"
        assert held.reached.wait(60)
        # While the load runs (held here), queries keep being answered by the scan.
        meanwhile = col.query(query_embeddings=q[::-1], n_results=7)
        assert meanwhile["ids"] == got["ids"][::-1]
        assert str(col.id) not in backend.keeper.indexes
        held.release.set()
        backend.keeper.wait_jobs()
        index = backend.keeper.indexes[str(col.id)]
        assert len(index) == len(ids)
        again = col.query(query_embeddings=q, n_results=7)
        assert again["ids"] == got["ids"]


@pytest.mark.parametrize("space", SPACES)
def test_a_first_filtered_query_is_exact_over_the_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, space: str
) -> None:
    ids, vecs, mds = _store(tmp_path, space)
    q = np.random.default_rng(12).normal(size=(1, DIM)).astype(np.float32)
    cases: list[tuple[dict[str, Any] | None, dict[str, Any] | None, list[str] | None]] = [
        ({"part": 3}, None, None),
        ({"$and": [{"part": {"$ne": 3}}, {"even": True}]}, None, None),
        (None, {"$contains": "r1"}, None),
        ({"part": {"$in": [1, 2]}}, None, ids[100:400]),
    ]
    for where, where_document, only in cases:
        mask = np.ones(len(ids), dtype=bool)
        if where is not None:
            mask &= np.array([_matches(where, md) for md in mds])
        if where_document is not None:
            mask &= np.array([where_document["$contains"] in f"doc {r}" for r in ids])
        if only is not None:
            mask &= np.isin(ids, only)
        rows = np.flatnonzero(mask)
        d = _distances(space, vecs[rows], q[0])
        want = [ids[i] for i in rows[np.argsort(d, kind="stable")[:9]]]
        with tintdb.PersistentClient(path=str(tmp_path)) as client, _held_load(monkeypatch):
            col = client.get_collection("cold")
            got = col.query(
                query_embeddings=q,
                n_results=9,
                where=where,
                where_document=where_document,
                ids=only,
            )
            assert got["ids"] == [want], (where, where_document)
            assert str(col.id) not in col._backend.keeper.indexes


def _matches(where: dict[str, Any], md: dict[str, Any]) -> bool:
    """The few filter forms the test above uses, evaluated in Python."""
    if "$and" in where:
        return all(_matches(w, md) for w in where["$and"])
    ((key, cond),) = where.items()
    if not isinstance(cond, dict):
        return bool(md[key] == cond)
    ((op, value),) = cond.items()
    return bool(md[key] != value if op == "$ne" else md[key] in value)


def test_a_first_query_naming_missing_ids_raises_and_changes_nothing(tmp_path: Path) -> None:
    ids, _, _ = _store(tmp_path, "l2")
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("cold")
        with pytest.raises(NotFoundError, match="nope"):
            col.query(query_embeddings=np.zeros((1, DIM)), n_results=3, ids=[ids[0], "nope"])
        assert col.count() == len(ids)
        assert col.query(query_embeddings=np.zeros((1, DIM)), n_results=3)["ids"][0]


def test_a_first_query_of_the_wrong_dimension_or_a_gone_collection_raises(
    tmp_path: Path,
) -> None:
    ids, _, _ = _store(tmp_path, "l2")
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("cold")
        with pytest.raises(InvalidDimensionException, match=f"dimension of {DIM}, got 5"):
            col.query(query_embeddings=np.zeros((1, 5)), n_results=3)
        assert str(col.id) not in col._backend.keeper.indexes  # nothing started for it
        assert not col._backend.keeper.loading
        assert col.count() == len(ids)
        with tintdb.PersistentClient(path=str(tmp_path)) as other:
            other.delete_collection("cold")
        with pytest.raises(NotFoundError, match="does not exist"):
            col.query(query_embeddings=np.zeros((1, DIM)), n_results=3)


def test_close_waits_for_a_load_behind_a_query(tmp_path: Path) -> None:
    """A close right after the first query lets the load finish, saves nothing broken,
    and leaves no scratch file; the store opens and answers again."""
    ids, vecs, _ = _store(tmp_path, "l2")
    client = tintdb.PersistentClient(path=str(tmp_path))
    col = client.get_collection("cold")
    first = col.query(query_embeddings=vecs[:1], n_results=5)["ids"]
    assert first[0][0] == ids[0]
    loads = [thread for thread, _ in col._backend.keeper.loading.values()]
    assert loads  # the load behind the query
    client.close()
    assert all(not t.is_alive() for t in loads)
    assert not list(tmp_path.glob("index/*/.load-*"))
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("cold")
        assert col.query(query_embeddings=vecs[:1], n_results=5)["ids"] == first


def test_large_batches_and_wide_queries_use_the_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scanning costs queries times records; past a few queries, or many results, the
    call waits for the graph instead, and no load runs behind it."""
    _, vecs, _ = _store(tmp_path, "l2")
    scans: list[int] = []
    real = local_reads.scan_knn

    def counted(*args: Any) -> Any:
        scans.append(1)
        return real(*args)

    monkeypatch.setattr(local_reads, "scan_knn", counted)
    wide = [
        (vecs[: local_reads.COLD_SCAN_QUERIES + 1], 5),
        (vecs[:1], local_reads.COLD_SCAN_RESULTS + 1),
    ]
    for q, k in wide:
        with tintdb.PersistentClient(path=str(tmp_path)) as client:
            col = client.get_collection("cold")
            got = col.query(query_embeddings=q, n_results=k)
            assert len(got["ids"]) == len(q) and len(got["ids"][0]) == k
            assert str(col.id) in col._backend.keeper.indexes
            assert not col._backend.keeper.loading
    assert scans == []


def test_a_get_with_a_filter_does_not_load_the_index(tmp_path: Path) -> None:
    ids, _, mds = _store(tmp_path, "l2")
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("cold")
        got = col.get(where={"part": 4}, limit=50, offset=10)
        want = [r for r, md in zip(ids, mds, strict=True) if md["part"] == 4][10:60]
        assert got["ids"] == want
        assert not col._backend.keeper.indexes and not col._backend.keeper.loading


@settings(max_examples=examples(150), deadline=None)
@given(
    data=st.data(),
    space=st.sampled_from(SPACES),
    n=st.integers(0, 300),
    m=st.integers(1, 4),
    k=st.integers(1, 40),
)
def test_scan_knn_is_brute_force_whatever_the_chunks(
    data: st.DataObject, space: str, n: int, m: int, k: int
) -> None:
    """Any split of the records into chunks gives the brute-force answer: the k nearest,
    nearest first, with the space's distances (ties may come in either order)."""
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dup = data.draw(st.booleans())
    vecs = rng.integers(-3, 4, size=(n, 5)).astype(np.float32)  # small ints: many ties
    if dup and n:
        vecs[rng.integers(0, n, n // 2)] = vecs[0]
    seqs = np.sort(rng.choice(10 * n + 10, n, replace=False)).astype(np.int64)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=6)))
    bounds = [0, *cuts, n]
    chunks = [(seqs[a:b], vecs[a:b]) for a, b in itertools.pairwise(bounds)]
    q = rng.integers(-3, 4, size=(m, 5)).astype(np.float32)
    labels, dists = scan_knn(space, q, k, iter(chunks))
    for i in range(m):
        d = _distances(space, vecs, q[i])
        want = np.sort(d)[:k]
        assert len(labels[i]) == min(k, n)
        np.testing.assert_allclose(dists[i], want, rtol=1e-5, atol=1e-5)
        got_d = d[np.searchsorted(seqs, labels[i])]
        np.testing.assert_allclose(got_d, want, rtol=1e-5, atol=1e-5)  # each label's own
        assert len(set(labels[i].tolist())) == len(labels[i])


def _snapshot_lsns(path: Path) -> list[int]:
    return sorted(int(p.name[1:]) for p in path.glob("index/*/v*"))


def test_close_leaves_a_few_changes_to_the_log_and_snapshots_many(tmp_path: Path) -> None:
    """A snapshot costs about as much as replaying 1/CLOSE_REPLAY_SHARE of the records'
    changes: close() writes one only past that, and the next open replays the rest."""
    ids, _, _ = _store(tmp_path, "l2")
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        client.get_collection("cold").query(query_embeddings=np.zeros((1, DIM)), n_results=1)
        client.vacuum()  # snapshots at the last change: nothing left to replay
    (first,) = _snapshot_lsns(tmp_path)
    rng = np.random.default_rng(13)
    few = len(ids) // keeper.CLOSE_REPLAY_SHARE - 1
    for count, saved in [(few, False), (few + 2, True)]:
        with tintdb.PersistentClient(path=str(tmp_path)) as client:
            col = client.get_collection("cold")
            moved = [str(r) for r in rng.choice(ids, count, replace=False)]
            new = rng.normal(size=(count, DIM)).astype(np.float32)
            col.update(ids=moved, embeddings=new)
        (lsn,) = _snapshot_lsns(tmp_path)
        assert (lsn > first) is saved, (count, lsn, first)
        with tintdb.PersistentClient(path=str(tmp_path)) as client:
            col = client.get_collection("cold")
            col.query(query_embeddings=new[:1], n_results=1)
            assert index_contents(col) is None  # snapshot plus the replayed log
            assert col.query(query_embeddings=new[-1:], n_results=1)["ids"] == [[moved[-1]]]
