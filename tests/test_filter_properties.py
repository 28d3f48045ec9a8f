"""Property tests: tintdb's filters agree with the reference model in ``_model``.

Hypothesis builds small collections (mixed-type metadata over a few keys, documents
from a small alphabet with non-ASCII characters) and random filters, valid and
invalid, and checks ``get``, ``query`` and ``delete`` against the model.

The strategies and comparison helpers here are also used by
``test_model_state_machine``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from _model import Model, ModelError
from _profiles import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tintdb
from tintdb.errors import InvalidArgumentError

# ---------------------------------------------------------------- value pools

DIM = 4
SPACES = ("l2", "ip", "cosine")
KEYS = ("a", "b", "c.é")  # a dot and a non-ASCII letter: no JSON-path surprises
STRS = ("x", "y", "é", "", "1")  # "1" must never equal 1
INTS = (-1, 0, 1, 2)
FLOATS = (0.0, 1.0, 1.5, 0.1)
# Documents: ASCII both cases, a space, precomposed and combining accents, sharp s, emoji,
# and characters that mean something to FTS5 or LIKE.
DOC_CHARS = ("a", "b", "A", "B", " ", "é", "É", "e", "\u0301", "ß", "😀", '"', "%", "_")
VALID_REGEXES = (
    "a",
    "^a",
    "b$",
    "a.b",
    "(ab)+",
    "[éÉ]",
    "ß|😀",
    "a{2}",
    r"\s",
    "É?b",
    "(?i)ab",
    "e\u0301",
    "^$",
    r"^[ab ]+$",
)
BAD_REGEXES = ("(", "[a", "*a", "a{2,1}", "(?P<x", "a)")

# Used as metadata values and filter operands, so filters often hit.
strs = st.sampled_from(STRS)
ints = st.sampled_from(INTS)
floats = st.sampled_from(FLOATS)
numbers = st.one_of(ints, floats)
bools = st.booleans()
scalars = st.one_of(strs, ints, floats, bools)
list_values = st.one_of(*(st.lists(s, min_size=1, max_size=3) for s in (strs, ints, floats, bools)))
metadata_values = st.one_of(scalars, scalars, list_values)

# Vector components are multiples of 1/4: exact in float32, and ties happen.
components = st.integers(-8, 8).map(lambda i: i / 4)


def vectors(dim: int = DIM) -> st.SearchStrategy[list[float]]:
    return st.lists(components, min_size=dim, max_size=dim)


def metadatas(allow_none_values: bool = False) -> st.SearchStrategy[dict[str, Any] | None]:
    """A record's metadata; ``None`` values (delete this key) for update/upsert."""
    values = st.one_of(metadata_values, st.none()) if allow_none_values else metadata_values
    some = st.fixed_dictionaries({}, optional=dict.fromkeys(KEYS, values)).filter(bool)
    # Mostly a dict: one call in five gives None.
    return st.tuples(st.sampled_from(range(5)), some).map(lambda t: t[1] if t[0] else None)


documents = st.one_of(st.none(), st.text(alphabet=st.sampled_from(DOC_CHARS), max_size=8))


# ---------------------------------------------------------------- valid filters


# Filters are drawn in two steps so that one static strategy serves every collection:
# hypothesis draws a *shape* whose operands may be placeholders ("the i-th value stored
# under this key", "a substring of the j-th document"), then ``wheres_for`` /
# ``where_documents`` resolve them against the collection's data, so filters often hit.

# "bare" is the {key: value} shorthand for $eq.
FIELD_FORMS = ("bare", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$contains")
FIELD_FORMS = (*FIELD_FORMS, "$not_contains")
ORDER_OPS = ("$gt", "$gte", "$lt", "$lte")


def _type_of(value: Any) -> str:
    return "bool" if isinstance(value, bool) else "str" if isinstance(value, str) else "num"


# An operand placeholder: (type wanted, a literal of each type, use a stored value?, index).
_operand_specs = st.tuples(
    st.sampled_from(("str", "num", "bool")),
    st.fixed_dictionaries({"str": strs, "num": numbers, "bool": bools}),
    st.sampled_from((True, True, True, False)),
    st.integers(0, 63),
)


def _resolve_operand(spec: tuple[Any, ...], pool: list[Any], kind: str | None = None) -> Any:
    """A value stored under the key (of ``kind`` if given) when asked and possible, else a
    literal."""
    wanted, literals, use_stored, index = spec
    if use_stored:
        stored = [v for v in pool if kind is None or _type_of(v) == kind]
        if stored:
            return stored[index % len(stored)]
    return literals[kind or wanted]


_field_shapes = st.tuples(
    st.sampled_from((*KEYS, *KEYS, "zz")),  # "zz" is never stored
    st.sampled_from(FIELD_FORMS),
    st.lists(_operand_specs, min_size=1, max_size=3),
)


def _logical(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda op, cs: {op: cs},
        st.sampled_from(("$and", "$or")),
        st.lists(children, min_size=2, max_size=3),
    )


_where_shapes = st.recursive(_field_shapes, _logical, max_leaves=5)


def _resolve_where(pools: dict[str, list[Any]], shape: Any) -> dict[str, Any]:
    if isinstance(shape, dict):
        ((op, clauses),) = shape.items()
        return {op: [_resolve_where(pools, c) for c in clauses]}
    key, form, specs = shape
    pool = pools.get(key, [])
    if form in ORDER_OPS:
        return {key: {form: _resolve_operand(specs[0], pool, "num")}}
    if form in ("$in", "$nin"):
        first = _resolve_operand(specs[0], pool)
        rest = [_resolve_operand(s, pool, _type_of(first)) for s in specs[1:]]
        return {key: {form: [first, *rest]}}
    value = _resolve_operand(specs[0], pool)
    return {key: value} if form == "bare" else {key: {form: value}}


def _pools(metadatas: Sequence[dict[str, Any] | None]) -> dict[str, list[Any]]:
    """Key -> the scalars and list items stored under it, plus int/float twins (1 <-> 1.0)."""
    pools: dict[str, dict[str, Any]] = {}
    for md in metadatas:
        for key, value in (md or {}).items():
            for v in value if isinstance(value, list) else [value]:
                if v is None:
                    continue
                twins = [v]
                if _type_of(v) == "num" and float(v).is_integer():
                    twins.append(float(v) if isinstance(v, int) else int(v))
                for t in twins:
                    pools.setdefault(key, {})[repr(t)] = t
    return {key: [d[r] for r in sorted(d)] for key, d in pools.items()}


def wheres_for(
    metadatas: Sequence[dict[str, Any] | None] = (),
) -> st.SearchStrategy[dict[str, Any]]:
    """Metadata filters, nested up to a few levels, biased to values in ``metadatas``."""
    pools = _pools(metadatas)
    return _where_shapes.map(lambda shape: _resolve_where(pools, shape))


wheres = wheres_for()

_needle_specs = st.tuples(
    st.text(alphabet=st.sampled_from(DOC_CHARS), min_size=1, max_size=4),
    st.booleans(),
    st.tuples(st.integers(0, 63), st.integers(0, 63), st.integers(1, 4)),
)
_document_shapes = st.recursive(
    st.one_of(
        st.tuples(st.sampled_from(("$contains", "$not_contains")), _needle_specs),
        st.tuples(st.sampled_from(("$regex", "$not_regex")), st.sampled_from(VALID_REGEXES)),
    ),
    _logical,
    max_leaves=4,
)


def _resolve_document_filter(docs: list[str], shape: Any) -> dict[str, Any]:
    if isinstance(shape, dict):
        ((op, clauses),) = shape.items()
        return {op: [_resolve_document_filter(docs, c) for c in clauses]}
    op, spec = shape
    if op in ("$regex", "$not_regex"):
        return {op: spec}
    literal, use_doc, (which, start, length) = spec
    if use_doc and docs:
        doc = docs[which % len(docs)]
        start %= len(doc)
        return {op: doc[start : start + length]}
    return {op: literal}


def where_documents(docs: Sequence[str | None] = ()) -> st.SearchStrategy[dict[str, Any]]:
    """Document filters; needles are often substrings (also 1-2 characters) of ``docs``."""
    present = [d for d in docs if d]
    return _document_shapes.map(lambda shape: _resolve_document_filter(present, shape))


# ---------------------------------------------------------------- invalid filters

BAD_WHERE_LEAVES: tuple[Any, ...] = (
    {"a": 1, "b": 2},  # two keys at one level
    {"a": {}},
    {"a": {"$eq": 1, "$ne": 2}},
    {"a": {"$foo": 1}},
    {"$foo": [{"a": 1}, {"b": 2}]},
    {"$not": {"a": 1}},
    {"a": {"$gt": "x"}},
    {"a": {"$gte": True}},
    {"a": {"$lt": None}},
    {"a": {"$lte": [1]}},
    {"a": {"$in": []}},
    {"a": {"$nin": []}},
    {"a": {"$in": ["x", 1]}},
    {"a": {"$nin": [True, "x"]}},
    {"a": {"$in": [1, True]}},
    {"a": {"$in": "x"}},
    {"a": None},
    {"a": {"$eq": None}},
    {"a": {"$contains": None}},
    {"$and": [{"a": 1}]},  # one clause
    {"$or": [{"a": 1}]},
    {"$and": []},
    {"$and": {"a": 1}},
)
BAD_WHERE_DOCUMENT_LEAVES: tuple[Any, ...] = (
    {"$contains": "a", "$regex": "b"},
    {"$foo": "a"},
    {"a": "b"},
    {"$contains": 1},
    {"$not_contains": None},
    {"$regex": None},
    *({"$regex": r} for r in BAD_REGEXES),
    *({"$not_regex": r} for r in BAD_REGEXES),
    {"$and": [{"$contains": "a"}]},
    {"$or": []},
)


def _nest_bad(bad: st.SearchStrategy[Any], good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A defect on its own, or hidden inside an $and/$or among valid clauses."""
    return st.one_of(
        bad,
        st.builds(
            lambda op, b, g, first: {op: [b, g] if first else [g, b]},
            st.sampled_from(("$and", "$or")),
            bad,
            good,
            st.booleans(),
        ),
    )


bad_wheres = _nest_bad(
    st.one_of(st.sampled_from(BAD_WHERE_LEAVES), st.just({"$and": [{}, {"a": 1}]})), wheres
)
bad_where_documents = _nest_bad(
    st.one_of(
        st.sampled_from(BAD_WHERE_DOCUMENT_LEAVES), st.just({"$or": [{}, {"$contains": "a"}]})
    ),
    where_documents(),
)


# ---------------------------------------------------------------- comparing results


def same_value(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (1 != 1.0 != True here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_records(model: Model, ids: list[str], got: dict[str, Any]) -> None:
    """``got`` (a get result, or one query's slice) holds exactly these model records."""
    assert got["ids"] == ids
    if got.get("metadatas") is not None:
        for rid, md in zip(ids, got["metadatas"], strict=True):
            want = model.records[rid].metadata
            assert same_value(md, want), (rid, md, want)
    if got.get("documents") is not None:
        assert got["documents"] == [model.records[rid].document for rid in ids]
    if got.get("embeddings") is not None:
        emb = np.asarray(got["embeddings"], dtype=np.float32)
        assert len(emb) == len(ids)
        for rid, row in zip(ids, emb, strict=True):
            np.testing.assert_array_equal(row, model.records[rid].embedding, err_msg=rid)


def close(a: float, b: float) -> bool:
    """Distances agree within float32 accuracy."""
    return abs(a - b) <= 1e-4 * max(1.0, abs(a), abs(b))


def assert_query(
    model: Model, got: dict[str, Any], ranking: list[list[tuple[str, float]]], n_results: int
) -> None:
    """Each query's answer is a valid top-``n_results`` of the model's full ranking.

    Exactly ``min(n_results, matches)`` distinct matching ids, nearest first, whose
    distances are the model's top distances (so ties may come in any order); when
    every match fits, exactly the matching set.
    """
    assert len(got["ids"]) == len(ranking)
    for q, full in enumerate(ranking):
        ids, dists = got["ids"][q], got["distances"][q]
        k = min(n_results, len(full))
        dist_of = dict(full)
        assert len(ids) == k, f"query {q}: {len(ids)} results, expected {k}: {ids} vs {full}"
        assert len(set(ids)) == k
        for rid, d in zip(ids, dists, strict=True):
            assert rid in dist_of, f"{rid} does not match the filters"
            assert close(d, dist_of[rid]), (rid, d, dist_of[rid])
        for a, b in itertools.pairwise(dists):
            assert a <= b or close(a, b), f"not nearest first: {dists}"
        for g, w in zip(sorted(dists), [d for _, d in full[:k]], strict=True):
            assert close(g, w), f"not the nearest: got {dists}, model {full[:k]}"
        if n_results >= len(full):
            assert set(ids) == set(dist_of)
        one = {f: got[f][q] for f in ("metadatas", "documents") if got.get(f) is not None}
        assert_records(model, ids, {"ids": ids, **one})


def assert_same_state(model: Model, col: tintdb.Collection) -> None:
    """Every record, in order, with embeddings, metadata and documents."""
    got = col.get(include=["embeddings", "metadatas", "documents"])
    assert_records(model, list(model.records), got)
    assert col.count() == model.count()


# ---------------------------------------------------------------- collections

_names: Iterator[int] = itertools.count()


@st.composite
def collections(draw: st.DrawFn, max_size: int = 12) -> dict[str, Any]:
    """Arguments for one add() call: distinct ids r0.., vectors, metadata, documents."""
    n = draw(st.integers(1, max_size))
    return {
        "space": draw(st.sampled_from(SPACES)),
        "ids": [f"r{i}" for i in range(n)],
        "embeddings": draw(st.lists(vectors(), min_size=n, max_size=n)),
        "metadatas": draw(st.lists(metadatas(), min_size=n, max_size=n)),
        "documents": draw(st.lists(documents, min_size=n, max_size=n)),
    }


def build(client: tintdb.Client, spec: dict[str, Any]) -> tuple[tintdb.Collection, Model]:
    """A fresh tintdb collection and its model, both loaded with ``spec``."""
    col = client.create_collection(
        f"props-{next(_names)}", metadata={"hnsw:space": spec["space"]}, embedding_function=None
    )
    model = Model(spec["space"])
    if spec["ids"]:
        args = {k: spec[k] for k in ("ids", "embeddings", "metadatas", "documents")}
        model.add(**args)
        col.add(**args)
    return col, model


PROPS = settings(
    max_examples=examples(150),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``strategy``, or None one time in four."""
    return st.tuples(st.sampled_from(range(4)), strategy).map(lambda t: t[1] if t[0] else None)


# ---------------------------------------------------------------- tests


@PROPS
@given(data=st.data(), spec=collections())
def test_get_with_filters_matches_model(
    client: tintdb.Client, data: st.DataObject, spec: dict[str, Any]
) -> None:
    """get(where, where_document, limit, offset): the model's ids, in insertion order."""
    col, model = build(client, spec)
    try:
        where = data.draw(optional(wheres_for(spec["metadatas"])), "where")
        where_document = data.draw(optional(where_documents(spec["documents"])), "where_document")
        limit = data.draw(optional(st.integers(0, 5)), "limit")
        offset = data.draw(optional(st.integers(0, 5)), "offset")
        want = model.get(where=where, where_document=where_document, limit=limit, offset=offset)
        got = col.get(
            where=where,
            where_document=where_document,
            limit=limit,
            offset=offset,
            include=["metadatas", "documents", "embeddings"],
        )
        assert_records(model, want, got)
    finally:
        client.delete_collection(col.name)


@PROPS
@given(data=st.data(), spec=collections())
def test_query_with_filters_matches_model(
    client: tintdb.Client, data: st.DataObject, spec: dict[str, Any]
) -> None:
    """query(where...): all matches by distance, or exactly n_results of the nearest."""
    col, model = build(client, spec)
    try:
        where = data.draw(optional(wheres_for(spec["metadatas"])), "where")
        where_document = data.draw(optional(where_documents(spec["documents"])), "where_document")
        n_results = data.draw(st.integers(1, 14), "n_results")
        queries = data.draw(st.lists(vectors(), min_size=1, max_size=2), "queries")
        dtype = data.draw(st.sampled_from((np.float64, np.float32)), "model dtype")
        ranking = model.query(
            queries, n_results, where=where, where_document=where_document, dtype=dtype
        )
        got = col.query(
            query_embeddings=queries,
            n_results=n_results,
            where=where,
            where_document=where_document,
        )
        assert_query(model, got, ranking, n_results)
    finally:
        client.delete_collection(col.name)


@PROPS
@given(data=st.data(), spec=collections(max_size=6))
def test_invalid_filters_are_refused_and_change_nothing(
    client: tintdb.Client, data: st.DataObject, spec: dict[str, Any]
) -> None:
    """A malformed where / where_document: InvalidArgumentError from get, query, delete."""
    col, model = build(client, spec)
    try:
        which = data.draw(st.sampled_from(("where", "where_document", "both")), "which")
        where = data.draw(bad_wheres if which != "where_document" else optional(wheres), "where")
        where_document = data.draw(
            bad_where_documents if which != "where" else optional(where_documents()),
            "where_document",
        )
        with pytest.raises(ModelError) as refused:
            model.get(where=where, where_document=where_document)
        assert refused.value.kind == "invalid"
        with pytest.raises(InvalidArgumentError):
            col.get(where=where, where_document=where_document)
        with pytest.raises(InvalidArgumentError):
            col.query(query_embeddings=[[0.5] * DIM], where=where, where_document=where_document)
        with pytest.raises(InvalidArgumentError):
            col.delete(where=where, where_document=where_document)
        with pytest.raises(InvalidArgumentError):
            col.delete(ids=spec["ids"][:1] or ["r0"], where=where, where_document=where_document)
        assert_same_state(model, col)
    finally:
        client.delete_collection(col.name)


# ---------------------------------------------------------------- known discrepancies


@pytest.mark.parametrize("empty", [{"where": {}}, {"where_document": {}}], ids=["where", "doc"])
def test_top_level_empty_filter_is_refused(client: tintdb.Client, empty: dict[str, Any]) -> None:
    """SPEC §2: an empty dict is an InvalidArgumentError, at the top level too.

    (chromadb: "Expected where to have exactly one operator, got {}".) Treating it as
    "no filter" makes ``delete(ids=..., where={})`` delete although the filter is bad.
    """
    col = client.create_collection("empty-filter", embedding_function=None)
    col.add(ids=["a", "b"], embeddings=[[1.0, 2.0], [3.0, 4.0]])
    with pytest.raises(ModelError):
        Model().get(**empty)
    with pytest.raises(InvalidArgumentError):
        col.get(**empty)
    with pytest.raises(InvalidArgumentError):
        col.query(query_embeddings=[[1.0, 2.0]], **empty)
    with pytest.raises(InvalidArgumentError):
        col.delete(ids=["a"], **empty)
    assert col.get()["ids"] == ["a", "b"]
