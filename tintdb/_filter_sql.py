"""The embedded store's filters in SQLite's SQL, derived from the condition tree.

The SQL runs over two tables of ``_storage`` (see its schema):

* ``records r`` — one row per record, ``r.seq`` its storage order, ``r.document``;
* ``meta(coll, seq, key, kind, v)`` — one row per metadata value, list values
  exploded into one row per element. ``kind`` keeps the types apart so that
  ``True != 1`` and a string never equals a number, while ``1 == 1.0`` holds
  (SQLite compares INTEGER and REAL numerically).

Every condition has a positive set of records, selected by one indexed lookup
(``field_set``, ``bounds_set``, ``text_set``); a negation (``$ne``, ``$nin``,
``$not_contains``, ``$not_regex``) is the complement of that set, so it also matches
records that lack the key or the document, as in chromadb. From the same tree come
three forms: one boolean expression over ``records r`` (``compile_sql``, each condition
``r.seq [NOT] IN (...)``), a test of one record at a time (``compile_record_test``),
and the sets that ``_filter_sets`` combines in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from . import _regex
from ._conditions import AllOf, AnyOf, Field, Node, Text, negated
from ._filters import KIND_LIST_OFFSET, KIND_NUMBER, value_kind
from .errors import InvalidArgumentError

__all__ = [
    "Leaf",
    "bounds_set",
    "compile_record_test",
    "compile_sql",
    "field_set",
    "fts_set",
    "regexp",
    "relaxed",
    "scans",
    "text_list",
    "text_set",
]

COMPARE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}

# The shortest needle the trigram index can serve; shorter ones scan with instr().
_TRIGRAM = 3

# A condition's positive set as SQL selecting ``seq``, its parameters, and whether the
# condition is the complement of that set.
Leaf = tuple[str, list[Any], bool]


def text_list(values: list[Any]) -> tuple[str, list[Any]]:
    """SQL selecting ``values`` as rows of one column, and its parameters: any number
    of values through one JSON parameter, so there is no SQLite variable limit.

    SQLite's JSON functions end a string at an escaped NUL, so a list holding one gets
    its NULs swapped for a character found in none of its strings, and swapped back.
    """
    text = orjson.dumps(values).decode()
    if "\\u0000" not in text:
        return "SELECT value FROM json_each(?)", [text]
    used = {c for v in values if isinstance(v, str) for c in v}
    free = (chr(c) for c in (*range(0xE000, 0x110000), *range(1, 0xD800)) if chr(c) not in used)
    stand_in = next(free, None)
    if stand_in is None:
        raise InvalidArgumentError("Strings holding NUL and every other character cannot be listed")
    swapped = [v.replace("\0", stand_in) if isinstance(v, str) else v for v in values]
    return (
        "SELECT replace(value, ?, char(0)) FROM json_each(?)",
        [stand_in, orjson.dumps(swapped).decode()],
    )


def regexp(pattern: str, text: str | None) -> bool:
    """SQLite's REGEXP function, registered on every connection of the store: RE2, in
    time linear in the document, with the GIL released while it matches."""
    return text is not None and _regex.search(pattern, text)


def _sql_value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


# ---------------------------------------------------------------- metadata


def _field_cond(f: Field, column: str) -> tuple[int, str, list[Any]]:
    """The ``kind`` a field condition reads, its test of the ``v`` column, and its
    parameters (positive form)."""
    op, operand = f.op, f.operand
    if op in ("$eq", "$ne"):
        return value_kind(operand), f"{column} = ?", [_sql_value(operand)]
    if op in COMPARE:
        return KIND_NUMBER, f"{column} {COMPARE[op]} ?", [operand]
    if op in ("$in", "$nin"):
        listed, params = text_list([_sql_value(v) for v in operand])
        return value_kind(operand[0]), f"{column} IN ({listed})", params
    # $contains / $not_contains on list values
    return KIND_LIST_OFFSET + value_kind(operand), f"{column} = ?", [_sql_value(operand)]


def _meta_set(
    coll: int, key: str, kind: int, cond: str, params: list[Any]
) -> tuple[str, list[Any]]:
    sql = f"SELECT seq FROM meta WHERE coll = ? AND key = ? AND kind = ? AND {cond}"
    return sql, [coll, key, kind, *params]


def field_set(f: Field, coll: int) -> Leaf:
    """One metadata condition: a lookup in the covering index ``meta(coll, key, kind,
    v, seq)``."""
    kind, cond, params = _field_cond(f, "v")
    sql, params = _meta_set(coll, f.key, kind, cond, params)
    return sql, params, negated(f)


def bounds_set(key: str, bounds: list[Field], coll: int) -> Leaf:
    """Several order bounds on one key in one lookup: ``a <= x < b`` reads the records
    between the bounds, where one lookup per bound read about the whole collection."""
    cond = " AND ".join(f"v {COMPARE[b.op]} ?" for b in bounds)
    sql, params = _meta_set(coll, key, KIND_NUMBER, cond, [b.operand for b in bounds])
    return sql, params, False


# ---------------------------------------------------------------- documents


def _fts_phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _indexable(needle: str) -> bool:
    """Can the trigram index find ``needle``? Not when too short, nor holding NUL, which
    ends an FTS5 query string."""
    return len(needle) >= _TRIGRAM and "\0" not in needle


def _contains(t: Text) -> bool:
    return t.op in ("$contains", "$not_contains")


def text_literal(t: Text) -> str | None:
    """The text the trigram index can narrow a $regex (or $not_regex) with."""
    literal = t.literal
    return literal if literal is not None and _indexable(literal) else None


def scans(node: Node) -> bool:
    """Whether the tree has a document condition that no index serves."""
    if isinstance(node, (AllOf, AnyOf)):
        return any(scans(p) for p in node.parts)
    if isinstance(node, Field):
        return False
    if _contains(node):
        return not _indexable(node.value)
    return text_literal(node) is None


def fts_set(t: Text) -> tuple[str, list[Any]] | None:
    """The documents of every collection that the trigram index finds holding the text a
    document condition needs (a ``$contains`` needle, a ``$regex``'s required literal),
    straight from the index, or None where it cannot serve the condition. The caller
    keeps those of its collection by their seqs (the live seqs it already holds), which
    reads no record: a ``$contains`` set is then complete, a ``$regex`` tests only those
    documents."""
    needle = t.value if _contains(t) else text_literal(t)
    if needle is None or not _indexable(needle):
        return None
    return "SELECT rowid AS seq FROM docs WHERE docs MATCH ?", [_fts_phrase(needle)]


def text_set(t: Text, coll: int, within: np.ndarray | None = None) -> Leaf:
    """One document condition. ``within``: the only records that can still match
    (sorted seqs); a condition that no index serves then tests those alone instead of
    every document."""
    if _contains(t) and _indexable(t.value):
        # A trigram phrase match is exactly a substring match. The full-text index holds
        # every collection's documents: its matches are kept to this one's records.
        sql = (
            "SELECT seq FROM records WHERE seq IN (SELECT rowid FROM docs WHERE docs MATCH ?) "
            "AND +coll = ?"
        )
        return sql, [_fts_phrase(t.value), coll], negated(t)
    literal = None if _contains(t) else text_literal(t)
    if literal is not None and within is None:
        # Only the documents holding the text every match holds are matched against
        # the pattern: the trigram index finds them.
        sql = (
            "SELECT seq FROM records WHERE seq IN (SELECT rowid FROM docs WHERE docs MATCH ?) "
            "AND +coll = ? AND regexp(?, document)"
        )
        return sql, [_fts_phrase(literal), coll, t.value], negated(t)
    cond = "instr(document, ?) > 0" if _contains(t) else "regexp(?, document)"
    if within is not None:
        among = "SELECT seq FROM records WHERE seq IN (SELECT value FROM json_each(?))"
        return f"{among} AND {cond}", [orjson.dumps(within.tolist()).decode(), t.value], negated(t)
    return f"SELECT seq FROM records WHERE coll = ? AND {cond}", [coll, t.value], negated(t)


def relaxed(node: Node) -> Node:
    """The tree with each ``$regex`` that has a required literal the trigram index can
    find read as ``$contains`` of that literal: it matches every record the tree
    matches (a tree has no negation above its leaves), and is listed from the indexes
    alone, where the tree itself would run the pattern on each document found. The
    same tree where there is no such ``$regex``."""
    if isinstance(node, (AllOf, AnyOf)):
        parts = tuple(relaxed(p) for p in node.parts)
        if parts == node.parts:
            return node
        return AllOf(parts) if isinstance(node, AllOf) else AnyOf(parts)
    if isinstance(node, Text) and node.op == "$regex":
        literal = text_literal(node)
        if literal is not None:
            return Text("$contains", literal)
    return node


def _text_expr(t: Text, indexed: bool) -> tuple[str, list[Any]]:
    """A document condition as a boolean over ``r`` (``indexed``: a long enough
    ``$contains`` goes through the full-text index first)."""
    if t.op == "$contains":
        if indexed and _indexable(t.value):
            return (
                "(r.seq IN (SELECT rowid FROM docs WHERE docs MATCH ?) "
                "AND instr(r.document, ?) > 0)",
                [_fts_phrase(t.value), t.value],
            )
        return "(instr(r.document, ?) > 0)", [t.value]
    if t.op == "$not_contains":
        return "(r.document IS NULL OR instr(r.document, ?) = 0)", [t.value]
    if t.op == "$regex":
        return "(r.document IS NOT NULL AND regexp(?, r.document))", [t.value]
    return "(r.document IS NULL OR NOT regexp(?, r.document))", [t.value]


# ---------------------------------------------------------------- whole filters


def _joined(node: AllOf | AnyOf, parts: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    joiner = " AND " if isinstance(node, AllOf) else " OR "
    return "(" + joiner.join(p[0] for p in parts) + ")", [x for p in parts for x in p[1]]


def compile_sql(node: Node, coll: int) -> tuple[str, list[Any]]:
    """One SQL boolean expression over ``records r`` for the tree: each metadata
    condition a set from the covering index, a long ``$contains`` from the full-text
    index."""
    if isinstance(node, (AllOf, AnyOf)):
        return _joined(node, [compile_sql(p, coll) for p in node.parts])
    if isinstance(node, Text):
        return _text_expr(node, indexed=True)
    sql, params, negate = field_set(node, coll)
    return f"r.seq {'NOT IN' if negate else 'IN'} ({sql})", params


def compile_record_test(node: Node | None) -> tuple[str, list[Any]]:
    """SQL boolean expression testing one record ``r`` at a time: each metadata
    condition a lookup of that record's own rows (``meta_by_seq``), documents by
    ``instr``. For a few records, or a walk that stops early, where the set of every
    match would cost more. ``1`` (true) without a tree."""
    if node is None:
        return "1", []
    if isinstance(node, (AllOf, AnyOf)):
        return _joined(node, [compile_record_test(p) for p in node.parts])
    if isinstance(node, Text):
        return _text_expr(node, indexed=False)
    kind, cond, params = _field_cond(node, "m.v")
    sql = (
        f"{'NOT ' if negated(node) else ''}EXISTS (SELECT 1 FROM meta m WHERE m.seq = r.seq "
        f"AND m.key = ? AND m.kind = ? AND {cond})"
    )
    return sql, [node.key, kind, *params]
