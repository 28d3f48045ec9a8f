"""Odd and hostile input, embedded and over HTTP: every string is kept exactly, no
pattern can stall anything, and every client mistake is a clear error.

The regressions at the end are the findings of a fuzzing and probing run against
``tintdb run``: a NUL inside an id touched another record, one ``$regex`` froze the
server, and several client mistakes answered 500.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from _model import Model, ModelError
from _profiles import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_filter_properties import assert_query, assert_records, assert_same_state

import tintdb
from tintdb import _filters, _regex
from tintdb._local import LocalBackend
from tintdb.errors import InvalidArgumentError, NotFoundError
from tintdb.server import create_app

_names = itertools.count()

# ---------------------------------------------------------------- strings are exact

# Characters that have broken string handling somewhere: NUL (C strings, SQLite's
# JSON functions), lone surrogates (not encodable), quotes and backslashes (JSON, FTS5
# phrases), and the rest of Unicode, astral planes included.
_SPECIAL = st.sampled_from(["\x00", "\ud800", "\udfff", '"', "\\", "a", "b", "%", "é", "😀"])
chars = st.one_of(_SPECIAL, _SPECIAL, st.integers(0, 0x10FFFF).map(chr))
texts = st.text(chars, min_size=1, max_size=5)


def _encodable(*values: Any) -> bool:
    """False when any string anywhere in ``values`` holds a lone surrogate."""
    for value in values:
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(value, dict):
            if not _encodable(*value.keys(), *value.values()):
                return False
        elif isinstance(value, (list, tuple)) and not _encodable(*value):
            return False
    return True


@st.composite
def id_sets(draw: st.DrawFn) -> list[str]:
    """Distinct ids, among them ones that differ only after a NUL ("a", "a\\0b")."""
    base = draw(st.lists(texts, min_size=1, max_size=4, unique=True))
    cut = [b + "\x00" + draw(texts) for b in base[:2]]
    return list(dict.fromkeys(base + cut + [b.split("\x00")[0] or "x" for b in base]))


@st.composite
def string_histories(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(id_sets())
    n = len(ids)
    keys = draw(st.lists(texts.filter(lambda k: k[0] not in "#$"), min_size=1, max_size=3))
    return {
        "ids": ids,
        "keys": keys,
        "documents": draw(st.lists(st.one_of(st.none(), texts), min_size=n, max_size=n)),
        "values": draw(st.lists(texts, min_size=n, max_size=n)),
        "picks": draw(
            st.lists(
                st.lists(st.sampled_from(ids), min_size=1, unique=True), min_size=5, max_size=5
            )
        ),
        "new_documents": draw(st.lists(texts, min_size=n, max_size=n)),
        "needle": draw(texts),
    }


def _check_refused(call: Any, col: tintdb.Collection, model: Model) -> None:
    """A call holding a lone surrogate is refused and changes nothing."""
    with pytest.raises(InvalidArgumentError):
        call()
    assert_same_state(model, col)


def _both(model_call: Any, col_call: Any) -> Any:
    """Run one call on the model and on tintdb; both refuse it or both answer."""
    try:
        want = model_call()
    except ModelError:
        with pytest.raises(InvalidArgumentError):
            col_call()
        return None, None
    return want, col_call()


@settings(
    max_examples=examples(25),
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(h=string_histories())
def test_strings_are_stored_and_matched_exactly(client: tintdb.Client, h: dict[str, Any]) -> None:
    """Ids, metadata keys and values and documents from the whole of Unicode: get,
    delete, update, upsert and query touch exactly the records they name."""
    col = client.create_collection(f"strings-{next(_names)}", embedding_function=None)
    model = Model("l2")
    ids = h["ids"]
    n = len(ids)
    embeddings = [[float(i), 1.0] for i in range(n)]
    key = h["keys"][0]
    metadatas = [{k: v for k in h["keys"]} for v in h["values"]]
    args = {
        "ids": ids,
        "embeddings": embeddings,
        "metadatas": metadatas,
        "documents": h["documents"],
    }
    if not _encodable(ids, metadatas, h["documents"]):
        _check_refused(lambda: col.add(**args), col, model)
        return
    model.add(**args)
    col.add(**args)
    assert_same_state(model, col)

    pick_get, pick_update, pick_upsert, pick_query, pick_delete = h["picks"]
    got = col.get(ids=pick_get, include=["metadatas", "documents"])
    want = model.get(ids=pick_get)
    assert sorted(got["ids"]) == sorted(want)
    assert_records(model, got["ids"], got)

    value = h["values"][0]
    want, got = _both(lambda: model.get(where={key: value}), lambda: col.get(where={key: value}))
    if want is not None:
        assert got["ids"] == want
    needle = h["needle"]
    if _encodable(needle):
        for op in ("$contains", "$not_contains"):
            where_document = {op: needle}
            want = model.get(where_document=where_document)
            assert col.get(where_document=where_document)["ids"] == want, (op, needle)
        want = model.get(where={key: {"$in": [value, needle]}})
        assert col.get(where={key: {"$in": [value, needle]}})["ids"] == want
    else:
        _check_refused(lambda: col.get(where_document={"$contains": needle}), col, model)
        _check_refused(lambda: col.get(where={key: {"$in": [needle]}}), col, model)

    docs = h["new_documents"][: len(pick_update)]
    model.update(ids=pick_update, documents=docs)
    col.update(
        ids=pick_update,
        embeddings=[model.records[i].embedding.tolist() for i in pick_update],
        documents=docs,
    )
    assert_same_state(model, col)

    fresh = [i + "\x00new" for i in pick_upsert]
    upsert_ids = list(dict.fromkeys(pick_upsert + fresh))
    vectors = [[float(k), -1.0] for k in range(len(upsert_ids))]
    model.upsert(ids=upsert_ids, embeddings=vectors)
    col.upsert(ids=upsert_ids, embeddings=vectors)
    assert_same_state(model, col)

    ranking = model.query([[0.0, 0.0]], n_results=len(model.records), ids=pick_query)
    got = col.query(
        query_embeddings=[[0.0, 0.0]],
        n_results=len(model.records),
        ids=pick_query,
        include=["distances", "metadatas", "documents"],
    )
    assert_query(model, got, ranking, len(model.records))

    model.delete(ids=pick_delete)
    col.delete(ids=pick_delete)
    assert_same_state(model, col)
    client.delete_collection(col.name)


def test_lone_surrogates_are_refused_everywhere(client: tintdb.Client) -> None:
    col = client.create_collection("surrogates", embedding_function=None)
    col.add(ids=["a"], embeddings=[[1.0, 0.0]], documents=["doc"], metadatas=[{"k": "v"}])
    bad = "x\ud800"
    calls = [
        lambda: col.add(ids=[bad], embeddings=[[1.0, 1.0]]),
        lambda: col.upsert(ids=["b"], embeddings=[[1.0, 1.0]], documents=[bad]),
        lambda: col.update(ids=["a"], metadatas=[{bad: 1}]),
        lambda: col.update(ids=["a"], metadatas=[{"k": bad}]),
        lambda: col.add(ids=["c"], embeddings=[[1.0, 1.0]], uris=[bad]),
        lambda: col.get(ids=[bad]),
        lambda: col.delete(ids=[bad]),
        lambda: col.get(where={"k": bad}),
        lambda: col.get(where={bad: "v"}),
        lambda: col.get(where_document={"$contains": bad}),
        lambda: col.get(where_document={"$regex": bad}),
        lambda: col.query(query_embeddings=[[1.0, 0.0]], where={"k": {"$in": [bad]}}),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError, match="not valid Unicode"):
            call()
    got = col.get(include=["documents", "metadatas"])
    assert got["ids"] == ["a"] and got["documents"] == ["doc"] and got["metadatas"] == [{"k": "v"}]


# ---------------------------------------------------------------- regex: no pattern stalls

LONG = 20_000
CATASTROPHIC = {
    # pattern: ids it matches among "ends_a" (only a's), "ends_bang" (a's then "!"), "b"
    r"(a+)+$": {"ends_a"},
    r"(a|aa)+$": {"ends_a"},
    r"(a|a?)+$": {"ends_a", "ends_bang", "b"},  # matches the empty end of every text
    r"^(a+)+$": {"ends_a"},
    r"(.*a){20}": {"ends_a", "ends_bang"},
    r"(.*a){20}!": {"ends_bang"},
    r"(x+x+)+y": set(),
    r"^(([a-z])+.)+[A-Z]([a-z])+$": set(),
    r"(\w+\s?)*$": {"ends_a", "ends_bang", "b"},
}


@pytest.fixture
def long_documents(client: tintdb.Client) -> tintdb.Collection:
    col = client.create_collection("long-documents", embedding_function=None)
    col.add(
        ids=["ends_a", "ends_bang", "b"],
        embeddings=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
        documents=["a" * LONG, "a" * LONG + "!", "b" * LONG],
    )
    return col


@pytest.mark.parametrize("pattern", sorted(CATASTROPHIC))
def test_catastrophic_patterns_answer_right(
    long_documents: tintdb.Collection, pattern: str
) -> None:
    """Patterns that take exponential time in a backtracking engine get their answer."""
    want = CATASTROPHIC[pattern]
    everyone = {"ends_a", "ends_bang", "b"}
    assert set(long_documents.get(where_document={"$regex": pattern})["ids"]) == want
    got = long_documents.get(where_document={"$not_regex": pattern})["ids"]
    assert set(got) == everyone - want
    found = long_documents.query(
        query_embeddings=[[1.0, 0.0]], n_results=3, where_document={"$regex": pattern}
    )
    assert set(found["ids"][0]) == want


# What chromadb 1.5.9 answers (observed), pattern -> document -> matches?
CHROMA_ANSWERS: list[tuple[str, str, bool]] = [
    (r"(?i)c(?-i)at", "Cat in the hat", True),
    (r"(?i)c(?-i)at", "cAT", False),
    (r"cat", "Cat", False),
    (r"^\w+ au", "café au lait", True),
    (r"\d", "digits ٣٤ here", True),
    (r"[0-9]", "digits ٣٤ here", False),
    (r"^line2", "line1\nline2", False),
    (r"(?m)^line2$", "line1\nline2", True),
    (r"line1.line2", "line1\nline2", False),
    (r"(?s)line1.line2", "line1\nline2", True),
    (r"b$", "ab\n", False),
    (r"(?x) c a t # comment", "cat", True),
    (r"(?x)[a b]", " ", False),
    (r"[a-z&&[^aeiou]]", "aei", False),
    (r"[a-z&&[^aeiou]]", "aeb", True),
    (r"[a-c-e]", "-", True),
    (r"[[:^alpha:]]", "cAT", False),
    (r"[[:alpha:]--a]", "a", False),
    (r"\x{e9}", "é", True),
    (r"\u00e9", "é", True),
    (r"(?i)ß", "ss", False),
    (r"(?i)\u017f", "S", True),  # long s
    (r"(?i)k", "\u212a", True),
    (r"[\W]", "x_", False),
    (r"\p{Greek}", "Ω", True),
    (r"\p{ Lu }", "Ω", True),
    (r"\p{greek}", "\u0342", False),
    (r"\pN", "٣", True),
    (r"a{ 2,3 }", "aa", True),
    (r"a**", "b", True),
    (r"x{1000}", "x" * 999, False),
    (r"(?-u:\b)x", "é x", True),
    (r"(?P<n>a)(?<m>b)", "ab", True),
    (r"\.", "a.b", True),
    (r"\_", "x_", True),
    ("a\x00b", "a\x00b", True),
    ("a\x00b", "ab", False),
]


def test_the_dialect_is_chromas() -> None:
    for pattern, document, matches in CHROMA_ANSWERS:
        assert _regex.search(pattern, document) is matches, (pattern, document)


REFUSED = {
    r"(\w)\1": "backreferences are not supported",
    r"a(?=b)": "look-around",
    r"(?<=a)b": "look-around",
    r"\bword\b": "Unicode word boundary",
    r"(?-u:\B)": "not a word boundary",
    r"\p{Alphabetic}": "is not supported",
    r"x{1001}": "over the limit of 1000",
    r"(?R)a": "CRLF",
    r"[\w--\d]": "set operations",
    r"(a": "unclosed group",
    r"(?": "unclosed group",
    r"(?i": "unclosed group",
    r"[a": "unclosed character class",
    r"a{2,1}": "start must be <= the end",
    r"\Z": "unrecognized escape",
    r"(?P<n>a)(?P<n>b)": "duplicate capture group name",
    r"\x{110000}": "not a Unicode scalar value",
}


@pytest.mark.parametrize("pattern", sorted(REFUSED))
def test_patterns_outside_the_dialect_are_refused(client: tintdb.Client, pattern: str) -> None:
    col = client.create_collection("refused", embedding_function=None)
    col.add(ids=["a"], embeddings=[[1.0, 0.0]], documents=["word"])
    for op in ("$regex", "$not_regex"):
        with pytest.raises(InvalidArgumentError, match=REFUSED[pattern].replace("(", r"\(")):
            col.get(where_document={op: pattern})
        with pytest.raises(InvalidArgumentError):
            col.query(query_embeddings=[[1.0, 0.0]], where_document={op: pattern})
    assert col.count() == 1


class _Paused:
    """Pauses the first regex match of a scan until released: the scan is then
    provably under way while the other calls run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.scanning = threading.Event()
        self.release = threading.Event()
        search = _regex.search

        def paused(pattern: str, text: str) -> bool:
            if not self.scanning.is_set():
                self.scanning.set()
                self.release.wait(60)  # a hang guard, not a timing
            return search(pattern, text)

        monkeypatch.setattr(_regex, "search", paused)


def _run_while_scanning(paused: _Paused, scan: Any, others: Any) -> tuple[Any, list[Any]]:
    """Start ``scan`` on a thread; once its regex runs, call ``others`` from this one."""
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(scan=scan()))
    thread.start()
    assert paused.scanning.wait(60), "the scan never ran its regex"
    answers: list[Any] = []
    helper = threading.Thread(target=lambda: answers.extend(others()))
    helper.start()
    helper.join(60)
    stalled = helper.is_alive()
    paused.release.set()
    thread.join(60)
    assert not stalled, "other calls waited for the regex scan"
    return result.get("scan"), answers


def _filled(client: Any) -> tuple[Any, Any]:
    docs = client.create_collection("docs", embedding_function=None)
    docs.add(
        ids=[f"d{i}" for i in range(50)],
        embeddings=[[float(i), 1.0] for i in range(50)],
        documents=["a" * 2000 + ("!" if i % 2 else "") for i in range(50)],
    )
    other = client.create_collection("other", embedding_function=None)
    other.add(ids=["x", "y"], embeddings=[[1.0, 0.0], [0.0, 1.0]], metadatas=[{"k": 1}, {"k": 2}])
    other.query(query_embeddings=[[1.0, 0.0]], n_results=1)  # index in memory
    return docs, other


def _others(client: Any, other: Any) -> list[Any]:
    return [
        client.heartbeat(),
        other.query(query_embeddings=[[1.0, 0.0]], n_results=1)["ids"],
        other.get(where={"k": 2})["ids"],
        other.count(),
    ]


def test_a_regex_scan_leaves_other_calls_free_embedded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = tintdb.PersistentClient(path=str(tmp_path))
    docs, other = _filled(client)
    paused = _Paused(monkeypatch)
    scan, answers = _run_while_scanning(
        paused,
        lambda: docs.get(where_document={"$regex": r"(a+)+$"})["ids"],
        lambda: _others(client, other),
    )
    assert scan == [f"d{i}" for i in range(0, 50, 2)]
    assert answers[1:] == [[["x"]], ["y"], 2]
    client.close()


@pytest.fixture
def in_process_server(tmp_path: Path) -> Iterator[str]:
    """``tintdb run``'s app on real HTTP, in this process (so a test can pause a scan)."""
    backend = LocalBackend(tmp_path / "served")
    config = uvicorn.Config(create_app(backend), host="127.0.0.1", port=0, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(600):
        if server.started:
            break
        threading.Event().wait(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)
    backend.close()


def test_a_regex_scan_leaves_the_server_free(
    in_process_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = in_process_server.removeprefix("http://").split(":")
    with (
        tintdb.HttpClient(host=host, port=int(port)) as client,
        tintdb.HttpClient(host=host, port=int(port)) as second,
    ):
        docs, other = _filled(client)
        paused = _Paused(monkeypatch)
        scan, answers = _run_while_scanning(
            paused,
            lambda: docs.query(
                query_embeddings=[[0.0, 1.0]], n_results=50, where_document={"$regex": r"(a|aa)+$"}
            )["ids"][0],
            lambda: _others(second, other),
        )
    assert sorted(scan) == sorted(f"d{i}" for i in range(0, 50, 2))
    assert answers[1:] == [[["x"]], ["y"], 2]


# ---------------------------------------------------------------- regressions


def test_nul_in_an_id_never_touches_another_record(client: tintdb.Client) -> None:
    col = client.create_collection("nul-ids", embedding_function=None)
    col.add(ids=["a", "c"], embeddings=[[1.0, 0.0], [0.0, 1.0]], documents=["A", "C"])
    col.delete(ids=["a\x00zzz"])
    assert col.get()["ids"] == ["a", "c"]
    col.add(ids=["c\x00y"], embeddings=[[1.0, 1.0]], documents=["C-NUL"])
    assert col.get(ids=["c\x00y"])["documents"] == ["C-NUL"]
    assert col.get(ids=["c"])["documents"] == ["C"]
    col.upsert(ids=["c\x00y", "d\x00"], embeddings=[[2.0, 2.0], [3.0, 3.0]], documents=["U", "D"])
    assert col.get(include=["documents"])["documents"] == ["A", "C", "U", "D"]
    col.update(ids=["a\x00"], metadatas=[{"never": True}])
    assert col.get(ids=["a"], include=["metadatas"])["metadatas"] == [None]
    assert col.query(query_embeddings=[[3.0, 3.0]], n_results=1, ids=["d\x00"])["ids"] == [
        ["d\x00"]
    ]
    with pytest.raises(NotFoundError):
        col.query(query_embeddings=[[3.0, 3.0]], n_results=1, ids=["d"])


def test_nul_in_text_filters_is_exact(client: tintdb.Client) -> None:
    col = client.create_collection("nul-text", embedding_function=None)
    col.add(
        ids=["plain", "nul"],
        embeddings=[[1.0, 0.0], [0.0, 1.0]],
        documents=["hello world", "hel\x00lo world"],
        metadatas=[{"k": "v", "tags": ["p"]}, {"k\x00": "v\x00w", "tags": ["p\x00q"]}],
    )
    assert col.get(where_document={"$contains": "l\x00l"})["ids"] == ["nul"]
    assert col.get(where_document={"$contains": "hel\x00lo world"})["ids"] == ["nul"]
    assert col.get(where_document={"$not_contains": "\x00"})["ids"] == ["plain"]
    assert col.get(where_document={"$contains": "hello"})["ids"] == ["plain"]
    assert col.get(where={"k": "v"})["ids"] == ["plain"]
    assert col.get(where={"k\x00": {"$in": ["v\x00w", "v"]}})["ids"] == ["nul"]
    assert col.get(where={"k\x00": {"$nin": ["v\x00"]}})["ids"] == ["plain", "nul"]
    assert col.get(where={"tags": {"$contains": "p\x00q"}})["ids"] == ["nul"]
    assert col.get(where={"tags": {"$contains": "p"}})["ids"] == ["plain"]
    assert col.get(where_document={"$regex": "l\x00l"})["ids"] == ["nul"]
    got = col.get(ids=["nul"], include=["metadatas", "documents"])
    assert got["metadatas"] == [{"k\x00": "v\x00w", "tags": ["p\x00q"]}]
    assert got["documents"] == ["hel\x00lo world"]


BIG = [2**63, 2**64, -(2**63) - 1, 10**30]


@pytest.mark.parametrize("value", BIG)
def test_integers_beyond_64_bits_are_refused(client: tintdb.Client, value: int) -> None:
    col = client.create_collection("ints", embedding_function=None)
    col.add(ids=["a"], embeddings=[[1.0, 0.0]], metadatas=[{"n": 1}])
    calls = [
        lambda: col.get(where={"n": value}),
        lambda: col.get(where={"n": {"$gt": value}}),
        lambda: col.get(where={"n": {"$in": [1, value]}}),
        lambda: col.get(where={"n": {"$contains": value}}),
        lambda: col.add(ids=["b"], embeddings=[[0.0, 1.0]], metadatas=[{"n": value}]),
    ]
    if value > 0:
        calls += [lambda: col.get(limit=value), lambda: col.get(offset=value)]
        calls += [lambda: col.query(query_embeddings=[[1.0, 0.0]], n_results=value)]
    for call in calls:
        with pytest.raises(InvalidArgumentError, match="64 bits"):
            call()
    assert col.count() == 1


def _nested(depth: int, leaf: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    clause = leaf
    for _ in range(depth):
        clause = {"$and": [clause, other]}
    return clause


@pytest.mark.parametrize("depth", [65, 126, 500, 999])
def test_deep_nesting_is_refused(client: tintdb.Client, depth: int) -> None:
    col = client.create_collection("deep", embedding_function=None)
    col.add(ids=["a"], embeddings=[[1.0, 0.0]], metadatas=[{"k": 1}], documents=["doc"])
    where = _nested(depth, {"k": 1}, {"k": {"$gte": 0}})
    where_document = _nested(depth, {"$contains": "d"}, {"$not_contains": "x"})
    for kwargs in ({"where": where}, {"where_document": where_document}):
        with pytest.raises(InvalidArgumentError, match="nested more than 64 levels"):
            col.get(**kwargs)
        with pytest.raises(InvalidArgumentError, match="nested more than 64 levels"):
            col.query(query_embeddings=[[1.0, 0.0]], **kwargs)
        with pytest.raises(InvalidArgumentError, match="nested more than 64 levels"):
            col.delete(**kwargs)
    assert col.count() == 1


def test_nesting_up_to_the_limit_works(client: tintdb.Client) -> None:
    col = client.create_collection("deep-ok", embedding_function=None)
    col.add(ids=["a"], embeddings=[[1.0, 0.0]], metadatas=[{"k": 1}], documents=["doc"])
    depth = _filters.MAX_DEPTH
    assert col.get(where=_nested(depth, {"k": 1}, {"k": {"$gte": 0}}))["ids"] == ["a"]
    where_document = _nested(depth, {"$contains": "d"}, {"$not_contains": "x"})
    assert col.get(where_document=where_document)["ids"] == ["a"]


def test_huge_in_lists_cost_one_parameter(client: tintdb.Client) -> None:
    col = client.create_collection("big-in", embedding_function=None)
    col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]], metadatas=[{"n": 7}, {"s": "z"}])
    assert col.get(where={"n": {"$in": list(range(200_000))}})["ids"] == ["a"]
    strings = [f"s{i}" for i in range(200_000)] + ["z"]
    assert col.get(where={"s": {"$nin": strings}})["ids"] == ["a"]
    assert col.get(ids=[f"id{i}" for i in range(200_000)] + ["b"])["ids"] == ["b"]


def test_tenant_and_database_names_follow_the_rules(client: tintdb.Client) -> None:
    admin = tintdb.AdminClient.from_client(client)
    admin.create_tenant("team one é")
    admin.create_database("db-1.x_y", tenant="team one é")
    for bad in ("ab", "a/b", "a\x00b", "x" * 513):
        with pytest.raises(InvalidArgumentError, match=r"[Tt]enant name"):
            admin.create_tenant(bad)
    for bad in ("ab", "a b", "-abc", "abc-", "a..b", "10.0.0.1", "é-db", "x" * 513):
        with pytest.raises(InvalidArgumentError, match="Database name"):
            admin.create_database(bad, tenant="team one é")
    assert [d["name"] for d in admin.list_databases(tenant="team one é")] == ["db-1.x_y"]


# ---------------------------------------------------------------- the same, over raw HTTP


@pytest.fixture
def api(http_server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=http_server.url, timeout=60) as c:
        c.post("/api/v2/reset")
        yield c


DB = "/api/v2/tenants/default_tenant/databases/default_database"


def _made(api: httpx.Client) -> str:
    r = api.post(f"{DB}/collections", json={"name": "raw"})
    cid = r.json()["id"]
    r = api.post(
        f"{DB}/collections/{cid}/add",
        json={"ids": ["a"], "embeddings": [[1.0, 0.0]], "metadatas": [{"n": 1}]},
    )
    assert r.status_code == 201
    return str(cid)


def _is_error(r: httpx.Response, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "message"} and words in body["message"], body


def test_out_of_range_integers_over_http_are_400(api: httpx.Client) -> None:
    cid = _made(api)
    for field in ("limit", "offset"):
        r = api.post(f"{DB}/collections/{cid}/get", json={field: 2**63})
        _is_error(r, 400, "64 bits")
        r = api.get(f"{DB}/collections", params={field: str(2**64)})
        _is_error(r, 400, "64 bits")
        r = api.get("/api/v2/tenants/default_tenant/databases", params={field: str(2**63)})
        _is_error(r, 400, "64 bits")
    r = api.post(f"{DB}/collections/{cid}/delete", json={"where": {"n": 1}, "limit": 2**63})
    _is_error(r, 400, "64 bits")
    # JSON numbers past 64 bits arrive as floats (as in JavaScript): a wrong type here.
    r = api.post(f"{DB}/collections/{cid}/get", json={"limit": 2**70})
    _is_error(r, 422, "limit")
    r = api.post(
        f"{DB}/collections/{cid}/query", json={"query_embeddings": [[1, 0]], "n_results": 2**63}
    )
    _is_error(r, 400, "64 bits")
    for where in ({"n": 2**63}, {"n": {"$gt": 2**64 - 1}}, {"n": {"$in": [1, 2**63]}}):
        _is_error(api.post(f"{DB}/collections/{cid}/get", json={"where": where}), 400, "64 bits")
    assert api.get(f"{DB}/collections/{cid}/count").json() == 1


@pytest.mark.parametrize("depth", [65, 126, 400])
def test_deep_nesting_over_http_is_400(api: httpx.Client, depth: int) -> None:
    cid = _made(api)
    where = _nested(depth, {"n": 1}, {"n": 1})
    for body in (
        {"where": where},
        {"where_document": _nested(depth, {"$contains": "a"}, {"$contains": "b"})},
    ):
        r = api.post(f"{DB}/collections/{cid}/get", json=body)
        _is_error(r, 400, "nested more than 64 levels")
    one_clause = {"n": 1}
    for _ in range(depth):
        one_clause = {"$or": [one_clause]}  # single clauses, unwrapped by the server
    _is_error(api.post(f"{DB}/collections/{cid}/get", json={"where": one_clause}), 400, "nested")


def test_nul_over_raw_http(api: httpx.Client) -> None:
    cid = _made(api)
    body = {"ids": ["a\x00b"], "embeddings": [[0.5, 0.5]], "documents": ["x\x00y"]}
    assert api.post(f"{DB}/collections/{cid}/upsert", json=body).status_code == 200
    r = api.post(f"{DB}/collections/{cid}/get", json={"where_document": {"$contains": "x\x00y"}})
    assert r.json()["ids"] == ["a\x00b"]
    r = api.post(f"{DB}/collections/{cid}/get", json={"where_document": {"$not_contains": "\x00"}})
    assert r.json()["ids"] == ["a"]
    r = api.post(f"{DB}/collections/{cid}/delete", json={"ids": ["a\x00"]})
    assert r.status_code == 200
    assert api.get(f"{DB}/collections/{cid}/count").json() == 2
    r = api.post("/api/v2/tenants", json={"name": "bad\x00tenant"})
    _is_error(r, 400, "control characters")
    r = api.post("/api/v2/tenants/default_tenant/databases", json={"name": "bad\x00db"})
    _is_error(r, 400, "Database name")


def test_a_catastrophic_regex_over_http_answers(api: httpx.Client) -> None:
    cid = _made(api)
    docs = {"ids": ["long"], "embeddings": [[0.0, 1.0]], "documents": ["a" * 27 + "!"]}
    assert api.post(f"{DB}/collections/{cid}/add", json=docs).status_code == 201
    r = api.post(f"{DB}/collections/{cid}/get", json={"where_document": {"$regex": "(a+)+$"}})
    assert r.status_code == 200 and r.json()["ids"] == []
    r = api.post(f"{DB}/collections/{cid}/get", json={"where_document": {"$regex": r"(\w)\1"}})
    _is_error(r, 400, "backreferences are not supported")


def test_odd_include_items_are_422(api: httpx.Client) -> None:
    cid = _made(api)
    for include in ([{"a": 1}], [["documents"]], [None], [1]):
        r = api.post(f"{DB}/collections/{cid}/get", json={"include": include})
        _is_error(r, 422, "include[0]")
        body = {"query_embeddings": [], "include": include}
        _is_error(api.post(f"{DB}/collections/{cid}/query", json=body), 422, "include[0]")


def test_unknown_routes_say_which(api: httpx.Client) -> None:
    _is_error(api.get("/api/v2/no/such/route"), 404, "GET /api/v2/no/such/route")
    _is_error(api.put("/api/v2/heartbeat"), 405, "PUT /api/v2/heartbeat")
