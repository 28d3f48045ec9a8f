"""The client side of Chroma's v2 REST protocol: ``HttpClient`` and ``AsyncHttpClient``.

``HttpBackend`` implements the ``Backend`` seam over HTTP, so ``HttpClient`` is the very
same ``Client``/``Collection`` as the embedded one: arguments are validated and
documents embedded on this side, then sent (vectors as base64 float32). It speaks to a
tintdb server or to a Chroma server.

The protocol is written once, in ``_Protocol``: how each call becomes a request and how
each answer becomes a result. The transports differ only in ``_send``:

* ``HttpBackend`` sends with a blocking ``httpx.Client``;
* ``AsyncHttpBackend`` sends with an ``httpx.AsyncClient`` on the caller's event loop.
  ``AsyncClient`` runs the ordinary ``Client`` method in a worker thread (validation and
  embedding are CPU work that must not stall the loop), and each request it makes hops
  back to the loop. No validation or result-shaping code exists twice.

Over 500 lines because ``_Protocol`` is the whole ``Backend`` seam written once (every
call's request and answer), which is what lets the two transports share it. What would
split off cleanly: the async twin at the end (``AsyncClient``, ``AsyncCollection``,
``AsyncHttpClient``), which needs only the public constructors' helpers.
"""

from __future__ import annotations

import base64
import functools
import ssl as ssl_module
import string
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx
import numpy as np

from . import _wire
from .config import (
    ASYNC_HTTP_API_IMPL,
    BASIC_AUTH_PROVIDER,
    DEFAULT_DATABASE,
    DEFAULT_TENANT,
    HTTP_API_IMPL,
    Settings,
    names_server,
)
from .errors import BatchSizeExceededError, InvalidArgumentError, error_from_wire
from .types import (
    CollectionModel,
    GetResult,
    IndexingStatus,
    Metadata,
    QueryResult,
    Where,
    WhereDocument,
)

__all__ = [
    "AsyncClient",
    "AsyncCollection",
    "AsyncHttpBackend",
    "AsyncHttpClient",
    "HttpAdminClient",
    "HttpBackend",
    "HttpClient",
    "http_backend_from_settings",
]

T = TypeVar("T")

_ERROR = "x-tintdb-error"  # a tintdb server's precise error name (see server.ERROR_HEADER)

# Connecting should fail fast; a large write or an exact search may legitimately take long.
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=None, pool=None)


def _base_url(host: str, port: int, ssl: bool) -> str:
    """``host`` may be a bare name or a full URL (whose scheme and port then win)."""
    if "://" in host:
        return host.rstrip("/") + _wire.API_PREFIX
    if ":" in host and not host.startswith("["):  # a bare IPv6 address
        host = f"[{host}]"
    return f"{'https' if ssl else 'http'}://{host}:{port}{_wire.API_PREFIX}"


def _auth_headers(settings: Settings) -> dict[str, str]:
    """The headers chromadb's client auth providers send, from the same settings.

    Credentials without a provider are sent as a token (chromadb would send nothing).
    """
    provider = settings.chroma_client_auth_provider
    credentials = settings.chroma_client_auth_credentials
    header = settings.chroma_auth_token_transport_header
    if credentials is None:
        if provider is not None or header is not None:
            name = (
                "chroma_client_auth_provider"
                if provider is not None
                else ("chroma_auth_token_transport_header")
            )
            raise InvalidArgumentError(
                f"Settings {name} is set but chroma_client_auth_credentials is not "
                "(Missing required config value 'chroma_client_auth_credentials')"
            )
        return {}
    if provider == BASIC_AUTH_PROVIDER:
        if header is not None:
            raise InvalidArgumentError(
                "Settings chroma_auth_token_transport_header applies to token auth, but "
                f"chroma_client_auth_provider is {BASIC_AUTH_PROVIDER!r}: remove one of them"
            )
        encoded = base64.b64encode(credentials.encode("utf-8")).decode("ascii")
        return {"Authorization": f"Basic {encoded}"}
    if not credentials or any(c not in _TOKEN_CHARS for c in credentials):
        raise InvalidArgumentError(
            "Settings chroma_client_auth_credentials: a token must be ASCII letters, digits "
            "and punctuation"
        )
    if header == "X-Chroma-Token":
        return {"X-Chroma-Token": credentials}
    return {"Authorization": f"Bearer {credentials}"}


_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + string.punctuation)


def _limits(settings: Settings) -> httpx.Limits:
    """chromadb's connection-pool settings; httpx's own defaults where they are unset."""
    defaults = httpx.Limits()
    keepalive = settings.chroma_http_keepalive_secs
    return httpx.Limits(
        max_connections=settings.chroma_http_max_connections or defaults.max_connections,
        max_keepalive_connections=(
            settings.chroma_http_max_keepalive_connections or defaults.max_keepalive_connections
        ),
        keepalive_expiry=defaults.keepalive_expiry if keepalive is None else keepalive,
    )


def _verify(settings: Settings) -> ssl_module.SSLContext | bool:
    """``chroma_server_ssl_verify``: False, True, or the path of a CA bundle."""
    verify = settings.chroma_server_ssl_verify
    if isinstance(verify, str):
        try:
            return ssl_module.create_default_context(cafile=verify)
        except (OSError, ssl_module.SSLError) as exc:
            raise InvalidArgumentError(
                f"Settings chroma_server_ssl_verify={verify!r}: cannot load it as a CA bundle: "
                f"{exc}"
            ) from exc
    return True if verify is None else verify


def _sendable(configuration: dict[str, Any] | None) -> dict[str, Any] | None:
    """The configuration as a server accepts it: ``num_threads: 0`` (the local default,
    "all cores") is not a valid value on the wire, so it is left for the server to choose."""
    if not configuration or not isinstance(configuration.get("hnsw"), dict):
        return configuration
    hnsw = {k: v for k, v in configuration["hnsw"].items() if not (k == "num_threads" and v == 0)}
    return {**configuration, "hnsw": hnsw}


def _seg(value: str) -> str:
    return quote(value, safe="")


def _array(rows: list[Any], dim: int | None) -> np.ndarray:
    if not rows:
        return np.empty((0, dim or 0), dtype=np.float32)
    return np.array(rows, dtype=np.float32)


def _wire_include(include: list[str]) -> list[str]:
    # "data" exists only in the Python API; servers refuse unknown include values.
    return [i for i in include if i != "data"]


class _Protocol:
    """Every Backend call as request building plus response parsing; no I/O here."""

    # A server decides for itself whether reset() is allowed (see Client.reset).
    remote = True

    def __init__(
        self,
        host: str,
        port: int,
        ssl: bool,
        headers: dict[str, str] | None,
        settings: Settings | None,
        tenant: str,
        database: str,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.base_url = _base_url(host, port, ssl)
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": f"tintdb/{_version()} (python)",
            **_auth_headers(self.settings),
            **(headers or {}),
        }
        self.limits = _limits(self.settings)
        self.verify = _verify(self.settings)
        self.tenant = tenant
        self.database = database
        self._preflight: dict[str, Any] | None = None
        # Record calls carry only a collection id, but the URL names its tenant and database.
        self._homes: dict[str, tuple[str, str, int | None]] = {}
        self._homes_lock = threading.Lock()

    # -- the one I/O hook

    def _send(
        self, method: str, path: str, params: dict[str, Any] | None, body: bytes | None
    ) -> Any:
        raise NotImplementedError

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        has_body: bool = False,
    ) -> Any:
        body = _wire.dumps(json) if json is not None or has_body else None
        clean = {k: v for k, v in (params or {}).items() if v is not None} or None
        return self._send(method, path, clean, body)

    def _answer(
        self, method: str, path: str, status: int, content: bytes, precise: str | None = None
    ) -> Any:
        """The decoded JSON of a 2xx answer; anything else raised as the matching error.

        ``precise`` is a tintdb server's exact error name (a header), finer than the
        Chroma-compatible name in the body."""
        if status < 300:
            return _wire.loads(content) if content.strip() else None
        name: str | None = None
        message = ""
        try:
            data = _wire.loads(content)
        except ValueError:
            message = content.decode("utf-8", "replace").strip()[:2000]
        else:
            if isinstance(data, dict):
                name = data.get("error") if isinstance(data.get("error"), str) else None
                message = str(data.get("message") or "")
        if not message:
            hint = (
                " (no such endpoint: is this a tintdb or Chroma server?)" if status == 404 else ""
            )
            message = f"HTTP {status} for {method} {self.base_url}{path}{hint}"
        raise error_from_wire(status, precise or name, message)

    # -- paths

    def _db_path(self, tenant: str, database: str) -> str:
        return f"/tenants/{_seg(tenant)}/databases/{_seg(database)}"

    def _remember(self, model: CollectionModel) -> CollectionModel:
        with self._homes_lock:
            self._homes[model.id] = (model.tenant, model.database, model.dimension)
        return model

    def _model(self, data: Any) -> CollectionModel:
        return self._remember(_wire.collection_from_json(data))

    def _coll_path(self, collection_id: str) -> str:
        tenant, database, _ = self._homes.get(collection_id, (self.tenant, self.database, None))
        return f"{self._db_path(tenant, database)}/collections/{_seg(collection_id)}"

    def _dimension(self, collection_id: str) -> int | None:
        return self._homes.get(collection_id, ("", "", None))[2]

    # -- server

    def heartbeat(self) -> int:
        return int(self._call("GET", "/heartbeat")["nanosecond heartbeat"])

    def version(self) -> str:
        return str(self._call("GET", "/version"))

    def reset(self) -> bool:
        return bool(self._call("POST", "/reset"))

    def pre_flight(self) -> dict[str, Any]:
        if self._preflight is None:
            self._preflight = dict(self._call("GET", "/pre-flight-checks") or {})
        return self._preflight

    def identity(self) -> dict[str, Any]:
        return dict(self._call("GET", "/auth/identity"))

    # -- tenants and databases

    def create_tenant(self, name: str) -> None:
        self._call("POST", "/tenants", json={"name": name})

    def get_tenant(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/tenants/{_seg(name)}"))

    def create_database(self, name: str, tenant: str) -> None:
        self._call("POST", f"/tenants/{_seg(tenant)}/databases", json={"name": name})

    def get_database(self, name: str, tenant: str) -> dict[str, Any]:
        return dict(self._call("GET", self._db_path(tenant, name)))

    def list_databases(
        self, tenant: str, limit: int | None = None, offset: int | None = None
    ) -> list[dict[str, Any]]:
        found = self._call(
            "GET", f"/tenants/{_seg(tenant)}/databases", params={"limit": limit, "offset": offset}
        )
        return [dict(d) for d in found]

    def delete_database(self, name: str, tenant: str) -> None:
        self._call("DELETE", self._db_path(tenant, name))

    # -- collections

    def create_collection(
        self,
        name: str,
        metadata: dict[str, Any] | None,
        configuration: dict[str, Any] | None,
        get_or_create: bool,
        tenant: str,
        database: str,
    ) -> CollectionModel:
        configuration = dict(configuration) if configuration is not None else None
        schema = None if configuration is None else configuration.pop("schema", None)
        body = {
            "name": name,
            "metadata": metadata,
            "configuration": _sendable(configuration),
            "schema": schema,
            "get_or_create": get_or_create,
        }
        return self._model(
            self._call("POST", f"{self._db_path(tenant, database)}/collections", json=body)
        )

    def get_collection(self, name: str, tenant: str, database: str) -> CollectionModel:
        return self._model(
            self._call("GET", f"{self._db_path(tenant, database)}/collections/{_seg(name)}")
        )

    def get_collection_by_id(self, collection_id: str) -> CollectionModel:
        tenant, database, _ = self._homes.get(collection_id, (self.tenant, self.database, None))
        path = f"{self._db_path(tenant, database)}/collections/by-id/{_seg(collection_id)}"
        return self._model(self._call("GET", path))

    def list_collections(
        self, limit: int | None, offset: int | None, tenant: str, database: str
    ) -> list[CollectionModel]:
        found = self._call(
            "GET",
            f"{self._db_path(tenant, database)}/collections",
            params={"limit": limit, "offset": offset},
        )
        return [self._model(c) for c in found]

    def count_collections(self, tenant: str, database: str) -> int:
        return int(self._call("GET", f"{self._db_path(tenant, database)}/collections_count"))

    def modify_collection(
        self,
        collection_id: str,
        new_name: str | None,
        new_metadata: dict[str, Any] | None,
        new_configuration: dict[str, Any] | None,
    ) -> CollectionModel:
        body = {
            "new_name": new_name,
            "new_metadata": new_metadata,
            "new_configuration": _sendable(new_configuration),
        }
        self._call("PUT", self._coll_path(collection_id), json=body)
        return self.get_collection_by_id(collection_id)

    def delete_collection(self, name: str, tenant: str, database: str) -> None:
        self._call("DELETE", f"{self._db_path(tenant, database)}/collections/{_seg(name)}")

    # -- records

    def _records(
        self,
        ids: list[str],
        embeddings: np.ndarray | None,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> dict[str, Any]:
        caps = self.pre_flight()
        limit = caps.get("max_batch_size")
        if isinstance(limit, int) and 0 < limit < len(ids):
            raise BatchSizeExceededError(
                f"{len(ids)} records in one call, but the server accepts at most {limit} "
                "(its max_batch_size); send them in several calls"
            )
        vectors: Any = embeddings
        if embeddings is not None and caps.get("supports_base64_encoding"):
            vectors = _wire.encode_vectors(embeddings)
        return {
            "ids": ids,
            "embeddings": vectors,
            "metadatas": metadatas,
            "documents": documents,
            "uris": uris,
        }

    def add(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: np.ndarray,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        body = self._records(ids, embeddings, metadatas, documents, uris)
        self._call("POST", self._coll_path(collection_id) + "/add", json=body)

    def update(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: np.ndarray | None,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        body = self._records(ids, embeddings, metadatas, documents, uris)
        self._call("POST", self._coll_path(collection_id) + "/update", json=body)

    def upsert(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: np.ndarray,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        body = self._records(ids, embeddings, metadatas, documents, uris)
        self._call("POST", self._coll_path(collection_id) + "/upsert", json=body)

    def delete(
        self,
        collection_id: str,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        limit: int | None = None,
    ) -> int:
        body: dict[str, Any] = {"ids": ids, "where": where, "where_document": where_document}
        if limit is not None:
            body["limit"] = limit
        found = self._call("POST", self._coll_path(collection_id) + "/delete", json=body)
        return int((found or {}).get("deleted", 0))

    def count(self, collection_id: str) -> int:
        return int(self._call("GET", self._coll_path(collection_id) + "/count"))

    def get(
        self,
        collection_id: str,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        limit: int | None,
        offset: int | None,
        include: list[str],
    ) -> GetResult:
        body = {
            "ids": ids,
            "where": where,
            "where_document": where_document,
            "limit": limit,
            "offset": offset,
            "include": _wire_include(include),
        }
        found = self._call("POST", self._coll_path(collection_id) + "/get", json=body)
        embeddings = found.get("embeddings")
        return {
            "ids": found["ids"],
            "embeddings": (
                None if embeddings is None else _array(embeddings, self._dimension(collection_id))
            ),
            "documents": found.get("documents"),
            "uris": found.get("uris"),
            "data": None,
            "metadatas": found.get("metadatas"),
            "included": list(include),
        }

    def query(
        self,
        collection_id: str,
        query_embeddings: np.ndarray,
        n_results: int,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        include: list[str],
    ) -> QueryResult:
        body = {
            "ids": ids,
            "query_embeddings": np.asarray(query_embeddings, dtype=np.float32),
            "n_results": n_results,
            "where": where,
            "where_document": where_document,
            "include": _wire_include(include),
        }
        found = self._call("POST", self._coll_path(collection_id) + "/query", json=body)
        embeddings = found.get("embeddings")
        dim = self._dimension(collection_id)
        return {
            "ids": found["ids"],
            "embeddings": None if embeddings is None else [_array(e, dim) for e in embeddings],
            "documents": found.get("documents"),
            "uris": found.get("uris"),
            "data": None,
            "metadatas": found.get("metadatas"),
            "distances": found.get("distances"),
            "included": list(include),
        }

    def search(
        self, collection_id: str, searches: list[dict[str, Any]], read_level: str
    ) -> dict[str, Any]:
        body = {"searches": searches, "read_level": read_level}
        found = self._call("POST", self._coll_path(collection_id) + "/search", json=body)
        return {
            field: found.get(field)
            for field in ("ids", "documents", "embeddings", "metadatas", "scores", "select")
        }

    def fork(self, collection_id: str, new_name: str) -> CollectionModel:
        return self._model(
            self._call(
                "POST", self._coll_path(collection_id) + "/fork", json={"new_name": new_name}
            )
        )

    def fork_count(self, collection_id: str) -> int:
        return int(self._call("GET", self._coll_path(collection_id) + "/fork_count")["count"])

    def indexing_status(self, collection_id: str) -> IndexingStatus:
        got = self._call("GET", self._coll_path(collection_id) + "/indexing_status")
        return IndexingStatus(
            num_indexed_ops=int(got["num_indexed_ops"]),
            num_unindexed_ops=int(got["num_unindexed_ops"]),
            total_ops=int(got["total_ops"]),
            op_indexing_progress=float(got["op_indexing_progress"]),
        )


def _version() -> str:
    from . import __version__

    return __version__


def _connection_error(base_url: str, exc: Exception) -> ConnectionError:
    return ConnectionError(f"Could not reach the server at {base_url}: {exc}")


class HttpBackend(_Protocol):
    """``Backend`` over HTTP with a blocking ``httpx.Client`` (connection pooled, thread-safe)."""

    def __init__(
        self,
        host: str = "localhost",
        port: int = 8000,
        ssl: bool = False,
        headers: dict[str, str] | None = None,
        settings: Settings | None = None,
        *,
        tenant: str = DEFAULT_TENANT,
        database: str = DEFAULT_DATABASE,
        timeout: httpx.Timeout | float | None = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(host, port, ssl, headers, settings, tenant, database)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=self.headers,
            timeout=timeout,
            transport=transport,
            limits=self.limits,
            verify=self.verify,
        )

    def _send(
        self, method: str, path: str, params: dict[str, Any] | None, body: bytes | None
    ) -> Any:
        try:
            response = self._http.request(method, path, params=params, content=body)
        except httpx.TransportError as exc:
            raise _connection_error(self.base_url, exc) from exc
        return self._answer(
            method, path, response.status_code, response.content, response.headers.get(_ERROR)
        )

    def close(self) -> None:
        self._http.close()


class AsyncHttpBackend(_Protocol):
    """``Backend`` whose requests run on an event loop through ``httpx.AsyncClient``.

    Its methods are blocking, like every Backend's, and must be called from a worker
    thread started by ``anyio.to_thread.run_sync`` (``AsyncClient`` does that): each
    request is handed to the loop, so many calls can wait on the network at once.
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 8000,
        ssl: bool = False,
        headers: dict[str, str] | None = None,
        settings: Settings | None = None,
        *,
        tenant: str = DEFAULT_TENANT,
        database: str = DEFAULT_DATABASE,
        timeout: httpx.Timeout | float | None = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(host, port, ssl, headers, settings, tenant, database)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self.headers,
            timeout=timeout,
            transport=transport,
            limits=self.limits,
            verify=self.verify,
        )

    async def _asend(
        self, method: str, path: str, params: dict[str, Any] | None, body: bytes | None
    ) -> tuple[int, bytes, str | None]:
        try:
            response = await self._http.request(method, path, params=params, content=body)
        except httpx.TransportError as exc:
            raise _connection_error(self.base_url, exc) from exc
        return response.status_code, response.content, response.headers.get(_ERROR)

    def _send(
        self, method: str, path: str, params: dict[str, Any] | None, body: bytes | None
    ) -> Any:
        status, content, precise = anyio.from_thread.run(self._asend, method, path, params, body)
        return self._answer(method, path, status, content, precise)

    def close(self) -> None:
        anyio.from_thread.run(self._http.aclose)


# ---------------------------------------------------------------- public constructors


def _server_settings(
    settings: Settings | None,
    host: Any,
    port: Any,
    ssl: Any,
    headers: dict[str, str] | None,
    impl: str,
) -> Settings:
    """``settings`` with the server's address written in, as chromadb's constructors do
    (the object given is updated); an address that differs from the settings' is an error."""
    settings = settings if settings is not None else Settings()
    if not isinstance(settings, Settings):
        raise InvalidArgumentError(
            f"settings must be a tintdb.Settings, got {type(settings).__name__}"
        )
    host, port, ssl = str(host), int(port), bool(ssl)
    if settings.chroma_server_host and settings.chroma_server_host != host:
        raise InvalidArgumentError(
            f"Chroma server host provided in settings[{settings.chroma_server_host}] is "
            f"different to the one provided in HttpClient: [{host}]"
        )
    if settings.chroma_server_http_port and settings.chroma_server_http_port != port:
        raise InvalidArgumentError(
            f"Chroma server http port provided in settings[{settings.chroma_server_http_port}] "
            f"is different to the one provided in HttpClient: [{port}]"
        )
    settings.chroma_api_impl = impl
    settings.chroma_server_host = host
    settings.chroma_server_http_port = port
    settings.chroma_server_ssl_enabled = ssl
    settings.chroma_server_headers = headers
    return settings


def HttpClient(
    host: str = "localhost",
    port: int = 8000,
    ssl: bool = False,
    headers: dict[str, str] | None = None,
    settings: Settings | None = None,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
) -> Any:
    """A ``Client`` talking to a tintdb (or Chroma) server at ``host:port``."""
    from ._client import Client

    settings = _server_settings(settings, host, port, ssl, headers, HTTP_API_IMPL)
    return Client(settings, tenant, database)


def HttpAdminClient(
    host: str = "localhost",
    port: int = 8000,
    ssl: bool = False,
    headers: dict[str, str] | None = None,
    settings: Settings | None = None,
) -> Any:
    """An ``AdminClient`` (tenants and databases) for a server at ``host:port``."""
    from ._client import AdminClient

    return AdminClient(_server_settings(settings, host, port, ssl, headers, HTTP_API_IMPL))


def http_backend_from_settings(
    settings: Settings,
    *,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
    asynchronous: bool = False,
) -> HttpBackend | AsyncHttpBackend:
    """The backend for the server ``settings`` name (see ``config.names_server``)."""
    host = settings.require("chroma_server_host")
    port = settings.chroma_server_http_port or 8000
    ssl = bool(settings.chroma_server_ssl_enabled)
    headers = settings.chroma_server_headers
    cls = AsyncHttpBackend if asynchronous else HttpBackend
    return cls(host, port, ssl, headers, settings, tenant=tenant, database=database)


# ---------------------------------------------------------------- async twin


class _Runner:
    """Runs blocking Client code in worker threads; bounded so a burst cannot spawn
    an unbounded number of threads."""

    def __init__(self, max_threads: int) -> None:
        self.limiter = anyio.CapacityLimiter(max_threads)

    async def __call__(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self.limiter
        )


class AsyncCollection:
    """The ``Collection`` API with every record call awaitable."""

    def __init__(self, collection: Any, run: _Runner) -> None:
        self._collection = collection
        self._run = run

    def __repr__(self) -> str:
        return f"AsyncCollection(name={self.name!r}, id={self.id!r})"

    @property
    def name(self) -> str:
        return self._collection.name

    @property
    def id(self) -> Any:
        return self._collection.id

    @property
    def metadata(self) -> dict[str, Any] | None:
        return self._collection.metadata

    @property
    def configuration(self) -> Any:
        return self._collection.configuration

    @property
    def schema(self) -> Any:
        return self._collection.schema

    @property
    def embedding_function(self) -> Any:
        return getattr(self._collection, "embedding_function", None)

    async def count(self, *args: Any, **kwargs: Any) -> int:
        return await self._run(self._collection.count, *args, **kwargs)

    async def peek(self, limit: int = 10) -> GetResult:
        return await self._run(self._collection.peek, limit)

    async def add(self, *args: Any, **kwargs: Any) -> None:
        return await self._run(self._collection.add, *args, **kwargs)

    async def get(self, *args: Any, **kwargs: Any) -> GetResult:
        return await self._run(self._collection.get, *args, **kwargs)

    async def query(self, *args: Any, **kwargs: Any) -> QueryResult:
        return await self._run(self._collection.query, *args, **kwargs)

    async def update(self, *args: Any, **kwargs: Any) -> None:
        return await self._run(self._collection.update, *args, **kwargs)

    async def upsert(self, *args: Any, **kwargs: Any) -> None:
        return await self._run(self._collection.upsert, *args, **kwargs)

    async def delete(self, *args: Any, **kwargs: Any) -> Any:
        return await self._run(self._collection.delete, *args, **kwargs)

    async def modify(self, *args: Any, **kwargs: Any) -> None:
        return await self._run(self._collection.modify, *args, **kwargs)

    async def search(self, *args: Any, **kwargs: Any) -> Any:
        return await self._run(self._collection.search, *args, **kwargs)

    async def fork(self, *args: Any, **kwargs: Any) -> AsyncCollection:
        forked = await self._run(self._collection.fork, *args, **kwargs)
        return AsyncCollection(forked, self._run)

    async def fork_count(self) -> int:
        return await self._run(self._collection.fork_count)

    async def get_indexing_status(self) -> IndexingStatus:
        return await self._run(self._collection.get_indexing_status)


class AsyncClient:
    """The ``Client`` API with every call awaitable (see the module docstring for how)."""

    def __init__(self, client: Any, run: _Runner) -> None:
        self._client = client
        self._run = run

    def _wrap(self, collection: Any) -> AsyncCollection:
        return AsyncCollection(collection, self._run)

    @property
    def tenant(self) -> str:
        return self._client.tenant

    @property
    def database(self) -> str:
        return self._client.database

    async def heartbeat(self) -> int:
        return await self._run(self._client.heartbeat)

    async def get_version(self) -> str:
        return await self._run(self._client.get_version)

    async def list_collections(self, *args: Any, **kwargs: Any) -> list[AsyncCollection]:
        found = await self._run(self._client.list_collections, *args, **kwargs)
        return [self._wrap(c) for c in found]

    async def count_collections(self) -> int:
        return await self._run(self._client.count_collections)

    async def create_collection(self, *args: Any, **kwargs: Any) -> AsyncCollection:
        return self._wrap(await self._run(self._client.create_collection, *args, **kwargs))

    async def get_collection(self, *args: Any, **kwargs: Any) -> AsyncCollection:
        return self._wrap(await self._run(self._client.get_collection, *args, **kwargs))

    async def get_or_create_collection(self, *args: Any, **kwargs: Any) -> AsyncCollection:
        return self._wrap(await self._run(self._client.get_or_create_collection, *args, **kwargs))

    async def delete_collection(self, name: str) -> None:
        await self._run(self._client.delete_collection, name)

    async def reset(self) -> bool:
        return await self._run(self._client.reset)

    async def close(self) -> None:
        await self._run(self._client.close)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def AsyncHttpClient(
    host: str = "localhost",
    port: int = 8000,
    ssl: bool = False,
    headers: dict[str, str] | None = None,
    settings: Settings | None = None,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
    *,
    max_threads: int = 64,
) -> AsyncClient:
    """An awaitable ``Client`` for a tintdb (or Chroma) server; use it inside one event loop."""
    from ._client import Client

    settings = _server_settings(settings, host, port, ssl, headers, ASYNC_HTTP_API_IMPL)
    tenant, database = str(tenant), str(database)
    names_server(settings)  # settings that cannot apply to a server are refused here too
    backend = http_backend_from_settings(
        settings, tenant=tenant, database=database, asynchronous=True
    )
    run = _Runner(max_threads)

    def connect() -> Any:
        return Client(settings, tenant, database, backend=backend)

    try:
        client = await run(connect)
    except BaseException:
        await backend._http.aclose()  # type: ignore[union-attr]
        raise
    return AsyncClient(client, run)
