"""Every client constructor chromadb 1.5.9 has, with its signature, positionally and by
keyword.

``CHROMA_SIGNATURES`` is read from chromadb 1.5.9's ``chromadb/__init__.py``: each
constructor's parameters in order, with their defaults (``SETTINGS`` where chromadb's
default is a ``Settings()`` instance or None). tintdb may add keyword-only parameters
after them (``backend=``, ``max_threads=``), nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from pathlib import Path
from typing import Any

import pytest
from _server import TintServer

import tintdb
from tintdb import DEFAULT_DATABASE, DEFAULT_TENANT, Settings
from tintdb.errors import InvalidArgumentError, NotFoundError

SETTINGS = object()  # chromadb: Settings() or None, read as "the default settings"
KW = inspect.Parameter.KEYWORD_ONLY

CHROMA_SIGNATURES: dict[str, list[tuple[str, Any, bool]]] = {
    # name: [(parameter, default, keyword-only)]
    "Client": [
        ("settings", SETTINGS, False),
        ("tenant", DEFAULT_TENANT, False),
        ("database", DEFAULT_DATABASE, False),
    ],
    "EphemeralClient": [
        ("settings", SETTINGS, False),
        ("tenant", DEFAULT_TENANT, False),
        ("database", DEFAULT_DATABASE, False),
    ],
    "PersistentClient": [
        ("path", "./chroma", False),
        ("settings", SETTINGS, False),
        ("tenant", DEFAULT_TENANT, False),
        ("database", DEFAULT_DATABASE, False),
    ],
    "RustClient": [
        ("path", None, False),
        ("settings", SETTINGS, False),
        ("tenant", DEFAULT_TENANT, False),
        ("database", DEFAULT_DATABASE, False),
    ],
    "HttpClient": [
        ("host", "localhost", False),
        ("port", 8000, False),
        ("ssl", False, False),
        ("headers", None, False),
        ("settings", SETTINGS, False),
        ("tenant", DEFAULT_TENANT, False),
        ("database", DEFAULT_DATABASE, False),
    ],
    "AsyncHttpClient": [
        ("host", "localhost", False),
        ("port", 8000, False),
        ("ssl", False, False),
        ("headers", None, False),
        ("settings", SETTINGS, False),
        ("tenant", DEFAULT_TENANT, False),
        ("database", DEFAULT_DATABASE, False),
    ],
    "CloudClient": [
        ("tenant", None, False),
        ("database", None, False),
        ("api_key", None, False),
        ("settings", SETTINGS, False),
        ("cloud_host", "api.trychroma.com", True),
        ("cloud_port", 443, True),
        ("enable_ssl", True, True),
    ],
    "AdminClient": [("settings", SETTINGS, False)],
}
TINTDB_ONLY_KEYWORDS = {"backend", "max_threads"}


@pytest.mark.parametrize("name", list(CHROMA_SIGNATURES))
def test_signature_is_chromadbs(name: str) -> None:
    params = list(inspect.signature(getattr(tintdb, name)).parameters.values())
    ours = [p for p in params if p.name not in TINTDB_ONLY_KEYWORDS]
    assert [p.name for p in ours] == [n for n, _, _ in CHROMA_SIGNATURES[name]]
    for p, (_, default, keyword_only) in zip(ours, CHROMA_SIGNATURES[name], strict=True):
        assert (p.kind == KW) == keyword_only, p.name
        if default is SETTINGS:
            assert p.default is None, p.name
        else:
            assert p.default == default, p.name
    extra = [p for p in params if p.name in TINTDB_ONLY_KEYWORDS]
    assert all(p.kind == KW for p in extra)


def test_embedded_constructors_positionally(tmp_path: Path) -> None:
    with tintdb.Client(Settings(allow_reset=True), DEFAULT_TENANT, DEFAULT_DATABASE) as c:
        assert c.get_settings().allow_reset is True
        assert (c.tenant, c.database) == (DEFAULT_TENANT, DEFAULT_DATABASE)
    with tintdb.EphemeralClient(Settings(), DEFAULT_TENANT, DEFAULT_DATABASE) as c:
        c.create_collection("eph").add(ids=["a"], embeddings=[[1.0]])
    with tintdb.PersistentClient(tmp_path / "p", Settings(), DEFAULT_TENANT) as c:
        c.create_collection("pers").add(ids=["a"], embeddings=[[1.0]])
    with tintdb.RustClient(str(tmp_path / "p")) as c:
        assert c.get_collection("pers").count() == 1
    with tintdb.RustClient() as c:
        assert c.list_collections() == []
    settings = Settings(is_persistent=True, persist_directory=str(tmp_path / "p"))
    with tintdb.AdminClient(settings) as admin:
        admin.create_tenant("acme")
        admin.create_database("main", "acme")
    with tintdb.PersistentClient(str(tmp_path / "p"), None, "acme", "main") as c:
        assert (c.tenant, c.database) == ("acme", "main")
        assert c.list_collections() == []
    with pytest.raises(NotFoundError):
        tintdb.PersistentClient(str(tmp_path / "p"), None, "acme", "missing")


def test_embedded_constructors_by_keyword(tmp_path: Path) -> None:
    settings = Settings(allow_reset=True)
    with tintdb.Client(settings=settings, tenant=DEFAULT_TENANT, database=DEFAULT_DATABASE) as c:
        assert c.reset() is True
    with tintdb.EphemeralClient(settings=Settings(), tenant=DEFAULT_TENANT) as c:
        assert c.heartbeat() > 0
    with tintdb.PersistentClient(
        path=str(tmp_path), settings=Settings(), database=DEFAULT_DATABASE
    ):
        pass
    assert tintdb.AdminClient(settings=Settings()).get_tenant(DEFAULT_TENANT)["name"] == (
        DEFAULT_TENANT
    )


def test_http_constructors(http_server: TintServer) -> None:
    host, port = http_server.host, http_server.port
    settings = Settings(chroma_server_host=host, chroma_server_http_port=port)
    with tintdb.AdminClient(settings) as admin:
        # The server outlives a test: an earlier one in this worker may have made them.
        with contextlib.suppress(tintdb.errors.UniqueConstraintError):
            admin.create_tenant("positional")
        with contextlib.suppress(tintdb.errors.UniqueConstraintError):
            admin.create_database("db1", "positional")
    with tintdb.HttpClient(host, port, False, None, Settings(), "positional", "db1") as c:
        assert (c.tenant, c.database) == ("positional", "db1")
        c.get_or_create_collection("pos").upsert(ids=["a"], embeddings=[[1.0]])
    with tintdb.HttpClient(
        host=host,
        port=str(port),
        ssl=False,
        headers={"x-extra": "1"},
        tenant="positional",
        database="db1",
    ) as c:
        assert c.get_collection("pos").count() == 1
    with pytest.raises(NotFoundError):
        tintdb.HttpClient(host, port, tenant="no-such-tenant")

    async def use_async() -> tuple[int, int]:
        client = await tintdb.AsyncHttpClient(host, port, False, None, None, "positional", "db1")
        beat = await client.heartbeat()
        col = await client.get_collection("pos")
        count = await col.count()
        await client.close()
        return beat, count

    beat, count = asyncio.run(use_async())
    assert beat > 0 and count == 1


def test_cloud_client_is_refused_clearly() -> None:
    with pytest.raises(InvalidArgumentError, match="Chroma Cloud") as raised:
        tintdb.CloudClient("tenant", "database", "ck-key")
    assert "HttpClient" in str(raised.value)
    with pytest.raises(InvalidArgumentError, match="Chroma Cloud"):
        tintdb.CloudClient(api_key="ck-key", cloud_host="localhost", cloud_port=8000)


def test_a_backend_is_passed_by_keyword() -> None:
    with tintdb.EphemeralClient() as c:
        backend = c._live_backend()
        with pytest.raises(InvalidArgumentError, match="backend="):
            tintdb.Client(backend)  # type: ignore[arg-type]
        same = tintdb.Client(backend=backend)
        same.create_collection("shared")
        assert [x.name for x in c.list_collections()] == ["shared"]
