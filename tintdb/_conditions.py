"""Filters as a small condition tree, independent of any storage engine.

``where`` and ``where_document`` (already checked by ``_filters.validate_where`` and
``validate_where_document``) are read once into nodes that say what is asked and
nothing about how: a backend compiles the tree into its own query language. The
PostgreSQL backend compiles it to SQL over its records table (``_pgsql``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["AllOf", "AnyOf", "Field", "Node", "Text", "condition_tree", "negated"]

NEGATIONS = ("$ne", "$nin", "$not_contains", "$not_regex")


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
