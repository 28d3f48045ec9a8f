"""Filtered reads see every write, including writes that leave the vectors alone.

The records a filter matches are cached per collection version; every write, a
metadata-only or document-only ``update`` included, must make a new version, here and
in any other process on the same store. Each test first runs the filter (so that its
matches are cached), then changes what it matches without touching a vector, then
reads again with ``get(where)``, ``query(where)`` and ``where_document``.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
from _profiles import examples
from _server import TintServer
from hypothesis import given, settings
from hypothesis import strategies as st

import tintdb

VECS = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]


def _filled(client: tintdb.Client) -> tintdb.Collection:
    col = client.create_collection("fresh", embedding_function=None)
    col.add(
        ids=["id1", "id2", "id3"],
        embeddings=VECS,
        metadatas=[
            {"k": "x", "tags": ["red", "blue"]},
            {"k": "x", "tags": ["blue"]},
            {"k": "z", "tags": ["green"]},
        ],
        documents=["an apple a day", "bananas are yellow", "cherries are red"],
    )
    return col


def _matches(col: tintdb.Collection, where: Any = None, where_document: Any = None) -> set[str]:
    """The ids a filter matches, by get and by query (which must agree)."""
    got = set(col.get(where=where, where_document=where_document)["ids"])
    found = col.query(
        query_embeddings=[[1.0, 0.0]], n_results=10, where=where, where_document=where_document
    )
    assert set(found["ids"][0]) == got
    return got


def test_metadata_update_is_seen_by_filters(client: tintdb.Client) -> None:
    col = _filled(client)
    assert _matches(col, {"k": "x"}) == {"id1", "id2"}
    assert _matches(col, {"k": "y"}) == set()
    col.update(ids=["id1"], metadatas=[{"k": "y"}])
    assert _matches(col, {"k": "x"}) == {"id2"}
    assert _matches(col, {"k": "y"}) == {"id1"}
    col.upsert(ids=["id2"], embeddings=[VECS[1]], metadatas=[{"k": "y"}])
    assert _matches(col, {"k": "y"}) == {"id1", "id2"}
    col.update(ids=["id2"], metadatas=[{"k": None}])  # a None value deletes the key
    assert _matches(col, {"k": "y"}) == {"id1"}
    assert _matches(col, {"k": {"$ne": "y"}}) == {"id2", "id3"}


def test_list_metadata_update_is_seen_by_contains(client: tintdb.Client) -> None:
    col = _filled(client)
    assert _matches(col, {"tags": {"$contains": "blue"}}) == {"id1", "id2"}
    col.update(ids=["id2"], metadatas=[{"tags": ["green"]}])
    assert _matches(col, {"tags": {"$contains": "blue"}}) == {"id1"}
    assert _matches(col, {"tags": {"$contains": "green"}}) == {"id2", "id3"}
    assert _matches(col, {"tags": {"$not_contains": "green"}}) == {"id1"}


def test_document_update_is_seen_by_where_document(client: tintdb.Client) -> None:
    col = _filled(client)
    assert _matches(col, where_document={"$contains": "apple"}) == {"id1"}
    # New documents are re-embedded: with the vectors given, the call stores them as is.
    col.update(ids=["id1"], documents=["a pear a day"], embeddings=[VECS[0]])
    assert _matches(col, where_document={"$contains": "apple"}) == set()
    assert _matches(col, where_document={"$contains": "pear"}) == {"id1"}
    assert _matches(col, {"k": "x"}, {"$contains": "pear"}) == {"id1"}


def test_document_only_update_over_the_wire(http_server: TintServer) -> None:
    """Chroma's clients send a document-only update without vectors, and the server
    stores the documents as they are; filters must see them at once."""
    with tintdb.HttpClient(host=http_server.host, port=http_server.port) as client:
        client.reset()
        col = _filled(client)
        assert _matches(col, where_document={"$contains": "banana"}) == {"id2"}
        url = (
            f"{http_server.url}/api/v2/tenants/default_tenant/databases/default_database"
            f"/collections/{col.id}/update"
        )
        answer = httpx.post(url, json={"ids": ["id2"], "documents": ["plums are purple"]})
        assert answer.status_code == 200, answer.text
        assert _matches(col, where_document={"$contains": "banana"}) == set()
        assert _matches(col, where_document={"$contains": "plums"}) == {"id2"}
        answer = httpx.post(url, json={"ids": ["id3"], "metadatas": [{"k": "x"}]})
        assert answer.status_code == 200, answer.text
        assert _matches(col, {"k": "x"}) == {"id1", "id2", "id3"}


UPDATE_IN_ANOTHER_PROCESS = """
import sys
import tintdb

client = tintdb.PersistentClient(path=sys.argv[1])
col = client.get_collection("fresh", embedding_function=None)
col.update(ids=["id1"], metadatas=[{"k": "y", "tags": ["gold"]}])
col.update(ids=["id3"], metadatas=[{"k": "x"}])
client.close()
"""


def test_update_in_another_process_is_seen(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with tintdb.PersistentClient(path=str(store)) as client:
        col = _filled(client)
        assert _matches(col, {"k": "x"}) == {"id1", "id2"}
        assert _matches(col, {"tags": {"$contains": "gold"}}) == set()
        script = tmp_path / "update.py"
        script.write_text(textwrap.dedent(UPDATE_IN_ANOTHER_PROCESS))
        done = subprocess.run(
            [sys.executable, str(script), str(store)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        assert _matches(col, {"k": "x"}) == {"id2", "id3"}
        assert _matches(col, {"k": "y"}) == {"id1"}
        assert _matches(col, {"tags": {"$contains": "gold"}}) == {"id1"}


def test_metadata_updates_keep_the_change_log_small(tmp_path: Path) -> None:
    """Each write makes a new version, but consecutive metadata-only writes share one
    log entry: the log does not grow with them."""
    with tintdb.PersistentClient(path=str(tmp_path)) as client:
        col = _filled(client)
        for i in range(50):
            col.update(ids=["id1"], metadatas=[{"n": i}])
        assert col.get(where={"n": 49})["ids"] == ["id1"]
    with sqlite3.connect(tmp_path / "tintdb.sqlite3") as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM ops ORDER BY lsn")]
    assert len(kinds) <= 2  # the add (unless a snapshot pruned it) and one touch


OPS = st.lists(
    st.tuples(
        st.sampled_from(["meta", "doc", "vector", "get", "query"]),
        st.sampled_from(["id1", "id2", "id3"]),
        st.sampled_from(["x", "y", "z"]),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=examples(40), deadline=None)
@given(ops=OPS)
def test_filtered_reads_follow_any_write_sequence(ops: list[Any]) -> None:
    """Random metadata, document and vector updates between filtered reads agree with
    a plain dict of what was written."""
    with tintdb.EphemeralClient() as client:
        col = _filled(client)
        meta = {"id1": "x", "id2": "x", "id3": "z"}
        docs = {"id1": "an apple a day", "id2": "bananas are yellow", "id3": "cherries are red"}
        for op, rid, value in ops:
            if op == "meta":
                col.update(ids=[rid], metadatas=[{"k": value}])
                meta[rid] = value
            elif op == "doc":
                col.update(ids=[rid], documents=[f"word {value}"], embeddings=[VECS[0]])
                docs[rid] = f"word {value}"
            elif op == "vector":
                col.update(ids=[rid], embeddings=[VECS[2]])
            else:
                expected = {r for r, v in meta.items() if v == value}
                assert _matches(col, {"k": value}) == expected
                with_doc = {r for r, d in docs.items() if f"word {value}" in d}
                assert _matches(col, where_document={"$contains": f"word {value}"}) == with_doc
