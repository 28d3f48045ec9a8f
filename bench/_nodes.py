"""Throughput of several `tintdb run --postgres` nodes on one PostgreSQL (bench_matrix.py
--nodes 1,2,4): 8 client processes, each bound to one node (round robin), run queries
for a while, then adds; the table gives calls per second for each node count.

Everything runs on this machine: PostgreSQL, the nodes and the clients share its cores,
so past the point where the cores are busy more nodes cannot add throughput (the table
gives the load average of each phase to say whether that point was reached). It also
gives the CPU time each call costs in the nodes and in PostgreSQL: a node's ceiling is
one core over its share, PostgreSQL's its cores over its own, which says how far nodes
on machines of their own would scale before PostgreSQL is the limit.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 8
_URL = re.compile(r"http://127\.0\.0\.1:(\d+)")


def _start_node(dsn: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tintdb", "run", "--postgres", dsn, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        found = _URL.search(line)
        if found:
            return proc, int(found.group(1))
    raise RuntimeError(f"tintdb run --postgres exited with {proc.wait()}")


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes and their children so far (children
    that exited meanwhile are not counted)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            continue
    return total


def _postmaster(dsn: str) -> list[int]:
    """The PostgreSQL server's pid when it runs on this machine (its backends are its
    children), else nothing."""
    import psycopg

    try:
        with psycopg.connect(dsn) as conn:
            data = conn.execute("SHOW data_directory").fetchone()[0]
        return [int((Path(data) / "postmaster.pid").read_text().split()[0])]
    except (OSError, ValueError, psycopg.Error):
        return []


def _client_loop(args: tuple[int, str, str, float, int, int, int]) -> int:
    """One client process: calls of ``kind`` against its node until ``seconds`` pass."""
    port, kind, name, seconds, dim, seed, batch = args
    import tintdb

    client = tintdb.HttpClient(host="127.0.0.1", port=port)
    col = client.get_collection(name, embedding_function=None)
    rng = np.random.default_rng(seed)
    calls = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if kind == "query":
            col.query(
                query_embeddings=rng.standard_normal((1, dim)).astype(np.float32), n_results=10
            )
        else:
            ids = [f"n{seed}-{calls}-{j}" for j in range(batch)]
            col.add(ids=ids, embeddings=rng.standard_normal((batch, dim)).astype(np.float32))
        calls += 1
    return calls


def throughput(dsn: str, args: Any, counts: list[int], tmp: Path, seconds: float = 15.0) -> str:
    import tintdb

    n, dim = args.n, args.dim
    client = tintdb.PostgresClient(dsn, settings=tintdb.Settings(allow_reset=True))
    client.reset()
    col = client.create_collection("nodes", embedding_function=None)
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for s in range(0, n, 1000):
        m = min(1000, n - s)
        col.add(
            ids=[str(i) for i in range(s, s + m)],
            embeddings=rng.standard_normal((m, dim)).astype(np.float32),
            metadatas=[{"i": i} for i in range(s, s + m)],
        )
    load_s = time.perf_counter() - t0
    client.close()
    rows = []
    base: dict[str, float] = {}
    postmaster = _postmaster(dsn)
    ctx = multiprocessing.get_context("spawn")
    for count in counts:
        nodes = [_start_node(dsn) for _ in range(count)]
        try:
            out: dict[str, Any] = {}
            for kind, batch in (("query", 0), ("add", 10)):
                work = [
                    (nodes[i % count][1], kind, "nodes", seconds, dim, 1000 * count + i, batch)
                    for i in range(CLIENTS)
                ]
                before = os.getloadavg()[0]
                with ctx.Pool(CLIENTS) as pool:
                    cpu_node = _cpu_seconds([proc.pid for proc, _ in nodes])
                    cpu_pg = _cpu_seconds(postmaster)
                    t = time.perf_counter()
                    calls = sum(pool.map(_client_loop, work))
                    took = time.perf_counter() - t
                    cpu_node = _cpu_seconds([proc.pid for proc, _ in nodes]) - cpu_node
                    cpu_pg = _cpu_seconds(postmaster) - cpu_pg
                out[kind] = calls / took
                out[kind + "_cpu"] = (1e3 * cpu_node / calls, 1e3 * cpu_pg / calls)
                out[kind + "_load"] = (before, os.getloadavg()[0])
                base.setdefault(kind, out[kind])
            rows.append(
                f"| {count} | {out['query']:.0f} | {out['query'] / base['query']:.2f} | "
                f"{out['add']:.0f} ({out['add'] * 10:.0f} records) | "
                f"{out['add'] / base['add']:.2f} | "
                f"{out['query_cpu'][0]:.1f} / {out['query_cpu'][1]:.1f} | "
                f"{out['add_cpu'][0]:.1f} / {out['add_cpu'][1]:.1f} | "
                f"{out['query_load'][0]:.1f}→{out['query_load'][1]:.1f}, "
                f"{out['add_load'][0]:.1f}→{out['add_load'][1]:.1f} |"
            )
        finally:
            for proc, _ in nodes:
                proc.terminate()
                proc.wait(30)
    head = (
        f"## Nodes on one PostgreSQL: {n:,} x {dim}, {CLIENTS} client processes, "
        f"{seconds:g} s a phase\n"
        f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} cores shared by PostgreSQL, "
        f"the nodes and the clients; load of {n:,} records took {load_s:.1f} s\n\n"
        "| nodes | queries/s (n_results 10) | vs 1 node | adds/s (10 records a call) | "
        "vs 1 node | CPU ms a query: nodes / PostgreSQL | CPU ms an add: nodes / PostgreSQL | "
        "load avg (query, add phase) |\n|---|---|---|---|---|---|---|---|"
    )
    return head + "\n" + "\n".join(rows)
