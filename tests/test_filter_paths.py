"""Property tests: every form the embedded store derives from one condition tree
agrees with the plain-Python reference evaluator of ``_model``.

A filter reaches SQLite in three forms, chosen by the planner: one SQL expression
over the records (``_filter_sql.compile_sql``), a test of one record at a time
(``compile_record_test``, for samples, post-filtered neighbours and walks), and set
algebra over each condition's indexed lookup (``_filter_sets.evaluate_sets``, with or
without a set of ids to stay within, with or without the collection's seqs, which let
document conditions read the trigram index alone). The relaxed tree a query searches
among (``_filter_sql.relaxed``, each ``$regex`` with a literal read as ``$contains``) must
hold every match. Which form answers a call depends on sizes and
on what the planner remembers, so the behaviour tests through ``get``/``query`` do not
reach all three for every filter; here each form is run on the same records and
filters, directly against a real store.

The filters cover every operator of both filters nested in $and/$or, several bounds on
one key inside an $and (read as one range), and $regex patterns with and without a run
of text the trigram index narrows them by.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from _model import matches_where, matches_where_document
from _profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from test_filter_properties import (
    DOC_CHARS,
    FIELD_FORMS,
    KEYS,
    ORDER_OPS,
    VALID_REGEXES,
    _logical,
    _needle_specs,
    _operand_specs,
    _pools,
    _resolve_operand,
    collections,
    documents,
    optional,
    wheres_for,
)

import tintdb
from tintdb import _filters
from tintdb._client import backend_of
from tintdb._conditions import condition_tree
from tintdb._filter_sets import evaluate_sets
from tintdb._filter_sql import compile_record_test, compile_sql, relaxed

CONTAINS_OPS = ("$contains", "$not_contains")
REGEX_OPS = ("$regex", "$not_regex")

# ---------------------------------------------------------------- filters

# Several order bounds on one key under one $and (one range lookup in the set algebra).
_bounds_shapes = st.tuples(
    st.sampled_from(KEYS),
    st.lists(st.tuples(st.sampled_from(ORDER_OPS), _operand_specs), min_size=2, max_size=3),
)


def _resolve_bounds(pools: dict[str, list[Any]], shape: Any) -> dict[str, Any]:
    key, bounds = shape
    pool = pools.get(key, [])
    return {"$and": [{key: {op: _resolve_operand(spec, pool, "num")}} for op, spec in bounds]}


def wheres_with_ranges(metadatas: list[dict[str, Any] | None]) -> st.SearchStrategy[Any]:
    """``wheres_for``'s filters, ranges on one key, and the two combined."""
    pools = _pools(metadatas)
    ranges = _bounds_shapes.map(lambda shape: _resolve_bounds(pools, shape))
    others = wheres_for(metadatas)
    combined = st.builds(
        lambda op, r, w, first: {op: [r, w] if first else [w, r]},
        st.sampled_from(("$and", "$or")),
        ranges,
        others,
        st.booleans(),
    )
    return st.one_of(others, ranges, combined)


# A $regex leaf: one of the fixed patterns (none with three plain characters in a row,
# so they scan), or a run of a stored document, optionally anchored or followed by any
# character (no character of DOC_CHARS means anything to a regex, so the run is plain
# text; from three characters on, the trigram index narrows it).
_regex_needles = st.tuples(
    st.text(alphabet=st.sampled_from(DOC_CHARS), min_size=2, max_size=5),
    st.sampled_from((True, True, True, False)),
    st.tuples(st.integers(0, 63), st.integers(0, 63), st.integers(2, 6)),
)
_plain_regexes = st.tuples(
    st.sampled_from(("", "^")), _regex_needles, st.sampled_from(("", "$", "."))
)
_regex_leaves = st.one_of(st.sampled_from(VALID_REGEXES), _plain_regexes, _plain_regexes)
_document_shapes = st.recursive(
    st.one_of(
        st.tuples(st.sampled_from(CONTAINS_OPS), _needle_specs),
        st.tuples(st.sampled_from(REGEX_OPS), _regex_leaves),
    ),
    _logical,
    max_leaves=4,
)


def _needle(docs: list[str], spec: Any) -> str:
    literal, use_doc, (which, start, length) = spec
    if use_doc and docs:
        doc = docs[which % len(docs)]
        start %= len(doc)
        return doc[start : start + length]
    return str(literal)


def _resolve_document(docs: list[str], shape: Any) -> dict[str, Any]:
    if isinstance(shape, dict):
        ((op, clauses),) = shape.items()
        return {op: [_resolve_document(docs, c) for c in clauses]}
    op, spec = shape
    if isinstance(spec, str):
        return {op: spec}
    if op in CONTAINS_OPS:
        return {op: _needle(docs, spec)}
    before, needle, after = spec
    return {op: before + _needle(docs, needle) + after}


# Documents: the property tests' own, or longer ones from three characters (and an
# accent), where runs of text repeat, so that a pattern's anchors and the trigram
# index's candidates often disagree.
_documents = st.one_of(
    documents,
    st.text(alphabet=st.sampled_from(("a", "b", " ", "é")), min_size=3, max_size=14),
)


def document_filters(documents: list[str | None]) -> st.SearchStrategy[dict[str, Any]]:
    present = [d for d in documents if d]
    return _document_shapes.map(lambda shape: _resolve_document(present, shape))


def test_the_strategies_draw_every_operator() -> None:
    """If an operator is added to the checks, these tests must learn to draw it."""
    assert set(FIELD_FORMS) - {"bare"} == set(_filters.FIELD_OPERATORS)
    assert {*CONTAINS_OPS, *REGEX_OPS} == set(_filters.DOCUMENT_OPERATORS)
    assert set(_filters.LOGICAL) == {"$and", "$or"}
    assert not set("".join(DOC_CHARS)) & set(r"\^$.|?*+()[]{}")


# ---------------------------------------------------------------- the store

_names: Iterator[int] = itertools.count()


@pytest.fixture(scope="module")
def store_client() -> Iterator[tintdb.Client]:
    with tintdb.EphemeralClient() as client:
        yield client


PATHS = settings(max_examples=examples(200), deadline=None, derandomize=True)


@PATHS
@given(data=st.data(), spec=collections(max_size=16))
def test_sql_record_test_and_sets_agree_with_the_reference(
    store_client: tintdb.Client, data: st.DataObject, spec: dict[str, Any]
) -> None:
    col = store_client.create_collection(f"paths-{next(_names)}", embedding_function=None)
    try:
        n = len(spec["ids"])
        spec["documents"] = data.draw(st.lists(_documents, min_size=n, max_size=n), "documents")
        args = {k: spec[k] for k in ("ids", "embeddings", "metadatas", "documents")}
        col.add(**args)
        where = data.draw(optional(wheres_with_ranges(spec["metadatas"])), "where")
        where_document = data.draw(optional(document_filters(spec["documents"])), "document")
        if where is None and where_document is None:
            where = data.draw(wheres_with_ranges(spec["metadatas"]), "where")
        within_ids = data.draw(optional(st.sets(st.sampled_from(spec["ids"]))), "within")
        if where is not None:
            _filters.validate_where(where)
        if where_document is not None:
            _filters.validate_where_document(where_document)

        want = {
            rid
            for rid, md, doc in zip(spec["ids"], spec["metadatas"], spec["documents"], strict=True)
            if (where is None or matches_where(md, where))
            and (where_document is None or matches_where_document(doc, where_document))
        }
        store = backend_of(store_client).store  # type: ignore[attr-defined]
        coll = store.collection_by_id(str(col.id)).coll
        tree = condition_tree(where, where_document)
        assert tree is not None
        with store.read():
            all_seqs = store.seq_array("SELECT seq FROM records WHERE coll = ?", [coll])
            id_of = dict(store.fetch(coll, None, None, None, None, []))

            def ids(seqs: np.ndarray) -> set[str]:
                return {id_of[s] for s in seqs.tolist()}

            sql, params = compile_sql(tree, coll)
            one_statement = store.seq_array(
                f"SELECT r.seq AS seq FROM records r WHERE r.coll = ? AND {sql}", [coll, *params]
            )
            assert ids(one_statement) == want, "one SQL statement"

            sql, params = compile_record_test(tree)
            by_record = store.seq_array(
                f"SELECT r.seq AS seq FROM records r WHERE r.coll = ? AND {sql}", [coll, *params]
            )
            assert ids(by_record) == want, "record by record"

            found = evaluate_sets(tree, coll, store.seq_array)
            assert found is not None
            seqs, negated = found
            assert np.all(np.diff(seqs) > 0), "sorted, no repeats"
            assert (ids(all_seqs) - ids(seqs) if negated else ids(seqs)) == want, "sets"

            # With the collection's seqs: document conditions read the trigram index alone.
            universe = np.sort(all_seqs)
            found = evaluate_sets(tree, coll, store.seq_array, None, universe)
            assert found is not None
            seqs, negated = found
            assert (ids(all_seqs) - ids(seqs) if negated else ids(seqs)) == want, "sets, universe"

            # The relaxed tree (a $regex read as its literal) holds every match.
            loose = evaluate_sets(relaxed(tree), coll, store.seq_array, None, universe)
            assert loose is not None
            seqs, negated = loose
            assert (ids(all_seqs) - ids(seqs) if negated else ids(seqs)) >= want, "superset"

            if within_ids is not None:
                within = np.sort([s for s, rid in id_of.items() if rid in within_ids])
                found = evaluate_sets(tree, coll, store.seq_array, within.astype(np.int64))
                assert found is not None
                seqs, negated = found
                assert not negated, "a set within ids is listed"
                assert ids(seqs) == want & within_ids, "sets within ids"
    finally:
        store_client.delete_collection(col.name)
