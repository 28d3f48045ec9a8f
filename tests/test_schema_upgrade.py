"""A store written by an older tintdb opens, is upgraded once, and loses nothing.

``fixtures/store-v1`` was written by tintdb 0.1.0 (schema 1: vectors inside the records
table, FTS5 fed by a per-row trigger): collection ``notes`` (cosine) with records a, b
and c, documents for a and b, metadata for a and b.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tintdb
from tintdb import _storage, _vblocks
from tintdb._storage import schema

FIXTURE = Path(__file__).parent / "fixtures" / "store-v1"


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    shutil.copytree(FIXTURE, path)
    return path


def _schema(path: Path) -> tuple[int, list[str], list[str]]:
    db = sqlite3.connect(path / "tintdb.sqlite3")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        columns = [r[1] for r in db.execute("PRAGMA table_info(records)")]
        triggers = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]
    finally:
        db.close()
    return version, columns, triggers


def test_fixture_is_schema_1(old_store: Path) -> None:
    version, columns, triggers = _schema(old_store)
    assert version == 1
    assert "embedding" in columns
    assert "docs_insert" in triggers


def test_old_store_opens_with_every_record_intact(old_store: Path) -> None:
    with tintdb.PersistentClient(path=str(old_store)) as client:
        col = client.get_collection("notes")
        got = col.get(include=["embeddings", "documents", "metadatas"])
        assert got["ids"] == ["a", "b", "c"]
        np.testing.assert_array_equal(got["embeddings"], np.eye(3, dtype=np.float32))
        assert got["documents"] == ["the moon orbits", "bread needs yeast", None]
        assert got["metadatas"] == [{"topic": "space"}, {"topic": "food", "n": 2}, None]
        hits = col.query(query_embeddings=[[0.9, 0.1, 0.0]], n_results=2)
        assert hits["ids"] == [["a", "b"]]
        assert col.get(where_document={"$contains": "moon"})["ids"] == ["a"]
    version, columns, triggers = _schema(old_store)
    assert version == _storage.SCHEMA_VERSION
    assert "embedding" not in columns
    assert "docs_insert" not in triggers


def test_upgraded_store_indexes_new_and_forgets_deleted_documents(old_store: Path) -> None:
    with tintdb.PersistentClient(path=str(old_store)) as client:
        col = client.get_collection("notes")
        col.add(ids=["d"], embeddings=[[1.0, 1.0, 0.0]], documents=["a moon of bread"])
        assert sorted(col.get(where_document={"$contains": "moon"})["ids"]) == ["a", "d"]
        col.delete(ids=["d"])
        assert col.get(where_document={"$contains": "moon"})["ids"] == ["a"]
    db = sqlite3.connect(old_store / "tintdb.sqlite3")
    try:
        # The full-text index itself (not only the exact check after it) forgot "d".
        seqs = [r[0] for r in db.execute("SELECT rowid FROM docs WHERE docs MATCH '\"moon\"'")]
        (a_seq,) = db.execute("SELECT seq FROM records WHERE id = 'a'").fetchone()
        db.execute("INSERT INTO docs(docs) VALUES ('integrity-check')")
    finally:
        db.close()
    assert seqs == [a_seq]


def test_two_clients_opening_an_old_store_at_once(old_store: Path) -> None:
    first = tintdb.PersistentClient(path=str(old_store))
    second = tintdb.PersistentClient(path=str(old_store))
    try:
        assert first.get_collection("notes").count() == 3
        assert second.get_collection("notes").count() == 3
    finally:
        first.close()
        second.close()


# ---------------------------------------------------------------- schema 2

# ``fixtures/store-v2`` was written by tintdb at schema 2 (one row per vector in a
# ``vectors`` table; index snapshots in hnswlib's own format, vectors included) by this
# recipe: ``notes`` (cosine, 4 dimensions) took n0..n149 in three adds of 50, each
# followed by an add of 23 or 24 records o0..o69 to ``other`` (l2, 3 dimensions), so
# runs of seqs hold both collections; then every 15th note was deleted and n1, n2 got
# new vectors.
FIXTURE_V2 = Path(__file__).parent / "fixtures" / "store-v2"


def _v2_vectors(seed: int, n: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.integers(-50, 50, size=(n, dim)) / 8).astype(np.float32)


def _v2_expected() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    notes = {f"n{i}": v for i, v in enumerate(_v2_vectors(1, 150, 4)) if i % 15}
    notes["n1"], notes["n2"] = _v2_vectors(3, 2, 4)
    other = {f"o{i}": v for i, v in enumerate(_v2_vectors(2, 70, 3))}
    return notes, other


@pytest.fixture
def v2_store(tmp_path: Path) -> Path:
    path = tmp_path / "store-v2"
    shutil.copytree(FIXTURE_V2, path)
    return path


def _tables(path: Path) -> tuple[int, set[str]]:
    db = sqlite3.connect(path / "tintdb.sqlite3")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()
    return version, names


def test_v2_fixture_is_schema_2(v2_store: Path) -> None:
    version, tables = _tables(v2_store)
    assert version == 2 and "vectors" in tables and "vblocks" not in tables
    assert list(v2_store.glob("index/*/v*/graph.hnsw"))


def test_v2_store_opens_with_every_vector_intact_and_answers_exactly(v2_store: Path) -> None:
    want_notes, want_other = _v2_expected()
    with tintdb.PersistentClient(path=str(v2_store)) as client:
        for name, want in (("notes", want_notes), ("other", want_other)):
            col = client.get_collection(name)
            got = col.get(include=["embeddings"])
            assert sorted(got["ids"]) == sorted(want)
            for i, e in zip(got["ids"], got["embeddings"], strict=True):
                np.testing.assert_array_equal(e, want[i])
            # Each stored vector is found at distance 0 (by itself, or by a record whose
            # vector points the same way in cosine space).
            hits = col.query(query_embeddings=np.stack(list(want.values())), n_results=1)
            assert max(d[0] for d in hits["distances"]) <= 1e-5
        notes = client.get_collection("notes")
        assert notes.get(where={"even": True}, where_document={"$contains": "number 4"})["ids"] == [
            "n4",
            "n40",
            "n42",
            "n44",
            "n46",
            "n48",
        ]
        notes.add(ids=["new"], embeddings=[[1.0, 2.0, 3.0, 4.0]])
        assert notes.count() == len(want_notes) + 1
    version, tables = _tables(v2_store)
    assert version == _storage.SCHEMA_VERSION and "vectors" not in tables and "vblocks" in tables
    # close() wrote snapshots of the current format; the old ones are gone.
    assert not list(v2_store.glob("index/*/v*/graph.hnsw"))
    assert len(list(v2_store.glob("index/*/v*/graph.npz"))) == 2
    with tintdb.PersistentClient(path=str(v2_store)) as client:
        got = client.get_collection("notes").get(ids=["n1", "new"], include=["embeddings"])
        np.testing.assert_array_equal(got["embeddings"][0], want_notes["n1"])
        np.testing.assert_array_equal(got["embeddings"][1], [1.0, 2.0, 3.0, 4.0])


def _record_keys(client: tintdb.Client, name: str) -> dict[str, set[str]]:
    keys = client.get_collection(name)._model.schema["keys"]
    return {k: set(v) for k, v in keys.items() if not k.startswith("#")}


def test_upgraded_stores_show_the_metadata_keys_their_records_use(
    old_store: Path, v2_store: Path
) -> None:
    """The schema's discovered keys come from the stored metadata of an older file."""
    with tintdb.PersistentClient(path=str(old_store)) as client:
        assert _record_keys(client, "notes") == {"topic": {"string"}, "n": {"int"}}
    with tintdb.PersistentClient(path=str(v2_store)) as client:
        assert _record_keys(client, "notes") == {"i": {"int"}, "even": {"bool"}}
        assert _record_keys(client, "other") == {}


# ---------------------------------------------------------------- schema 3

# ``fixtures/store-v3`` was written by tintdb at schema 3 (no record count kept with the
# collection) by this recipe: ``notes`` (l2, 4 dimensions) took n0..n119 with documents
# and ``other`` (cosine, 3 dimensions) o0..o29, in three rounds of 40 and 10; then every
# 7th note was deleted, n1 and n200 were upserted (one new record) and o3 deleted; and
# ``empty`` was created with no records.
FIXTURE_V3 = Path(__file__).parent / "fixtures" / "store-v3"


@pytest.fixture
def v3_store(tmp_path: Path) -> Path:
    path = tmp_path / "store-v3"
    shutil.copytree(FIXTURE_V3, path)
    return path


def test_v3_fixture_is_schema_3(v3_store: Path) -> None:
    version, _ = _tables(v3_store)
    db = sqlite3.connect(v3_store / "tintdb.sqlite3")
    try:
        columns = [r[1] for r in db.execute("PRAGMA table_info(collections)")]
    finally:
        db.close()
    assert version == 3 and "n_records" not in columns


def test_v3_store_gets_its_counts_and_keeps_them_through_writes(v3_store: Path) -> None:
    notes_ids = sorted({f"n{i}" for i in range(120) if i % 7} | {"n200"})
    with tintdb.PersistentClient(path=str(v3_store)) as client:
        notes, other = client.get_collection("notes"), client.get_collection("other")
        assert notes.count() == len(notes_ids) == 103
        assert sorted(notes.get()["ids"]) == notes_ids
        assert other.count() == 29
        assert client.get_collection("empty").count() == 0
        notes.add(ids=["x1", "x2"], embeddings=[[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 1.0]])
        notes.upsert(ids=["x2", "x3"], embeddings=[[1.0, 1.0, 1.0, 1.0]] * 2)
        notes.delete(ids=["n1", "n2", "not-there"])
        other.delete(where={"$and": [{"a": 1}, {"b": 2}]})  # matches nothing
        assert notes.count() == 103 + 3 - 2
        assert other.count() == 29
    version, _ = _tables(v3_store)
    assert version == _storage.SCHEMA_VERSION
    with tintdb.PersistentClient(path=str(v3_store)) as client:
        notes = client.get_collection("notes")
        assert notes.count() == len(notes.get()["ids"]) == 104


# ---------------------------------------------------------------- each migration alone


def _unopened(path: Path) -> _storage.Store:
    """A Store on an old file whose schema was not touched: the migration under test
    runs on its connection alone."""
    store = _storage.Store.__new__(_storage.Store)
    store.path = path
    store._conn = _storage.Store._connect(str(path / "tintdb.sqlite3"))
    return store


def _migrated(store: _storage.Store, step: Any) -> None:
    """Run one migration step in a transaction of its own, through its ``Tx``."""
    store._conn.execute("BEGIN")
    tx = _storage.Tx(store._conn, threading.RLock())
    step(tx)
    tx.end()
    store._conn.execute("COMMIT")


def _vectors(store: _storage.Store) -> dict[int, list[float]]:
    """Every live vector in the blocks, read with the codec alone."""
    out = {}
    for blk, slots, data in store._conn.execute("SELECT blk, slots, data FROM vblocks"):
        seqs, vecs = _vblocks.live(blk, slots, data)
        out.update({int(s): v.tolist() for s, v in zip(seqs, vecs, strict=True)})
    return out


def test_the_migrations_lead_from_every_old_version_to_the_current_one() -> None:
    steps = _storage.MIGRATIONS
    assert [s for s, _, _ in steps] == sorted(s for s, _, _ in steps)
    for version in range(1, _storage.SCHEMA_VERSION):
        while version != _storage.SCHEMA_VERSION:
            version = next(t for s, t, _ in steps if s == version)


@pytest.mark.parametrize(
    ("fixture", "step", "vectors"),
    [
        (FIXTURE, schema.vectors_from_records_into_blocks, "SELECT seq, embedding FROM records"),
        (FIXTURE_V2, schema.vector_rows_into_blocks, "SELECT seq, embedding FROM vectors"),
    ],
)
def test_each_vector_migration_alone_moves_every_vector_into_blocks(
    tmp_path: Path, fixture: Path, step: Any, vectors: str
) -> None:
    path = tmp_path / "store"
    shutil.copytree(fixture, path)
    store = _unopened(path)
    try:
        before = {
            int(s): np.frombuffer(e, np.float32).tolist()
            for s, e in store._conn.execute(vectors).fetchall()
        }
        assert before
        _migrated(store, step)
        assert _vectors(store) == before
        columns = [r[1] for r in store._conn.execute("PRAGMA table_info(records)")]
        tables = [r[0] for r in store._conn.execute("SELECT name FROM sqlite_master")]
        assert "embedding" not in columns and "vectors" not in tables
    finally:
        store._conn.close()


def test_the_count_migration_alone_counts_each_collections_records(tmp_path: Path) -> None:
    path = tmp_path / "store"
    shutil.copytree(FIXTURE_V3, path)
    store = _unopened(path)
    try:
        _migrated(store, schema.record_counts_in_collections)
        counted = dict(
            store._conn.execute("SELECT coll, count(*) FROM records GROUP BY coll").fetchall()
        )
        kept = dict(store._conn.execute("SELECT coll, n_records FROM collections").fetchall())
        assert kept == {coll: counted.get(coll, 0) for coll in kept} and any(kept.values())
    finally:
        store._conn.close()


# ---------------------------------------------------------------- schema 4

# ``fixtures/store-v4`` was written by tintdb at schema 4, before collection_keys, the
# sparse postings and forks (the tables schema 5 adds), by this recipe: ``notes`` (l2,
# 4 dimensions) took n0..n119 in three adds of 40 with documents "note number {i}" and
# metadata {"i": i, "even": i % 2 == 0, "w": i / 4, "tag": f"t{i % 3}", "tags":
# [f"x{i % 2}"]}, each add followed by ten records o0..o29 to ``other`` (cosine, 3
# dimensions, no metadata); then every 7th note was deleted, n1's metadata updated to
# {"i": 1001} and o3 deleted; ``empty`` was created with no records.
FIXTURE_V4 = Path(__file__).parent / "fixtures" / "store-v4"
V4_TABLES = {"collection_keys", "sparse_keys", "sparse", "forks"}


@pytest.fixture
def v4_store(tmp_path: Path) -> Path:
    path = tmp_path / "store-v4"
    shutil.copytree(FIXTURE_V4, path)
    return path


def test_v4_fixture_is_schema_4_without_the_later_tables(v4_store: Path) -> None:
    version, tables = _tables(v4_store)
    assert version == 4 and not tables & V4_TABLES


def test_v4_store_opens_upgraded_with_its_keys_and_takes_sparse_vectors_and_forks(
    v4_store: Path,
) -> None:
    notes_ids = sorted(f"n{i}" for i in range(120) if i % 7)
    with tintdb.PersistentClient(path=str(v4_store)) as client:
        notes, other = client.get_collection("notes"), client.get_collection("other")
        assert notes.count() == len(notes_ids) == 102
        assert sorted(notes.get()["ids"]) == notes_ids
        assert other.count() == 29
        assert client.get_collection("empty").count() == 0
        assert notes.get(ids=["n1"])["metadatas"][0]["i"] == 1001
        want = [f"n{i}" for i in range(120) if i % 7 and i % 3 == 2 and str(i)[0] == "1"]
        got = notes.get(where={"tag": "t2"}, where_document={"$contains": "number 1"})
        assert got["ids"] == want and len(want) == 8
        # The keys the records used, filled from the stored metadata by the migration.
        assert _record_keys(client, "notes") == {
            "i": {"int"},
            "even": {"bool"},
            "w": {"float"},  # i / 4, a float even where it is whole
            "tag": {"string"},
            "tags": {"string"},
        }
        assert _record_keys(client, "other") == {}
        # What the new tables hold: sparse postings of new records, and a fork.
        sparse = tintdb.SparseVector(indices=[3, 9], values=[0.5, 2.0])
        other.add(ids=["s1"], embeddings=[[1.0, 0.0, 0.0]], metadatas=[{"sv": sparse}])
        fork = other.fork("other-copy")
        assert fork.count() == 30 and other.fork_count() == 1
        assert fork.get(ids=["s1"])["metadatas"] == [{"sv": sparse}]
    version, tables = _tables(v4_store)
    assert version == _storage.SCHEMA_VERSION and tables >= V4_TABLES


def test_the_v4_migration_alone_adds_the_tables_and_fills_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "store"
    shutil.copytree(FIXTURE_V4, path)
    store = _unopened(path)
    try:
        _migrated(store, schema.keys_sparse_and_forks)
        tables = {r[0] for r in store._conn.execute("SELECT name FROM sqlite_master")}
        assert tables >= V4_TABLES
        keys = set(store._conn.execute("SELECT coll, key, vtype FROM collection_keys"))
        notes = store._conn.execute("SELECT coll FROM collections WHERE name = 'notes'")
        (coll,) = notes.fetchone()
        assert keys == {
            (coll, "i", "int"),
            (coll, "even", "bool"),
            (coll, "w", "float"),
            (coll, "tag", "string"),
            (coll, "tags", "string"),
        }
        # Run again on a file that has the tables (stamped 4 by a tintdb that made them),
        # the step changes nothing.
        store._conn.execute("DELETE FROM collection_keys WHERE key = 'w'")
        _migrated(store, schema.keys_sparse_and_forks)
        after = set(store._conn.execute("SELECT coll, key, vtype FROM collection_keys"))
        assert after == {k for k in keys if k[1] != "w"}
    finally:
        store._conn.close()
