"""Bad input to every public method: a specific error, and the store exactly as before."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import tintdb
from tintdb.errors import (
    DuplicateIDError,
    IDAlreadyExistsError,
    InvalidArgumentError,
    InvalidDimensionException,
    NotFoundError,
    TintError,
    UniqueConstraintError,
)


@pytest.fixture
def col(client: tintdb.Client) -> tintdb.Collection:
    c = client.create_collection("valid", embedding_function=None)
    c.add(
        ids=["a", "b"],
        embeddings=[[1.0, 2.0], [3.0, 4.0]],
        metadatas=[{"k": 1}, {"k": "two", "l": [1, 2]}],
        documents=["alpha", "beta"],
    )
    return c


def snapshot(client: tintdb.Client) -> Any:
    out = []
    for c in client.list_collections():
        got = c.get(include=["embeddings", "metadatas", "documents", "uris"])
        out.append(
            (
                c.name,
                c.metadata,
                c.configuration,
                got["ids"],
                got["embeddings"].tolist(),
                got["metadatas"],
                got["documents"],
                got["uris"],
            )
        )
    return out


BAD_RECORD_CALLS: list[tuple[str, Callable[[tintdb.Collection], Any], type[Exception], str]] = [
    ("add no ids", lambda c: c.add(ids=[], embeddings=[]), InvalidArgumentError, "non-empty"),
    ("add None ids", lambda c: c.add(ids=None, embeddings=[[1, 2]]), InvalidArgumentError, "ids"),
    ("add int id", lambda c: c.add(ids=[1], embeddings=[[1, 2]]), InvalidArgumentError, "str"),
    (
        "add empty id",
        lambda c: c.add(ids=[""], embeddings=[[1, 2]]),
        InvalidArgumentError,
        "Empty id",
    ),
    (
        "add duplicate",
        lambda c: c.add(ids=["x", "x"], embeddings=[[1, 2], [1, 2]]),
        DuplicateIDError,
        "x",
    ),
    (
        "add existing",
        lambda c: c.add(ids=["x", "a"], embeddings=[[1, 2], [1, 2]]),
        IDAlreadyExistsError,
        "a",
    ),
    (
        "add wrong dim",
        lambda c: c.add(ids=["x"], embeddings=[[1, 2, 3]]),
        InvalidDimensionException,
        "2",
    ),
    (
        "add ragged",
        lambda c: c.add(ids=["x", "y"], embeddings=[[1, 2], [1]]),
        InvalidArgumentError,
        "same length",
    ),
    (
        "add nan",
        lambda c: c.add(ids=["x", "y"], embeddings=[[1, 2], [float("nan"), 1]]),
        InvalidArgumentError,
        "NaN",
    ),
    (
        "add inf numpy",
        lambda c: c.add(ids=["x"], embeddings=np.array([[np.inf, 1.0]])),
        InvalidArgumentError,
        "NaN or infinity",
    ),
    (
        "add string in vector",
        lambda c: c.add(ids=["x"], embeddings=[[1, "2"]]),
        InvalidArgumentError,
        "numbers",
    ),
    (
        "add bool in vector",
        lambda c: c.add(ids=["x"], embeddings=[[1.0, True]]),
        InvalidArgumentError,
        "only numbers, got True",
    ),
    (
        "query None in vector",
        lambda c: c.query(query_embeddings=[[0.5, None]], n_results=1),
        InvalidArgumentError,
        "only numbers, got None",
    ),
    (
        "add count mismatch",
        lambda c: c.add(ids=["x", "y"], embeddings=[[1, 2]]),
        InvalidArgumentError,
        "counts must match",
    ),
    (
        "add metadata count",
        lambda c: c.add(ids=["x"], embeddings=[[1, 2]], metadatas=[{"a": 1}, {"a": 2}]),
        InvalidArgumentError,
        "metadatas",
    ),
    (
        "add nested metadata",
        lambda c: c.add(ids=["x"], embeddings=[[1, 2]], metadatas=[{"a": {"b": 1}}]),
        InvalidArgumentError,
        "nested",
    ),
    (
        "add bad key",
        lambda c: c.add(ids=["x"], embeddings=[[1, 2]], metadatas=[{"$a": 1}]),
        InvalidArgumentError,
        "not allowed",
    ),
    (
        "add mixed list",
        lambda c: c.add(ids=["x"], embeddings=[[1, 2]], metadatas=[{"a": [1, "b"]}]),
        InvalidArgumentError,
        "one type",
    ),
    (
        "add empty list",
        lambda c: c.add(ids=["x"], embeddings=[[1, 2]], metadatas=[{"a": []}]),
        InvalidArgumentError,
        "empty",
    ),
    (
        "add set value",
        lambda c: c.add(ids=["x"], embeddings=[[1, 2]], metadatas=[{"a": {1, 2}}]),
        InvalidArgumentError,
        "Expected metadata value to be",
    ),
    (
        "add huge int",
        lambda c: c.add(ids=["x"], embeddings=[[1, 2]], metadatas=[{"a": 2**70}]),
        InvalidArgumentError,
        "64 bits",
    ),
    (
        "add doc type",
        lambda c: c.add(ids=["x"], embeddings=[[1, 2]], documents=[5]),
        InvalidArgumentError,
        "documents",
    ),
    (
        "add images",
        lambda c: c.add(ids=["x"], embeddings=[[1, 2]], images=[np.zeros((2, 2))]),
        InvalidArgumentError,
        "images",
    ),
    (
        "add neither",
        lambda c: c.add(ids=["x"]),
        InvalidArgumentError,
        "embeddings or documents",
    ),
    (
        "upsert wrong dim",
        lambda c: c.upsert(ids=["a", "x"], embeddings=[[1, 2, 3], [1, 2, 3]]),
        InvalidDimensionException,
        "2",
    ),
    (
        "upsert nan",
        lambda c: c.upsert(ids=["a"], embeddings=[[float("inf"), 1]]),
        InvalidArgumentError,
        "NaN",
    ),
    (
        "update wrong dim",
        lambda c: c.update(ids=["a"], embeddings=[[1, 2, 3]]),
        InvalidDimensionException,
        "2",
    ),
    (
        "update bad metadata",
        lambda c: c.update(ids=["a"], metadatas=[{"k": object()}]),
        InvalidArgumentError,
        "Expected metadata value to be",
    ),
    (
        "update duplicate",
        lambda c: c.update(ids=["a", "a"], metadatas=[{"k": 1}, {"k": 2}]),
        DuplicateIDError,
        "a",
    ),
    ("delete nothing", lambda c: c.delete(), InvalidArgumentError, "needs ids"),
    (
        "delete bad where",
        lambda c: c.delete(where={"a": 1, "b": 2}),
        InvalidArgumentError,
        r"\$and",
    ),
    ("delete bad id", lambda c: c.delete(ids=[3]), InvalidArgumentError, "str"),
    ("get bad where", lambda c: c.get(where={"k": {"$bogus": 1}}), InvalidArgumentError, "bogus"),
    ("get bad limit", lambda c: c.get(limit="3"), InvalidArgumentError, "limit"),
    ("get bad offset", lambda c: c.get(offset=-2), InvalidArgumentError, "offset"),
    ("get include str", lambda c: c.get(include="documents"), InvalidArgumentError, "list"),
    (
        "get bad where_document",
        lambda c: c.get(where_document={"$regex": "("}),
        InvalidArgumentError,
        "regular expression",
    ),
    (
        "query n_results",
        lambda c: c.query(query_embeddings=[[1, 2]], n_results=-1),
        InvalidArgumentError,
        "positive",
    ),
    (
        "query n_results bool",
        lambda c: c.query(query_embeddings=[[1, 2]], n_results=True),
        InvalidArgumentError,
        "int",
    ),
    (
        "query wrong dim",
        lambda c: c.query(query_embeddings=[[1, 2, 3]]),
        InvalidDimensionException,
        "2",
    ),
    ("query empty", lambda c: c.query(query_embeddings=[]), InvalidArgumentError, "empty"),
    ("query texts type", lambda c: c.query(query_texts=[1]), InvalidArgumentError, "query_texts"),
    (
        "query unknown ids",
        lambda c: c.query(query_embeddings=[[1, 2]], ids=["zz"]),
        NotFoundError,
        "zz",
    ),
    ("peek bad", lambda c: c.peek(limit=-1), InvalidArgumentError, "limit"),
    ("modify bad name", lambda c: c.modify(name="!!"), InvalidArgumentError, "Collection name"),
    ("modify empty metadata", lambda c: c.modify(metadata={}), InvalidArgumentError, "empty"),
]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [pytest.param(c, e, m, id=label) for label, c, e, m in BAD_RECORD_CALLS],
)
def test_bad_record_calls(
    client: tintdb.Client,
    col: tintdb.Collection,
    call: Callable[[tintdb.Collection], Any],
    error: type[Exception],
    message: str,
) -> None:
    before = snapshot(client)
    with pytest.raises(error, match=message) as info:
        call(col)
    assert isinstance(info.value, TintError)
    assert snapshot(client) == before


BAD_CLIENT_CALLS: list[tuple[str, Callable[[tintdb.Client], Any], type[Exception], str]] = [
    ("create name type", lambda c: c.create_collection(5), InvalidArgumentError, "str"),
    ("create taken", lambda c: c.create_collection("valid"), UniqueConstraintError, "valid"),
    (
        "create metadata type",
        lambda c: c.create_collection("abc", metadata=[1]),
        InvalidArgumentError,
        "dict",
    ),
    (
        "create configuration key",
        lambda c: c.create_collection("abc", configuration={"hnsw": {"bogus": 1}}),
        InvalidArgumentError,
        "bogus",
    ),
    (
        "create space",
        lambda c: c.create_collection("abc", configuration={"hnsw": {"space": "hamming"}}),
        InvalidArgumentError,
        "hamming",
    ),
    ("get missing", lambda c: c.get_collection("nope"), NotFoundError, "nope"),
    ("get name type", lambda c: c.get_collection(None), InvalidArgumentError, "str"),
    ("delete missing", lambda c: c.delete_collection("nope"), NotFoundError, "nope"),
    ("list bad limit", lambda c: c.list_collections(limit=-1), InvalidArgumentError, "limit"),
    ("set missing tenant", lambda c: c.set_tenant("nobody"), NotFoundError, "nobody"),
]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [pytest.param(c, e, m, id=label) for label, c, e, m in BAD_CLIENT_CALLS],
)
def test_bad_client_calls(
    client: tintdb.Client,
    col: tintdb.Collection,
    call: Callable[[tintdb.Client], Any],
    error: type[Exception],
    message: str,
) -> None:
    before = snapshot(client)
    with pytest.raises(error, match=message):
        call(client)
    assert snapshot(client) == before
    assert client.tenant == "default_tenant"


def test_errors_keep_builtin_compatibility() -> None:
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(NotFoundError, ValueError)
    assert issubclass(IDAlreadyExistsError, ValueError)
    assert tintdb.errors.ChromaError is TintError
    assert DuplicateIDError.name() == "DuplicateID"
    assert IDAlreadyExistsError.name() == "IDAlreadyExists"
    assert InvalidDimensionException.name() == "InvalidDimension"
    assert NotFoundError("x").code() == 404
    assert UniqueConstraintError("x").code() == 409


def test_persistent_client_path_type() -> None:
    with pytest.raises(InvalidArgumentError, match="path"):
        tintdb.PersistentClient(path=42)  # type: ignore[arg-type]


def test_vectors_of_any_number_type_are_taken(col: tintdb.Collection) -> None:
    """Plain floats and ints take the fast check; numpy scalars in a list (and int
    subclasses other than bool) the slow one, and are numbers all the same."""
    col.add(
        ids=["ints", "numpy", "mixed"],
        embeddings=[[5, 6], [np.float32(0.5), np.int64(7)], [np.float64(1.5), 2]],
    )
    got = col.get(ids=["ints", "numpy", "mixed"], include=["embeddings"])
    assert got["embeddings"].tolist() == [[5.0, 6.0], [0.5, 7.0], [1.5, 2.0]]
    found = col.query(query_embeddings=[np.float32(5), 6], n_results=1, include=[])
    assert found["ids"] == [["ints"]]
