"""Schema and configuration through the official Python client against a real ``tintdb run``.

The workload (``tests/official/python_schema_workload.py``) runs in the client's own
virtualenv, as the other official-client tests do. Against ``chroma run`` it gives the
same results except where noted: the wording of errors, a sparse vector index (refused
by Chroma's single node, kept here), a schema with cmek (accepted and ignored by
Chroma, refused here), and modify() of a fixed parameter or of spann settings (refused
by both, with other error classes).
"""

from __future__ import annotations

import os

from _server import TintServer
from test_official_clients import (
    OFFICIAL,
    Raised,
    check,
    pinned_python_client,
    python_client,
    run_workload,
    server,  # noqa: F401 (the fixture)
)

ERRORS = "chromadb.errors"


def _index(enabled: bool, config: dict | None = None) -> dict:  # type: ignore[type-arg]
    return {"enabled": enabled, "config": config or {}}


def _vector(space: str, **hnsw: object) -> dict:  # type: ignore[type-arg]
    params = {
        "ef_construction": 100,
        "max_neighbors": 16,
        "ef_search": 100,
        "num_threads": os.cpu_count(),
        "batch_size": 100,
        "sync_threshold": 1000,
        "resize_factor": 1.2,
        **hnsw,
    }
    default_ef = {"type": "known", "name": "default", "config": {}}
    return {
        "space": space,
        "embedding_function": default_ef,
        "source_key": "#document",
        "hnsw": params,
    }


def _hnsw(space: str, **params: object) -> dict:  # type: ignore[type-arg]
    return {
        "space": space,
        "ef_construction": 100,
        "ef_search": 100,
        "max_neighbors": 16,
        "num_threads": 0,
        "batch_size": 100,
        "sync_threshold": 1000,
        "resize_factor": 1.2,
        **params,
    }


def test_python_client_schema_workload(server: TintServer) -> None:  # noqa: F811
    result = run_workload(
        [str(python_client()), str(OFFICIAL / "python_schema_workload.py")], server, OFFICIAL
    )
    assert result["client_version"] == pinned_python_client()
    disabled = Raised("InvalidArgumentError", ERRORS, "Cannot filter using metadata key 'secret'")
    expected = {
        "created_keys": {
            "#document": {
                "string": {"fts_index": _index(False), "string_inverted_index": _index(False)}
            },
            "secret": {"string": {"string_inverted_index": _index(False)}},
            "year": {"int": {"int_inverted_index": _index(True)}},
            "terms": {
                "sparse_vector": {
                    "sparse_vector_index": _index(
                        True, {"bm25": True, "embedding_function": {"type": "unknown"}}
                    )
                }
            },
        },
        "created_vector": _vector("l2"),
        "get_same_schema": True,
        "list_same_schema": [True],
        "add": None,
        "get_secret": disabled,
        "query_secret": disabled,
        "delete_secret": disabled,
        "get_secret_as_int": ["b"],  # the key's int values keep their index
        "get_year": ["a"],
        "get_document": Raised("InvalidArgumentError", ERRORS, "full-text search (FTS)"),
        "count": 2,
        "keys_after_add": ["note", "secret", "terms", "year"],
        # modify(configuration=...) works through the official client: the collection
        # comes back with a schema for it to update (it used to raise after the change).
        "modify": None,
        "modified_local": 42,
        "modified_fetched": 42,
        "modified_schema": 42,
        "modified_keeps_keys": True,
        "modify_fixed": Raised("InvalidArgumentError", ERRORS, "ef_construction is fixed"),
        "modify_spann": Raised("InvalidArgumentError", ERRORS, "spann settings cannot be changed"),
        "plain_vector": _vector("l2"),
        "plain_modify": None,
        "plain_modified": 20,
        # SPANN becomes HNSW in the requested space, HNSW's defaults otherwise.
        "spann_configuration": {
            "hnsw": _hnsw("cosine"),
            "spann": None,
            "embedding_function": {"type": "legacy"},
        },
        # configuration wins over hnsw:* metadata
        "precedence_hnsw": _hnsw("ip", ef_construction=55),
        "vector_schema_configuration": _hnsw("cosine", ef_search=77),
        "vector_add": None,
        "vector_query": [[0.0, 1.0]],
        "spann_schema_vector": _vector("ip"),
        "schema_and_configuration": Raised(
            "InvalidArgumentError", ERRORS, "set the vector index differently"
        ),
        "schema_with_cmek": Raised("InvalidArgumentError", ERRORS, "cmek"),
        "names": ["declared", "plain", "precedence", "spann_schema", "spanned", "vectored"],
    }
    check(result, expected)
    assert set(result) == set(expected) | {"client_version"}, "a workload step is not checked"
