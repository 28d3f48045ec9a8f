"""Shared fixtures. ``client`` runs every behaviour test against each kind of client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import tintdb

CLIENT_KINDS = ["ephemeral", "persistent"]


def _make(kind: str, path: Path, **settings: object) -> tintdb.Client:
    s = tintdb.Settings(**settings)
    if kind == "ephemeral":
        return tintdb.EphemeralClient(settings=s)
    if kind == "persistent":
        return tintdb.PersistentClient(path=str(path), settings=s)
    raise ValueError(kind)


@pytest.fixture(params=CLIENT_KINDS)
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(client_kind: str, tmp_path: Path) -> Iterator[tintdb.Client]:
    c = _make(client_kind, tmp_path / "store", allow_reset=True)
    yield c
    c.close()


@pytest.fixture
def reopen(client_kind: str, tmp_path: Path) -> Callable[[tintdb.Client], tintdb.Client]:
    """Close and reopen a client on the same store (a no-op for in-memory clients)."""

    def _reopen(c: tintdb.Client) -> tintdb.Client:
        if client_kind == "ephemeral":
            return c
        c.close()
        return _make(client_kind, tmp_path / "store", allow_reset=True)

    return _reopen
