"""Does hybrid search (dense + BM25, RRF) find what dense search alone misses, on
queries that hinge on a keyword? recall@10 against a labelled set, default model.

    .venv/bin/python bench/hybrid_quality.py        # about a minute on 2 cores

The labelled set, built here (seeded, so every run is the same):

* 60 incident codes (``E4012``, ``ZX9431``...), each the subject of 5 support tickets
  written from 10 templates ("Checkout fails with error E4012 after ...", "Customer
  reports E4012 on ...", with a product name and an action filled in): 300 relevant
  documents, 5 per code;
* 700 distractor tickets from the same templates and vocabulary without a code, so a
  ticket about *some* checkout error is always close in meaning to the query;
* one query per code, phrased as a user would ask ("how do I fix E4012 on checkout").

A ticket is relevant to a query exactly when it mentions the query's code. recall@10 is
the share of a code's 5 tickets found in the top 10, averaged over the 60 queries; the
dense model (all-MiniLM-L6-v2) sees codes only as sub-word pieces, BM25 as exact terms.
Compared: dense Knn alone, BM25 Knn alone, and ``Rrf`` of both (limit 100 each, default
100: a ticket found by either list is ranked).
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import time
from typing import Any

import tintdb
from tintdb import K, Knn, Rrf, Schema, Search, SparseVectorIndexConfig
from tintdb.utils.embedding_functions import ChromaBm25EmbeddingFunction

CODES = 60
PER_CODE = 5
DISTRACTORS = 700
PRODUCTS = ["the mobile app", "the web shop", "the kiosk", "the partner API", "the desktop client"]
ACTIONS = [
    "paying by card",
    "logging in",
    "exporting a report",
    "uploading a photo",
    "changing the password",
    "opening an invoice",
]
TEMPLATES = [
    "Checkout fails with error {code} after {action} in {product}",
    "Customer reports {code} on {product} while {action}",
    "{code} appears every time I try {action} on {product}",
    "Support ticket: {product} shows {code} when {action}",
    "After the update, {action} in {product} returns {code}",
    "Intermittent {code} in {product}, mostly when {action}",
    "Users cannot finish {action}: {product} answers {code}",
    "Escalation: {code} keeps coming back in {product} during {action}",
    "Seen {code} twice today on {product} ({action})",
    "{product} crashed with {code} right after {action}",
]
QUESTIONS = [
    "how do I fix {code} when {action}",
    "what does error {code} mean",
    "{code} problem in {product}",
]


def corpus(
    rng: random.Random,
) -> tuple[list[str], list[str], list[dict[str, Any]], list[str], list[set[str]]]:
    codes = set()
    while len(codes) < CODES:
        prefix = rng.choice(["E", "ZX", "KQ", "ERR"])
        codes.add(f"{prefix}{rng.randint(1000, 9999)}")
    ids, docs, metas, queries, relevant = [], [], [], [], []
    for code in sorted(codes):
        mine = set()
        for j in range(PER_CODE):
            text = rng.choice(TEMPLATES).format(
                code=code, action=rng.choice(ACTIONS), product=rng.choice(PRODUCTS)
            )
            ids.append(f"{code}-{j}")
            docs.append(text)
            metas.append({"kind": "coded"})
            mine.add(ids[-1])
        queries.append(
            rng.choice(QUESTIONS).format(
                code=code, action=rng.choice(ACTIONS), product=rng.choice(PRODUCTS)
            )
        )
        relevant.append(mine)
    for j in range(DISTRACTORS):
        text = rng.choice(TEMPLATES).format(
            code="an error", action=rng.choice(ACTIONS), product=rng.choice(PRODUCTS)
        )
        ids.append(f"other-{j}")
        docs.append(text)
        metas.append({"kind": "other"})
    return ids, docs, metas, queries, relevant


def main() -> None:
    ids, docs, metas, queries, relevant = corpus(random.Random(2024))
    root = tempfile.mkdtemp(prefix="tintdb-hybrid-quality-")
    try:
        client = tintdb.PersistentClient(root)
        schema = Schema().create_index(
            SparseVectorIndexConfig(
                embedding_function=ChromaBm25EmbeddingFunction(), source_key=K.DOCUMENT, bm25=True
            ),
            key="bm25",
        )
        col = client.create_collection("tickets", schema=schema)  # dense: the default model
        start = time.perf_counter()
        col.add(ids=ids, documents=docs, metadatas=metas)
        added = time.perf_counter() - start

        def dense(q: str) -> Any:
            return Knn(query=q, limit=100, return_rank=True, default=100)

        def words(q: str) -> Any:
            return Knn(query=q, key="bm25", limit=100, return_rank=True, default=100)

        ways = {
            "dense only (all-MiniLM-L6-v2)": lambda q: dense(q),
            "BM25 only": lambda q: words(q),
            "hybrid: Rrf(dense, BM25)": lambda q: Rrf([dense(q), words(q)]),
        }
        print(
            f"{len(docs)} tickets ({CODES * PER_CODE} about {CODES} codes, {DISTRACTORS} "
            f"without a code), {len(queries)} queries; embedded in {added:.1f} s"
        )
        print("| ranking | recall@10 | queries with all 5 found | with none found |")
        print("|---|---|---|---|")
        for label, rank in ways.items():
            recalls = []
            for q, rel in zip(queries, relevant, strict=True):
                found = col.search(Search().rank(rank(q)).limit(10))["ids"][0]
                recalls.append(len(rel & set(found)) / len(rel))
            full = sum(r == 1.0 for r in recalls)
            none = sum(r == 0.0 for r in recalls)
            print(f"| {label} | {statistics.mean(recalls):.3f} | {full} | {none} |")
        client.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
