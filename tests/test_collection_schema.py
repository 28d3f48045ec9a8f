"""A collection's Schema and configuration, on every client kind (embedded and over HTTP).

The expected JSON and precedence below are what ``chroma run`` (chromadb 1.5.9) answers
for the same calls; where tintdb refuses something Chroma accepts, the test says why.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tintdb
from tintdb import (
    BoolInvertedIndexConfig,
    FloatInvertedIndexConfig,
    FtsIndexConfig,
    HnswIndexConfig,
    IntInvertedIndexConfig,
    Schema,
    SpannIndexConfig,
    SparseVectorIndexConfig,
    StringInvertedIndexConfig,
    VectorIndexConfig,
)
from tintdb.errors import InvalidArgumentError

EMB = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
# Not the default thread count (every core) on any machine.
THREADS = (os.cpu_count() or 1) + 1


def _index(enabled: bool, config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"enabled": enabled, "config": config or {}}


def expected_default_schema(
    space: str = "l2", ef: dict[str, Any] | None = None, **hnsw: Any
) -> dict[str, Any]:
    """The schema chroma run shows for a collection created without one."""
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
    vector: dict[str, Any] = {"space": space, "hnsw": params}
    if ef is not None:
        vector["embedding_function"] = ef
    return {
        "defaults": {
            "string": {"fts_index": _index(False), "string_inverted_index": _index(True)},
            "float_list": {"vector_index": _index(False, vector)},
            "sparse_vector": {
                "sparse_vector_index": _index(
                    False, {"embedding_function": {"type": "unknown"}, "bm25": False}
                )
            },
            "int": {"int_inverted_index": _index(True)},
            "float": {"float_inverted_index": _index(True)},
            "bool": {"bool_inverted_index": _index(True)},
        },
        "keys": {
            "#embedding": {
                "float_list": {"vector_index": _index(True, {**vector, "source_key": "#document"})}
            },
            "#document": {
                "string": {"fts_index": _index(True), "string_inverted_index": _index(False)}
            },
        },
    }


def shown(col: Any) -> dict[str, Any]:
    """The schema JSON a collection object holds, as the wire carries it."""
    return json.loads(json.dumps(col._model.schema))


def hnsw_of(col: Any) -> dict[str, Any]:
    return dict(col.configuration["hnsw"])


# ---------------------------------------------------------------- shown schema


def test_a_collection_without_schema_shows_chromas_default(client: tintdb.Client) -> None:
    col = client.create_collection("plain", embedding_function=None)
    assert shown(col) == expected_default_schema()
    assert shown(client.get_collection("plain")) == expected_default_schema()
    assert [shown(c) for c in client.list_collections()] == [expected_default_schema()]
    default = {"type": "known", "name": "default", "config": {}}
    col = client.create_collection("withef", metadata={"hnsw:space": "cosine"})
    assert shown(col) == expected_default_schema("cosine", default)
    schema = col.schema
    assert isinstance(schema, Schema)
    assert schema.keys["#document"].string.fts_index.enabled is True
    assert schema.keys["#embedding"].float_list.vector_index.config.space == "cosine"
    assert schema.keys["#embedding"].float_list.vector_index.config.embedding_function.name() == (
        "default"
    )


def test_declared_indexes_come_back_everywhere_and_persist(client: tintdb.Client, reopen) -> None:  # type: ignore[no-untyped-def]
    schema = (
        Schema()
        .create_index(StringInvertedIndexConfig(), key="title")
        .delete_index(IntInvertedIndexConfig(), key="year")
        .delete_index(FloatInvertedIndexConfig())
        .delete_index(FtsIndexConfig(), key="#document")
    )
    col = client.create_collection("decl", schema=schema, embedding_function=None)
    first = shown(col)
    keys = first["keys"]
    assert keys["title"] == {"string": {"string_inverted_index": _index(True)}}
    assert keys["year"] == {"int": {"int_inverted_index": _index(False)}}
    assert keys["#document"]["string"]["fts_index"] == _index(False)
    assert first["defaults"]["float"] == {"float_inverted_index": _index(False)}
    assert shown(client.get_collection("decl")) == first
    again = client.get_or_create_collection("decl", schema=Schema(), embedding_function=None)
    assert shown(again) == first  # an existing collection keeps its schema
    client = reopen(client)
    try:
        assert shown(client.get_collection("decl")) == first
        with pytest.raises(InvalidArgumentError, match="'year' with type 'Int'"):
            client.get_collection("decl").get(where={"year": 2024})
    finally:
        client.close()


def test_deleting_a_collection_forgets_its_schema(client: tintdb.Client) -> None:
    schema = Schema().delete_index(StringInvertedIndexConfig(), key="gone")
    client.create_collection("again", schema=schema, embedding_function=None)
    client.delete_collection("again")
    col = client.create_collection("again", embedding_function=None)
    assert shown(col) == expected_default_schema()
    col.add(ids=["a"], embeddings=[[1.0, 2.0]], metadatas=[{"gone": "x"}])
    assert col.get(where={"gone": "x"})["ids"] == ["a"]


# ---------------------------------------------------------------- honoured


def test_a_disabled_inverted_index_refuses_filters_on_its_type(client: tintdb.Client) -> None:
    schema = (
        Schema()
        .delete_index(StringInvertedIndexConfig(), key="tag")
        .delete_index(IntInvertedIndexConfig(), key="n")
        .delete_index(FloatInvertedIndexConfig(), key="f")
        .delete_index(BoolInvertedIndexConfig(), key="b")
    )
    col = client.create_collection("guarded", schema=schema, embedding_function=None)
    col.add(
        ids=["a", "b", "c"],
        embeddings=EMB,
        metadatas=[
            {"tag": "x", "n": 1, "f": 1.5, "b": True, "ok": "y"},
            {"tag": 3, "n": "s"},
            {"tag": ["x", "y"]},
        ],
    )
    refused = [
        ({"tag": "x"}, "'tag' with type 'Str'"),
        ({"tag": {"$ne": "x"}}, "'tag' with type 'Str'"),
        ({"tag": {"$in": ["x", "z"]}}, "'tag' with type 'Str'"),
        ({"tag": {"$contains": "x"}}, "'tag' with type 'Str'"),
        ({"n": {"$gt": 0}}, "'n' with type 'Int'"),
        ({"f": 1.5}, "'f' with type 'Float'"),
        ({"b": {"$ne": True}}, "'b' with type 'Bool'"),
        ({"$and": [{"ok": "y"}, {"$or": [{"tag": "x"}, {"ok": "z"}]}]}, "'tag' with type 'Str'"),
    ]
    for where, why in refused:
        for call in (
            lambda w=where: col.get(where=w),
            lambda w=where: col.query(query_embeddings=[[1.0, 0.0]], n_results=1, where=w),
            lambda w=where: col.delete(where=w),
            lambda w=where: col.delete(ids=["a"], where=w),
        ):
            with pytest.raises(
                InvalidArgumentError, match="Cannot filter using metadata key " + why
            ):
                call()
    assert col.count() == 3  # no refused delete removed anything
    # The same keys with other value types, and other keys, filter as usual.
    assert col.get(where={"tag": 3})["ids"] == ["b"]
    assert col.get(where={"n": "s"})["ids"] == ["b"]
    assert col.get(where={"n": 1.0})["ids"] == ["a"]  # a float operand uses the float index
    assert col.get(where={"f": 2})["ids"] == []
    assert col.get(where={"ok": "y"})["ids"] == ["a"]
    assert col.get(ids=["c"], include=["metadatas"])["metadatas"] == [{"tag": ["x", "y"]}]


def test_disabled_defaults_and_an_enabled_key(client: tintdb.Client) -> None:
    schema = (
        Schema()
        .delete_index(StringInvertedIndexConfig())
        .create_index(StringInvertedIndexConfig(), key="explicit")
    )
    col = client.create_collection("dflt", schema=schema, embedding_function=None)
    col.add(ids=["a"], embeddings=[[1.0, 2.0]], metadatas=[{"explicit": "e", "other": "o", "n": 1}])
    assert col.get(where={"explicit": "e"})["ids"] == ["a"]
    assert col.get(where={"n": 1})["ids"] == ["a"]
    with pytest.raises(InvalidArgumentError, match="'other' with type 'Str'"):
        col.get(where={"other": "o"})
    keys = shown(client.get_collection("dflt"))["keys"]
    # a key first seen in records gets the defaults of its type, here disabled
    assert keys["other"]["string"]["string_inverted_index"] == _index(False)
    assert keys["explicit"] == {"string": {"string_inverted_index": _index(True)}}


def test_full_text_search_off_refuses_where_document(client: tintdb.Client) -> None:
    schema = Schema().delete_index(FtsIndexConfig(), key="#document")
    col = client.create_collection("nofts", schema=schema, embedding_function=None)
    col.add(ids=["a", "b"], embeddings=EMB[:2], documents=["alpha beta", "gamma"])
    for where_document in (
        {"$contains": "alpha"},
        {"$not_contains": "alpha"},
        {"$regex": "a.*"},
        {"$or": [{"$contains": "a"}, {"$contains": "b"}]},
    ):
        for call in (
            lambda wd=where_document: col.get(where_document=wd),
            lambda wd=where_document: col.query(query_embeddings=[[1.0, 0.0]], where_document=wd),
            lambda wd=where_document: col.delete(where_document=wd),
        ):
            with pytest.raises(InvalidArgumentError, match=r"full-text search \(FTS\)"):
                call()
    assert col.count() == 2
    assert col.get(include=["documents"])["documents"] == ["alpha beta", "gamma"]
    assert col.get(where={"x": 1})["ids"] == []


def test_keys_seen_in_records_join_the_schema(client: tintdb.Client, reopen) -> None:  # type: ignore[no-untyped-def]
    col = client.create_collection("seen", embedding_function=None)
    col.add(
        ids=["a", "b"],
        embeddings=EMB[:2],
        metadatas=[
            {"s": "x", "i": 1, "f": 1.5, "b": True, "ls": ["a"], "li": [1], "lf": [0.5]},
            {"s": 2, "i": 2.5},
        ],
    )
    col.upsert(ids=["c"], embeddings=[[0.5, 0.5]], metadatas=[{"up": False}])
    col.update(ids=["a"], metadatas=[{"changed": "yes", "s": None}])
    col.update(ids=["missing"], metadatas=[{"never": 1}])  # no such record: nothing seen
    col.delete(ids=["a", "b"])  # the keys stay, as in Chroma
    expected = {
        "s": {"string", "int"},
        "i": {"int", "float"},
        "f": {"float"},
        "b": {"bool"},
        "ls": {"string"},
        "li": {"int"},
        "lf": {"float"},
        "up": {"bool"},
        "changed": {"string"},
    }
    client = reopen(client)
    try:
        keys = shown(client.get_collection("seen"))["keys"]
        assert {k: set(v) for k, v in keys.items() if not k.startswith("#")} == expected
        defaults = expected_default_schema()["defaults"]
        assert keys["s"]["string"] == defaults["string"]
        assert keys["i"]["float"] == defaults["float"]
    finally:
        client.close()


# ---------------------------------------------------------------- precedence


@pytest.mark.parametrize(
    ("metadata", "configuration", "expected"),
    [
        # configuration wins: once it sets a non-default value, metadata is not read
        (
            {"hnsw:space": "cosine", "hnsw:search_ef": 7},
            {"hnsw": {"space": "ip", "ef_construction": 55}},
            {"space": "ip", "ef_construction": 55, "ef_search": 100},
        ),
        ({"hnsw:space": "cosine"}, {"hnsw": {"ef_construction": 55}}, {"space": "l2"}),
        # a configuration at its defaults leaves room for the metadata
        (
            {"hnsw:space": "cosine", "hnsw:M": 8},
            {"hnsw": {}},
            {"space": "cosine", "max_neighbors": 8},
        ),
        ({"hnsw:space": "cosine"}, {"hnsw": {"space": "l2"}}, {"space": "cosine"}),
        (
            {"hnsw:space": "ip", "hnsw:search_ef": 9},
            {"hnsw": {"ef_search": 100}},
            {"space": "ip", "ef_search": 100},
        ),
        (
            {"hnsw:M": 8},
            {"hnsw": {"num_threads": THREADS}},
            {"max_neighbors": 16, "num_threads": THREADS},
        ),
        # SPANN becomes HNSW in the requested space, with HNSW's defaults
        (
            None,
            {"spann": {"space": "cosine", "search_nprobe": 5, "ef_construction": 77}},
            {"space": "cosine", "ef_construction": 100},
        ),
        ({"hnsw:space": "ip"}, {"spann": {}}, {"space": "l2"}),
        ({"hnsw:space": "ip"}, None, {"space": "ip"}),
    ],
)
def test_configuration_metadata_precedence(
    client: tintdb.Client, metadata: Any, configuration: Any, expected: dict[str, Any]
) -> None:
    col = client.create_collection(
        "prec", metadata=metadata, configuration=configuration, embedding_function=None
    )
    for got in (hnsw_of(col), hnsw_of(client.get_collection("prec"))):
        assert {k: got[k] for k in expected} == expected
    assert col.configuration["spann"] is None
    vector = shown(col)["keys"]["#embedding"]["float_list"]["vector_index"]["config"]
    assert vector["space"] == hnsw_of(col)["space"]


def test_spann_space_is_honoured_by_queries(client: tintdb.Client) -> None:
    col = client.create_collection(
        "spc", configuration={"spann": {"space": "cosine"}}, embedding_function=None
    )
    col.add(ids=["x", "y"], embeddings=[[2.0, 0.0], [0.0, 3.0]])
    got = col.query(query_embeddings=[[1.0, 0.0]], n_results=2, include=["distances"])
    assert got["ids"] == [["x", "y"]]
    np.testing.assert_allclose(got["distances"][0], [0.0, 1.0], atol=1e-6)  # 1 - cos, not l2


def test_bad_configurations_are_refused(client: tintdb.Client) -> None:
    bad = [
        ({"hnsw": {"space": "ip"}, "spann": {"space": "ip"}}, "both 'hnsw' and 'spann'"),
        ({"spann": {"search_nprobe": -1}}, "search_nprobe"),
        ({"spann": {"nope": 1}}, "Unknown SPANN parameter 'nope'"),
        ({"hnsw": {"max_neighbors": 1}}, "max_neighbors must be an int of at least 2"),
        ({"hnsw": {"ef_search": 0}}, "ef_search must be a positive int"),
        ({"hnsw": {"space": "manhattan"}}, "manhattan"),
        ({"vector": {}}, "Unknown configuration section 'vector'"),
    ]
    for configuration, why in bad:
        with pytest.raises(InvalidArgumentError, match=why):
            client.create_collection("bad", configuration=configuration, embedding_function=None)
    with pytest.raises(InvalidArgumentError, match="hnsw:M must be a positive int of at least 2"):
        client.create_collection("bad", metadata={"hnsw:M": 1}, embedding_function=None)
    assert client.count_collections() == 0


def test_a_schema_sets_the_vector_index(client: tintdb.Client) -> None:
    schema = Schema().create_index(
        VectorIndexConfig(space="ip", hnsw=HnswIndexConfig(ef_search=77, max_neighbors=12))
    )
    col = client.create_collection("vec", schema=schema, embedding_function=None)
    assert {k: hnsw_of(col)[k] for k in ("space", "ef_search", "max_neighbors")} == {
        "space": "ip",
        "ef_search": 77,
        "max_neighbors": 12,
    }
    col.add(ids=["x", "y"], embeddings=[[2.0, 0.0], [0.0, 3.0]])
    got = col.query(query_embeddings=[[1.0, 0.0]], n_results=2, include=["distances"])
    np.testing.assert_allclose(got["distances"][0], [-1.0, 1.0], atol=1e-6)  # 1 - dot
    # A SPANN vector index in a schema: its space, HNSW's defaults.
    spann = Schema().create_index(
        VectorIndexConfig(space="cosine", spann=SpannIndexConfig(search_nprobe=3))
    )
    col = client.create_collection("vec2", schema=spann, embedding_function=None)
    vector = shown(col)["keys"]["#embedding"]["float_list"]["vector_index"]["config"]
    assert vector["space"] == "cosine" and "spann" not in vector
    assert vector["hnsw"]["ef_search"] == 100


def test_a_schema_and_a_configuration_must_agree(client: tintdb.Client) -> None:
    schema = Schema().delete_index(IntInvertedIndexConfig(), key="k")
    for kwargs, why in (
        (
            {"configuration": {"hnsw": {"space": "ip"}}},
            "space \\('ip' against the schema's 'l2'\\)",
        ),
        ({"configuration": {"hnsw": {"ef_search": 5}}}, "ef_search \\(5 against"),
        ({"metadata": {"hnsw:space": "cosine"}}, "space \\('cosine' against"),
    ):
        with pytest.raises(InvalidArgumentError, match="set the vector index differently: " + why):
            client.create_collection("mix", schema=schema, embedding_function=None, **kwargs)  # type: ignore[arg-type]
    assert client.count_collections() == 0
    # defaults in the configuration or metadata are no conflict; a default schema never is
    client.create_collection(
        "ok1", schema=schema, configuration={"hnsw": {"space": "l2"}}, metadata={"hnsw:M": 16}
    )
    col = client.create_collection(
        "ok2", schema=Schema(), configuration={"hnsw": {"space": "ip"}}, embedding_function=None
    )
    assert hnsw_of(col)["space"] == "ip"
    # A collection's own configuration and schema, given together, make it again (Chroma
    # refuses any configuration next to a schema; an agreeing one is accepted here).
    source = client.create_collection(
        "src", schema=schema, configuration=None, metadata={"hnsw:space": "l2"}
    )
    vector = Schema().delete_index(IntInvertedIndexConfig(), key="k")
    vector.create_index(VectorIndexConfig(space="ip", hnsw=HnswIndexConfig(ef_search=50)))
    for name, declared in (("src2", vector), ("src3", None)):
        source = client.create_collection(name, schema=declared, embedding_function=None)
        source.add(ids=["a"], embeddings=[[1.0, 2.0]], metadatas=[{"seen": 1.5}])
        source = client.get_collection(name)
        again = client.create_collection(
            name + "b",
            schema=source._model.schema,
            configuration=source.configuration,
            metadata={"hnsw:space": hnsw_of(source)["space"]},
            embedding_function=None,
        )
        assert again.configuration == source.configuration
        assert shown(again) == shown(source)  # keys seen in records come along, declared
    # A key declared with exactly the default indexes asks for nothing beyond the default
    # schema: no clash with a configuration (Chroma refuses this one too).
    plain = Schema().create_index(IntInvertedIndexConfig(), key="n")
    col = client.create_collection(
        "plainkey", schema=plain, configuration={"hnsw": {"space": "ip"}}, embedding_function=None
    )
    assert hnsw_of(col)["space"] == "ip"
    assert shown(col)["keys"]["n"] == {"int": {"int_inverted_index": _index(True)}}
    assert shown(col)["defaults"]["float_list"]["vector_index"]["config"]["space"] == "ip"


def test_the_schemas_embedding_function_is_the_collections(client: tintdb.Client) -> None:
    class Fives:
        def __call__(self, input: list[str]) -> list[list[float]]:
            return [[5.0, float(len(text))] for text in input]

        @staticmethod
        def name() -> str:
            return "fives"

        def get_config(self) -> dict[str, Any]:
            return {}

        def default_space(self) -> str:
            return "ip"

    schema = Schema().create_index(VectorIndexConfig(embedding_function=Fives()))
    col = client.create_collection("efs", schema=schema)
    assert col.configuration["embedding_function"] == {
        "type": "known",
        "name": "fives",
        "config": {},
    }
    assert hnsw_of(col)["space"] == "ip"  # the function's default space
    col.add(ids=["a"], documents=["abc"])
    np.testing.assert_array_equal(col.get(include=["embeddings"])["embeddings"], [[5.0, 3.0]])
    with pytest.raises(tintdb.errors.EmbeddingFunctionError, match="Two embedding functions"):
        client.create_collection(
            "efs2", configuration={"embedding_function": Fives()}, embedding_function=_Sixes()
        )


class _Sixes:
    def __call__(self, input: list[str]) -> list[list[float]]:
        return [[6.0, 6.0] for _ in input]

    @staticmethod
    def name() -> str:
        return "sixes"

    def get_config(self) -> dict[str, Any]:
        return {}


# ---------------------------------------------------------------- modify


def test_modify_changes_search_settings_and_keeps_the_schema(client: tintdb.Client) -> None:
    schema = Schema().delete_index(StringInvertedIndexConfig(), key="t")
    col = client.create_collection("mod", schema=schema, embedding_function=None)
    update = {"ef_search": 20, "num_threads": 3, "batch_size": 50, "sync_threshold": 500}
    col.modify(configuration={"hnsw": {**update, "resize_factor": 1.5}})
    for c in (col, client.get_collection("mod")):
        got = hnsw_of(c)
        assert {k: got[k] for k in update} == update and got["resize_factor"] == 1.5
        schema_json = shown(c)
        for where in (schema_json["defaults"], schema_json["keys"]["#embedding"]):
            hnsw = where["float_list"]["vector_index"]["config"]["hnsw"]
            assert {k: hnsw[k] for k in update} == update
        assert schema_json["keys"]["t"] == {"string": {"string_inverted_index": _index(False)}}
    # The graph's shape is fixed: refused unless sent back unchanged.
    for field, value in (("space", "ip"), ("ef_construction", 5), ("max_neighbors", 5)):
        with pytest.raises(InvalidArgumentError, match=f"hnsw {field} is fixed"):
            col.modify(configuration={"hnsw": {field: value}})
    col.modify(configuration={"hnsw": {"space": "l2", "ef_construction": 100}})
    with pytest.raises(InvalidArgumentError, match="spann settings cannot be changed"):
        col.modify(configuration={"spann": {"search_nprobe": 5}})
    with pytest.raises(InvalidArgumentError, match="Unknown HNSW parameter 'nope'"):
        col.modify(configuration={"hnsw": {"nope": 1}})
    assert hnsw_of(client.get_collection("mod"))["ef_search"] == 20
    col.add(ids=["a"], embeddings=[[1.0, 2.0]])
    assert col.query(query_embeddings=[[1.0, 2.0]], n_results=1)["ids"] == [["a"]]


# ---------------------------------------------------------------- sparse vector indexes


def test_sparse_vector_index_declarations_are_kept(client: tintdb.Client, reopen) -> None:  # type: ignore[no-untyped-def]
    schema = (
        Schema()
        .create_index(SparseVectorIndexConfig(bm25=True), key="sparse")
        .delete_index(StringInvertedIndexConfig(), key="other")
    )
    col = client.create_collection("sparse", schema=schema, embedding_function=None)
    entry = {
        "sparse_vector": {
            "sparse_vector_index": _index(
                True, {"embedding_function": {"type": "unknown"}, "bm25": True}
            )
        }
    }
    assert shown(col)["keys"]["sparse"] == entry
    client = reopen(client)
    try:
        got = client.get_collection("sparse")
        assert shown(got)["keys"]["sparse"] == entry
        index = got.schema.keys["sparse"].sparse_vector.sparse_vector_index
        assert index.enabled is True and index.config.bm25 is True
    finally:
        client.close()


def test_one_sparse_vector_index_and_its_source(client: tintdb.Client) -> None:
    two = {
        "defaults": {},
        "keys": {
            k: {"sparse_vector": {"sparse_vector_index": _index(True)}} for k in ("one", "two")
        },
    }
    with pytest.raises(InvalidArgumentError, match="at most one sparse vector index"):
        client.create_collection("spx", schema=two, embedding_function=None)
    sourced = {
        "defaults": {},
        "keys": {
            "sp": {
                "sparse_vector": {
                    "sparse_vector_index": _index(
                        True,
                        {
                            "source_key": "#document",
                            "embedding_function": {
                                "type": "known",
                                "name": "chroma_bm25",
                                "config": {},
                            },
                        },
                    )
                }
            }
        },
    }
    assert client.count_collections() == 0
    # filled from the documents by its function (tests/test_search.py runs it)
    col = client.create_collection("spx", schema=sourced, embedding_function=None)
    kept = col.schema.serialize_to_json()["keys"]["sp"]["sparse_vector"]["sparse_vector_index"]
    assert kept["config"]["source_key"] == "#document"


# ---------------------------------------------------------------- refused schemas


BAD_SCHEMAS = [
    ({"defaults": {}}, "needs 'defaults' and 'keys'"),
    ({"defaults": {}, "keys": {}, "extra": 1}, "unknown field 'extra'"),
    (
        {
            "defaults": {},
            "keys": {},
            "cmek": {"gcp": "projects/p/locations/l/keyRings/r/cryptoKeys/k"},
        },
        "cmek",
    ),
    ({"defaults": {}, "keys": {"#foo": {}}}, "cannot begin with '#'"),
    ({"defaults": {}, "keys": {"k": {"integer": {}}}}, "Unknown value type 'integer'"),
    (
        {"defaults": {}, "keys": {"k": {"int": {"string_inverted_index": _index(False)}}}},
        "cannot hold",
    ),
    ({"defaults": {}, "keys": {"k": {"int": {"int_inverted_index": {"config": {}}}}}}, "enabled"),
    (
        {"defaults": {}, "keys": {"k": {"int": {"int_inverted_index": _index(False, {"x": 1})}}}},
        "no settings",
    ),
    (
        {"defaults": {}, "keys": {"k": {"string": {"fts_index": _index(True)}}}},
        "only on '#document'",
    ),
    (
        {"defaults": {}, "keys": {"k": {"float_list": {"vector_index": _index(True)}}}},
        "only on '#embedding'",
    ),
    ({"defaults": {"string": {"fts_index": _index(True)}}, "keys": {}}, "every key"),
    (
        {"defaults": {"sparse_vector": {"sparse_vector_index": _index(True)}}, "keys": {}},
        "by default",
    ),
    (
        {"defaults": {}, "keys": {"#embedding": {"float_list": {"vector_index": _index(False)}}}},
        "cannot be disabled",
    ),
    (
        {
            "defaults": {},
            "keys": {
                "#embedding": {"float_list": {"vector_index": _index(True, {"source_key": "t"})}}
            },
        },
        "only source from '#document'",
    ),
    (
        {
            "defaults": {},
            "keys": {"#document": {"string": {"string_inverted_index": _index(True)}}},
        },
        "string inverted index",
    ),
    (
        {
            "defaults": {},
            "keys": {
                "#embedding": {"float_list": {"vector_index": _index(True, {"hnsw": {"x": 1}})}}
            },
        },
        "Unknown HNSW parameter 'x'",
    ),
]


@pytest.mark.parametrize(("schema", "why"), BAD_SCHEMAS)
def test_invalid_schemas_are_refused_and_create_nothing(
    client: tintdb.Client, schema: dict[str, Any], why: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=why):
        client.create_collection("bad", schema=schema, embedding_function=None)
    assert client.count_collections() == 0


def test_the_python_schema_api_refuses_what_chromas_refuses() -> None:
    s = Schema()
    for call, why in (
        (lambda: s.create_index(), "needs a config or a key"),
        (
            lambda: s.create_index(StringInvertedIndexConfig(), key="#x"),
            "key cannot begin with '#'",
        ),
        (
            lambda: s.create_index(StringInvertedIndexConfig(), key="#embedding"),
            "Cannot create index on special key '#embedding'",
        ),
        (
            lambda: s.delete_index(StringInvertedIndexConfig(), key="#document"),
            "Cannot delete index on special key '#document'",
        ),
        (lambda: s.create_index(VectorIndexConfig(), key="k"), "metadata key"),
        (lambda: s.create_index(FtsIndexConfig(), key="k"), "only be enabled on '#document'"),
        (lambda: s.create_index(SparseVectorIndexConfig()), "must be created on a key"),
        (lambda: s.delete_index(VectorIndexConfig()), "not supported"),
        (lambda: s.delete_index(SparseVectorIndexConfig(), key="k"), "not supported"),
        (lambda: VectorIndexConfig(source_key="#embedding"), "source_key cannot begin with '#'"),
        (lambda: HnswIndexConfig(nope=1), "'nope' is not a valid field for HnswIndexConfig"),
        (lambda: FtsIndexConfig(x=1), "not a valid field for FtsIndexConfig"),
    ):
        with pytest.raises(ValueError, match=why):
            call()
    s.create_index(SparseVectorIndexConfig(), key="a")
    with pytest.raises(ValueError, match="at most one"):
        s.create_index(SparseVectorIndexConfig(), key="b")


# ---------------------------------------------------------------- processes and upgrades


def test_a_second_process_sees_the_schema_and_honours_it(tmp_path: Path) -> None:
    path = tmp_path / "store"
    schema = Schema().delete_index(StringInvertedIndexConfig(), key="t")
    with tintdb.PersistentClient(path=str(path)) as client:
        col = client.create_collection("shared", schema=schema, embedding_function=None)
        col.add(ids=["a"], embeddings=[[1.0, 2.0]], metadatas=[{"t": "x", "u": 1}])
        expected = shown(client.get_collection("shared"))
    script = f"""
import json, tintdb
with tintdb.PersistentClient(path={str(path)!r}) as client:
    col = client.get_collection("shared")
    try:
        col.get(where={{"t": "x"}})
        refused = None
    except tintdb.errors.InvalidArgumentError as exc:
        refused = str(exc)
    print(json.dumps({{"schema": col._model.schema, "refused": refused,
                      "u": col.get(where={{"u": 1}})["ids"]}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["schema"] == expected
    assert "Cannot filter using metadata key 't'" in got["refused"]
    assert got["u"] == ["a"]


def test_a_file_from_before_collection_keys_is_filled_on_open(tmp_path: Path) -> None:
    path = tmp_path / "store"
    with tintdb.PersistentClient(path=str(path)) as client:
        col = client.create_collection("old", embedding_function=None)
        col.add(
            ids=["a", "b"],
            embeddings=EMB[:2],
            metadatas=[{"s": "x", "n": 1, "tags": ["p", "q"]}, {"n": 2.5, "ok": True}],
        )
    db = sqlite3.connect(path / "tintdb.sqlite3")
    # As a file written at schema 4, before the table existed (see also the store-v4
    # fixture in test_schema_upgrade.py).
    db.execute("DROP TABLE collection_keys")
    db.execute("PRAGMA user_version = 4")
    db.commit()
    db.close()
    with tintdb.PersistentClient(path=str(path)) as client:
        keys = shown(client.get_collection("old"))["keys"]
    assert {k: set(v) for k, v in keys.items() if not k.startswith("#")} == {
        "s": {"string"},
        "n": {"int", "float"},
        "tags": {"string"},
        "ok": {"bool"},
    }


def test_a_copied_collection_keeps_its_schema(tmp_path: Path) -> None:
    """tintdb copy carries a declared schema (with the vector index it sets) along."""
    schema = (
        Schema()
        .delete_index(StringInvertedIndexConfig(), key="secret")
        .create_index(VectorIndexConfig(space="cosine", hnsw=HnswIndexConfig(ef_search=40)))
    )
    with tintdb.PersistentClient(path=str(tmp_path / "a")) as client:
        col = client.create_collection("kept", schema=schema, embedding_function=None)
        col.add(ids=["a"], embeddings=[[1.0, 2.0]], metadatas=[{"secret": "s", "n": 1}])
        plain = client.create_collection(
            "plain", metadata={"hnsw:space": "ip"}, embedding_function=None
        )
        plain.add(ids=["b"], embeddings=[[1.0, 2.0]], metadatas=[{"n": 1}])
        source = {c.name: (shown(c), c.configuration) for c in client.list_collections()}
    report = tintdb.copy(str(tmp_path / "a"), str(tmp_path / "b"), progress=False)
    assert report.ok, report.as_dict()
    with tintdb.PersistentClient(path=str(tmp_path / "b")) as client:
        for name, (schema_json, configuration) in source.items():
            copied = client.get_collection(name)
            assert shown(copied) == schema_json
            assert copied.configuration == configuration
        with pytest.raises(InvalidArgumentError, match="'secret' with type 'Str'"):
            client.get_collection("kept").get(where={"secret": "s"})


def test_the_schema_of_a_closed_clients_collection_is_a_clear_error(tmp_path: Path) -> None:
    client = tintdb.PersistentClient(path=str(tmp_path / "store"))
    col = client.create_collection("late", embedding_function=None)
    client.close()
    with pytest.raises(InvalidArgumentError, match="closed"):
        col.schema  # noqa: B018 (built on first access)
