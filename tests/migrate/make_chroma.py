"""Build a Chroma persistent directory with chromadb 1.5.9 for the migration tests.

Run by tests/test_chroma_migration.py with the interpreter of .venv-chromadb:

    python make_chroma.py DIRECTORY ANSWERS.json

It writes collections in all three distance spaces, in two tenants, with list metadata,
uris, records without documents, updates and deletes both before and after Chroma
persists its index (so that some vectors live in the index files and some only in
Chroma's log), then runs queries and writes their answers (ids in order) and every
record as chromadb returns it to ANSWERS.json, for the tests to compare with tintdb.
"""

from __future__ import annotations

import base64
import json
import sys

import chromadb
import numpy as np
from chromadb.config import Settings

DIM = 16
N = 1500  # past sync_threshold (1,000): the index is persisted once, then a log tail


def records(rng: np.random.Generator, start: int, n: int) -> dict:
    ids = [f"r{i}" for i in range(start, start + n)]
    metadatas = []
    for i in range(start, start + n):
        md: dict = {"i": i, "even": i % 2 == 0, "score": i / 8, "group": f"g{i % 5}"}
        if i % 3 == 0:
            md["tags"] = ["red", "blue"] if i % 2 else ["green"]
        if i % 11 == 0:
            md["nums"] = [i, i + 1, i + 2]
        metadatas.append(md if i % 13 else None)
    return {
        "ids": ids,
        "embeddings": rng.normal(size=(n, DIM)).astype(np.float32),
        "metadatas": metadatas,
        "documents": [
            f"document {i} about {'cats' if i % 4 else 'dogs'}" if i % 7 else None
            for i in range(start, start + n)
        ],
        "uris": [f"s3://bucket/{i}.txt" if i % 5 == 0 else None for i in range(start, start + n)],
    }


def fill(col, rng: np.random.Generator) -> None:
    col.add(**records(rng, 0, N))
    # After the persist at 1,000: changes that stay in Chroma's log.
    col.delete(ids=["r3", "r1400"])
    col.update(
        ids=["r4"],
        embeddings=rng.normal(size=(1, DIM)).astype(np.float32),
        metadatas=[{"changed": True}],
    )
    col.update(ids=["r5"], metadatas=[{"only_metadata": "yes"}])
    col.upsert(
        ids=["r6", "new-1"],
        embeddings=rng.normal(size=(2, DIM)).astype(np.float32),
        documents=["upserted six", None],
        metadatas=[{"up": 1}, None],
    )


def main() -> None:
    path, answers_path = sys.argv[1], sys.argv[2]
    settings = Settings(anonymized_telemetry=False, allow_reset=True)
    client = chromadb.PersistentClient(path=path, settings=settings)
    rng = np.random.default_rng(17)
    # A search beam as wide as the collection: Chroma's answers are then exact, not the
    # approximation of a graph its threads build in a different order on every run, so
    # the answers the migrated store must repeat are the same on every run.
    made = [
        client.create_collection(
            "space-l2",
            metadata={"hnsw:space": "l2", "hnsw:search_ef": N, "owner": "ops"},
            embedding_function=None,
        ),
        client.create_collection(
            "space-ip",
            configuration={"hnsw": {"space": "ip", "ef_search": N}},
            embedding_function=None,
        ),
        # The default embedding function is stored with it (nothing is downloaded: every
        # record comes with its embedding).
        client.create_collection(
            "space-cosine", metadata={"hnsw:space": "cosine", "hnsw:search_ef": N, "v": 2}
        ),
        client.create_collection("empty-one", embedding_function=None),
    ]
    for col in made[:3]:
        fill(col, rng)
    admin = chromadb.AdminClient(settings)
    admin.create_tenant("acme")
    admin.create_database("prod", tenant="acme")
    other = chromadb.PersistentClient(path=path, settings=settings, tenant="acme", database="prod")
    small = other.create_collection(
        "acme-notes", metadata={"hnsw:space": "cosine"}, embedding_function=None
    )
    small.add(
        ids=["a", "b", "c"],
        embeddings=rng.normal(size=(3, DIM)).astype(np.float32),
        documents=["x", None, "z"],
        uris=[None, "u", None],
    )

    queries = rng.normal(size=(5, DIM)).astype(np.float32)
    answers: dict = {"queries": queries.tolist(), "collections": {}}
    for c in (client, other):
        for col in c.list_collections():
            key = f"{col.tenant}/{col.database}/{col.name}"
            got = col.get(include=["embeddings", "documents", "uris", "metadatas"])
            entry = {
                "count": col.count(),
                "configuration": col.configuration_json,
                "metadata": col.metadata,
                "records": {
                    rid: {
                        "embedding": base64.b64encode(
                            np.asarray(e, dtype=np.float32).tobytes()
                        ).decode(),
                        "document": d,
                        "uri": u,
                        "metadata": m,
                    }
                    for rid, e, d, u, m in zip(
                        got["ids"],
                        got["embeddings"],
                        got["documents"],
                        got["uris"],
                        got["metadatas"],
                        strict=True,
                    )
                },
            }
            if col.count():
                k = min(10, col.count())
                plain = col.query(query_embeddings=queries, n_results=k, include=[])
                filtered = col.query(
                    query_embeddings=queries,
                    n_results=k,
                    where={"group": {"$in": ["g1", "g2"]}},
                    include=[],
                )
                entry["query"] = plain["ids"]
                entry["query_filtered"] = filtered["ids"]
            answers["collections"][key] = entry
    with open(answers_path, "w") as f:
        json.dump(answers, f)


if __name__ == "__main__":
    main()
