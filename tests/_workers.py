"""Worker processes for the durability and multi-process tests.

The tests need real processes: one that can be SIGKILLed mid-write, a second process
holding its own in-memory index on the same path, and a place where a crash of the
native index loader shows up as a failed test instead of a dead pytest. Each worker is
this file run with ``sys.executable``:

    python _workers.py ingest '<json args>'   # writes until killed, acknowledging each call
    python _workers.py serve '<json args>'    # answers JSON commands read from stdin
    python _workers.py writer '<json args>'   # a bounded loop of writes, for two at once

Workers talk on stdout, one line per event, flushed at once, so that what the parent
has read is exactly what the worker had done when it died. The parent-side helpers
(``Server``, ``Model``, ``apply_op``) live here too so that both sides share one
definition of an operation.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import numpy as np

DIM = 8
COLLECTION = "durable"
TAGS = ("red", "green", "blue", "black")

# A record as the tests compare it: (float32 embedding bytes, metadata, document).
Record = tuple[bytes, Any, Any]
Model = dict[str, Record]


# ---------------------------------------------------------------- operations


def _payload(rng: np.random.Generator, step: int, ids: list[str]) -> dict[str, Any]:
    n = len(ids)
    emb = rng.random((n, DIM), dtype=np.float32)
    tags = [TAGS[int(t)] for t in rng.integers(0, len(TAGS), n)]
    return {
        "ids": ids,
        "embeddings": emb.tolist(),
        "metadatas": [
            {"step": step, "j": j, "tag": tags[j], "f": float(rng.random())} for j in range(n)
        ],
        "documents": [f"doc {ids[j]} {tags[j]} at {step}" for j in range(n)],
    }


def make_op(
    rng: np.random.Generator, step: int, existing: list[str], bulk: int = 0
) -> dict[str, Any]:
    """A random write: ids old and new, in batches of 1-40 (``bulk`` records at step 0)."""
    if step == 0 and bulk:
        return {"step": 0, "kind": "add", **_payload(rng, 0, [f"b{j}" for j in range(bulk)])}
    # Balanced so that the collection stays near its initial size: about as many
    # records are deleted as are added, per call.
    kind = str(rng.choice(["add", "upsert", "update", "delete"], p=[0.2, 0.25, 0.25, 0.3]))
    n = int(rng.integers(1, 41))
    n_old = {
        "add": 0,
        "delete": min(n, len(existing)),
    }.get(kind, int(rng.integers(0, min(n, len(existing)) + 1)))
    old = [str(x) for x in rng.choice(existing, n_old, replace=False)] if n_old else []
    if kind == "add":
        return {
            "step": step,
            "kind": kind,
            **_payload(rng, step, [f"a{step}-{j}" for j in range(n)]),
        }
    if kind == "upsert":
        ids = old + [f"u{step}-{j}" for j in range(n - n_old)]
        return {"step": step, "kind": kind, **_payload(rng, step, ids)}
    unknown = [f"z{step}-{j}" for j in range(int(rng.integers(0, 3)))]
    if kind == "delete":
        return {"step": step, "kind": kind, "ids": old + unknown}
    op = {"step": step, "kind": kind, **_payload(rng, step, old + unknown)}
    if rng.random() < 0.25:  # a metadata-only update (a new document would be re-embedded)
        del op["embeddings"], op["documents"]
    return op


def run_op(col: Any, op: dict[str, Any]) -> None:
    """Apply one operation through the public API."""
    if op["kind"] == "delete":
        if op["ids"]:
            col.delete(ids=op["ids"])
        return
    if not op["ids"]:
        return
    emb = op.get("embeddings")
    getattr(col, op["kind"])(
        ids=op["ids"],
        embeddings=None if emb is None else np.asarray(emb, dtype=np.float32),
        metadatas=op["metadatas"],
        documents=op.get("documents"),
    )


def apply_op(model: Model, op: dict[str, Any]) -> Model:
    """The state after ``op``, by the documented semantics (a new dict; model untouched)."""
    out = dict(model)
    kind = op["kind"]
    if kind == "delete":
        for i in op["ids"]:
            out.pop(i, None)
        return out
    emb, docs = op.get("embeddings"), op.get("documents")
    for j, i in enumerate(op["ids"]):
        vec = None if emb is None else np.asarray(emb[j], dtype=np.float32).tobytes()
        md, doc = op["metadatas"][j], None if docs is None else docs[j]
        if kind == "add":
            assert i not in out, f"generator bug: add of existing id {i}"
            out[i] = (vec, md, doc)  # type: ignore[assignment]
        elif i in out:  # update, or upsert of an existing id: metadata merged key by key
            old_vec, old_md, old_doc = out[i]
            merged = {**(old_md or {}), **md}
            out[i] = (old_vec if vec is None else vec, merged, old_doc if doc is None else doc)
        elif kind == "upsert":
            out[i] = (vec, md, doc)  # type: ignore[assignment]
    return out


def model_from_get(got: dict[str, Any]) -> Model:
    embs = np.asarray(got["embeddings"], dtype=np.float32).reshape(len(got["ids"]), -1)
    return {
        i: (embs[k].tobytes(), got["metadatas"][k], got["documents"][k])
        for k, i in enumerate(got["ids"])
    }


# ---------------------------------------------------------------- worker side


def _emit(*parts: object) -> None:
    sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
    sys.stdout.flush()


def _open(path: str, hnsw: dict[str, Any] | None = None) -> tuple[Any, Any]:
    import tintdb

    client = tintdb.PersistentClient(path=path)
    col = client.get_or_create_collection(
        COLLECTION, embedding_function=None, configuration={"hnsw": hnsw or {}}
    )
    return client, col


def dump_state(col: Any, probes: np.ndarray, extra: np.ndarray | None, out: str) -> None:
    """Everything the parent needs to judge the store, written atomically to ``out``."""
    got = col.get(include=["embeddings", "metadatas", "documents"])
    embs = np.asarray(got["embeddings"], dtype=np.float32).reshape(len(got["ids"]), DIM)
    state: dict[str, Any] = {"ids": got["ids"], "embeddings": embs, "probes": probes}
    state["metadatas"], state["documents"] = got["metadatas"], got["documents"]
    state["extra_queries"] = extra
    for name, queries, k in (("self", embs, 1), ("probe", probes, 10), ("extra", extra, 5)):
        if queries is None or len(queries) == 0 or not got["ids"]:
            state[name] = ([], [])
            continue
        r = col.query(query_embeddings=queries, n_results=k, include=["distances"])
        state[name] = (r["ids"], r["distances"])
    state["index_check"] = index_contents(col)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(state, f)
    os.replace(tmp, out)


def index_contents(col: Any) -> str | None:
    """None if the collection's in-memory index holds exactly the store's live records,
    each with its stored vector; otherwise what differs.

    This is the exact check of what a reopen rebuilt (snapshot links + SQLite vectors +
    log replay): self-queries alone cannot tell a wrong vector from an approximate miss.
    """
    backend = col._backend
    backend.keeper.wait_jobs()  # a first query after opening loads the index behind it
    index = backend.keeper.indexes.get(str(col.id))
    if index is None and col.count() == 0:
        return None
    if index is None:
        return "no index in memory after the queries"
    row = backend.store.collection_by_id(str(col.id))
    with backend.store.read():
        seqs, vecs = backend.store.vectors(row.coll, None, row.dimension)
    live = index.universe()
    if not np.array_equal(live, seqs):
        return f"index labels differ: {len(live)} in the index, {len(seqs)} in SQLite"
    held = np.asarray(index._full_vectors(seqs), dtype=np.float32).reshape(vecs.shape)
    wrong = seqs[~np.all(held == vecs, axis=1)]
    if len(wrong):
        return f"{len(wrong)} records hold a vector SQLite does not, seqs {wrong[:8].tolist()}"
    return None


def ingest(args: dict[str, Any]) -> None:
    """Open, dump the state, then write until killed (or close after ``close_after`` calls)."""
    client, col = _open(args["path"], args.get("hnsw"))
    extra = np.load(args["extra"]) if args.get("extra") else None
    probes = np.random.default_rng([args["seed"], args["step"], 7]).random(
        (30, DIM), dtype=np.float32
    )
    dump_state(col, probes, extra, args["dump"])
    existing = list(col.get(include=[])["ids"])
    present = set(existing)
    _emit("READY", len(existing))
    step, done = args["step"], 0
    while True:
        if 0 <= args["close_after"] <= done:
            _emit("CLOSING")
            client.close()
            _emit("CLOSED")
            return
        rng = np.random.default_rng([args["seed"], step])
        op = make_op(rng, step, existing, args.get("bulk", 0))
        _emit("OP", json.dumps(op))
        run_op(col, op)
        _emit("ACK", step)
        if op["kind"] == "delete":
            gone = set(op["ids"]) & present
            present -= gone
            existing = [i for i in existing if i not in gone]
        elif op["kind"] in ("add", "upsert"):
            fresh = [i for i in op["ids"] if i not in present]
            present.update(fresh)
            existing.extend(fresh)
        if rng.random() < 0.2:  # reads keep the index in memory, so snapshots happen
            col.query(query_embeddings=rng.random((1, DIM), dtype=np.float32), n_results=3)
        step, done = step + 1, done + 1


def writer(args: dict[str, Any]) -> None:
    """One of several concurrent writers: own ids, a few shared ones, reads in between."""
    client, col = _open(args["path"], args.get("hnsw"))
    rng = np.random.default_rng(args["seed"])
    prefix, mine = args["prefix"], []
    for step in range(args["calls"]):
        roll = rng.random()
        if roll < 0.45 or not mine:
            ids = [f"{prefix}{step}-{j}" for j in range(int(rng.integers(1, 30)))]
            op = {"step": step, "kind": "add", **_payload(rng, step, ids)}
        elif roll < 0.7:
            ids = [str(x) for x in rng.choice(mine, min(len(mine), 5), replace=False)]
            ids += [f"shared{int(x)}" for x in rng.integers(0, 10, 3)]
            op = {"step": step, "kind": "upsert", **_payload(rng, step, sorted(set(ids)))}
        else:
            ids = [str(x) for x in rng.choice(mine, min(len(mine), 8), replace=False)]
            op = {"step": step, "kind": "delete", "ids": ids}
        _emit("OP", json.dumps(op))
        run_op(col, op)
        _emit("ACK", step)
        if op["kind"] == "delete":
            gone = set(op["ids"])
            mine = [i for i in mine if i not in gone]
        else:
            known = set(mine)
            mine += [i for i in op["ids"] if i.startswith(prefix) and i not in known]
            # A vector just written (to an id only this process writes) must be this
            # process's nearest answer to itself, whatever the other process did meanwhile.
            j = max(k for k, i in enumerate(op["ids"]) if i.startswith(prefix))
            q = np.asarray(op["embeddings"][j : j + 1], dtype=np.float32)
            r = col.query(query_embeddings=q, n_results=1, include=["distances"])
            if r["ids"][0][:1] != [op["ids"][j]] or r["distances"][0][0] > 1e-6:
                _emit("BAD", json.dumps({"step": step, "want": op["ids"][j], "got": r["ids"]}))
    client.close()
    _emit("DONE")


def serve(args: dict[str, Any]) -> None:
    """Answer JSON commands on stdin, one result line each: a second live process."""
    live = dict(zip(("client", "col"), _open(args["path"], args.get("hnsw")), strict=True))
    _emit(json.dumps({"ok": True, "ready": True}))
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            result = _command(live, args, cmd)
        except Exception as exc:
            _emit(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
            continue
        _emit(json.dumps({"ok": True, "result": result}))
        if cmd["cmd"] == "exit":
            return


def _command(live: dict[str, Any], args: dict[str, Any], cmd: dict[str, Any]) -> Any:
    name, col = cmd["cmd"], live["col"]
    if name == "query":
        r = col.query(
            query_embeddings=np.asarray(cmd["embeddings"], dtype=np.float32),
            n_results=cmd.get("k", 10),
            include=["distances"],
        )
        return {"ids": r["ids"], "distances": r["distances"]}
    if name == "get":
        got = col.get(ids=cmd.get("ids"), include=["embeddings", "metadatas", "documents"])
        return {
            "ids": got["ids"],
            "embeddings": np.asarray(got["embeddings"]).tolist(),
            "metadatas": got["metadatas"],
            "documents": got["documents"],
        }
    if name == "count":
        return col.count()
    if name == "write":
        run_op(col, cmd["op"])
        return None
    if name == "close":
        live["client"].close()
        return None
    if name == "reopen":  # a new client in this process: reads the store from disk again
        live["client"].close()
        live["client"], live["col"] = _open(args["path"], args.get("hnsw"))
        return None
    if name == "exit":
        return None
    raise ValueError(f"unknown command {name!r}")


# ---------------------------------------------------------------- parent side


def spawn(
    command: str, args: dict[str, Any], log: Path, stdin: bool = False
) -> subprocess.Popen[str]:
    """Start a worker; its stderr goes to ``log`` (a pipe nobody reads could block it)."""
    with log.open("a") as err:
        return subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), command, json.dumps(args)],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            bufsize=1,
        )


class Lines:
    """A worker's stdout as a queue of lines, read by a thread so the parent never blocks."""

    def __init__(self, proc: subprocess.Popen[str], log: Path) -> None:
        self.proc = proc
        self.log = log
        self.queue: Queue[str | None] = Queue()
        self.seen: list[str] = []
        self.eof = False
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:  # closed at the end of output, once the worker has exited
            for line in self.proc.stdout:
                self.queue.put(line)
        self.queue.put(None)

    def next(self, timeout: float = 60.0) -> str | None:
        """The next complete line, or None at end of output."""
        if self.eof:
            return None
        return self._take(self.queue.get(timeout=timeout))

    def poll(self) -> str | None:
        """Like ``next`` without waiting: "" when no line is ready yet."""
        if self.eof:
            return None
        try:
            return self._take(self.queue.get_nowait())
        except Empty:
            return ""

    def _take(self, line: str | None) -> str | None:
        if line is None:
            self.eof = True
        else:
            self.seen.append(line)
        return line

    def drain(self) -> list[str]:
        """Wait for the end of output; every line read so far (complete ones only)."""
        while self.next() is not None:
            pass
        self._thread.join(timeout=60)
        return [line for line in self.seen if line.endswith("\n")]

    def stderr(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""


def acknowledged(lines: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(ops whose call returned, the op in flight when the worker died or None)."""
    started: dict[int, dict[str, Any]] = {}
    acked: list[dict[str, Any]] = []
    for line in lines:
        if line.startswith("OP "):
            op = json.loads(line[3:])
            started[op["step"]] = op
        elif line.startswith("ACK "):
            acked.append(started.pop(int(line.split()[1])))
    assert len(started) <= 1, "at most one call can be in flight"
    return acked, next(iter(started.values()), None)


def check_answers(
    name: str,
    queries: np.ndarray,
    answer: tuple[list[list[str]], list[list[float]]],
    state: Model,
    k: int,
    min_recall: float,
) -> None:
    """Every answer is a live record at its true distance; top-k close to brute force.

    A returned distance that differs from the distance to the stored vector means the
    index holds a vector the database no longer has (a stale or lost update).
    """
    ids, dists = answer
    if not state or len(queries) == 0:
        return
    order = sorted(state)
    names = np.array(order)
    vecs = np.stack([np.frombuffer(state[i][0], dtype=np.float32) for i in order])
    pos = {i: n for n, i in enumerate(order)}
    hits = total = 0
    assert len(ids) == len(queries), f"{name}: {len(ids)} answers to {len(queries)} queries"
    for q, row_ids, row_d in zip(queries, ids, dists, strict=True):
        assert len(row_ids) == min(k, len(vecs)), f"{name}: {len(row_ids)} results, not {k}"
        assert len(set(row_ids)) == len(row_ids), f"{name}: an id returned twice: {row_ids}"
        true = ((vecs - q[None, :]) ** 2).sum(1)
        for i, d in zip(row_ids, row_d, strict=True):
            assert i in pos, f"{name}: query returned {i!r}, which is not in the store"
            t = float(true[pos[i]])
            assert abs(d - t) <= 1e-5 + 1e-4 * t, (
                f"{name}: {i!r} returned at distance {d:.6f}, but its stored vector is at "
                f"{t:.6f}: the index holds a vector the database does not"
            )
        best = set(names[np.argsort(true)[: len(row_ids)]].tolist())
        hits += len(best & set(row_ids))
        total += len(row_ids)
    assert hits >= min_recall * total, f"{name}: recall {hits / total:.3f}"


class Server:
    """The parent's handle on a ``serve`` worker: a second process on the same store."""

    def __init__(self, path: Path, log: Path, hnsw: dict[str, Any] | None = None) -> None:
        self.proc = spawn("serve", {"path": str(path), "hnsw": hnsw or {}}, log, stdin=True)
        self.lines = Lines(self.proc, log)
        self._read()

    def _read(self) -> Any:
        line = self.lines.next()
        if line is None:
            code = self.proc.wait(timeout=60)
            raise AssertionError(f"worker died (exit {code}): {self.lines.stderr()}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise AssertionError(f"worker error: {reply['error']}")
        return reply.get("result")

    def call(self, cmd: str, **kw: Any) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kw}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def query(self, embeddings: np.ndarray, k: int = 10) -> dict[str, Any]:
        return self.call("query", embeddings=np.asarray(embeddings).tolist(), k=k)  # type: ignore[no-any-return]

    def exit(self) -> int:
        self.call("exit")
        code = self.proc.wait(timeout=60)
        self._close_stdin()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)
        self._close_stdin()

    def _close_stdin(self) -> None:
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()


if __name__ == "__main__":
    {"ingest": ingest, "serve": serve, "writer": writer}[sys.argv[1]](json.loads(sys.argv[2]))
