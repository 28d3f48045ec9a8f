"""``where`` and ``where_document`` filters: checking them, and compiling them to SQL.

The SQL runs over two tables of ``_storage`` (see its schema):

* ``records r`` — one row per record, ``r.seq`` its storage order, ``r.document``;
* ``meta(coll, seq, key, kind, v)`` — one row per metadata value, list values
  exploded into one row per element. ``kind`` keeps the types apart so that
  ``True != 1`` and a string never equals a number, while ``1 == 1.0`` holds
  (SQLite compares INTEGER and REAL numerically).

Each condition becomes ``r.seq [NOT] IN (SELECT seq FROM meta WHERE ...)``, served
by the covering index ``meta(coll, key, kind, v, seq)``. Negations (``$ne``,
``$nin``, ``$not_contains``) are the complement of the positive set, so they also
match records that lack the key, as in chromadb.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from . import _regex
from .errors import InvalidArgumentError

__all__ = [
    "Found",
    "Leaf",
    "evaluate_sets",
    "KIND_BOOL",
    "KIND_LIST_OFFSET",
    "KIND_NUMBER",
    "KIND_STR",
    "MAX_DEPTH",
    "compile_where",
    "compile_record_test",
    "compile_where_document",
    "member",
    "sorted_unique",
    "regexp",
    "text_list",
    "uses_regex",
    "validate_where",
    "validate_where_document",
    "value_kind",
]

KIND_STR, KIND_NUMBER, KIND_BOOL = 0, 1, 2
KIND_LIST_OFFSET = 3  # list elements: 3 = str, 4 = number, 5 = bool

COMPARE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
EQUALITY = ("$eq", "$ne")
MEMBERSHIP = ("$in", "$nin")
CONTAINS = ("$contains", "$not_contains")
FIELD_OPERATORS = (*EQUALITY, *COMPARE, *MEMBERSHIP, *CONTAINS)
LOGICAL = ("$and", "$or")
DOCUMENT_OPERATORS = ("$contains", "$not_contains", "$regex", "$not_regex")

# The shortest needle the trigram index can serve; shorter ones scan with instr().
_TRIGRAM = 3
# How deep $and/$or may nest: far beyond any real filter, far below Python's recursion
# limit, which the checks, the SQL compiler and the evaluator all walk.
MAX_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def value_kind(value: Any) -> int:
    if isinstance(value, bool):
        return KIND_BOOL
    if isinstance(value, str):
        return KIND_STR
    return KIND_NUMBER


def _sql_value(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float))  # bool is an int


def _check_operand(value: Any, what: str) -> None:
    """What SQLite cannot hold exactly is refused, not cut short or overflowed."""
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise InvalidArgumentError(f"Invalid {what}: integer {value} does not fit in 64 bits")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidArgumentError(
                f"Invalid {what}: the text is not valid Unicode ({exc.reason})"
            ) from None


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


# ---------------------------------------------------------------- validation


def _one_key(clause: Any, what: str) -> tuple[str, Any]:
    if not isinstance(clause, dict):
        raise InvalidArgumentError(f"Invalid {what}: expected a dict, got {type(clause).__name__}")
    if len(clause) == 0:
        raise InvalidArgumentError(f"Invalid {what}: an empty dict; leave the filter out instead")
    if len(clause) > 1:
        keys = ", ".join(map(repr, clause))
        raise InvalidArgumentError(
            f"Invalid {what}: one key per dict, got {keys}; "
            "wrap several conditions in $and: {'$and': [{...}, {...}]}"
        )
    return next(iter(clause.items()))


def _logical(op: str, value: Any, what: str, single_ok: bool) -> list[Any]:
    minimum = 1 if single_ok else 2
    if not isinstance(value, list) or len(value) < minimum:
        raise InvalidArgumentError(
            f"Invalid {what}: {op} needs a list of at least {minimum} conditions, got {value!r}"
        )
    return value


def _depth_checked(depth: int, what: str) -> int:
    if depth > MAX_DEPTH:
        raise InvalidArgumentError(
            f"Invalid {what}: $and/$or nested more than {MAX_DEPTH} levels deep"
        )
    return depth


def validate_where(where: Any, *, single_clause_ok: bool = False, _depth: int = 0) -> None:
    """Raise InvalidArgumentError, with a hint, unless ``where`` is a valid filter."""
    key, value = _one_key(where, "where")
    if key in LOGICAL:
        depth = _depth_checked(_depth + 1, "where")
        for clause in _logical(key, value, "where", single_clause_ok):
            validate_where(clause, single_clause_ok=single_clause_ok, _depth=depth)
        return
    if not isinstance(key, str) or key.startswith("$"):
        raise InvalidArgumentError(
            f"Invalid where: unknown operator {key!r} at the top level; use a metadata key, "
            "$and or $or"
        )
    _check_operand(key, "where key")
    if isinstance(value, dict):
        op, operand = _one_key(value, f"where condition on {key!r}")
        _validate_operator(key, op, operand)
    elif _is_scalar(value):
        _check_operand(value, f"where value for {key!r}")
    else:
        raise InvalidArgumentError(
            f"Invalid where: the value for {key!r} must be a str, int, float or bool, or an "
            f"operator dict such as {{'$in': [...]}}; got {value!r}"
        )


def _validate_operator(key: str, op: str, operand: Any) -> None:
    if op not in FIELD_OPERATORS:
        raise InvalidArgumentError(
            f"Invalid where: unknown operator {op!r} on {key!r}; use one of "
            f"{', '.join(FIELD_OPERATORS)}"
        )
    if op in COMPARE:
        if not _is_number(operand):
            raise InvalidArgumentError(
                f"Invalid where: {op} on {key!r} needs an int or float, got {operand!r}"
            )
    elif op in MEMBERSHIP:
        if not isinstance(operand, list) or not operand:
            raise InvalidArgumentError(
                f"Invalid where: {op} on {key!r} needs a non-empty list, got {operand!r}"
            )
        if not all(_is_scalar(v) for v in operand):
            raise InvalidArgumentError(
                f"Invalid where: {op} on {key!r} takes str, int, float or bool items"
            )
        if len({value_kind(v) for v in operand}) > 1:
            raise InvalidArgumentError(
                f"Invalid where: the items of {op} on {key!r} must all have one type"
            )
        for v in operand:
            _check_operand(v, f"where {op} on {key!r}")
        return
    elif not _is_scalar(operand):
        raise InvalidArgumentError(
            f"Invalid where: {op} on {key!r} needs a str, int, float or bool, got {operand!r}"
        )
    _check_operand(operand, f"where {op} on {key!r}")


def validate_where_document(
    where_document: Any, *, single_clause_ok: bool = False, _depth: int = 0
) -> None:
    op, value = _one_key(where_document, "where_document")
    if op in LOGICAL:
        depth = _depth_checked(_depth + 1, "where_document")
        for clause in _logical(op, value, "where_document", single_clause_ok):
            validate_where_document(clause, single_clause_ok=single_clause_ok, _depth=depth)
        return
    if op not in DOCUMENT_OPERATORS:
        raise InvalidArgumentError(
            f"Invalid where_document: unknown operator {op!r}; use one of "
            f"{', '.join((*DOCUMENT_OPERATORS, *LOGICAL))}"
        )
    if not isinstance(value, str) or value == "":
        raise InvalidArgumentError(
            f"Invalid where_document: {op} needs a non-empty str, got {value!r}"
        )
    _check_operand(value, f"where_document {op}")
    if op in ("$regex", "$not_regex"):
        _regex.check(value)  # refused here, before any SQL runs


def uses_regex(where_document: Any) -> bool:
    """Does a (validated) ``where_document`` hold $regex or $not_regex anywhere?"""
    if not where_document:
        return False
    op, value = next(iter(where_document.items()))
    if op in LOGICAL:
        return any(uses_regex(c) for c in value)
    return op in ("$regex", "$not_regex")


# ---------------------------------------------------------------- compilation


def regexp(pattern: str, text: str | None) -> bool:
    """SQLite's REGEXP function, registered on every connection of the store: RE2, in
    time linear in the document, with the GIL released while it matches."""
    return text is not None and _regex.search(pattern, text)


def _meta_set(
    coll: int, key: str, kind: int, cond: str, params: list[Any]
) -> tuple[str, list[Any]]:
    sql = f"SELECT seq FROM meta WHERE coll = ? AND key = ? AND kind = ? AND {cond}"
    return sql, [coll, key, kind, *params]


def compile_where(where: dict[str, Any], coll: int) -> tuple[str, list[Any]]:
    """SQL boolean expression over ``records r`` for a validated ``where``."""
    key, value = next(iter(where.items()))
    if key in LOGICAL:
        parts = [compile_where(c, coll) for c in value]
        joiner = " AND " if key == "$and" else " OR "
        return (
            "(" + joiner.join(p[0] for p in parts) + ")",
            [x for p in parts for x in p[1]],
        )
    op, operand = next(iter(value.items())) if isinstance(value, dict) else ("$eq", value)
    negate = op in ("$ne", "$nin", "$not_contains")
    if op in EQUALITY:
        sub = _meta_set(coll, key, value_kind(operand), "v = ?", [_sql_value(operand)])
    elif op in COMPARE:
        sub = _meta_set(coll, key, KIND_NUMBER, f"v {COMPARE[op]} ?", [operand])
    elif op in MEMBERSHIP:
        listed, listed_params = text_list([_sql_value(v) for v in operand])
        sub = _meta_set(coll, key, value_kind(operand[0]), f"v IN ({listed})", listed_params)
    else:  # $contains / $not_contains on list values
        sub = _meta_set(
            coll, key, KIND_LIST_OFFSET + value_kind(operand), "v = ?", [_sql_value(operand)]
        )
    return f"r.seq {'NOT IN' if negate else 'IN'} ({sub[0]})", sub[1]


def compile_record_test(
    where: dict[str, Any] | None, where_document: dict[str, Any] | None
) -> tuple[str, list[Any]]:
    """SQL boolean expression testing one record ``r`` at a time: each metadata
    condition a lookup of that record's own rows (``meta_by_seq``), documents by
    ``instr``. For a few records, or a walk that stops early, where the set of every
    match would cost more."""
    parts = []
    if where:
        parts.append(_record_where(where))
    if where_document:
        parts.append(compile_where_document(where_document, indexed=False))
    if not parts:
        return "1", []
    return " AND ".join(p[0] for p in parts), [x for p in parts for x in p[1]]


def _record_where(where: dict[str, Any]) -> tuple[str, list[Any]]:
    key, value = next(iter(where.items()))
    if key in LOGICAL:
        parts = [_record_where(c) for c in value]
        joiner = " AND " if key == "$and" else " OR "
        return "(" + joiner.join(p[0] for p in parts) + ")", [x for p in parts for x in p[1]]
    op, operand = next(iter(value.items())) if isinstance(value, dict) else ("$eq", value)
    negate = op in ("$ne", "$nin", "$not_contains")
    if op in EQUALITY:
        kind, cond, params = value_kind(operand), "m.v = ?", [_sql_value(operand)]
    elif op in COMPARE:
        kind, cond, params = KIND_NUMBER, f"m.v {COMPARE[op]} ?", [operand]
    elif op in MEMBERSHIP:
        listed, params = text_list([_sql_value(v) for v in operand])
        kind, cond = value_kind(operand[0]), f"m.v IN ({listed})"
    else:
        kind, cond = KIND_LIST_OFFSET + value_kind(operand), "m.v = ?"
        params = [_sql_value(operand)]
    sql = (
        f"{'NOT ' if negate else ''}EXISTS (SELECT 1 FROM meta m WHERE m.seq = r.seq "
        f"AND m.key = ? AND m.kind = ? AND {cond})"
    )
    return sql, [key, kind, *params]


def _fts_phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _indexable(needle: str) -> bool:
    """Can the trigram index find ``needle``? Not when too short, nor holding NUL, which
    ends an FTS5 query string."""
    return len(needle) >= _TRIGRAM and "\0" not in needle


def compile_where_document(
    where_document: dict[str, Any], *, indexed: bool = True
) -> tuple[str, list[Any]]:
    """SQL boolean expression over ``records r`` for a validated ``where_document``
    (``indexed``: a ``$contains`` goes through the full-text index first)."""
    op, value = next(iter(where_document.items()))
    if op in LOGICAL:
        parts = [compile_where_document(c, indexed=indexed) for c in value]
        joiner = " AND " if op == "$and" else " OR "
        return (
            "(" + joiner.join(p[0] for p in parts) + ")",
            [x for p in parts for x in p[1]],
        )
    if op == "$contains":
        if indexed and _indexable(value):
            return (
                "(r.seq IN (SELECT rowid FROM docs WHERE docs MATCH ?) "
                "AND instr(r.document, ?) > 0)",
                [_fts_phrase(value), value],
            )
        return "(instr(r.document, ?) > 0)", [value]
    if op == "$not_contains":
        return "(r.document IS NULL OR instr(r.document, ?) = 0)", [value]
    if op == "$regex":
        return "(r.document IS NOT NULL AND regexp(?, r.document))", [value]
    return "(r.document IS NULL OR NOT regexp(?, r.document))", [value]


# ---------------------------------------------------------------- evaluation as set algebra

# A leaf condition: SQL selecting the ``seq`` of every record satisfying its positive
# form, its parameters, and whether the condition is the complement of that set.
Leaf = tuple[str, list[Any], bool]
# A set of records as sorted unique seqs, and whether it stands for its complement.
Found = tuple[np.ndarray, bool]


def _where_leaf(key: str, value: Any, coll: int) -> Leaf:
    op, operand = next(iter(value.items())) if isinstance(value, dict) else ("$eq", value)
    sql, params = compile_where({key: {op: operand}}, coll)
    subquery = sql[sql.index("(") + 1 : -1]
    return subquery, params, sql.startswith("r.seq NOT IN")


def _range_leaf(key: str, bounds: list[tuple[str, Any]], coll: int) -> Leaf:
    """Several bounds on one number key in one lookup: ``a <= x < b`` reads the records
    between the bounds, where one lookup per bound read about the whole collection."""
    cond = " AND ".join(f"v {COMPARE[op]} ?" for op, _ in bounds)
    sql, params = _meta_set(coll, key, KIND_NUMBER, cond, [v for _, v in bounds])
    return sql, params, False


def _document_leaf(op: str, value: str, coll: int, within: np.ndarray | None = None) -> Leaf:
    """``within``: the only records that can still match (sorted seqs); a condition
    that no index serves then tests those alone instead of every document."""
    negate = op in ("$not_contains", "$not_regex")
    if op in ("$contains", "$not_contains") and _indexable(value):
        # A trigram phrase match is exactly a substring match. The full-text index holds
        # every collection's documents: its matches are kept to this one's records.
        sql = (
            "SELECT seq FROM records WHERE seq IN (SELECT rowid FROM docs WHERE docs MATCH ?) "
            "AND +coll = ?"
        )
        return sql, [_fts_phrase(value), coll], negate
    literal = _regex_literal(op, value)
    if literal is not None and within is None:
        # Only the documents holding the text every match holds are matched against
        # the pattern: the trigram index finds them.
        sql = (
            "SELECT seq FROM records WHERE seq IN (SELECT rowid FROM docs WHERE docs MATCH ?) "
            "AND +coll = ? AND regexp(?, document)"
        )
        return sql, [_fts_phrase(literal), coll, value], negate
    if op in ("$contains", "$not_contains"):
        cond = "instr(document, ?) > 0"
    else:
        cond = "regexp(?, document)"
    if within is not None:
        among = "SELECT seq FROM records WHERE seq IN (SELECT value FROM json_each(?))"
        return f"{among} AND {cond}", [orjson.dumps(within.tolist()).decode(), value], negate
    return f"SELECT seq FROM records WHERE coll = ? AND {cond}", [coll, value], negate


def _scans(clause: dict[str, Any]) -> bool:
    """Whether a where_document clause has a condition that no index serves."""
    op, value = next(iter(clause.items()))
    if op in LOGICAL:
        return any(_scans(c) for c in value)
    if op in ("$regex", "$not_regex"):
        return _regex_literal(op, value) is None
    return not _indexable(value)


def _regex_literal(op: str, pattern: str) -> str | None:
    """The text the trigram index can narrow a ``$regex`` (or ``$not_regex``) with."""
    if op not in ("$regex", "$not_regex"):
        return None
    literal = _regex.required_literal(pattern)
    return literal if literal is not None and _indexable(literal) else None


def sorted_unique(seqs: np.ndarray) -> np.ndarray:
    """``seqs`` sorted, without repeats. np.unique hashes first, which costs far more
    here than a sort."""
    out = np.sort(seqs)
    if len(out) > 1:
        out = out[np.concatenate(([True], out[1:] != out[:-1]))]
    return out


def member(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Which of sorted ``a`` are in sorted ``b`` (binary searches: no pass over ``b``)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a), dtype=bool)
    pos = np.minimum(np.searchsorted(b, a), len(b) - 1)
    return b[pos] == a


def _combine(op: str, parts: list[Found]) -> Found:
    """$and / $or of sets, some standing for their complement, without ever forming a
    complement: the work is in proportion to the sets, not to the collection."""
    pos = [p for p, neg in parts if not neg]
    neg = [p for p, negated in parts if negated]
    if op == "$and":
        if pos:
            out = min(pos, key=len)
            for p in pos:
                if p is not out:
                    out = out[member(out, p)]
            for n in neg:
                out = out[~member(out, n)]
            return out, False
        out = neg[0]
        for n in neg[1:]:
            out = np.union1d(out, n)
        return out, True
    if not neg:
        out = pos[0]
        for p in pos[1:]:
            out = np.union1d(out, p)
        return out, False
    out = min(neg, key=len)  # A or not B or not C = not ((B and C) minus A)
    for n in neg:
        if n is not out:
            out = out[member(out, n)]
    for p in pos:
        out = out[~member(out, p)]
    return out, True


def evaluate_sets(
    where: dict[str, Any] | None,
    where_document: dict[str, Any] | None,
    coll: int,
    fetch: Callable[[str, list[Any]], np.ndarray],
    within: np.ndarray | None = None,
) -> Found | None:
    """The records satisfying both filters (and in sorted ``within``, if given), as a
    set or the complement of one; None when there is no filter at all.

    Each leaf is one indexed SQL lookup returned in bulk by ``fetch``; ``$and``, ``$or``
    and negation are set operations on sorted arrays. A condition no index serves
    (``$regex``, a ``$contains`` shorter than a trigram) reads only the records the
    indexed conditions beside it leave, when they leave a set rather than a complement.
    """

    def leaf(found: Leaf) -> Found:
        sql, params, negate = found
        return sorted_unique(fetch(sql, params)), negate

    def walk_where(clause: dict[str, Any]) -> Found:
        key, value = next(iter(clause.items()))
        if key == "$and":
            bounds: dict[str, list[tuple[str, Any]]] = {}
            others = []
            for c in value:
                k, v = next(iter(c.items()))
                if k not in LOGICAL and isinstance(v, dict) and next(iter(v)) in COMPARE:
                    bounds.setdefault(k, []).append(next(iter(v.items())))
                else:
                    others.append(c)
            ranges = [leaf(_range_leaf(k, b, coll)) for k, b in bounds.items()]
            return _combine(key, ranges + [walk_where(c) for c in others])
        if key in LOGICAL:
            return _combine(key, [walk_where(c) for c in value])
        return leaf(_where_leaf(key, value, coll))

    def walk_document(clause: dict[str, Any], among: np.ndarray | None) -> Found:
        op, value = next(iter(clause.items()))
        if op == "$and":
            # Indexed conditions first: what they leave narrows the others.
            done = [walk_document(c, among) for c in value if not _scans(c)]
            if done:
                narrowed, negated = _combine("$and", done)
                if not negated:
                    among = narrowed if among is None else narrowed[member(narrowed, among)]
            rest = [walk_document(c, among) for c in value if _scans(c)]
            return _combine("$and", done + rest)
        if op == "$or":
            return _combine("$or", [walk_document(c, among) for c in value])
        return leaf(_document_leaf(op, value, coll, among if _scans(clause) else None))

    parts: list[Found] = []
    if within is not None:
        parts.append((within, False))
    if where:
        parts.append(walk_where(where))
    if where_document:
        narrowed = _combine("$and", parts) if parts else None
        among = None if narrowed is None or narrowed[1] else narrowed[0]
        parts.append(walk_document(where_document, among))
    return _combine("$and", parts) if parts else None
