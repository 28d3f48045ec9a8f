"""How a query is planned, whichever backend holds the records.

Pure decisions on counts, with no storage and no SQL, so that the embedded backend
(``_local``) and the PostgreSQL one (``_postgres``) plan alike: a small collection is
searched exactly; a filtered query either searches exactly among its matches (when
they are few) or post-filters a window of unfiltered nearest neighbours (when they are
many), and a query whose window holds too few matches falls back to the exact plan, so
that no answer is short.
"""

from __future__ import annotations

import math
import os

__all__ = [
    "EXACT_BELOW",
    "EXACT_BELOW_DEFAULT",
    "FILTERED_EF_FACTOR",
    "POSTFILTER_COST_RATIO",
    "POSTFILTER_MAX_FETCH",
    "POSTFILTER_OVERFETCH",
    "postfilter_beam",
    "postfilter_fetch",
    "searched_exactly",
    "window_short",
]


def _env_count(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if not raw.strip().isdigit():
        raise ValueError(f"{name} must be a whole number of records, got {raw!r}")
    return int(raw)


# Collections this small are searched exactly: as fast as HNSW at this size, and exact.
# TINTDB_EXACT_BELOW changes it (0: HNSW for every size, as the index's own tests need).
EXACT_BELOW_DEFAULT = 2048
EXACT_BELOW = _env_count("TINTDB_EXACT_BELOW", EXACT_BELOW_DEFAULT)
# How much wider the HNSW beam is for a filtered search than for a plain one.
FILTERED_EF_FACTOR = 2
# Post-filtering (unfiltered HNSW, then keep the matches) looks at enough neighbours that
# about this many times n_results of them should match, at most POSTFILTER_MAX_FETCH,
# with a beam twice that wide (a list's tail is its least accurate part).
POSTFILTER_OVERFETCH = 2
POSTFILTER_MAX_FETCH = 2048
# Measured cost ratio: widening the HNSW beam by one costs about as much as exact search
# over this many more matching records.
POSTFILTER_COST_RATIO = 5


def searched_exactly(total: int) -> bool:
    """Whether a collection of ``total`` records is searched exactly rather than through
    its graph (read at each call, so that tests can move the line)."""
    return total <= EXACT_BELOW


def postfilter_beam(fetch: int, ef_search: int) -> int:
    """The HNSW beam for a post-filtered search that looks at ``fetch`` neighbours."""
    return max(FILTERED_EF_FACTOR * ef_search, 2 * fetch)


def postfilter_fetch(
    matches: int, total: int, k: int, ef_search: int = 100, max_beam: int | None = None
) -> int | None:
    """How many unfiltered neighbours a post-filtered query should look at, or None when
    exact search over the ``matches`` records is the cheaper plan (or the only one: a
    beam wider than ``max_beam``, what the index can search, is never chosen).

    With ``fetch`` chosen so that about POSTFILTER_OVERFETCH * k of them match (for a
    filter independent of position), HNSW's cost grows with its beam and exact search's
    with the number of matches: post-filtering wins while the beam is below
    ``matches / POSTFILTER_COST_RATIO``.
    """
    if total <= 0 or matches <= k:
        return None
    fetch = max(k, math.ceil(POSTFILTER_OVERFETCH * k * total / matches))
    beam = postfilter_beam(fetch, ef_search)
    if fetch > POSTFILTER_MAX_FETCH or beam * POSTFILTER_COST_RATIO > matches:
        return None
    if max_beam is not None and beam > max_beam:
        return None
    return fetch


def window_short(found: int, k: int, matches: int) -> bool:
    """Whether a post-filtered window that held ``found`` matches is too short an answer
    (fewer than ``k``, or than every match): that query takes the exact plan instead."""
    return found < min(k, matches)
