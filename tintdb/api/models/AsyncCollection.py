"""``from tintdb.api.models.AsyncCollection import AsyncCollection``, as in chromadb."""

from ..._http import AsyncCollection

__all__ = ["AsyncCollection"]
