"""Online backup (``client.backup``, ``tintdb backup``) and ``tintdb restore``.

The start point of a backup is the moment its read transaction begins on the source
(inside ``backup()``): the copy holds exactly the transactions committed before it.
``BackupInfo.lsn`` is the last change-log position the copy holds.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import tintdb
from tintdb.errors import InvalidArgumentError

DIM = 32

# One record per call, each acknowledged (its add returned) before the next starts;
# the writer prints, per record, when the call began and when it returned.
WRITER = """
import sys, time, numpy as np, tintdb
client = tintdb.PersistentClient(path=sys.argv[1])
col = client.get_collection("live")
rng = np.random.default_rng(3)
print("ready", flush=True)
for i in range(int(sys.argv[2])):
    began = time.monotonic()
    col.add(ids=[f"w{i:06d}"], embeddings=rng.normal(size=(1, DIM)).astype(np.float32),
            metadatas=[{"i": i}], documents=[f"written {i}"])
    print(f"w{i:06d} {began!r} {time.monotonic()!r}", flush=True)
client.close()
""".replace("DIM", str(DIM))


def _integrity(path: Path) -> list[tuple[str]]:
    conn = sqlite3.connect(str(path / "tintdb.sqlite3"))
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


def _seqs(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{path / 'tintdb.sqlite3'}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT id, seq FROM records"))
    finally:
        conn.close()


def test_backup_while_another_process_writes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    client = tintdb.PersistentClient(path=str(store))
    col = client.create_collection("live", embedding_function=None)
    base = np.random.default_rng(0).normal(size=(20_000, DIM)).astype(np.float32)
    col.add(ids=[f"base{i}" for i in range(20_000)], embeddings=base)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(store), "400"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "ready"
    acked: list[tuple[str, float, float]] = []
    while len(acked) < 40:  # writes are flowing
        rid, began, done = writer.stdout.readline().split()
        acked.append((rid, float(began), float(done)))
    called = time.monotonic()
    info = client.backup(tmp_path / "copy")
    returned = time.monotonic()
    for line in writer.stdout:
        rid, began, done = line.split()
        acked.append((rid, float(began), float(done)))
    assert writer.wait(60) == 0
    writer.stdout.close()
    client.close()

    copy = tmp_path / "copy"
    assert _integrity(copy) == [("ok",)]
    in_copy = _seqs(copy)
    source = _seqs(store)
    # Exactly the writes committed before the start point: a prefix of the source's
    # history by commit order, with no gap and nothing after it.
    cut = max(in_copy.values())
    assert set(in_copy) == {rid for rid, seq in source.items() if seq <= cut}
    assert all(source[rid] == seq for rid, seq in in_copy.items())
    # Every write acknowledged before backup() was called is in it; none begun after
    # backup() returned is.
    assert all(rid in in_copy for rid, _, done in acked if done < called)
    assert not any(rid in in_copy for rid, began, _ in acked if began > returned)
    assert len(acked) == 400
    # The copy names its start point: the last change-log position it holds.
    conn = sqlite3.connect(str(copy / "tintdb.sqlite3"))
    assert conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'ops'").fetchone()[0] == (
        info.lsn
    )
    conn.close()
    # It is a store: it opens and answers.
    restored = tintdb.PersistentClient(path=str(copy))
    live = restored.get_collection("live")
    assert live.count() == len(in_copy)
    got = live.query(query_embeddings=base[:3], n_results=1, include=[])
    assert got["ids"] == [["base0"], ["base1"], ["base2"]]
    restored.close()


def test_backup_copies_a_fitting_index_snapshot(tmp_path: Path) -> None:
    store = tmp_path / "store"
    client = tintdb.PersistentClient(path=str(store))
    col = client.create_collection("col", embedding_function=None)
    vectors = np.random.default_rng(1).normal(size=(5000, 8)).astype(np.float32)
    col.add(ids=[str(i) for i in range(5000)], embeddings=vectors)
    client.close()  # writes the snapshot
    info = tintdb.PersistentClient(path=str(store)).backup(tmp_path / "b")
    assert info.index_snapshots == 1 and info.collections == 1
    assert list((tmp_path / "b" / "index").glob("*/v*"))


def test_restore_and_the_cli(tmp_path: Path) -> None:
    store = tmp_path / "store"
    client = tintdb.PersistentClient(path=str(store))
    client.create_collection("col", metadata={"hnsw:space": "ip"}).add(
        ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], documents=["x", "y"]
    )
    client.close()
    run = [sys.executable, "-m", "tintdb"]
    out = subprocess.run(
        [*run, "backup", "--path", str(store), str(tmp_path / "bk")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "backed up" in out and "1 collections" in out
    failed = subprocess.run(
        [*run, "backup", "--path", str(store), str(tmp_path / "bk")], capture_output=True, text=True
    )
    assert failed.returncode == 1 and "not empty" in failed.stderr
    subprocess.run(
        [*run, "restore", str(tmp_path / "bk"), "--path", str(tmp_path / "again")],
        check=True,
        capture_output=True,
    )
    refused = subprocess.run(
        [*run, "restore", str(tmp_path / "bk"), "--path", str(store)],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1 and "already holds a store" in refused.stderr
    back = tintdb.PersistentClient(path=str(tmp_path / "again"))
    c = back.get_collection("col")
    assert c.configuration["hnsw"]["space"] == "ip"
    assert c.get(include=["documents"])["documents"] == ["x", "y"]
    back.close()
    assert _integrity(tmp_path / "again") == [("ok",)]


def test_backup_of_an_in_memory_store_and_of_a_server_client(tmp_path: Path) -> None:
    client = tintdb.EphemeralClient()
    client.create_collection("mem").add(ids=["a"], embeddings=[[1.0, 2.0]])
    info = client.backup(tmp_path / "mem")
    assert info.collections == 1
    opened = tintdb.PersistentClient(path=str(tmp_path / "mem"))
    assert opened.get_collection("mem").get(include=["embeddings"])["embeddings"].tolist() == [
        [1.0, 2.0]
    ]
    opened.close()
    with pytest.raises(InvalidArgumentError, match="not empty"):
        client.backup(tmp_path / "mem")
    assert not list(tmp_path.glob(".mem.partial-*"))
