"""Record operations and their exact chromadb-shaped results, on every client kind."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from _profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

import tintdb
from tintdb._storage.rows import meta_changes, meta_rows
from tintdb._validation import merge_metadata, strip_none
from tintdb.errors import (
    DuplicateIDError,
    IDAlreadyExistsError,
    InvalidArgumentError,
    InvalidDimensionException,
    NotFoundError,
)

VECS = {"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0], "c": [0.0, 0.0, 1.0], "d": [1.0, 1.0, 0.0]}


@pytest.fixture
def col(client: tintdb.Client) -> tintdb.Collection:
    c = client.create_collection("records", embedding_function=None)
    c.add(
        ids=list(VECS),
        embeddings=list(VECS.values()),
        metadatas=[{"n": 1, "s": "x"}, {"n": 2.5, "tags": ["p", "q"]}, None, {"flag": True}],
        documents=["hello world", "foo bar", None, "hello again"],
    )
    return c


def test_get_shapes_and_defaults(col: tintdb.Collection) -> None:
    got = col.get()
    assert set(got) == {"ids", "embeddings", "documents", "uris", "data", "metadatas", "included"}
    assert got["ids"] == ["a", "b", "c", "d"]
    assert got["documents"] == ["hello world", "foo bar", None, "hello again"]
    assert got["metadatas"] == [
        {"n": 1, "s": "x"},
        {"n": 2.5, "tags": ["p", "q"]},
        None,
        {"flag": True},
    ]
    assert got["embeddings"] is None and got["uris"] is None
    assert got["included"] == ["metadatas", "documents"]
    emb = col.get(include=["embeddings"])["embeddings"]
    assert isinstance(emb, np.ndarray) and emb.shape == (4, 3) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[3], VECS["d"])


def test_get_by_ids_keeps_storage_order_and_skips_unknown(col: tintdb.Collection) -> None:
    assert col.get(ids=["d", "missing", "a"])["ids"] == ["a", "d"]
    assert col.get(ids="b")["ids"] == ["b"]


def test_limit_offset(col: tintdb.Collection) -> None:
    assert col.get(limit=2)["ids"] == ["a", "b"]
    assert col.get(offset=1, limit=2)["ids"] == ["b", "c"]
    assert col.get(limit=0)["ids"] == []
    assert col.get(offset=10)["ids"] == []
    assert col.get(where={"n": {"$gt": 0}}, offset=1)["ids"] == ["b"]
    with pytest.raises(InvalidArgumentError, match="negative"):
        col.get(limit=-1)


def test_peek_and_count(col: tintdb.Collection) -> None:
    assert col.count() == 4
    p = col.peek(2)
    assert p["ids"] == ["a", "b"]
    assert p["embeddings"].shape == (2, 3)
    assert p["documents"] == ["hello world", "foo bar"]


def test_add_existing_id_raises_and_adds_nothing(col: tintdb.Collection) -> None:
    with pytest.raises(IDAlreadyExistsError, match="a"):
        col.add(ids=["new", "a"], embeddings=[[1, 2, 3], [4, 5, 6]])
    assert col.count() == 4
    assert col.get(ids=["new"])["ids"] == []
    np.testing.assert_array_equal(
        col.get(ids=["a"], include=["embeddings"])["embeddings"][0], VECS["a"]
    )


def test_duplicate_ids_in_one_call(col: tintdb.Collection) -> None:
    with pytest.raises(DuplicateIDError, match="z"):
        col.add(ids=["z", "z"], embeddings=[[1, 2, 3], [1, 2, 3]])
    with pytest.raises(DuplicateIDError):
        col.upsert(ids=["a", "a"], embeddings=[[1, 2, 3], [1, 2, 3]])
    assert col.count() == 4


def test_dimension_is_fixed_by_first_add(client: tintdb.Client) -> None:
    c = client.create_collection("dims", embedding_function=None)
    c.add(ids=["x"], embeddings=[[1.0, 2.0]])
    with pytest.raises(InvalidDimensionException, match=r"2.*3|3.*2"):
        c.add(ids=["y"], embeddings=[[1.0, 2.0, 3.0]])
    with pytest.raises(InvalidDimensionException, match="2"):
        c.update(ids=["x"], embeddings=[[1.0, 2.0, 3.0]])
    with pytest.raises(InvalidDimensionException, match="2"):
        c.query(query_embeddings=[[1.0]])
    c.delete(ids=["x"])
    with pytest.raises(InvalidDimensionException):  # stays fixed after emptying
        c.add(ids=["z"], embeddings=[[1.0, 2.0, 3.0]])
    with pytest.raises(InvalidDimensionException):  # even when nothing can match
        c.query(query_embeddings=[[1.0]], where={"k": "v"})
    assert c.count() == 0


def test_numpy_and_single_values(client: tintdb.Client) -> None:
    c = client.create_collection("nparr", embedding_function=None)
    c.add(
        ids="one",
        embeddings=np.array([0.25, 0.5], dtype=np.float64),
        metadatas={"k": 1},
        documents="doc",
    )
    c.add(ids=["two", "three"], embeddings=np.ones((2, 2), dtype=np.float32))
    got = c.get(include=["embeddings", "metadatas", "documents"])
    assert got["ids"] == ["one", "two", "three"]
    np.testing.assert_array_equal(got["embeddings"][0], [0.25, 0.5])
    assert got["metadatas"][0] == {"k": 1} and got["documents"][0] == "doc"


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ("l2", {"a": 0.0, "d": 1.0, "b": 2.0}),
        ("ip", {"a": 0.0, "d": 0.0, "b": 1.0}),
        ("cosine", {"a": 0.0, "d": 1 - 1 / np.sqrt(2), "b": 1.0}),
    ],
)
def test_query_distances_per_space(
    client: tintdb.Client, space: str, expected: dict[str, float]
) -> None:
    c = client.create_collection("spaces", metadata={"hnsw:space": space}, embedding_function=None)
    c.add(ids=list(VECS), embeddings=list(VECS.values()))
    res = c.query(query_embeddings=[[1.0, 0.0, 0.0]], n_results=4, include=["distances"])
    got = dict(zip(res["ids"][0], res["distances"][0], strict=False))
    for rid, dist in expected.items():
        assert got[rid] == pytest.approx(dist, abs=1e-6)
    assert res["distances"][0] == sorted(res["distances"][0])


def test_ip_distance_can_be_negative(client: tintdb.Client) -> None:
    c = client.create_collection("ipneg", metadata={"hnsw:space": "ip"}, embedding_function=None)
    c.add(ids=["big"], embeddings=[[3.0, 4.0]])
    res = c.query(query_embeddings=[[1.0, 1.0]], n_results=1)
    assert res["distances"][0][0] == pytest.approx(1 - 7.0)


def test_query_shapes(col: tintdb.Collection) -> None:
    res = col.query(query_embeddings=[[1, 0, 0], [0, 1, 0]], n_results=2)
    assert res["ids"] == [["a", "d"], ["b", "d"]]
    assert res["included"] == ["metadatas", "documents", "distances"]
    assert res["embeddings"] is None and res["uris"] is None
    assert res["documents"] == [["hello world", "hello again"], ["foo bar", "hello again"]]
    assert res["metadatas"][0] == [{"n": 1, "s": "x"}, {"flag": True}]
    assert all(isinstance(d, float) for d in res["distances"][0])
    emb = col.query(query_embeddings=[[1, 0, 0]], n_results=2, include=["embeddings"])["embeddings"]
    assert isinstance(emb, list) and emb[0].shape == (2, 3)


def test_query_more_results_than_records(col: tintdb.Collection) -> None:
    res = col.query(query_embeddings=[[1, 0, 0]], n_results=100)
    assert sorted(res["ids"][0]) == ["a", "b", "c", "d"]


def test_query_no_match_gives_empty_inner_lists(col: tintdb.Collection) -> None:
    res = col.query(query_embeddings=[[1, 0, 0]], where={"s": "nothing"})
    assert res["ids"] == [[]] and res["documents"] == [[]] and res["distances"] == [[]]
    assert res["embeddings"] is None


def test_query_empty_collection(client: tintdb.Client) -> None:
    c = client.create_collection("empty", embedding_function=None)
    res = c.query(query_embeddings=[[1.0, 2.0]], n_results=3)
    assert res["ids"] == [[]] and res["distances"] == [[]]


def test_query_ids_restricts_candidates_and_unknown_is_error(col: tintdb.Collection) -> None:
    res = col.query(query_embeddings=[[1, 0, 0]], ids=["b", "c"], n_results=5)
    assert sorted(res["ids"][0]) == ["b", "c"]
    with pytest.raises(NotFoundError, match="ghost"):
        col.query(query_embeddings=[[1, 0, 0]], ids=["b", "ghost"])


def test_query_argument_errors(col: tintdb.Collection) -> None:
    with pytest.raises(InvalidArgumentError, match="n_results"):
        col.query(query_embeddings=[[1, 0, 0]], n_results=0)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        col.query()
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        col.query(query_embeddings=[[1, 0, 0]], query_texts=["x"])
    with pytest.raises(InvalidArgumentError, match="include"):
        col.query(query_embeddings=[[1, 0, 0]], include=["vectors"])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="distances"):
        col.get(include=["distances"])  # type: ignore[list-item]


def test_update_merges_metadata_and_ignores_unknown(col: tintdb.Collection) -> None:
    col.update(ids=["a", "ghost"], metadatas=[{"n": None, "new": "y"}, {"z": 1}])
    assert col.get(ids=["a"])["metadatas"] == [{"s": "x", "new": "y"}]
    col.update(ids=["a"], metadatas=[{"s": None, "new": None}])
    assert col.get(ids=["a"])["metadatas"] == [None]
    assert col.count() == 4 and col.get(ids=["ghost"])["ids"] == []


def test_update_none_entries_leave_values(col: tintdb.Collection) -> None:
    col.update(
        ids=["a", "b"],
        embeddings=[VECS["a"], VECS["b"]],
        documents=[None, "changed"],
        metadatas=[None, {"n": 9}],
    )
    got = col.get(ids=["a", "b"])
    assert got["documents"] == ["hello world", "changed"]
    assert got["metadatas"] == [{"n": 1, "s": "x"}, {"n": 9, "tags": ["p", "q"]}]


def test_new_document_is_re_embedded_or_refused(col: tintdb.Collection) -> None:
    """A new document must be re-embedded, never left with a stale vector. The collection
    stored no function, so the default one embeds (as in chromadb), and its 384
    dimensions do not fit this 3-dimension collection: refused, nothing changed."""
    with pytest.raises(InvalidArgumentError, match="384"):
        col.update(ids=["a"], documents=["changed"])
    with pytest.raises(InvalidArgumentError, match="384"):
        col.add(ids=["new"], documents=["text"])
    assert col.get(ids=["a"])["documents"] == ["hello world"]
    assert col.count() == 4


def test_update_embedding_moves_vector(col: tintdb.Collection) -> None:
    col.update(ids=["c"], embeddings=[[1.0, 0.0, 0.0]])
    res = col.query(query_embeddings=[[1, 0, 0]], n_results=2, include=["distances"])
    assert sorted(res["ids"][0]) == ["a", "c"] and res["distances"][0] == [0.0, 0.0]
    assert col.get()["ids"] == ["a", "b", "c", "d"]  # update does not move a record


def test_upsert_inserts_and_updates(col: tintdb.Collection) -> None:
    col.upsert(
        ids=["b", "e"],
        embeddings=[[0.0, 0.5, 0.0], [0.0, 0.0, 2.0]],
        metadatas=[{"extra": 1}, {"fresh": True}],
    )
    got = col.get(ids=["b", "e"], include=["embeddings", "metadatas", "documents"])
    assert got["ids"] == ["b", "e"]
    assert got["metadatas"] == [{"n": 2.5, "tags": ["p", "q"], "extra": 1}, {"fresh": True}]
    assert got["documents"] == ["foo bar", None]  # document kept when not given
    np.testing.assert_array_equal(got["embeddings"][0], [0.0, 0.5, 0.0])
    assert col.get()["ids"] == ["a", "b", "c", "d", "e"]
    col.upsert(ids=["e"], embeddings=[[0.0, 0.0, 2.0]])  # idempotent
    assert col.count() == 5


def test_delete_by_ids_filters_and_limit(col: tintdb.Collection) -> None:
    assert col.delete(ids=["a", "ghost"]) == {"deleted": 1}
    assert col.delete(where={"flag": True}) == {"deleted": 1}
    assert col.get()["ids"] == ["b", "c"]
    assert col.query(query_embeddings=[[1, 0, 0]], n_results=10)["ids"][0] in (
        ["b", "c"],
        ["c", "b"],
    )
    with pytest.raises(InvalidArgumentError, match="needs ids"):
        col.delete()
    with pytest.raises(InvalidArgumentError, match="limit"):
        col.delete(ids=["b"], limit=1)
    assert col.delete(where_document={"$not_contains": "zzz"}, limit=1) == {"deleted": 1}
    assert col.get()["ids"] == ["c"]


def test_delete_then_readd_moves_to_end(col: tintdb.Collection) -> None:
    col.delete(ids=["a"])
    col.add(ids=["a"], embeddings=[[1.0, 0.0, 0.0]])
    assert col.get()["ids"] == ["b", "c", "d", "a"]


def test_floats_round_trip_exactly(client: tintdb.Client) -> None:
    c = client.create_collection("floats", embedding_function=None)
    values = [0.1, 1 / 3, 1e-300, -2.5e300, 123456789.123456789, 2**62]
    c.add(ids=["f"], embeddings=[[1.0]], metadatas=[{f"k{i}": v for i, v in enumerate(values)}])
    md = c.get()["metadatas"][0]
    assert [md[f"k{i}"] for i in range(len(values))] == values
    assert isinstance(md["k5"], int)


def test_data_survives_reopen(client: tintdb.Client, reopen) -> None:  # type: ignore[no-untyped-def]
    c = client.create_collection(
        "durable", metadata={"hnsw:space": "cosine"}, embedding_function=None
    )
    c.add(ids=list(VECS), embeddings=list(VECS.values()), documents=["w", "x", "y", "z"])
    before = c.query(query_embeddings=[[1, 1, 0]], n_results=4)
    client = reopen(client)
    try:
        c = client.get_collection("durable")
        after = c.query(query_embeddings=[[1, 1, 0]], n_results=4)
        assert after["ids"] == before["ids"]
        assert after["distances"][0] == pytest.approx(before["distances"][0])
        assert c.get()["documents"] == ["w", "x", "y", "z"]
    finally:
        client.close()


def test_collection_handle_after_delete(client: tintdb.Client) -> None:
    c = client.create_collection("gone", embedding_function=None)
    c.add(ids=["a"], embeddings=[[1.0]])
    client.delete_collection("gone")
    with pytest.raises(NotFoundError):
        c.count()
    with pytest.raises(NotFoundError):
        c.add(ids=["b"], embeddings=[[1.0]])
    with pytest.raises(NotFoundError):
        c.query(query_embeddings=[[1.0]])


def test_filtered_query_is_never_short(client: tintdb.Client) -> None:
    """Many matches (HNSW with a filter) and few (exact search) both return n_results."""
    rng = np.random.default_rng(7)
    n = 3000
    c = client.create_collection("filt", embedding_function=None)
    vecs = rng.normal(size=(n, 8)).astype(np.float32)
    c.add(
        ids=[str(i) for i in range(n)], embeddings=vecs, metadatas=[{"m": i % 7} for i in range(n)]
    )
    q = rng.normal(size=(3, 8)).astype(np.float32)
    for value in (0, 3):
        res = c.query(query_embeddings=q, n_results=25, where={"m": value}, include=["distances"])
        members = np.array([i for i in range(n) if i % 7 == value])
        for qi in range(3):
            d = ((vecs[members] - q[qi]) ** 2).sum(1)
            truth = {str(members[j]) for j in np.argsort(d)[:25]}
            assert len(res["ids"][qi]) == 25
            assert set(res["ids"][qi]) == truth


def test_filters_never_reach_into_another_collection(client: tintdb.Client) -> None:
    """The full-text index and the change log are shared by every collection: a
    where_document match, a filtered get, query or delete must act on its own
    collection's records only, however the two interleave in storage."""
    a = client.create_collection("aaa", embedding_function=None)
    b = client.create_collection("bbb", embedding_function=None)
    for i in range(0, 40, 10):  # interleaved seqs
        for col, tag in ((a, "a"), (b, "b")):
            col.add(
                ids=[f"{tag}{j}" for j in range(i, i + 10)],
                embeddings=[[float(j), 1.0] for j in range(i, i + 10)],
                documents=[f"shared words {j}" for j in range(i, i + 10)],
                metadatas=[{"n": j} for j in range(i, i + 10)],
            )
    wd = {"$or": [{"$contains": "words 1"}, {"$contains": "words 2"}]}
    want = [f"a{j}" for j in range(40) if str(j).startswith(("1", "2"))]
    assert a.get(where_document=wd)["ids"] == want
    assert a.get(where_document={"$contains": "shared"}, limit=5, offset=30)["ids"] == [
        f"a{j}" for j in range(30, 35)
    ]
    got = a.query(query_embeddings=[[12.0, 1.0]], n_results=40, where_document=wd)["ids"][0]
    assert sorted(got) == sorted(want)
    assert a.delete(where_document=wd) == {"deleted": len(want)}
    assert a.count() == 40 - len(want) and b.count() == 40
    assert len(b.get(where_document=wd)["ids"]) == len(want)


_META_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([1.0, 2.5, -0.5]),
    st.sampled_from(["a", "b", ""]),
    st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=3),
    st.lists(st.integers(0, 2), min_size=1, max_size=3),
)
_METADATA = st.dictionaries(st.sampled_from(["k", "n", "s", "t"]), _META_VALUE, max_size=4)


@settings(max_examples=examples(200), deadline=None)
@given(before=_METADATA, change=_METADATA)
def test_an_update_rewrites_only_the_metadata_index_rows_that_change(
    before: dict[str, Any], change: dict[str, Any]
) -> None:
    """The rows an update of some keys removes and adds turn the metadata index of the
    stored metadata into exactly that of the merged one (bools, ints and floats apart,
    list elements counted), so filters read the same as after a full rewrite."""
    before = strip_none(before) or {}
    after = merge_metadata(before, change)
    gone, added = meta_changes(7, [3], [before], [after])
    kept = [r for r in meta_rows(7, 3, before) if (r[1], r[2]) not in set(gone)]

    def typed(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return sorted((*r[:4], type(r[4]).__name__, r[4]) for r in rows)

    assert typed(kept + added) == typed(meta_rows(7, 3, after))
    assert {key for _, key in gone} <= set(before)
