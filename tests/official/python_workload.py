"""Drive a tintdb server with the official Python client (PyPI ``chromadb-client``), unchanged.

Run by ``tests/test_official_clients.py`` with the interpreter of the client's own
virtualenv (``tests/official/setup.sh`` makes it), never the project's: ``tintdb`` is not
importable there, so everything below goes over HTTP through ``chromadb.HttpClient``.

    python_workload.py http://127.0.0.1:PORT

Prints one JSON object: step name -> what the client returned, or
``{"error": <exception class>, "module": ..., "message": ...}`` for a step that raised.
A step that raises does not stop the others, so the test can report every mismatch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import chromadb
import chromadb.errors
from chromadb.config import Settings

# Four records, 3-d, in an l2 collection: squared distances from [1, 0, 0] are
# a 0, d 1, b 2, c 2, so every n_results cut used below falls between distinct values.
IDS = ["a", "b", "c", "d"]
EMBEDDINGS = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
DOCUMENTS = ["apple pie", "banana split", "carrot cake", "date bread"]
METADATAS: list[dict[str, Any]] = [
    {"kind": "fruit", "n": 1, "ripe": True},
    {"kind": "fruit", "n": 2, "ripe": False},
    {"kind": "veg", "n": 3, "ripe": True},
    {"kind": "fruit", "n": 4, "ripe": True},
]


def plain(value: Any) -> Any:
    """Numpy arrays, tuples and dataclass-like results -> JSON-ready Python values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def settled_status(col: Any) -> dict[str, Any]:
    """get_indexing_status() once nothing waits for the index (polled: the server puts
    new vectors in its graph behind the writes)."""
    deadline = time.monotonic() + 30
    while True:
        status = col.get_indexing_status()
        if status.num_unindexed_ops == 0 or time.monotonic() > deadline:
            return dataclasses.asdict(status)
        time.sleep(0.05)


def record(rows: Any) -> dict[str, Any]:
    """A GetResult / QueryResult as a plain dict of its list fields."""
    keys = ("ids", "embeddings", "documents", "metadatas", "uris", "distances", "included")
    return {k: plain(rows.get(k)) for k in keys if k in rows}


def describe(col: Any) -> dict[str, Any]:
    return {"id": str(col.id), "name": col.name, "metadata": plain(col.metadata)}


def main(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    out: dict[str, Any] = {}

    def step(name: str, fn: Callable[[], Any]) -> None:
        try:
            out[name] = plain(fn())
        except Exception as exc:  # every outcome, error or not, is data for the test
            out[name] = {
                "error": type(exc).__name__,
                "module": type(exc).__module__,
                "chroma_error": isinstance(exc, chromadb.errors.ChromaError),
                "message": str(exc),
            }

    out["client_version"] = chromadb.__version__
    client = chromadb.HttpClient(host=parts.hostname, port=parts.port)
    step("heartbeat_positive", lambda: client.heartbeat() > 0)
    step("version", client.get_version)

    async def async_heartbeat() -> bool:
        # The async client's heartbeat asks for the API root, GET /api/v2.
        aclient = await chromadb.AsyncHttpClient(host=parts.hostname, port=parts.port)
        return await aclient.heartbeat() > 0

    step("async_heartbeat_positive", lambda: asyncio.run(async_heartbeat()))

    def trace_id_of_an_error() -> Any:
        try:
            client.get_collection("no_such_collection")
        except chromadb.errors.ChromaError as exc:
            return getattr(exc, "trace_id", None)
        return "no error"

    step("error_trace_id", trace_id_of_an_error)

    # ------------------------------------------------------------ collections
    step(
        "create",
        lambda: describe(
            client.create_collection("fruits", embedding_function=None, metadata={"topic": "food"})
        ),
    )
    step(
        "create_duplicate",
        lambda: describe(client.create_collection("fruits", embedding_function=None)),
    )
    step("get", lambda: describe(client.get_collection("fruits", embedding_function=None)))
    step("get_missing", lambda: describe(client.get_collection("no_such_collection")))
    step(
        "get_or_create_existing",
        lambda: describe(
            client.get_or_create_collection(
                "fruits", embedding_function=None, metadata={"other": 1}
            )
        ),
    )
    step(
        "get_or_create_new",
        lambda: describe(client.get_or_create_collection("veggies", embedding_function=None)),
    )
    step("list", lambda: sorted(c.name for c in client.list_collections()))
    step("count_collections", client.count_collections)

    col = client.get_collection("fruits", embedding_function=None)

    # ------------------------------------------------------------ records
    step("count_empty", col.count)
    step(
        "add",
        lambda: col.add(ids=IDS, embeddings=EMBEDDINGS, documents=DOCUMENTS, metadatas=METADATAS),
    )
    step("count", col.count)
    step("add_existing_id", lambda: col.add(ids=["a"], embeddings=[[9.0, 9.0, 9.0]]))
    step("add_wrong_dimension", lambda: col.add(ids=["z"], embeddings=[[1.0, 2.0]]))
    step("count_after_errors", col.count)

    step("get_ids", lambda: record(col.get(ids=["c", "a", "missing"])))
    step("get_all", lambda: record(col.get()))
    step("get_where_eq", lambda: record(col.get(where={"kind": "fruit"}, include=[])))
    step(
        "get_where_and",
        lambda: record(
            col.get(where={"$and": [{"kind": "fruit"}, {"n": {"$gte": 2}}]}, include=[])
        ),
    )
    step(
        "get_where_or",
        lambda: record(col.get(where={"$or": [{"kind": "veg"}, {"n": {"$lt": 2}}]}, include=[])),
    )
    step("get_where_in", lambda: record(col.get(where={"n": {"$in": [2, 4, 99]}}, include=[])))
    step("get_where_ne_bool", lambda: record(col.get(where={"ripe": {"$ne": True}}, include=[])))
    step("get_where_document", lambda: record(col.get(where_document={"$contains": "cake"})))
    step(
        "get_where_document_not",
        lambda: record(col.get(where_document={"$not_contains": "e"}, include=["documents"])),
    )
    step(
        "get_where_and_document",
        lambda: record(
            col.get(
                where={"kind": "fruit"},
                where_document={"$contains": "an"},
                include=["metadatas"],
            )
        ),
    )
    step("get_embeddings_only", lambda: record(col.get(ids=["d", "b"], include=["embeddings"])))
    step("get_limit_offset", lambda: record(col.get(limit=2, offset=1, include=[])))
    step("peek", lambda: record(col.peek(limit=2)))

    q = [[1.0, 0.0, 0.0]]
    step("query", lambda: record(col.query(query_embeddings=q, n_results=2)))
    step(
        "query_include",
        lambda: record(
            col.query(query_embeddings=q, n_results=2, include=["embeddings", "distances"])
        ),
    )
    step(
        "query_where",
        lambda: record(col.query(query_embeddings=q, n_results=3, where={"kind": "veg"})),
    )
    step(
        "query_where_document",
        lambda: record(
            col.query(
                query_embeddings=q,
                n_results=5,
                where_document={"$contains": "p"},
                include=["documents", "distances"],
            )
        ),
    )
    step(
        "query_two",
        lambda: record(
            col.query(
                query_embeddings=[[0.0, 0.0, 1.0], [0.0, 1.0, 0.1]],
                n_results=1,
                include=["distances"],
            )
        ),
    )
    step(
        "query_ids",
        lambda: record(col.query(query_embeddings=q, ids=["c", "d"], n_results=5, include=[])),
    )
    step("query_too_many", lambda: record(col.query(query_embeddings=q, n_results=50, include=[])))
    step("query_wrong_dimension", lambda: record(col.query(query_embeddings=[[1.0, 0.0]])))

    step(
        "update",
        lambda: col.update(
            ids=["a"],
            embeddings=[[1.0, 0.0, 0.0]],
            metadatas=[{"n": 10, "ripe": None}],
            documents=["apple tart"],
        ),
    )
    # Documents without embeddings need an embedding function, checked by the client itself.
    step("update_document_no_ef", lambda: col.update(ids=["a"], documents=["apple tart"]))
    step("update_embedding", lambda: col.update(ids=["b"], embeddings=[[0.0, 2.0, 0.0]]))
    step("update_missing_id", lambda: col.update(ids=["nope"], metadatas=[{"n": 0}]))
    step(
        "get_after_update",
        lambda: record(col.get(ids=["a", "b"], include=["metadatas", "documents", "embeddings"])),
    )
    step(
        "upsert",
        lambda: col.upsert(
            ids=["a", "e"],
            embeddings=[[0.5, 0.5, 0.0], [0.0, 0.0, 2.0]],
            metadatas=[{"kind": "fruit", "extra": "x"}, {"kind": "veg", "n": 5}],
            documents=["apple crumble", "eggplant stew"],
        ),
    )
    step(
        "get_after_upsert",
        lambda: record(col.get(ids=["a", "e"], include=["metadatas", "documents", "embeddings"])),
    )
    step("count_after_upsert", col.count)
    step("indexing_status_settled", lambda: settled_status(col))
    step("delete_ids", lambda: col.delete(ids=["b"]))
    step("delete_where", lambda: col.delete(where={"kind": "veg"}))
    step("get_after_delete", lambda: record(col.get(include=["documents"])))
    step("count_after_delete", col.count)

    # ------------------------------------------------------------ modify / delete collection
    step("modify", lambda: col.modify(name="fruits_v2", metadata={"topic": "food", "v": 2}))
    step(
        "get_renamed", lambda: describe(client.get_collection("fruits_v2", embedding_function=None))
    )
    step("get_old_name", lambda: describe(client.get_collection("fruits", embedding_function=None)))
    step(
        "count_renamed", lambda: client.get_collection("fruits_v2", embedding_function=None).count()
    )
    step("delete_collection", lambda: client.delete_collection("veggies"))
    step("delete_collection_missing", lambda: client.delete_collection("veggies"))
    step("list_after_delete", lambda: sorted(c.name for c in client.list_collections()))

    # ------------------------------------------------------------ cosine space
    step(
        "create_cosine",
        lambda: describe(
            client.create_collection(
                "angles", embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
            )
        ),
    )
    cos = client.get_collection("angles", embedding_function=None)
    step(
        "cosine_add",
        lambda: cos.add(ids=["x", "xy", "y"], embeddings=[[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]]),
    )
    step(
        "cosine_query",
        lambda: record(
            cos.query(query_embeddings=[[1.0, 0.0]], n_results=3, include=["distances"])
        ),
    )

    # ------------------------------------------------------------ default embedding function
    # The client's default embedding function is recorded in the collection configuration;
    # with explicit embeddings it is never called, so nothing is downloaded.
    step("create_default_ef", lambda: describe(client.create_collection("with_default_ef")))
    step(
        "default_ef_add",
        lambda: client.get_collection("with_default_ef").add(ids=["p"], embeddings=[[0.25, 0.5]]),
    )
    step(
        "default_ef_query",
        lambda: record(
            client.get_collection("with_default_ef").query(
                query_embeddings=[[0.25, 0.5]], n_results=1, include=["distances", "embeddings"]
            )
        ),
    )

    # ------------------------------------------------------------ list metadata, uris, paging
    tagged = client.create_collection("tagged", embedding_function=None)
    step(
        "tagged_add",
        lambda: tagged.add(
            ids=["t1", "t2", "t3"],
            embeddings=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
            metadatas=[{"tags": ["red", "big"]}, {"tags": ["blue"]}, {"tags": ["red"], "w": 0.5}],
            documents=["one", "two", "three"],
            uris=["file:///1", "file:///2", "file:///3"],
        ),
    )
    step(
        "tagged_contains",
        lambda: record(
            tagged.get(where={"tags": {"$contains": "red"}}, include=["metadatas", "uris"])
        ),
    )
    step(
        "tagged_not_contains",
        lambda: record(tagged.get(where={"tags": {"$not_contains": "red"}}, include=[])),
    )
    step("tagged_nin", lambda: record(tagged.get(where={"w": {"$nin": [0.5]}}, include=[])))
    step("tagged_regex", lambda: record(tagged.get(where_document={"$regex": "^t"}, include=[])))
    step("tagged_delete_document", lambda: tagged.delete(where_document={"$contains": "hre"}))
    step("tagged_after_delete", lambda: record(tagged.get(include=["uris", "documents"])))
    step("list_page", lambda: [c.name for c in client.list_collections(limit=2, offset=1)])
    step("list_all_in_order", lambda: [c.name for c in client.list_collections()])

    # ------------------------------------------------------------ tenants and databases
    admin = chromadb.AdminClient(
        Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI",
            chroma_server_host=parts.hostname,
            chroma_server_http_port=parts.port,
        )
    )
    step("create_tenant", lambda: admin.create_tenant("acme"))
    step("create_tenant_again", lambda: admin.create_tenant("acme"))
    step("get_tenant", lambda: dict(admin.get_tenant("acme")))
    step("get_tenant_missing", lambda: dict(admin.get_tenant("no_such_tenant")))
    step("create_database", lambda: admin.create_database("db_one", tenant="acme"))
    step("create_database_two", lambda: admin.create_database("db_two", tenant="acme"))
    step(
        "get_database",
        lambda: {k: v for k, v in admin.get_database("db_one", tenant="acme").items() if k != "id"},
    )
    step("get_database_missing", lambda: dict(admin.get_database("no_such_db", tenant="acme")))
    step("list_databases", lambda: sorted(d["name"] for d in admin.list_databases(tenant="acme")))

    def in_acme() -> list[str]:
        scoped = chromadb.HttpClient(
            host=parts.hostname, port=parts.port, tenant="acme", database="db_one"
        )
        scoped.create_collection("fruits", embedding_function=None)  # the name is free in db_one
        return [c.name for c in scoped.list_collections()]

    step("scoped_collections", in_acme)
    step("default_unchanged", lambda: [c.name for c in client.list_collections()])
    step(
        "client_missing_database",
        lambda: (
            chromadb.HttpClient(
                host=parts.hostname, port=parts.port, tenant="acme", database="nope"
            )
            and None
        ),
    )
    step("delete_database", lambda: admin.delete_database("db_two", tenant="acme"))
    step(
        "list_databases_after",
        lambda: sorted(d["name"] for d in admin.list_databases(tenant="acme")),
    )

    # ------------------------------------------------------------ reset (the server allows it)
    resetter = chromadb.HttpClient(
        host=parts.hostname, port=parts.port, settings=Settings(allow_reset=True)
    )
    step("reset", resetter.reset)
    step("list_after_reset", lambda: [c.name for c in client.list_collections()])
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1]), sort_keys=True))
