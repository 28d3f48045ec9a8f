"""The Search API, sparse vectors and fork through the official Python client, unchanged.

Run by ``tests/test_search_official.py`` with the interpreter of the client's own
virtualenv:

    python_search_workload.py http://127.0.0.1:PORT

Prints one JSON object: step name -> what the client returned (or the exception it
raised), and ``payloads``: the JSON of each search as the client built it, which the
test runs again embedded to compare.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import chromadb
from chromadb import K, Knn, Rrf, Schema, Search, SparseVector, SparseVectorIndexConfig
from chromadb.execution.expression import GroupBy, MaxK, MinK, Val

IDS = [f"r{i}" for i in range(12)]
EMBEDDINGS = [[float(i), float(i % 4), 1.0] for i in range(12)]
DOCUMENTS = [
    "error code E42 in the payment service",
    "the payment service is slow",
    "restart the cache cluster",
    "cache hit ratio dropped",
    "E42 means a timeout upstream",
    "deploy the payment fix",
    "rollback the cache change",
    "upstream timeout on login",
    "login page is blank",
    "blank page after deploy",
    "E42 again after the rollback",
    "all green",
]
# Sparse "term" vectors: dims stand for words, as a BM25 function would make them.
SPARSE = [
    ([1, 2], [1.0, 0.5]),
    ([2, 3], [0.5, 1.0]),
    ([4], [1.0]),
    ([4, 5], [0.7, 0.3]),
    ([1, 6], [1.0, 1.0]),
    ([2, 7], [0.4, 0.9]),
    ([4, 7], [0.6, 0.6]),
    ([6, 8], [1.0, 0.2]),
    ([8], [1.0]),
    ([7, 8], [0.5, 0.5]),
    ([1, 4], [0.8, 0.4]),
    None,
]


def metadata(i: int) -> dict[str, Any]:
    md: dict[str, Any] = {"team": ["pay", "infra", "web"][i % 3], "sev": i % 5}
    if SPARSE[i] is not None:
        md["terms"] = SparseVector(indices=SPARSE[i][0], values=SPARSE[i][1])
    return md


def plain(value: Any) -> Any:
    """Results as JSON: sparse vectors as {"indices", "values"}."""
    if isinstance(value, SparseVector):
        return {"indices": value.indices, "values": value.values}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def searches() -> list[Search]:
    words = SparseVector(indices=[1, 4], values=[1.0, 1.0])  # "E42", "cache"
    return [
        Search()
        .where((K("sev") >= 1) & K.DOCUMENT.contains("the"))
        .rank(Knn(query=[3.2, 1.0, 1.0], limit=6))
        .limit(4)
        .select(K.DOCUMENT, K.SCORE, "team"),
        Search().rank(Knn(query=words, key="terms", limit=5)).select(K.SCORE, K.METADATA),
        Search()
        .rank(
            Rrf(
                [
                    Knn(query=[5.0, 2.0, 1.0], limit=8, return_rank=True),
                    Knn(query=words, key="terms", limit=8, return_rank=True),
                ],
                k=10,
                weights=[1.0, 2.0],
            )
        )
        .limit(5)
        .select_all(),
        Search()
        .rank(Knn(query=[6.0, 0.0, 1.0], limit=12))
        .group_by(GroupBy(keys=K("team"), aggregate=MinK(keys=K.SCORE, k=2)))
        .select(K.SCORE, "team"),
        Search()
        .rank(Knn(query=[6.0, 0.0, 1.0], limit=12))
        .group_by(GroupBy(keys=[K("team")], aggregate=MaxK(keys=[K("sev"), K.SCORE], k=1)))
        .select(K.SCORE, "sev"),
        Search().where(K.ID.not_in(["r0", "r1"]) | K.DOCUMENT.contains("E42")).limit(3, offset=1),
        Search()
        .rank(Knn(query=[0.0, 0.0, 1.0], limit=4, default=50.0) * 0.5 + Val(1.0))
        .select(K.SCORE),
    ]


def main(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    out: dict[str, Any] = {"client_version": chromadb.__version__}

    def step(name: str, fn: Callable[[], Any]) -> None:
        try:
            out[name] = fn()
        except Exception as exc:  # every outcome is data for the test
            out[name] = {
                "error": type(exc).__name__,
                "module": type(exc).__module__,
                "message": str(exc),
            }

    client = chromadb.HttpClient(host=parts.hostname, port=parts.port)
    schema = Schema().create_index(SparseVectorIndexConfig(), key="terms")
    col = client.create_collection("hybrid", schema=schema, embedding_function=None)
    col.add(
        ids=IDS,
        embeddings=EMBEDDINGS,
        documents=DOCUMENTS,
        metadatas=[metadata(i) for i in range(12)],
    )
    batch = searches()
    out["payloads"] = [s.to_dict() for s in batch]

    def run() -> dict[str, Any]:
        result = col.search(batch)
        return {"result": plain(dict(result)), "rows": plain(result.rows())}

    step("search", run)
    step("one", lambda: plain(dict(col.search(batch[1]))))
    step("get_sparse", lambda: plain(col.get(ids=["r4"], include=["metadatas"])["metadatas"]))
    step("no_knn", lambda: col.search(Search().rank(Val(1.0))))
    step("bad_key", lambda: col.search(Search().rank(Knn(query=[1.0, 2.0, 3.0], key="team"))))
    step("read_level", lambda: col.search(Search().limit(1), read_level="index_only")["ids"])

    def fork() -> dict[str, Any]:
        forked = col.fork("hybrid_fork")
        forked.add(ids=["extra"], embeddings=[[0.0, 0.0, 0.0]])
        return {
            "name": forked.name,
            "count": forked.count(),
            "source_count": col.count(),
            "fork_count": col.fork_count(),
            "search": plain(dict(forked.search(batch[1]))),
        }

    step("fork", fork)
    step("fork_taken", lambda: col.fork("hybrid_fork"))
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
