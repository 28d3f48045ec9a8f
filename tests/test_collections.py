"""Collections, tenants, databases and the client lifecycle, on every client kind."""

from __future__ import annotations

import time
import uuid

import pytest

import tintdb
from tintdb.api.types import IndexingStatus
from tintdb.errors import (
    InvalidArgumentError,
    NotFoundError,
    ResetDisabledError,
    UniqueConstraintError,
)


def test_heartbeat_and_version(client: tintdb.Client) -> None:
    assert isinstance(client.heartbeat(), int) and client.heartbeat() > 10**18
    assert client.get_version() == tintdb.__version__


def test_create_get_list_count_delete(client: tintdb.Client) -> None:
    a = client.create_collection("alpha", embedding_function=None)
    b = client.create_collection("beta", metadata={"owner": "me"}, embedding_function=None)
    assert isinstance(a.id, uuid.UUID)
    assert a.name == "alpha" and a.metadata is None
    assert b.metadata == {"owner": "me"}
    assert client.count_collections() == 2
    assert [c.name for c in client.list_collections()] == ["alpha", "beta"]
    assert [c.name for c in client.list_collections(limit=1, offset=1)] == ["beta"]
    assert client.get_collection("beta").id == b.id
    client.delete_collection("alpha")
    assert [c.name for c in client.list_collections()] == ["beta"]
    with pytest.raises(NotFoundError, match="alpha"):
        client.get_collection("alpha")
    with pytest.raises(NotFoundError, match="alpha"):
        client.delete_collection("alpha")


def test_create_existing_raises_unique_and_get_or_create_returns_it(client: tintdb.Client) -> None:
    first = client.create_collection("dup", metadata={"v": 1}, embedding_function=None)
    with pytest.raises(UniqueConstraintError, match="dup"):
        client.create_collection("dup", embedding_function=None)
    again = client.get_or_create_collection("dup", metadata={"v": 2}, embedding_function=None)
    assert again.id == first.id
    assert again.metadata == {"v": 1}  # existing collection returned unchanged
    assert client.count_collections() == 1


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("ab", "3-63 characters"),
        ("a" * 64, "3-63 characters"),
        ("-abc", "start and end"),
        ("abc_", "start and end"),
        ("a..b", r"'\.\.'"),
        ("192.168.1.1", "IPv4"),
        ("has space", "only letters"),
        ("ünï", "only letters"),
    ],
)
def test_collection_name_rules(client: tintdb.Client, name: str, rule: str) -> None:
    with pytest.raises(InvalidArgumentError, match=rule):
        client.create_collection(name, embedding_function=None)
    assert client.count_collections() == 0


@pytest.mark.parametrize("name", ["abc", "A1-b_c.d", "x" * 63, "1.2.3", "Upper"])
def test_valid_collection_names(client: tintdb.Client, name: str) -> None:
    assert client.create_collection(name, embedding_function=None).name == name


def test_collection_metadata_rules(client: tintdb.Client) -> None:
    with pytest.raises(InvalidArgumentError, match="empty"):
        client.create_collection("abc", metadata={}, embedding_function=None)
    with pytest.raises(InvalidArgumentError, match="nested"):
        client.create_collection("abc", metadata={"a": {"b": 1}}, embedding_function=None)
    with pytest.raises(InvalidArgumentError, match="distance space"):
        client.create_collection(
            "abc", metadata={"hnsw:space": "manhattan"}, embedding_function=None
        )
    with pytest.raises(InvalidArgumentError, match="hnsw:bogus"):
        client.create_collection("abc", metadata={"hnsw:bogus": 1}, embedding_function=None)
    with pytest.raises(InvalidArgumentError, match="positive"):
        client.create_collection("abc", metadata={"hnsw:M": -3}, embedding_function=None)
    assert client.count_collections() == 0


@pytest.mark.parametrize("space", ["l2", "ip", "cosine"])
def test_space_from_metadata_or_configuration(client: tintdb.Client, space: str) -> None:
    a = client.create_collection("meta", metadata={"hnsw:space": space}, embedding_function=None)
    b = client.create_collection(
        "conf", configuration={"hnsw": {"space": space}}, embedding_function=None
    )
    assert a.configuration["hnsw"]["space"] == space
    assert b.configuration["hnsw"]["space"] == space
    assert (
        client.create_collection("dflt", embedding_function=None).configuration["hnsw"]["space"]
        == "l2"
    )


def test_modify_rename_and_metadata(client: tintdb.Client) -> None:
    col = client.create_collection(
        "old", metadata={"hnsw:space": "ip", "a": 1}, embedding_function=None
    )
    col.modify(name="new", metadata={"b": 2})
    assert col.name == "new" and col.metadata == {"b": 2}
    got = client.get_collection("new")
    assert got.metadata == {"b": 2}
    assert got.configuration["hnsw"]["space"] == "ip"  # the space survives a metadata replace
    with pytest.raises(NotFoundError):
        client.get_collection("old")


def test_modify_refuses_space_change_and_taken_name(client: tintdb.Client) -> None:
    col = client.create_collection(
        "one", metadata={"hnsw:space": "cosine"}, embedding_function=None
    )
    client.create_collection("two", embedding_function=None)
    with pytest.raises(InvalidArgumentError, match="hnsw:space"):
        col.modify(metadata={"hnsw:space": "l2"})
    with pytest.raises(UniqueConstraintError, match="two"):
        col.modify(name="two")
    with pytest.raises(InvalidArgumentError):
        col.modify(name="x")
    assert client.get_collection("one").metadata == {"hnsw:space": "cosine"}


def test_modify_search_parameters(client: tintdb.Client) -> None:
    col = client.create_collection("params", embedding_function=None)
    col.modify(configuration={"hnsw": {"ef_search": 50}})
    assert client.get_collection("params").configuration["hnsw"]["ef_search"] == 50
    with pytest.raises(InvalidArgumentError, match="fixed"):
        col.modify(configuration={"hnsw": {"space": "ip"}})


def test_indexing_status_counts_what_the_index_holds(client: tintdb.Client) -> None:
    """chromadb's get_indexing_status() (which its local server does not implement):
    nothing to index in an empty collection; after writes, every record once the graph
    has taken them (polled: they reach it behind the writes)."""
    col = client.create_collection("status", embedding_function=None)
    assert col.get_indexing_status() == IndexingStatus(0, 0, 0, 1.0)
    col.add(ids=[f"r{i}" for i in range(300)], embeddings=[[float(i), 1.0] for i in range(300)])
    col.delete(ids=["r0", "r1"])
    status = col.get_indexing_status()
    assert status.total_ops == 298
    assert status.num_indexed_ops + status.num_unindexed_ops == 298
    assert status.op_indexing_progress == status.num_indexed_ops / 298
    deadline = time.monotonic() + 60
    while status.num_unindexed_ops and time.monotonic() < deadline:
        time.sleep(0.02)
        status = col.get_indexing_status()
    assert status == IndexingStatus(298, 0, 298, 1.0)
    with pytest.raises(NotFoundError):
        client.delete_collection("status")
        col.get_indexing_status()


def test_collections_persist_across_reopen(client: tintdb.Client, reopen) -> None:  # type: ignore[no-untyped-def]
    client.create_collection("kept", metadata={"k": "v"}, embedding_function=None)
    client = reopen(client)
    try:
        assert client.get_collection("kept").metadata == {"k": "v"}
    finally:
        client.close()


def test_reset_needs_permission(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with tintdb.EphemeralClient() as c:
        c.create_collection("abc", embedding_function=None)
        with pytest.raises(ResetDisabledError, match="allow_reset"):
            c.reset()
        assert c.count_collections() == 1
    with tintdb.PersistentClient(str(tmp_path), settings=tintdb.Settings(allow_reset=True)) as c:
        col = c.create_collection("abc", embedding_function=None)
        col.add(ids=["a"], embeddings=[[1.0, 2.0]])
        assert c.reset() is True
        assert c.count_collections() == 0
        assert c.create_collection("abc", embedding_function=None).count() == 0


def test_closed_client_refuses_calls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = tintdb.PersistentClient(str(tmp_path))
    col = c.create_collection("abc", embedding_function=None)
    c.close()
    c.close()  # idempotent
    with pytest.raises(InvalidArgumentError, match="closed"):
        c.list_collections()
    with pytest.raises(InvalidArgumentError, match="closed"):
        col.count()


def test_context_manager_releases_and_reopens(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with tintdb.PersistentClient(str(tmp_path)) as c:
        c.create_collection("abc", embedding_function=None).add(ids=["x"], embeddings=[[0.5]])
    with tintdb.PersistentClient(str(tmp_path)) as c:
        assert c.get_collection("abc").count() == 1


def test_ephemeral_clients_are_separate() -> None:
    a, b = tintdb.EphemeralClient(), tintdb.EphemeralClient()
    a.create_collection("abc", embedding_function=None)
    assert b.count_collections() == 0
    assert isinstance(tintdb.Client(), tintdb.Client)


def test_tenants_and_databases(client: tintdb.Client) -> None:
    admin = tintdb.AdminClient.from_client(client)
    assert admin.get_tenant("default_tenant")["name"] == "default_tenant"
    assert [d["name"] for d in admin.list_databases()] == ["default_database"]
    admin.create_tenant("acme")
    with pytest.raises(UniqueConstraintError):
        admin.create_tenant("acme")
    admin.create_database("prod", tenant="acme")
    with pytest.raises(UniqueConstraintError):
        admin.create_database("prod", tenant="acme")
    assert admin.get_database("prod", tenant="acme")["name"] == "prod"
    with pytest.raises(NotFoundError):
        admin.get_database("nope", tenant="acme")
    with pytest.raises(NotFoundError):
        admin.get_tenant("nope")
    with pytest.raises(InvalidArgumentError):
        admin.create_tenant("ab")

    client.set_tenant("acme", "prod")
    client.create_collection("scoped", embedding_function=None)
    assert client.count_collections() == 1
    client.set_tenant("default_tenant", "default_database")
    assert client.count_collections() == 0
    with pytest.raises(NotFoundError):
        client.set_database("missing")

    admin.delete_database("prod", tenant="acme")
    assert admin.list_databases(tenant="acme") == []


def test_configuration_round_trips(client: tintdb.Client) -> None:
    """A collection's own configuration (num_threads 0 = all cores) is accepted back."""
    a = client.create_collection("first", embedding_function=None)
    b = client.create_collection("second", configuration=a.configuration, embedding_function=None)
    assert b.configuration["hnsw"] == a.configuration["hnsw"]
    a.modify(configuration=a.configuration)
    with pytest.raises(InvalidArgumentError, match="num_threads"):
        client.create_collection("third", configuration={"hnsw": {"num_threads": -1}})
