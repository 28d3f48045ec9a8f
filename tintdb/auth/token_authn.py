"""``from tintdb.auth.token_authn import TokenTransportHeader``, as in chromadb's docs."""

from ..config import TokenTransportHeader

__all__ = ["TokenTransportHeader"]
