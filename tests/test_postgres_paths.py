"""The PostgreSQL backend's short paths: what a node remembers of a collection between
calls (and why another node's change is never answered from it), the indexes its
filters read, and its bulk add. Each is checked against the long way's answers, on a
real PostgreSQL, with two clients on one database standing for two nodes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from _postgres import PostgresServer

import tintdb
from tintdb import _planning, _postgres, errors


@pytest.fixture
def fresh_dsn(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A new, empty database for one test."""
    name = "p_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:40].lower()
    name += f"_{time.monotonic_ns() % 10**9}"
    return postgres_server.create_database(name)


@pytest.fixture
def two_nodes(fresh_dsn: str) -> Iterator[tuple[tintdb.Client, tintdb.Client]]:
    """Two clients on one database, each with a backend of its own: two nodes."""
    with tintdb.PostgresClient(fresh_dsn) as a, tintdb.PostgresClient(fresh_dsn) as b:
        yield a, b


class _Transactions:
    """Counts the transactions the long way opens (``PostgresBackend._tx``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = _postgres.PostgresBackend._tx

        @contextlib.contextmanager
        def counted(backend: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            self.count += 1
            with original(backend, *args, **kwargs) as cur:
                yield cur

        monkeypatch.setattr(_postgres.PostgresBackend, "_tx", counted)


def _data(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def _forget(client: tintdb.Client) -> None:
    client._live_backend()._known.clear()  # type: ignore[attr-defined]


@pytest.mark.parametrize("graph", [False, True], ids=["exact", "index"])
def test_a_remembered_collection_answers_as_the_long_way(
    two_nodes: tuple[tintdb.Client, tintdb.Client],
    monkeypatch: pytest.MonkeyPatch,
    graph: bool,
) -> None:
    """The second query on a collection goes without the long way's transactions, and
    answers exactly what the long way answers, for every include and several vectors."""
    if graph:
        monkeypatch.setattr(_planning, "EXACT_BELOW", 0)
    a, _ = two_nodes
    data = _data(300)
    col = a.create_collection("remembered", embedding_function=None)
    col.add(
        ids=[f"r{i}" for i in range(300)],
        embeddings=data,
        documents=[f"doc {i}\0nul" if i % 7 == 0 else f"doc {i}" for i in range(300)],
        metadatas=[{"i": i} for i in range(300)],
        uris=[f"u{i}" for i in range(300)],
    )
    include: list[Any] = ["embeddings", "documents", "metadatas", "uris", "distances"]
    queries = data[:4] + 0.01
    long_way = col.query(query_embeddings=queries, n_results=7, include=include)
    tx = _Transactions(monkeypatch)
    for inc in (include, [], ["distances"], ["documents", "embeddings"]):
        for q in (queries, queries[:1]):
            short = col.query(query_embeddings=q, n_results=7, include=inc)
            _forget(a)
            again = col.query(query_embeddings=q, n_results=7, include=inc)
            assert tx.count == 1  # only the call after _forget took the long way
            tx.count = 0
            for field in ("ids", "documents", "metadatas", "uris", "distances"):
                assert short[field] == again[field], field  # type: ignore[literal-required]
            if "embeddings" in inc:
                for x, y in zip(short["embeddings"], again["embeddings"], strict=True):  # type: ignore[arg-type]
                    np.testing.assert_array_equal(x, y)
    assert long_way["ids"][0][0] == "r0"


def test_a_collection_deleted_on_one_node_is_not_served_from_anothers_memory(
    two_nodes: tuple[tintdb.Client, tintdb.Client],
) -> None:
    a, b = two_nodes
    col_a = a.create_collection("gone", embedding_function=None)
    col_a.add(ids=["x", "y"], embeddings=_data(2))
    col_b = b.get_collection("gone", embedding_function=None)
    assert col_b.query(query_embeddings=_data(1), n_results=2)["ids"][0]  # remembered
    assert col_b.query(query_embeddings=_data(1), n_results=2)["ids"][0]

    a.delete_collection("gone")
    with pytest.raises(errors.NotFoundError):
        col_b.query(query_embeddings=_data(1), n_results=2)

    # The same name again, other records: the old handle still finds nothing, a new
    # one the new records.
    a.create_collection("gone", embedding_function=None).add(ids=["z"], embeddings=_data(1, seed=5))
    with pytest.raises(errors.NotFoundError):
        col_b.query(query_embeddings=_data(1), n_results=2)
    fresh = b.get_collection("gone", embedding_function=None)
    assert fresh.query(query_embeddings=_data(1), n_results=2)["ids"] == [["z"]]


def test_changes_on_one_node_reach_the_next_query_on_another(
    two_nodes: tuple[tintdb.Client, tintdb.Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records added past the size where the plan moves from exact search to the index,
    records deleted, and a changed configuration, all made through node A after node B
    remembered the collection: B's next query answers from what A wrote."""
    monkeypatch.setattr(_planning, "EXACT_BELOW", 40)
    a, b = two_nodes
    data = _data(200, seed=2)
    col_a = a.create_collection("moving", embedding_function=None)
    col_a.add(ids=[str(i) for i in range(30)], embeddings=data[:30])
    col_b = b.get_collection("moving", embedding_function=None)
    col_b.query(query_embeddings=data[:1], n_results=3)  # remembered: 30 records, exact

    col_a.add(ids=[str(i) for i in range(30, 200)], embeddings=data[30:])
    got = col_b.query(query_embeddings=data[150:151], n_results=1)
    assert got["ids"] == [["150"]]

    col_a.delete(ids=["150"])
    assert "150" not in col_b.query(query_embeddings=data[150:151], n_results=5)["ids"][0]

    col_a.modify(configuration={"hnsw": {"ef_search": 300}})
    assert col_b.query(query_embeddings=data[10:11], n_results=1)["ids"] == [["10"]]
    backend = b._live_backend()  # type: ignore[attr-defined]
    assert backend._known[str(col_b.id)].ef == 300  # the change was read, not the old row

    with pytest.raises(errors.InvalidDimensionException):
        col_b.query(query_embeddings=_data(1, dim=5), n_results=1)
