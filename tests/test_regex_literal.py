"""The literal a `$regex` is narrowed by through the trigram index (_regex.required_literal).

The promise: every text the pattern matches contains the literal. A literal that some
match lacks would drop that record from the answer, so the property is checked on
generated patterns and texts against the pattern engine itself, and end to end against
a store.
"""

from __future__ import annotations

import numpy as np
import pytest
from _profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

import tintdb
from tintdb import _filter_sql, _regex
from tintdb._conditions import Text
from tintdb.errors import InvalidArgumentError


@pytest.mark.parametrize(
    ("pattern", "literal"),
    [
        ("^amber ", "amber "),
        ("error code E4012", "error code E4012"),
        ("ab+cdef", "cdef"),
        ("abcd*efg", "abc"),
        ("abc?defg", "defg"),
        ("xyz{2,3}hello", "hello"),
        (r"foo\.bar", "foo.bar"),
        (r"\bword\b", "word"),
        ("[abc]+quick", "quick"),
        ("ab(cdefgh)?ij", None),
        ("(?i)amber", None),
        ("amber|birch", None),
        (r"\x41bcde", None),
        (r"\p{Greek}abc", None),
        ("a.b.c", None),
        ("ab", None),
    ],
)
def test_the_literal_of_common_patterns(pattern: str, literal: str | None) -> None:
    assert _regex.required_literal(pattern) == literal


ALPHABET = "ab.*+?|()[]{}^$\\1,2 "


@settings(max_examples=examples(400), deadline=None)
@given(
    pattern=st.text(alphabet=ALPHABET, min_size=1, max_size=12),
    texts=st.lists(st.text(alphabet="ab12 .*", max_size=14), min_size=1, max_size=8),
)
def test_every_match_contains_the_literal(pattern: str, texts: list[str]) -> None:
    try:
        _regex.check(pattern)
    except InvalidArgumentError:
        return
    literal = _regex.required_literal(pattern)
    if literal is None:
        return
    for text in texts:
        if _regex.search(pattern, text):
            assert literal in text, (pattern, literal, text)


@settings(max_examples=examples(40), deadline=None)
@given(
    pattern=st.sampled_from(
        ["^ab+ba", "abab", "b{1,2}aab", "ba*ab", r"ab\.ba", "[ab]aab", "aba+b?ba"]
    ),
    docs=st.lists(st.text(alphabet="ab. ", max_size=12), min_size=1, max_size=30),
    negate=st.booleans(),
)
def test_a_store_answers_as_the_pattern_does(pattern: str, docs: list[str], negate: bool) -> None:
    op = "$not_regex" if negate else "$regex"
    with tintdb.EphemeralClient() as client:
        col = client.create_collection("regex-literal", embedding_function=None)
        ids = [f"d{i}" for i in range(len(docs))]
        col.add(ids=ids, embeddings=np.ones((len(docs), 2), np.float32), documents=docs)
        got = set(col.get(where_document={op: pattern})["ids"])
        want = {i for i, d in zip(ids, docs, strict=True) if _regex.search(pattern, d) != negate}
        assert got == want


def test_a_regex_with_a_literal_is_read_through_the_trigram_index() -> None:
    sql, params, negate = _filter_sql.text_set(Text("$regex", "^amber "), 7)
    assert "docs MATCH" in sql and params == ['"amber "', 7, "^amber "] and not negate
    sql, _, negate = _filter_sql.text_set(Text("$not_regex", "^amber "), 7)
    assert "docs MATCH" in sql and negate
    sql, _, _ = _filter_sql.text_set(Text("$regex", "amber|birch"), 7)
    assert "docs MATCH" not in sql


@pytest.mark.parametrize(
    ("pattern", "plain"),
    [
        ("^amber ", ("amber ", True, False)),
        ("amber", ("amber", False, False)),
        (r"50% off\.$", ("50% off.", False, True)),
        (r"^a\$b\\c$", ("a$b\\c", True, True)),
        ("^a.b", None),
        ("(?i)amber", None),
        ("amber|birch", None),
        (r"\d+", None),
        ("ab+", None),
        ("^$", None),
    ],
)
def test_plain_text_patterns(pattern: str, plain: tuple[str, bool, bool] | None) -> None:
    assert _regex.plain_text(pattern) == plain


@settings(max_examples=examples(400), deadline=None)
@given(
    pattern=st.text(alphabet="ab%_^$\\.\n ", min_size=1, max_size=10),
    texts=st.lists(st.text(alphabet="ab%_$\\.\n ", max_size=12), min_size=1, max_size=8),
)
def test_a_plain_text_pattern_matches_as_its_text_search(pattern: str, texts: list[str]) -> None:
    """Where plain_text reads a pattern as a text search, that search and the pattern
    engine agree on every text (a store runs the search in its place)."""
    try:
        _regex.check(pattern)
    except InvalidArgumentError:
        return
    plain = _regex.plain_text(pattern)
    if plain is None:
        return
    text, at_start, at_end = plain
    for t in [*texts, text, f"x{text}", f"{text}x", f"\n{text}\n"]:
        if at_start and at_end:
            found = t == text
        elif at_start:
            found = t.startswith(text)
        elif at_end:
            found = t.endswith(text)
        else:
            found = text in t
        assert found == _regex.search(pattern, t), (pattern, t)
