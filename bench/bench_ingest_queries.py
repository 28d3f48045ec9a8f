"""Single queries on one thread while another thread bulk-loads the same collection.

Run by hand: ``.venv/bin/python bench/bench_ingest_queries.py [--n 60000]``. A store of
a third of ``n`` records of the matrix's data, then one thread adds the rest in calls
of 1,000 while the main thread queries one vector at a time (``include=[]``,
``n_results=10``) until the adds return. Prints how many queries were answered, their
p50 / p90 / p99, how long the adds took and when the graph held everything.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

import _workload as wl
import numpy as np

import tintdb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=60_000)
    args = ap.parse_args()
    n, start = args.n, args.n // 3
    ds = wl.make_dataset(n)
    with tempfile.TemporaryDirectory() as path, tintdb.PersistentClient(path=path) as client:
        col = client.create_collection("ingest", embedding_function=None)
        col.add(ids=ds.ids[:start], embeddings=ds.vectors[:start])
        client._backend.keeper.wait_jobs()
        done = threading.Event()

        def writer() -> None:
            for s in range(start, n, 1000):
                col.add(ids=ds.ids[s : s + 1000], embeddings=ds.vectors[s : s + 1000])
            done.set()

        thread = threading.Thread(target=writer)
        t0 = time.perf_counter()
        thread.start()
        lat = []
        i = 0
        while not done.is_set():
            q = ds.queries[i % len(ds.queries) : i % len(ds.queries) + 1]
            i += 1
            a = time.perf_counter()
            col.query(query_embeddings=q, n_results=10, include=[])
            lat.append((time.perf_counter() - a) * 1e3)
        thread.join()
        adds = time.perf_counter() - t0
        client._backend.keeper.wait_jobs()
        settled = time.perf_counter() - t0
    ms = np.array(lat)
    print(
        f"{len(ms)} queries during the load: p50 {np.percentile(ms, 50):.2f}, "
        f"p90 {np.percentile(ms, 90):.2f}, p99 {np.percentile(ms, 99):.2f} ms; "
        f"the adds {adds:.1f} s, the graph held everything after {settled:.1f} s"
    )


if __name__ == "__main__":
    main()
