"""A tour of tintdb on the embedded persistent store: `make demo`.

Creates a store under ./demo-data, adds a few documents (embedded by the default
all-MiniLM-L6-v2 model, offline), queries them by meaning and with filters, then
reopens the store to show that everything, the embedding function included, persisted.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import tintdb

PATH = Path(__file__).resolve().parent.parent / "demo-data"

DOCS = [
    ("moon", "The Moon orbits the Earth every 27 days.", {"topic": "space", "year": 2019}),
    ("mars", "Mars has the largest volcano in the solar system.", {"topic": "space", "year": 2021}),
    (
        "bread",
        "Sourdough bread rises with wild yeast and bacteria.",
        {"topic": "food", "year": 2020},
    ),
    ("pasta", "Fresh pasta needs only flour and eggs.", {"topic": "food", "year": 2023}),
    ("python", "Python lists grow by over-allocating memory.", {"topic": "code", "year": 2022}),
    (
        "sqlite",
        "SQLite writes every transaction to a write-ahead log.",
        {"topic": "code", "year": 2024},
    ),
]


def show(title: str, result: tintdb.QueryResult) -> None:
    print(f"\n{title}")
    rows = zip(result["ids"][0], result["distances"][0], result["documents"][0], strict=True)
    for rid, dist, doc in rows:
        print(f"  {dist:6.3f}  {rid:<7} {doc}")


def main() -> None:
    shutil.rmtree(PATH, ignore_errors=True)
    with tintdb.PersistentClient(path=str(PATH)) as client:
        notes = client.create_collection("notes", metadata={"hnsw:space": "cosine"})
        started = time.perf_counter()
        notes.add(
            ids=[d[0] for d in DOCS],
            documents=[d[1] for d in DOCS],
            metadatas=[d[2] for d in DOCS],
        )
        print(f"added {notes.count()} documents in {time.perf_counter() - started:.2f}s")
        show(
            "query: 'planets and astronomy'",
            notes.query(query_texts=["planets and astronomy"], n_results=3),
        )
        show(
            "query: 'cooking', where year >= 2021",
            notes.query(query_texts=["cooking"], n_results=2, where={"year": {"$gte": 2021}}),
        )
        got = notes.get(where_document={"$contains": "log"})
        print(f"\nget where_document $contains 'log': {got['ids']}")
        notes.update(ids=["pasta"], metadatas=[{"year": 2025}])
        print(f"deleted: {notes.delete(where={'topic': 'code'})}")

    with tintdb.PersistentClient(path=str(PATH)) as client:
        notes = client.get_collection("notes")
        ef_name = notes.embedding_function.name()
        print(f"\nreopened: {notes.count()} records, embedding function: {ef_name}")
        show("query after reopen: 'baking'", notes.query(query_texts=["baking"], n_results=2))
    print(f"\nthe store lives in {PATH}")


if __name__ == "__main__":
    main()
