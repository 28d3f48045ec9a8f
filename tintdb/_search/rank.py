"""Scoring, as pure functions over candidate lists: the rank algebra, grouping, paging,
and exact sparse top-k. Any backend feeds them the same inputs (each Knn's records in
order, the metadata of the ranked records), so every backend ranks alike.

The algebra (Chroma's, read from its executor): each expression denotes a *domain*, a
score for some records (its support) plus a default score for every other record, or
no default, meaning the other records drop out.

* ``Knn``: its records, scored by distance (or 0, 1, 2... with ``return_rank``), and
  its ``default`` for the rest (None: the rest drop out).
* ``Val(x)``: no support, default ``x``.
* binary operators combine two domains record by record: with both defaults set, the
  union of the supports (a missing side takes its default); with one default, the
  other side's support; with neither, the intersection.
* ``Sum``/``Mul``/``Max``/``Min`` fold their terms from the identity (0, 1, -inf, inf)
  with that rule; ``Abs``/``Exp``/``Log`` apply to every score and the default.

The records ranked are the final support, ordered by score, then by storage order.
Scores are IEEE doubles: ``log`` of a negative score is NaN, of 0 is -inf, a division
by 0 is +-inf or NaN; NaN sorts after every number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "Domain",
    "evaluate",
    "group",
    "order",
    "page",
    "sort_key",
    "sparse_top_k",
    "value_order",
]

Domain = tuple[dict[int, float], float | None]
# seqs and measures, best first (lists, or the numpy arrays the index returns)
KnnResult = tuple[Sequence[int] | np.ndarray, Sequence[float] | np.ndarray]


def _safe(fn: Callable[..., float]) -> Callable[..., float]:
    """``fn`` with IEEE results where Python's math raises (log(0), overflow, x/0)."""

    def run(*args: float) -> float:
        try:
            return fn(*args)
        except (ValueError, ZeroDivisionError, OverflowError):
            with np.errstate(all="ignore"):
                return float(_NUMPY[fn](*[np.float64(a) for a in args]))

    return run


def _div(a: float, b: float) -> float:
    return a / b


def _log(a: float) -> float:
    return math.log(a)


def _exp(a: float) -> float:
    return math.exp(a)


def _pick(a: float, b: float, which: Callable[[float, float], float]) -> float:
    """max/min ignoring a NaN operand, as IEEE maxNum/minNum (and Rust's f32::max) do."""
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return which(a, b)


_NUMPY: dict[Any, Any] = {_div: np.divide, _log: np.log, _exp: np.exp}
_BINARY: dict[str, Callable[[float, float], float]] = {
    "sub": lambda a, b: a - b,
    "div": _safe(_div),
}
_FOLD: dict[str, tuple[float, Callable[[float, float], float]]] = {
    "sum": (0.0, lambda a, b: a + b),
    "mul": (1.0, lambda a, b: a * b),
    "max": (-math.inf, lambda a, b: _pick(a, b, max)),
    "min": (math.inf, lambda a, b: _pick(a, b, min)),
}
_UNARY: dict[str, Callable[[float], float]] = {
    "abs": abs,
    "exp": _safe(_exp),
    "log": _safe(_log),
}


def _merge(left: Domain, right: Domain, op: Callable[[float, float], float]) -> Domain:
    ls, ld = left
    rs, rd = right
    if ld is not None and rd is not None:
        keys = ls.keys() | rs.keys()
        return {s: op(ls.get(s, ld), rs.get(s, rd)) for s in keys}, op(ld, rd)
    if ld is not None:
        return {s: op(ls.get(s, ld), v) for s, v in rs.items()}, None
    if rd is not None:
        return {s: op(v, rs.get(s, rd)) for s, v in ls.items()}, None
    return {s: op(v, rs[s]) for s, v in ls.items() if s in rs}, None


def knn_domain(result: KnnResult, default: float | None, return_rank: bool) -> Domain:
    seqs, measures = result
    if return_rank:
        return {int(s): float(i) for i, s in enumerate(seqs)}, default
    return {int(s): float(m) for s, m in zip(seqs, measures, strict=True)}, default


def evaluate(node: tuple[Any, ...], knn: Callable[[int], Domain]) -> Domain:
    """The domain of a rank node (see ``plan.RankNode``); ``knn(i)`` gives Knn i's."""
    kind = node[0]
    if kind == "val":
        return {}, node[1]
    if kind == "knn":
        return knn(node[1])
    if kind in _FOLD:
        identity, op = _FOLD[kind]
        acc: Domain = ({}, identity)
        for child in node[1]:
            acc = _merge(acc, evaluate(child, knn), op)
        return acc
    if kind in _BINARY:
        return _merge(evaluate(node[1], knn), evaluate(node[2], knn), _BINARY[kind])
    fn = _UNARY[kind]
    support, default = evaluate(node[1], knn)
    return {s: fn(v) for s, v in support.items()}, None if default is None else fn(default)


def sort_key(score: float, seq: int) -> tuple[bool, float, int]:
    """Ascending score, NaN last, ties in storage order."""
    return (math.isnan(score), 0.0 if math.isnan(score) else score, seq)


def order(support: dict[int, float]) -> list[tuple[int, float]]:
    """A domain's support as (seq, score), best first."""
    return sorted(support.items(), key=lambda item: sort_key(item[1], item[0]))


def page(items: list[Any], offset: int, limit: int | None) -> list[Any]:
    return items[offset : None if limit is None else offset + limit]


# ---------------------------------------------------------------- grouping


def value_order(value: Any) -> tuple[int, Any]:
    """A metadata value as a sort key: missing first, then booleans, numbers (by value:
    1 and 1.0 are one group), strings, lists; Chroma orders types the same way apart
    from comparing int and float by type."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, (int, float)):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, list):
        return (4, tuple(value_order(v) for v in value))
    return (5, repr(value))  # a sparse vector: grouping by one is allowed, if odd


def _field(metadata: dict[str, Any] | None, key: str, score: float) -> tuple[int, Any]:
    if key == "#score":
        return (2, score) if not math.isnan(score) else (2, math.inf)
    return value_order(None if metadata is None else metadata.get(key))


def group(
    ranked: list[tuple[int, float]],
    metadata: dict[int, dict[str, Any] | None],
    keys: list[str],
    aggregate: tuple[str, list[str], int],
) -> list[tuple[int, float]]:
    """Records grouped by the values of ``keys`` (a missing key is a value of its own);
    each group keeps ``k`` records by ``aggregate``: ``min`` the lowest values of its
    keys first, ``max`` the highest, ties in rank order. The survivors, best score first."""
    kind, agg_keys, k = aggregate
    groups: dict[tuple[Any, ...], list[tuple[int, float]]] = {}
    for seq, score in ranked:
        md = metadata.get(seq)
        gkey = tuple(_field(md, key, score) for key in keys)
        groups.setdefault(gkey, []).append((seq, score))
    kept: list[tuple[int, float]] = []
    for members in groups.values():
        members.sort(
            key=lambda item: tuple(_field(metadata.get(item[0]), a, item[1]) for a in agg_keys),
            reverse=kind == "max",
        )
        kept.extend(members[:k])
    kept.sort(key=lambda item: sort_key(item[1], item[0]))
    return kept


# ---------------------------------------------------------------- sparse top-k


def sparse_top_k(
    q_indices: np.ndarray,
    q_values: np.ndarray,
    posting_dims: np.ndarray,
    posting_seqs: np.ndarray,
    posting_values: np.ndarray,
    k: int,
    candidates: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` records with the largest dot product with the query, among those with
    at least one posting on a query dimension (and among ``candidates``, sorted seqs,
    when given); returns seqs and Chroma's measure ``1 - dot``, best first, ties in
    storage order. Exact: every posting of every query dimension is summed."""
    if len(posting_seqs) == 0:
        return np.empty(0, np.int64), np.empty(0, np.float64)
    weight = dict(zip(q_indices.tolist(), q_values.tolist(), strict=True))
    dims, where = np.unique(posting_dims, return_inverse=True)
    w = np.array([weight[int(d)] for d in dims], dtype=np.float64)[where]
    seqs, inverse = np.unique(posting_seqs, return_inverse=True)
    dots = np.bincount(inverse, weights=w * posting_values, minlength=len(seqs))
    if candidates is not None:
        keep = np.isin(seqs, candidates, assume_unique=True)
        seqs, dots = seqs[keep], dots[keep]
    measures = 1.0 - dots
    if len(seqs) > k:
        # the k smallest measures, with ties at the edge settled by seq
        cut = np.partition(measures, k - 1)[k - 1]
        keep = measures <= cut
        seqs, measures = seqs[keep], measures[keep]
    best = np.lexsort((seqs, measures))[:k]
    return seqs[best], measures[best]
