"""``tintdb.api.models``: the collection classes under chromadb's module names."""

from .AsyncCollection import AsyncCollection
from .Collection import Collection

__all__ = ["AsyncCollection", "Collection"]
