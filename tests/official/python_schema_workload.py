"""Collection Schema and configuration through the official Python client, unchanged.

Run by ``tests/test_schema_official.py`` with the interpreter of the client's own
virtualenv, as ``python_workload.py`` is:

    python_schema_workload.py http://127.0.0.1:PORT

Prints one JSON object: step name -> what the client returned, or
``{"error": <exception class>, "module": ..., "message": ...}`` for a step that raised.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import chromadb
from chromadb import (
    FtsIndexConfig,
    HnswIndexConfig,
    IntInvertedIndexConfig,
    Schema,
    SpannIndexConfig,
    SparseVectorIndexConfig,
    StringInvertedIndexConfig,
    VectorIndexConfig,
)


def vector_config(schema: Any) -> dict[str, Any]:
    return schema.serialize_to_json()["keys"]["#embedding"]["float_list"]["vector_index"]["config"]


def main(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    out: dict[str, Any] = {}

    def step(name: str, fn: Callable[[], Any]) -> None:
        try:
            out[name] = fn()
        except Exception as exc:  # every outcome, error or not, is data for the test
            out[name] = {
                "error": type(exc).__name__,
                "module": type(exc).__module__,
                "message": str(exc),
            }

    out["client_version"] = chromadb.__version__
    client = chromadb.HttpClient(host=parts.hostname, port=parts.port)
    client.reset()

    # ------------------------------------------------------------ declared, shown, kept
    schema = (
        Schema()
        .delete_index(config=StringInvertedIndexConfig(), key="secret")
        .create_index(config=IntInvertedIndexConfig(), key="year")
        .delete_index(config=FtsIndexConfig(), key="#document")
        .create_index(config=SparseVectorIndexConfig(bm25=True), key="terms")
    )
    col = client.create_collection("declared", schema=schema, embedding_function=None)
    created = col.schema.serialize_to_json()
    step("created_keys", lambda: {k: v for k, v in created["keys"].items() if k != "#embedding"})
    step("created_vector", lambda: vector_config(col.schema))
    step(
        "get_same_schema",
        lambda: client.get_collection("declared").schema.serialize_to_json() == created,
    )
    step(
        "list_same_schema",
        lambda: [c.schema.serialize_to_json() == created for c in client.list_collections()],
    )
    step(
        "add",
        lambda: col.add(
            ids=["a", "b"],
            embeddings=[[1.0, 0.0], [0.0, 1.0]],
            metadatas=[{"secret": "s", "year": 2024, "note": "n"}, {"secret": 7}],
            documents=["alpha", "beta"],
        ),
    )
    step("get_secret", lambda: col.get(where={"secret": "s"})["ids"])
    step(
        "query_secret",
        lambda: col.query(query_embeddings=[[1.0, 0.0]], n_results=1, where={"secret": "s"})["ids"],
    )
    step("delete_secret", lambda: col.delete(where={"secret": "s"}))
    step("get_secret_as_int", lambda: col.get(where={"secret": 7})["ids"])
    step("get_year", lambda: col.get(where={"year": 2024})["ids"])
    step("get_document", lambda: col.get(where_document={"$contains": "alpha"})["ids"])
    step("count", col.count)
    step(
        "keys_after_add",
        lambda: sorted(
            k
            for k in client.get_collection("declared").schema.serialize_to_json()["keys"]
            if not k.startswith("#")
        ),
    )

    # ------------------------------------------------------------ modify (returns the schema)
    step("modify", lambda: col.modify(configuration={"hnsw": {"ef_search": 42, "batch_size": 50}}))
    step("modified_local", lambda: col.configuration_json["hnsw"]["ef_search"])
    fetched = client.get_collection("declared")
    step("modified_fetched", lambda: fetched.configuration_json["hnsw"]["ef_search"])
    step("modified_schema", lambda: vector_config(fetched.schema)["hnsw"]["ef_search"])
    step(
        "modified_keeps_keys",
        lambda: (
            fetched.schema.serialize_to_json()["keys"]["secret"]["string"]
            == created["keys"]["secret"]["string"]
        ),
    )
    step("modify_fixed", lambda: col.modify(configuration={"hnsw": {"ef_construction": 5}}))
    step("modify_spann", lambda: col.modify(configuration={"spann": {"search_nprobe": 5}}))

    # ------------------------------------------------------------ configuration and precedence
    plain = client.create_collection("plain", embedding_function=None)
    step("plain_vector", lambda: vector_config(plain.schema))
    step("plain_modify", lambda: plain.modify(configuration={"hnsw": {"ef_search": 20}}))
    step("plain_modified", lambda: vector_config(plain.schema)["hnsw"]["ef_search"])
    spann = client.create_collection(
        "spanned",
        configuration={"spann": {"space": "cosine", "search_nprobe": 5, "ef_construction": 50}},
        embedding_function=None,
    )
    step("spann_configuration", lambda: spann.configuration_json)
    precedence = client.create_collection(
        "precedence",
        metadata={"hnsw:space": "cosine", "hnsw:search_ef": 7},
        configuration={"hnsw": {"space": "ip", "ef_construction": 55}},
        embedding_function=None,
    )
    step("precedence_hnsw", lambda: precedence.configuration_json["hnsw"])
    vector_schema = Schema().create_index(
        config=VectorIndexConfig(
            space="cosine",
            hnsw=HnswIndexConfig(ef_search=77),
            spann=None,
        )
    )
    vec = client.create_collection("vectored", schema=vector_schema, embedding_function=None)
    step("vector_schema_configuration", lambda: vec.configuration_json["hnsw"])
    step("vector_add", lambda: vec.add(ids=["x", "y"], embeddings=[[2.0, 0.0], [0.0, 3.0]]))
    step(
        "vector_query",
        lambda: vec.query(query_embeddings=[[1.0, 0.0]], n_results=2, include=["distances"])[
            "distances"
        ],
    )
    spann_schema = Schema().create_index(
        config=VectorIndexConfig(space="ip", spann=SpannIndexConfig(search_nprobe=3))
    )
    step(
        "spann_schema_vector",
        lambda: vector_config(
            client.create_collection(
                "spann_schema", schema=spann_schema, embedding_function=None
            ).schema
        ),
    )
    step(
        "schema_and_configuration",
        lambda: (
            client.create_collection(
                "mixed",
                schema=Schema().delete_index(config=IntInvertedIndexConfig(), key="k"),
                configuration={"hnsw": {"space": "ip"}},
                embedding_function=None,
            ).name
        ),
    )
    step(
        "schema_with_cmek",
        lambda: (
            client.create_collection(
                "encrypted",
                schema=Schema().set_cmek(
                    chromadb.Cmek.gcp("projects/p/locations/l/keyRings/r/cryptoKeys/k")
                ),
                embedding_function=None,
            ).name
        ),
    )
    step("names", lambda: sorted(c.name for c in client.list_collections()))
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
