"""Durability: kill -9 at any moment loses nothing, and a damaged index is rebuilt.

These are the promises of docs/design.md ("What is durable where") checked with real
processes and real files: a worker writes through the public API and is SIGKILLed at
seeded random moments (between calls, in the middle of a call, while it writes an index
snapshot, while it closes); the next process to open the store must find every
acknowledged write, no half of a batch, and an index that answers like brute force.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
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

import tintdb
from tintdb._index import GRAPH_FILE as GRAPH
from tintdb._index import LABELS_FILE as LABELS
from tintdb._storage import store as storage_store

# The subject is the derived HNSW index: search it even in small collections.
pytestmark = pytest.mark.usefixtures("graph_search_for_every_size")


# ---------------------------------------------------------------- checking a store


def _state_of(dump: dict[str, Any]) -> Model:
    return {
        i: (dump["embeddings"][k].tobytes(), dump["metadatas"][k], dump["documents"][k])
        for k, i in enumerate(dump["ids"])
    }


def _diff(got: Model, want: Model) -> str:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    changed = sorted(i for i in set(got) & set(want) if got[i] != want[i])
    return f"missing {missing[:8]} extra {extra[:8]} changed {changed[:8]}"


# HNSW is approximate: in a graph worn by updates and deletes, a search for a record's
# own vector can, rarely, miss it (measured on histories like this test's: 8 misses over
# 1,440 checks of ~2,500 records, never more than 2 in one history). That is recall, not
# damage; the exact check of what the index holds is ``index_check``.
SELF_MISSES = 0.004


def check_dump(dump: dict[str, Any]) -> None:
    """The index a freshly opened worker rebuilt holds exactly its records, and the
    queries it answered agree with them."""
    assert dump["index_check"] is None, dump["index_check"]
    state = _state_of(dump)
    self_ids, self_d = dump["self"]
    missed = []
    for n, i in enumerate(dump["ids"]):
        if self_ids[n][:1] != [i]:
            missed.append(f"{i!r} -> {self_ids[n]} {self_d[n]}")
            continue
        assert self_d[n][0] <= 1e-6, f"{i!r} is at {self_d[n][0]} from its own vector"
    assert len(missed) <= SELF_MISSES * len(dump["ids"]), (
        f"{len(missed)} of {len(dump['ids'])} records not found by their own vector: {missed[:5]}"
    )
    check_answers("self", dump["embeddings"], dump["self"], state, 1, min_recall=0.99)
    check_answers("probe", dump["probes"], dump["probe"], state, 10, min_recall=0.95)
    extra = dump["extra_queries"]
    if extra is not None:
        check_answers("old vectors", extra, dump["extra"], state, 5, min_recall=0.0)


# ---------------------------------------------------------------- one process


def test_updated_vector_is_not_found_where_it_was(tmp_path: Path) -> None:
    """After a delete frees an index slot, an update must move the vector, not copy it."""
    path = tmp_path / "store"
    rng = np.random.default_rng(11)
    old = rng.random((300, DIM), dtype=np.float32)
    ids = [f"x{k}" for k in range(300)]
    client = tintdb.PersistentClient(path=str(path))
    col = client.create_collection(COLLECTION, embedding_function=None)
    col.add(ids=ids, embeddings=old)
    col.query(query_embeddings=old[:1], n_results=1)  # the index is in memory
    col.delete(ids=ids[:5])
    col.update(ids=ids[5:25], embeddings=rng.random((20, DIM), dtype=np.float32))
    for attempt in ("in memory", "after reopening"):
        state = _state_of_client(col)
        r = col.query(query_embeddings=old[5:25], n_results=3, include=["distances"])
        check_answers(attempt, old[5:25], (r["ids"], r["distances"]), state, 3, 0.9)
        client.close()
        client = tintdb.PersistentClient(path=str(path))
        col = client.get_collection(COLLECTION, embedding_function=None)
    client.close()


def _state_of_client(col: Any) -> Model:
    got = col.get(include=["embeddings", "metadatas", "documents"])
    return model_from_get(got)


# ---------------------------------------------------------------- kill -9


def _tmp_dirs(path: Path, pid: int) -> list[Path]:
    """Snapshot directories that process ``pid`` was writing (its temporary ones)."""
    index = path / "index"
    if not index.is_dir():
        return []
    return [d for col in index.iterdir() if col.is_dir() for d in col.glob(f".tmp-{pid}-*")]


class KillHarness:
    """Runs ingest workers one after another, kills them, and keeps the expected state.

    ``model`` holds exactly the acknowledged writes. The call in flight at a kill is
    ``pending``: the next worker's first look at the store must show it applied
    entirely or not at all, and the model follows whichever happened.
    """

    def __init__(self, tmp_path: Path, seed: int) -> None:
        self.path = tmp_path / "store"
        self.dump = tmp_path / "dump.pkl"
        self.extra = tmp_path / "old_vectors.npy"
        self.log = tmp_path / "workers.log"
        self.seed = seed
        self.model: Model = {}
        self.replaced: dict[str, bytes] = {}  # id -> a vector it had before an update
        self.pending: dict[str, Any] | None = None
        self.step = 0
        self.checks = 0
        self.stats = {"in_flight": 0, "tmp_seen": 0, "tmp_left": 0, "closed": 0}

    def _advance(self, op: dict[str, Any]) -> None:
        if op["kind"] in ("update", "upsert") and "embeddings" in op:
            for i in op["ids"]:
                if i in self.model:
                    self.replaced[i] = self.model[i][0]
        self.model = apply_op(self.model, op)

    def start(self, close_after: int) -> None:
        self.dump.unlink(missing_ok=True)
        old = [self.replaced[i] for i in sorted(self.replaced) if i in self.model][-40:]
        np.save(self.extra, np.frombuffer(b"".join(old), np.float32).reshape(len(old), DIM))
        args = {
            "path": str(self.path),
            "seed": self.seed,
            "step": self.step,
            "dump": str(self.dump),
            "extra": str(self.extra),
            "close_after": close_after,
            "bulk": 2500,
        }
        self.proc = spawn("ingest", args, self.log)
        self.lines = Lines(self.proc, self.log)
        self.ready = False

    def on_ready(self) -> None:
        """Judge the store as the new worker found it."""
        self.ready = True
        with self.dump.open("rb") as f:
            dump = pickle.load(f)
        state = _state_of(dump)
        if self.pending is not None and state != self.model:
            op = self.pending
            after = apply_op(self.model, op)
            assert state == after, (
                f"the store is neither before nor after the call in flight "
                f"({op['kind']} of {len(op['ids'])} ids): {_diff(state, self.model)}"
            )
            self._advance(op)
        assert state == self.model, _diff(state, self.model)
        self.pending = None
        check_dump(dump)
        self.checks += 1

    def until(self, stop: Callable[[str], bool], max_acks: int = 1 << 30) -> None:
        """Read the worker's lines until ``stop(line)`` or ``max_acks`` ACKs or its end."""
        acks = 0
        while True:
            line = self.lines.poll()
            if line is None:
                return
            if line.startswith("READY"):
                self.on_ready()
            acks += line.startswith("ACK")
            if stop(line) or acks >= max_acks:
                return
            if not line:
                time.sleep(0.0003)

    def snapshotting(self) -> bool:
        return bool(_tmp_dirs(self.path, self.proc.pid))

    def finish(self, kill: bool) -> None:
        if kill:
            self.proc.kill()
        code = self.proc.wait(timeout=120)
        seen = self.lines.drain()
        if not self.ready and any(line.startswith("READY") for line in seen):
            self.on_ready()
        assert code == (-9 if kill else 0) or (kill and code == 0 and "CLOSED\n" in seen), (
            f"worker failed (exit {code}): {self.lines.stderr()}"
        )
        self.stats["tmp_left"] += self.snapshotting()
        self.stats["closed"] += "CLOSED\n" in seen
        acked, in_flight = acknowledged(seen)
        for op in acked + ([in_flight] if in_flight else []):
            self.step = max(self.step, op["step"] + 1)
        for op in acked:
            self._advance(op)
        if in_flight is not None:
            assert self.pending is None, "a new call began before the last one was judged"
            self.pending = in_flight
            self.stats["in_flight"] += 1


def test_kill_at_random_moments_loses_no_acknowledged_write(tmp_path: Path) -> None:
    """20 SIGKILLs: between and inside calls, inside snapshots, inside close(), at open."""
    rng = random.Random(20240611)
    schedule = ["calls"] * 8 + ["snapshot"] * 5 + ["close"] * 5 + ["open"] * 2
    rng.shuffle(schedule)
    h = KillHarness(tmp_path, seed=99)
    for mode in ["calls", *schedule]:  # the first run adds 2500 records in one call
        h.start(close_after=rng.randint(2, 40) if mode == "close" else -1)
        if mode == "open":
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            h.until(lambda line: line.startswith("READY"))
        if mode == "calls":
            h.until(lambda line: False, max_acks=rng.randint(1, 60))
            time.sleep(rng.uniform(0.0, 0.004))
        elif mode == "snapshot":
            h.until(lambda line: h.snapshotting(), max_acks=800)
            h.stats["tmp_seen"] += h.snapshotting()
        elif mode == "close":
            h.until(lambda line: line.startswith("CLOSING"))
            if rng.random() < 0.5:
                h.until(lambda line: h.snapshotting() or line.startswith("CLOSED"))
            else:
                time.sleep(rng.uniform(0.0, 0.005))
        h.finish(kill=True)

    h.start(close_after=0)  # a last, clean run: open, check everything, close
    h.until(lambda line: False)
    h.finish(kill=False)
    assert h.ready and h.pending is None
    print(f"kill test: {h.step} calls, {len(h.model)} records, {h.checks} checks, {h.stats}")
    # The schedule must really have hit snapshot writing, or the test proves less than it says.
    assert h.stats["tmp_seen"] >= 1, h.stats


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
    "graph truncated to half": lambda s, st: _truncate(s / GRAPH, (s / GRAPH).stat().st_size // 2),
    "graph truncated to 0": lambda s, st: _truncate(s / GRAPH, 0),
    "graph truncated to its header": lambda s, st: _truncate(s / GRAPH, 48),
    "graph bytes flipped": lambda s, st: _flip(s / GRAPH, (s / GRAPH).stat().st_size // 2, 64),
    "graph header flipped": lambda s, st: _flip(s / GRAPH, 0, 40),
    "graph deleted": lambda s, st: (s / GRAPH).unlink(),
    "labels truncated": lambda s, st: _truncate(s / LABELS, 20),
    "manifest garbage": lambda s, st: (s / "manifest.json").write_bytes(os.urandom(300)),
    "manifest empty": lambda s, st: (s / "manifest.json").write_bytes(b""),
    "manifest deleted": lambda s, st: (s / "manifest.json").unlink(),
    "manifest not an object": lambda s, st: (s / "manifest.json").write_bytes(b"[1, 2]"),
    "manifest lsn from the future": lambda s, st: _manifest(s, lsn=10**12),
    "manifest lsn zero": lambda s, st: _manifest(s, lsn=0),
    "manifest wrong count": lambda s, st: _manifest(s, count=7),
    "manifest wrong dim": lambda s, st: _manifest(s, dim=DIM + 1),
    "manifest wrong crc": lambda s, st: _manifest(s, crc={GRAPH: 1, LABELS: 2}),
    "manifest lsn a string": lambda s, st: _manifest(s, lsn="x"),
    "stale snapshot instead of the newest": lambda s, st: (
        shutil.rmtree(s),
        shutil.copytree(st, s.parent / st.name),
    ),
    "stale snapshot beside the newest": lambda s, st: shutil.copytree(st, s.parent / st.name),
    "stale snapshot beside a corrupt newest": lambda s, st: (
        shutil.copytree(st, s.parent / st.name),
        _flip(s / GRAPH, 100, 8),
    ),
    "stale snapshot renamed as the newest": lambda s, st: (
        shutil.rmtree(s),
        shutil.copytree(st, s),
    ),
    "half-written temporary snapshot left over": lambda s, st: (
        shutil.copytree(s, s.parent / ".tmp-1-1"),
        _truncate(s.parent / ".tmp-1-1" / GRAPH, 1000),
    ),
    "manifest checksum matches a truncated graph": lambda s, st: (
        _truncate(s / GRAPH, (s / GRAPH).stat().st_size - 4096),
        _manifest(s, crc={f.name: _crc_of(f) for f in (s / GRAPH, s / LABELS)}),
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


def test_the_wal_is_copied_back_behind_the_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No commit copies the WAL into the database file itself (SQLite's automatic
    checkpoint is off); once the WAL passes its line a thread does, and the WAL then
    starts over instead of growing with every write."""
    monkeypatch.setattr(storage_store, "WAL_CHECKPOINT_BYTES", 512 << 10)
    rng = np.random.default_rng(2)
    wal = tmp_path / "tintdb.sqlite3-wal"
    started = []
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        store = client._backend.store  # type: ignore[attr-defined]
        checkpoint = store.start_checkpoint
        monkeypatch.setattr(store, "start_checkpoint", lambda: started.append(1) or checkpoint())
        assert store._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        col = client.create_collection("wal", embedding_function=None)
        sizes = []
        for i in range(60):
            col.add(ids=[f"{i}-{j}" for j in range(50)], embeddings=rng.random((50, 64)))
            if store._checkpointing is not None:
                store._checkpointing.join()
            sizes.append(wal.stat().st_size)
        assert col.count() == 3000
    assert max(sizes) < 4 * (512 << 10)  # 60 writes of ~13 pages each, yet bounded
    # The WAL shrinks back when it starts over: a checkpoint every few writes, not one
    # after every write once the file has passed the line.
    assert 0 < len(started) < 30, len(started)
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        assert client.get_collection("wal").count() == 3000


def test_every_commit_is_synced_unless_asked_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FULL by default (a returned write survives a power cut); NORMAL only when
    TINTDB_SYNCHRONOUS asks for it; any other value is refused when the store opens."""
    monkeypatch.delenv("TINTDB_SYNCHRONOUS", raising=False)
    with tintdb.PersistentClient(path=str(tmp_path / "a")) as client:
        store = client._backend.store  # type: ignore[attr-defined]
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    monkeypatch.setenv("TINTDB_SYNCHRONOUS", "normal")
    with tintdb.PersistentClient(path=str(tmp_path / "b")) as client:
        store = client._backend.store  # type: ignore[attr-defined]
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        col = client.create_collection("sync", embedding_function=None)
        col.add(ids=["a"], embeddings=[[1.0, 2.0]])
    with tintdb.PersistentClient(path=str(tmp_path / "b")) as client:
        assert client.get_collection("sync").count() == 1
    monkeypatch.setenv("TINTDB_SYNCHRONOUS", "OFF")
    with pytest.raises(ValueError, match="TINTDB_SYNCHRONOUS must be FULL or NORMAL"):
        tintdb.PersistentClient(path=str(tmp_path / "c"))
