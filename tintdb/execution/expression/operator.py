"""``tintdb.execution.expression.operator``: chromadb's module of the Search builders."""

from ..._search.expr import *  # noqa: F403
from ..._search.expr import __all__ as __all__
