"""HttpClient, AsyncHttpClient and the admin client against a real ``tintdb run``, plus
the request building of ``HttpBackend`` checked on a mock transport."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from _server import TintServer

import tintdb
from tintdb import errors
from tintdb._http import AsyncHttpClient, HttpAdminClient, HttpBackend, HttpClient

TOKEN = "client-side-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TintServer]:
    with TintServer(tmp_path_factory.mktemp("http-client"), "--allow-reset") as s:
        yield s


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TintServer]:
    with TintServer(tmp_path_factory.mktemp("http-secured"), "--auth-token", TOKEN) as s:
        yield s


@pytest.fixture
def client(server: TintServer) -> Iterator[tintdb.Client]:
    c = HttpClient(host=server.host, port=server.port)
    c.reset()
    yield c
    c.close()


class Letters:
    """A tiny deterministic embedding function: counts of a, b and c."""

    def __call__(self, input: list[str]) -> list[list[float]]:
        return [[float(t.count("a")), float(t.count("b")), float(t.count("c"))] for t in input]


def test_collection_flow(client: tintdb.Client) -> None:
    assert client.heartbeat() > 0
    assert client.get_version() == tintdb.__version__
    col = client.create_collection("flow", metadata={"hnsw:space": "cosine"})
    assert col.configuration["hnsw"]["space"] == "cosine"
    assert col.configuration["embedding_function"]["name"] == "default"
    col.add(
        ids=["a", "b", "c"],
        embeddings=[[1, 0, 0], [0, 1, 0], [1, 1, 0]],
        metadatas=[{"k": 1}, {"k": 2}, None],
        documents=["alpha", "beta", None],
    )
    assert col.count() == 3
    got = col.get(include=["embeddings", "metadatas", "documents"])
    assert got["ids"] == ["a", "b", "c"]
    assert isinstance(got["embeddings"], np.ndarray) and got["embeddings"].shape == (3, 3)
    assert got["embeddings"].dtype == np.float32
    assert got["metadatas"] == [{"k": 1}, {"k": 2}, None]
    assert got["included"] == ["embeddings", "metadatas", "documents"]

    res = col.query(query_embeddings=[[1, 0, 0]], n_results=2, include=["distances", "embeddings"])
    assert res["ids"] == [["a", "c"]]
    assert res["distances"][0][0] == pytest.approx(0.0, abs=1e-6)
    assert res["distances"][0][1] == pytest.approx(1 - 1 / np.sqrt(2), abs=1e-6)
    assert isinstance(res["embeddings"][0], np.ndarray) and res["embeddings"][0].shape == (2, 3)
    assert res["documents"] is None

    col.update(ids=["a"], metadatas=[{"k": None, "new": "v"}])
    col.upsert(ids=["c", "d"], embeddings=[[0, 0, 1], [0, 1, 1]], documents=["gamma", "delta"])
    assert col.get(ids=["a"])["metadatas"] == [{"new": "v"}]
    assert col.get(where={"k": {"$gte": 2}})["ids"] == ["b"]
    assert col.get(where_document={"$contains": "amm"})["ids"] == ["c"]
    assert col.get(limit=2, offset=1)["ids"] == ["b", "c"]
    assert col.peek(2)["ids"] == ["a", "b"]
    assert col.delete(ids=["b"]) == {"deleted": 1}
    assert col.count() == 3

    col.modify(name="flow2", metadata={"topic": "t"}, configuration={"hnsw": {"ef_search": 20}})
    again = client.get_collection("flow2")
    assert again.id == col.id and again.metadata == {"topic": "t"}
    assert again.configuration["hnsw"]["ef_search"] == 20
    assert [c.name for c in client.list_collections()] == ["flow2"]
    assert client.count_collections() == 1
    client.delete_collection("flow2")
    assert client.list_collections() == []


def test_vectors_cross_the_wire_bit_exact(client: tintdb.Client) -> None:
    col = client.create_collection("exact", embedding_function=None)
    rng = np.random.default_rng(3)
    vectors = (rng.standard_normal((50, 16)) * 10.0 ** rng.integers(-20, 20, (50, 16))).astype(
        np.float32
    )
    col.add(ids=[str(i) for i in range(50)], embeddings=vectors)
    back = col.get(include=["embeddings"])["embeddings"]
    assert back.tobytes() == vectors.tobytes()
    found = col.query(query_embeddings=vectors[:2], n_results=1, include=["embeddings"])
    assert found["ids"] == [["0"], ["1"]]
    assert found["embeddings"][1].tobytes() == vectors[1].tobytes()


def test_client_side_embedding_function(client: tintdb.Client) -> None:
    col = client.create_collection("letters", embedding_function=Letters())
    col.add(ids=["x", "y"], documents=["aaa", "bbb"])
    assert col.query(query_texts=["ab bb"], n_results=1)["ids"] == [["y"]]
    col.update(ids=["x"], documents=["ccc"])
    stored = col.get(ids=["x"], include=["embeddings", "documents"])
    assert stored["documents"] == ["ccc"]
    assert stored["embeddings"].tolist() == [[0.0, 0.0, 3.0]]


def test_errors_come_back_as_tintdb_errors(client: tintdb.Client) -> None:
    col = client.create_collection("errs", embedding_function=None)
    col.add(ids=["a"], embeddings=[[1, 2, 3]])
    with pytest.raises(errors.NotFoundError) as missing:
        client.get_collection("nope")
    assert isinstance(missing.value, ValueError) and "nope" in str(missing.value)
    with pytest.raises(errors.UniqueConstraintError):
        client.create_collection("errs")
    with pytest.raises(errors.IDAlreadyExistsError):
        col.add(ids=["a"], embeddings=[[1, 2, 3]])
    with pytest.raises(errors.InvalidDimensionException, match="dimension of 3, got 2"):
        col.add(ids=["b"], embeddings=[[1, 2]])
    with pytest.raises(errors.InvalidDimensionException):
        col.query(query_embeddings=[[1, 2]])
    with pytest.raises(errors.DuplicateIDError):
        col.add(ids=["c", "c"], embeddings=[[1, 2, 3]] * 2)
    with pytest.raises(errors.InvalidArgumentError):
        col.get(where={"a": 1, "b": 2})
    other = client.create_collection("errs2", embedding_function=None)
    with pytest.raises(errors.UniqueConstraintError):
        other.modify(name="errs")
    client.delete_collection("errs")
    with pytest.raises(errors.NotFoundError):
        col.count()


def test_tenants_and_databases(server: TintServer) -> None:
    admin = HttpAdminClient(host=server.host, port=server.port)
    admin.create_tenant("acme")
    admin.create_database("main", tenant="acme")
    admin.create_database("spare", tenant="acme")
    assert admin.get_tenant("acme")["name"] == "acme"
    assert [d["name"] for d in admin.list_databases(tenant="acme")] == ["main", "spare"]
    assert admin.get_database("main", tenant="acme")["tenant"] == "acme"
    with pytest.raises(errors.UniqueConstraintError):
        admin.create_database("main", tenant="acme")

    with HttpClient(host=server.host, port=server.port, tenant="acme", database="main") as scoped:
        col = scoped.create_collection("scoped", embedding_function=None)
        col.add(ids=["a"], embeddings=[[1.0]])
        assert col.count() == 1
        assert (col.tenant, col.database) == ("acme", "main")
    with HttpClient(host=server.host, port=server.port) as default:
        assert "scoped" not in [c.name for c in default.list_collections()]

    with pytest.raises(errors.NotFoundError):
        HttpClient(host=server.host, port=server.port, tenant="nobody")
    with pytest.raises(errors.NotFoundError):
        HttpClient(host=server.host, port=server.port, tenant="acme", database="nothing")
    admin.delete_database("spare", tenant="acme")
    assert [d["name"] for d in admin.list_databases(tenant="acme")] == ["main"]
    admin.close()
    with pytest.raises(errors.InvalidArgumentError, match="closed"):
        admin.list_databases(tenant="acme")
    admin.close()  # idempotent


def test_an_admin_client_over_a_clients_backend_leaves_closing_to_the_client(
    client: tintdb.Client,
) -> None:
    with tintdb.AdminClient.from_client(client) as admin:
        assert admin.get_database("default_database")["name"] == "default_database"
    assert client.heartbeat() > 0  # the client's connection is still open


@pytest.mark.parametrize(
    "make",
    [
        lambda s: HttpClient(host=s.host, port=s.port, headers={"x-chroma-token": TOKEN}),
        lambda s: HttpClient(
            host=s.host, port=s.port, headers={"Authorization": f"Bearer {TOKEN}"}
        ),
        lambda s: HttpClient(
            host=s.host, port=s.port, settings=tintdb.Settings(chroma_client_auth_credentials=TOKEN)
        ),
        lambda s: HttpClient(
            host=s.host,
            port=s.port,
            settings=tintdb.Settings(
                chroma_client_auth_credentials=TOKEN,
                chroma_auth_token_transport_header="X-Chroma-Token",
            ),
        ),
    ],
    ids=["x-chroma-token", "bearer", "settings-bearer", "settings-x-chroma-token"],
)
def test_token_auth(secured: TintServer, make: Callable[[TintServer], tintdb.Client]) -> None:
    with make(secured) as c:
        col = c.get_or_create_collection("guarded", embedding_function=None)
        assert col.count() >= 0


def test_missing_token_is_an_auth_error(secured: TintServer) -> None:
    with pytest.raises(errors.AuthError):
        HttpClient(host=secured.host, port=secured.port)
    with pytest.raises(errors.AuthError):
        HttpClient(host=secured.host, port=secured.port, headers={"x-chroma-token": "wrong"})


def test_reset_is_decided_by_the_server(secured: TintServer) -> None:
    with (
        HttpClient(host=secured.host, port=secured.port, headers={"x-chroma-token": TOKEN}) as c,
        pytest.raises(errors.AuthorizationError, match="--allow-reset"),
    ):
        c.reset()


def test_unreachable_server_names_the_address() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
            HttpClient(host="127.0.0.1", port=port)


# ---------------------------------------------------------------- request building


class Recorder:
    """A mock server: canned answers by path suffix, every request remembered."""

    def __init__(self, preflight: dict[str, Any]) -> None:
        self.preflight = preflight
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path.endswith("/pre-flight-checks"):
            return httpx.Response(200, json=self.preflight)
        if path.endswith("/get"):
            return httpx.Response(200, json={"ids": [], "embeddings": [], "include": []})
        if path.endswith("/broken"):
            return httpx.Response(502, text="<html>bad gateway</html>")
        return httpx.Response(201, json={})

    def body(self, i: int = -1) -> Any:
        return json.loads(self.requests[i].content)


def backend_for(recorder: Recorder, **kwargs: Any) -> HttpBackend:
    return HttpBackend(transport=httpx.MockTransport(recorder), **kwargs)


VECTORS = np.array([[1.0, 0.0, 0.0], [1.0, 2.0, 0.5]], dtype=np.float32)


def test_base64_when_the_server_supports_it() -> None:
    rec = Recorder({"max_batch_size": 100, "supports_base64_encoding": True})
    backend_for(rec).add("c1", ["a", "b"], VECTORS, None, ["x", None], None)
    body = rec.body()
    assert body["embeddings"][0] == "AACAPwAAAAAAAAAA"
    decoded = np.frombuffer(base64.b64decode(body["embeddings"][1]), dtype="<f4")
    assert decoded.tolist() == [1.0, 2.0, 0.5]
    assert body == {**body, "ids": ["a", "b"], "documents": ["x", None], "metadatas": None}
    assert rec.requests[-1].headers["content-type"] == "application/json"


def test_number_lists_when_it_does_not() -> None:
    rec = Recorder({"max_batch_size": 100})
    backend = backend_for(rec)
    backend.upsert("c1", ["a", "b"], VECTORS, None, None, None)
    backend.update("c1", ["a"], None, [{"k": None}], None, None)
    assert rec.body(-2)["embeddings"] == [[1.0, 0.0, 0.0], [1.0, 2.0, 0.5]]
    assert rec.body()["embeddings"] is None and rec.body()["metadatas"] == [{"k": None}]
    preflights = [r for r in rec.requests if r.url.path.endswith("/pre-flight-checks")]
    assert len(preflights) == 1  # asked once per client


def test_server_batch_limit_is_respected() -> None:
    rec = Recorder({"max_batch_size": 1, "supports_base64_encoding": True})
    with pytest.raises(errors.BatchSizeExceededError, match="at most 1"):
        backend_for(rec).add("c1", ["a", "b"], VECTORS, None, None, None)
    assert not any(r.url.path.endswith("/add") for r in rec.requests)


def test_query_and_include_on_the_wire() -> None:
    rec = Recorder({})
    backend = backend_for(rec, tenant="t1", database="d1")
    result = backend.get("c9", None, {"k": 1}, None, 5, None, ["embeddings", "data"])
    request = rec.requests[-1]
    assert request.url.path == "/api/v2/tenants/t1/databases/d1/collections/c9/get"
    assert rec.body()["include"] == ["embeddings"]  # "data" exists only in the Python API
    assert rec.body()["where"] == {"k": 1} and rec.body()["limit"] == 5
    assert result["included"] == ["embeddings", "data"] and result["embeddings"].shape[0] == 0


def test_configuration_is_sent_without_local_only_values() -> None:
    rec = Recorder({})

    def answer(request: httpx.Request) -> httpx.Response:
        rec.requests.append(request)
        return httpx.Response(
            200,
            json={
                "id": "c1",
                "name": "n",
                "tenant": "t",
                "database": "d",
                "configuration_json": {},
            },
        )

    backend = HttpBackend(transport=httpx.MockTransport(answer))
    config = {"hnsw": {"space": "ip", "num_threads": 0, "ef_search": 10}, "spann": None}
    model = backend.create_collection("n", None, config, False, "t", "d")
    assert rec.body()["configuration"]["hnsw"] == {"space": "ip", "ef_search": 10}
    assert model.id == "c1" and model.configuration == {}


def test_error_bodies_that_are_not_json() -> None:
    rec = Recorder({})
    backend = backend_for(rec)
    with pytest.raises(errors.TintError, match="bad gateway"):
        backend._call("GET", "/broken")

    def empty_404(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    with pytest.raises(errors.NotFoundError, match="no such endpoint"):
        HttpBackend(transport=httpx.MockTransport(empty_404)).heartbeat()


@pytest.mark.parametrize(
    ("host", "port", "ssl", "url"),
    [
        ("localhost", 8000, False, "http://localhost:8000/api/v2"),
        ("db.example", 443, True, "https://db.example:443/api/v2"),
        ("::1", 8000, False, "http://[::1]:8000/api/v2"),
        ("https://db.example/prefix/", 8000, False, "https://db.example/prefix/api/v2"),
    ],
)
def test_base_url(host: str, port: int, ssl: bool, url: str) -> None:
    assert HttpBackend(host, port, ssl).base_url == url


# ---------------------------------------------------------------- async


def test_async_client_flow(server: TintServer) -> None:
    async def main() -> None:
        client = await AsyncHttpClient(host=server.host, port=server.port)
        async with client:
            await client.reset()
            assert await client.heartbeat() > 0
            assert await client.get_version() == tintdb.__version__
            col = await client.create_collection("async", embedding_function=None)
            assert col.name == "async" and col.metadata is None
            await col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
            results = await asyncio.gather(
                *(col.query(query_embeddings=[[1.0, 0.001 * i]], n_results=1) for i in range(30)),
                *(col.add(ids=[f"n{i}"], embeddings=[[-1.0, 0.1 * i]]) for i in range(10)),
            )
            assert all(r["ids"] == [["a"]] for r in results[:30])
            assert await col.count() == 12
            got = await col.get(ids=["b"], include=["embeddings"])
            assert got["embeddings"].tolist() == [[0.0, 1.0]]
            await col.upsert(ids=["a"], embeddings=[[2.0, 2.0]], metadatas=[{"k": 1}])
            await col.update(ids=["a"], metadatas=[{"k": 2}])
            assert (await col.get(where={"k": 2}))["ids"] == ["a"]
            assert await col.delete(ids=["a"]) == {"deleted": 1}
            assert len((await col.peek(3))["ids"]) == 3
            assert (await col.get_indexing_status()).total_ops == 11
            await col.modify(name="async2")
            assert [c.name for c in await client.list_collections()] == ["async2"]
            assert (await client.get_or_create_collection("async2")).id == col.id
            assert await client.count_collections() == 1
            with pytest.raises(errors.NotFoundError):
                await client.get_collection("missing")
            with pytest.raises(errors.InvalidDimensionException):
                await col.add(ids=["z"], embeddings=[[1.0, 2.0, 3.0]])
            await client.delete_collection("async2")
            assert await client.list_collections() == []

    asyncio.run(main())


def test_async_client_errors_at_construction(secured: TintServer) -> None:
    async def main() -> None:
        with pytest.raises(errors.AuthError):
            await AsyncHttpClient(host=secured.host, port=secured.port)
        client = await AsyncHttpClient(
            host=secured.host, port=secured.port, headers={"x-chroma-token": TOKEN}
        )
        with pytest.raises(errors.NotFoundError):
            await AsyncHttpClient(
                host=secured.host, port=secured.port, headers={"x-chroma-token": TOKEN},
                tenant="nobody",
            )  # fmt: skip
        assert await client.heartbeat() > 0
        await client.close()

    asyncio.run(main())
