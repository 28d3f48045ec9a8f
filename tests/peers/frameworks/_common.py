"""What the LangChain and LlamaIndex workloads share. Runs in the frameworks' virtualenv.

A workload runs one fixed script of framework calls on each *target* and prints, as
one JSON line, what every step returned (or which exception it raised), per target:

- ``chromadb``: real chromadb 1.5.9, embedded (``PersistentClient``): the reference
  for ``tintdb`` and ``tintdb-http``;
- ``chroma-run``: chromadb's ``HttpClient`` against a real ``chroma run``: the reference
  for ``chromadb-http`` (the official client behaves a little differently over HTTP
  than embedded, against Chroma's own server too);
- ``tintdb``: tintdb embedded (``tintdb.PersistentClient``);
- ``tintdb-http``: tintdb's ``HttpClient`` against ``tintdb run``;
- ``chromadb-http``: chromadb's ``HttpClient`` against ``tintdb run``.

Every vector comes from one real model, all-MiniLM-L6-v2, computed offline by
tintdb's numpy forward pass, or is a fixed vector written in the workload. chromadb's
default embedding function is the same model run through onnxruntime, but it
downloads its weights on first use, which a machine without internet cannot do; so
in these processes it computes the same model through tintdb's forward pass (see
``offline_chromadb_default_model``). Vectors are then identical on every target, and
the results can be compared exactly, up to float rounding.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import chromadb
import numpy as np
from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

import tintdb
from tintdb.utils.embedding_functions import DefaultEmbeddingFunction

MODEL = DefaultEmbeddingFunction()


def embed(texts: list[str]) -> list[list[float]]:
    """all-MiniLM-L6-v2 vectors as plain lists, the shape both frameworks pass around."""
    return [[float(x) for x in vector] for vector in MODEL(list(texts))]


def offline_chromadb_default_model() -> None:
    """chromadb's default function (ONNX all-MiniLM-L6-v2) computed without a download."""

    def call(self: ONNXMiniLM_L6_V2, input: list[str]) -> list[np.ndarray]:
        return [np.asarray(v, dtype=np.float32) for v in MODEL(list(input))]

    ONNXMiniLM_L6_V2.__call__ = call  # type: ignore[method-assign]


# ---------------------------------------------------------------- targets


@dataclass
class Target:
    """How to open a client on one target, and how to open it again ("reopen")."""

    name: str
    open: Callable[[], Any]
    close: Callable[[Any], None]


def _host_port(server_url: str) -> tuple[str, int]:
    url = urlparse(server_url)
    return url.hostname or "127.0.0.1", int(url.port or 8000)


def targets(workdir: Path, tintdb_url: str, chroma_url: str) -> list[Target]:
    host, port = _host_port(tintdb_url)

    def chroma_local() -> Any:
        return chromadb.PersistentClient(path=str(workdir / "chromadb"))

    def chroma_local_close(client: Any) -> None:
        # chromadb keeps one system per path in a process-wide cache: dropping it is
        # what makes the next PersistentClient read the files again.
        client.clear_system_cache()

    def tint_local() -> Any:
        return tintdb.PersistentClient(path=str(workdir / "tintdb"))

    def tint_http() -> Any:
        return tintdb.HttpClient(host=host, port=port)

    def chroma_http() -> Any:
        return chromadb.HttpClient(host=host, port=port)

    def chroma_run() -> Any:
        chroma_host, chroma_port = _host_port(chroma_url)
        return chromadb.HttpClient(host=chroma_host, port=chroma_port)

    def close(client: Any) -> None:
        client.close()

    return [
        Target("chromadb", chroma_local, chroma_local_close),
        Target("chroma-run", chroma_run, lambda client: None),
        Target("tintdb", tint_local, close),
        Target("tintdb-http", tint_http, close),
        Target("chromadb-http", chroma_http, lambda client: None),
    ]


def fresh_server(server_url: str) -> None:
    """Empty a server (started allowing resets) before a target uses it."""
    host, port = _host_port(server_url)
    admin = chromadb.HttpClient(host=host, port=port, settings=chromadb.Settings(allow_reset=True))
    admin.reset()


# ---------------------------------------------------------------- recording steps


def plain(value: Any) -> Any:
    """A step's result as JSON: numpy arrays and scalars to lists and floats."""
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return f"<{type(value).__name__}>"  # an object: what kind it is, not where it lives


class Steps:
    """Runs named steps; a step that raises is recorded as that exception, not fatal."""

    def __init__(self) -> None:
        self.results: dict[str, Any] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        assert name not in self.results, f"step {name} twice"
        try:
            value = fn()
        except Exception as exc:  # a step's exception is its result
            self.results[name] = {
                "raised": type(exc).__name__,
                "module": type(exc).__module__,
                "classes": [cls.__name__ for cls in type(exc).__mro__],
                "message": str(exc)[:2000],
            }
            return None
        self.results[name] = plain(value)
        return value


def main(scenario: Callable[[Target, Steps], None]) -> None:
    """``python workload.py WORKDIR TINTDB_URL CHROMA_URL``: each target in turn, one JSON line.

    TINTDB_URL is a ``tintdb run`` and CHROMA_URL a ``chroma run``, both allowing resets.
    """
    workdir, tintdb_url, chroma_url = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    offline_chromadb_default_model()
    out: dict[str, Any] = {
        "versions": {"chromadb": chromadb.__version__, "tintdb": tintdb.__version__}
    }
    for target in targets(workdir, tintdb_url, chroma_url):
        if target.name.endswith("-http"):
            fresh_server(tintdb_url)
        elif target.name == "chroma-run":
            fresh_server(chroma_url)
        shutil.rmtree(workdir / target.name, ignore_errors=True)
        steps = Steps()
        try:
            scenario(target, steps)
        except Exception:  # a broken scenario still reports what it got so far
            steps.results["scenario_crashed"] = traceback.format_exc()
        out[target.name] = steps.results
    print(json.dumps(out))
