"""One query on the PostgreSQL backend against the embedded store: in-process and node to node.

    .venv/bin/python bench/bench_pg_query.py --postgres DSN --n 100000
    .venv/bin/python bench/bench_pg_query.py --postgres DSN --http    # + `tintdb run` nodes
    .venv/bin/python bench/bench_pg_query.py --postgres DSN --chromadb # + chromadb embedded
    .venv/bin/python bench/bench_pg_query.py --postgres DSN --profile # where the time goes

The matrix (bench_matrix.py) loads its collections anew each run, which on PostgreSQL
takes many minutes at 100,000 records; this script loads them once (the embedded store
under --store, the PostgreSQL one in the database of --postgres, each in one add so that
PostgreSQL builds its HNSW index once) and keeps them, so that a change to the query
path can be measured again in a minute. Rows: unfiltered ``query(n_results=10)`` with the
default include and with ``["distances"]``, one vector per call, p50/p90 and recall@10
against exact search; with --http the same through chromadb's official ``HttpClient``
(bench/.venv-chroma) to ``tintdb run --path`` and ``tintdb run --postgres``; with
--chromadb the same rows on chromadb embedded (loaded once too); the
``$regex`` row matching 10% (``^theme ``) and its recall; with --profile, the parts of
one PostgreSQL query: a bare round trip, the search statement's ``EXPLAIN (ANALYZE,
BUFFERS)`` at the collection's ef_search, and the client's own CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload as wl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHROMA_PY = HERE / ".venv-chroma" / "bin" / "python"
CHROMA = "chromadb==1.5.9"
K = 10


def _pcts(ms: list[float]) -> str:
    return f"p50 {np.percentile(ms, 50):.2f} / p90 {np.percentile(ms, 90):.2f} ms"


def _recall(got: list[list[str]], truth: list[list[int]]) -> float:
    found = [[int(x[2:]) for x in ids] for ids in got]
    return wl.recall(found, truth)


def _collection(client: Any, ds: wl.Dataset) -> Any:
    """The collection ``bench``, loaded in one add unless already whole."""
    col = client.get_or_create_collection("bench", metadata={"hnsw:space": "l2"})
    if col.count() != len(ds.ids):
        client.delete_collection("bench")
        col = client.create_collection("bench", metadata={"hnsw:space": "l2"})
        t = time.perf_counter()
        col.add(ids=ds.ids, embeddings=ds.vectors, metadatas=ds.metadatas, documents=ds.documents)
        print(f"  loaded {len(ds.ids)} in {time.perf_counter() - t:.1f} s", flush=True)
    return col


def _rows(col: Any, ds: wl.Dataset, truth: dict[str, Any], calls: int) -> dict[str, str]:
    """The rows, each call timed alone, after a warm-up pass."""
    out: dict[str, str] = {}
    q = ds.queries
    for _ in range(2):  # warm-up: the collection's pages and the node's plan memory
        for v in q[:calls]:
            col.query(query_embeddings=v[None, :], n_results=K)
    for name, include in (("include default", None), ('include ["distances"]', ["distances"])):
        lat, got = [], []
        for v in q[:calls]:
            kw = {} if include is None else {"include": include}
            t = time.perf_counter()
            r = col.query(query_embeddings=v[None, :], n_results=K, **kw)
            lat.append((time.perf_counter() - t) * 1e3)
            got.append(r["ids"][0])
        out[f"query, {name}"] = (
            f"{_pcts(lat)}, recall@10 {_recall(got, truth['plain'][: len(got)]):.3f}"
        )
    lat, got = [], []
    for i in range(min(calls, 40)):
        where_document = {"$regex": f"^{wl.THEMES[i % 10]} "}
        t = time.perf_counter()
        r = col.query(query_embeddings=q[i][None, :], n_results=K, where_document=where_document)
        lat.append((time.perf_counter() - t) * 1e3)
        got.append(r["ids"][0])
    out["query, where_document $regex 10%"] = (
        f"{_pcts(lat)}, recall@10 {_recall(got, truth['regex'][: len(got)]):.3f}"
    )
    return out


def _truth(ds: wl.Dataset, calls: int) -> dict[str, Any]:
    plain = wl.exact_knn(ds.vectors, ds.queries[:calls], K)
    regex = []
    for i in range(min(calls, 40)):
        rows = np.array(
            [j for j, d in enumerate(ds.documents) if d.startswith(wl.THEMES[i % 10] + " ")]
        )
        regex.extend(wl.exact_knn(ds.vectors, ds.queries[i : i + 1], K, rows))
    return {"plain": plain, "regex": regex}


def _serve(args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "tintdb"), "run", *args, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2):
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("tintdb run did not answer")


def chroma_worker(port: int, data: Path, store: Path, calls: int) -> None:
    """Run under chromadb's interpreter: the official HttpClient against one node, or
    (port 0) chromadb itself, embedded, on a store of its own (loaded once, in batches
    of its largest)."""
    import chromadb

    ds = wl.load(data)
    truth = json.loads((data / "truth.json").read_text())
    if port:
        col = chromadb.HttpClient(host="127.0.0.1", port=port).get_collection("bench")
    else:
        client = chromadb.PersistentClient(path=str(store))
        col = client.get_or_create_collection("bench", metadata={"hnsw:space": "l2"})
        if col.count() != len(ds.ids):
            most = client.get_max_batch_size()
            for s in range(0, len(ds.ids), most):
                part = slice(s, s + most)
                col.add(
                    ids=ds.ids[part],
                    embeddings=ds.vectors[part],
                    metadatas=ds.metadatas[part],
                    documents=ds.documents[part],
                )
    print(json.dumps(_rows(col, ds, truth, calls)))


def _profile(dsn: str, ds: wl.Dataset, calls: int) -> None:
    import psycopg

    import tintdb

    with psycopg.connect(dsn, autocommit=True) as conn:
        lat = []
        for _ in range(200):
            t = time.perf_counter()
            conn.execute("SELECT 1").fetchone()
            lat.append((time.perf_counter() - t) * 1e3)
        print(f"  bare round trip (SELECT 1): {_pcts(lat)}")
        coll, dim = conn.execute(
            "SELECT coll, dimension FROM tintdb.collections WHERE name = 'bench'"
        ).fetchone()
        for ef in (40, 100):
            times: list[float] = []
            hits: list[str] = []
            for v in ds.queries[:calls]:
                with conn.transaction():
                    conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef),))
                    vec = "[" + ",".join(f"{x:.7g}" for x in v) + "]"
                    plan = conn.execute(
                        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT r.seq, r.id, "
                        "r.embedding FROM tintdb.records r WHERE r.coll = %s ORDER BY "
                        f"(r.embedding::vector({dim})) <-> (%s::vector({dim})) LIMIT 10",
                        (coll, vec),
                    ).fetchone()[0][0]
                times.append(plan["Planning Time"] + plan["Execution Time"])
                b = plan["Plan"]
                hits.append(f"{b.get('Shared Hit Blocks', 0)}/{b.get('Shared Read Blocks', 0)}")
            print(
                f"  search statement alone, ef_search {ef}: planning+execution "
                f"p50 {statistics.median(times):.2f} ms; buffers hit/read e.g. {hits[-1]}"
            )
    client = tintdb.PostgresClient(dsn)
    col = client.get_collection("bench")
    for v in ds.queries[:calls]:
        col.query(query_embeddings=v[None, :], n_results=K)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for v in ds.queries[:calls]:
        col.query(query_embeddings=v[None, :], n_results=K)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    print(
        f"  PostgresClient: {1e3 * wall / calls:.2f} ms a query wall, "
        f"{1e3 * cpu / calls:.2f} ms of this process's CPU"
    )
    client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--postgres", metavar="DSN", required=True)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--store", default=str(Path(tempfile.gettempdir()) / "tintdb-bench-pgq"))
    ap.add_argument("--http", action="store_true")
    ap.add_argument("--chromadb", action="store_true", help="the same rows on chromadb embedded")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--chroma-python", default=str(CHROMA_PY), help="chromadb's interpreter")
    ap.add_argument("--only", choices=["embedded", "postgres"], default=None)
    ap.add_argument("--http-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    data = Path(args.store) / f"data-{args.n}"
    if args.http_worker is not None:
        chroma_worker(args.http_worker, data, Path(args.store) / f"chroma-{args.n}", args.calls)
        return
    import tintdb

    if not (data / "truth.json").exists():
        ds = wl.make_dataset(args.n)
        wl.save(ds, data)
        (data / "truth.json").write_text(json.dumps(_truth(ds, args.calls)))
    ds = wl.load(data)
    truth = json.loads((data / "truth.json").read_text())
    print(f"{args.n} x {ds.vectors.shape[1]}, {args.calls} queries; load {os.getloadavg()}")
    backends: dict[str, Any] = {}
    if args.only in (None, "embedded"):
        backends["embedded"] = tintdb.PersistentClient(path=str(Path(args.store) / f"db-{args.n}"))
    if args.only in (None, "postgres"):
        backends["postgres"] = tintdb.PostgresClient(args.postgres)
    for name, client in backends.items():
        col = _collection(client, ds)
        for row, text in _rows(col, ds, truth, args.calls).items():
            print(f"in-process {name:9} {row:34} {text}")
        client.close()
    print(f"load {os.getloadavg()}")
    if (args.chromadb or args.http) and args.chroma_python == str(CHROMA_PY):
        # made on first use, as bench_matrix.py does (chromadb never goes into .venv)
        args.chroma_python = str(
            wl.ensure_venv(CHROMA_PY.parent.parent, [CHROMA, "numpy"], "import chromadb, numpy")
        )
    if args.chromadb:
        worker = ["--postgres", args.postgres, "--n", str(args.n), "--store", args.store]
        worker += ["--calls", str(args.calls), "--http-worker", "0"]
        done = subprocess.run(
            [args.chroma_python, __file__, *worker],
            capture_output=True,
            text=True,
            env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
            check=True,
        )
        for row, text in json.loads(done.stdout.strip().splitlines()[-1]).items():
            print(f"in-process chromadb  {row:34} {text}")
        print(f"load {os.getloadavg()}")
    if args.http:
        nodes = {
            "embedded": ["--path", str(Path(args.store) / f"db-{args.n}")],
            "postgres": ["--postgres", args.postgres],
        }
        for name, node_args in nodes.items():
            if args.only not in (None, name):
                continue
            proc, port = _serve(node_args)
            try:
                worker = ["--postgres", args.postgres, "--n", str(args.n), "--store", args.store]
                worker += ["--calls", str(args.calls), "--http-worker", str(port)]
                done = subprocess.run(
                    [args.chroma_python, __file__, *worker],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
                    check=True,
                )
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            for row, text in json.loads(done.stdout.strip().splitlines()[-1]).items():
                print(f"over HTTP  {name:9} {row:34} {text}")
        print(f"load {os.getloadavg()}")
    if args.profile:
        _profile(args.postgres, ds, min(args.calls, 100))


if __name__ == "__main__":
    main()
