"""Chroma's v2 REST API, served over any ``Backend`` (``tintdb run`` uses ``LocalBackend``).

A request goes through three layers, each for a reason:

1. ``_Guard``, plain ASGI middleware: token auth, Content-Type and body size are checked
   before routing or parsing costs anything, and a too-large body is never buffered.
2. The route: JSON is parsed and its *shape* checked here (wrong shapes are 422, as on
   Chroma's server), base64 vectors are decoded, single-clause ``$and``/``$or`` unwrapped.
3. The public ``Client``/``Collection`` of ``_client``: every rule of the Python API
   applies unchanged, so the server cannot accept what ``tintdb.Client`` would refuse.

Routes are plain ``def`` functions: Starlette runs them in its thread pool, so SQLite
and index work never blocks the event loop. Every client mistake maps to a 4xx with
``{"error": <wire name>, "message": ...}``; a 500 means a bug.

Long because Chroma's REST surface is wide: each route checks its own body's shape
and maps it onto the one ``Client`` call; the routes share nothing else to factor out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import _client, _wire
from ._filters import MAX_DEPTH
from ._search.plan import READ_LEVELS
from ._validation import (
    normalize_documents,
    normalize_ids,
    normalize_metadatas,
    normalize_uris,
    validate_limit_offset,
)
from .errors import (
    AuthError,
    InvalidArgumentError,
    InvalidUUIDError,
    NotFoundError,
    PayloadTooLargeError,
    ResetDisabledError,
    ServiceUnavailableError,
    TintError,
)

if TYPE_CHECKING:
    from ._backend import Backend
    from .config import Settings

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_CONCURRENT",
    "ERROR_HEADER",
    "UnprocessableError",
    "create_app",
]

log = logging.getLogger("tintdb.server")

DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024
# The whole body of a request must arrive within this many seconds.
DEFAULT_BODY_TIMEOUT = 60.0
# Requests in progress at once; past it, 503 with Retry-After instead of a queue.
DEFAULT_MAX_CONCURRENT = 64

# Paths a monitor or a client handshake may call without a token.
OPEN_PATHS = frozenset(
    _wire.API_PREFIX + p
    for p in ("", "/heartbeat", "/version", "/pre-flight-checks", "/healthcheck")
)
# Chroma's server puts a trace id on every error response (all zeros without tracing,
# which tintdb does not do); its Python client copies it onto the exception.
TRACE_HEADER = (b"chroma-trace-id", b"0" * 32)
_JSON = "application/json"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class UnprocessableError(TintError):
    """Valid JSON of the wrong shape (a missing field, a wrong type): 422, as Chroma answers."""

    wire_name = "ChromaError"
    status = 422


class UnsupportedMediaTypeError(TintError):
    """A body that is not JSON: 415."""

    wire_name = "ChromaError"
    status = 415


class RequestTimeoutError(TintError):
    """A request body that did not arrive in time: 408."""

    wire_name = "ChromaError"
    status = 408


# ---------------------------------------------------------------- responses


def _ok(value: Any, status: int = 200) -> Response:
    return Response(_wire.dumps(value), status_code=status, media_type=_JSON)


def _error_body(name: str, message: str) -> bytes:
    return orjson.dumps({"error": name, "message": message})


# Chroma's server says "InvalidArgumentError" where tintdb knows more. chromadb's own
# InvalidDimensionException and InvalidUUIDError do not derive from its
# InvalidArgumentError, so the precise name would slip past ``except InvalidArgumentError``
# in code written against Chroma. The precise name travels in a header instead, which
# tintdb's HttpClient reads.
_CHROMA_NAMES = {"InvalidDimension": "InvalidArgumentError", "InvalidUUID": "InvalidArgumentError"}
ERROR_HEADER = "x-tintdb-error"


def _error(exc: TintError) -> Response:
    name = exc.name()
    return Response(
        _error_body(_CHROMA_NAMES.get(name, name), exc.message or str(exc)),
        exc.status,
        headers={ERROR_HEADER: name},
        media_type=_JSON,
    )


# ---------------------------------------------------------------- guard middleware


class _Guard:
    """Auth, Content-Type, body size and time, and the bound on concurrent requests,
    checked in front of the router (plain ASGI)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth_token: str | None,
        max_body_bytes: int,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
    ) -> None:
        self.app = app
        self.token = auth_token.encode() if auth_token else None
        self.max_body = max_body_bytes
        self.body_timeout = body_timeout
        self.max_concurrent = max_concurrent
        self.in_progress = 0  # only touched on the event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _traced(send)
        if self.in_progress >= self.max_concurrent:
            await _send_error(
                send,
                ServiceUnavailableError(
                    f"The server is answering {self.max_concurrent} requests already; "
                    "retry after a second"
                ),
                [(b"retry-after", b"1")],
            )
            return
        self.in_progress += 1
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.in_progress -= 1

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        needs_token = self.token is not None and scope["path"] not in OPEN_PATHS
        if needs_token and not self._authorized(headers):
            await _send_error(
                send,
                AuthError(
                    "Missing or wrong token: send 'x-chroma-token: <token>' or "
                    "'Authorization: Bearer <token>'"
                ),
            )
            return
        if scope["method"] in _BODY_METHODS:
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if ctype and ctype != b"application/json" and not ctype.endswith(b"+json"):
                await _send_error(
                    send,
                    UnsupportedMediaTypeError(
                        "Expected request with `Content-Type: application/json`"
                    ),
                )
                return
            body = await self._read_body(headers, receive, send)
            if body is None:
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        """Either header may carry the token (the official clients use one or the other)."""
        assert self.token is not None
        offered = [headers.get(b"x-chroma-token")]
        scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer":
            offered.append(value.strip())
        return any(t is not None and hmac.compare_digest(t, self.token) for t in offered)

    async def _read_body(
        self, headers: dict[bytes, bytes], receive: Receive, send: Send
    ) -> bytes | None:
        """The whole body; None when already answered (413: an oversize body is never
        kept) or when the client went away."""
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await _send_error(send, self._too_large(int(declared)))
            return None
        chunks: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                await _send_error(
                    send,
                    RequestTimeoutError(
                        f"The request body did not arrive within {self.body_timeout:g} seconds"
                    ),
                    [(b"connection", b"close")],
                )
                return None
            if message["type"] != "http.request":  # the client went away: nothing to do
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _send_error(send, self._too_large(size, partial=True))
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _too_large(self, size: int, partial: bool = False) -> PayloadTooLargeError:
        limit_mb = self.max_body / (1024 * 1024)
        got = f"more than {size}" if partial else str(size)
        return PayloadTooLargeError(
            f"Request body is {got} bytes; this server accepts at most {self.max_body} "
            f"({limit_mb:g} MiB). Send fewer records per call, or start the server with a "
            "larger --max-body-mb"
        )


def _traced(send: Send) -> Send:
    """``send`` that adds Chroma's trace id header to error responses."""

    async def traced(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            message = {**message, "headers": [*message.get("headers", ()), TRACE_HEADER]}
        await send(message)

    return traced


async def _send_error(
    send: Send, exc: TintError, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = _error_body(exc.name(), exc.message)
    await send(
        {
            "type": "http.response.start",
            "status": exc.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra_headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body to the app, then defers to the server."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# ---------------------------------------------------------------- request shapes


def _parse(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgumentError(f"Failed to parse the request body as JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise UnprocessableError(
            f"Expected a JSON object as the request body, got {_json_type(body)}"
        )
    return body


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _missing(key: str) -> UnprocessableError:
    return UnprocessableError(f"missing field `{key}`")


def _wrong(key: str, expected: str, value: Any) -> UnprocessableError:
    return UnprocessableError(f"{key}: expected {expected}, got {_json_type(value)}")


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        raise _missing(key)
    if not isinstance(value, str):
        raise _wrong(key, "a string", value)
    return value


def _opt_dict(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is not None and not isinstance(value, dict):
        raise _wrong(key, "an object", value)
    return value


def _opt_bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _wrong(key, "a boolean", value)
    return value


def _opt_uint(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UnprocessableError(f"{key}: expected a non-negative integer, got {value!r}")
    return value


def _str_list(body: dict[str, Any], key: str, *, required: bool) -> list[str] | None:
    value = body.get(key)
    if value is None:
        if required:
            raise _missing(key)
        return None
    if not isinstance(value, list):
        raise _wrong(key, "an array of strings", value)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _wrong(f"{key}[{i}]", "a string", item)
    return value


def _nullable_str_list(body: dict[str, Any], key: str) -> list[str | None] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _wrong(key, "an array of strings or nulls", value)
    for i, item in enumerate(value):
        if item is not None and not isinstance(item, str):
            raise _wrong(f"{key}[{i}]", "a string or null", item)
    return value


def _metadatas(body: dict[str, Any]) -> list[dict[str, Any] | None] | None:
    value = body.get("metadatas")
    if value is None:
        return None
    if not isinstance(value, list):
        raise _wrong("metadatas", "an array of objects", value)
    for i, item in enumerate(value):
        if item is None:
            continue
        if not isinstance(item, dict):
            raise _wrong(f"metadatas[{i}]", "an object or null", item)
        for key, md_value in item.items():
            if isinstance(md_value, dict) and md_value.get("#type") != "sparse_vector":
                raise UnprocessableError(
                    f"metadatas[{i}].{key}: a metadata value is a string, number, boolean, a "
                    "sparse vector or an array of one of those; other objects are not allowed"
                )
    return value


def _include(body: dict[str, Any], default: Sequence[str]) -> list[str]:
    value = body.get("include")
    if value is None:
        return list(default)
    if not isinstance(value, list):
        raise _wrong("include", "an array", value)
    for i, item in enumerate(value):
        if not isinstance(item, str) or item not in _wire.WIRE_GET_INCLUDE:
            known = ", ".join(sorted(_wire.WIRE_GET_INCLUDE))
            raise UnprocessableError(
                f"include[{i}]: unknown value {item!r}; expected one of {known}"
            )
    return value


def _vectors(items: Any, key: str, *, allow_base64: bool) -> np.ndarray:
    """JSON vectors (number arrays, or base64 float32 strings where allowed) -> (n, dim)."""
    if not isinstance(items, list):
        raise _wrong(key, "an array of vectors", items)
    if not items:
        return np.empty((0, 0), dtype=np.float32)
    if not any(isinstance(item, str) for item in items):
        for i, item in enumerate(items):
            if not isinstance(item, list):
                raise _wrong(f"{key}[{i}]", "an array of numbers", item)
        try:
            array = np.array(items, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"{key}: every vector must be an array of numbers, all of one length ({exc})"
            ) from exc
        return array
    if not allow_base64:
        raise UnprocessableError(
            f"{key}: expected arrays of numbers; base64 strings are accepted only in "
            "add, update and upsert"
        )
    rows = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            rows.append(_wire.decode_vector(item, i))
        elif isinstance(item, list):
            try:
                rows.append(np.array(item, dtype=np.float32))
            except (TypeError, ValueError) as exc:
                raise InvalidArgumentError(f"{key}[{i}]: not an array of numbers ({exc})") from exc
        else:
            raise _wrong(f"{key}[{i}]", "an array of numbers or a base64 string", item)
    lengths = {len(row) for row in rows}
    if len(lengths) > 1 or any(row.ndim != 1 for row in rows):
        raise InvalidArgumentError(
            f"{key}: all vectors in one call must have the same length, got {sorted(lengths)}"
        )
    return np.stack(rows)


def _record_embeddings(body: dict[str, Any], *, required: bool) -> np.ndarray | None:
    if "embeddings" not in body:
        if required:
            raise _missing("embeddings")
        return None
    value = body["embeddings"]
    if value is None or (isinstance(value, list) and value and all(v is None for v in value)):
        if required:
            raise InvalidArgumentError(
                "embeddings are required: a tintdb server never runs embedding functions; "
                "compute the vectors on the client (the official clients do this for you)"
            )
        return None
    if isinstance(value, list) and any(v is None for v in value):
        raise InvalidArgumentError(
            "embeddings: give a vector for every id or none at all (null for some ids is "
            "not supported)"
        )
    return _vectors(value, "embeddings", allow_base64=True)


def _single_clauses_unwrapped(clause: Any, depth: int = 0) -> Any:
    """``{"$and": [x]}`` -> ``x``, recursively: Chroma's server accepts one-clause logic,
    the Python API (rightly) does not, so the server rewrites before validating."""
    if isinstance(clause, dict) and len(clause) == 1:
        ((key, value),) = clause.items()
        if key in ("$and", "$or") and isinstance(value, list):
            if depth >= MAX_DEPTH:
                raise InvalidArgumentError(
                    f"Invalid filter: $and/$or nested more than {MAX_DEPTH} levels deep"
                )
            if len(value) == 1:
                return _single_clauses_unwrapped(value[0], depth + 1)
            return {key: [_single_clauses_unwrapped(c, depth + 1) for c in value]}
    return clause


def _filters(body: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    where = _opt_dict(body, "where")
    where_document = _opt_dict(body, "where_document")
    for key, value in (("where", where), ("where_document", where_document)):
        if value == {}:
            raise InvalidArgumentError(
                f"Invalid {key}: an empty object; leave {key} out (or null) for no filter"
            )
    return _single_clauses_unwrapped(where), _single_clauses_unwrapped(where_document)


def _check_uuid(collection_id: str) -> None:
    try:
        uuid.UUID(collection_id)
    except ValueError:
        raise InvalidUUIDError(
            f"Collection ID is not a valid UUID: {collection_id!r} (record operations take "
            "the collection's id, not its name)"
        ) from None


def _configuration_for_core(configuration: dict[str, Any] | None) -> dict[str, Any] | None:
    """Drop the ``null`` sections the Python client always sends (``hnsw``, ``spann``)."""
    if configuration is None:
        return None
    return {k: v for k, v in configuration.items() if v is not None}


# ---------------------------------------------------------------- the service


class _Service:
    """Everything the routes do, as plain blocking calls on the public Client API."""

    def __init__(self, client_or_backend: Any, allow_reset: bool) -> None:
        from ._client import AdminClient, Client, backend_of

        self._client_cls = Client
        self.backend: Backend
        self.settings: Settings | None
        if isinstance(client_or_backend, Client):
            self.backend = backend_of(client_or_backend)
            self.settings = client_or_backend.settings
        else:
            self.backend = client_or_backend
            self.settings = None
        self.admin = AdminClient(backend=self.backend)
        self.allow_reset = allow_reset
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def client(self, tenant: str, database: str) -> Any:
        """One public Client per tenant and database, made on first use."""
        key = (tenant, database)
        client = self._clients.get(key)
        if client is None:
            client = self._client_cls(self.settings, tenant, database, backend=self.backend)
            with self._lock:
                if len(self._clients) >= 1024:  # bounded: names come from request paths
                    self._clients.clear()
                self._clients[key] = client
        return client

    def forget_clients(self) -> None:
        with self._lock:
            self._clients.clear()

    def collection(self, tenant: str, database: str, collection_id: str) -> Any:
        _check_uuid(collection_id)
        return _client.collection_by_id(self.client(tenant, database), collection_id)

    # -- server

    def reset(self) -> bool:
        if not self.allow_reset:
            raise ResetDisabledError(
                "Reset is disabled by config: start the server with --allow-reset "
                "(or TINTDB_ALLOW_RESET=1) to allow it"
            )
        result = self.backend.reset()
        self.forget_clients()
        return bool(result) if result is not None else True

    # -- collections

    def create_collection(self, tenant: str, database: str, body: dict[str, Any]) -> dict[str, Any]:
        from ._client import DEFAULT_EF

        name = _str(body, "name")
        metadata = _opt_dict(body, "metadata")
        configuration = _configuration_for_core(_opt_dict(body, "configuration"))
        get_or_create = _opt_bool(body, "get_or_create")
        # The server never embeds, but it stores the function the client described so
        # that every client can rebuild it: "default" keeps the configuration's own
        # descriptor; None stores none (a creator that sent none, like raw HTTP).
        described = isinstance((configuration or {}).get("embedding_function"), dict)
        collection = self.client(tenant, database).create_collection(
            name,
            schema=_opt_dict(body, "schema"),
            configuration=configuration,
            metadata=metadata,
            embedding_function=DEFAULT_EF if described else None,
            get_or_create=get_or_create,
        )
        return _wire.collection_to_json(_client.model_of(collection))

    def list_collections(
        self, tenant: str, database: str, limit: int | None, offset: int | None
    ) -> list[dict[str, Any]]:
        validate_limit_offset(limit, offset)
        try:
            models = self.backend.list_collections(limit, offset, tenant, database)
        except NotFoundError:
            return []  # Chroma answers [] for a database that does not exist
        return [_wire.collection_to_json(m) for m in models]

    def count_collections(self, tenant: str, database: str) -> int:
        try:
            return int(self.backend.count_collections(tenant, database))
        except NotFoundError:
            return 0

    def get_collection(self, tenant: str, database: str, name: str) -> dict[str, Any]:
        return _wire.collection_to_json(self.backend.get_collection(name, tenant, database))

    def get_collection_by_id(
        self, tenant: str, database: str, collection_id: str
    ) -> dict[str, Any]:
        _check_uuid(collection_id)
        return _wire.collection_to_json(self.backend.get_collection_by_id(collection_id))

    def modify_collection(
        self, tenant: str, database: str, collection_id: str, body: dict[str, Any]
    ) -> None:
        new_name = body.get("new_name")
        if new_name is not None and not isinstance(new_name, str):
            raise _wrong("new_name", "a string", new_name)
        new_metadata = _opt_dict(body, "new_metadata")
        new_configuration = _configuration_for_core(_opt_dict(body, "new_configuration"))
        collection = self.collection(tenant, database, collection_id)
        collection.modify(name=new_name, metadata=new_metadata, configuration=new_configuration)

    def delete_collection(self, tenant: str, database: str, name: str) -> None:
        self.backend.get_collection(name, tenant, database)  # 404 before any validation
        self.client(tenant, database).delete_collection(name)

    # -- records

    def add(self, tenant: str, database: str, collection_id: str, body: dict[str, Any]) -> None:
        self._write("add", tenant, database, collection_id, body, embeddings_required=True)

    def update(self, tenant: str, database: str, collection_id: str, body: dict[str, Any]) -> None:
        self._write("update", tenant, database, collection_id, body, embeddings_required=False)

    def upsert(self, tenant: str, database: str, collection_id: str, body: dict[str, Any]) -> None:
        self._write("upsert", tenant, database, collection_id, body, embeddings_required=True)

    def _write(
        self,
        op: str,
        tenant: str,
        database: str,
        collection_id: str,
        body: dict[str, Any],
        *,
        embeddings_required: bool,
    ) -> None:
        ids = _str_list(body, "ids", required=True)
        assert ids is not None
        embeddings = _record_embeddings(body, required=embeddings_required and bool(ids))
        metadatas = _metadatas(body)
        documents = _nullable_str_list(body, "documents")
        uris = _nullable_str_list(body, "uris")
        collection = self.collection(tenant, database, collection_id)
        if not ids:
            return  # Chroma accepts an empty batch as a no-op
        if op == "update" and embeddings is None and documents is not None:
            # The Python API would re-embed new documents; a server has no function to do
            # it with. Like Chroma's server, store the documents and keep the vectors.
            n = len(ids)
            self.backend.update(
                _client.model_of(collection).id,
                normalize_ids(ids),
                None,
                normalize_metadatas(metadatas, n, allow_none_values=True),
                normalize_documents(documents, n),
                normalize_uris(uris, n),
            )
            return
        getattr(collection, op)(
            ids=ids, embeddings=embeddings, metadatas=metadatas, documents=documents, uris=uris
        )

    def delete(
        self, tenant: str, database: str, collection_id: str, body: dict[str, Any]
    ) -> dict[str, int]:
        ids = _str_list(body, "ids", required=False)
        where, where_document = _filters(body)
        limit = _opt_uint(body, "limit")
        collection = self.collection(tenant, database, collection_id)
        if ids == []:
            # Chroma's server: an empty id list alone is refused; beside a filter it
            # selects nothing (the filter is still checked).
            if where is None and where_document is None:
                raise InvalidArgumentError(
                    "Validation error: ids, where: Either ids or where must be specified "
                    "(an empty ids list selects nothing)"
                )
            collection.get(where=where, where_document=where_document, limit=0)
            return {"deleted": 0}
        if ids is None and where is None and where_document is None:
            return {"deleted": 0}  # Chroma's answer to a delete without any selector
        kwargs: dict[str, Any] = {"ids": ids, "where": where, "where_document": where_document}
        if limit is not None:
            kwargs["limit"] = limit
        result = collection.delete(**kwargs)
        if isinstance(result, dict):
            return {"deleted": int(result.get("deleted", 0))}
        return {"deleted": int(result or 0)}

    def count(self, tenant: str, database: str, collection_id: str) -> int:
        return int(self.collection(tenant, database, collection_id).count())

    def get(
        self, tenant: str, database: str, collection_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        ids = _str_list(body, "ids", required=False)
        where, where_document = _filters(body)
        limit = _opt_uint(body, "limit")
        offset = _opt_uint(body, "offset")
        include = _include(body, _wire.GET_INCLUDE_DEFAULT)
        collection = self.collection(tenant, database, collection_id)
        if ids == []:  # Chroma's server answers an empty id list with no records
            ids, limit = None, 0
        result = collection.get(
            ids=ids,
            where=where,
            limit=limit,
            offset=offset,
            where_document=where_document,
            # "distances" on get is accepted and ignored, as on Chroma's server
            include=[i for i in include if i != "distances"],
        )
        return {
            "ids": result["ids"],
            "embeddings": _f32(result.get("embeddings")),
            "documents": result.get("documents"),
            "uris": result.get("uris"),
            "metadatas": result.get("metadatas"),
            "include": include,
        }

    def query(
        self, tenant: str, database: str, collection_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        if body.get("query_embeddings") is None:
            raise _missing("query_embeddings")
        vectors = _vectors(body["query_embeddings"], "query_embeddings", allow_base64=False)
        n_results = _opt_uint(body, "n_results")
        n_results = 10 if n_results is None else n_results
        ids = _str_list(body, "ids", required=False)
        where, where_document = _filters(body)
        include = _include(body, _wire.QUERY_INCLUDE_DEFAULT)
        collection = self.collection(tenant, database, collection_id)
        if len(vectors) == 0:
            return _query_response(include, empty_queries=0)
        # n_results 0 is valid on the wire (Python refuses it): run the query with 1 so the
        # dimension, filters and ids are still checked, then keep nothing.
        result = collection.query(
            query_embeddings=vectors,
            n_results=max(n_results, 1),
            ids=ids,
            where=where,
            where_document=where_document,
            include=list(include),
        )
        if n_results == 0:
            return _query_response(include, empty_queries=len(vectors))
        embeddings = result.get("embeddings")
        return {
            "ids": result["ids"],
            "embeddings": None if embeddings is None else [_f32(e) for e in embeddings],
            "documents": result.get("documents"),
            "uris": result.get("uris"),
            "metadatas": result.get("metadatas"),
            "distances": result.get("distances"),
            "include": include,
        }

    # -- search and fork

    def search(
        self, tenant: str, database: str, collection_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        from ._search.plan import parse_read_level

        searches = body.get("searches")
        if searches is None:
            raise _missing("searches")
        if not isinstance(searches, list):
            raise _wrong("searches", "an array", searches)
        level = parse_read_level(body.get("read_level") or "index_and_wal")
        collection = self.collection(tenant, database, collection_id)
        # The payloads go to the backend as they came: it checks them, and a server never
        # embeds text (a text query is refused with a message saying so).
        return self.backend.search(_client.model_of(collection).id, searches, level)

    def fork(
        self, tenant: str, database: str, collection_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        new_name = _str(body, "new_name")
        forked = self.collection(tenant, database, collection_id).fork(new_name)
        return _wire.collection_to_json(_client.model_of(forked))

    def fork_count(self, tenant: str, database: str, collection_id: str) -> dict[str, int]:
        return {"count": int(self.collection(tenant, database, collection_id).fork_count())}

    def indexing_status(self, tenant: str, database: str, collection_id: str) -> dict[str, Any]:
        return dataclasses.asdict(
            self.collection(tenant, database, collection_id).get_indexing_status()
        )


def _f32(value: Any) -> Any:
    """Vectors leave as float32 so JSON shows float32 precision (``0.1``, not ``0.100000001``)."""
    if isinstance(value, np.ndarray) and value.dtype != np.float32:
        return value.astype(np.float32)
    return value


def _query_response(include: list[str], *, empty_queries: int) -> dict[str, Any]:
    """A query answer with no hits: ``[[]]`` per query for every included field."""

    def field(name: str) -> list[list[Any]] | None:
        return [[] for _ in range(empty_queries)] if name in include else None

    return {
        "ids": [[] for _ in range(empty_queries)],
        "embeddings": field("embeddings"),
        "documents": field("documents"),
        "uris": field("uris"),
        "metadatas": field("metadatas"),
        "distances": field("distances"),
        "include": include,
    }


# ---------------------------------------------------------------- the app


async def _raw_body(request: Request) -> bytes:
    return await request.body()


RawBody = Depends(_raw_body)


def _object_schema(**properties: Any) -> dict[str, Any]:
    return {
        "requestBody": {
            "content": {_JSON: {"schema": {"type": "object", "properties": properties}}},
        }
    }


_IDS = {"type": "array", "items": {"type": "string"}}
_VECTORS = {
    "type": "array",
    "items": {"anyOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string"}]},
}
_OBJ = {"type": "object"}
_LIST = {"type": "array"}
_INT = {"type": "integer", "minimum": 0}
_RECORDS = _object_schema(
    ids=_IDS, embeddings=_VECTORS, metadatas=_LIST, documents=_LIST, uris=_LIST
)


class ErrorBody(BaseModel):
    """Every error the server answers: Chroma's wire name and a message saying what to fix."""

    error: str
    message: str


_STATUS_MEANING = {
    400: "Invalid argument: a value breaks a rule of the API (the message names it)",
    401: "Missing or wrong token (only when the server requires one)",
    403: "Not allowed by the server's configuration",
    404: "No such tenant, database or collection",
    408: "The request headers or body did not arrive in time",
    409: "A name or id that is taken",
    413: "The request body is larger than the server accepts",
    414: "The request line is too long",
    415: "The request body is not JSON",
    422: "The request has the wrong shape: a missing field or a value of the wrong type",
    431: "The request headers are too large",
    503: "The server is at its bound on concurrent requests: retry after Retry-After seconds",
}


def _responses(method: str, path: str, extra: Sequence[int]) -> dict[int | str, dict[str, Any]]:
    """Every error status a route can answer, for the OpenAPI document."""
    codes = {408, 414, 431, 503, *extra}
    if path not in OPEN_PATHS:
        codes.add(401)
    if method in _BODY_METHODS:
        codes |= {400, 413, 415, 422}
    if "{" in path:
        codes |= {400, 404, 422}
    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorBody, "description": _STATUS_MEANING[code]} for code in sorted(codes)
    }
    responses[503]["headers"] = {
        "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
    }
    return responses


def create_app(
    client_or_backend: Any,
    *,
    auth_token: str | None = None,
    allow_reset: bool = False,
    cors_origins: Sequence[str] = (),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    max_concurrent: int = DEFAULT_MAX_CONCURRENT,
) -> FastAPI:
    """The ASGI app serving ``client_or_backend`` (a ``tintdb._client.Client`` or a Backend).

    The caller owns the backend: the app never closes it.
    """
    from . import __version__ as version

    svc = _Service(client_or_backend, allow_reset)
    app = FastAPI(
        title="tintdb",
        version=version,
        description="tintdb's implementation of Chroma's v2 REST API.",
        docs_url=None,  # Swagger UI would fetch its assets from the internet
        redoc_url=None,
        openapi_url="/openapi.json",
        redirect_slashes=False,  # paths match literally, as on Chroma's server
    )
    app.state.service = svc
    _install_error_handlers(app)

    p = _wire.API_PREFIX
    t = p + "/tenants/{tenant}"
    T = t + "/databases/{database}"  # the spec's name for this prefix
    C = T + "/collections/{collection_id}"

    def route(
        method: str, path: str, errors: Sequence[int] = (), **kwargs: Any
    ) -> Callable[[Callable[..., Any]], Any]:
        responses = _responses(method, path, errors)
        return app.api_route(
            path, methods=[method], response_model=None, responses=responses, **kwargs
        )

    # -- server

    @route("GET", p + "/heartbeat", tags=["server"])
    def heartbeat() -> Response:
        return _ok({"nanosecond heartbeat": int(svc.backend.heartbeat())})

    @route("GET", p, tags=["server"])
    def root() -> Response:
        """The API's root answers as the heartbeat, as Chroma's does."""
        return heartbeat()

    @route("GET", p + "/version", tags=["server"])
    def get_version() -> Response:
        return _ok(str(svc.backend.version()))

    # These three touch no backend: answered on the event loop, so probes and client
    # handshakes never queue behind heavy work in the thread pool.
    @route("GET", p + "/pre-flight-checks", tags=["server"])
    async def pre_flight_checks() -> Response:
        return _ok({"max_batch_size": _wire.MAX_BATCH_SIZE, "supports_base64_encoding": True})

    @route("GET", p + "/healthcheck", tags=["server"])
    async def healthcheck() -> Response:
        return _ok({"is_executor_ready": True, "is_log_client_ready": True})

    @route("GET", p + "/auth/identity", tags=["server"])
    async def identity() -> Response:
        return _ok(
            {
                "user_id": "",
                "tenant": "default_tenant",
                "databases": ["default_database"],
            }
        )

    @route("POST", p + "/reset", tags=["server"], errors=[403])
    def reset() -> Response:
        return _ok(svc.reset())

    # -- tenants and databases

    @route(
        "POST",
        p + "/tenants",
        tags=["tenants"],
        errors=[409],
        openapi_extra=_object_schema(name={"type": "string"}),
    )
    def create_tenant(raw: bytes = RawBody) -> Response:
        svc.admin.create_tenant(_str(_parse(raw), "name"))
        return _ok({})

    @route("GET", t, tags=["tenants"])
    def get_tenant(tenant: str) -> Response:
        found = svc.admin.get_tenant(tenant)
        return _ok({"name": found["name"], "resource_name": found.get("resource_name")})

    @route("GET", t + "/databases", tags=["databases"])
    def list_databases(
        tenant: str, limit: int | None = None, offset: int | None = None
    ) -> Response:
        found = svc.admin.list_databases(limit=limit, offset=offset, tenant=tenant)
        return _ok([_database_json(d) for d in found])

    @route(
        "POST",
        t + "/databases",
        tags=["databases"],
        errors=[409],
        openapi_extra=_object_schema(name={"type": "string"}),
    )
    def create_database(tenant: str, raw: bytes = RawBody) -> Response:
        svc.admin.create_database(_str(_parse(raw), "name"), tenant=tenant)
        return _ok({})

    @route("GET", T, tags=["databases"])
    def get_database(tenant: str, database: str) -> Response:
        return _ok(_database_json(svc.admin.get_database(database, tenant=tenant)))

    @route("DELETE", T, tags=["databases"])
    def delete_database(tenant: str, database: str) -> Response:
        svc.admin.delete_database(database, tenant=tenant)
        svc.forget_clients()
        return _ok({})

    # -- collections

    @route("GET", T + "/collections", tags=["collections"])
    def list_collections(
        tenant: str, database: str, limit: int | None = None, offset: int | None = None
    ) -> Response:
        return _ok(svc.list_collections(tenant, database, limit, offset))

    @route(
        "POST",
        T + "/collections",
        tags=["collections"],
        errors=[409],
        openapi_extra=_object_schema(
            name={"type": "string"},
            metadata=_OBJ,
            configuration=_OBJ,
            get_or_create={"type": "boolean"},
        ),
    )
    def create_collection(tenant: str, database: str, raw: bytes = RawBody) -> Response:
        return _ok(svc.create_collection(tenant, database, _parse(raw)))

    @route("GET", T + "/collections_count", tags=["collections"])
    def count_collections(tenant: str, database: str) -> Response:
        return _ok(svc.count_collections(tenant, database))

    @route("GET", T + "/collections/by-id/{collection_id}", tags=["collections"])
    def get_collection_by_id(tenant: str, database: str, collection_id: str) -> Response:
        return _ok(svc.get_collection_by_id(tenant, database, collection_id))

    @route("GET", T + "/collections/{name}", tags=["collections"])
    def get_collection(tenant: str, database: str, name: str) -> Response:
        return _ok(svc.get_collection(tenant, database, name))

    @route(
        "PUT",
        C,
        tags=["collections"],
        errors=[409],
        openapi_extra=_object_schema(
            new_name={"type": "string"}, new_metadata=_OBJ, new_configuration=_OBJ
        ),
    )
    def modify_collection(
        tenant: str, database: str, collection_id: str, raw: bytes = RawBody
    ) -> Response:
        svc.modify_collection(tenant, database, collection_id, _parse(raw))
        return _ok({})

    @route("DELETE", T + "/collections/{name}", tags=["collections"])
    def delete_collection(tenant: str, database: str, name: str) -> Response:
        svc.delete_collection(tenant, database, name)
        return _ok({})

    # -- records

    @route(
        "POST", C + "/add", tags=["records"], status_code=201, errors=[409], openapi_extra=_RECORDS
    )
    def add(tenant: str, database: str, collection_id: str, raw: bytes = RawBody) -> Response:
        svc.add(tenant, database, collection_id, _parse(raw))
        return _ok({}, status=201)

    @route("POST", C + "/update", tags=["records"], openapi_extra=_RECORDS)
    def update(tenant: str, database: str, collection_id: str, raw: bytes = RawBody) -> Response:
        svc.update(tenant, database, collection_id, _parse(raw))
        return _ok({})

    @route("POST", C + "/upsert", tags=["records"], openapi_extra=_RECORDS)
    def upsert(tenant: str, database: str, collection_id: str, raw: bytes = RawBody) -> Response:
        svc.upsert(tenant, database, collection_id, _parse(raw))
        return _ok({})

    @route(
        "POST",
        C + "/delete",
        tags=["records"],
        openapi_extra=_object_schema(ids=_IDS, where=_OBJ, where_document=_OBJ, limit=_INT),
    )
    def delete(tenant: str, database: str, collection_id: str, raw: bytes = RawBody) -> Response:
        return _ok(svc.delete(tenant, database, collection_id, _parse(raw)))

    @route("GET", C + "/count", tags=["records"])
    def count(
        tenant: str, database: str, collection_id: str, read_level: str | None = None
    ) -> Response:
        return _ok(svc.count(tenant, database, collection_id))

    @route(
        "POST",
        C + "/get",
        tags=["records"],
        openapi_extra=_object_schema(
            ids=_IDS, where=_OBJ, where_document=_OBJ, limit=_INT, offset=_INT, include=_LIST
        ),
    )
    def get(tenant: str, database: str, collection_id: str, raw: bytes = RawBody) -> Response:
        return _ok(svc.get(tenant, database, collection_id, _parse(raw)))

    @route(
        "POST",
        C + "/query",
        tags=["records"],
        openapi_extra=_object_schema(
            query_embeddings={"type": "array", "items": {"type": "array"}},
            n_results=_INT,
            ids=_IDS,
            where=_OBJ,
            where_document=_OBJ,
            include=_LIST,
        ),
    )
    def query(tenant: str, database: str, collection_id: str, raw: bytes = RawBody) -> Response:
        return _ok(svc.query(tenant, database, collection_id, _parse(raw)))

    @route(
        "POST",
        C + "/search",
        tags=["records"],
        openapi_extra=_object_schema(
            searches={"type": "array", "items": _OBJ},
            read_level={"type": "string", "enum": list(READ_LEVELS)},
        ),
    )
    def search(tenant: str, database: str, collection_id: str, raw: bytes = RawBody) -> Response:
        return _ok(svc.search(tenant, database, collection_id, _parse(raw)))

    @route(
        "POST",
        C + "/fork",
        tags=["collections"],
        errors=[409],
        openapi_extra=_object_schema(new_name={"type": "string"}),
    )
    def fork(tenant: str, database: str, collection_id: str, raw: bytes = RawBody) -> Response:
        return _ok(svc.fork(tenant, database, collection_id, _parse(raw)))

    @route("GET", C + "/fork_count", tags=["collections"])
    def fork_count(tenant: str, database: str, collection_id: str) -> Response:
        return _ok(svc.fork_count(tenant, database, collection_id))

    @route("GET", C + "/indexing_status", tags=["collections"])
    def indexing_status(tenant: str, database: str, collection_id: str) -> Response:
        return _ok(svc.indexing_status(tenant, database, collection_id))

    # -- the retired v1 API

    @app.api_route(
        "/api/v1/{rest:path}",
        methods=["GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
        include_in_schema=False,
    )
    def v1_gone(rest: str) -> Response:
        return Response(
            _error_body("Unimplemented", "The v1 API is deprecated. Please use /v2 apis"),
            status_code=410,
            media_type=_JSON,
        )

    app.add_middleware(
        _Guard,
        auth_token=auth_token,
        max_body_bytes=max_body_bytes,
        body_timeout=body_timeout,
        max_concurrent=max_concurrent,
    )
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["*"],
            allow_headers=["*"],
            max_age=600,
        )
    return app


def _database_json(found: dict[str, Any]) -> dict[str, Any]:
    return {"id": found.get("id"), "name": found["name"], "tenant": found["tenant"]}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TintError)
    async def tint_error(_: Request, exc: TintError) -> Response:
        return _error(exc)

    @app.exception_handler(ValueError)
    async def value_error(_: Request, exc: ValueError) -> Response:
        # A bare ValueError from validation code is a client mistake, never a 500.
        return _error(InvalidArgumentError(str(exc)))

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(_: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e.get('loc', ())[1:])}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return _error(UnprocessableError(problems or "Invalid request parameters"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths and wrong methods: a body that says so, for clients that show it.
        route = f"{request.method} {request.url.path}"
        if exc.status_code == 404:
            name, message = "NotFoundError", f"No such route: {route} (see /openapi.json)"
        elif exc.status_code == 405:
            allowed = {k.lower(): v for k, v in (exc.headers or {}).items()}.get("allow", "")
            name, message = "ChromaError", f"Method not allowed: {route}; allowed: {allowed}"
        else:
            name, message = "ChromaError", f"{route}: {exc.detail}"
        return Response(
            _error_body(name, message),
            status_code=exc.status_code,
            headers=exc.headers,
            media_type=_JSON,
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return Response(
            _error_body("InternalError", f"{type(exc).__name__}: {exc} (this is a tintdb bug)"),
            status_code=500,
            media_type=_JSON,
        )
