"""Single queries on one thread while another thread writes: a bulk load, or a snapshot.

Run by hand: ``.venv/bin/python bench/bench_ingest_queries.py [--n 60000]
[--during load|snapshot]``. ``load`` (the default): a store of a third of ``n`` records
of the matrix's data, then one thread adds the rest in calls of 1,000 while the main
thread queries one vector at a time (``include=[]``, ``n_results=10``) until the adds
return. ``snapshot``: all ``n`` records, the graph waited for, then one thread writes
the index's snapshot (as the keeper does every half of the collection's size in
changes, and at close) while the main thread queries until it is written. Prints how
many queries were answered, their p50 / p90 / p99 and the slowest, and how long the
writes took.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import _workload as wl
import numpy as np

import tintdb


def _query_until(col: Any, queries: np.ndarray, done: threading.Event) -> np.ndarray:
    """Latencies (ms) of single queries asked one after another until ``done``."""
    lat = []
    i = 0
    while not done.is_set():
        q = queries[i % len(queries) : i % len(queries) + 1]
        i += 1
        a = time.perf_counter()
        col.query(query_embeddings=q, n_results=10, include=[])
        lat.append((time.perf_counter() - a) * 1e3)
    return np.array(lat)


def _beside(work: Callable[[], None], col: Any, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """Run ``work`` on a thread of its own, querying meanwhile: (latencies, its seconds)."""
    done = threading.Event()

    def run() -> None:
        try:
            work()
        finally:
            done.set()

    thread = threading.Thread(target=run)
    t0 = time.perf_counter()
    thread.start()
    ms = _query_until(col, queries, done)
    thread.join()
    return ms, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=60_000)
    ap.add_argument("--during", choices=["load", "snapshot"], default="load")
    args = ap.parse_args()
    n = args.n
    start = n // 3 if args.during == "load" else n
    ds = wl.make_dataset(n)
    with tempfile.TemporaryDirectory() as path, tintdb.PersistentClient(path=path) as client:
        backend: Any = client._backend
        col = client.create_collection("ingest", embedding_function=None)
        for s in range(0, start, 1000):
            col.add(
                ids=ds.ids[s : min(s + 1000, start)],
                embeddings=ds.vectors[s : min(s + 1000, start)],
            )
        backend.keeper.wait_jobs()
        col.query(query_embeddings=ds.queries[:1], n_results=10, include=[])
        if args.during == "load":

            def work() -> None:
                for s in range(start, n, 1000):
                    col.add(ids=ds.ids[s : s + 1000], embeddings=ds.vectors[s : s + 1000])

        else:
            # One change since the last snapshot, so that a forced one is written.
            col.update(ids=ds.ids[:1], embeddings=ds.vectors[1:2])
            backend.keeper.wait_jobs()

            def work() -> None:
                with backend.store.lock:
                    backend.keeper.snapshot(str(col.id), force=True)

        t0 = time.perf_counter()
        ms, took = _beside(work, col, ds.queries)
        backend.keeper.wait_jobs()
        settled = time.perf_counter() - t0
    what = "the adds" if args.during == "load" else "the snapshot"
    after = f", the graph held everything after {settled:.1f} s" if args.during == "load" else ""
    print(
        f"{len(ms)} queries during {what}: p50 {np.percentile(ms, 50):.2f}, "
        f"p90 {np.percentile(ms, 90):.2f}, p99 {np.percentile(ms, 99):.2f}, "
        f"slowest {ms.max():.1f} ms; {what} took {took:.2f} s{after}"
    )


if __name__ == "__main__":
    main()
