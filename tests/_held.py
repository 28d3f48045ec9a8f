"""Hold one of tintdb's functions until the test releases it, to show what does not
wait for it (a query while an index loads, writes while a graph is rebuilt)."""

from __future__ import annotations

import threading
from typing import Any

import pytest


class Held:
    """Calls of ``owner.name`` wait for ``release`` (set at the latest when the block
    ends); ``reached`` is set once one has begun."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, owner: type, name: str, *, static: bool = False
    ) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        real = getattr(owner, name)

        def held(*args: Any, **kwargs: Any) -> Any:
            self.reached.set()
            assert self.release.wait(60), f"the test never released {name}"
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, staticmethod(held) if static else held)

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()


def hold_the_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes leave their vectors in the index's tail: nothing puts them in the graph
    behind the calls (the test does; a snapshot or a write past TAIL_MAX still does)."""
    from tintdb._local.indexes import IndexKeeper

    monkeypatch.setattr(IndexKeeper, "apply_behind", lambda self, cid: None)
