"""``Settings``: every field chromadb 1.5.9 has, each honoured or refused, never ignored.

``CHROMA_FIELDS`` is chromadb 1.5.9's ``Settings`` (every field and its default, read
from its ``chromadb/config.py``). The tests check that tintdb has exactly these fields,
that the ones it uses change what a client does (a store on disk, a server, auth
headers, connection limits ...), and that every other one set to a non-default value
raises an error that names it.
"""

from __future__ import annotations

import resource
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from _server import TintServer

import tintdb
from tintdb import config
from tintdb.config import FIELDS, REFUSED, APIVersion, Settings
from tintdb.errors import AuthorizationError, InvalidArgumentError

CHROMA_FIELDS: dict[str, Any] = {
    "environment": "",
    "chroma_api_impl": "chromadb.api.rust.RustBindingsAPI",
    "chroma_server_nofile": None,
    "chroma_server_thread_pool_size": 40,
    "tenant_id": "default",
    "topic_namespace": "default",
    "chroma_server_host": None,
    "chroma_server_headers": None,
    "chroma_server_http_port": None,
    "chroma_server_ssl_enabled": False,
    "chroma_server_ssl_verify": None,
    "chroma_server_api_default_path": "/api/v2",
    "chroma_server_cors_allow_origins": [],
    "chroma_http_keepalive_secs": 40.0,
    "chroma_http_max_connections": None,
    "chroma_http_max_keepalive_connections": None,
    "is_persistent": False,
    "persist_directory": "./chroma",
    "chroma_memory_limit_bytes": 0,
    "chroma_segment_cache_policy": None,
    "allow_reset": False,
    "chroma_auth_token_transport_header": None,
    "chroma_client_auth_provider": None,
    "chroma_client_auth_credentials": None,
    # chromadb builds these keys with f-strings of its APIVersion enum
    "chroma_server_auth_ignore_paths": {
        f"{APIVersion.V2}": ["GET"],
        f"{APIVersion.V2}/heartbeat": ["GET"],
        f"{APIVersion.V2}/version": ["GET"],
        f"{APIVersion.V1}": ["GET"],
        f"{APIVersion.V1}/heartbeat": ["GET"],
        f"{APIVersion.V1}/version": ["GET"],
    },
    "chroma_overwrite_singleton_tenant_database_access_from_auth": False,
    "chroma_server_authn_provider": None,
    "chroma_server_authn_credentials": None,
    "chroma_server_authn_credentials_file": None,
    "chroma_server_authz_provider": None,
    "chroma_server_authz_config": None,
    "chroma_server_authz_config_file": None,
    "chroma_product_telemetry_impl": "chromadb.telemetry.product.posthog.Posthog",
    "chroma_telemetry_impl": "chromadb.telemetry.product.posthog.Posthog",
    "anonymized_telemetry": True,
    "chroma_otel_collection_endpoint": "",
    "chroma_otel_service_name": "chromadb",
    "chroma_otel_collection_headers": {},
    "chroma_otel_granularity": None,
    "migrations": "apply",
    "migrations_hash_algorithm": "md5",
    "chroma_segment_directory_impl": (
        "chromadb.segment.impl.distributed.segment_directory.RendezvousHashSegmentDirectory"
    ),
    "chroma_segment_directory_routing_mode": "id",
    "chroma_memberlist_provider_impl": (
        "chromadb.segment.impl.distributed.segment_directory.CustomResourceMemberlistProvider"
    ),
    "worker_memberlist_name": "query-service-memberlist",
    "chroma_coordinator_host": "localhost",
    "chroma_server_grpc_port": None,
    "chroma_sysdb_impl": "chromadb.db.impl.sqlite.SqliteDB",
    "chroma_producer_impl": "chromadb.db.impl.sqlite.SqliteDB",
    "chroma_consumer_impl": "chromadb.db.impl.sqlite.SqliteDB",
    "chroma_segment_manager_impl": "chromadb.segment.impl.manager.local.LocalSegmentManager",
    "chroma_executor_impl": "chromadb.execution.executor.local.LocalExecutor",
    "chroma_query_replication_factor": 2,
    "chroma_logservice_host": "localhost",
    "chroma_logservice_port": 50052,
    "chroma_quota_provider_impl": None,
    "chroma_rate_limiting_provider_impl": None,
    "chroma_quota_enforcer_impl": "chromadb.quota.simple_quota_enforcer.SimpleQuotaEnforcer",
    "chroma_rate_limit_enforcer_impl": (
        "chromadb.rate_limit.simple_rate_limit.SimpleRateLimitEnforcer"
    ),
    "chroma_async_rate_limit_enforcer_impl": (
        "chromadb.rate_limit.simple_rate_limit.SimpleAsyncRateLimitEnforcer"
    ),
    "chroma_logservice_request_timeout_seconds": 3,
    "chroma_sysdb_request_timeout_seconds": 3,
    "chroma_query_request_timeout_seconds": 60,
    "chroma_db_impl": None,
    "chroma_collection_assignment_policy_impl": (
        "chromadb.ingest.impl.simple_policy.SimpleAssignmentPolicy"
    ),
}

# A value other than the default for each refused field.
OTHER_VALUE: dict[type, Any] = {str: "something-else", int: 7, bool: True, dict: {"a": "b"}}


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


@pytest.fixture(autouse=True)
def _no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment; these tests say exactly what is set."""
    import os

    for key in list(os.environ):
        if key.lower() in FIELDS:
            monkeypatch.delenv(key)


def test_the_fields_and_defaults_are_chromadbs() -> None:
    assert list(FIELDS) == list(CHROMA_FIELDS)
    s = Settings()
    for name, default in CHROMA_FIELDS.items():
        assert _plain(getattr(s, name)) == default, name
        assert _plain(s[name]) == default, name


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if f.support == REFUSED])
def test_a_refused_field_set_to_another_value_names_itself(name: str) -> None:
    default = CHROMA_FIELDS[name]
    if name == "chroma_segment_directory_routing_mode":
        other: Any = "node"
    elif name == "migrations":
        other = "validate"
    elif name == "chroma_server_cors_allow_origins":
        other = ["http://example.com"]
    elif default is None:
        other = "something-else" if name != "chroma_server_grpc_port" else 50051
    else:
        other = OTHER_VALUE[type(default)]
    with pytest.raises(InvalidArgumentError, match=name) as raised:
        Settings(**{name: other})
    assert "not supported" in str(raised.value)
    Settings(**{name: default})  # the default itself is fine
    s = Settings()
    with pytest.raises(InvalidArgumentError, match=name):
        setattr(s, name, other)  # chromadb's own constructors assign fields like this


def test_unknown_names_are_refused_with_a_suggestion() -> None:
    with pytest.raises(InvalidArgumentError, match="allow_reset"):
        Settings(allow_rest=True)
    s = Settings()
    with pytest.raises(InvalidArgumentError, match="persist_directory"):
        s.persist_dir = "x"  # type: ignore[attr-defined]


def test_telemetry_is_accepted_and_sends_nothing() -> None:
    s = Settings(
        anonymized_telemetry=False,
        chroma_product_telemetry_impl="my.telemetry.Impl",
        chroma_telemetry_impl="my.telemetry.Impl",
        migrations_hash_algorithm="sha256",
    )
    assert s.anonymized_telemetry is False
    with pytest.raises(InvalidArgumentError, match="migrations_hash_algorithm"):
        Settings(migrations_hash_algorithm="sha1")


def test_values_are_checked_and_converted() -> None:
    s = Settings(chroma_server_http_port="8123", allow_reset="true", chroma_server_ssl_verify="0")
    assert (s.chroma_server_http_port, s.allow_reset, s.chroma_server_ssl_verify) == (
        8123,
        True,
        False,
    )
    with pytest.raises(InvalidArgumentError, match="chroma_server_http_port"):
        Settings(chroma_server_http_port="eighty")
    with pytest.raises(InvalidArgumentError, match="chroma_api_impl"):
        Settings(chroma_api_impl="chromadb.api.local.LocalAPI")
    with pytest.raises(InvalidArgumentError, match="v2"):
        Settings(chroma_server_api_default_path="/api/v1")
    with pytest.raises(InvalidArgumentError, match="chroma_auth_token_transport_header"):
        Settings(chroma_auth_token_transport_header="X-Api-Key")
    with pytest.raises(InvalidArgumentError, match="chroma_client_auth_provider"):
        Settings(chroma_client_auth_provider="my.own.Provider")
    assert Settings(allow_reset=True) == Settings(allow_reset=True)
    assert Settings(allow_reset=True) != Settings()
    with pytest.raises(InvalidArgumentError, match="Missing required config value"):
        Settings().require("chroma_server_host")


def test_the_environment_is_read_for_the_fields_tintdb_uses(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ALLOW_RESET", "TRUE")
    monkeypatch.setenv("is_persistent", "1")
    monkeypatch.setenv("PERSIST_DIRECTORY", str(tmp_path / "from-env"))
    monkeypatch.setenv("TENANT_ID", "acme")  # refused, so not read: no error either
    monkeypatch.setattr(config, "_configured", None)  # Client() reads the environment
    s = Settings()
    assert (s.allow_reset, s.is_persistent, s.tenant_id) == (True, True, "default")
    assert s.source("allow_reset") == "environment variable ALLOW_RESET"
    assert Settings(allow_reset=False).allow_reset is False  # an argument wins
    with tintdb.Client() as client:  # Settings() from the environment: on disk
        client.create_collection("env").add(ids=["a"], embeddings=[[1.0]])
    with tintdb.PersistentClient(path=str(tmp_path / "from-env")) as again:
        assert again.get_collection("env").count() == 1
    monkeypatch.setenv("CHROMA_SERVER_HTTP_PORT", "not-a-port")
    with pytest.raises(InvalidArgumentError, match="environment variable CHROMA_SERVER_HTTP_PORT"):
        Settings()


# ---------------------------------------------------------------- what the used fields do


def test_is_persistent_keeps_the_data(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    settings = Settings(is_persistent=True, persist_directory=store)
    with tintdb.Client(settings) as client:  # positionally, as chromadb's signature allows
        client.create_collection("kept").add(ids=["a", "b"], embeddings=[[1.0], [2.0]])
    with tintdb.Client(settings=Settings(is_persistent=True, persist_directory=store)) as again:
        assert again.get_collection("kept").get()["ids"] == ["a", "b"]
    with tintdb.Client(Settings(is_persistent=False, persist_directory=store)) as memory:
        assert memory.list_collections() == []  # not persistent: a fresh in-memory store


def test_server_settings_give_an_http_client(http_server: TintServer) -> None:
    host, port = http_server.host, http_server.port
    with tintdb.HttpClient(host=host, port=port) as direct:
        direct.reset()
        direct.create_collection("over-http").add(ids=["a"], embeddings=[[1.0, 2.0]])
        for settings in (
            Settings(
                chroma_api_impl="chromadb.api.fastapi.FastAPI",
                chroma_server_host=host,
                chroma_server_http_port=port,
            ),
            Settings(chroma_server_host=host, chroma_server_http_port=str(port)),
            Settings(chroma_server_host=f"http://{host}:{port}"),
        ):
            with tintdb.Client(settings) as client:
                assert client.get_collection("over-http").count() == 1
            with tintdb.AdminClient(settings) as admin:
                assert admin.get_database("default_database")["name"] == "default_database"


def test_settings_that_cannot_apply_are_refused(tmp_path: Path) -> None:
    fastapi = "chromadb.api.fastapi.FastAPI"
    cases: list[tuple[Settings, str]] = [
        (Settings(chroma_api_impl=fastapi), "chroma_server_host"),
        (
            Settings(chroma_api_impl=config.LOCAL_API_IMPLS[0], chroma_server_host="h"),
            "chroma_server_host",
        ),
        (Settings(chroma_server_host="h", is_persistent=True), "is_persistent"),
        (Settings(chroma_server_host="h", persist_directory=str(tmp_path)), "persist_directory"),
        (Settings(chroma_server_http_port=8001), "chroma_server_http_port"),
        (Settings(chroma_client_auth_credentials="t0ken"), "chroma_client_auth_credentials"),
        (
            Settings(
                chroma_api_impl="chromadb.api.async_fastapi.AsyncFastAPI", chroma_server_host="h"
            ),
            "AsyncHttpClient",
        ),
    ]
    for settings, named in cases:
        with pytest.raises(InvalidArgumentError, match=named):
            tintdb.Client(settings)
    with pytest.raises(InvalidArgumentError, match="PersistentClient"):
        tintdb.PersistentClient(str(tmp_path), settings=Settings(chroma_server_host="h"))
    with pytest.raises(InvalidArgumentError, match="EphemeralClient"):
        tintdb.EphemeralClient(settings=Settings(chroma_api_impl=fastapi, chroma_server_host="h"))
    with pytest.raises(InvalidArgumentError, match="different"):
        tintdb.HttpClient(host="a", settings=Settings(chroma_server_host="b"))
    with pytest.raises(InvalidArgumentError, match="different"):
        tintdb.HttpClient(port=8001, settings=Settings(chroma_server_http_port=8002))


def test_client_auth_settings_become_headers(tmp_path: Path) -> None:
    secured = TintServer(tmp_path / "store", "--auth-token", "t0ken")
    with secured:
        base = {"chroma_server_host": secured.host, "chroma_server_http_port": secured.port}
        token = "chromadb.auth.token_authn.TokenAuthClientProvider"
        for extra in (
            {"chroma_client_auth_provider": token, "chroma_client_auth_credentials": "t0ken"},
            {
                "chroma_client_auth_provider": token,
                "chroma_client_auth_credentials": "t0ken",
                "chroma_auth_token_transport_header": "X-Chroma-Token",
            },
            {"chroma_server_headers": {"x-chroma-token": "t0ken"}},
        ):
            with tintdb.Client(Settings(**base, **extra)) as client:
                assert client.count_collections() == 0
        with pytest.raises(InvalidArgumentError, match="chroma_client_auth_credentials"):
            tintdb.Client(Settings(**base, chroma_client_auth_provider=token))
        with pytest.raises(InvalidArgumentError, match="ASCII"):
            tintdb.Client(Settings(**base, chroma_client_auth_credentials="tøken"))
        basic = Settings(
            **base,
            chroma_client_auth_provider="chromadb.auth.basic_authn.BasicAuthClientProvider",
            chroma_client_auth_credentials="user:pass",
        )
        # tintdb's server takes tokens only: the basic header is sent, and refused there.
        with pytest.raises(tintdb.errors.AuthError):
            tintdb.Client(basic)
        backend = tintdb._http.http_backend_from_settings(basic)
        assert backend.headers["Authorization"] == "Basic dXNlcjpwYXNz"
        backend.close()


def test_connection_settings_reach_the_http_pool(http_server: TintServer) -> None:
    settings = Settings(
        chroma_server_host=http_server.host,
        chroma_server_http_port=http_server.port,
        chroma_http_keepalive_secs=3.5,
        chroma_http_max_connections=7,
        chroma_http_max_keepalive_connections=2,
        chroma_server_ssl_verify=False,
    )
    backend = tintdb._http.http_backend_from_settings(settings)
    limits = backend.limits
    assert (limits.keepalive_expiry, limits.max_connections, limits.max_keepalive_connections) == (
        3.5,
        7,
        2,
    )
    assert backend.verify is False
    assert backend.heartbeat() > 0
    backend.close()
    with pytest.raises(InvalidArgumentError, match="chroma_server_ssl_verify"):
        tintdb._http.http_backend_from_settings(
            Settings(chroma_server_host="h", chroma_server_ssl_verify="/no/such/bundle.pem")
        )


def test_reset_over_http_is_the_servers_decision(http_server: TintServer) -> None:
    """allow_reset guards an embedded store; a server has its own (--allow-reset)."""
    with tintdb.HttpClient(host=http_server.host, port=http_server.port) as client:
        assert client.settings.allow_reset is False
        assert client.reset() is True  # this server was started with --allow-reset
    with tintdb.EphemeralClient() as local, pytest.raises(Exception, match="allow_reset"):
        local.reset()


def test_reset_refused_by_a_server_without_allow_reset(tmp_path: Path) -> None:
    with TintServer(tmp_path / "store") as server:
        settings = Settings(allow_reset=True)
        client = tintdb.HttpClient(host=server.host, port=server.port, settings=settings)
        with client, pytest.raises(AuthorizationError, match="--allow-reset"):
            client.reset()


def test_nofile_raises_the_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft - 2, hard))
    try:
        with tintdb.Client(Settings(chroma_server_nofile=soft - 1)):
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft - 1
        with tintdb.Client(Settings(chroma_server_nofile=soft - 10)):  # never lowered
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == soft - 1
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_configure_sets_what_client_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "_configured", None)  # whatever this test does is undone
    tintdb.configure(is_persistent=True, persist_directory=str(tmp_path / "configured"))
    assert tintdb.get_settings().is_persistent is True
    with tintdb.Client() as client:
        client.create_collection("conf").add(ids=["a"], embeddings=[[1.0]])
    with tintdb.PersistentClient(str(tmp_path / "configured")) as again:
        assert again.get_collection("conf").count() == 1
    tintdb.get_settings().is_persistent = False  # the object Client() uses, as in chromadb
    with tintdb.Client() as client:
        assert client.list_collections() == []
    tintdb.configure()
    assert tintdb.get_settings() == Settings()


def test_client_reads_the_environment_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "_configured", None)
    with tintdb.Client() as memory:
        assert memory.settings.is_persistent is False
    monkeypatch.setenv("IS_PERSISTENT", "true")
    monkeypatch.setenv("PERSIST_DIRECTORY", str(tmp_path))
    with tintdb.Client() as disk:
        assert disk.settings.is_persistent is True
