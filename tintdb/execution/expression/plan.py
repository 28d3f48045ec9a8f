"""``tintdb.execution.expression.plan``: chromadb's module of ``Search``."""

from ..._search.expr import Search

__all__ = ["Search"]
