"""Vector blocks in SQLite agree with a plain dict, whatever the write pattern.

Vectors are stored 64 seqs to a row (``Tx.put_vectors``), so the interesting cases
are runs that start or end inside a block, blocks shared by two collections (seqs are
global), a block emptied and refilled, and a seq written twice in one call. Hypothesis
drives random puts and drops on two collections and reads back through every path:
the whole collection, chosen seqs, and the bytes ``get(include=["embeddings"])`` uses.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _profiles import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tintdb
from tintdb._index import VectorIndex
from tintdb._storage import Store
from tintdb._storage import blocks as storage_blocks
from tintdb._vblocks import BLOCK_SHIFT

DIM = 3
SPARSE_SLOTS = storage_blocks.SPARSE_SLOTS
SEQS = st.integers(min_value=1, max_value=5 << BLOCK_SHIFT)  # five blocks' worth

op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from([1, 2]), st.lists(SEQS, min_size=1, max_size=90)),
    st.tuples(st.just("drop"), st.sampled_from([1, 2]), st.lists(SEQS, min_size=1, max_size=90)),
    st.tuples(
        st.just("run"), st.sampled_from([1, 2]), SEQS, st.integers(min_value=1, max_value=200)
    ),
)


def _check(store: Store, model: dict[int, dict[int, np.ndarray]], rng: Any) -> None:
    for coll in (1, 2):
        want = model[coll]
        seqs, vecs = store.vectors(coll, None, DIM) if want else (np.array([]), None)
        assert seqs.tolist() == sorted(want)  # in seq order, nothing else
        for s, v in zip(seqs.tolist(), vecs if vecs is not None else [], strict=True):
            np.testing.assert_array_equal(v, want[s])
        asked = rng.integers(1, 6 << BLOCK_SHIFT, size=int(rng.choice([12, 120])))
        # Each block read whole, or each wanted record alone from its block's bytes.
        for sparse in (0, 1 << BLOCK_SHIFT):
            storage_blocks.SPARSE_SLOTS = sparse
            try:
                got, got_vecs = store.vectors(coll, asked, DIM)
            finally:
                storage_blocks.SPARSE_SLOTS = SPARSE_SLOTS
            assert got.tolist() == sorted(set(asked.tolist()) & set(want))
            for s, v in zip(got.tolist(), got_vecs, strict=True):
                np.testing.assert_array_equal(v, want[s])
            got_vecs[:1] += 1  # writable, whichever way it was read
        raw = store.vector_bytes(coll, asked.tolist())
        assert raw == {s: want[s].tobytes() for s in set(asked.tolist()) & set(want)}
        parts = list(store.vector_chunks(coll, DIM, rows=7))
        joined = np.concatenate([p[0] for p in parts]) if parts else np.array([])
        assert joined.tolist() == sorted(want)


@settings(
    max_examples=examples(60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=st.lists(op, min_size=1, max_size=12), seed=st.integers(0, 2**16))
@pytest.mark.parametrize(
    "in_place",
    [
        pytest.param(
            True,
            id="blob-writes",
            marks=pytest.mark.skipif(
                not storage_blocks.IN_PLACE_UPDATES, reason="blob I/O is Python 3.11+"
            ),
        ),
        pytest.param(False, id="rewrites"),
    ],
)
def test_blocks_match_a_dict(
    tmp_path_factory: pytest.TempPathFactory, in_place: bool, ops: list[Any], seed: int
) -> None:
    """Both ways of changing a stored vector: written into its block's bytes (Python
    3.11+), or the block rewritten (3.10, and any block that gains slots)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(storage_blocks, "IN_PLACE_UPDATES", in_place)
        _blocks_match_a_dict(tmp_path_factory, ops, seed)


def _blocks_match_a_dict(tmp_path_factory: pytest.TempPathFactory, ops: list[Any], seed: int):
    rng = np.random.default_rng(seed)
    store = Store(tmp_path_factory.mktemp("blocks"))
    model: dict[int, dict[int, np.ndarray]] = {1: {}, 2: {}}
    try:
        for kind, coll, *args in ops:
            other = model[3 - coll]
            if kind == "run":
                start, n = args
                seqs = np.arange(start, start + n, dtype=np.int64)
            else:
                seqs = np.array(args[0], dtype=np.int64)
            if kind != "drop":  # a seq belongs to one collection only, as in the store
                seqs = seqs[~np.isin(seqs, list(other))]
            vecs = rng.normal(size=(len(seqs), DIM)).astype(np.float32)
            with store.write() as tx:
                if kind == "drop":
                    tx.drop_vectors(coll, seqs)
                else:
                    tx.put_vectors(coll, seqs, vecs)
            for s, v in zip(seqs.tolist(), vecs, strict=True):
                if kind == "drop":
                    model[coll].pop(s, None)
                else:
                    model[coll][s] = v  # a seq given twice keeps its last vector
            _check(store, model, rng)
        # An emptied collection leaves no block rows behind.
        with store.write() as tx:
            for coll in (1, 2):
                tx.drop_vectors(coll, np.array(sorted(model[coll]), dtype=np.int64))
        assert store._conn.execute("SELECT count(*) FROM vblocks").fetchone()[0] == 0
    finally:
        store.close()


@pytest.mark.usefixtures("graph_search_for_every_size")
def test_snapshot_keeps_links_only_and_reopens_exactly(tmp_path: Path) -> None:
    """The snapshot holds no vectors (disk: stored once, in SQLite), yet a reopened store
    answers as before, including after deletes whose vectors SQLite no longer has."""
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(2000, 384)).astype(np.float32)
    ids = [f"r{i}" for i in range(len(vecs))]
    q = rng.normal(size=(20, 384)).astype(np.float32)
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection("links", embedding_function=None)
        col.add(ids=ids, embeddings=vecs)
        client._backend.keeper.wait_jobs()  # the graph answers, before and after
        col.delete(ids=ids[::7])
        before = col.query(query_embeddings=q, n_results=10)
    graph = next(tmp_path.glob("index/*/v*/graph.npz"))
    # Deleted records' vectors stay (searches route through them); live ones do not.
    live = len(vecs) - len(ids[::7])
    assert graph.stat().st_size < live * 384 * 4 / 2
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.get_collection("links")
        after = col.query(query_embeddings=q, n_results=10)
        assert after["ids"] == before["ids"]
        np.testing.assert_allclose(after["distances"], before["distances"], rtol=1e-6)
        got = col.get(ids=["r1", "r2"], include=["embeddings"])
        np.testing.assert_array_equal(got["embeddings"], vecs[1:3])


@pytest.mark.usefixtures("graph_search_for_every_size")
def test_snapshot_links_are_deflated_and_an_uncompressed_one_still_loads(
    tmp_path: Path,
) -> None:
    """graph.npz deflates the links (neighbour numbers: about a third of their size)
    and stores the deleted nodes' vectors as they are (floats barely shrink); a graph
    written entirely uncompressed, as tintdb wrote it before, loads to the same graph."""
    import zipfile

    rng = np.random.default_rng(8)
    vecs = rng.normal(size=(3000, 32)).astype(np.float32)
    ids = [f"r{i}" for i in range(len(vecs))]
    q = rng.normal(size=(20, 32)).astype(np.float32)
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection("links", embedding_function=None)
        col.add(ids=ids, embeddings=vecs)
        client._backend.keeper.wait_jobs()  # in the graph: deletes leave dead nodes
        col.delete(ids=ids[::5])
        before = col.query(query_embeddings=q, n_results=10)
    graph = next(tmp_path.glob("index/*/v*/graph.npz"))
    with zipfile.ZipFile(graph) as zf:
        kinds = {i.filename: i for i in zf.infolist()}
    assert sorted(kinds) == ["dead.npy", "dead_vectors.npy", "links.npy", "tail.npy"]
    assert kinds["links.npy"].compress_type == zipfile.ZIP_DEFLATED
    assert kinds["links.npy"].compress_size < kinds["links.npy"].file_size / 2
    assert kinds["dead_vectors.npy"].compress_type == zipfile.ZIP_STORED
    with np.load(graph) as arrays:
        parts = {name: arrays[name] for name in arrays.files}
    assert len(parts["dead"]) == len(ids[::5])
    held = []
    for stored in (False, True):
        if stored:
            with graph.open("wb") as f:
                np.savez(f, **parts)
        with tintdb.PersistentClient(path=str(tmp_path)) as client:
            col = client.get_collection("links")
            col.query(query_embeddings=q[:1], n_results=10)  # the graph loads behind it
            col._backend.keeper.wait_jobs()
            got = col.query(query_embeddings=q, n_results=10)
            index = col._backend.keeper.indexes[str(col.id)]
            # The deleted nodes are there: loaded from the snapshot, not rebuilt.
            assert index._hnsw.get_current_count() == len(vecs)
            held.append(np.asarray(index._full_vectors(index.universe()), dtype=np.float32))
        assert got["ids"] == before["ids"]
        np.testing.assert_allclose(got["distances"], before["distances"], rtol=1e-6)
    np.testing.assert_array_equal(held[0], held[1])


@pytest.mark.parametrize("space", ["l2", "cosine", "ip"])
@pytest.mark.parametrize("deletes", [0, 1, 40])
def test_state_read_from_hnswlib_file_equals_getstate(
    tmp_path: Path, space: str, deletes: int
) -> None:
    """Snapshots read hnswlib's state from its index file (streamed, so closing never
    holds a second copy of the index); it must be exactly what ``__getstate__`` gives,
    minus the live vectors, or the graph put back together from it would differ."""
    from tintdb import _index, _snapshot

    rng = np.random.default_rng(deletes)
    params = {"ef_construction": 50, "max_neighbors": 8, "ef_search": 20}
    index = _index.VectorIndex(space, 16, params)
    seqs = np.arange(1, 1501, dtype=np.int64) * 5
    index.upsert(seqs, rng.normal(size=(len(seqs), 16)).astype(np.float32))
    index.remove(rng.choice(seqs, size=deletes, replace=False))
    with index.lock:  # whose holder makes the removal, waiting in the index's inbox
        index._hnsw.save_index(str(tmp_path / "g.hnsw"))
    state, parts = _snapshot.state_from_file(tmp_path / "g.hnsw", index.universe())
    want = index._hnsw.__getstate__()[0]
    for key, value in state.items():
        assert want[key] == value, key
    # The in-memory load derives the pickled state's arrays from the links and the tail.
    arrays = _snapshot.tail_arrays(state, parts["links"], parts["tail"])
    assert arrays["element_levels"].tolist() == want["element_levels"].tolist()
    assert arrays["link_lists"].tobytes() == want["link_lists"].tobytes()
    ext, internal = want["label_lookup_external"], want["label_lookup_internal"]
    lookup = dict(zip(ext.tolist(), internal.tolist(), strict=True))
    ours = zip(
        arrays["label_lookup_external"].tolist(),
        arrays["label_lookup_internal"].tolist(),
        strict=True,
    )
    assert dict(ours) == lookup
    n, size = want["cur_element_count"], want["size_data_per_element"]
    off, lab = want["offset_data"], want["label_offset"]
    level0 = want["data_level0"].view(np.uint8).reshape(n, size)
    assert (
        parts["links"].tobytes()
        == np.concatenate([level0[:, :off], level0[:, lab:]], axis=1).tobytes()
    )
    assert len(parts["dead"]) == deletes
    assert parts["dead_vectors"].tobytes() == level0[parts["dead"], off:lab].tobytes()


def _reopen_answers(path: Path, q: np.ndarray) -> tuple[Any, Any]:
    with tintdb.PersistentClient(path=str(path)) as client:
        col = client.get_collection("links")
        col.query(query_embeddings=q[:1], n_results=10)  # a scan; the graph loads behind it
        col._backend.keeper.wait_jobs()
        got = col.query(query_embeddings=q, n_results=10)
        index = col._backend.keeper.indexes[str(col.id)]
        held = np.asarray(index._full_vectors(index.universe()), dtype=np.float32)
        return got, held


@pytest.mark.usefixtures("graph_search_for_every_size")
@pytest.mark.parametrize("space", ["l2", "cosine"])
def test_both_load_paths_rebuild_the_same_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, space: str
) -> None:
    """Opening assembles hnswlib's file in a scratch file (the index in memory once);
    with no room for it, the records are assembled in memory instead. Both must give
    the index that was saved, and neither leaves its scratch file behind."""
    from tintdb import _index

    rng = np.random.default_rng(9)
    vecs = rng.normal(size=(1500, 32)).astype(np.float32)
    ids = [f"r{i}" for i in range(len(vecs))]
    q = rng.normal(size=(15, 32)).astype(np.float32)
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection(
            "links", embedding_function=None, configuration={"hnsw": {"space": space}}
        )
        col.add(ids=ids, embeddings=vecs)
        col.delete(ids=ids[::5])
        before = col.query(query_embeddings=q, n_results=10)
    through_file, held_file = _reopen_answers(tmp_path, q)
    assert "index load in memory" not in caplog.text

    def no_room(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_index.os, "posix_fallocate", no_room)
    in_memory, held_memory = _reopen_answers(tmp_path, q)
    assert "index load in memory (scratch file: [Errno 28]" in caplog.text
    for got in (through_file, in_memory):
        assert got["ids"] == before["ids"]
        np.testing.assert_allclose(got["distances"], before["distances"], rtol=1e-6)
    np.testing.assert_array_equal(held_file, held_memory)
    assert not list(tmp_path.glob("index/*/.load-*"))


def test_a_scratch_file_left_by_a_dead_process_is_removed(tmp_path: Path) -> None:
    """A process killed while loading leaves its scratch file (as big as the index); the
    next load of that collection deletes it, and leaves a live process's alone."""
    import subprocess
    import sys

    rng = np.random.default_rng(4)
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection("links", embedding_function=None)
        col.add(ids=[str(i) for i in range(50)], embeddings=rng.random((50, 8)))
    directory = next(tmp_path.glob("index/*/"))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    left = directory / f".load-{int(dead.stdout)}-abc"
    alive = directory / f".load-{os.getpid()}-def"
    left.write_bytes(b"x" * 1000)
    alive.write_bytes(b"y")
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        client.get_collection("links").query(query_embeddings=rng.random((1, 8)), n_results=1)
    assert not left.exists() and alive.exists()


@pytest.mark.skipif(not storage_blocks.IN_PLACE_UPDATES, reason="in-place deletes need blob I/O")
def test_vacuum_compacts_blocks_holding_dead_slots(tmp_path: Path) -> None:
    """A delete marks its slot dead in place, and the block keeps the bytes while it is
    at most half dead; vacuum() rewrites those blocks, so the deleted vectors' bytes go
    from the file, and every live vector is still there."""
    dim, n = 256, 64 * 40
    rng = np.random.default_rng(12)
    vecs = rng.random((n, dim), dtype=np.float32)
    ids = [str(i) for i in range(n)]
    db = tmp_path / "tintdb.sqlite3"

    def blocks() -> tuple[int, int]:
        with contextlib.closing(sqlite3.connect(db)) as c:
            rows = c.execute("SELECT slots, length(data) FROM vblocks").fetchall()
        return sum(slots.count(0xFF) for slots, _ in rows), sum(size for _, size in rows)

    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = client.create_collection("dead", embedding_function=None)
        col.add(ids=ids, embeddings=vecs)
        col.delete(ids=ids[::4])  # a quarter of each block: marked dead in place
    assert blocks() == (n // 4, n * dim * 4)
    before = db.stat().st_size
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        client.vacuum()
        col = client.get_collection("dead")
        live = [i for k, i in enumerate(ids) if k % 4]
        got = col.get(ids=live, include=["embeddings"])
        assert got["ids"] == live
        np.testing.assert_array_equal(got["embeddings"], vecs[[int(i) for i in live]])
    assert blocks() == (0, len(live) * dim * 4)
    freed = before - db.stat().st_size
    assert freed >= 0.8 * (n // 4) * dim * 4, f"{before} -> {db.stat().st_size}"


def test_the_checkpoint_thread_copies_the_wal_into_the_database_file(tmp_path: Path) -> None:
    """close() starts a WAL checkpoint beside the index snapshots: once it is done, the
    database file alone (no -wal) holds every committed record."""
    rng = np.random.default_rng(6)

    def records_in_main_file(name: str) -> int:
        copy = tmp_path / name
        copy.mkdir()
        shutil.copy(tmp_path / "store" / "tintdb.sqlite3", copy / "tintdb.sqlite3")
        with contextlib.closing(sqlite3.connect(copy / "tintdb.sqlite3")) as c:
            return int(c.execute("SELECT count(*) FROM records").fetchone()[0])

    with tintdb.PersistentClient(path=str(tmp_path / "store")) as client:
        col = client.create_collection("wal", embedding_function=None)
        col.add(ids=["first"], embeddings=rng.random((1, 32)))
        client._backend.store.start_checkpoint().join()
        col.add(ids=[str(i) for i in range(300)], embeddings=rng.random((300, 32)))
        assert records_in_main_file("before") == 1  # the new rows are in the WAL only
        checkpoint = client._backend.store.start_checkpoint()
        assert checkpoint is not None
        checkpoint.join()
        assert records_in_main_file("after") == 301


@pytest.mark.parametrize("space", ["l2", "cosine"])
def test_changed_vectors_get_fresh_nodes_that_a_snapshot_keeps(tmp_path: Path, space: str) -> None:
    """A record whose vector changes gets a new node (its seq plus a generation) and its
    old node is marked deleted, however often it changes; a snapshot and a reload keep
    every live record at its current vector, the old nodes never come back as results,
    and a deleted changed record is gone."""
    rng = np.random.default_rng(12)
    params = {"ef_construction": 100, "max_neighbors": 16, "ef_search": 50}
    seqs = np.arange(1, 601, dtype=np.int64) * 2
    current = {
        int(s): v for s, v in zip(seqs, rng.normal(size=(600, 8)).astype(np.float32), strict=True)
    }
    index = VectorIndex(space, 8, params)
    index.upsert(seqs, np.stack([current[int(s)] for s in seqs]))
    moved = seqs[:150]
    for round_ in range(3):  # three generations for some
        part = moved[: 150 - 50 * round_]
        new = (rng.normal(size=(len(part), 8)) + 20 + round_).astype(np.float32)
        index.upsert(part, new)
        current.update({int(s): v for s, v in zip(part, new, strict=True)})
    gone = moved[::7]
    index.remove(gone)
    for s in gone.tolist():
        del current[s]
    assert index.free_slots == 150 + 100 + 50 + len(gone)

    def chunks() -> Any:
        live = np.array(sorted(current), dtype=np.int64)
        yield live, np.stack([current[int(s)] for s in live])

    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path, space, 8, params, chunks)
    assert loaded is not None
    for ix in (index, loaded):
        live = ix.universe()
        assert live.tolist() == sorted(current)
        want = np.stack([current[int(s)] for s in live])
        if space == "cosine":
            want = want / np.linalg.norm(want, axis=1, keepdims=True)
        assert np.allclose(ix._full_vectors(live), want, atol=1e-6)
        probe = np.array([s for s in moved.tolist() if s in current], dtype=np.int64)
        labels, _ = ix.knn(np.stack([current[int(s)] for s in probe]), 1)
        assert (labels[:, 0] == probe).mean() > 0.98
        found, _ = ix.knn(np.stack(list(current.values())), 5)
        assert set(found.ravel().tolist()) <= set(current)  # no old node, nothing deleted
        ix.upsert(probe[:3], np.zeros((3, 8), np.float32) + 1)  # and it goes on changing
        assert len(ix) == len(current)


def test_rows_change_only_through_the_write_that_yields_them(tmp_path: Path) -> None:
    """insert, log and the other row-level methods exist on the transaction that
    Store.write() yields, not on the store; a transaction whose write has ended (committed
    or rolled back) refuses every use, and the store is left as the write left it."""
    from tintdb._storage import OP_SET, Tx

    row_methods = [
        "insert",
        "update_rows",
        "delete_rows",
        "log",
        "touch",
        "set_dimension",
        "next_seq",
        "put_vectors",
        "drop_vectors",
        "fork_collection",
        "create_collection",
        "delete_collection",
        "reset",
        "prune_log",
        "add_value_types",
    ]
    assert all(callable(getattr(Tx, name)) for name in row_methods)
    assert [name for name in row_methods if hasattr(Store, name)] == []
    store = Store(tmp_path)
    try:
        with store.write() as tx:
            col, _ = tx.create_collection(
                "c", None, {"hnsw": {}}, False, "default_tenant", "default_database"
            )
        vec = np.ones((1, 3), np.float32)
        for call in (
            lambda: tx.insert(col.coll, ["a"], vec, None, None, None),
            lambda: tx.log(col, OP_SET, np.array([1], np.int64)),
            lambda: tx.set_dimension(col, 3),
        ):
            with pytest.raises(RuntimeError, match="this transaction has ended"):
                call()
        with pytest.raises(ValueError, match="refused"), store.write() as tx:
            tx.set_dimension(col, 3)
            tx.insert(col.coll, ["a"], vec, None, None, None)
            raise ValueError("refused")
        with pytest.raises(RuntimeError, match="this transaction has ended"):
            tx.insert(col.coll, ["b"], vec, None, None, None)
        assert store.count(col.coll) == 0
        assert store.collection_by_id(col.id).dimension is None
        with store.write() as tx:
            tx.set_dimension(col, 3)
            tx.insert(col.coll, ["a"], vec, None, None, None)
        assert store.count(col.coll) == 1
    finally:
        store.close()


def test_a_new_file_has_small_pages_and_an_older_file_keeps_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New files get PAGE_SIZE pages (a scattered write dirties a page per record and
    index, each synced through the WAL); a file made with 16 KiB pages, as tintdb made
    them before, keeps them and reads and writes the same records."""
    from tintdb._storage import store as storage_store

    rng = np.random.default_rng(4)
    vecs = rng.random((300, 384), dtype=np.float32)
    for name, made_with in (("new", storage_store.PAGE_SIZE), ("old", 16384)):
        path = tmp_path / name
        monkeypatch.setattr(storage_store, "PAGE_SIZE", made_with)
        with tintdb.PersistentClient(path=str(path)) as client:
            col = client.create_collection("pages", embedding_function=None)
            col.add(ids=[str(i) for i in range(200)], embeddings=vecs[:200])
        monkeypatch.undo()
        with tintdb.PersistentClient(path=str(path)) as client:
            col = client.get_collection("pages")
            col.add(ids=[str(i) for i in range(200, 300)], embeddings=vecs[200:])
            col.delete(ids=[str(i) for i in range(0, 300, 3)])
            col.update(ids=["1", "299"], embeddings=vecs[:2])
            got = col.get(include=["embeddings"])
        conn = sqlite3.connect(path / "tintdb.sqlite3")
        assert conn.execute("PRAGMA page_size").fetchone()[0] == made_with
        conn.close()
        want = {str(i): vecs[i] for i in range(300) if i % 3}
        want["1"], want["299"] = vecs[0], vecs[1]
        assert sorted(got["ids"]) == sorted(want)
        for i, e in zip(got["ids"], got["embeddings"], strict=True):
            assert np.array_equal(e, want[i])
    assert storage_store.PAGE_SIZE == 4096
