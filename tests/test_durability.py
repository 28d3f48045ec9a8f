"""Durability: a missing, stale or damaged index snapshot is rebuilt, never trusted.

A promise of docs/design.md ("What is durable where") checked with real files: each
damage is applied to a copy of a closed store, which is then opened in a worker process
so that a crash of the native index loader shows up as a failed test.
"""

from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from _workers import COLLECTION, DIM, Server, check_answers

import tintdb

# ---------------------------------------------------------------- a damaged index


def _records(n: int, seed: int, prefix: str) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "ids": [f"{prefix}{k}" for k in range(n)],
        "embeddings": rng.random((n, DIM), dtype=np.float32),
        "metadatas": [{"k": k, "p": prefix} for k in range(n)],
        "documents": [f"document {prefix}{k}" for k in range(n)],
    }


HNSW_SINGLE_THREAD = {"num_threads": 1}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A closed store with a snapshot, plus a copy of an older (stale) snapshot."""
    root = tmp_path_factory.mktemp("damage")
    path = root / "store"
    client = tintdb.PersistentClient(path=str(path))
    col = client.create_collection(
        COLLECTION, embedding_function=None, configuration={"hnsw": HNSW_SINGLE_THREAD}
    )
    first = _records(2000, 1, "a")
    col.add(**first)
    col.query(query_embeddings=first["embeddings"][:1], n_results=1)
    client.close()
    (snap_dir,) = (path / "index").iterdir()
    (stale,) = snap_dir.glob("v*")
    stale_copy = root / stale.name
    shutil.copytree(stale, stale_copy)

    client = tintdb.PersistentClient(path=str(path))
    col = client.get_collection(COLLECTION, embedding_function=None)
    col.add(**_records(1000, 2, "b"))
    changed = _records(100, 3, "a")  # new vectors for a0..a99
    col.update(ids=changed["ids"], embeddings=changed["embeddings"])
    col.delete(ids=[f"b{k}" for k in range(0, 1000, 5)])
    col.query(query_embeddings=first["embeddings"][:1], n_results=1)
    client.close()
    (newest,) = snap_dir.glob("v*")
    assert newest.name > stale.name

    log = root / "workers.log"
    server = Server(path, log)
    got = server.call("get")
    rng = np.random.default_rng(5)
    embs = np.asarray(got["embeddings"], dtype=np.float32)
    probes = np.concatenate([rng.random((40, DIM), dtype=np.float32), embs[::150]])
    before = server.query(probes, k=10)
    assert server.exit() == 0
    state = {
        i: (embs[k].tobytes(), got["metadatas"][k], got["documents"][k])
        for k, i in enumerate(got["ids"])
    }
    check_answers("pristine", probes, (before["ids"], before["distances"]), state, 10, 1.0)
    return {
        "root": root,
        "path": path,
        "snap": newest.relative_to(path),
        "stale": stale_copy,
        "probes": probes,
        "before": before,
        "state": state,
        "count": len(got["ids"]),
    }


def _flip(f: Path, offset: int, n: int) -> None:
    data = bytearray(f.read_bytes())
    for k in range(offset, min(offset + n, len(data))):
        data[k] ^= 0xFF
    f.write_bytes(bytes(data))


def _truncate(f: Path, size: int) -> None:
    with f.open("r+b") as fh:
        fh.truncate(size)


def _manifest(snap: Path, **changes: Any) -> None:
    m = orjson.loads((snap / "manifest.json").read_bytes())
    m.update(changes)
    (snap / "manifest.json").write_bytes(orjson.dumps(m))


def _crc_of(f: Path) -> int:
    return zlib.crc32(f.read_bytes())


DAMAGES = {
    "snapshot dir deleted": lambda s, st: shutil.rmtree(s),
    "index dir deleted": lambda s, st: shutil.rmtree(s.parent.parent),
    "graph truncated to half": lambda s, st: _truncate(
        s / "graph.hnsw", (s / "graph.hnsw").stat().st_size // 2
    ),
    "graph truncated to 0": lambda s, st: _truncate(s / "graph.hnsw", 0),
    "graph truncated to its header": lambda s, st: _truncate(s / "graph.hnsw", 48),
    "graph bytes flipped": lambda s, st: _flip(
        s / "graph.hnsw", (s / "graph.hnsw").stat().st_size // 2, 64
    ),
    "graph header flipped": lambda s, st: _flip(s / "graph.hnsw", 0, 40),
    "graph deleted": lambda s, st: (s / "graph.hnsw").unlink(),
    "labels truncated": lambda s, st: _truncate(s / "labels.npy", 20),
    "manifest garbage": lambda s, st: (s / "manifest.json").write_bytes(os.urandom(300)),
    "manifest empty": lambda s, st: (s / "manifest.json").write_bytes(b""),
    "manifest deleted": lambda s, st: (s / "manifest.json").unlink(),
    "manifest not an object": lambda s, st: (s / "manifest.json").write_bytes(b"[1, 2]"),
    "manifest lsn from the future": lambda s, st: _manifest(s, lsn=10**12),
    "manifest lsn zero": lambda s, st: _manifest(s, lsn=0),
    "manifest wrong count": lambda s, st: _manifest(s, count=7),
    "manifest wrong dim": lambda s, st: _manifest(s, dim=DIM + 1),
    "manifest wrong crc": lambda s, st: _manifest(s, crc={"graph.hnsw": 1, "labels.npy": 2}),
    "manifest lsn a string": lambda s, st: _manifest(s, lsn="x"),
    "stale snapshot instead of the newest": lambda s, st: (
        shutil.rmtree(s),
        shutil.copytree(st, s.parent / st.name),
    ),
    "stale snapshot beside the newest": lambda s, st: shutil.copytree(st, s.parent / st.name),
    "stale snapshot beside a corrupt newest": lambda s, st: (
        shutil.copytree(st, s.parent / st.name),
        _flip(s / "graph.hnsw", 100, 8),
    ),
    "stale snapshot renamed as the newest": lambda s, st: (
        shutil.rmtree(s),
        shutil.copytree(st, s),
    ),
    "half-written temporary snapshot left over": lambda s, st: (
        shutil.copytree(s, s.parent / ".tmp-1-1"),
        _truncate(s.parent / ".tmp-1-1" / "graph.hnsw", 1000),
    ),
    "manifest checksum matches a truncated graph": lambda s, st: (
        _truncate(s / "graph.hnsw", (s / "graph.hnsw").stat().st_size - 4096),
        _manifest(s, crc={f.name: _crc_of(f) for f in (s / "graph.hnsw", s / "labels.npy")}),
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_index_is_rebuilt_not_trusted(
    damage: str, pristine: dict[str, Any], tmp_path: Path
) -> None:
    """Open (in a worker, so a native crash is a failure) and answer exactly as before."""
    path = tmp_path / "store"
    shutil.copytree(pristine["path"], path)
    DAMAGES[damage](path / pristine["snap"], pristine["stale"])
    log = tmp_path / "worker.log"
    probes, before = pristine["probes"], pristine["before"]

    server = Server(path, log)
    try:
        after = server.query(probes, k=10)
        assert after["ids"] == before["ids"], "answers differ from the undamaged store"
        np.testing.assert_allclose(after["distances"], before["distances"], rtol=1e-5, atol=1e-6)
        assert server.call("count") == pristine["count"]
        # The store keeps working: a write is found, and the next open is clean too.
        new = _records(1, 9, "new")
        op = {"kind": "add", **new, "embeddings": new["embeddings"].tolist()}
        server.call("write", op=op)
        found = server.query(new["embeddings"], k=1)
        assert found["ids"] == [["new0"]] and found["distances"][0][0] <= 1e-6
        server.call("reopen")  # closes (writing a fresh snapshot) and opens again
        again = server.query(probes, k=10)
        want = {
            **pristine["state"],
            "new0": (new["embeddings"][0].tobytes(), new["metadatas"][0], new["documents"][0]),
        }
        check_answers("reopened", probes, (again["ids"], again["distances"]), want, 10, 1.0)
        assert server.exit() == 0, log.read_text()
    finally:
        server.kill()
