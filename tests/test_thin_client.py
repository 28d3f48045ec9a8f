"""The thin client distribution (clients/python): what it ships, what it needs, and that
it works against a real ``tintdb run``.

The distribution is built as a fresh clone would build it (a copy of ``tintdb/`` and
``clients/python/`` side by side), installed into a new virtualenv of its own, and
exercised by a script run with that virtualenv's interpreter, so nothing of the full
install in this process can stand in for a missing piece.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _server import TintServer

ROOT = Path(__file__).resolve().parent.parent

SHIPPED = {
    "tintdb/__init__.py",
    "tintdb/_backend.py",
    "tintdb/_client.py",
    "tintdb/_filters.py",
    "tintdb/_regex.py",
    "tintdb/_http.py",
    "tintdb/_schema.py",
    "tintdb/_schema_api.py",
    "tintdb/_validation.py",
    "tintdb/_wire.py",
    "tintdb/config.py",
    "tintdb/errors.py",
    "tintdb/py.typed",
    "tintdb/types.py",
    "tintdb/api/__init__.py",
    "tintdb/api/types.py",
    "tintdb/api/collection_configuration.py",
    "tintdb/api/models/__init__.py",
    "tintdb/api/models/Collection.py",
    "tintdb/api/models/AsyncCollection.py",
    "tintdb/auth/__init__.py",
    "tintdb/auth/token_authn.py",
    "tintdb/_search/__init__.py",
    "tintdb/_search/bm25.py",
    "tintdb/_search/client.py",
    "tintdb/_search/expr.py",
    "tintdb/_search/plan.py",
    "tintdb/_search/result.py",
    "tintdb/_search/sparse.py",
    "tintdb/execution/__init__.py",
    "tintdb/execution/expression/__init__.py",
    "tintdb/execution/expression/operator.py",
    "tintdb/execution/expression/plan.py",
}
ALLOWED_REQUIRES = {"httpx", "orjson", "numpy"}
# What the full package needs for storage, serving and the default model.
ABSENT_DISTRIBUTIONS = ["hnswlib", "fastapi", "uvicorn", "tokenizers", "safetensors", "tqdm"]
ABSENT_MODULES = [
    "hnswlib",
    "fastapi",
    "uvicorn",
    "tokenizers",
    "safetensors",
    "tqdm",
    "tintdb._local",
    "tintdb._storage",
    "tintdb._index",
    "tintdb._minilm",
    "tintdb._search.engine",
    "tintdb._search.local",
    "tintdb.server",
    "tintdb.cli",
    "tintdb.utils",
]

# Checks inside the thin virtualenv: prints one JSON object on its last line.
INSPECT = """
import importlib.metadata as md
import importlib.util
import json
import re
import sys

import tintdb

names = [re.split(r"[\\s;<>=!~\\[(]", r, maxsplit=1)[0].lower()
         for r in md.requires("tintdb-client") or []]
absent = {}
for name in sys.argv[1:]:
    try:
        absent[name] = importlib.util.find_spec(name) is None
    except ModuleNotFoundError:
        absent[name] = True
try:
    tintdb.PersistentClient(path=sys.argv[0] + ".store")
    persistent = None
except ImportError as exc:
    persistent = str(exc)
try:
    tintdb.EphemeralClient()
    ephemeral = None
except ImportError as exc:
    ephemeral = str(exc)
print(json.dumps({
    "file": tintdb.__file__,
    "requires": names,
    "version": md.version("tintdb-client"),
    "tintdb_version": tintdb.__version__,
    "absent": absent,
    "names": [n for n in ("HttpClient", "AsyncHttpClient", "errors", "Settings")
              if hasattr(tintdb, n)],
    "persistent_error": persistent,
    "ephemeral_error": ephemeral,
}))
"""

# A round trip against the server named on the command line.
WORKLOAD = """
import asyncio
import json
import sys

import tintdb
from tintdb import errors

host, port = sys.argv[1], int(sys.argv[2])
client = tintdb.HttpClient(host=host, port=port, settings=tintdb.Settings(allow_reset=True))
out = {"heartbeat": client.heartbeat() > 0}
col = client.create_collection("thin", metadata={"hnsw:space": "l2"})
col.add(
    ids=["a", "b", "c"],
    embeddings=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    documents=["alpha", "beta", "gamma"],
    metadatas=[{"n": 1}, {"n": 2}, {"n": 3}],
)
found = col.query(query_embeddings=[[0.9, 0.1, 0.0]], n_results=2, where={"n": {"$lte": 2}})
out["query_ids"] = found["ids"]
out["query_documents"] = found["documents"]
got = col.get(ids=["b"], include=["embeddings", "metadatas", "documents"])
out["get"] = {
    "ids": got["ids"],
    "documents": got["documents"],
    "metadatas": got["metadatas"],
    "embeddings": got["embeddings"].tolist(),
    "embeddings_type": type(got["embeddings"]).__name__,
}
out["count"] = col.count()
try:
    col.add(ids=["d"], documents=["no vector for me"])
    out["no_ef_error"] = None
except errors.EmbeddingFunctionError as exc:
    out["no_ef_error"] = str(exc)
try:
    col.query(query_texts=["alpha"], n_results=1)
    out["no_ef_query_error"] = None
except errors.EmbeddingFunctionError as exc:
    out["no_ef_query_error"] = str(exc)
out["count_after"] = col.count()


async def use_async() -> list[str]:
    aclient = await tintdb.AsyncHttpClient(host=host, port=port)
    acol = await aclient.get_collection("thin")
    result = await acol.get(where={"n": 3})
    return result["ids"]


out["async_get"] = asyncio.run(use_async())
print(json.dumps(out))
"""


# A function of the user's own, through the protocol the thin client ships, and the
# server named by Settings as chromadb code names it.
OWN_FUNCTION = """
import json
import sys

import tintdb
from tintdb.api.types import Documents, EmbeddingFunction, Embeddings


class Lengths(EmbeddingFunction[Documents]):
    def __call__(self, input: Documents) -> Embeddings:
        return [[float(len(text)), 1.0] for text in input]


settings = tintdb.Settings(
    chroma_api_impl="chromadb.api.fastapi.FastAPI",
    chroma_server_host=sys.argv[1],
    chroma_server_http_port=int(sys.argv[2]),
)
client = tintdb.Client(settings)
col = client.get_or_create_collection("own-function", embedding_function=Lengths())
col.add(ids=["short", "long"], documents=["abc", "abcdefghij"])
found = col.query(query_texts=["abcdefghi"], n_results=1)
print(json.dumps({"nearest": found["ids"][0], "legacy": Lengths().is_legacy()}))
"""


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH, no user site: the thin virtualenv must stand on its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONNOUSERSITE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args: list[str], cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _last_json(stdout: str) -> dict[str, Any]:
    return dict(json.loads(stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def thin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A wheel of tintdb-client built from a clean copy of the tree, and a virtualenv
    with it (and its dependencies only) installed."""
    base = tmp_path_factory.mktemp("thin")
    clone = base / "clone"
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info", "dist")
    shutil.copytree(ROOT / "tintdb", clone / "tintdb", ignore=junk)
    shutil.copytree(ROOT / "clients" / "python", clone / "clients" / "python", ignore=junk)
    wheels = base / "wheels"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "-q", "-w", str(wheels), "./clients/python"], clone)
    (wheel,) = wheels.glob("tintdb_client-*.whl")

    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], base)
    python = venv / "bin" / "python"
    _run([*pip, "--python", str(python), "install", "-q", str(wheel)], base)
    yield {"wheel": wheel, "venv": venv, "python": python, "base": base}


def test_wheel_ships_only_the_client_modules(thin: dict[str, Path]) -> None:
    with zipfile.ZipFile(thin["wheel"]) as whl:
        names = set(whl.namelist())
    package = {n for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert package == SHIPPED
    entry_points = [n for n in names if n.endswith("entry_points.txt")]
    assert entry_points == []  # no `tintdb` command: the server is not here


def test_thin_install_needs_only_httpx_orjson_numpy(thin: dict[str, Path]) -> None:
    script = thin["base"] / "inspect_thin.py"
    script.write_text(textwrap.dedent(INSPECT))
    report = _last_json(_run([str(thin["python"]), str(script), *ABSENT_MODULES], thin["base"]))

    assert Path(report["file"]).is_relative_to(thin["venv"])  # not the repository's tintdb
    assert sorted(report["requires"]) == sorted(ALLOWED_REQUIRES)
    assert report["version"] == report["tintdb_version"]
    assert report["absent"] == dict.fromkeys(ABSENT_MODULES, True)
    assert report["names"] == ["HttpClient", "AsyncHttpClient", "errors", "Settings"]
    for message in (report["persistent_error"], report["ephemeral_error"]):
        assert message is not None
        assert "pip install tintdb" in message
        assert "HttpClient" in message

    installed = _run(
        [sys.executable, "-m", "pip", "--python", str(thin["python"]), "list", "--format", "json"],
        thin["base"],
    )
    distributions = {d["name"].lower() for d in json.loads(installed)}
    assert "tintdb-client" in distributions
    assert "tintdb" not in distributions
    assert not distributions & set(ABSENT_DISTRIBUTIONS)


def test_thin_client_round_trip_against_a_server(thin: dict[str, Path], tmp_path: Path) -> None:
    script = thin["base"] / "workload.py"
    script.write_text(textwrap.dedent(WORKLOAD))
    with TintServer(tmp_path / "store") as server:
        out = _last_json(
            _run([str(thin["python"]), str(script), server.host, str(server.port)], tmp_path)
        )

    assert out["heartbeat"] is True
    assert out["query_ids"] == [["a", "b"]]
    assert out["query_documents"] == [["alpha", "beta"]]
    assert out["get"] == {
        "ids": ["b"],
        "documents": ["beta"],
        "metadatas": [{"n": 2}],
        "embeddings": [[0.0, 1.0, 0.0]],
        "embeddings_type": "ndarray",
    }
    assert out["count"] == 3
    # No default embedding function in the thin client: documents alone are refused,
    # with a message that says what to do, and nothing is written.
    for key in ("no_ef_error", "no_ef_query_error"):
        assert out[key] is not None
        assert "no embedding function" in out[key]
        assert "Pass embeddings" in out[key]
    assert out["count_after"] == 3
    assert out["async_get"] == ["c"]


def test_thin_client_imports_what_chroma_users_write(thin: dict[str, Path]) -> None:
    from test_imports import statements

    script = thin["base"] / "imports.py"
    lines = [f"exec({stmt!r}, {{}})" for stmt in statements("thin")]
    lines += [
        f"for stmt in {statements('full')!r}:",
        "    try:",
        "        exec(stmt, {})",
        "    except ImportError:",
        "        continue",
        "    raise SystemExit('a full-package import worked in the thin client: ' + stmt)",
        "print('ok')",
    ]
    script.write_text("\n".join(lines) + "\n")
    assert _run([str(thin["python"]), str(script)], thin["base"]).strip() == "ok"


def test_thin_client_takes_a_function_of_ones_own(thin: dict[str, Path], tmp_path: Path) -> None:
    script = thin["base"] / "own_function.py"
    script.write_text(textwrap.dedent(OWN_FUNCTION))
    with TintServer(tmp_path / "store") as server:
        out = _last_json(
            _run([str(thin["python"]), str(script), server.host, str(server.port)], tmp_path)
        )
    assert out == {"nearest": ["long"], "legacy": True}
