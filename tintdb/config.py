"""Client settings and the defaults shared by every layer."""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_DATABASE_ID",
    "DEFAULT_TENANT",
    "HNSW_DEFAULTS",
    "Settings",
]

DEFAULT_TENANT = "default_tenant"
DEFAULT_DATABASE = "default_database"
DEFAULT_DATABASE_ID = "00000000-0000-0000-0000-000000000000"

# Collection-level ANN parameters, under Chroma's configuration names. The metadata
# spelling (``hnsw:M`` ...) maps onto these in _validation.
HNSW_DEFAULTS: dict[str, Any] = {
    "space": "l2",
    "ef_construction": 100,
    "ef_search": 100,
    "max_neighbors": 16,
    "num_threads": 0,  # 0 = all cores
    "batch_size": 100,
    "sync_threshold": 1000,
    "resize_factor": 1.2,
}


class Settings:
    """Options accepted by every client constructor; names follow chromadb's Settings.

    Unknown chromadb settings are accepted and ignored so that existing code that
    passes them keeps running.
    """

    def __init__(self, **kwargs: Any) -> None:
        for name in ("allow_reset", "anonymized_telemetry", "is_persistent"):
            setattr(self, name, bool(kwargs.pop(name, False)))
        self.persist_directory = str(kwargs.pop("persist_directory", "./chroma"))
        self.chroma_server_host = kwargs.pop("chroma_server_host", None)
        port = kwargs.pop("chroma_server_http_port", None)
        self.chroma_server_http_port = int(port) if port is not None else None
        # Anything else chromadb knows (telemetry, server impl, ...) is accepted and ignored:
        # tintdb never sends telemetry.
        self.extra = kwargs

    def __repr__(self) -> str:
        return f"Settings(allow_reset={self.allow_reset}, is_persistent={self.is_persistent})"
