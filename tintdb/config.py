"""Client settings and the defaults shared by every layer.

``Settings`` has every field of chromadb 1.5.9's ``Settings``, with the same names and
defaults. Each field is one of:

* **used**: it changes what tintdb does (persistence, the server connection, auth,
  HTTP limits, ``allow_reset`` ...);
* **accepted**: product telemetry (tintdb never sends any, whatever the value) and the
  migration hash algorithm (tintdb keeps no migration hashes, so either value holds);
* **refused**: anything else set to a value other than its default raises
  ``InvalidArgumentError`` naming the field, at once, so that no setting is silently
  ignored. A name chromadb does not have is refused too.

As in chromadb, a field not given as an argument is read from the environment variable
of the same name (any case: ``ALLOW_RESET=true``, ``CHROMA_SERVER_HOST=...``); tintdb
does this for the used and accepted fields only, and does not read ``.env`` files.

Over 500 lines because ``FIELDS`` lists every one of chromadb's fields, each marked
used, accepted or refused exactly once, with its parser; the value parsers above it
exist only for that table. A table split across modules could miss or repeat a field.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .errors import InvalidArgumentError

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_DATABASE_ID",
    "DEFAULT_TENANT",
    "HNSW_DEFAULTS",
    "LOCAL_API_IMPLS",
    "APIVersion",
    "RoutingMode",
    "Settings",
    "TokenTransportHeader",
    "configure",
    "default_settings",
    "get_settings",
    "names_server",
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


class APIVersion(str, Enum):
    V1 = "/api/v1"
    V2 = "/api/v2"


class RoutingMode(Enum):
    """chromadb's routing of a distributed deployment; tintdb is a single node."""

    NODE = "node"
    ID = "id"


# chromadb's values of ``chroma_api_impl``: an embedded store, or a server over HTTP.
LOCAL_API_IMPLS = ("chromadb.api.rust.RustBindingsAPI", "chromadb.api.segment.SegmentAPI")
HTTP_API_IMPL = "chromadb.api.fastapi.FastAPI"
ASYNC_HTTP_API_IMPL = "chromadb.api.async_fastapi.AsyncFastAPI"
TOKEN_AUTH_PROVIDER = "chromadb.auth.token_authn.TokenAuthClientProvider"
BASIC_AUTH_PROVIDER = "chromadb.auth.basic_authn.BasicAuthClientProvider"


class TokenTransportHeader(str, Enum):
    """The header a token travels in (``chroma_auth_token_transport_header``)."""

    AUTHORIZATION = "Authorization"
    X_CHROMA_TOKEN = "X-Chroma-Token"


TOKEN_HEADERS = tuple(h.value for h in TokenTransportHeader)


# ---------------------------------------------------------------- value parsers


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "y", "t"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", "n", "f"):
        return False
    raise ValueError("expected a bool")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an int")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError("expected an int")


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value)
    raise ValueError("expected a number")


def _str(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError("expected a str")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _str_dict(value: Any) -> dict[str, Any]:
    value = _json(value)
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError("expected a dict with str keys")
    return dict(value)


def _str_list(value: Any) -> list[str]:
    value = _json(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of str")
    return list(value)


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else parse(value)


def _ssl_verify(value: Any) -> bool | str:
    """httpx's ``verify``: a bool, or the path of a CA bundle."""
    try:
        return _bool(value)
    except ValueError:
        return _str(value)


def _api_path(value: Any) -> APIVersion:
    try:
        version = APIVersion(value.value if isinstance(value, Enum) else value)
    except ValueError:
        raise ValueError("expected '/api/v2'") from None
    if version is not APIVersion.V2:
        raise ValueError("tintdb speaks Chroma's v2 API only, as Chroma's 1.x servers do")
    return version


def _routing(value: Any) -> RoutingMode:
    try:
        return RoutingMode(value.value if isinstance(value, Enum) else value)
    except ValueError:
        raise ValueError("expected 'node' or 'id'") from None


def _api_impl(value: Any) -> str:
    impl = _str(value)
    known = (*LOCAL_API_IMPLS, HTTP_API_IMPL, ASYNC_HTTP_API_IMPL)
    if impl not in known:
        raise ValueError(
            f"unknown implementation {impl!r}; chromadb's are {', '.join(known)} (the first two "
            f"are an embedded store here, {HTTP_API_IMPL} a server over HTTP)"
        )
    return impl


def _auth_provider(value: Any) -> str:
    provider = _str(value)
    if provider not in (TOKEN_AUTH_PROVIDER, BASIC_AUTH_PROVIDER):
        raise ValueError(
            f"tintdb sends the credentials of {TOKEN_AUTH_PROVIDER} or {BASIC_AUTH_PROVIDER}; "
            f"{provider!r} is not one of them (a provider class of your own cannot be loaded: "
            "pass the headers it would send with HttpClient(headers=...))"
        )
    return provider


def _token_header(value: Any) -> str:
    header = _str(value)
    for allowed in TOKEN_HEADERS:
        if header.lower() == allowed.lower():
            return allowed
    raise ValueError(f"expected one of {', '.join(TOKEN_HEADERS)}")


def _migrations(value: Any) -> str:
    mode = _str(value)
    if mode not in ("none", "validate", "apply"):
        raise ValueError("expected 'none', 'validate' or 'apply'")
    return mode


def _hash_algorithm(value: Any) -> str:
    algorithm = _str(value)
    if algorithm not in ("md5", "sha256"):
        raise ValueError("expected 'md5' or 'sha256'")
    return algorithm


# ---------------------------------------------------------------- the fields

USED, ACCEPTED, REFUSED = "used", "accepted", "refused"


@dataclass(frozen=True)
class _Field:
    default: Any
    parse: Callable[[Any], Any]
    support: str
    why: str = ""  # for a refused field: what to do instead


_SERVER = "configures a Chroma server, not a client; for tintdb's server see `tintdb run --help`"
_DISTRIBUTED = "configures distributed Chroma; tintdb is a single node"
_OTEL = "tintdb exports no OpenTelemetry traces"
_TELEMETRY = "tintdb never sends telemetry, whatever this says"
_CACHE = "tintdb keeps every open collection's index in memory and has no segment cache to bound"


def _refused(default: Any, parse: Callable[[Any], Any], why: str) -> _Field:
    return _Field(default, parse, REFUSED, why)


_opt_str, _opt_int = _optional(_str), _optional(_int)

FIELDS: dict[str, _Field] = {
    # generic
    "environment": _refused("", _str, "it is not used by chromadb's clients either"),
    "chroma_api_impl": _Field("chromadb.api.rust.RustBindingsAPI", _api_impl, USED),
    "chroma_server_nofile": _Field(None, _opt_int, USED),
    "chroma_server_thread_pool_size": _refused(40, _int, _SERVER),
    # client mode
    "tenant_id": _refused("default", _str, _DISTRIBUTED),
    "topic_namespace": _refused("default", _str, _DISTRIBUTED),
    "chroma_server_host": _Field(None, _opt_str, USED),
    "chroma_server_headers": _Field(None, _optional(_str_dict), USED),
    "chroma_server_http_port": _Field(None, _opt_int, USED),
    "chroma_server_ssl_enabled": _Field(False, _optional(_bool), USED),
    "chroma_server_ssl_verify": _Field(None, _optional(_ssl_verify), USED),
    "chroma_server_api_default_path": _Field(APIVersion.V2, _optional(_api_path), USED),
    "chroma_server_cors_allow_origins": _refused(
        [], _str_list, "configures a Chroma server; tintdb's is `tintdb run --cors-origin`"
    ),
    "chroma_http_keepalive_secs": _Field(40.0, _optional(_float), USED),
    "chroma_http_max_connections": _Field(None, _opt_int, USED),
    "chroma_http_max_keepalive_connections": _Field(None, _opt_int, USED),
    # embedded store
    "is_persistent": _Field(False, _bool, USED),
    "persist_directory": _Field("./chroma", _str, USED),
    "chroma_memory_limit_bytes": _refused(0, _int, _CACHE),
    "chroma_segment_cache_policy": _refused(None, _opt_str, _CACHE),
    "allow_reset": _Field(False, _bool, USED),
    # client auth
    "chroma_auth_token_transport_header": _Field(None, _optional(_token_header), USED),
    "chroma_client_auth_provider": _Field(None, _optional(_auth_provider), USED),
    "chroma_client_auth_credentials": _Field(None, _opt_str, USED),
    # server auth
    "chroma_server_auth_ignore_paths": _refused(
        {
            f"{APIVersion.V2}": ["GET"],
            f"{APIVersion.V2}/heartbeat": ["GET"],
            f"{APIVersion.V2}/version": ["GET"],
            f"{APIVersion.V1}": ["GET"],
            f"{APIVersion.V1}/heartbeat": ["GET"],
            f"{APIVersion.V1}/version": ["GET"],
        },
        _str_dict,
        _SERVER,
    ),
    "chroma_overwrite_singleton_tenant_database_access_from_auth": _refused(
        False, _bool, "it takes the tenant from Chroma Cloud's credentials; pass tenant= instead"
    ),
    "chroma_server_authn_provider": _refused(
        None, _opt_str, "configures a Chroma server; tintdb's is `tintdb run --auth-token`"
    ),
    "chroma_server_authn_credentials": _refused(
        None, _opt_str, "configures a Chroma server; tintdb's is `tintdb run --auth-token`"
    ),
    "chroma_server_authn_credentials_file": _refused(
        None, _opt_str, "configures a Chroma server; tintdb's is `tintdb run --auth-token`"
    ),
    "chroma_server_authz_provider": _refused(None, _opt_str, _SERVER),
    "chroma_server_authz_config": _refused(None, _opt_str, _SERVER),
    "chroma_server_authz_config_file": _refused(None, _opt_str, _SERVER),
    # telemetry
    "chroma_product_telemetry_impl": _Field(
        "chromadb.telemetry.product.posthog.Posthog", _str, ACCEPTED, _TELEMETRY
    ),
    "chroma_telemetry_impl": _Field(
        "chromadb.telemetry.product.posthog.Posthog", _str, ACCEPTED, _TELEMETRY
    ),
    "anonymized_telemetry": _Field(True, _bool, ACCEPTED, _TELEMETRY),
    "chroma_otel_collection_endpoint": _refused("", _optional(_str), _OTEL),
    "chroma_otel_service_name": _refused("chromadb", _optional(_str), _OTEL),
    "chroma_otel_collection_headers": _refused({}, _str_dict, _OTEL),
    "chroma_otel_granularity": _refused(None, _opt_str, _OTEL),
    # migrations
    "migrations": _refused(
        "apply", _migrations, "tintdb always upgrades a store of an older version in place"
    ),
    "migrations_hash_algorithm": _Field(
        "md5", _hash_algorithm, ACCEPTED, "tintdb keeps no migration hashes"
    ),
    # distributed
    "chroma_segment_directory_impl": _refused(
        "chromadb.segment.impl.distributed.segment_directory.RendezvousHashSegmentDirectory",
        _str,
        _DISTRIBUTED,
    ),
    "chroma_segment_directory_routing_mode": _refused(RoutingMode.ID, _routing, _DISTRIBUTED),
    "chroma_memberlist_provider_impl": _refused(
        "chromadb.segment.impl.distributed.segment_directory.CustomResourceMemberlistProvider",
        _str,
        _DISTRIBUTED,
    ),
    "worker_memberlist_name": _refused("query-service-memberlist", _str, _DISTRIBUTED),
    "chroma_coordinator_host": _refused("localhost", _str, _DISTRIBUTED),
    "chroma_server_grpc_port": _refused(None, _opt_int, _DISTRIBUTED),
    "chroma_sysdb_impl": _refused("chromadb.db.impl.sqlite.SqliteDB", _str, _DISTRIBUTED),
    "chroma_producer_impl": _refused("chromadb.db.impl.sqlite.SqliteDB", _str, _DISTRIBUTED),
    "chroma_consumer_impl": _refused("chromadb.db.impl.sqlite.SqliteDB", _str, _DISTRIBUTED),
    "chroma_segment_manager_impl": _refused(
        "chromadb.segment.impl.manager.local.LocalSegmentManager", _str, _DISTRIBUTED
    ),
    "chroma_executor_impl": _refused(
        "chromadb.execution.executor.local.LocalExecutor", _str, _DISTRIBUTED
    ),
    "chroma_query_replication_factor": _refused(2, _int, _DISTRIBUTED),
    "chroma_logservice_host": _refused("localhost", _str, _DISTRIBUTED),
    "chroma_logservice_port": _refused(50052, _int, _DISTRIBUTED),
    "chroma_quota_provider_impl": _refused(None, _opt_str, _DISTRIBUTED),
    "chroma_rate_limiting_provider_impl": _refused(None, _opt_str, _DISTRIBUTED),
    "chroma_quota_enforcer_impl": _refused(
        "chromadb.quota.simple_quota_enforcer.SimpleQuotaEnforcer", _str, _DISTRIBUTED
    ),
    "chroma_rate_limit_enforcer_impl": _refused(
        "chromadb.rate_limit.simple_rate_limit.SimpleRateLimitEnforcer", _str, _DISTRIBUTED
    ),
    "chroma_async_rate_limit_enforcer_impl": _refused(
        "chromadb.rate_limit.simple_rate_limit.SimpleAsyncRateLimitEnforcer", _str, _DISTRIBUTED
    ),
    "chroma_logservice_request_timeout_seconds": _refused(3, _int, _DISTRIBUTED),
    "chroma_sysdb_request_timeout_seconds": _refused(3, _int, _DISTRIBUTED),
    "chroma_query_request_timeout_seconds": _refused(60, _int, _DISTRIBUTED),
    # legacy
    "chroma_db_impl": _refused(
        None,
        _opt_str,
        "it belongs to Chroma before 0.4; for a store on disk use PersistentClient(path=...) or "
        "Settings(is_persistent=True, persist_directory=...)",
    ),
    "chroma_collection_assignment_policy_impl": _refused(
        "chromadb.ingest.impl.simple_policy.SimpleAssignmentPolicy", _str, _DISTRIBUTED
    ),
}


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Enum):
        a = a.value
    if isinstance(b, Enum):
        b = b.value
    return bool(a == b)


class Settings:
    """Options of every client constructor: chromadb's ``Settings``, field for field.

    ``Settings(is_persistent=True, persist_directory="./data")`` makes ``Client(settings)``
    a store on disk; ``chroma_api_impl="chromadb.api.fastapi.FastAPI"`` (or
    ``chroma_server_host``) makes it talk to a server. See the module docstring for how
    each field is treated.
    """

    def __init__(self, **values: Any) -> None:
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_sources", {})
        for name in values:
            if name not in FIELDS:
                raise _unknown(name)
        environ = {k.lower(): (k, v) for k, v in os.environ.items()}
        for name, spec in FIELDS.items():
            if name in values:
                self._set(name, values[name], "argument")
            elif spec.support != REFUSED and name in environ:
                key, raw = environ[name]
                self._set(name, raw, f"environment variable {key}")
            else:
                self._values[name] = _copy(spec.default)

    def _set(self, name: str, value: Any, source: str) -> None:
        spec = FIELDS[name]
        try:
            parsed = spec.parse(value)
        except (ValueError, TypeError) as exc:
            raise InvalidArgumentError(
                f"Settings {name} ({source}): {exc}, got {value!r}"
            ) from None
        if spec.support == REFUSED and not _same(parsed, spec.default):
            raise InvalidArgumentError(
                f"Settings {name}={value!r} ({source}) is not supported: {spec.why}. Remove it, "
                f"or leave it at its default ({spec.default!r})."
            )
        self._values[name] = parsed
        self._sources[name] = source

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(f"'Settings' object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in FIELDS:
            raise _unknown(name)
        self._set(name, value, "attribute")

    def __getitem__(self, key: str) -> Any:
        if key not in FIELDS:
            raise _unknown(key)
        return self._values[key]

    def require(self, key: str) -> Any:
        """The value of ``key``; an error if it is not set (chromadb's ``require``)."""
        value = self[key]
        if value is None:
            raise InvalidArgumentError(f"Missing required config value '{key}'")
        return value

    def given(self, name: str) -> bool:
        """Whether ``name`` was set (by argument, attribute or environment), not defaulted."""
        return name in self._sources

    def source(self, name: str) -> str:
        return self._sources.get(name, "default")

    def copy(self) -> Settings:
        other = Settings.__new__(Settings)
        object.__setattr__(other, "_values", _copy(self._values))
        object.__setattr__(other, "_sources", dict(self._sources))
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Settings):
            return NotImplemented
        return all(_same(self._values[k], other._values[k]) for k in FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self._values.items() if k in self._sources)
        return f"Settings({shown})"


def _unknown(name: str) -> InvalidArgumentError:
    close = difflib.get_close_matches(name, FIELDS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return InvalidArgumentError(
        f"Settings has no field {name!r} (chromadb 1.5.9's Settings has none either: it "
        f"would ignore it, tintdb refuses it so that no setting goes unnoticed).{hint}"
    )


# Fields that mean something only for a server connection, or only for an embedded store.
_SERVER_ONLY = (
    "chroma_server_http_port",
    "chroma_server_ssl_enabled",
    "chroma_server_ssl_verify",
    "chroma_server_headers",
    "chroma_http_keepalive_secs",
    "chroma_http_max_connections",
    "chroma_http_max_keepalive_connections",
    "chroma_client_auth_provider",
    "chroma_client_auth_credentials",
    "chroma_auth_token_transport_header",
)
_EMBEDDED_ONLY = ("is_persistent", "persist_directory")


def names_server(settings: Settings) -> bool:
    """Whether ``settings`` name a server (True) or an embedded store (False).

    A server: ``chroma_api_impl`` is chromadb's HTTP client, or ``chroma_server_host`` is
    set (chromadb would ignore a host without the HTTP client's name and keep the data
    in memory). Settings that cannot apply to the kind named raise, naming themselves.
    """
    impl = settings.chroma_api_impl
    server = impl in (HTTP_API_IMPL, ASYNC_HTTP_API_IMPL)
    if settings.chroma_server_host is not None and not server:
        if settings.given("chroma_api_impl"):
            raise InvalidArgumentError(
                f"Settings chroma_server_host={settings.chroma_server_host!r} names a server, "
                f"but chroma_api_impl={impl!r} an embedded store: set chroma_api_impl="
                f"{HTTP_API_IMPL!r}, or remove chroma_server_host"
            )
        server = True
    if server and settings.chroma_server_host is None:
        raise InvalidArgumentError(
            f"Settings chroma_api_impl={impl!r} needs chroma_server_host (Missing required "
            "config value 'chroma_server_host')"
        )
    for name in _EMBEDDED_ONLY if server else _SERVER_ONLY:
        if not _same(settings[name], FIELDS[name].default):
            kind = "a server" if server else "an embedded store"
            applies = "an embedded store" if server else "a connection to a server"
            raise InvalidArgumentError(
                f"Settings {name}={settings[name]!r} ({settings.source(name)}) applies to "
                f"{applies}, but these settings name {kind} (chroma_api_impl={impl!r}, "
                f"chroma_server_host={settings.chroma_server_host!r}); remove it"
            )
    return server


_configured: Settings | None = None


def configure(**values: Any) -> None:
    """Set the settings that ``Client()`` uses when given none (chromadb's ``configure``)."""
    global _configured
    _configured = Settings(**values)


def get_settings() -> Settings:
    """The settings ``Client()`` uses when given none. Until ``configure`` or this is
    called, ``Client()`` reads the environment afresh each time; from then on it uses
    this object, so changing it changes what the next ``Client()`` gets, as in chromadb."""
    global _configured
    if _configured is None:
        _configured = Settings()
    return _configured


def default_settings() -> Settings:
    """What ``Client()`` without settings uses (see ``get_settings``)."""
    return _configured if _configured is not None else Settings()
