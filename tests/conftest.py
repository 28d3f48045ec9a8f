"""Shared fixtures. ``client`` runs every behaviour test against each kind of client."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import _profiles
import pytest
from _server import TintServer

import tintdb
from tintdb import _planning

_profiles.register()

CLIENT_KINDS = ["ephemeral", "persistent", "http"]


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
    raise ValueError(kind)


@pytest.fixture(params=CLIENT_KINDS)
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(
    client_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tintdb.Client]:
    c = _make(client_kind, tmp_path / "store", request, allow_reset=True)
    if client_kind == "http":
        c.reset()
    yield c
    c.close()


@pytest.fixture
def reopen(
    client_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[tintdb.Client], tintdb.Client]:
    """Close and reopen a client on the same store (a no-op for in-memory clients)."""

    def _reopen(c: tintdb.Client) -> tintdb.Client:
        if client_kind == "ephemeral":
            return c
        c.close()
        return _make(client_kind, tmp_path / "store", request, allow_reset=True)

    return _reopen


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
