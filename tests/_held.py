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
