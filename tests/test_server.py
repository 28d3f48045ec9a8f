"""The REST server over real HTTP: wire shapes against captured Chroma traffic, error
bodies and statuses, auth, body limits, CORS, and the ``tintdb`` command line."""

from __future__ import annotations

import base64
import json
import math
import re
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from _profiles import examples
from _server import TintServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tintdb
from tintdb import cli

TRAFFIC = Path(__file__).resolve().parent / "fixtures" / "traffic"
TOKEN = "s3cret-token"
ORIGIN = "http://app.example"
V2 = "/api/v2"
T = V2 + "/tenants/default_tenant/databases/default_database"

COLLECTION_KEYS = {
    "id", "name", "configuration_json", "schema", "metadata", "dimension",
    "tenant", "database", "log_position", "version",
}  # fmt: skip


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TintServer]:
    """Token auth, a 1 MiB body limit, CORS for one origin, reset refused."""
    args = ("--auth-token", TOKEN, "--max-body-mb", "1", "--cors-origin", ORIGIN)
    with TintServer(tmp_path_factory.mktemp("secured"), *args) as server:
        yield server


@pytest.fixture(scope="module")
def resettable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TintServer]:
    """No auth, reset allowed: Chroma's second server in the captured traffic."""
    with TintServer(tmp_path_factory.mktemp("resettable"), "--allow-reset") as server:
        yield server


@pytest.fixture
def api(secured: TintServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured.url, headers={"x-chroma-token": TOKEN}) as c:
        yield c


@pytest.fixture
def anon(resettable: TintServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=resettable.url) as c:
        yield c


def new_collection(c: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("name", f"c-{uuid.uuid4().hex[:12]}")
    r = c.post(f"{T}/collections", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def b64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def assert_error(r: httpx.Response, status: int, name: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error", "message"} and body["message"], body
    if name is not None:
        assert body["error"] == name, body
    return body


# ---------------------------------------------------------------- captured traffic

# Where tintdb answers differently from Chroma on purpose (SPEC §3 and the wire notes).
DEVIATIONS: dict[tuple[str, int], int] = {
    ("python-client", 50): 409,  # add of an existing id: IDAlreadyExists, not a silent skip
    ("python-client", 57): 409,  # rename onto a taken name: 409, not Chroma's 500
    ("raw-probes", 38): 400,  # hnsw:space cannot change with modify
    ("raw-probes", 48): 404,  # create in a missing database: NotFound (Chroma: 400)
    ("raw-probes", 49): 200,  # list values in collection metadata: accepted (Chroma crashed)
    ("raw-probes", 60): 200,  # indexing_status is served (Chroma's local server: 500)
    ("raw-probes", 69): 409,  # add of an existing id
    ("raw-probes", 84): 400,  # duplicate ids in one add: DuplicateID (Chroma accepted them)
    ("raw-probes", 88): 400,  # where_document $contains "": refused (Chroma matched nothing)
}
# Answers whose status matches but whose data follows from an earlier deviation.
CASCADES = {("raw-probes", 40)}  # metadata kept: the hnsw:space rewrite (#38) was refused
# Error names that are more precise than Chroma's generic one (still ChromaError subclasses).
REFINED_NAMES = {("ChromaError", 409): {"UniqueConstraintError"}}

_MARKER = re.compile(r"^\.\.\.\(\+\d+ more\)$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _truncated(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and isinstance(value[-1], str)
        and bool(_MARKER.match(value[-1]))
    )


def _strip_markers(value: Any) -> Any:
    """The capture cut arrays to 3 items plus a marker: send the 3 items."""
    if isinstance(value, dict):
        return {k: _strip_markers(v) for k, v in value.items()}
    if isinstance(value, list):
        items = value[:-1] if _truncated(value) else value
        return [_strip_markers(v) for v in items]
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


# Record data: in the cut workloads it differs from the capture, so only its kind is compared.
_DATA = {
    "metadata",
    "metadatas",
    "documents",
    "embeddings",
    "distances",
    "ids",
    "uris",
    "dimension",
}


def _compare(ours: Any, theirs: Any, where: str, exact: bool, out: list[str]) -> None:
    """Collect differences of shape (and of values when ``exact``) into ``out``."""
    key = where.rsplit(".", 1)[-1]
    if key == "schema":
        return  # tintdb sends schema: null, which both clients accept
    if _kind(ours) != _kind(theirs):
        out.append(f"{where}: {_kind(ours)} != {_kind(theirs)}")
        return
    if not exact and key in _DATA:
        return
    if isinstance(theirs, dict):
        keys, their_keys = set(ours), set(theirs)
        if key == "hnsw":
            missing = their_keys - keys  # tintdb also reports num_threads and batch_size
            if missing:
                out.append(f"{where}: missing {sorted(missing)}")
        elif keys != their_keys:
            out.append(f"{where}: keys {sorted(keys)} != {sorted(their_keys)}")
        for k in keys & their_keys:
            if k not in ("id", "message", "nanosecond heartbeat", "max_batch_size"):
                _compare(ours[k], theirs[k], f"{where}.{k}", exact, out)
    elif isinstance(theirs, list):
        cut = _truncated(theirs)
        theirs = theirs[:-1] if cut else theirs
        if not cut and len(ours) != len(theirs):
            out.append(f"{where}: {len(ours)} items != {len(theirs)}")
        if theirs and all(isinstance(c, dict) and "configuration_json" in c for c in theirs):
            # Collections: Chroma lists them in UUID order, tintdb in creation order.
            by_name = {c.get("name"): c for c in ours if isinstance(c, dict)}
            for c in theirs:
                if c["name"] in by_name:
                    _compare(by_name[c["name"]], c, f"{where}[{c['name']}]", exact, out)
                elif not cut:
                    out.append(f"{where}: no collection {c['name']!r}")
            return
        for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
            _compare(a, b, f"{where}[{i}]", exact, out)
    elif exact and isinstance(theirs, float) and isinstance(ours, (int, float)):
        if not math.isclose(ours, theirs, rel_tol=1e-5, abs_tol=1e-6):
            out.append(f"{where}: {ours} != {theirs}")
    elif exact and isinstance(theirs, str) and _UUID.match(theirs):
        pass
    elif exact and ours != theirs:
        out.append(f"{where}: {ours!r} != {theirs!r}")


def _replay(name: str, servers: dict[str, TintServer], ids: dict[str, str]) -> list[str]:
    """Send every captured request of one file; return the differences found."""
    problems: list[str] = []
    exact = name == "raw-probes"  # raw probes are complete; the workloads were cut
    for line in (TRAFFIC / f"{name}.jsonl").read_text().splitlines():
        entry = json.loads(line)
        server = servers["second" if entry["server"].startswith("second") else "first"]
        path = entry["path"]
        for captured, mine in ids.items():
            path = path.replace(captured, mine)
        headers = {"x-chroma-token": TOKEN}
        request = entry["request_json"]
        content = None
        if isinstance(request, dict) and "__raw_text__" in request:
            content = request["__raw_text__"].encode()
        elif request is not None:
            content = json.dumps(_strip_markers(request)).encode()
        if content is not None or entry["method"] in ("POST", "PUT"):
            headers["content-type"] = "application/json"
        r = httpx.request(
            entry["method"], server.url + path, content=content, headers=headers, timeout=30
        )
        tag = f"{name} #{entry['seq']} {entry['label']} {entry['method']} {entry['path']}"
        if entry["label"] is None:
            continue  # clean-up of an earlier run: depends on what existed then
        expected = DEVIATIONS.get((name, entry["seq"]), entry["status"])
        if r.status_code != expected:
            problems.append(f"{tag}: status {r.status_code} != {expected}: {r.text[:300]}")
            continue
        if (name, entry["seq"]) in {*DEVIATIONS, *CASCADES} or entry["status"] is None:
            continue
        theirs = entry["response_json"]
        if theirs is None and r.status_code in (404, 405):
            # Chroma answers unknown routes and wrong methods with an empty body; tintdb
            # names the route in an error body, so that clients have a message to show.
            body = r.json()
            if set(body) != {"error", "message"} or entry["method"] not in body["message"]:
                problems.append(f"{tag}: expected an error body naming the route, got {body}")
            continue
        if theirs is None:
            if r.content:
                problems.append(f"{tag}: expected an empty body, got {r.text[:200]}")
            continue
        ours = r.json()
        if isinstance(theirs, dict) and "error" in theirs and isinstance(ours, dict):
            allowed = {theirs["error"]} | REFINED_NAMES.get((theirs["error"], r.status_code), set())
            if ours.get("error") not in allowed:
                problems.append(f"{tag}: error {ours.get('error')} not in {sorted(allowed)}")
            if set(ours) != {"error", "message"}:
                problems.append(f"{tag}: error body keys {sorted(ours)}")
            continue
        # Learn collection ids, so later paths name our collections.
        for item in theirs if isinstance(theirs, list) else [theirs]:
            if isinstance(item, dict) and "configuration_json" in item:
                mine = next(
                    (c for c in (ours if isinstance(ours, list) else [ours])
                     if c.get("name") == item["name"]),
                    None,
                )  # fmt: skip
                if mine is not None:
                    ids[item["id"]] = mine["id"]
        paged = re.search(r"[?&]offset=[1-9]", path) is not None
        if paged and isinstance(theirs, list) and len(ours) == len(theirs):
            # A page of a differently ordered list: the same size and shapes suffice.
            mine = ("name", "metadata", "dimension")
            theirs = [
                dict(c, **{k: o.get(k) for k in mine}) for c, o in zip(theirs, ours, strict=True)
            ]
        diffs: list[str] = []
        _compare(ours, theirs, "$", exact, diffs)
        problems.extend(f"{tag}: {d}" for d in diffs)
    return problems


def test_replay_captured_traffic(secured: TintServer, resettable: TintServer) -> None:
    """Every request the official clients (and the raw probes) sent to Chroma gets the
    same status and the same JSON shape from tintdb, except the deliberate deviations."""
    servers = {"first": secured, "second": resettable}
    ids: dict[str, str] = {}
    problems: list[str] = []
    for name in ("python-client", "js-client", "raw-probes"):
        problems += _replay(name, servers, ids)
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- shapes


def test_collection_object_shape(api: httpx.Client) -> None:
    ef = {"type": "known", "name": "default", "config": {}}
    created = new_collection(
        api, metadata={"hnsw:space": "cosine"}, configuration={"embedding_function": ef}
    )
    assert set(created) == COLLECTION_KEYS
    assert set(created["configuration_json"]) == {"hnsw", "spann", "embedding_function"}
    assert created["configuration_json"]["embedding_function"] == ef
    assert created["configuration_json"]["hnsw"]["space"] == "cosine"
    assert created["dimension"] is None
    assert (created["tenant"], created["database"]) == ("default_tenant", "default_database")
    assert uuid.UUID(created["id"])

    bare = new_collection(api)  # raw HTTP without a function stores none, as Chroma does
    assert bare["configuration_json"]["embedding_function"] is None
    assert bare["metadata"] is None

    r = api.post(
        f"{T}/collections/{created['id']}/add", json={"ids": ["a"], "embeddings": [[1, 2]]}
    )
    assert r.status_code == 201 and r.json() == {}
    for path in (f"/collections/{created['name']}", f"/collections/by-id/{created['id']}"):
        again = api.get(T + path).json()
        assert again["dimension"] == 2
        assert again["configuration_json"]["embedding_function"] == ef


def test_get_and_query_shapes(api: httpx.Client) -> None:
    c = new_collection(api)
    base = f"{T}/collections/{c['id']}"
    r = api.post(
        base + "/add",
        json={
            "ids": ["a", "b", "c"],
            "embeddings": [[1, 0], [0, 1], [1, 1]],
            "metadatas": [{"k": 1, "tags": ["x", "y"]}, None, {"k": 3}],
            "documents": ["apple", None, "cherry"],
        },
    )
    assert r.status_code == 201
    got = api.post(base + "/get", json={}).json()
    assert got == {
        "ids": ["a", "b", "c"],
        "embeddings": None,
        "documents": ["apple", None, "cherry"],
        "uris": None,
        "metadatas": [{"k": 1, "tags": ["x", "y"]}, None, {"k": 3}],
        "include": ["documents", "metadatas"],
    }
    got = api.post(base + "/get", json={"ids": ["c", "zz"], "include": ["embeddings", "uris"]})
    assert got.json() == {
        "ids": ["c"],
        "embeddings": [[1.0, 1.0]],
        "documents": None,
        "uris": [None],
        "metadatas": None,
        "include": ["embeddings", "uris"],
    }
    q = api.post(base + "/query", json={"query_embeddings": [[1, 0], [0, 1]], "n_results": 2})
    assert q.status_code == 200
    body = q.json()
    assert set(body) == {
        "ids", "embeddings", "documents", "uris", "metadatas", "distances", "include",
    }  # fmt: skip
    assert body["ids"] == [["a", "c"], ["b", "c"]]
    assert body["distances"] == [[0.0, 1.0], [0.0, 1.0]]
    assert body["embeddings"] is None and body["uris"] is None
    assert body["include"] == ["documents", "metadatas", "distances"]

    empty = api.post(base + "/query", json={"query_embeddings": [[1, 0]], "n_results": 0})
    assert empty.json()["ids"] == [[]] and empty.json()["distances"] == [[]]
    assert empty.json()["embeddings"] is None
    none = api.post(base + "/query", json={"query_embeddings": []})
    assert none.status_code == 200 and none.json()["ids"] == []

    assert api.get(base + "/count").json() == 3
    assert api.get(base + "/count", params={"read_level": "index_only"}).json() == 3


def test_single_clause_logic_is_accepted(api: httpx.Client) -> None:
    c = new_collection(api)
    base = f"{T}/collections/{c['id']}"
    api.post(
        base + "/add",
        json={"ids": ["a", "b"], "embeddings": [[1], [2]], "metadatas": [{"x": 1}, {"x": 2}],
              "documents": ["alpha", "beta"]},
    )  # fmt: skip
    nested = {"$or": [{"$and": [{"x": 1}]}]}
    assert api.post(base + "/get", json={"where": nested}).json()["ids"] == ["a"]
    doc = {"$and": [{"$contains": "bet"}]}
    assert api.post(base + "/get", json={"where_document": doc}).json()["ids"] == ["b"]
    r = api.post(base + "/query", json={"query_embeddings": [[0]], "where": {"$and": [{"x": 2}]}})
    assert r.json()["ids"] == [["b"]]
    deleted = api.post(base + "/delete", json={"where": {"$or": [{"x": 1}]}})
    assert deleted.json() == {"deleted": 1}


def test_delete_shapes(api: httpx.Client) -> None:
    c = new_collection(api)
    base = f"{T}/collections/{c['id']}"
    ids = [f"r{i}" for i in range(6)]
    api.post(
        base + "/add",
        json={"ids": ids, "embeddings": [[i] for i in range(6)],
              "metadatas": [{"even": i % 2 == 0} for i in range(6)]},
    )  # fmt: skip
    assert api.post(base + "/delete", json={}).json() == {"deleted": 0}
    # As Chroma's server: an empty id list alone is refused, beside a filter it selects nothing.
    assert_error(api.post(base + "/delete", json={"ids": []}), 400, "InvalidArgumentError")
    nothing = {"ids": [], "where": {"even": True}}
    assert api.post(base + "/delete", json=nothing).json() == {"deleted": 0}
    limited = api.post(base + "/delete", json={"where": {"even": True}, "limit": 2})
    assert limited.json() == {"deleted": 2}
    assert api.post(base + "/get", json={}).json()["ids"] == ["r1", "r3", "r4", "r5"]
    assert api.post(base + "/delete", json={"ids": ["r1", "nope"]}).json() == {"deleted": 1}


def test_tenants_and_databases(api: httpx.Client) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    assert api.post(f"{V2}/tenants", json={"name": tenant}).json() == {}
    assert_error(api.post(f"{V2}/tenants", json={"name": tenant}), 409)
    assert_error(api.post(f"{V2}/tenants", json={"name": "ab"}), 400, "InvalidArgumentError")
    assert_error(api.post(f"{V2}/tenants", json={}), 422, "ChromaError")
    assert api.get(f"{V2}/tenants/{tenant}").json() == {"name": tenant, "resource_name": None}
    assert_error(api.get(f"{V2}/tenants/nope-{tenant}"), 404, "NotFoundError")

    dbs = f"{V2}/tenants/{tenant}/databases"
    assert api.post(dbs, json={"name": "db1"}).json() == {}
    assert api.post(dbs, json={"name": "db2"}).json() == {}
    assert_error(api.post(dbs, json={"name": "db1"}), 409)
    listed = api.get(dbs).json()
    assert [d["name"] for d in listed] == ["db1", "db2"]
    assert all(set(d) == {"id", "name", "tenant"} and d["tenant"] == tenant for d in listed)
    assert [d["name"] for d in api.get(dbs, params={"limit": 1, "offset": 1}).json()] == ["db2"]
    one = api.get(f"{dbs}/db1").json()
    assert one == listed[0]

    coll = api.post(f"{dbs}/db1/collections", json={"name": "inside"}).json()
    assert (coll["tenant"], coll["database"]) == (tenant, "db1")
    assert api.get(f"{dbs}/db1/collections_count").json() == 1
    assert api.get(f"{T}/collections/inside").status_code == 404  # other database
    assert api.delete(f"{dbs}/db1").json() == {}
    assert_error(api.get(f"{dbs}/db1"), 404, "NotFoundError")
    assert api.get(f"{dbs}/db1/collections").json() == []  # as Chroma: [] for a missing db


def test_modify(api: httpx.Client) -> None:
    a = new_collection(api)
    b = new_collection(api)
    path = f"{T}/collections/{a['id']}"
    renamed = f"{a['name']}-x"
    assert api.put(path, json={"new_name": renamed, "new_metadata": {"v": 2}}).json() == {}
    got = api.get(f"{T}/collections/{renamed}").json()
    assert (got["id"], got["metadata"]) == (a["id"], {"v": 2})
    assert api.put(path, json={"new_configuration": {"hnsw": {"ef_search": 50}}}).status_code == 200
    assert (
        api.get(f"{T}/collections/by-id/{a['id']}").json()["configuration_json"]["hnsw"][
            "ef_search"
        ]
        == 50
    )
    body = assert_error(api.put(path, json={"new_name": b["name"]}), 409)
    assert b["name"] in body["message"]
    assert_error(api.put(path, json={"new_name": "x"}), 400, "InvalidArgumentError")


# ---------------------------------------------------------------- base64


def test_base64_embeddings_decode_exactly(api: httpx.Client) -> None:
    c = new_collection(api)
    base = f"{T}/collections/{c['id']}"
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((4, 5)).astype(np.float32)
    vectors[0] = [0.1, -3.5, 1e-8, 3.4e38, -0.0]
    encoded = [b64(v.tolist()) for v in vectors]
    assert b64([1.0, 0.0, 0.0]) == "AACAPwAAAAAAAAAA"  # the wire example
    r = api.post(base + "/add", json={"ids": list("abcd"), "embeddings": encoded})
    assert r.status_code == 201, r.text
    got = api.post(base + "/get", json={"include": ["embeddings"]}).json()["embeddings"]
    assert np.array_equal(np.array(got, dtype=np.float32), vectors)

    # update and upsert take base64 too; a query takes number arrays only
    r = api.post(base + "/update", json={"ids": ["a"], "embeddings": [b64([1, 2, 3, 4, 5])]})
    assert r.status_code == 200
    r = api.post(base + "/upsert", json={"ids": ["e"], "embeddings": [b64([5, 4, 3, 2, 1])]})
    assert r.status_code == 200
    got = api.post(base + "/get", json={"ids": ["a", "e"], "include": ["embeddings"]}).json()
    assert got["embeddings"] == [[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]]
    q = api.post(base + "/query", json={"query_embeddings": [b64([1, 2, 3, 4, 5])]})
    assert_error(q, 422, "ChromaError")


@pytest.mark.parametrize(
    ("embedding", "hint"),
    [
        ("!!notb64", "base64"),
        (base64.b64encode(b"\x00\x00\x80").decode(), "float32"),
        (b64([float("nan"), 1.0]), "NaN"),
        (b64([float("inf"), 1.0]), "NaN"),
    ],
)
def test_bad_base64_is_400(api: httpx.Client, embedding: str, hint: str) -> None:
    c = new_collection(api)
    r = api.post(f"{T}/collections/{c['id']}/add", json={"ids": ["a"], "embeddings": [embedding]})
    assert hint in assert_error(r, 400, "InvalidArgumentError")["message"]
    assert api.get(f"{T}/collections/{c['id']}/count").json() == 0


# ---------------------------------------------------------------- errors


def test_error_statuses(api: httpx.Client) -> None:
    c = new_collection(api)
    base = f"{T}/collections/{c['id']}"
    missing = f"{T}/collections/{uuid.uuid4()}"
    api.post(base + "/add", json={"ids": ["a"], "embeddings": [[1, 2, 3]]})
    cases: list[tuple[httpx.Response, int, str]] = [
        (api.post(f"{T}/collections", json={"name": c["name"]}), 409, "UniqueConstraintError"),
        (api.get(f"{T}/collections/nope-nope"), 404, "NotFoundError"),
        (api.delete(f"{T}/collections/nope-nope"), 404, "NotFoundError"),
        (api.post(missing + "/get", json={}), 404, "NotFoundError"),
        (api.get(missing + "/count"), 404, "NotFoundError"),
        (api.put(missing, json={"new_name": "abc"}), 404, "NotFoundError"),
        (api.post(f"{T}/collections/{c['name']}/get", json={}), 400, "InvalidArgumentError"),
        (api.get(f"{T}/collections/by-id/{c['name']}"), 400, "InvalidArgumentError"),
        (api.post(base + "/add", json={"ids": ["a"], "embeddings": [[1, 2, 3]]}), 409,
         "IDAlreadyExists"),
        (api.post(base + "/add", json={"ids": ["b", "b"], "embeddings": [[1, 2, 3]] * 2}), 400,
         "DuplicateID"),
        (api.post(base + "/add", json={"ids": ["b"], "embeddings": [[1, 2]]}), 400,
         "InvalidArgumentError"),
        (api.post(base + "/query", json={"query_embeddings": [[1, 2]]}), 400,
         "InvalidArgumentError"),
        (api.post(base + "/add", json={"ids": ["b"]}), 422, "ChromaError"),
        (api.post(base + "/add", json={"embeddings": [[1, 2, 3]]}), 422, "ChromaError"),
        (api.post(base + "/add", json={"ids": ["b"], "embeddings": None, "documents": ["x"]}),
         400, "InvalidArgumentError"),
        (api.post(base + "/get", json={"include": ["bogus"]}), 422, "ChromaError"),
        (api.post(base + "/get", json={"limit": -1}), 422, "ChromaError"),
        (api.post(base + "/get", json={"where": {}}), 400, "InvalidArgumentError"),
        (api.post(base + "/get", json={"where": {"a": 1, "b": 2}}), 400, "InvalidArgumentError"),
        (api.post(base + "/get", json={"where_document": {"$foo": "x"}}), 400,
         "InvalidArgumentError"),
        (api.post(base + "/query", json={"n_results": 1}), 422, "ChromaError"),
        (api.post(base + "/get", content=b"{not json"), 400, "InvalidArgumentError"),
        (api.post(base + "/get", content=b"[1, 2]"), 422, "ChromaError"),
        (api.post(f"{T}/collections", json={"name": "abc", "metadata": {}}), 400,
         "InvalidArgumentError"),
        (api.post(f"{T}/collections", json={"name": "a!"}), 400, "InvalidArgumentError"),
        (api.post(f"{V2}/tenants/default_tenant/databases/nodb/collections", json={"name": "abc"}),
         404, "NotFoundError"),
        (api.get(f"{T}/collections", params={"limit": "many"}), 422, "ChromaError"),
    ]  # fmt: skip
    for response, status, name in cases:
        assert_error(response, status, name)


def test_precise_error_name_travels_in_a_header(api: httpx.Client) -> None:
    """Chroma's wire name in the body (for chromadb code), tintdb's in a header."""
    c = new_collection(api)
    base = f"{T}/collections/{c['id']}"
    api.post(base + "/add", json={"ids": ["a"], "embeddings": [[1, 2, 3]]})
    r = api.post(base + "/add", json={"ids": ["b"], "embeddings": [[1, 2]]})
    assert r.json()["error"] == "InvalidArgumentError"
    assert r.headers["x-tintdb-error"] == "InvalidDimension"


def test_list_metadata_on_a_collection_is_not_a_500(api: httpx.Client) -> None:
    r = api.post(f"{T}/collections", json={"name": f"lm-{uuid.uuid4().hex[:8]}",
                                           "metadata": {"x": [1, 2]}})  # fmt: skip
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        assert r.json()["metadata"] == {"x": [1, 2]}


def test_routes_and_methods(anon: httpx.Client) -> None:
    for path in ("/", f"{V2}/nope", f"{V2}/heartbeat/"):
        r = anon.get(path)
        assert r.status_code == 404
        assert r.json() == {
            "error": "NotFoundError",
            "message": f"No such route: GET {path} (see /openapi.json)",
        }
    r = anon.delete(f"{V2}/heartbeat")
    assert r.status_code == 405 and "GET" in r.headers["allow"]
    assert r.json() == {
        "error": "ChromaError",
        "message": f"Method not allowed: DELETE {V2}/heartbeat; allowed: GET",
    }
    r = anon.get("/api/v1/heartbeat")
    assert r.status_code == 410
    assert r.json() == {
        "error": "Unimplemented",
        "message": "The v1 API is deprecated. Please use /v2 apis",
    }
    assert anon.post("/api/v1/collections", json={"name": "x"}).status_code == 405
    assert anon.get(f"{V2}/openapi.json").status_code == 404
    spec = anon.get("/openapi.json").json()
    assert any(p.endswith("/query") for p in spec["paths"])
    assert anon.get(f"{V2}/healthcheck").json() == {
        "is_executor_ready": True,
        "is_log_client_ready": True,
    }
    assert anon.get(f"{V2}/pre-flight-checks").json() == {
        "max_batch_size": 100_000,
        "supports_base64_encoding": True,
    }


def test_reset(anon: httpx.Client, api: httpx.Client) -> None:
    assert_error(api.post(f"{V2}/reset"), 403, "ChromaError")
    new_collection(anon)
    r = anon.post(f"{V2}/reset", headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json() is True
    assert anon.get(f"{T}/collections").json() == []
    assert anon.get(f"{V2}/tenants/default_tenant").status_code == 200
    assert anon.get(T).json()["id"] == "00000000-0000-0000-0000-000000000000"


# Valid JSON of any shape where the server expects something else: never a 500.
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = [
    "ids", "embeddings", "metadatas", "documents", "uris", "where", "where_document",
    "include", "limit", "offset", "n_results", "query_embeddings", "name", "metadata",
    "configuration", "get_or_create", "new_name", "new_metadata", "new_configuration",
]  # fmt: skip


@settings(
    max_examples=examples(150),
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    op=st.sampled_from(["add", "update", "upsert", "delete", "get", "query", "PUT", "create"]),
    body=st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=4),
)
def test_no_request_body_gives_a_500(api: httpx.Client, op: str, body: dict[str, Any]) -> None:
    coll = api.get(f"{T}/collections/fuzz-target")
    if coll.status_code == 404:
        coll = api.post(f"{T}/collections", json={"name": "fuzz-target"})
        api.post(
            f"{T}/collections/{coll.json()['id']}/add",
            json={"ids": ["a", "b"], "embeddings": [[1, 2], [3, 4]]},
        )
    base = f"{T}/collections/{coll.json()['id']}"
    if op == "create":
        r = api.post(f"{T}/collections", json=body)
    elif op == "PUT":
        body.pop("new_name", None)  # renaming the target would break later examples
        r = api.put(base, json=body)
    else:
        r = api.post(f"{base}/{op}", json=body)
    assert r.status_code < 500, (op, body, r.text)
    if r.status_code >= 400:
        assert set(r.json()) == {"error", "message"}


# ---------------------------------------------------------------- the guard


def test_auth(secured: TintServer) -> None:
    url = secured.url + f"{T}/collections"
    assert_error(httpx.get(url), 401, "AuthError")
    assert_error(httpx.get(url, headers={"x-chroma-token": "wrong"}), 401)
    assert_error(httpx.get(url, headers={"Authorization": f"Basic {TOKEN}"}), 401)
    assert_error(httpx.get(url, headers={"Authorization": "Bearer"}), 401)
    assert httpx.get(url, headers={"x-chroma-token": TOKEN}).status_code == 200
    assert httpx.get(url, headers={"X-Chroma-Token": TOKEN}).status_code == 200
    assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert httpx.get(url, headers={"authorization": f"bearer {TOKEN}"}).status_code == 200
    for open_path in ("/heartbeat", "/version", "/pre-flight-checks", "/healthcheck"):
        assert httpx.get(secured.url + V2 + open_path).status_code == 200
    assert_error(httpx.get(secured.url + f"{V2}/auth/identity"), 401)
    # a rejected request is never read, however large
    assert_error(httpx.post(url, content=b"x" * 3_000_000), 401)


def test_content_type(api: httpx.Client) -> None:
    url = f"{V2}/tenants"
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        r = api.post(url, content=b'{"name": "abcd"}', headers={"content-type": ctype})
        body = assert_error(r, 415, "ChromaError")
        assert "application/json" in body["message"]
    name = f"ct-{uuid.uuid4().hex[:8]}"
    r = api.post(url, content=json.dumps({"name": name}).encode(), headers={"content-type": ""})
    assert r.status_code == 200  # no Content-Type is taken as JSON
    r = api.post(
        url,
        content=json.dumps({"name": name + "x"}).encode(),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 200


def test_body_size_limit(api: httpx.Client) -> None:
    c = new_collection(api)
    url = f"{T}/collections/{c['id']}/add"
    big = {"ids": [f"id{i}" for i in range(40_000)], "embeddings": [[0.5] * 4] * 40_000}
    payload = json.dumps(big).encode()
    assert len(payload) > 1024 * 1024
    body = assert_error(api.post(url, content=payload), 413)
    assert "--max-body-mb" in body["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    assert_error(api.post(url, content=chunks()), 413)
    assert api.get(f"{T}/collections/{c['id']}/count").json() == 0
    small = {"ids": ["a"], "embeddings": [[0.5] * 4]}
    assert api.post(url, json=small).status_code == 201


def test_cors(secured: TintServer) -> None:
    url = secured.url + f"{T}/collections"
    preflight = httpx.options(
        url,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-chroma-token",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    denied = httpx.options(
        url, headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in denied.headers
    r = httpx.get(url, headers={"Origin": ORIGIN, "x-chroma-token": TOKEN})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    # the browser can read an auth failure too
    r = httpx.get(url, headers={"Origin": ORIGIN})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ORIGIN


def test_no_cors_by_default(anon: httpx.Client) -> None:
    r = anon.get(f"{T}/collections", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in r.headers


# ---------------------------------------------------------------- the command line


def test_cli_flags_and_environment() -> None:
    args = cli.build_parser({}).parse_args(["run"])
    assert (args.path, args.host, args.port) == ("./tintdb_data", "127.0.0.1", 8000)
    assert (args.auth_token, args.allow_reset, args.cors_origins) == (None, False, None)
    assert args.max_body_mb == 256

    env = {
        "TINTDB_PATH": "/data", "TINTDB_HOST": "0.0.0.0", "TINTDB_PORT": "9000",
        "TINTDB_AUTH_TOKEN": "t", "TINTDB_ALLOW_RESET": "yes",
        "TINTDB_CORS_ORIGINS": "http://a.example, http://b.example", "TINTDB_MAX_BODY_MB": "8",
    }  # fmt: skip
    args = cli.build_parser(env).parse_args(["run"])
    cli._check_run_args(args)
    assert (args.path, args.host, args.port, args.auth_token) == ("/data", "0.0.0.0", 9000, "t")
    assert args.allow_reset is True and args.max_body_mb == 8
    assert args.cors_origins == ["http://a.example", "http://b.example"]

    args = cli.build_parser(env).parse_args(
        ["run", "--port", "1234", "--cors-origin", "*", "--path", "here"]
    )
    cli._check_run_args(args)
    assert (args.port, args.cors_origins, args.path) == (1234, ["*"], "here")


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["run", "--port", "70000"], {}),
        (["run", "--max-body-mb", "0"], {}),
        (["run"], {"TINTDB_ALLOW_RESET": "maybe"}),
        (["run"], {"TINTDB_PORT": "eighty"}),
        (["run", "--auth-token", " "], {}),
    ],
)
def test_cli_usage_errors(
    argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.startswith("tintdb: error:")


def test_cli_port_in_use(secured: TintServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--port", str(secured.port), "--path", str(secured.path)]) == 2
    assert "--port" in capsys.readouterr().err


def test_banner_says_where_and_how() -> None:
    text = cli.banner(
        version="9.9", path=Path("/srv/data"), host="0.0.0.0", port=8123, auth=True,
        allow_reset=False, cors_origins=[], max_body_mb=256,
    )  # fmt: skip
    assert "/srv/data" in text
    assert 'tintdb.HttpClient(host="localhost", port=8123' in text
    assert 'new ChromaClient({ host: "localhost", port: 8123' in text
    assert "x-chroma-token" in text and TOKEN not in text


def test_server_banner_and_graceful_stop(tmp_path: Path) -> None:
    server = TintServer(tmp_path / "data", env={"TINTDB_ALLOW_RESET": "1"})
    with server:
        assert str((tmp_path / "data").resolve()) in server.output()
        assert "reset:       allowed" in server.output()
        c = httpx.post(server.url + f"{T}/collections", json={"name": "kept"}).json()
        httpx.post(
            server.url + f"{T}/collections/{c['id']}/add",
            json={"ids": ["a"], "embeddings": [[1, 2]]},
        )
    assert server.stop() == 0
    assert "stopped" in server.output()
    with TintServer(tmp_path / "data") as again:  # the data outlives the process
        r = httpx.get(again.url + f"{T}/collections/kept")
        assert r.status_code == 200 and r.json()["dimension"] == 2


def test_cli_vacuum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["vacuum", "--path", str(tmp_path / "none")]) == 2
    store = tmp_path / "store"
    with tintdb.PersistentClient(str(store)) as client:
        col = client.create_collection("big", embedding_function=None)
        col.add(ids=[str(i) for i in range(3000)], embeddings=np.ones((3000, 64)))
        col.delete(ids=[str(i) for i in range(2900)])
    capsys.readouterr()
    assert cli.main(["vacuum", "--path", str(store)]) == 0
    assert "vacuumed" in capsys.readouterr().out
    with tintdb.PersistentClient(str(store)) as client:
        assert client.get_collection("big", embedding_function=None).count() == 100


def test_app_over_a_client_in_process() -> None:
    """``create_app`` also takes a Client; either auth header may carry the token."""
    from fastapi.testclient import TestClient

    from tintdb.server import create_app

    app = create_app(tintdb.EphemeralClient(), auth_token="t0ken", allow_reset=True)
    with TestClient(app) as http:
        both = {"x-chroma-token": "stale", "Authorization": "Bearer t0ken"}
        assert http.get(f"{T}/collections", headers=both).json() == []
        assert http.get(f"{T}/collections").status_code == 401
        r = http.post(f"{V2}/reset", headers={"x-chroma-token": "t0ken"})
        assert r.status_code == 200 and r.json() is True
