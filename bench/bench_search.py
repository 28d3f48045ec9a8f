"""Hybrid search latency at scale, against ``query`` alone, and what ``fork`` costs.

    .venv/bin/python bench/bench_search.py            # 100,000 x 384 (a few minutes)
    .venv/bin/python bench/bench_search.py --n 20000  # a quick run

The collection: bench/_workload.py's clustered 384-d vectors, each with a document of
20-40 words drawn from a Zipf vocabulary of 5,000 words, and a BM25 sparse index filled
from the documents (ChromaBm25EmbeddingFunction, source_key #document). Each query is a
dataset query vector plus three words of the vocabulary. Timed, one call at a time:

* ``query(n_results=10)``;
* ``search`` with a dense Knn alone (limit 10);
* ``search`` with a sparse Knn alone (limit 10);
* hybrid: ``Rrf`` of a dense and a sparse Knn (limit 100 each, default 100, so records
  found by either are ranked), ``limit(10)``;
* the same hybrid search with a metadata filter (10% of the records);

then ``fork`` of the whole collection, the fork's first query, and its disk size.
Prints a markdown table; docs/benchmarks.md keeps the latest run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workload import dir_size, make_dataset

import tintdb
from tintdb import K, Knn, Rrf, Schema, Search, SparseVectorIndexConfig
from tintdb.utils.embedding_functions import ChromaBm25EmbeddingFunction

VOCAB = 5000


def documents(n: int, rng: np.random.Generator) -> list[str]:
    ranks = np.arange(1, VOCAB + 1)
    p = 1.0 / ranks
    p /= p.sum()
    lengths = rng.integers(20, 41, size=n)
    words = rng.choice(VOCAB, size=int(lengths.sum()), p=p)
    out, at = [], 0
    for length in lengths.tolist():
        out.append(" ".join(f"w{w}" for w in words[at : at + length].tolist()))
        at += length
    return out


def timed(fn: Any, runs: list[Any]) -> list[float]:
    times = []
    for args in runs:
        start = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - start) * 1000)
    return times


def stats(ms: list[float]) -> str:
    ordered = sorted(ms)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"{statistics.mean(ms):.2f} / {statistics.median(ms):.2f} / {p95:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--path", type=Path, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(42)
    ds = make_dataset(args.n, n_queries=args.queries)
    docs = documents(args.n, rng)
    query_words = [
        " ".join(f"w{w}" for w in rng.integers(20, 2000, size=3).tolist())
        for _ in range(args.queries)
    ]
    root = args.path or Path(tempfile.mkdtemp(prefix="tintdb-search-bench-"))
    rows: list[tuple[str, str]] = []
    try:
        client = tintdb.PersistentClient(str(root))
        bm25 = ChromaBm25EmbeddingFunction()
        schema = Schema().create_index(
            SparseVectorIndexConfig(embedding_function=bm25, source_key=K.DOCUMENT), key="bm25"
        )
        col = client.create_collection("bench", schema=schema, embedding_function=None)
        start = time.perf_counter()
        step = 5000
        for i in range(0, args.n, step):
            col.add(
                ids=[str(j) for j in range(i, min(i + step, args.n))],
                embeddings=ds.vectors[i : i + step],
                documents=docs[i : i + step],
                metadatas=ds.metadatas[i : i + step],
            )
        rows.append(
            (
                f"add {args.n:,} (BM25 vectors made on the way), s",
                f"{time.perf_counter() - start:.1f}",
            )
        )
        sparse_q = [bm25.embed_query([w])[0] for w in query_words]
        dense_q = [q.tolist() for q in ds.queries]
        col.query(query_embeddings=[dense_q[0]], n_results=10)  # the index in memory

        def hybrid(i: int, where: Any = None) -> Any:
            rank = Rrf(
                [
                    Knn(query=dense_q[i], limit=100, return_rank=True, default=100),
                    Knn(query=sparse_q[i], key="bm25", limit=100, return_rank=True, default=100),
                ]
            )
            return col.search(Search(where=where).rank(rank).limit(10).select(K.SCORE))

        runs = [(i,) for i in range(args.queries)]
        for label, fn in (
            (
                "query(n_results=10)",
                lambda i: col.query(query_embeddings=[dense_q[i]], n_results=10),
            ),
            (
                "search: dense Knn(limit=10)",
                lambda i: col.search(Search().rank(Knn(query=dense_q[i], limit=10))),
            ),
            (
                "search: sparse BM25 Knn(limit=10)",
                lambda i: col.search(Search().rank(Knn(query=sparse_q[i], key="bm25", limit=10))),
            ),
            ("search: hybrid Rrf(dense 100, BM25 100), limit 10", hybrid),
            (
                "search: hybrid, where category == c3 (10%)",
                lambda i: hybrid(i, {"category": "c3"}),
            ),
        ):
            fn(0)  # warm (and fill the filter cache, as a repeated filter would)
            rows.append((f"{label}, ms mean / p50 / p95", stats(timed(fn, runs))))
        overlap = []
        for i in range(min(20, args.queries)):
            d = set(col.query(query_embeddings=[dense_q[i]], n_results=10)["ids"][0])
            h = set(hybrid(i)["ids"][0])
            overlap.append(len(d & h) / 10)
        rows.append(
            ("hybrid top 10 shared with dense top 10 (mean)", f"{statistics.mean(overlap):.2f}")
        )

        before = dir_size(root)
        start = time.perf_counter()
        forked = col.fork("bench_fork")
        fork_s = time.perf_counter() - start
        start = time.perf_counter()
        forked.query(query_embeddings=[dense_q[1]], n_results=10)
        first = (time.perf_counter() - start) * 1000
        same = (
            forked.search(Search().rank(Knn(query=dense_q[1], limit=10)))["ids"]
            == col.search(Search().rank(Knn(query=dense_q[1], limit=10)))["ids"]
        )
        client.close()
        rows.append((f"fork of {args.n:,} records (SQL copy + index relabel), s", f"{fork_s:.2f}"))
        rows.append(("first query on the fork, ms", f"{first:.1f}"))
        rows.append(("fork answers as the source", str(same)))
        rows.append(
            (
                "store size before / after fork, MB",
                f"{before / 1e6:.0f} / {dir_size(root) / 1e6:.0f}",
            )
        )
    finally:
        if args.path is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"| measurement ({args.n:,} x 384, {args.queries} queries) | tintdb |")
    print("|---|---|")
    for label, value in rows:
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    main()
