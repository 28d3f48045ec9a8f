"""The embedded backend: SQLite plus a vector index per collection, in this process.

``backend`` holds ``LocalBackend`` (the Backend methods and the one write path),
``indexes`` the keeper of each collection's in-memory index, ``planner`` how a filtered
query is answered; ``tintdb._planning`` and ``tintdb._results`` hold the decisions and
result shaping that other backends share.
"""

from .._planning import postfilter_fetch
from .backend import EXACT_LIMIT, LocalBackend

__all__ = ["EXACT_LIMIT", "LocalBackend", "postfilter_fetch"]
