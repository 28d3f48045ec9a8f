"""The PostgreSQL backend's short paths: what a node remembers of a collection between
calls (and why another node's change is never answered from it), the indexes its
filters read, and its bulk add. Each is checked against the long way's answers, on a
real PostgreSQL, with two clients on one database standing for two nodes.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from _postgres import PostgresServer

import tintdb
from tintdb import _planning, _postgres, _regex, errors


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


def test_the_search_statement_sets_ef_search_before_its_index_scan_and_only_for_itself(
    fresh_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remembered path sets ``hnsw.ef_search`` inside its one search statement. pgvector
    returns at most ef_search rows from an index scan, so a 150-neighbour answer comes
    whole from the short path only if the setting (150) held when the scan began, not
    pgvector's default of 40 (then the window is short and the long way answers). The
    setting must not outlive the statement on the pooled connection. (The database is
    told not to read and sort: on so few records PostgreSQL would, rather than use the
    index.)"""
    monkeypatch.setattr(_planning, "EXACT_BELOW", 0)
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        for plan in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            conn.execute(f"ALTER DATABASE {conn.info.dbname} SET {plan} = off")
    with tintdb.PostgresClient(fresh_dsn, pool_size=1) as client:
        data = _data(600)
        col = client.create_collection("beam", embedding_function=None)
        col.add(ids=[f"b{i}" for i in range(600)], embeddings=data)
        col.query(query_embeddings=data[:1], n_results=150)  # the long way; remembered
        tx = _Transactions(monkeypatch)
        got = col.query(query_embeddings=data[1:2], n_results=150, include=["distances"])
        assert tx.count == 0  # answered by the one statement, no window short
        assert len(got["ids"][0]) == 150 and got["ids"][0][0] == "b1"
        distances = got["distances"][0]  # type: ignore[index]
        assert distances == sorted(distances)
        with client._live_backend().pool.connection() as conn:  # type: ignore[attr-defined]
            assert conn.execute("SHOW hnsw.ef_search").fetchone()[0] == "40"


def test_a_filtered_window_sets_its_beam_in_its_own_statement(
    fresh_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filtered query's window of neighbours sets ``hnsw.ef_search`` inside its one
    statement: a window of more than pgvector's default 40 neighbours comes whole (no
    exact fallback), and the setting does not outlive the call."""
    monkeypatch.setattr(_planning, "EXACT_BELOW", 0)
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        for plan in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            conn.execute(f"ALTER DATABASE {conn.info.dbname} SET {plan} = off")
    with tintdb.PostgresClient(fresh_dsn, pool_size=1) as client:
        data = _data(2000)
        col = client.create_collection("window", embedding_function=None)
        col.add(
            ids=[f"w{i}" for i in range(2000)],
            embeddings=data,
            metadatas=[{"tenth": i % 10} for i in range(2000)],
        )
        used: list[str] = []
        for name in ("_window", "_exact"):
            original = getattr(_postgres._Planner, name)
            monkeypatch.setattr(
                _postgres._Planner,
                name,
                lambda *a, n=name, f=original: used.append(n) or f(*a),
            )
        # 90% match: a window of about 134 neighbours, with a beam of 268
        got = col.query(query_embeddings=data[:1], n_results=60, where={"tenth": {"$ne": 0}})
        assert used == ["_window"]  # no window came back short
        keep = np.array([i for i in range(2000) if i % 10])
        want = keep[np.argsort(((data[keep] - data[0]) ** 2).sum(axis=1))[:60]]
        assert len(set(got["ids"][0]) & {f"w{i}" for i in want}) >= 57
        with client._live_backend().pool.connection() as conn:  # type: ignore[attr-defined]
            assert conn.execute("SHOW hnsw.ef_search").fetchone()[0] == "40"


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


# ---------------------------------------------------------------- indexes of filters


def _plan(dsn: str, coll: int, where: Any, where_document: Any) -> str:
    """PostgreSQL's plan for the filter the backend compiles, with sequential scans
    made as costly as PostgreSQL allows: an index that can serve it is then used."""
    import psycopg

    from tintdb._conditions import condition_tree
    from tintdb._pgsql import compile_filter

    cond, params = compile_filter(condition_tree(where, where_document), None)
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute(f"ANALYZE tintdb.records_{coll}")  # statistics of a small collection
        conn.execute("SET LOCAL enable_seqscan = off")
        rows = conn.cursor(binary=True).execute(
            f"EXPLAIN SELECT r.seq FROM tintdb.records r WHERE r.coll = %s AND {cond}",
            (coll, *params),
        )
        return "\n".join(r[0] for r in rows)


def _coll(dsn: str, name: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT coll FROM tintdb.collections WHERE name = %s", (name,))
        return int(row.fetchone()[0])  # type: ignore[index]


def test_ranges_and_document_filters_read_indexes_and_answer_as_before(fresh_dsn: str) -> None:
    """A numeric range (whatever else the key holds in other records), a document
    $contains (documents holding NUL included) and a $regex with a run of plain text are
    answered through indexes, with the answers of a plain reading of the records."""
    n = 4000
    values: list[Any] = [i if i % 5 else float(i) + 0.5 for i in range(n)]
    values[7], values[11], values[13] = "text", True, [1, 2]  # not numbers: never in range
    docs = [f"note {i} {'alpha' if i % 3 == 0 else 'beta'}" for i in range(n)]
    docs[9] = "alpha\0with nul"
    docs[12] = "beta\0alphabet"
    docs[20], docs[40] = "a rare gamma", "gamma again"
    docs[60] = "gamma\0held as bytes"
    with tintdb.PostgresClient(fresh_dsn) as client:
        col = client.create_collection("indexed", embedding_function=None)
        col.add(
            ids=[str(i) for i in range(n)],
            # Rows of a realistic width (384 dimensions), for PostgreSQL to weigh an
            # index against reading the partition as it would on real data.
            embeddings=_data(n, dim=384),
            metadatas=[{"v": values[i], "w": i % 400} for i in range(n)],
            documents=docs,
        )
        coll = _coll(fresh_dsn, "indexed")
        cases: list[tuple[Any, Any, set[int]]] = [
            (
                {"v": {"$gte": 100}},
                None,
                {i for i, x in enumerate(values) if _number(x) and x >= 100},
            ),
            (
                {"$or": [{"v": {"$lt": 3}}, {"w": 1}]},
                None,
                {i for i, x in enumerate(values) if (_number(x) and x < 3) or i % 400 == 1},
            ),
            (None, {"$contains": "alpha"}, {i for i, d in enumerate(docs) if "alpha" in d}),
            (None, {"$contains": "gamma"}, {20, 40, 60}),
            (None, {"$regex": "alpha(bet)?$"}, _matching("alpha(bet)?$", docs)),
            (None, {"$regex": "note [0-9]+ alpha"}, _matching("note [0-9]+ alpha", docs)),
            (None, {"$not_regex": "a\\x00alpha"}, set(range(n)) - {12}),
            (None, {"$regex": "^note 3 alpha$"}, {3}),
        ]
        for where, where_document, want in cases:
            got = col.get(where=where, where_document=where_document, include=[])["ids"]
            assert set(map(int, got)) == want, (where, where_document)
        assert "records_" in _plan(fresh_dsn, coll, {"v": {"$gte": 100}}, None)
        assert "_num_" in _plan(fresh_dsn, coll, {"v": {"$gte": 100}}, None)
        orplan = _plan(fresh_dsn, coll, {"$or": [{"v": {"$lt": 3}}, {"w": 1}]}, None)
        assert "BitmapOr" in orplan and "_num_" in orplan
        docplan = _plan(fresh_dsn, coll, None, {"$contains": "gamma"})
        assert "document_idx" in docplan and "Seq Scan" not in docplan
        likeplan = _plan(fresh_dsn, coll, None, {"$regex": "^note 3 alpha$"})  # plain text
        assert "document_idx" in likeplan and "Seq Scan" not in likeplan


def test_a_plain_text_regex_runs_in_postgresql_with_the_engines_answers(
    fresh_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `$regex` that is plain text (anchored or not) is a LIKE that PostgreSQL runs,
    through the trigram index, with no document read into this process; its answers
    (documents held as bytes, LIKE's own wildcards in the text, records without a
    document under `$not_regex`) are the pattern engine's. A pattern that is not plain
    text still runs here."""
    docs: list[str | None] = [f"item {i} {'amber' if i % 4 else 'birch'} end" for i in range(400)]
    docs[5] = "amber 50% off_now\\"
    docs[6] = "amber\0held as bytes"
    docs[7] = "x amber\0bytes end"
    docs[8] = None
    docs[9] = "50% off_now\\"
    patterns = ["^amber ", "^amber", "end$", r"50% off_now\\$", r"^amber 50% off_now\\$", "m 3 a"]
    with tintdb.PostgresClient(fresh_dsn) as client:
        col = client.create_collection("plain", embedding_function=None)
        col.add(
            ids=[str(i) for i in range(400)],
            embeddings=_data(400),
            documents=docs,  # type: ignore[arg-type]
        )
        for pattern in patterns:
            assert _regex.plain_text(pattern) is not None
            for op in ("$regex", "$not_regex"):
                want = {
                    i
                    for i, d in enumerate(docs)
                    if (d is not None and _regex.search(pattern, d)) != (op == "$not_regex")
                }
                got = col.get(where_document={op: pattern}, include=[])["ids"]
                assert set(map(int, got)) == want, (op, pattern)
                q = col.query(
                    query_embeddings=_data(1, seed=3), n_results=5, where_document={op: pattern}
                )
                assert len(q["ids"][0]) == min(5, len(want))
        calls: list[str] = []
        monkeypatch.setattr(
            _regex, "search", lambda p, t, s=_regex.search: calls.append(p) or s(p, t)
        )
        col.get(where_document={"$regex": "^amber "}, include=[])
        assert calls == []  # plain text: no document came here
        got = col.get(where_document={"$regex": "^am+ber "}, include=[])["ids"]
        assert calls and set(map(int, got)) == {
            i for i, d in enumerate(docs) if d and d.startswith("amber ")
        }


def _matching(pattern: str, docs: list[str]) -> set[int]:
    found = {i for i, d in enumerate(docs) if re.search(pattern, d)}
    assert found  # a case that finds nothing would prove little
    return found


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _indexes(dsn: str, coll: int) -> list[str]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'tintdb' AND tablename = %s",
            (f"records_{coll}",),
        ).fetchall()
    return [r[0] for r in rows]


def test_range_indexes_stop_at_the_limit_and_ranges_past_it_still_answer(
    fresh_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_postgres, "NUMERIC_INDEXES_MAX", 2)
    with tintdb.PostgresClient(fresh_dsn) as client:
        col = client.create_collection("capped", embedding_function=None)
        col.add(
            ids=["0", "1", "2"],
            embeddings=_data(3),
            metadatas=[{"a": i, "b": i * 1.5, "c": i, "s": "x"} for i in range(3)],
        )
        col.add(ids=["3"], embeddings=_data(1), metadatas=[{"a": 0.5, "d": 3}])
        coll = _coll(fresh_dsn, "capped")
        ranged = [d for d in _indexes(fresh_dsn, coll) if "::numeric" in d]
        assert len(ranged) == 2 and all("'c'" not in d and "'d'" not in d for d in ranged)
        assert sorted(col.get(where={"c": {"$gt": 0}})["ids"]) == ["1", "2"]
        assert col.get(where={"d": {"$gte": 3}})["ids"] == ["3"]
        assert sorted(col.get(where={"a": {"$lt": 1}})["ids"]) == ["0", "3"]


def test_a_schema_1_database_is_migrated_by_the_first_node(fresh_dsn: str) -> None:
    """A database as version 1 left it (no version column, no range or bytes indexes):
    the next node to start brings it to version 2, and every record stays readable."""
    import psycopg

    with tintdb.PostgresClient(fresh_dsn) as client:
        col = client.create_collection("older", embedding_function=None)
        col.add(
            ids=[str(i) for i in range(50)],
            embeddings=_data(50),
            metadatas=[{"n": i} for i in range(50)],
            documents=[f"doc {i}" for i in range(50)],
        )
    coll = _coll(fresh_dsn, "older")
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        for d in _indexes(fresh_dsn, coll):
            if "::numeric" in d:
                conn.execute(f"DROP INDEX tintdb.{d.split()[2]}")
        conn.execute("DROP INDEX tintdb.records_document_bytes")
        conn.execute("ALTER TABLE tintdb.collections DROP COLUMN version")
        conn.execute("UPDATE tintdb.info SET value = '1' WHERE key = 'schema'")
    assert not [d for d in _indexes(fresh_dsn, coll) if "::numeric" in d]

    with tintdb.PostgresClient(fresh_dsn) as client:
        col = client.get_collection("older", embedding_function=None)
        assert sorted(map(int, col.get(where={"n": {"$gte": 45}})["ids"])) == [45, 46, 47, 48, 49]
        for _ in range(2):  # the long way, then the remembered row
            assert col.query(query_embeddings=_data(50)[7:8], n_results=1)["ids"] == [["7"]]
    with psycopg.connect(fresh_dsn) as conn:
        schema = conn.execute("SELECT value FROM tintdb.info WHERE key = 'schema'").fetchone()
        assert schema == ("2",)
    defs = _indexes(fresh_dsn, coll)
    assert any("::numeric" in d for d in defs)
    assert any("document_bytes IS NOT NULL" in d for d in defs)


# ---------------------------------------------------------------- bulk add


def test_a_large_add_to_an_indexed_collection_rebuilds_the_index_in_one_transaction(
    fresh_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An add that is a large share of its collection drops the HNSW index, copies and
    builds it again: the records are then found through the index; and when any part of
    that call fails (a taken id, the build itself), nothing of it is left, index included."""
    monkeypatch.setattr(_postgres, "BULK_MIN", 100)
    monkeypatch.setattr(_planning, "EXACT_BELOW", 0)
    data = _data(1000, seed=9)
    with tintdb.PostgresClient(fresh_dsn) as client:
        col = client.create_collection("bulk", embedding_function=None)
        col.add(ids=[str(i) for i in range(200)], embeddings=data[:200])
        coll = _coll(fresh_dsn, "bulk")

        def hnsw() -> list[str]:
            return [d for d in _indexes(fresh_dsn, coll) if "hnsw" in d]

        assert len(hnsw()) == 1
        col.add(
            ids=[str(i) for i in range(200, 500)],
            embeddings=data[200:500],
            metadatas=[{"i": i} for i in range(200, 500)],
        )
        assert col.count() == 500 and len(hnsw()) == 1
        got = col.query(query_embeddings=data[450:460], n_results=1)["ids"]
        assert got == [[str(i)] for i in range(450, 460)]

        with pytest.raises(errors.IDAlreadyExistsError):  # the last id is taken
            col.add(ids=[str(i) for i in range(500, 799)] + ["7"], embeddings=data[500:800])
        broken = "CREATE INDEX records_broken ON tintdb.no_such_table (x)"
        monkeypatch.setattr(_postgres, "hnsw_index_sql", lambda *args: broken)
        with pytest.raises(Exception, match="no_such_table"):
            col.add(ids=[str(i) for i in range(500, 800)], embeddings=data[500:800])

        assert col.count() == 500 and len(hnsw()) == 1
        assert col.get(ids=["500", "799"])["ids"] == []
        got = col.query(query_embeddings=data[:5], n_results=1)["ids"]
        assert got == [[str(i)] for i in range(5)]


# ---------------------------------------------------------------- sampled filters


def test_dense_filters_planned_from_a_sample_are_never_short(
    fresh_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter that a sample of the collection says is dense is post-filtered without
    counting its matches: a filter independent of position, one correlated with it
    (its windows come up short and fall back to exact search) and one that matches
    fewer records than asked for all get every answer they should, and the nearest."""
    monkeypatch.setattr(_planning, "EXACT_BELOW", 0)
    monkeypatch.setattr(_postgres, "SAMPLE_ABOVE", 1000)
    sampled: list[int | None] = []
    original = _postgres._Planner._sampled

    def spy(planner: Any, *args: Any) -> Any:
        sampled.append(original(planner, *args))
        return sampled[-1]

    monkeypatch.setattr(_postgres._Planner, "_sampled", spy)
    rng = np.random.default_rng(11)
    n, dim = 3000, 16
    data = rng.standard_normal((n, dim)).astype(np.float32)
    far = data[:, 0] > np.median(data[:, 0])
    with tintdb.PostgresClient(fresh_dsn) as client:
        col = client.create_collection("dense", embedding_function=None)
        col.add(
            ids=[str(i) for i in range(n)],
            embeddings=data,
            metadatas=[{"m": i % 37, "far": bool(far[i])} for i in range(n)],
        )
        queries = data[~far][:15] + 0.01
        for where, keep, k in (
            ({"m": {"$lt": 4}}, np.arange(n) % 37 < 4, 10),
            ({"far": True}, far, 10),
            ({"m": {"$lt": 4}}, np.arange(n) % 37 < 4, 400),
        ):
            sampled.clear()
            got = col.query(query_embeddings=queries, n_results=k, where=where, include=[])
            assert sampled and sampled[0] is not None, where  # the sample found it dense
            want_len = min(k, int(keep.sum()))
            hits = 0
            for q, ids in zip(queries, got["ids"], strict=True):
                assert len(ids) == want_len, where
                assert all(keep[int(i)] for i in ids)
                hits += len(set(map(int, ids)) & set(_exact(data, q, keep, want_len)))
            assert hits / (want_len * len(queries)) >= 0.99, where


def _exact(data: np.ndarray, q: np.ndarray, keep: np.ndarray, k: int) -> list[int]:
    rows = np.flatnonzero(keep)
    d = ((data[rows].astype(np.float64) - q.astype(np.float64)) ** 2).sum(axis=1)
    return [int(i) for i in rows[np.argsort(d, kind="stable")[:k]]]


def test_a_connection_the_server_closed_fails_its_call_with_that_error_then_is_replaced(
    fresh_dsn: str,
) -> None:
    """A read whose pooled connection PostgreSQL closed (a restart, a failover) fails
    with the driver's connection error, not an error about putting its transaction
    settings back; the next call gets a new connection, and a remembered collection's
    query takes the long way instead of failing."""
    import psycopg

    with tintdb.PostgresClient(fresh_dsn, pool_size=1) as client:
        col = client.create_collection("closed", embedding_function=None)
        col.add(ids=["a", "b"], embeddings=_data(2))
        assert col.query(query_embeddings=_data(1), n_results=1)["ids"]  # remembered

        def close_all() -> None:
            with psycopg.connect(fresh_dsn, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )

        close_all()
        with pytest.raises(psycopg.OperationalError):
            col.count()
        assert col.count() == 2
        close_all()
        assert col.query(query_embeddings=_data(1), n_results=2)["ids"][0]
