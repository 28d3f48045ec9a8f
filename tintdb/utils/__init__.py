"""Helpers importable the way chromadb users expect: ``tintdb.utils.embedding_functions``."""

from tintdb.utils import embedding_functions

__all__ = ["embedding_functions"]
