"""The embedded backend: SQLite plus a vector index per collection, in this process.

``backend`` holds ``LocalBackend`` (the Backend methods and the one write path,
``_write``), ``reads`` its count, get and query, ``indexes`` the keeper of each
collection's in-memory index, ``planner`` the filter plans and the memory of each
filter's matches; ``tintdb._planning`` and ``tintdb._results`` hold the plan decisions
and result shaping that other backends share.
"""

from .._planning import postfilter_fetch
from .backend import LocalBackend
from .planner import EXACT_LIMIT

__all__ = ["EXACT_LIMIT", "LocalBackend", "postfilter_fetch"]
