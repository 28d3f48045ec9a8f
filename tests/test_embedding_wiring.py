"""Embedding functions wired into collections: defaults, persistence, mismatches, atomicity.

Uses the real default model (all-MiniLM-L6-v2 weights from the installed package).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tintdb
from tintdb.errors import EmbeddingFunctionError, InvalidArgumentError
from tintdb.utils.embedding_functions import DefaultEmbeddingFunction, OpenAIEmbeddingFunction


class Doubler:
    """A user-defined function in chromadb's shape, deterministic and tiny."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        self.calls += 1
        return [np.array([len(t), 2.0 * len(t), 1.0], dtype=np.float32) for t in input]

    @staticmethod
    def name() -> str:
        return "doubler"

    def get_config(self) -> dict[str, Any]:
        return {}


class Broken(Doubler):
    def __call__(self, input: list[str]) -> list[np.ndarray]:
        raise RuntimeError("model server is down")


def test_default_function_embeds_documents_and_queries(client: tintdb.Client) -> None:
    col = client.create_collection("texts")
    assert col.configuration["embedding_function"]["name"] == "default"
    col.add(
        ids=["cat", "car", "soup"],
        documents=["a small cat sleeps", "a fast red car", "hot tomato soup"],
    )
    emb = col.get(include=["embeddings"])["embeddings"]
    assert emb.shape == (3, 384)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    res = col.query(query_texts=["kitten napping", "automobile"], n_results=1)
    assert res["ids"] == [["cat"], ["car"]]


def test_function_is_remembered_across_reopen(client: tintdb.Client, reopen) -> None:  # type: ignore[no-untyped-def]
    client.create_collection("kept").add(ids=["a"], documents=["the moon orbits the earth"])
    client = reopen(client)
    try:
        col = client.get_collection("kept")
        assert isinstance(col.embedding_function, DefaultEmbeddingFunction)
        col.add(ids=["b"], documents=["bread needs yeast"])
        assert col.query(query_texts=["astronomy"], n_results=1)["ids"] == [["a"]]
    finally:
        client.close()


def test_a_different_function_on_get_is_refused(client: tintdb.Client) -> None:
    client.create_collection("mine")
    other = OpenAIEmbeddingFunction(api_key="k", api_base="http://127.0.0.1:9/v1")
    with pytest.raises(EmbeddingFunctionError, match=r"'default'.*'openai'"):
        client.get_collection("mine", embedding_function=other)
    with pytest.raises(EmbeddingFunctionError, match="default"):
        client.get_or_create_collection("mine", embedding_function=other)
    assert (
        client.get_collection("mine", embedding_function=DefaultEmbeddingFunction()).name == "mine"
    )


def test_user_defined_function_must_be_given_again(client: tintdb.Client, reopen) -> None:  # type: ignore[no-untyped-def]
    col = client.create_collection("custom", embedding_function=Doubler())
    col.add(ids=["x"], documents=["abc"])
    assert col.get(include=["embeddings"])["embeddings"].tolist() == [[3.0, 6.0, 1.0]]
    client = reopen(client)
    try:
        again = client.get_collection("custom", embedding_function=Doubler())
        again.add(ids=["y"], documents=["abcd"])
        assert again.count() == 2
    finally:
        client.close()


def test_update_with_new_document_re_embeds(client: tintdb.Client) -> None:
    col = client.create_collection("upd", embedding_function=Doubler())
    col.add(ids=["a", "b"], documents=["xx", "yyyy"])
    col.update(ids=["a", "b"], documents=["xxxxx", None], metadatas=[None, {"m": 1}])
    got = col.get(include=["embeddings", "documents", "metadatas"])
    assert got["documents"] == ["xxxxx", "yyyy"]
    assert got["embeddings"].tolist() == [[5.0, 10.0, 1.0], [4.0, 8.0, 1.0]]
    assert got["metadatas"] == [None, {"m": 1}]
    col.upsert(ids=["c"], documents=["zzz"])
    assert col.get(ids=["c"], include=["embeddings"])["embeddings"].tolist() == [[3.0, 6.0, 1.0]]


def test_failing_function_changes_nothing(client: tintdb.Client) -> None:
    col = client.create_collection("fails", embedding_function=Broken())
    col.add(ids=["a"], embeddings=[[1.0, 2.0, 3.0]], documents=["kept"])
    for call in (
        lambda: col.add(ids=["b"], documents=["new"]),
        lambda: col.upsert(ids=["a"], documents=["changed"]),
        lambda: col.update(ids=["a"], documents=["changed"]),
        lambda: col.query(query_texts=["q"]),
    ):
        with pytest.raises(EmbeddingFunctionError, match="model server is down"):
            call()
    got = col.get(include=["documents", "embeddings"])
    assert got["ids"] == ["a"] and got["documents"] == ["kept"]
    assert got["embeddings"].tolist() == [[1.0, 2.0, 3.0]]


class _Constant:
    """A bare callable: stored as a legacy function, which tintdb cannot rebuild."""

    def __call__(self, input: list[str]) -> list[list[float]]:
        return [[1.0, 2.0] for _ in input]


def test_no_function_means_a_clear_error(client: tintdb.Client) -> None:
    client.create_collection("bare", embedding_function=_Constant())
    col = client.get_collection("bare", embedding_function=None)
    with pytest.raises(InvalidArgumentError, match="no embedding function"):
        col.add(ids=["a"], documents=["text"])
    with pytest.raises(InvalidArgumentError, match="no embedding function"):
        col.query(query_texts=["text"])
    assert col.count() == 0


def test_document_too_long_names_its_position(tmp_path: Path) -> None:
    with tintdb.PersistentClient(str(tmp_path)) as client:
        col = client.create_collection("long")
        with pytest.raises(InvalidArgumentError, match=r"\b1\b"):
            col.add(ids=["ok", "long"], documents=["short", "word " * 400])
        assert col.count() == 0
        truncating = client.create_collection(
            "trunc", embedding_function=DefaultEmbeddingFunction(truncate=True)
        )
        truncating.add(ids=["long"], documents=["word " * 400])
        assert truncating.count() == 1


def test_progress_bar_when_asked(client: tintdb.Client, capsys: pytest.CaptureFixture[str]) -> None:
    """A caller asks for a bar through the function; without asking, nothing is printed."""
    quiet = client.create_collection("quiet")
    quiet.add(ids=["a", "b"], documents=["one text", "another text"])
    assert capsys.readouterr().err == ""
    loud = client.create_collection(
        "loud", embedding_function=DefaultEmbeddingFunction(progress=True)
    )
    loud.add(ids=["a", "b"], documents=["one text", "another text"])
    assert "Embedding" in capsys.readouterr().err
