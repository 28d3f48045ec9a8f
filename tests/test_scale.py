"""Large calls are atomic, and deleted data gives its disk space back.

One call is one transaction (docs/design.md): 100,000 records in one ``add`` go in
together, or, when the last one is bad, not at all. Dimension 8 and a small HNSW graph
keep the index cheap so that the test measures the store, not the graph build.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tintdb
from tintdb.errors import TintError

N = 100_000
DIM = 8
FAST_HNSW = {"ef_construction": 16, "max_neighbors": 8}


def _open(path: Path) -> tuple[tintdb.Client, Any]:
    client = tintdb.PersistentClient(path=str(path))
    col = client.get_or_create_collection(
        "big", embedding_function=None, configuration={"hnsw": FAST_HNSW}
    )
    return client, col


def _batch(n: int, seed: int, prefix: str = "id") -> tuple[list[str], np.ndarray]:
    return [f"{prefix}{k}" for k in range(n)], np.random.default_rng(seed).random(
        (n, DIM), dtype=np.float32
    )


def _finds_itself(col: Any, ids: list[str], vecs: np.ndarray) -> None:
    r = col.query(query_embeddings=vecs, n_results=1, include=["distances"])
    assert [row[0] for row in r["ids"]] == ids
    assert max(row[0] for row in r["distances"]) <= 1e-6


def _log_state(path: Path) -> tuple[int, int]:
    """(records, last_lsn) straight from SQLite: what a call must leave unchanged."""
    db = sqlite3.connect(f"file:{path / 'tintdb.sqlite3'}?mode=ro", uri=True)
    try:
        (records,) = db.execute("SELECT count(*) FROM records").fetchone()
        (lsn,) = db.execute("SELECT max(last_lsn) FROM collections").fetchone()
    finally:
        db.close()
    return int(records), int(lsn)


def test_one_add_get_and_delete_of_100k_records(tmp_path: Path) -> None:
    """One call each: 100k records in, all 100k read back by id, all 100k deleted."""
    path = tmp_path / "store"
    ids, vecs = _batch(N, 1)
    client, col = _open(path)
    col.add(ids=ids, embeddings=vecs, metadatas=[{"k": k} for k in range(N)])
    assert col.count() == N
    sample = sorted(np.random.default_rng(2).choice(N, 200, replace=False).tolist())
    got = col.get(ids=[ids[k] for k in sample], include=["embeddings", "metadatas"])
    assert got["ids"] == [ids[k] for k in sample]
    assert np.array_equal(got["embeddings"], vecs[sample])
    assert got["metadatas"] == [{"k": k} for k in sample]
    _finds_itself(col, [ids[k] for k in sample[:50]], vecs[sample[:50]])
    client.close()

    client, col = _open(path)
    assert col.count() == N
    _finds_itself(col, [ids[k] for k in sample[50:100]], vecs[sample[50:100]])
    col.add(ids=["other"], embeddings=np.full((1, DIM), 2.0, np.float32))

    order = np.random.default_rng(6).permutation(N)
    got = col.get(ids=[ids[k] for k in order], include=["embeddings"])
    assert len(got["ids"]) == N
    pos = {i: k for k, i in enumerate(got["ids"])}
    assert set(pos) == set(ids)
    assert np.array_equal(got["embeddings"][[pos[i] for i in ids]], vecs)

    assert col.delete(ids=[ids[k] for k in order]) == {"deleted": N}
    assert col.count() == 1
    assert col.get(ids=ids)["ids"] == []
    assert col.query(query_embeddings=vecs[:5], n_results=3)["ids"] == [["other"]] * 5
    client.close()

    client, col = _open(path)
    assert col.count() == 1
    assert col.query(query_embeddings=vecs[:2], n_results=3)["ids"] == [["other"]] * 2
    client.close()


def _nan(ids: list[str], vecs: np.ndarray) -> dict[str, Any]:
    vecs = vecs.copy()
    vecs[-1, 3] = np.nan
    return {"ids": ids, "embeddings": vecs}


def _ragged(ids: list[str], vecs: np.ndarray) -> dict[str, Any]:
    return {"ids": ids, "embeddings": [*vecs[:-1], np.zeros(DIM + 1, np.float32)]}


def _existing_id(ids: list[str], vecs: np.ndarray) -> dict[str, Any]:
    return {"ids": [*ids[:-1], "kept3"], "embeddings": vecs}


def _repeated_id(ids: list[str], vecs: np.ndarray) -> dict[str, Any]:
    return {"ids": [*ids[:-1], ids[0]], "embeddings": vecs}


def _bad_document(ids: list[str], vecs: np.ndarray) -> dict[str, Any]:
    # A lone surrogate cannot be stored as UTF-8: it fails inside the INSERT itself,
    # after the first 99,999 rows, so only the transaction can undo them.
    docs: list[str | None] = [None] * (len(ids) - 1) + ["bad \ud800"]
    return {"ids": ids, "embeddings": vecs, "documents": docs}


def _bad_metadata(ids: list[str], vecs: np.ndarray) -> dict[str, Any]:
    mds = [{"k": k} for k in range(len(ids) - 1)] + [{"k": "bad \ud800"}]
    return {"ids": ids, "embeddings": vecs, "metadatas": mds}


def _wrong_dimension(ids: list[str], vecs: np.ndarray) -> dict[str, Any]:
    wider = np.random.default_rng(9).random((len(ids), DIM + 1), dtype=np.float32)
    return {"ids": ids, "embeddings": wider}


BAD_LAST_RECORD = {
    "nan": _nan,
    "ragged": _ragged,
    "id that exists": _existing_id,
    "id twice in the call": _repeated_id,
    "document not encodable": _bad_document,
    "metadata not encodable": _bad_metadata,
    "every vector of the wrong dimension": _wrong_dimension,
}


@pytest.mark.parametrize(
    ("method", "case"),
    [
        (method, case)
        for method in ("add", "upsert")
        for case in BAD_LAST_RECORD
        # upsert overwrites an existing id, so that case is no error for it; the two
        # failures inside the INSERT are each run once, to keep the suite quick.
        if (method, case)
        not in {
            ("upsert", "id that exists"),
            ("upsert", "document not encodable"),
            ("add", "metadata not encodable"),
        }
    ],
)
def test_100k_call_with_one_bad_record_changes_nothing(
    tmp_path: Path, case: str, method: str
) -> None:
    """Checked before the transaction or failing inside it: either way, nothing stays."""
    path = tmp_path / "store"
    client, col = _open(path)
    kept_ids, kept = _batch(5, 3, "kept")
    col.add(ids=kept_ids, embeddings=kept, documents=["k"] * 5)
    before = _log_state(path)
    ids, vecs = _batch(N, 4)
    kwargs = BAD_LAST_RECORD[case](ids, vecs)
    with pytest.raises((TintError, ValueError, TypeError)):
        getattr(col, method)(**kwargs)

    assert _log_state(path) == before, "a failed call left rows or a log entry behind"
    assert col.count() == 5
    assert col.get(ids=[ids[0], ids[N // 2], ids[-2]])["ids"] == []
    got = col.get(ids=kept_ids, include=["embeddings", "documents"])
    assert np.array_equal(got["embeddings"], kept) and got["documents"] == ["k"] * 5
    r = col.query(query_embeddings=vecs[:3], n_results=10)
    assert all(set(row) <= set(kept_ids) for row in r["ids"])
    # The store is not wedged: the same batch, made valid, goes in whole.
    col.add(ids=ids[:1000], embeddings=vecs[:1000])
    assert col.count() == 1005
    client.close()


# ---------------------------------------------------------------- disk space

SPACE_N = 50_000


def _disk_usage(path: Path) -> int:
    """Bytes of every file under the store: the database, its -wal/-shm, the snapshots."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _fill(path: Path) -> None:
    """50k records with documents and metadata, and a query so that a snapshot exists."""
    rng = np.random.default_rng(7)
    words = np.array(
        ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma"]
    )
    client, col = _open(path)
    for start in range(0, SPACE_N, 10_000):
        ks = range(start, start + 10_000)
        col.add(
            ids=[f"id{k}" for k in ks],
            embeddings=rng.random((len(ks), DIM), dtype=np.float32),
            documents=[" ".join(rng.choice(words, 6)) + f" #{k}" for k in ks],
            metadatas=[{"k": k} for k in ks],
        )
    col.query(query_embeddings=rng.random((1, DIM), dtype=np.float32), n_results=1)
    client.close()


def _delete_all_then_close(path: Path) -> int:
    client, col = _open(path)
    assert col.delete(ids=col.get(include=[])["ids"]) == {"deleted": SPACE_N}
    client.close()
    return _disk_usage(path)


def _delete_all_then_vacuum(path: Path) -> int:
    client, col = _open(path)
    assert col.delete(ids=col.get(include=[])["ids"]) == {"deleted": SPACE_N}
    client.vacuum()
    left = _disk_usage(path)  # while open: the -wal and -shm files count too
    client.close()
    return left


def _delete_collection_then_close(path: Path) -> int:
    client, col = _open(path)
    col.query(query_embeddings=np.zeros((1, DIM), np.float32), n_results=1)
    client.delete_collection("big")
    client.close()
    return _disk_usage(path)


# An empty store is well under 1 MB; a quarter of the full size is generous.
SHARE_LEFT = 0.25


def test_deleted_data_gives_its_disk_space_back(tmp_path: Path) -> None:
    """Delete everything (records, or the collection), then close() or vacuum(): it shrinks.

    One filled store, copied for each way of deleting, so it is built only once.
    """
    full_path = tmp_path / "full"
    _fill(full_path)
    full = _disk_usage(full_path)
    report, ok = [], True
    for how in (_delete_all_then_close, _delete_all_then_vacuum, _delete_collection_then_close):
        path = tmp_path / how.__name__
        shutil.copytree(full_path, path)
        left = how(path)
        ok &= left <= SHARE_LEFT * full
        report.append(f"{how.__name__.strip('_')}: {full} -> {left} bytes {_files(path)}")
    assert ok, "disk space not given back:\n" + "\n".join(report)


def _files(path: Path) -> dict[str, int]:
    return {str(f.relative_to(path)): f.stat().st_size for f in path.rglob("*") if f.is_file()}
