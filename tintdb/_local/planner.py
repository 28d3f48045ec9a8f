"""How the embedded backend plans a filtered read, and what it remembers of filters.

No SQL and no index here: the caller reads the store and searches the index, and asks
this module which plan to take. The decisions that any backend shares (exact search
for small collections, the post-filter window) are in ``tintdb._planning``; these are
the embedded backend's own: a sample of records to judge a new filter by, and the
memory of each filter's matches on one version of a collection (``FilterMemory``), so
that a repeated filter costs no SQL until the next write.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from .._conditions import AllOf, AnyOf, Field, Node, Text

__all__ = [
    "DENSE_SHARE",
    "EXACT_CAP",
    "EXACT_LIMIT",
    "EXACT_SHARE",
    "FilterKey",
    "FilterMemory",
    "Matches",
    "POSTFILTER_TRIES",
    "VERIFY_FIRST",
    "WALK_MAX",
    "exact_among",
    "filter_key",
    "shape_key",
    "walks",
]

# A filtered query with at most this many matching records is answered by exact search
# over just those vectors (cheap, and recall is 1.0) when its window comes up short;
# above it, by HNSW with a filter callback, unless the matches are at most EXACT_SHARE
# of the collection (and at most EXACT_CAP): the callback then visits many nodes for
# each match it finds, a Python call each, and misses more. At 1M x 384, a filter
# matching 10% that follows the clusters: callback 13 ms p50 at recall 0.830, exact
# 20 ms at 1.000 (p90 22 ms both).
EXACT_LIMIT = 20_000
EXACT_SHARE = 0.15
EXACT_CAP = 200_000
# Filter results kept per (collection, version, filter): repeated filters skip SQL.
FILTER_CACHE_SIZE = 32
# A filter whose post-filtered queries came up short this many times, more often than
# not, goes straight to the fallback plan for the rest of this version of the
# collection: each short try costs a wide HNSW search on top of the fallback.
POSTFILTER_TRIES = 2
# Exact search over a superset of a filter's matches first takes this many times k of
# its nearest records and tests them; where fewer than k pass, four times as many.
VERIFY_FIRST = 2

# A filter not seen on this version of a collection is first tried on an even sample of
# this many of its records (when it has at least SAMPLE_ABOVE): where at least
# DENSE_SHARE of them match, a query post-filters its neighbours, tested record by
# record, and a get(where, limit) walks the records in order until its page is full
# (if that takes at most WALK_MAX records), instead of listing every match.
# A filter that comes again on the same version is listed (and cached) instead, the
# list then answering its later queries without SQL, unless its sample put it above
# LIST_MAX matches. (The costs behind these lines: docs/internals.md, "Queries: the
# cold scan and the filtered plans".)
SAMPLE_SIZE = 128
LIST_MAX = 50_000
SAMPLE_ABOVE = 4096
DENSE_SHARE = 0.05
WALK_MAX = 4096

FilterKey = tuple[str, int, bytes]


def filter_key(collection_id: str, lsn: int, ids: Any, cond: Node | None) -> FilterKey:
    """One filter (its ids and condition tree) on one version of a collection: any write,
    from any process, moves the lsn and so retires every entry of the collection."""
    return (collection_id, lsn, orjson.dumps([ids, cond], option=orjson.OPT_SORT_KEYS))


def _shape(node: Node) -> Node:
    """The tree with its values left out: which keys and operators, not which values."""
    if isinstance(node, (AllOf, AnyOf)):
        return type(node)(tuple(_shape(p) for p in node.parts))
    if isinstance(node, Field):
        return Field(node.key, node.op, None)
    return Text(node.op, "")


def shape_key(collection_id: str, lsn: int, cond: Node) -> FilterKey:
    """The filters of one shape (the same keys and operators, any values) on one version
    of a collection: what post-filtering learnt from one value of ``topic`` holds for
    the next when the key follows where the vectors lie."""
    return filter_key(collection_id, lsn, None, _shape(cond))


def exact_among(matches: int, k: int, total: int) -> bool:
    """Whether exact search over the matches of a collection of ``total`` records is the
    fallback plan (rather than HNSW with a filter callback, for very many matches)."""
    if matches <= max(EXACT_LIMIT, k):
        return True
    return matches <= EXACT_CAP and matches <= EXACT_SHARE * total


def walks(share: float | None, offset: int | None, limit: int | None) -> bool:
    """Whether a page of get(where, limit, offset) is a short walk through the records in
    order, given the share of a sample that matched (no list of every match)."""
    if share is None or share <= 0 or limit is None:
        return False
    return ((offset or 0) + limit) / share <= WALK_MAX


def dense(share: float | None) -> bool:
    """Whether a sampled share is high enough for a query to post-filter its neighbours,
    tested record by record, without listing the matches."""
    return share is not None and share >= DENSE_SHARE


class Matches:
    """The records one filter matches on one version of a collection, and what queries
    with that filter have learnt: the HNSW filter set and how often post-filtering came
    up short."""

    __slots__ = ("allowed", "misses", "seqs", "tries", "verify")

    def __init__(self, seqs: np.ndarray) -> None:
        self.seqs = seqs
        self.allowed: set[int] | None = None
        self.tries = self.misses = 0
        # Set when ``seqs`` is a superset of the filter's matches (its relaxed tree, see
        # _filter_sql.relaxed): the filter each record found must still pass.
        self.verify: Node | None = None

    def correlated(self) -> bool:
        """Whether post-filtering keeps coming up short for this filter (its matches lie
        away from where queries look), so trying it first only costs time."""
        return self.tries >= POSTFILTER_TRIES and self.misses * 2 > self.tries


class FilterMemory:
    """Per (collection, lsn, filter): the matches listed, and the share a sample matched.
    Bounded, least recently used first out."""

    def __init__(self) -> None:
        self._matches: OrderedDict[FilterKey, Matches] = OrderedDict()
        self._shares: OrderedDict[FilterKey, float] = OrderedDict()
        # Per shape (shape_key): post-filtered queries tried, and how many came up short.
        self._shapes: OrderedDict[FilterKey, list[int]] = OrderedDict()

    def clear(self) -> None:
        self._matches.clear()
        self._shares.clear()
        self._shapes.clear()

    def shape_tried(self, key: FilterKey, tries: int, misses: int) -> None:
        """Count post-filtered queries of a filter of this shape, and those that came up
        short."""
        seen = self._shapes.setdefault(key, [0, 0])
        self._shapes.move_to_end(key)
        seen[0] += tries
        seen[1] += misses
        while len(self._shapes) > 4 * FILTER_CACHE_SIZE:
            self._shapes.popitem(last=False)

    def shape_correlated(self, key: FilterKey) -> bool:
        """Whether post-filtering keeps coming up short for filters of this shape (as
        ``Matches.correlated`` for one filter): a new value of the key skips the window."""
        seen = self._shapes.get(key)
        return seen is not None and seen[0] >= POSTFILTER_TRIES and seen[1] * 2 > seen[0]

    def listed(self) -> list[FilterKey]:
        """The keys whose matches are listed, least recently used first."""
        return list(self._matches)

    def matches(self, key: FilterKey) -> Matches | None:
        found = self._matches.get(key)
        if found is not None:
            self._matches.move_to_end(key)
        return found

    def remember(self, key: FilterKey, seqs: np.ndarray) -> Matches:
        entry = self._matches[key] = Matches(seqs)
        while len(self._matches) > FILTER_CACHE_SIZE:
            self._matches.popitem(last=False)
        return entry

    def sampled_share(
        self,
        key: FilterKey,
        universe: Callable[[], np.ndarray],
        total: int,
        match: Callable[[np.ndarray], np.ndarray],
    ) -> float | None:
        """The share of an even sample of the ``total`` records (``universe()``, sorted)
        that a filter not yet listed matches (``match`` keeps the seqs that do); None
        where listing its matches is cheap anyway (a small collection, a listed filter)
        or pays for itself (a filter seen before on this version)."""
        if total < SAMPLE_ABOVE or key in self._matches:
            return None
        seen = self._shares.get(key)
        if seen is not None:  # seen before: list its matches, once, and keep them
            return seen if seen * total > LIST_MAX else None
        seqs = universe()
        sample = seqs[:: max(1, len(seqs) // SAMPLE_SIZE)][:SAMPLE_SIZE]
        share = len(match(sample)) / len(sample)
        self._shares[key] = share
        while len(self._shares) > 4 * FILTER_CACHE_SIZE:
            self._shares.popitem(last=False)
        return share
