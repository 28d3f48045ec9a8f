"""The Search API, sparse vectors, BM25 and fork, embedded (and through tintdb's own
HTTP client): the semantics docs/search.md states, case by case. The random cases are
in test_search_properties.py, the official clients in test_search_official.py."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from _server import TintServer
from conftest import hnsw_for_every_size

import tintdb
from tintdb import K, Knn, Rrf, Schema, Search, SparseVector, SparseVectorIndexConfig, _local
from tintdb._search.bm25 import ChromaBm25EmbeddingFunction, murmur3_32
from tintdb.errors import (
    InvalidArgumentError,
    InvalidDimensionException,
    NotFoundError,
    UniqueConstraintError,
)
from tintdb.execution.expression import GroupBy, MaxK, MinK, Val

FIXTURE = Path(__file__).parent / "fixtures" / "chroma_bm25_vectors.json"


def sparse(indices: list[int], values: list[float]) -> SparseVector:
    return SparseVector(indices=indices, values=values)


def make(client: Any, name: str = "docs", **kw: Any) -> Any:
    schema = Schema().create_index(SparseVectorIndexConfig(**kw), key="sp")
    return client.create_collection(name, schema=schema, embedding_function=None)


@pytest.fixture
def col() -> Any:
    """Five records on a line: embeddings [i, 0], sparse vectors on dims 1..3."""
    c = make(tintdb.EphemeralClient())
    c.add(
        ids=["a", "b", "c", "d", "e"],
        embeddings=[[float(i), 0.0] for i in range(5)],
        documents=["red apple", "green apple", "red car", None, "blue sky"],
        metadatas=[
            {"cat": "fruit", "n": 1, "sp": sparse([1, 2], [1.0, 0.5])},
            {"cat": "fruit", "n": 2, "sp": sparse([2], [2.0])},
            {"cat": "thing", "n": 3, "sp": sparse([1, 3], [0.25, 1.0])},
            {"cat": "thing", "n": 4},
            {"n": 5, "sp": sparse([3], [3.0])},
        ],
    )
    return c


def rows(result: Any, i: int = 0) -> list[tuple[str, float | None]]:
    return [(r["id"], r.get("score")) for r in result.rows()[i]]


# ---------------------------------------------------------------- BM25


def test_bm25_makes_chromadbs_vectors() -> None:
    """Vectors written by chromadb 1.5.9's own function (tests/fixtures/
    make_chroma_bm25_vectors.py, run in a chromadb venv) for the same texts."""
    fixture = json.loads(FIXTURE.read_text())
    assert len(fixture["cases"]) == 4
    for case in fixture["cases"]:
        fn = ChromaBm25EmbeddingFunction(**case["config"])
        got = fn(fixture["texts"])
        for text, vector, want in zip(fixture["texts"], got, case["vectors"], strict=True):
            assert vector.indices == want["indices"], text
            assert vector.values == want["values"], text  # the same arithmetic, bit for bit
            assert vector.labels == want["labels"], text
        rebuilt = ChromaBm25EmbeddingFunction.build_from_config(fn.get_config())
        assert rebuilt.get_config() == fn.get_config()


def test_murmur3_known_values() -> None:
    # MurmurHash3 x86_32 reference values (seed 0 and 1).
    assert murmur3_32(b"") == 0
    assert murmur3_32(b"", 1) == 0x514E28B7
    assert murmur3_32(b"hello") == 0x248BFA47
    assert murmur3_32(b"Hello, world!") == 0xC0363E43


def test_bm25_refuses_a_bare_string() -> None:
    with pytest.raises(InvalidArgumentError, match="list of texts"):
        ChromaBm25EmbeddingFunction()("just text")  # type: ignore[arg-type]


# ---------------------------------------------------------------- the rank algebra


def test_knn_scores_distances_and_positions(col: Any) -> None:
    q = [1.2, 0.0]
    got = col.search(Search().rank(Knn(query=q, limit=3)).select(K.SCORE))
    assert [i for i, _ in rows(got)] == ["b", "c", "a"]
    assert [s for _, s in rows(got)] == pytest.approx([0.04, 0.64, 1.44], rel=1e-6)
    ranked = col.search(Search().rank(Knn(query=q, limit=3, return_rank=True)).select(K.SCORE))
    assert rows(ranked) == [("b", 0.0), ("c", 1.0), ("a", 2.0)]


def test_a_knn_without_default_drops_the_records_it_did_not_find(col: Any) -> None:
    dense = Knn(query=[0.0, 0.0], limit=2)  # a, b
    sparse_knn = Knn(query=sparse([3], [1.0]), key="sp", limit=2)  # e (1-3), c (1-1)
    assert rows(col.search(Search().rank(dense + sparse_knn))) == []  # no record in both
    with_default = Knn(query=sparse([3], [1.0]), key="sp", limit=2, default=10.0)
    got = col.search(Search().rank(dense + with_default).select(K.SCORE))
    # the dense Knn has no default: its records only, the sparse one's default filling in
    assert rows(got) == [("a", 10.0), ("b", 11.0)]
    both = Knn(query=[0.0, 0.0], limit=2, default=100.0) + with_default
    got = col.search(Search().rank(both).select(K.SCORE))
    # both have defaults: every record either found
    assert rows(got) == [("a", 10.0), ("b", 11.0), ("e", 98.0), ("c", 100.0)]


def test_rrf_is_its_formula(col: Any) -> None:
    dense = Knn(query=[0.0, 0.0], limit=5, return_rank=True)
    words = Knn(query=sparse([1, 2], [1.0, 1.0]), key="sp", limit=5, return_rank=True)
    got = col.search(Search().rank(Rrf([dense, words], k=10, weights=[2.0, 1.0])).select(K.SCORE))
    # dense order a b c d e; sparse dots a 1.5, b 2.0, c 0.25 -> b a c
    dense_pos = {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}
    sparse_pos = {"b": 0, "a": 1, "c": 2}
    want = {r: -(2.0 / (10 + dense_pos[r]) + 1.0 / (10 + sparse_pos[r])) for r in ("a", "b", "c")}
    assert [i for i, _ in rows(got)] == sorted(want, key=want.__getitem__)
    for record, score in rows(got):
        assert score == pytest.approx(want[record])


def test_arithmetic_and_functions(col: Any) -> None:
    knn = Knn(query=[0.0, 0.0], limit=3)  # a 0, b 1, c 4
    cases = [
        (knn * 2 + 1, {"a": 1.0, "b": 3.0, "c": 9.0}),
        (10 - knn, {"a": 10.0, "b": 9.0, "c": 6.0}),
        (knn / 2, {"a": 0.0, "b": 0.5, "c": 2.0}),
        ((knn + 1).log(), {"a": 0.0, "b": math.log(2), "c": math.log(5)}),
        (knn.exp(), {"a": 1.0, "b": math.e, "c": math.exp(4)}),
        (abs(knn - 2), {"a": 2.0, "b": 1.0, "c": 2.0}),
        (knn.max(1.5).min(3), {"a": 1.5, "b": 1.5, "c": 3.0}),
        (-knn, {"a": 0.0, "b": -1.0, "c": -4.0}),
    ]
    for expr, want in cases:
        got = dict(rows(col.search(Search().rank(expr).select(K.SCORE))))
        assert got == pytest.approx(want), expr


def test_scores_that_are_not_numbers_come_back_none(col: Any) -> None:
    knn = Knn(query=[0.0, 0.0], limit=2)  # a 0, b 1
    got = rows(col.search(Search().rank((knn - 1).log()).select(K.SCORE)))
    # log(-1) is NaN (sorted last), log(0) is -inf: neither has a JSON number
    assert got == [("b", None), ("a", None)]


def test_without_rank_records_come_in_insertion_order(col: Any) -> None:
    got = col.search(Search().limit(2, offset=1).select(K.SCORE, K.DOCUMENT))
    assert rows(got) == [("b", 0.0), ("c", 1.0)]  # scored by position in the page
    assert got["documents"] == [["green apple", "red car"]]
    assert rows(col.search(Search())) == [(i, None) for i in "abcde"]


def test_limit_and_offset_page_the_ranked_records(col: Any) -> None:
    rank = Knn(query=[4.0, 0.0], limit=5)
    ids = [i for i, _ in rows(col.search(Search().rank(rank)))]
    assert ids == ["e", "d", "c", "b", "a"]
    assert [i for i, _ in rows(col.search(Search().rank(rank).limit(2, offset=2)))] == ["c", "b"]
    assert rows(col.search(Search().rank(rank).limit(3, offset=10))) == []


# ---------------------------------------------------------------- filters and select


def test_filters_mix_ids_documents_and_metadata(col: Any) -> None:
    def ids(where: Any) -> list[str]:
        return [i for i, _ in rows(col.search(Search().where(where)))]

    assert ids(K.DOCUMENT.contains("apple")) == ["a", "b"]
    assert ids(K.DOCUMENT.not_contains("apple")) == ["c", "d", "e"]
    assert ids(K.DOCUMENT.regex("^(red|blue) ")) == ["a", "c", "e"]
    assert ids(K.ID.is_in(["e", "a", "zz"])) == ["a", "e"]
    assert ids(K.ID.not_in(["a", "b"])) == ["c", "d", "e"]
    assert ids(K.ID != "c") == ["a", "b", "d", "e"]
    assert ids(K.DOCUMENT.contains("red") | (K("n") >= 4)) == ["a", "c", "d", "e"]
    assert ids((K("cat") == "thing") & (K.DOCUMENT.contains("car") | K.ID.is_in(["d"]))) == [
        "c",
        "d",
    ]
    assert ids(K("cat").not_in(["fruit"])) == ["c", "d", "e"]  # a missing key is not in
    # a filter narrows the Knn's candidates before its limit applies
    got = col.search(Search().where(K("n") > 2).rank(Knn(query=[0.0, 0.0], limit=2)))
    assert [i for i, _ in rows(got)] == ["c", "d"]


def test_select_returns_the_fields_asked_for(col: Any) -> None:
    got = col.search(Search().where(K.ID == "a").select("cat", "nope", K.SCORE))
    assert got["select"] == [["#score", "cat", "nope"]]
    assert got["metadatas"] == [[{"cat": "fruit"}]]
    assert got["documents"] == [None] and got["embeddings"] == [None]
    full = col.search(Search().where(K.ID == "a").select_all())
    assert full["select"] == [["#document", "#embedding", "#metadata", "#score"]]
    assert full["embeddings"] == [[[0.0, 0.0]]]
    md = full["metadatas"][0][0]
    assert md["cat"] == "fruit" and md["sp"] == sparse([1, 2], [1.0, 0.5])
    assert full.rows()[0][0]["document"] == "red apple"


def test_a_batch_is_one_answer_per_search(col: Any) -> None:
    got = col.search([Search().where(K.ID == "b"), Search().limit(1), Search().where(K.ID == "x")])
    assert got["ids"] == [["b"], ["a"], []]
    assert col.search([])["ids"] == []


# ---------------------------------------------------------------- group_by


def test_group_by_keeps_k_per_group(col: Any) -> None:
    rank = Knn(query=[0.0, 0.0], limit=5)
    best = col.search(
        Search().rank(rank).group_by(GroupBy(keys=K("cat"), aggregate=MinK(keys=K.SCORE, k=1)))
    )
    # fruit: a; thing: c; no cat (a group of its own): e
    assert [i for i, _ in rows(best)] == ["a", "c", "e"]
    worst = col.search(
        Search().rank(rank).group_by(GroupBy(keys=[K("cat")], aggregate=MaxK(keys=[K.SCORE], k=1)))
    )
    assert [i for i, _ in rows(worst)] == ["b", "d", "e"]
    by_n = col.search(
        Search()
        .rank(rank)
        .group_by(GroupBy(keys="cat", aggregate=MaxK(keys=["n", K.SCORE], k=2)))
        .limit(2)
    )
    assert [i for i, _ in rows(by_n)] == ["a", "b"]


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("search", "message"),
    [
        (Search().where(K("cat").regex("f.*")), "on metadata key 'cat' is not supported"),
        (Search().where(K.EMBEDDING == 1), "cannot filter on '#embedding'"),
        (Search().where(K.DOCUMENT == "x"), "$eq on K.DOCUMENT is not supported"),
        (Search().where(K.ID > "a"), "$gt on K.ID is not supported"),
        (Search().rank(Val(1.0)), "has no Knn"),
        (
            Search().group_by(GroupBy(keys=K("cat"), aggregate=MinK(keys=K.SCORE, k=1))),
            "grouping needs a rank expression",
        ),
        ({"rank": {"$pow": [{"$val": 1}, {"$val": 2}]}}, "'$pow' is not supported"),
        (Search().select("#uri"), "cannot select '#uri'"),
        (Search().rank(Knn(query=sparse([1], [1.0]), key="other")), "no sparse vector index"),
        (Search().rank(Knn(query=[1.0, 2.0], key="sp")), "a dense query searches #embedding"),
        (Search().rank(Knn(query=sparse([1], [1.0]))), "not #embedding"),
        (Search().rank(Knn(query=[1.0], limit=0)), "limit must be a positive int"),
    ],
)
def test_unsupported_expressions_are_refused_by_name(col: Any, search: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        col.search(search)
    assert message in str(info.value)


def test_text_queries_are_embedded_by_the_collections_functions(col: Any) -> None:
    # embedding_function=None means the default model (384 dimensions), as in chromadb
    with pytest.raises(InvalidDimensionException, match="dimension 384"):
        col.search(Search().rank(Knn(query="apple")))
    with pytest.raises(InvalidArgumentError, match="Cannot embed the text"):
        col.search(Search().rank(Knn(query="apple", key="sp")))


def test_dimension_and_read_level(col: Any) -> None:
    with pytest.raises(InvalidDimensionException, match="dimension 3"):
        col.search(Search().rank(Knn(query=[1.0, 2.0, 3.0])))
    for level in ("index_only", "index_and_bounded_wal", tintdb.ReadLevel.INDEX_AND_WAL):
        assert col.search(Search().limit(1), read_level=level)["ids"] == [["a"]]
    with pytest.raises(InvalidArgumentError, match="read_level"):
        col.search(Search(), read_level="eventually")


# ---------------------------------------------------------------- sparse vectors


def test_sparse_vectors_are_stored_updated_and_deleted(tmp_path: Path) -> None:
    with tintdb.PersistentClient(str(tmp_path)) as client:
        c = make(client)
        c.add(
            ids=["x", "y", "z"],
            embeddings=[[0.0], [1.0], [2.0]],
            metadatas=[
                {"sp": {"#type": "sparse_vector", "indices": [5], "values": [1.0]}},
                {"sp": sparse([5, 9], [2.0, 1.0]), "k": 1},
                {"k": 2},
            ],
        )
        c.update(ids=["x"], metadatas=[{"sp": sparse([9], [4.0])}])
        c.upsert(ids=["z"], embeddings=[[2.0]], metadatas=[{"sp": sparse([5], [3.0])}])
        c.delete(ids=["y"])
    with tintdb.PersistentClient(str(tmp_path)) as client:
        c = client.get_collection("docs")
        got = c.search(
            Search().rank(Knn(query=sparse([5, 9], [1.0, 1.0]), key="sp")).select(K.SCORE)
        )
        assert rows(got) == [("x", 1.0 - 4.0), ("z", 1.0 - 3.0)]
        assert c.get(ids=["z"])["metadatas"] == [{"k": 2, "sp": sparse([5], [3.0])}]
        c.update(ids=["x"], metadatas=[{"sp": None}])  # removing the key removes its postings
        got = c.search(Search().rank(Knn(query=sparse([9], [1.0]), key="sp")))
        assert rows(got) == []


def test_sparse_vectors_are_checked() -> None:
    c = make(tintdb.EphemeralClient())
    bad = [
        {"#type": "sparse_vector", "indices": [2, 1], "values": [1.0, 1.0]},
        {"#type": "sparse_vector", "indices": [1], "values": [1.0, 2.0]},
        {"#type": "sparse_vector", "indices": [-1], "values": [1.0]},
        {"#type": "sparse_vector", "indices": [1], "values": [float("nan")]},
    ]
    for value in bad:
        with pytest.raises(InvalidArgumentError):
            c.add(ids=["x"], embeddings=[[1.0]], metadatas=[{"sp": value}])
    assert c.count() == 0


def test_bm25_fills_the_key_from_documents() -> None:
    client = tintdb.EphemeralClient()
    bm25 = ChromaBm25EmbeddingFunction()
    c = make(client, "bm25", embedding_function=bm25, source_key=K.DOCUMENT)
    c.add(
        ids=["1", "2", "3"],
        embeddings=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
        documents=["The cat sat on the mat", "Dogs chase cats", "Quantum physics lecture"],
    )
    stored = c.get(include=["metadatas"])["metadatas"]
    assert stored[0]["sp"] == bm25(["The cat sat on the mat"])[0]
    got = c.search(Search().rank(Knn(query="cats", key="sp")).select(K.SCORE))
    assert [i for i, _ in rows(got)] == ["1", "2"]  # "cats" stems to "cat"
    c.update(ids=["3"], documents=["a cat physicist"], embeddings=[[1.0, 1.0]])
    c.upsert(ids=["4"], documents=["no felines here"], embeddings=[[0.5, 0.5]])
    got = c.search(Search().rank(Knn(query="cat", key="sp")))
    assert sorted(i for i, _ in rows(got)) == ["1", "2", "3"]
    # a vector given explicitly wins over the function
    c.add(
        ids=["5"],
        embeddings=[[0.0, 0.0]],
        documents=["cat"],
        metadatas=[{"sp": sparse([1], [1.0])}],
    )
    assert c.get(ids=["5"], include=["metadatas"])["metadatas"][0]["sp"] == sparse([1], [1.0])


def test_bm25_flag_weighs_the_query_by_inverse_document_frequency() -> None:
    c = make(tintdb.EphemeralClient(), "idf", bm25=True)
    # term 1 in 3 of 4 records, term 2 in 1: the rare term counts for more
    c.add(
        ids=["a", "b", "c", "d"],
        embeddings=[[0.0], [1.0], [2.0], [3.0]],
        metadatas=[
            {"sp": sparse([1], [1.0])},
            {"sp": sparse([1], [1.0])},
            {"sp": sparse([1, 2], [1.0, 1.0])},
            {"other": 1},
        ],
    )
    got = c.search(Search().rank(Knn(query=sparse([1, 2], [1.0, 1.0]), key="sp")).select(K.SCORE))
    idf1 = math.log1p((4 - 3 + 0.5) / (3 + 0.5))
    idf2 = math.log1p((4 - 1 + 0.5) / (1 + 0.5))
    assert [i for i, _ in rows(got)] == ["c", "a", "b"]
    assert [v for _, v in rows(got)] == pytest.approx([1.0 - idf1 - idf2, 1.0 - idf1, 1.0 - idf1])


# ---------------------------------------------------------------- dense Knn keeps query's promises


def test_dense_knn_answers_as_query_does(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(3000, 8)).astype(np.float32)
    parity = [{"p": i % 50} for i in range(3000)]
    with tintdb.PersistentClient(str(tmp_path)) as client:
        c = client.create_collection("big", embedding_function=None)
        c.add(ids=[str(i) for i in range(3000)], embeddings=vectors, metadatas=parity)
    for reopened in (True, False):
        # first with the index not in memory (answered from SQLite), then with it
        with tintdb.PersistentClient(str(tmp_path)) as client:
            c = client.get_collection("big")
            for q in vectors[:3]:
                for where in (None, {"p": 3}, {"p": {"$in": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}):
                    want = c.query(query_embeddings=[q], n_results=20, where=where)
                    search = Search(where=where).rank(Knn(query=q.tolist(), limit=20))
                    got = c.search(search.select(K.SCORE))
                    assert got["ids"][0] == want["ids"][0]
                    assert got["scores"][0] == pytest.approx(want["distances"][0], rel=1e-6)
                    if not reopened:
                        assert len(got["ids"][0]) == 20  # never short: 60 records match {"p": 3}
            reopened = False


def test_a_filtered_dense_knn_takes_querys_sampled_plan(tmp_path: Path) -> None:
    """Above the sampling size, a new filter that many records pass is post-filtered
    after testing a sample, without listing its matches, in search as in query; and
    the answers are query's."""
    rng = np.random.default_rng(11)
    n = _local.planner.SAMPLE_ABOVE + 1000
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    with tintdb.PersistentClient(str(tmp_path)) as client:
        c = make(client, "wide")
        c.add(
            ids=[str(i) for i in range(n)],
            embeddings=vectors,
            metadatas=[{"p": i % 50, "sp": sparse([i % 5], [1.0])} for i in range(n)],
        )
        backend = c._backend
        for q, where in zip(
            vectors[:3], ({"p": {"$lt": 20}}, {"p": {"$gte": 5}}, {"p": {"$ne": 1}}), strict=True
        ):
            got = c.search(
                Search(where=where).rank(Knn(query=q.tolist(), limit=20)).select(K.SCORE)
            )
            key = orjson.dumps([None, where, None], option=orjson.OPT_SORT_KEYS)
            listed = [k for k in backend.reads.filters.listed() if k[2] == key]
            assert listed == []  # post-filtered from the sample: the matches were not listed
            want = c.query(query_embeddings=[q], n_results=20, where=where)  # seen again
            assert got["ids"][0] == want["ids"][0] and len(got["ids"][0]) == 20
            assert got["scores"][0] == pytest.approx(want["distances"][0], rel=1e-6)
        # a sparse Knn beside it needs the matches listed, and still agrees
        both = Search(where={"p": {"$lt": 20}}).rank(
            Knn(query=vectors[0].tolist(), limit=20)
            + Knn(query=sparse([0], [1.0]), key="sp", limit=n)
        )
        ids = c.search(both)["ids"][0]
        want = c.query(query_embeddings=[vectors[0]], n_results=20, where={"p": {"$lt": 20}})
        assert ids == [i for i in want["ids"][0] if int(i) % 5 == 0]


# ---------------------------------------------------------------- fork


def test_fork_copies_and_then_lives_apart(tmp_path: Path) -> None:
    with tintdb.PersistentClient(str(tmp_path)) as client:
        c = make(client, "src")
        c.add(
            ids=[str(i) for i in range(300)],
            embeddings=[[float(i), 1.0] for i in range(300)],
            metadatas=[{"i": i, "sp": sparse([i % 7], [1.0])} for i in range(300)],
            documents=[f"doc {i}" for i in range(300)],
        )
        c.delete(ids=["5"])
        f = c.fork("copy")
        assert (f.name, f.count(), f.metadata) == ("copy", 299, c.metadata)
        assert f.configuration_json == c.configuration_json
        assert f.get(ids=["7"], include=["metadatas", "documents", "embeddings"])["documents"] == [
            "doc 7"
        ]
        q = Search().where(K.DOCUMENT.contains("doc 1")).rank(Knn(query=[10.2, 1.0], limit=5))
        assert f.search(q)["ids"] == c.search(q)["ids"]
        sq = Search().rank(Knn(query=sparse([3], [1.0]), key="sp", limit=100))
        assert f.search(sq)["ids"] == c.search(sq)["ids"]
        f.add(ids=["new"], embeddings=[[0.0, 0.0]])
        c.delete(ids=["7"])
        f.update(ids=["8"], metadatas=[{"i": -1}])
        assert (c.count(), f.count()) == (298, 300)
        assert c.get(ids=["8"])["metadatas"][0]["i"] == 8
        assert f.get(ids=["7"])["ids"] == ["7"]
        assert c.fork_count() == 1 and f.fork_count() == 0
        f.fork("copy2")
        assert c.fork_count() == 2 and f.fork_count() == 1
        with pytest.raises(UniqueConstraintError):
            c.fork("copy")
        with pytest.raises(InvalidArgumentError):
            c.fork("x")
    with tintdb.PersistentClient(str(tmp_path)) as client:
        f = client.get_collection("copy")
        assert f.query(query_embeddings=[[0.0, 0.0]], n_results=1)["ids"] == [["new"]]
        assert f.search(Search().rank(Knn(query=[9.0, 1.0], limit=1)))["ids"] == [["9"]]
        client.delete_collection("copy")
        assert client.get_collection("src").fork_count() == 1  # copy2 still exists


def test_fork_keeps_the_graph_of_updated_vectors(tmp_path: Path) -> None:
    """The fork's graph is the source's with its labels shifted, including the labels of
    records whose vector changed (a new node under a new generation): searched through
    the graph, fork and source agree, before and after a reopen and later writes."""
    rng = np.random.default_rng(7)
    vecs = rng.random((400, 8), dtype=np.float32)
    ids = [str(i) for i in range(400)]
    probes = rng.random((5, 8), dtype=np.float32).tolist()

    def nearest(c: Any) -> list[list[str]]:
        return c.query(query_embeddings=probes, n_results=10)["ids"]

    with hnsw_for_every_size():
        with tintdb.PersistentClient(str(tmp_path)) as client:
            c = client.create_collection("src", embedding_function=None)
            c.add(ids=ids, embeddings=vecs)
            moved = rng.random((50, 8), dtype=np.float32)
            c.update(ids=ids[:50], embeddings=moved)  # new nodes for these records
            c.delete(ids=ids[50:60])
            f = c.fork("copy")
            graph = f._backend.keeper.indexes[str(f.id)]  # the copied graph, in place at once
            assert len(graph) == 390 and len(graph._moved) == 50
            assert nearest(f) == nearest(c)
            assert f._backend.keeper.indexes[str(f.id)] is graph  # no rebuild was needed
            one = f.search(Search().rank(Knn(query=moved[3].tolist(), limit=1)))["ids"]
            assert one == [["3"]]
            f.update(ids=["3"], embeddings=[vecs[200].tolist()])  # moved again, in the fork
            assert f.get(ids=["3"], include=["embeddings"])["embeddings"][0].tolist() == (
                vecs[200].tolist()
            )
            assert c.query(query_embeddings=[moved[3].tolist()], n_results=1)["ids"] == [["3"]]
            expected = nearest(f)
        with tintdb.PersistentClient(str(tmp_path)) as client:
            f = client.get_collection("copy")
            assert nearest(f) == expected
            assert sorted(
                f.query(query_embeddings=[vecs[200].tolist()], n_results=2)["ids"][0]
            ) == [
                "200",
                "3",
            ]


def test_fork_of_an_empty_collection_and_errors() -> None:
    client = tintdb.EphemeralClient()
    empty = client.create_collection("empty", embedding_function=None)
    f = empty.fork("empty2")
    assert f.count() == 0
    f.add(ids=["a"], embeddings=[[1.0, 2.0]])
    assert empty.count() == 0 and f.count() == 1
    client.delete_collection("empty")
    with pytest.raises(NotFoundError):
        empty.fork("empty3")


# ---------------------------------------------------------------- over HTTP (tintdb's client)


def test_http_answers_as_embedded(tmp_path: Path) -> None:
    searches = [
        Search().where(K("n") >= 2).rank(Knn(query=[1.5, 0.0], limit=4)).select(K.SCORE, "cat"),
        Search()
        .rank(
            Rrf(
                [
                    Knn(query=[0.0, 0.0], limit=5, return_rank=True),
                    Knn(query=sparse([1, 3], [1.0, 1.0]), key="sp", return_rank=True),
                ]
            )
        )
        .select_all(),
    ]
    with (
        TintServer(tmp_path / "srv") as server,
        tintdb.HttpClient(host=server.host, port=server.port) as http,
    ):
        c = make(http)
        c.add(
            ids=["a", "b", "c"],
            embeddings=[[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]],
            metadatas=[
                {"n": 1, "cat": "x", "sp": sparse([1], [1.0])},
                {"n": 2, "sp": sparse([3], [2.0])},
                {"n": 3, "cat": "y"},
            ],
        )
        remote = c.search(searches)
        forked = c.fork("docs2")
        assert (forked.count(), c.fork_count()) == (3, 1)
        with pytest.raises(InvalidArgumentError, match="has no Knn"):
            c.search(Search().rank(Val(1.0)))
        with tintdb.PersistentClient(str(tmp_path / "srv")) as local:
            embedded = local.get_collection("docs").search(searches)
    assert remote == embedded
    assert remote["metadatas"][1][0]["sp"] == sparse([1], [1.0])


def test_tintdb_copy_carries_sparse_vectors(tmp_path: Path) -> None:
    from tintdb.cli import main

    with tintdb.PersistentClient(str(tmp_path / "src")) as client:
        c = client.create_collection("sparse_copy", embedding_function=None)
        c.add(
            ids=["a", "b"],
            embeddings=[[1.0], [2.0]],
            metadatas=[{"sp": sparse([1, 2], [0.5, 1.0]), "x": 1}, {"x": 2}],
        )
    assert main(["copy", "-q", str(tmp_path / "src"), str(tmp_path / "dst")]) == 0
    with tintdb.PersistentClient(str(tmp_path / "dst")) as client:
        got = client.get_collection("sparse_copy").get(include=["metadatas"])["metadatas"]
    assert got == [{"sp": sparse([1, 2], [0.5, 1.0]), "x": 1}, {"x": 2}]
