"""A filter evaluated as set algebra over sorted arrays of seqs, from the condition tree.

Each condition is one indexed lookup in SQLite (``_filter_sql``), returned in bulk;
``AllOf``, ``AnyOf`` and negation are operations on sorted arrays, a negation kept as
the set it excludes, so the work follows what the conditions find rather than the size
of the collection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._conditions import AllOf, AnyOf, Field, Node, split_bounds
from ._conditions import negated as negation
from ._filter_sql import Leaf, bounds_set, field_set, fts_set, scans, text_set

__all__ = ["Found", "evaluate_sets", "member", "sorted_unique"]

# A set of records as sorted unique seqs, and whether it stands for its complement.
Found = tuple[np.ndarray, bool]


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


def _all_of(parts: list[Found]) -> Found:
    """The intersection of sets, some standing for their complement, without ever
    forming a complement."""
    pos = [p for p, neg in parts if not neg]
    neg = [p for p, negated in parts if negated]
    if pos:
        out = min(pos, key=len)
        for p in pos:
            if p is not out:
                out = out[member(out, p)]
        for n in neg:
            out = out[~member(out, n)]
        return out, False
    out = neg[0]  # not A and not B = not (A or B)
    for n in neg[1:]:
        out = np.union1d(out, n)
    return out, True


def _any_of(parts: list[Found]) -> Found:
    """The union of sets, some standing for their complement."""
    pos = [p for p, neg in parts if not neg]
    neg = [p for p, negated in parts if negated]
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
    node: Node | None,
    coll: int,
    fetch: Callable[[str, list[Any]], np.ndarray],
    within: np.ndarray | None = None,
    universe: np.ndarray | None = None,
) -> Found | None:
    """The records satisfying the tree (and in sorted ``within``, if given), as a set
    or the complement of one; None when there is neither a tree nor ``within``.

    Each condition is one indexed SQL lookup returned in bulk by ``fetch``. A condition
    no index serves (a ``$regex`` without required text, a ``$contains`` shorter than a
    trigram) reads only the records the indexed conditions beside it leave, when they
    leave a set rather than a complement; bounds on one key inside an ``AllOf`` are one
    lookup. With ``universe`` (the collection's sorted live seqs), a document condition
    the trigram index serves reads the index alone and keeps the seqs in ``universe``,
    instead of reading each found record to learn its collection.
    """

    def leaf(found: Leaf) -> Found:
        sql, params, negate = found
        return sorted_unique(fetch(sql, params)), negate

    def walk(node: Node, among: np.ndarray | None) -> Found:
        if isinstance(node, AllOf):
            bounds, others = split_bounds(node)
            # Indexed conditions first: what they leave narrows the others.
            done = [leaf(bounds_set(k, b, coll)) for k, b in bounds.items()]
            done += [walk(p, among) for p in others if not scans(p)]
            rest = [p for p in others if scans(p)]
            if rest and done:
                narrowed, negated = _all_of(done + ([(among, False)] if among is not None else []))
                if not negated:
                    among = narrowed
            return _all_of(done + [walk(p, among) for p in rest])
        if isinstance(node, AnyOf):
            return _any_of([walk(p, among) for p in node.parts])
        if isinstance(node, Field):
            return leaf(field_set(node, coll))
        if universe is not None:
            indexed = fts_set(node)
            if indexed is not None:
                found = sorted_unique(fetch(*indexed))
                found = found[member(found, universe)]
                if node.op in ("$contains", "$not_contains"):
                    return found, negation(node)
                return leaf(text_set(node, coll, found))  # the pattern, on those alone
        return leaf(text_set(node, coll, among if scans(node) else None))

    if node is None:
        return None if within is None else (within, False)
    found = walk(node, within)
    return found if within is None else _all_of([(within, False), found])
