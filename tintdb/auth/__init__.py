"""``tintdb.auth``: where chromadb's auth docs import from (``auth.token_authn``).

tintdb's client sends the headers chromadb's client auth providers send, from the same
``Settings`` (see ``tintdb.config``); there are no provider classes to load.
"""

from ..config import TokenTransportHeader

__all__ = ["TokenTransportHeader"]
