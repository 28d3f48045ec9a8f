"""tintdb's server against Chroma's own server, both driven by chromadb's HttpClient.

    .venv/bin/python bench/bench_http.py                 # 20,000 x 384
    .venv/bin/python bench/bench_http.py --n 100000 --seconds 10 --clients 8

One run starts both servers on free ports of 127.0.0.1, each with a fresh temporary
directory: `tintdb run` from the project virtualenv and `chroma run` from
bench/.venv-chroma (created on first use, as bench_core.py does; chromadb never goes
into the project's virtualenv). When both answer their heartbeat, the same client code,
chromadb's Python `HttpClient` running in bench/.venv-chroma (this file with
--client), drives one server after the other:

1. `add` in batches of 1,000 (ids, embeddings, metadatas, documents); `count`.
2. The first query (alone), then 200 single queries (`n_results=10`).
3. 100 queries with `where={"category": "c3"}` (10% of the records).
4. 100 `get(where=..., limit=100)` over four filters.
5. `update` 500 records (embeddings and metadata) in one call; `delete` 500 others.
6. Throughput: `--clients` client *processes* (not threads: one Python process spends
   more time in the GIL building and parsing requests than a server takes to answer a
   query, so threads would measure the client), each with its own HttpClient, doing
   single queries back to back for `--seconds`; requests per second over all of them.

The parent makes the data (bench/_workload.py), checks counts and computes recall
against exact search. Servers are stopped by PID and the temporary directories removed
at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload as wl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHROMA_VENV = HERE / ".venv-chroma"
SERVERS = ["tintdb", "chroma"]
K = 10
BATCH = 1000
N_SINGLE = 200
N_FILTERED = 100
N_GET = 100
N_CHANGED = 500
WHERE_EQ: dict[str, Any] = {"category": "c3"}
GET_WHERES: list[dict[str, Any]] = [
    WHERE_EQ,
    {"$and": [{"year": {"$gte": 2015}}, {"category": {"$ne": "c1"}}]},
    {"score": {"$lt": 0.1}},
    {"$or": [{"category": "c7"}, {"year": {"$lte": 2001}}]},
]


# ================================================================ client side (chroma venv)


def _connect(port: int) -> Any:
    import chromadb

    return chromadb.HttpClient(host="127.0.0.1", port=port)


def _load_worker(port: int, queries: np.ndarray, start_at: float, seconds: float, out: Any) -> None:
    """One throughput client: single queries back to back from `start_at` for `seconds`."""
    col = _connect(port).get_collection("bench")
    col.query(query_embeddings=queries[:1], n_results=K)  # connection warm-up
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    lat: list[float] = []
    errors = 0
    i = os.getpid() % len(queries)
    while True:
        t = time.perf_counter()
        if time.time() >= end:
            break
        try:
            col.query(query_embeddings=queries[i : i + 1], n_results=K)
            lat.append((time.perf_counter() - t) * 1e3)
        except Exception:
            errors += 1
        i = (i + 1) % len(queries)
    out.put({"done": len(lat), "errors": errors, "lat_ms": lat})


def client_main(port: int, data: Path, out: Path, clients: int, seconds: float) -> None:
    """The whole workload against the server on `port`; results as JSON into `out`."""
    import multiprocessing as mp

    ds = wl.load(data)
    plan = json.loads((data / "plan.json").read_text())
    new_vecs = np.load(data / "new_vectors.npy")
    res: dict[str, Any] = {}
    client = _connect(port)
    col = client.create_collection("bench", metadata={"hnsw:space": "l2"})
    n, q = len(ds.ids), ds.queries

    t = time.perf_counter()
    for s in range(0, n, BATCH):
        col.add(
            ids=ds.ids[s : s + BATCH],
            embeddings=ds.vectors[s : s + BATCH],
            metadatas=ds.metadatas[s : s + BATCH],
            documents=ds.documents[s : s + BATCH],
        )
    res["add_s"] = time.perf_counter() - t
    res["count"] = col.count()

    def timed(fn: Any) -> tuple[float, Any]:
        t0 = time.perf_counter()
        r = fn()
        return (time.perf_counter() - t0) * 1e3, r

    def query(v: np.ndarray, **kw: Any) -> list[str]:
        return col.query(query_embeddings=v[None, :], n_results=K, **kw)["ids"][0]

    res["first_query_ms"], _ = timed(lambda: query(q[0]))
    lat, ids = [], []
    for v in q[:N_SINGLE]:
        ms, r = timed(lambda v=v: query(v))
        lat.append(ms)
        ids.append(r)
    res["query_ms"], res["query_ids"] = lat, ids
    lat, ids = [], []
    for v in q[:N_FILTERED]:
        ms, r = timed(lambda v=v: query(v, where=WHERE_EQ))
        lat.append(ms)
        ids.append(r)
    res["eq_ms"], res["eq_ids"] = lat, ids
    lat, ids = [], []
    for i in range(N_GET):
        w = GET_WHERES[i % len(GET_WHERES)]
        ms, r = timed(lambda w=w: col.get(where=w, limit=100)["ids"])
        lat.append(ms)
        ids.append(r)
    res["get_ms"], res["get_ids"] = lat, ids

    upd = plan["update_rows"]
    upd_meta = [{**ds.metadatas[i], "score": 1.5} for i in upd]
    res["update_ms"], _ = timed(
        lambda: col.update(ids=[ds.ids[i] for i in upd], embeddings=new_vecs, metadatas=upd_meta)
    )
    res["delete_ms"], _ = timed(lambda: col.delete(ids=[ds.ids[i] for i in plan["delete_rows"]]))
    res["count_after"] = col.count()
    res["updated_found"] = len(col.get(where={"score": {"$gt": 1.0}})["ids"])

    # Throughput. fork: the children inherit the imported chromadb and the data, and each
    # makes its own HttpClient (no connection pool is shared across processes).
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    start_at = time.time() + 3.0
    procs = [
        ctx.Process(target=_load_worker, args=(port, q, start_at, seconds, queue))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    parts = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    res["rps"] = sum(p["done"] for p in parts) / seconds
    res["rps_errors"] = sum(p["errors"] for p in parts)
    res["rps_p50_ms"] = float(np.median([x for p in parts for x in p["lat_ms"]] or [np.nan]))
    client.delete_collection("bench")  # the next round starts from an empty server
    out.write_text(json.dumps(res))


# ================================================================ parent side


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _heartbeat(port: int, proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Wait until /api/v2/heartbeat answers; seconds it took."""
    t0 = time.monotonic()
    url = f"http://127.0.0.1:{port}/api/v2/heartbeat"
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no heartbeat on port {port} after {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server by its PID (then kill it if it does not go)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def _prepare(n: int, dim: int, data: Path) -> dict[str, Any]:
    ds = wl.make_dataset(n, dim, N_SINGLE)
    wl.save(ds, data)
    rng = np.random.default_rng(11)
    rows = rng.permutation(n)
    plan = {
        "update_rows": rows[:N_CHANGED].tolist(),
        "delete_rows": rows[N_CHANGED : 2 * N_CHANGED].tolist(),
    }
    (data / "plan.json").write_text(json.dumps(plan))
    np.save(data / "new_vectors.npy", wl.extra_vectors(N_CHANGED, dim))
    cat = np.array([m["category"] for m in ds.metadatas])
    ids = np.array(ds.ids)

    def as_ids(r: list[list[int]]) -> list[list[str]]:
        return [[ds.ids[i] for i in x] for x in r]

    year = np.array([m["year"] for m in ds.metadatas])
    score = np.array([m["score"] for m in ds.metadatas])
    get_masks = [cat == "c3", (year >= 2015) & (cat != "c1"), score < 0.1]
    get_masks.append((cat == "c7") | (year <= 2001))
    return {
        "knn": as_ids(wl.exact_knn(ds.vectors, ds.queries, K)),
        "eq": as_ids(
            wl.exact_knn(ds.vectors, ds.queries[:N_FILTERED], K, np.flatnonzero(cat == "c3"))
        ),
        "get_sets": [set(ids[m].tolist()) for m in get_masks],
    }


def _summary(r: dict[str, Any], truth: dict[str, Any], n: int) -> dict[str, Any]:
    s: dict[str, Any] = {k: r[k] for k in ("add_s", "first_query_ms", "update_ms", "delete_ms")}
    s["rps"], s["rps_p50_ms"], s["rps_errors"] = r["rps"], r["rps_p50_ms"], r["rps_errors"]
    for key in ("query", "eq", "get"):
        s[f"{key}_mean_ms"] = float(np.mean(r[f"{key}_ms"]))
        s[f"{key}_p50_ms"] = float(np.median(r[f"{key}_ms"]))
    s["recall"] = wl.recall(_rows(r["query_ids"]), _rows(truth["knn"][:N_SINGLE]))
    s["eq_recall"] = wl.recall(_rows(r["eq_ids"]), _rows(truth["eq"]))
    sets = truth["get_sets"]
    s["get_ok"] = all(
        len(got) == min(100, len(sets[i % len(sets)])) and set(got) <= sets[i % len(sets)]
        for i, got in enumerate(r["get_ids"])
    )
    s["counts_ok"] = (
        r["count"] == n and r["count_after"] == n - N_CHANGED and r["updated_found"] == N_CHANGED
    )
    return s


def _best(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each timed row's best over the rounds (least time, most queries/s)."""
    out = dict(rounds[0])
    for _, key, lower, _ in ROWS:
        vals = [r[key] for r in rounds]
        out[key] = min(vals) if lower else max(vals)
    for key in ("recall", "eq_recall"):
        out[key] = float(np.mean([r[key] for r in rounds]))
    for key in ("get_ok", "counts_ok"):
        out[key] = all(r[key] for r in rounds)
    out["rps_errors"] = sum(r["rps_errors"] for r in rounds)
    return out


def _rows(ids: list[list[str]]) -> list[list[int]]:
    return [[int(x[2:]) for x in r] for r in ids]


# (label, key, lower is better, format)
ROWS: list[tuple[str, str, bool, str]] = [
    ("add {n} in batches of 1,000, s", "add_s", True, "{:.2f}"),
    ("first query, ms", "first_query_ms", True, "{:.1f}"),
    ("single query, mean ms (200)", "query_mean_ms", True, "{:.2f}"),
    ("single query, p50 ms", "query_p50_ms", True, "{:.2f}"),
    ("query where category == c3, mean ms (100)", "eq_mean_ms", True, "{:.2f}"),
    ("query where category == c3, p50 ms", "eq_p50_ms", True, "{:.2f}"),
    ("get(where, limit=100), mean ms (100)", "get_mean_ms", True, "{:.2f}"),
    ("update 500, ms", "update_ms", True, "{:.1f}"),
    ("delete 500, ms", "delete_ms", True, "{:.1f}"),
    ("queries/s, {c} client processes, {t:g} s", "rps", False, "{:.0f}"),
    ("p50 ms under that load", "rps_p50_ms", True, "{:.1f}"),
]


def _table(s: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    out = [
        "| | tintdb | chroma | ratio (> 1: tintdb better) |",
        "|---|---:|---:|---:|",
    ]
    ahead = True
    for label, key, lower, fmt in ROWS:
        a, b = s["tintdb"][key], s["chroma"][key]
        ratio = (b / a if lower else a / b) if a and b else float("nan")
        ahead = ahead and ratio > 1
        name = label.format(n=f"{args.n:,}", c=args.clients, t=args.seconds)
        out.append(f"| {name} | {fmt.format(a)} | {fmt.format(b)} | {ratio:.2f}x |")
    for label, key in (("recall@10, single", "recall"), ("recall@10, category == c3", "eq_recall")):
        a, b = s["tintdb"][key], s["chroma"][key]
        out.append(f"| {label} (check, not timed) | {a:.3f} | {b:.3f} | |")
    checks = {k: s[k]["get_ok"] and s[k]["counts_ok"] and not s[k]["rps_errors"] for k in s}
    out.append(
        "| results checked (counts, get, update, delete, no errors) | "
        + " | ".join("ok" if checks[k] else "FAILED" for k in SERVERS)
        + " | |"
    )
    out.append("")
    out.append(
        f"Target: ahead of chromadb's server on every timed row: **{'yes' if ahead else 'no'}**"
    )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="vectors (default 20000)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--clients", type=int, default=8, help="concurrent client processes")
    ap.add_argument("--seconds", type=float, default=10.0, help="throughput phase, s")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="workload rounds per server, alternating which goes first; best of each row",
    )
    ap.add_argument("--json", type=Path, help="also write the raw summary here")
    ap.add_argument("--timeout", type=float, default=3600, help="per client run, s")
    ap.add_argument("--client", type=int, help=argparse.SUPPRESS)  # port; worker mode
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client is not None:
        client_main(args.client, args.data, args.out, args.clients, args.seconds)
        return

    # SIGTERM (a timeout, a CI cancel) unwinds like Ctrl-C, so `finally` stops the servers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chroma_py = wl.ensure_venv(CHROMA_VENV, ["chromadb==1.5.9", "numpy"], "import chromadb, numpy")
    chroma_bin = CHROMA_VENV / "bin" / "chroma"
    project_py = ROOT / ".venv" / "bin" / "python"
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="tintdb-bench-http-"))
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "PYTHONUNBUFFERED": "1"}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: list[Any] = []
    try:
        print(f"making {args.n} x {args.dim} ...", file=sys.stderr, flush=True)
        truth = _prepare(args.n, args.dim, tmp / "data")
        ports = {name: _free_port() for name in SERVERS}
        cmds = {
            "tintdb": [str(project_py), "-m", "tintdb", "run", "--path", str(tmp / "db-tintdb")],
            "chroma": [str(chroma_bin), "run", "--path", str(tmp / "db-chroma")],
        }
        for name in SERVERS:
            log = open(tmp / f"{name}.log", "wb")  # noqa: SIM115 (closed in finally)
            logs.append(log)
            cmd = [*cmds[name], "--host", "127.0.0.1", "--port", str(ports[name])]
            procs[name] = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp
            )
        for name in SERVERS:
            s = _heartbeat(ports[name], procs[name], 120)
            print(f"{name} up on {ports[name]} after {s:.1f} s", file=sys.stderr, flush=True)

        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVERS}
        for r in range(args.rounds):
            for name in SERVERS if r % 2 == 0 else SERVERS[::-1]:
                print(f"round {r + 1}: driving {name} ...", file=sys.stderr, flush=True)
                out = tmp / f"{name}-{r}.json"
                cmd = [
                    str(chroma_py),
                    __file__,
                    "--client",
                    str(ports[name]),
                    "--data",
                    str(tmp / "data"),
                    "--out",
                    str(out),
                    "--clients",
                    str(args.clients),
                    "--seconds",
                    str(args.seconds),
                ]
                proc = subprocess.run(cmd, env=env, timeout=args.timeout)
                if proc.returncode != 0 or not out.exists():
                    tail = (tmp / f"{name}.log").read_text(errors="replace")[-2000:]
                    raise SystemExit(
                        f"client against {name} failed ({proc.returncode}); log:\n{tail}"
                    )
                rounds[name].append(_summary(json.loads(out.read_text()), truth, args.n))
        load_end = os.getloadavg()
    finally:
        for p in procs.values():
            _stop(p)
        for f in logs:
            f.close()
        shutil.rmtree(tmp, ignore_errors=True)

    cpu = platform.processor() or platform.machine()
    print(
        f"{started}; {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"n={args.n:,} x {args.dim}; load average (1/5/15 min) at start "
        f"{'/'.join(f'{x:.2f}' for x in load_start)}, at end "
        f"{'/'.join(f'{x:.2f}' for x in load_end)}\n"
    )
    summaries = {name: _best(rounds[name]) for name in SERVERS}
    print(_table(summaries, args))
    if args.json:
        args.json.write_text(json.dumps({"best": summaries, "rounds": rounds}, indent=1))


if __name__ == "__main__":
    main()
