"""The first queries after a load against the ones after them, tintdb alone, in-process.

    .venv/bin/python bench/bench_first_queries.py --n 100000 --pause 0
    .venv/bin/python bench/bench_first_queries.py --n 100000 --pause 10
    .venv/bin/python bench/bench_first_queries.py --probe     # the machine alone

Loads ``--n`` records (metadata and documents, as the matrix's load) in batches of
1,000 into a fresh store, waits for the index to hold them (``wait_jobs``), pauses
``--pause`` seconds, then asks ``--queries`` single queries (``include=[]``) and prints
the p50 and p99 of each block of ``--block``. ``--probe`` times a fixed pure-Python
loop after an idle pause instead: how fast the machine itself runs the same work.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload as wl

import tintdb


def _probe() -> None:
    def unit() -> float:
        t, x = time.perf_counter(), 0
        for i in range(200_000):
            x += i
        return (time.perf_counter() - t) * 1e3

    time.sleep(15)
    times = [unit() for _ in range(15)]
    print("a fixed loop after 15 s idle, ms:", " ".join(f"{t:.1f}" for t in times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--pause", type=float, default=0.0, help="s between load and queries")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--block", type=int, default=200)
    ap.add_argument("--probe", action="store_true")
    args = ap.parse_args()
    if args.probe:
        _probe()
        return
    ds = wl.make_dataset(args.n)
    with tempfile.TemporaryDirectory() as path, tintdb.PersistentClient(path=path) as client:
        col = client.create_collection("first", embedding_function=None)
        t = time.perf_counter()
        for s in range(0, args.n, 1000):
            col.add(
                ids=ds.ids[s : s + 1000],
                embeddings=ds.vectors[s : s + 1000],
                metadatas=ds.metadatas[s : s + 1000],
                documents=ds.documents[s : s + 1000],
            )
        client._backend.keeper.wait_jobs()
        print(f"{args.n} x {ds.vectors.shape[1]} loaded in {time.perf_counter() - t:.1f} s")
        time.sleep(args.pause)
        lat = []
        for i in range(args.queries):
            v = ds.queries[i % len(ds.queries)][None, :]
            t = time.perf_counter()
            col.query(query_embeddings=v, n_results=10, include=[])
            lat.append((time.perf_counter() - t) * 1e3)
    print(f"after a pause of {args.pause:g} s, single queries include=[], ms:")
    for b in range(0, len(lat), args.block):
        part = lat[b : b + args.block]
        print(
            f"  queries {b:>5}-{b + len(part) - 1:<5} "
            f"p50 {np.percentile(part, 50):.3f}  p99 {np.percentile(part, 99):.3f}"
        )


if __name__ == "__main__":
    main()
