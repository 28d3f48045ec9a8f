"""``where`` and ``where_document`` filters: the checks every call runs before anything
else, and the value kinds that tell ``True``, ``1`` and ``"1"`` apart.

A checked filter is then read once into a condition tree (``_conditions``), from which
each backend derives what it runs (``_filter_sql`` and ``_filter_sets`` for the
embedded store, ``_pgsql`` for PostgreSQL). This module is also part of the HTTP-only
client, which checks filters before sending them.
"""

from __future__ import annotations

from typing import Any

from . import _regex
from .errors import InvalidArgumentError

__all__ = [
    "KIND_BOOL",
    "KIND_LIST_OFFSET",
    "KIND_NUMBER",
    "KIND_STR",
    "MAX_DEPTH",
    "validate_where",
    "validate_where_document",
    "value_kind",
]

KIND_STR, KIND_NUMBER, KIND_BOOL = 0, 1, 2
KIND_LIST_OFFSET = 3  # list elements: 3 = str, 4 = number, 5 = bool

COMPARE = ("$gt", "$gte", "$lt", "$lte")
EQUALITY = ("$eq", "$ne")
MEMBERSHIP = ("$in", "$nin")
CONTAINS = ("$contains", "$not_contains")
FIELD_OPERATORS = (*EQUALITY, *COMPARE, *MEMBERSHIP, *CONTAINS)
LOGICAL = ("$and", "$or")
DOCUMENT_OPERATORS = ("$contains", "$not_contains", "$regex", "$not_regex")

# How deep $and/$or may nest: far beyond any real filter, far below Python's recursion
# limit, which the checks, the tree's reader and the compilers all walk.
MAX_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def value_kind(value: Any) -> int:
    if isinstance(value, bool):
        return KIND_BOOL
    if isinstance(value, str):
        return KIND_STR
    return KIND_NUMBER


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
