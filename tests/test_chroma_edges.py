"""Edges where code written for chromadb 1.5.9 meets tintdb, on every client kind.

Each expectation is what chromadb 1.5.9 was seen to do (embedded and through
``chroma run``), unless the docs' list of deliberate differences says otherwise:

* an empty id list is refused by ``get`` and ``delete`` (also beside a filter) and
  gives empty results from ``query``;
* ``embedding_function=None`` means "the collection's stored function, else the
  default", as LangChain relies on; a default function given yields to a different
  stored one;
* ``peek()`` lists its fields as chromadb does; empty results hold embeddings of shape
  (0,); metadata errors say "Expected metadata value to be"; ``add`` refuses a None
  metadata value;
* ``query(ids=[unknown])`` says "Error finding id"; the server answers ``GET /api/v2``
  as its heartbeat and marks errors with ``chroma-trace-id``.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from _server import TintServer

import tintdb
from tintdb.errors import InvalidArgumentError, NotFoundError
from tintdb.utils.embedding_functions import DefaultEmbeddingFunction, register_embedding_function


def _filled(client: tintdb.Client) -> tintdb.Collection:
    col = client.create_collection("edges", embedding_function=None)
    col.add(
        ids=["a", "b", "c"],
        embeddings=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
        metadatas=[{"k": "x"}, {"k": "y"}, {"k": "x"}],
        documents=["alpha", "beta", "gamma"],
    )
    return col


# ---------------------------------------------------------------- empty id lists


def test_an_empty_id_list_is_refused_by_get_and_delete(client: tintdb.Client) -> None:
    col = _filled(client)
    for call in (
        lambda: col.get(ids=[]),
        lambda: col.get(ids=[], where={"k": "x"}),
        lambda: col.delete(ids=[]),
        lambda: col.delete(ids=[], where={"k": "x"}),
        lambda: col.delete(ids=[], where_document={"$contains": "a"}),
    ):
        with pytest.raises(InvalidArgumentError, match="Expected IDs to be a non-empty list"):
            call()
    assert col.count() == 3  # nothing deleted
    assert col.delete(where={"k": "x"}) == {"deleted": 2}  # ids=None: the filter alone


def test_an_empty_id_list_queries_nothing(client: tintdb.Client) -> None:
    col = _filled(client)
    include: Any = ["embeddings", "documents", "uris", "metadatas", "distances"]
    found = col.query(query_embeddings=[[1.0, 0.0], [0.0, 1.0]], ids=[], include=include)
    assert found["ids"] == [[], []]
    for field in ("documents", "uris", "metadatas", "distances"):
        assert found[field] == [[], []]
    assert [e.shape for e in found["embeddings"]] == [(0,), (0,)]
    assert found["included"] == include


def test_an_empty_id_list_over_the_wire(http_server: TintServer) -> None:
    """What Chroma's server answers to raw requests with ``"ids": []``."""
    with tintdb.HttpClient(host=http_server.host, port=http_server.port) as client:
        client.reset()
        col = _filled(client)
        base = (
            f"{http_server.url}/api/v2/tenants/default_tenant/databases/default_database"
            f"/collections/{col.id}"
        )
        refused = httpx.post(base + "/delete", json={"ids": []})
        assert refused.status_code == 400
        assert refused.json()["error"] == "InvalidArgumentError"
        beside = httpx.post(base + "/delete", json={"ids": [], "where": {"k": "x"}})
        assert beside.json() == {"deleted": 0}
        assert httpx.post(base + "/delete", json={}).json() == {"deleted": 0}
        bad_filter = httpx.post(base + "/delete", json={"ids": [], "where": {"k": {"$bad": 1}}})
        assert bad_filter.status_code == 400
        got = httpx.post(base + "/get", json={"ids": []}).json()
        assert (got["ids"], got["documents"], got["metadatas"]) == ([], [], [])
        queried = httpx.post(base + "/query", json={"ids": [], "query_embeddings": [[1.0, 0.0]]})
        assert queried.json()["ids"] == [[]]
        assert col.count() == 3


# ---------------------------------------------------------------- embedding_function=None


class Halves:
    """A function of our own that can be rebuilt from its stored config."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, input: list[str]) -> list[list[float]]:
        return [[self.scale * len(t), self.scale * len(t) / 2] for t in input]

    @staticmethod
    def name() -> str:
        return "test-halves"

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> Halves:
        return Halves(config["scale"])


register_embedding_function(Halves)


def test_none_uses_the_stored_function(client: tintdb.Client) -> None:
    client.create_collection("halves", embedding_function=Halves(2.0))
    for col in (
        client.get_collection("halves", embedding_function=None),
        client.get_or_create_collection("halves", embedding_function=None),  # LangChain's call
        client.get_collection("halves"),
        client.get_collection("halves", embedding_function=DefaultEmbeddingFunction()),
        next(c for c in client.list_collections() if c.name == "halves"),
    ):
        col.upsert(ids=["four"], documents=["four"])
        got = col.get(ids=["four"], include=["embeddings"])["embeddings"]
        np.testing.assert_array_equal(got, [[8.0, 4.0]])
        assert col.query(query_texts=["xxxx"], n_results=1)["ids"] == [["four"]]


def test_none_on_a_collection_with_the_default_function(client: tintdb.Client) -> None:
    client.create_collection("plain")  # the default function, stored
    col = client.get_or_create_collection("plain", embedding_function=None)
    col.add(ids=["a"], documents=["the moon orbits the earth"])
    assert col.get(include=["embeddings"])["embeddings"].shape == (1, 384)
    assert col.query(query_texts=["astronomy"], n_results=1)["ids"] == [["a"]]


def test_created_with_none_embeds_with_the_default(client: tintdb.Client) -> None:
    """chromadb 1.5.9 stores no function then, yet embeds documents with its default;
    any function may be given later without a conflict."""
    col = client.create_collection("bare", embedding_function=None)
    assert col.configuration.get("embedding_function") is None
    col.add(ids=["a"], documents=["bread needs yeast"])
    assert col.get(include=["embeddings"])["embeddings"].shape == (1, 384)
    again = client.get_collection("bare", embedding_function=Halves())
    assert again.embedding_function is not None and again.embedding_function.name() == "test-halves"


def test_a_different_function_of_ones_own_is_still_refused(client: tintdb.Client) -> None:
    """Only a plain default function yields; one with options of its own is a function
    of the caller's, and a different one from the stored: an error naming both."""
    client.create_collection("halves", embedding_function=Halves())
    with pytest.raises(InvalidArgumentError, match="test-halves"):
        client.get_collection("halves", embedding_function=DefaultEmbeddingFunction(truncate=True))


# ---------------------------------------------------------------- result shapes, metadata


def test_peek_lists_fields_as_chromadb_does(client: tintdb.Client) -> None:
    col = _filled(client)
    peeked = col.peek(2)
    assert peeked["included"] == ["metadatas", "documents", "embeddings"]
    assert peeked["ids"] == ["a", "b"] and peeked["embeddings"].shape == (2, 2)


def test_empty_results_hold_flat_empty_embeddings(client: tintdb.Client) -> None:
    col = _filled(client)
    assert col.get(where={"k": "none"}, include=["embeddings"])["embeddings"].shape == (0,)
    assert col.get(ids=["missing"], include=["embeddings"])["embeddings"].shape == (0,)
    found = col.query(query_embeddings=[[1.0, 0.0]], where={"k": "none"}, include=["embeddings"])
    assert [e.shape for e in found["embeddings"]] == [(0,)]
    empty = client.create_collection("empty", embedding_function=None)
    assert empty.peek()["embeddings"].shape == (0,)
    assert col.get(ids=["a"], include=["embeddings"])["embeddings"].shape == (1, 2)


def test_metadata_errors_use_chromadbs_phrase(client: tintdb.Client) -> None:
    col = _filled(client)
    for bad in ({"nested": {"a": 1}}, {"obj": object()}, {"none": None}):
        with pytest.raises(ValueError, match="Expected metadata value to be"):
            col.add(ids=["new"], embeddings=[[1.0, 1.0]], metadatas=[bad])
    with pytest.raises(ValueError, match="Expected metadata value to be"):
        col.update(ids=["a"], metadatas=[{"nested": {"a": 1}}])
    assert col.count() == 3


def test_a_none_value_is_refused_by_add_and_deletes_in_update(client: tintdb.Client) -> None:
    col = _filled(client)
    with pytest.raises(InvalidArgumentError, match="None"):
        col.add(ids=["d"], embeddings=[[2.0, 2.0]], metadatas=[{"k": None, "j": 1}])
    assert col.get(ids=["d"])["ids"] == []
    col.update(ids=["a"], metadatas=[{"k": None}])
    col.upsert(ids=["b", "e"], embeddings=[[0.0, 1.0], [3.0, 3.0]], metadatas=[{"k": None}] * 2)
    assert col.get(ids=["a", "b", "e"])["metadatas"] == [None, None, None]


# ---------------------------------------------------------------- errors and routes


def test_unknown_query_ids_say_error_finding_id(client: tintdb.Client) -> None:
    col = _filled(client)
    with pytest.raises(NotFoundError, match="Error finding id") as raised:
        col.query(query_embeddings=[[1.0, 0.0]], ids=["a", "nope"])
    assert "nope" in str(raised.value)


def test_the_api_root_is_a_heartbeat(http_server: TintServer) -> None:
    answer = httpx.get(f"{http_server.url}/api/v2")
    assert answer.status_code == 200
    assert answer.json()["nanosecond heartbeat"] > 0


def test_errors_carry_a_trace_id(tmp_path: Any) -> None:
    with TintServer(tmp_path / "store", "--auth-token", "t0ken") as server:
        v2 = f"{server.url}/api/v2"
        token = {"x-chroma-token": "t0ken"}
        answers = [
            httpx.get(
                f"{v2}/tenants/default_tenant/databases/default_database/collections/nope",
                headers=token,
            ),
            httpx.post(f"{v2}/tenants", json={"name": "ab"}, headers=token),
            httpx.post(f"{v2}/tenants", json={}, headers=token),
            httpx.get(f"{v2}/tenants/default_tenant"),  # no token: 401 from the guard
            httpx.get(f"{v2}/no-such-route", headers=token),
        ]
        for answer in answers:
            assert answer.status_code >= 400
            assert answer.headers["chroma-trace-id"] == "0" * 32
        ok = httpx.get(f"{v2}/heartbeat")
        assert "chroma-trace-id" not in ok.headers
