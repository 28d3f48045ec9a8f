"""A search payload (Chroma's JSON) checked and turned into a plan any backend can run.

``parse`` refuses, with a message naming it, everything tintdb does not run: an
unknown operator, a filter on ``#embedding``, ``$regex`` on a metadata key, a rank
without a ``Knn``... so that nothing is ever silently ignored. What it returns holds
no reference to a collection: the checks that need one (the dimension, which key has a
sparse index) are the engine's.

The filter becomes a small tree whose leaves are what every backend already answers:
a metadata ``where``, a ``where_document``, or a list of ids. Conditions on
``#document`` and ``#id`` may sit anywhere inside ``$and``/``$or``, which the classic
``where``/``where_document`` pair cannot express; each maximal subtree of one kind is
one leaf, so most filters are one lookup.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._filters import MAX_DEPTH, validate_where, validate_where_document
from ..errors import InvalidArgumentError
from .sparse import is_wire_sparse, sparse_from_any

__all__ = [
    "DOCUMENT",
    "EMBEDDING",
    "ID",
    "METADATA",
    "SCORE",
    "KnnSpec",
    "Plan",
    "parse",
    "parse_read_level",
    "sparse_index_configs",
]

ID, DOCUMENT, EMBEDDING, METADATA, SCORE = "#id", "#document", "#embedding", "#metadata", "#score"
# The order Chroma's server lists a payload's selected keys in: the reserved keys in
# this order, then metadata keys sorted.
_SELECT_ORDER = {DOCUMENT: 0, EMBEDDING: 1, METADATA: 2, SCORE: 3}
_SELECTABLE = (ID, DOCUMENT, EMBEDDING, METADATA, SCORE)
_DOC_OPS = ("$contains", "$not_contains", "$regex", "$not_regex")
_ID_OPS = ("$eq", "$ne", "$in", "$nin")
READ_LEVELS = ("index_and_wal", "index_only", "index_and_bounded_wal")
_READ_LEVEL_NAMES = {"IndexAndWal": 0, "IndexOnly": 1, "IndexAndBoundedWal": 2}


def _fail(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(message)


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class KnnSpec:
    """One ``$knn``: a dense query (float32, one row) on ``#embedding``, or a sparse one
    (``indices``/``values``) on a metadata key."""

    key: str
    limit: int
    default: float | None
    return_rank: bool
    dense: np.ndarray | None = None
    indices: np.ndarray | None = None
    values: np.ndarray | None = None

    @property
    def sparse(self) -> bool:
        return self.dense is None


# A filter node: ("meta", where) | ("doc", where_document) | ("ids", [ids], negate)
# | ("and", [nodes]) | ("or", [nodes]).
FilterNode = tuple[Any, ...]
# A rank node: ("val", x) | ("knn", i) | ("sum"|"mul"|"max"|"min", [nodes])
# | ("sub"|"div", left, right) | ("abs"|"exp"|"log", node). Knn i indexes Plan.knns,
# numbered in the order a depth-first walk meets them.
RankNode = tuple[Any, ...]


@dataclass
class Plan:
    filter: FilterNode | None
    rank: RankNode | None
    knns: list[KnnSpec] = field(default_factory=list)
    group_keys: list[str] | None = None
    aggregate: tuple[str, list[str], int] | None = None  # ("min"|"max", keys, k)
    offset: int = 0
    limit: int | None = None
    select: list[str] = field(default_factory=list)

    @property
    def wants(self) -> set[str]:
        return set(self.select)


# ---------------------------------------------------------------- parse


def parse(payload: Any, index: int = 0) -> Plan:
    """Check one search payload (``Search.to_dict()``); ``index`` names it in errors."""
    where = f"search {index}" if index else "search"
    if not isinstance(payload, Mapping):
        raise _fail(f"{where}: expected a dict (Search().to_dict()), got {type(payload).__name__}")
    extra = set(payload) - {"filter", "rank", "group_by", "limit", "select"}
    if extra:
        raise _fail(
            f"{where}: unknown field {sorted(extra)[0]!r}; a search has filter, rank, group_by, "
            "limit and select"
        )
    plan = Plan(filter=_filter(payload.get("filter"), where), rank=None)
    raw_rank = payload.get("rank")
    if raw_rank is not None:
        plan.rank = _rank(raw_rank, plan.knns, where, 0)
        if not plan.knns:
            raise _fail(
                f"{where}: the rank expression has no Knn, so it would score no record "
                "(a record is ranked by appearing in a Knn's results); add a Knn, or leave "
                "rank out to list records in insertion order"
            )
    _group_by(payload.get("group_by"), plan, where)
    _limit(payload.get("limit"), plan, where)
    plan.select = _select(payload.get("select"), where)
    return plan


def parse_read_level(value: Any) -> str:
    """Chroma's read levels, by value or name; every one reads every committed write here."""
    raw = getattr(value, "value", value)
    if isinstance(raw, str):
        if raw in READ_LEVELS:
            return raw
        if raw in _READ_LEVEL_NAMES:
            return READ_LEVELS[_READ_LEVEL_NAMES[raw]]
    raise _fail(f"read_level must be one of {', '.join(READ_LEVELS)}, got {value!r}")


def sparse_index_configs(schema: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The metadata keys of a collection's schema (its JSON form) with an enabled sparse
    vector index, each with its config (embedding_function, source_key, bm25)."""
    schema = schema or {}
    out = {}
    for key, entry in (schema.get("keys") or {}).items():
        spec = ((entry or {}).get("sparse_vector") or {}).get("sparse_vector_index")
        if spec and spec.get("enabled"):
            out[key] = dict(spec.get("config") or {})
    return out


# ---------------------------------------------------------------- filter


def _filter(data: Any, where: str) -> FilterNode | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise _fail(f"{where}: filter must be a where dict, got {type(data).__name__}")
    if not data:
        return None
    return _where(data, f"{where} filter", 0)


def _one(data: Any, what: str) -> tuple[Any, Any]:
    if not isinstance(data, Mapping):
        raise _fail(f"{what}: expected a dict, got {type(data).__name__}")
    if len(data) != 1:
        raise _fail(
            f"{what}: one key per dict, got {list(data)!r}; wrap several conditions in $and"
        )
    return next(iter(data.items()))


def _where(data: Any, what: str, depth: int) -> FilterNode:
    key, value = _one(data, what)
    if key in ("$and", "$or"):
        if depth >= MAX_DEPTH:
            raise _fail(f"{what}: $and/$or nested more than {MAX_DEPTH} levels deep")
        if not isinstance(value, list) or not value:
            raise _fail(f"{what}: {key} needs a non-empty list of conditions, got {value!r}")
        return _combine(key[1:], [_where(c, what, depth + 1) for c in value])
    if not isinstance(key, str):
        raise _fail(f"{what}: keys must be str, got {key!r}")
    op, operand = _one(value, f"{what}, {key!r}") if isinstance(value, Mapping) else ("$eq", value)
    if key == ID:
        return _id_leaf(op, operand, what)
    if key == DOCUMENT:
        if op not in _DOC_OPS:
            raise _fail(
                f"{what}: {op} on K.DOCUMENT is not supported; documents take {', '.join(_DOC_OPS)}"
            )
        clause = {op: operand}
        validate_where_document(clause)
        return ("doc", clause)
    if key.startswith("#"):
        raise _fail(
            f"{what}: cannot filter on {key!r}; filters take metadata keys, K.ID and K.DOCUMENT"
        )
    if op in ("$regex", "$not_regex"):
        raise _fail(
            f"{what}: {op} on metadata key {key!r} is not supported; tintdb runs regular "
            "expressions on documents (K.DOCUMENT.regex(...))"
        )
    clause = {key: {op: operand}}
    validate_where(clause)
    return ("meta", clause)


def _id_leaf(op: Any, operand: Any, what: str) -> FilterNode:
    if op not in _ID_OPS:
        raise _fail(f"{what}: {op} on K.ID is not supported; ids take {', '.join(_ID_OPS)}")
    ids = operand if op in ("$in", "$nin") else [operand]
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise _fail(
            f"{what}: {op} on K.ID needs {'a list of ' if op in ('$in', '$nin') else ''}str"
        )
    return ("ids", list(dict.fromkeys(ids)), op in ("$ne", "$nin"))


def _combine(op: str, parts: list[FilterNode]) -> FilterNode:
    """One node for ``$and``/``$or`` of ``parts``: leaves of one kind are merged into one
    leaf (a single lookup), the rest stay apart."""
    if len(parts) == 1:
        return parts[0]
    metas = [p[1] for p in parts if p[0] == "meta"]
    docs = [p[1] for p in parts if p[0] == "doc"]
    rest = [p for p in parts if p[0] not in ("meta", "doc")]
    merged: list[FilterNode] = []
    if metas:
        merged.append(("meta", metas[0] if len(metas) == 1 else {f"${op}": metas}))
    if docs:
        merged.append(("doc", docs[0] if len(docs) == 1 else {f"${op}": docs}))
    flat: list[FilterNode] = []
    for node in [*merged, *rest]:
        flat.extend(node[1] if node[0] == op else [node])
    return flat[0] if len(flat) == 1 else (op, flat)


# ---------------------------------------------------------------- rank


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rank(data: Any, knns: list[KnnSpec], where: str, depth: int) -> RankNode:
    if depth > MAX_DEPTH:
        raise _fail(f"{where}: the rank expression nests more than {MAX_DEPTH} levels deep")
    op, value = _one(data, f"{where} rank")
    if op == "$val":
        if not _number(value) or not math.isfinite(value):
            raise _fail(f"{where}: $val needs a finite number, got {value!r}")
        return ("val", float(value))
    if op == "$knn":
        knns.append(_knn(value, where, len(knns)))
        return ("knn", len(knns) - 1)
    if op in ("$sum", "$mul", "$max", "$min"):
        if not isinstance(value, list) or len(value) < 2:
            raise _fail(f"{where}: {op} needs a list of at least 2 ranks, got {value!r}")
        return (op[1:], [_rank(v, knns, where, depth + 1) for v in value])
    if op in ("$sub", "$div"):
        if not isinstance(value, Mapping) or set(value) != {"left", "right"}:
            raise _fail(f"{where}: {op} needs {{'left': rank, 'right': rank}}, got {value!r}")
        left = _rank(value["left"], knns, where, depth + 1)
        return (op[1:], left, _rank(value["right"], knns, where, depth + 1))
    if op in ("$abs", "$exp", "$log"):
        return (op[1:], _rank(value, knns, where, depth + 1))
    raise _fail(
        f"{where}: rank operator {op!r} is not supported; tintdb runs $knn, $val, $sum, $sub, "
        "$mul, $div, $abs, $exp, $log, $max, $min (Rrf travels as these)"
    )


def _knn(data: Any, where: str, n: int) -> KnnSpec:
    what = f"{where}, Knn {n}"
    if not isinstance(data, Mapping) or "query" not in data:
        raise _fail(f"{what}: $knn needs a dict with a 'query', got {data!r}")
    extra = set(data) - {"query", "key", "limit", "default", "return_rank"}
    if extra:
        raise _fail(f"{what}: unknown Knn field {sorted(extra)[0]!r}")
    key = data.get("key", EMBEDDING)
    limit = data.get("limit", 16)
    default = data.get("default")
    return_rank = data.get("return_rank", False)
    if not isinstance(key, str):
        raise _fail(f"{what}: key must be a str, got {key!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise _fail(f"{what}: limit must be a positive int, got {limit!r}")
    if default is not None and (not _number(default) or not math.isfinite(default)):
        raise _fail(f"{what}: default must be a finite number or None, got {default!r}")
    if not isinstance(return_rank, bool):
        raise _fail(f"{what}: return_rank must be true or false, got {return_rank!r}")
    common: dict[str, Any] = {
        "key": key,
        "limit": limit,
        "default": None if default is None else float(default),
        "return_rank": return_rank,
    }
    query = data["query"]
    if isinstance(query, str):
        raise _fail(
            f"{what}: the query is text; Collection.search embeds text queries with the "
            "collection's functions before sending, a raw request must send a vector"
        )
    if isinstance(query, Mapping):
        # Chroma's Python client tags a sparse query ("#type"), its JavaScript client
        # sends bare {"indices", "values"}; both are read, as Chroma's server reads them.
        if not is_wire_sparse(query) and (
            "#type" in query or not {"indices", "values"} <= set(query)
        ):
            raise _fail(
                f"{what}: a dict query must be a sparse vector: "
                "{'indices': [...], 'values': [...]}"
            )
        query = {**query, "#type": "sparse_vector"}
        if key == EMBEDDING:
            raise _fail(
                f"{what}: a sparse query searches a metadata key with a sparse vector index, "
                "not #embedding; give Knn(key=...)"
            )
        vec = sparse_from_any(query, what)
        return KnnSpec(
            **common,
            indices=np.asarray(vec["indices"], dtype=np.int64),
            values=np.asarray(vec["values"], dtype=np.float64),
        )
    if key != EMBEDDING:
        raise _fail(
            f"{what}: a dense query searches #embedding only; key {key!r} would need a "
            "sparse vector query"
        )
    if not isinstance(query, (list, tuple)) or not query:
        raise _fail(f"{what}: the query must be a non-empty list of numbers or a sparse vector")
    try:
        dense = np.asarray(query, dtype=np.float32)
    except (TypeError, ValueError):
        dense = np.empty(0, np.float32)
    if dense.ndim != 1 or len(dense) != len(query) or any(type(x) is bool for x in query):
        raise _fail(f"{what}: the query must hold numbers only")
    dense = dense.reshape(1, -1)
    if not np.isfinite(dense).all():
        raise _fail(f"{what}: the query holds NaN or infinity")
    return KnnSpec(**common, dense=dense)


# ---------------------------------------------------------------- group_by, limit, select


def _metadata_key(key: Any, what: str, allow_score: bool) -> str:
    if not isinstance(key, str) or not key:
        raise _fail(f"{what}: keys must be non-empty str, got {key!r}")
    if key == SCORE and allow_score:
        return key
    if key.startswith(("#", "$")):
        allowed = "metadata keys and K.SCORE" if allow_score else "metadata keys"
        raise _fail(f"{what}: {key!r} cannot be used here; it takes {allowed}")
    return key


def _group_by(data: Any, plan: Plan, where: str) -> None:
    if data is None or data == {}:
        return
    what = f"{where} group_by"
    if not isinstance(data, Mapping) or set(data) != {"keys", "aggregate"}:
        raise _fail(f"{what}: needs 'keys' and 'aggregate', got {data!r}")
    keys = data["keys"]
    if not isinstance(keys, list) or not keys:
        raise _fail(f"{what}: keys must be a non-empty list of metadata keys")
    plan.group_keys = [_metadata_key(k, what, allow_score=False) for k in keys]
    op, value = _one(data["aggregate"], f"{what} aggregate")
    if op not in ("$min_k", "$max_k"):
        raise _fail(f"{what}: aggregate {op!r} is not supported; use MinK or MaxK")
    if not isinstance(value, Mapping) or set(value) != {"keys", "k"}:
        raise _fail(f"{what}: {op} needs {{'keys': [...], 'k': int}}, got {value!r}")
    agg_keys, k = value["keys"], value["k"]
    if not isinstance(agg_keys, list) or not agg_keys:
        raise _fail(f"{what}: {op} keys must be a non-empty list")
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise _fail(f"{what}: {op} k must be a positive int, got {k!r}")
    plan.aggregate = (
        op[1:4],
        [_metadata_key(a, f"{what} {op}", allow_score=True) for a in agg_keys],
        k,
    )
    if plan.rank is None:
        raise _fail(
            f"{what}: grouping needs a rank expression (groups keep their best-scored records); "
            "add .rank(Knn(...))"
        )


def _limit(data: Any, plan: Plan, where: str) -> None:
    if data is None:
        return
    if not isinstance(data, Mapping) or set(data) - {"offset", "limit"}:
        raise _fail(f"{where}: limit must be {{'offset': int, 'limit': int}}, got {data!r}")
    offset, limit = data.get("offset", 0), data.get("limit")
    if offset is None:
        offset = 0
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise _fail(f"{where}: offset must be an int of at least 0, got {offset!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
        raise _fail(f"{where}: limit must be a positive int or None, got {limit!r}")
    plan.offset, plan.limit = offset, limit


def _select(data: Any, where: str) -> list[str]:
    if data is None:
        return []
    if not isinstance(data, Mapping) or set(data) - {"keys"}:
        raise _fail(f"{where}: select must be {{'keys': [...]}}, got {data!r}")
    keys = data.get("keys") or []
    if not isinstance(keys, list):
        raise _fail(f"{where}: select keys must be a list of str, got {keys!r}")
    out = []
    for key in keys:
        if not isinstance(key, str) or not key:
            raise _fail(f"{where}: select keys must be non-empty str, got {key!r}")
        if key.startswith("#") and key not in _SELECTABLE:
            raise _fail(
                f"{where}: cannot select {key!r}; select takes {', '.join(_SELECTABLE)} and "
                "metadata keys"
            )
        out.append(key)
    return sorted(set(out), key=lambda k: (_SELECT_ORDER.get(k, 4), k))
