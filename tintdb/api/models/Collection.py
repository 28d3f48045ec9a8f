"""``from tintdb.api.models.Collection import Collection``, as chromadb users write it."""

from ..._client import Collection

__all__ = ["Collection"]
