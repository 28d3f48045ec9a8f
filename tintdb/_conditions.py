"""Filters as a small condition tree, independent of any storage engine.

``where`` and ``where_document`` (already checked by ``_filters.validate_where`` and
``validate_where_document``) are read once, by ``condition_tree``, into nodes that say
what is asked and nothing about how; nothing else reads the raw dicts. A backend
derives what it needs from the tree: the embedded backend its SQLite SQL, its
record-by-record test and its set algebra (``_filter_sql``, ``_filter_sets``), the
PostgreSQL backend its SQL (``_pgsql``). What several of them ask of a tree (the
bounds on one key, a regex's required text, whether any regex is in it) is answered
here once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from . import _regex

__all__ = [
    "AllOf",
    "AnyOf",
    "Field",
    "Node",
    "Text",
    "condition_tree",
    "negated",
    "split_bounds",
    "uses_regex",
]

NEGATIONS = ("$ne", "$nin", "$not_contains", "$not_regex")
ORDER = ("$gt", "$gte", "$lt", "$lte")


@dataclass(frozen=True)
class Field:
    """A condition on one metadata key: ``op`` is one of $eq $ne $gt $gte $lt $lte $in
    $nin $contains $not_contains, ``operand`` a scalar (a list for $in/$nin)."""

    key: str
    op: str
    operand: Any


@dataclass(frozen=True)
class Text:
    """A condition on the document: $contains $not_contains $regex $not_regex."""

    op: str
    value: str

    @functools.cached_property
    def literal(self) -> str | None:
        """For $regex / $not_regex, a run of plain text every match of the pattern
        holds (``_regex.required_literal``), which a text index can narrow with."""
        if self.op not in ("$regex", "$not_regex"):
            return None
        return _regex.required_literal(self.value)


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Node, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Node, ...]


Node = Field | Text | AllOf | AnyOf


def negated(node: Field | Text) -> bool:
    """Whether the condition is the complement of a positive one (and so also holds for
    records without the key, or without a document)."""
    return node.op in NEGATIONS


def split_bounds(node: AllOf) -> tuple[dict[str, list[Field]], list[Node]]:
    """The order bounds ($gt $gte $lt $lte) among ``node``'s own parts grouped by key,
    and its other parts: ``a <= x < b`` can then be read as one range on ``x``."""
    bounds: dict[str, list[Field]] = {}
    others: list[Node] = []
    for part in node.parts:
        if isinstance(part, Field) and part.op in ORDER:
            bounds.setdefault(part.key, []).append(part)
        else:
            others.append(part)
    return bounds, others


def uses_regex(node: Node | None) -> bool:
    """Does the tree hold a $regex or $not_regex anywhere?"""
    if isinstance(node, (AllOf, AnyOf)):
        return any(uses_regex(p) for p in node.parts)
    return isinstance(node, Text) and node.op in ("$regex", "$not_regex")


def _where(clause: dict[str, Any]) -> Node:
    key, value = next(iter(clause.items()))
    if key in ("$and", "$or"):
        parts = tuple(_where(c) for c in value)
        return AllOf(parts) if key == "$and" else AnyOf(parts)
    if isinstance(value, dict):
        op, operand = next(iter(value.items()))
        return Field(key, op, operand)
    return Field(key, "$eq", value)


def _document(clause: dict[str, Any]) -> Node:
    op, value = next(iter(clause.items()))
    if op in ("$and", "$or"):
        parts = tuple(_document(c) for c in value)
        return AllOf(parts) if op == "$and" else AnyOf(parts)
    return Text(op, value)


def condition_tree(
    where: dict[str, Any] | None, where_document: dict[str, Any] | None
) -> Node | None:
    """Both filters as one tree (their conjunction); None when there is no filter."""
    parts = []
    if where:
        parts.append(_where(where))
    if where_document:
        parts.append(_document(where_document))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))
