"""A plain-Python reference model of one collection, written from SPEC.md alone.

It deliberately shares no code with tintdb: records live in an insertion-ordered
dict, filters are evaluated record by record, and queries are brute force. The
property tests drive tintdb and this model with the same calls and compare.

Errors are raised as ``ModelError`` with a ``kind`` that names the tintdb error
class the same call must raise (see ``ERROR_KINDS``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ERROR_KINDS",
    "Model",
    "ModelError",
    "Record",
    "distance",
    "matches_where",
    "matches_where_document",
    "validate_where",
    "validate_where_document",
]

# ModelError.kind -> name of the tintdb.errors class the same call must raise.
ERROR_KINDS = {
    "invalid": "InvalidArgumentError",
    "dimension": "InvalidDimensionException",
    "duplicate": "DuplicateIDError",
    "exists": "IDAlreadyExistsError",
    "not_found": "NotFoundError",
}

_FIELD_OPS = (
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$contains",
    "$not_contains",
)
_ORDER_OPS = ("$gt", "$gte", "$lt", "$lte")
_DOC_OPS = ("$contains", "$not_contains", "$regex", "$not_regex")


class ModelError(Exception):
    """The model refuses a call; ``kind`` is a key of ``ERROR_KINDS``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        assert kind in ERROR_KINDS
        self.kind = kind


@dataclass
class Record:
    """One stored record: float32 embedding, metadata (None when empty), document."""

    embedding: np.ndarray
    metadata: dict[str, Any] | None = None
    document: str | None = None


# ---------------------------------------------------------------- value typing


def _type_of(value: Any) -> str:
    """The comparison type of a scalar: bool, str or num (int and float are one type)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (int, float)):
        return "num"
    return "other"


def _is_scalar(value: Any) -> bool:
    return _type_of(value) != "other"


def _is_number(value: Any) -> bool:
    return _type_of(value) == "num"


def _same(a: Any, b: Any) -> bool:
    """Equality as filters see it: 1 == 1.0, True != 1, "1" != 1."""
    return _type_of(a) == _type_of(b) and a == b


# ---------------------------------------------------------------- filter validation


def _bad(message: str) -> ModelError:
    return ModelError("invalid", message)


def _single_key(clause: Any, what: str) -> tuple[Any, Any]:
    if not isinstance(clause, dict):
        raise _bad(f"{what} must be a dict")
    if len(clause) != 1:
        raise _bad(f"{what} must have exactly one key, got {len(clause)}")
    return next(iter(clause.items()))


def _clauses(op: str, value: Any, single_ok: bool) -> list[Any]:
    if not isinstance(value, list) or len(value) < (1 if single_ok else 2):
        raise _bad(f"{op} needs a list of at least two clauses")
    return value


def validate_where(where: Any, single_ok: bool = False) -> None:
    """Raise ModelError("invalid") unless ``where`` is a valid metadata filter."""
    key, value = _single_key(where, "where")
    if key in ("$and", "$or"):
        for clause in _clauses(key, value, single_ok):
            validate_where(clause, single_ok)
        return
    if not isinstance(key, str) or key.startswith("$"):
        raise _bad(f"unknown top-level operator {key!r}")
    if not isinstance(value, dict):
        if not _is_scalar(value):
            raise _bad(f"bad value for {key!r}")
        return
    op, operand = _single_key(value, f"condition on {key!r}")
    if op not in _FIELD_OPS:
        raise _bad(f"unknown operator {op!r}")
    if op in _ORDER_OPS:
        if not _is_number(operand):
            raise _bad(f"{op} needs a number")
    elif op in ("$in", "$nin"):
        if not isinstance(operand, list) or not operand:
            raise _bad(f"{op} needs a non-empty list")
        if not all(_is_scalar(v) for v in operand):
            raise _bad(f"{op} items must be scalars")
        if len({_type_of(v) for v in operand}) != 1:
            raise _bad(f"{op} items must share one type")
    elif not _is_scalar(operand):
        raise _bad(f"{op} needs a scalar")


def validate_where_document(where_document: Any, single_ok: bool = False) -> None:
    """Raise ModelError("invalid") unless ``where_document`` is a valid document filter."""
    op, value = _single_key(where_document, "where_document")
    if op in ("$and", "$or"):
        for clause in _clauses(op, value, single_ok):
            validate_where_document(clause, single_ok)
        return
    if op not in _DOC_OPS:
        raise _bad(f"unknown where_document operator {op!r}")
    if not isinstance(value, str) or not value:
        raise _bad(f"{op} needs a non-empty string")
    if op in ("$regex", "$not_regex"):
        try:
            re.compile(value)
        except re.error as exc:
            raise _bad(f"bad regex {value!r}") from exc


# ---------------------------------------------------------------- filter evaluation


def _field_matches(metadata: dict[str, Any], key: str, op: str, operand: Any) -> bool:
    present = key in metadata
    value = metadata.get(key)
    scalar = present and not isinstance(value, list)
    if op == "$eq":
        return scalar and _same(value, operand)
    if op == "$ne":
        return not _field_matches(metadata, key, "$eq", operand)
    if op in _ORDER_OPS:
        if not (scalar and _is_number(value)):
            return False
        return {
            "$gt": value > operand,
            "$gte": value >= operand,
            "$lt": value < operand,
            "$lte": value <= operand,
        }[op]
    if op == "$in":
        return scalar and any(_same(value, item) for item in operand)
    if op == "$nin":
        return not _field_matches(metadata, key, "$in", operand)
    if op == "$contains":
        return present and isinstance(value, list) and any(_same(v, operand) for v in value)
    if op == "$not_contains":
        return not _field_matches(metadata, key, "$contains", operand)
    raise AssertionError(op)


def matches_where(metadata: dict[str, Any] | None, where: dict[str, Any]) -> bool:
    """Does a record with this metadata satisfy a (validated) ``where``?"""
    key, value = next(iter(where.items()))
    if key == "$and":
        return all(matches_where(metadata, c) for c in value)
    if key == "$or":
        return any(matches_where(metadata, c) for c in value)
    op, operand = next(iter(value.items())) if isinstance(value, dict) else ("$eq", value)
    return _field_matches(metadata or {}, key, op, operand)


def matches_where_document(document: str | None, where_document: dict[str, Any]) -> bool:
    """Does a record with this document satisfy a (validated) ``where_document``?"""
    op, value = next(iter(where_document.items()))
    if op == "$and":
        return all(matches_where_document(document, c) for c in value)
    if op == "$or":
        return any(matches_where_document(document, c) for c in value)
    if op == "$contains":
        return document is not None and value in document
    if op == "$not_contains":
        return document is None or value not in document
    found = document is not None and re.search(value, document) is not None
    return found if op == "$regex" else not found


# ---------------------------------------------------------------- distances


def distance(space: str, a: np.ndarray, b: np.ndarray, dtype: type = np.float64) -> float:
    """l2 = squared euclidean, ip = 1 - dot, cosine = 1 - cosine similarity.

    A zero vector has cosine similarity 0 with everything (distance 1).
    """
    x = np.asarray(a, dtype=dtype)
    y = np.asarray(b, dtype=dtype)
    if space == "l2":
        return float(((x - y) ** 2).sum())
    if space == "ip":
        return float(1 - (x * y).sum())
    if space == "cosine":
        nx, ny = math.sqrt(float((x * x).sum())), math.sqrt(float((y * y).sum()))
        if nx == 0 or ny == 0:
            return 1.0
        return float(1 - float((x * y).sum()) / (nx * ny))
    raise AssertionError(space)


# ---------------------------------------------------------------- the collection


def _check_ids(ids: list[str]) -> None:
    if not ids:
        raise _bad("ids must be a non-empty list")
    if any(not isinstance(i, str) or i == "" for i in ids):
        raise _bad("ids must be non-empty strings")
    if len(set(ids)) != len(ids):
        raise ModelError("duplicate", "duplicate ids in one call")


def _check_lengths(n: int, *columns: list[Any] | None) -> None:
    for column in columns:
        if column is not None and len(column) != n:
            raise _bad("column length differs from the number of ids")


def _merge(stored: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any] | None:
    merged = dict(stored or {})
    for key, value in new.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged or None


@dataclass
class Model:
    """One collection, as SPEC.md describes it."""

    space: str = "l2"
    records: dict[str, Record] = field(default_factory=dict)
    dim: int | None = None

    # ------------------------------------------------------------ helpers

    def _vectors(self, embeddings: list[list[float]], n: int | None) -> list[np.ndarray]:
        vecs = [np.asarray(e, dtype=np.float32) for e in embeddings]
        if n is not None and len(vecs) != n:
            raise _bad("embedding count differs from the number of ids")
        lengths = {len(v) for v in vecs}
        if len(lengths) > 1:
            raise _bad("embeddings of different lengths in one call")
        if any(not np.isfinite(v).all() for v in vecs):
            raise _bad("NaN or infinity in an embedding")
        return vecs

    def _check_dim(self, vecs: list[np.ndarray], fix: bool) -> None:
        if not vecs:
            return
        length = len(vecs[0])
        if self.dim is None:
            if fix:
                self.dim = length
        elif length != self.dim:
            raise ModelError("dimension", f"expected dimension {self.dim}, got {length}")

    def _filtered(
        self,
        ids: list[str] | None,
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None,
    ) -> list[str]:
        wanted = None if ids is None else set(ids)
        return [
            rid
            for rid, rec in self.records.items()
            if (wanted is None or rid in wanted)
            and (not where or matches_where(rec.metadata, where))
            and (not where_document or matches_where_document(rec.document, where_document))
        ]

    @staticmethod
    def _check_filters(where: Any, where_document: Any) -> None:
        if where is not None:
            validate_where(where)
        if where_document is not None:
            validate_where_document(where_document)

    @staticmethod
    def _check_limit(name: str, value: int | None) -> None:
        if value is not None and value < 0:
            raise _bad(f"{name} must not be negative")

    # ------------------------------------------------------------ writes

    def add(
        self,
        ids: list[str],
        embeddings: list[list[float]],
        metadatas: list[dict[str, Any] | None] | None = None,
        documents: list[str | None] | None = None,
    ) -> None:
        """New records; any existing id refuses the whole call."""
        _check_ids(ids)
        _check_lengths(len(ids), metadatas, documents)
        vecs = self._vectors(embeddings, len(ids))
        self._check_dim(vecs, fix=False)
        taken = [i for i in ids if i in self.records]
        if taken:
            raise ModelError("exists", f"ids already exist: {taken}")
        self._check_dim(vecs, fix=True)
        for n, rid in enumerate(ids):
            md = None if metadatas is None else metadatas[n]
            self.records[rid] = Record(
                vecs[n],
                _merge(None, md) if md else None,
                None if documents is None else documents[n],
            )

    def _apply(
        self,
        rid: str,
        n: int,
        vecs: list[np.ndarray] | None,
        metadatas: list[dict[str, Any] | None] | None,
        documents: list[str | None] | None,
    ) -> None:
        rec = self.records[rid]
        if vecs is not None:
            rec.embedding = vecs[n]
        if metadatas is not None and metadatas[n] is not None:
            rec.metadata = _merge(rec.metadata, metadatas[n])  # type: ignore[arg-type]
        if documents is not None and documents[n] is not None:
            rec.document = documents[n]

    def update(
        self,
        ids: list[str],
        embeddings: list[list[float]] | None = None,
        metadatas: list[dict[str, Any] | None] | None = None,
        documents: list[str | None] | None = None,
    ) -> None:
        """Change existing records in place; unknown ids are ignored."""
        _check_ids(ids)
        _check_lengths(len(ids), metadatas, documents)
        vecs = None if embeddings is None else self._vectors(embeddings, len(ids))
        if vecs is not None:
            self._check_dim(vecs, fix=False)
        for n, rid in enumerate(ids):
            if rid in self.records:
                self._apply(rid, n, vecs, metadatas, documents)

    def upsert(
        self,
        ids: list[str],
        embeddings: list[list[float]],
        metadatas: list[dict[str, Any] | None] | None = None,
        documents: list[str | None] | None = None,
    ) -> None:
        """Update existing ids like update(), add the others at the end."""
        _check_ids(ids)
        _check_lengths(len(ids), metadatas, documents)
        vecs = self._vectors(embeddings, len(ids))
        self._check_dim(vecs, fix=True)
        for n, rid in enumerate(ids):
            if rid in self.records:
                self._apply(rid, n, vecs, metadatas, documents)
            else:
                md = None if metadatas is None else metadatas[n]
                self.records[rid] = Record(
                    vecs[n],
                    _merge(None, md) if md else None,
                    None if documents is None else documents[n],
                )

    def delete(
        self,
        ids: list[str] | None = None,
        where: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
        limit: int | None = None,
    ) -> int:
        """Remove matches (first ``limit`` in storage order); returns how many."""
        if ids is not None:
            _check_ids(ids)
        self._check_filters(where, where_document)
        if ids is None and where is None and where_document is None:
            raise _bad("delete needs ids or a filter")
        self._check_limit("limit", limit)
        if limit is not None and where is None and where_document is None:
            raise _bad("delete(limit=) needs a filter")
        gone = self._filtered(ids, where, where_document)
        if limit is not None:
            gone = gone[:limit]
        for rid in gone:
            del self.records[rid]
        return len(gone)

    # ------------------------------------------------------------ reads

    def count(self) -> int:
        return len(self.records)

    def get(
        self,
        ids: list[str] | None = None,
        where: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[str]:
        """Matching ids in insertion order, sliced by offset/limit."""
        if ids is not None:
            _check_ids(ids)
        self._check_filters(where, where_document)
        self._check_limit("limit", limit)
        self._check_limit("offset", offset)
        found = self._filtered(ids, where, where_document)
        start = offset or 0
        return found[start:] if limit is None else found[start : start + limit]

    def query(
        self,
        query_embeddings: list[list[float]],
        n_results: int = 10,
        ids: list[str] | None = None,
        where: dict[str, Any] | None = None,
        where_document: dict[str, Any] | None = None,
        dtype: type = np.float64,
    ) -> list[list[tuple[str, float]]]:
        """Per query, EVERY match as (id, distance), nearest first (ties by storage order).

        The caller compares the first ``n_results`` with tintdb, allowing for ties.
        """
        if n_results <= 0:
            raise _bad("n_results must be positive")
        self._check_filters(where, where_document)
        if ids is not None:
            _check_ids(ids)
        if not query_embeddings:
            raise _bad("no query embeddings")
        vecs = self._vectors(query_embeddings, None)
        self._check_dim(vecs, fix=False)
        if ids is not None:
            missing = sorted(set(ids) - set(self.records))
            if missing:
                raise ModelError("not_found", f"ids not in the collection: {missing}")
        found = self._filtered(ids, where, where_document)
        out = []
        for q in vecs:
            scored = [
                (rid, distance(self.space, q, self.records[rid].embedding, dtype)) for rid in found
            ]
            scored.sort(key=lambda pair: pair[1])
            out.append(scored)
        return out
