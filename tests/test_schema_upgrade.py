"""A store written by an older tintdb opens, is upgraded once, and loses nothing.

``fixtures/store-v1`` was written by tintdb 0.1.0 (schema 1: vectors inside the records
table, FTS5 fed by a per-row trigger): collection ``notes`` (cosine) with records a, b
and c, documents for a and b, metadata for a and b.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import tintdb

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
    assert version == 2
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
