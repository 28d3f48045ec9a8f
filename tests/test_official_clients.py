"""The official Chroma clients, unchanged, against a real ``tintdb run``.

- Python: PyPI ``chromadb-client`` (pinned in ``tests/official/setup.sh``) in its own
  virtualenv, ``.venv-chroma-client/`` at the repository root, running
  ``tests/official/python_workload.py``.
- JavaScript: npm ``chromadb`` (pinned by ``tests/official/js/package-lock.json``) running
  ``tests/official/js/workload.mjs`` under Node.

Each workload runs a fixed script of calls and prints what every call returned (or which
exception it raised) as JSON; the tests here compare that with what tintdb must answer.
The client environments are installed by ``tests/official/setup.sh``; when they are
missing the tests fail (never skip), so CI cannot pass without exercising them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _server import TintServer

import tintdb

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL = ROOT / "tests" / "official"
SETUP = OFFICIAL / "setup.sh"
PY_VENV = Path(os.environ.get("TINTDB_CHROMA_CLIENT_VENV", ROOT / ".venv-chroma-client"))
PY_WORKLOAD = OFFICIAL / "python_workload.py"
JS_DIR = OFFICIAL / "js"
JS_WORKLOAD = JS_DIR / "workload.mjs"
RUN_TIMEOUT = 120.0
HOW_TO_FIX = (
    "run `bash tests/official/setup.sh` (the Makefile's test target does) and re-run the tests"
)


def pinned_python_client() -> str:
    found = re.search(r'^CHROMA_CLIENT_VERSION="([^"]+)"', SETUP.read_text(), re.MULTILINE)
    assert found, f"no CHROMA_CLIENT_VERSION in {SETUP}"
    return found.group(1)


def pinned_js_client() -> str:
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    return str(lock["packages"]["node_modules/chromadb"]["version"])


def python_client() -> Path:
    """The client venv's interpreter; fails the test if setup.sh has not installed it."""
    python = PY_VENV / "bin" / "python"
    stamp = PY_VENV / f".installed-chromadb-client-{pinned_python_client()}"
    if not (python.exists() and stamp.exists()):
        pytest.fail(
            f"chromadb-client {pinned_python_client()} is not installed in {PY_VENV}: {HOW_TO_FIX}",
            pytrace=False,
        )
    return python


def node() -> str:
    """The node binary, once the locked npm client is installed; fails the test otherwise."""
    exe = shutil.which("node")
    if exe is None:
        pytest.fail(
            f"node is not on PATH (Node >= 20 is needed for the npm client): {HOW_TO_FIX}",
            pytrace=False,
        )
    manifest = JS_DIR / "node_modules" / "chromadb" / "package.json"
    installed = json.loads(manifest.read_text())["version"] if manifest.exists() else None
    if installed != pinned_js_client():
        pytest.fail(
            f"npm chromadb {pinned_js_client()} is not installed in {JS_DIR} "
            f"(found {installed}): {HOW_TO_FIX}",
            pytrace=False,
        )
    return exe


def run_workload(argv: list[str], server: TintServer, cwd: Path) -> dict[str, Any]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "NODE_"))
    }
    env["ANONYMIZED_TELEMETRY"] = "False"
    proc = subprocess.run(
        [*argv, server.url],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert proc.returncode == 0, (
        f"{argv} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\n"
        f"server:\n{server.output()}"
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------- comparing results


@dataclass(frozen=True)
class Raised:
    """A step that raised ``error`` (a class name), from ``module``, with ``message_part``."""

    error: str
    module: str | None = None
    message_part: str | None = None


def normalize(value: Any) -> Any:
    """Get/query results -> only the fields the result says it includes.

    The Python client gives ``None`` and the JavaScript client ``[]`` for a field that was
    not asked for, and they name the echo ``included`` / ``include``. A field that was not
    asked for but came back non-empty is kept, so the comparison shows it.
    """
    if not (
        isinstance(value, dict) and "ids" in value and ("include" in value or "included" in value)
    ):
        return value
    include = value.get("included", value.get("include")) or []
    out: dict[str, Any] = {"ids": value["ids"], "include": sorted(include)}
    for key in ("embeddings", "documents", "metadatas", "uris", "distances"):
        if key in include or value.get(key) not in (None, []):
            out[key] = value.get(key)
    return out


def mismatch(actual: Any, expected: Any, where: str = "") -> str | None:
    """Why ``actual`` differs from ``expected`` (floats to 1e-6), or None."""
    if isinstance(expected, Raised):
        if not (isinstance(actual, dict) and actual.get("error") == expected.error):
            return f"{where}: expected {expected.error} to be raised, got {actual!r}"
        if expected.module is not None and actual.get("module") != expected.module:
            return f"{where}: expected an exception from {expected.module}, got {actual!r}"
        if expected.message_part is not None and expected.message_part not in actual.get(
            "message", ""
        ):
            return f"{where}: expected {expected.message_part!r} in the message, got {actual!r}"
        return None
    if (
        isinstance(expected, float)
        and isinstance(actual, (int, float))
        and not isinstance(actual, bool)
    ):
        return (
            None
            if actual == pytest.approx(expected, abs=1e-6)
            else f"{where}: {actual!r} != {expected!r}"
        )
    if isinstance(expected, dict) and isinstance(actual, dict):
        if set(actual) != set(expected):
            return f"{where}: keys {sorted(actual)} != {sorted(expected)} in {actual!r}"
        for key in expected:
            why = mismatch(actual[key], expected[key], f"{where}.{key}")
            if why:
                return why
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(actual) != len(expected):
            return f"{where}: {actual!r} != {expected!r}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            why = mismatch(a, e, f"{where}[{i}]")
            if why:
                return why
        return None
    if type(actual) is not type(expected) or actual != expected:
        return f"{where}: {actual!r} != {expected!r}"
    return None


def check(result: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every expected step, all mismatches reported at once."""
    problems = []
    for step, want in expected.items():
        if step not in result:
            problems.append(f"{step}: missing from the workload output")
            continue
        why = mismatch(normalize(result[step]), normalize(want), step)
        if why:
            problems.append(why)
    assert not problems, "\n".join(problems)


def rec(ids: list[Any], include: list[str], **fields: Any) -> dict[str, Any]:
    """An expected get/query result: ``ids`` plus exactly the included fields."""
    assert sorted(fields) == sorted(include), (fields, include)
    return {"ids": ids, "include": sorted(include), **fields}


A_MD = {"kind": "fruit", "n": 1, "ripe": True}
B_MD = {"kind": "fruit", "n": 2, "ripe": False}
C_MD = {"kind": "veg", "n": 3, "ripe": True}
D_MD = {"kind": "fruit", "n": 4, "ripe": True}
DOCS = ["apple pie", "banana split", "carrot cake", "date bread"]
DEFAULT_GET = ["documents", "metadatas"]
DEFAULT_QUERY = ["documents", "metadatas", "distances"]


def common_expectations(collection_id: str) -> dict[str, Any]:
    """What both clients must see for the shared part of the workloads."""
    fruits = {"id": collection_id, "name": "fruits", "metadata": {"topic": "food"}}
    return {
        "heartbeat_positive": True,
        "version": tintdb.__version__,
        "get": fruits,
        "get_or_create_existing": fruits,  # the existing collection, metadata unchanged
        "list": ["fruits", "veggies"],
        "count_collections": 2,
        "count_empty": 0,
        "add": None,
        "count": 4,
        "count_after_errors": 4,  # neither failed add wrote anything
        "get_ids": rec(
            ["a", "c"], DEFAULT_GET, documents=["apple pie", "carrot cake"], metadatas=[A_MD, C_MD]
        ),
        "get_all": rec(
            ["a", "b", "c", "d"], DEFAULT_GET, documents=DOCS, metadatas=[A_MD, B_MD, C_MD, D_MD]
        ),
        "get_where_eq": rec(["a", "b", "d"], []),
        "get_where_and": rec(["b", "d"], []),
        "get_where_or": rec(["a", "c"], []),
        "get_where_in": rec(["b", "d"], []),
        "get_where_ne_bool": rec(["b"], []),
        "get_where_document": rec(["c"], DEFAULT_GET, documents=["carrot cake"], metadatas=[C_MD]),
        "get_where_document_not": rec(["b"], ["documents"], documents=["banana split"]),
        "get_where_and_document": rec(["b"], ["metadatas"], metadatas=[B_MD]),
        "get_embeddings_only": rec(
            ["b", "d"], ["embeddings"], embeddings=[[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]
        ),
        "get_limit_offset": rec(["b", "c"], []),
        "query": rec(
            [["a", "d"]],
            DEFAULT_QUERY,
            documents=[["apple pie", "date bread"]],
            metadatas=[[A_MD, D_MD]],
            distances=[[0.0, 1.0]],
        ),
        "query_include": rec(
            [["a", "d"]],
            ["embeddings", "distances"],
            embeddings=[[[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]],
            distances=[[0.0, 1.0]],
        ),
        "query_where": rec(
            [["c"]],
            DEFAULT_QUERY,
            documents=[["carrot cake"]],
            metadatas=[[C_MD]],
            distances=[[2.0]],
        ),
        "query_where_document": rec(
            [["a", "b"]],
            ["documents", "distances"],
            documents=[["apple pie", "banana split"]],
            distances=[[0.0, 2.0]],
        ),
        # [0, 1, 0.1] is 0.01 (squared) from b; float32 makes that 0.010000000707805157.
        "query_two": rec([["c"], ["b"]], ["distances"], distances=[[0.0], [0.01]]),
        "query_ids": rec([["d", "c"]], []),
        "query_too_many": rec([["a", "d", "b", "c"]], []),
        "update": None,
        "update_embedding": None,
        "update_missing_id": None,  # silently ignored, as on Chroma
        "count_after_upsert": 5,
        "indexing_status_settled": {
            "num_indexed_ops": 5,
            "num_unindexed_ops": 0,
            "total_ops": 5,
            "op_indexing_progress": 1.0,
        },
        "delete_ids": {"deleted": 1},
        "delete_where": {"deleted": 2},  # c and the upserted e
        "get_after_delete": rec(
            ["a", "d"], ["documents"], documents=["apple crumble", "date bread"]
        ),
        "count_after_delete": 2,
        "modify": None,
        "get_renamed": {
            "id": collection_id,
            "name": "fruits_v2",
            "metadata": {"topic": "food", "v": 2},
        },
        "count_renamed": 2,
        "delete_collection": None,
        "list_after_delete": ["fruits_v2"],
        "cosine_add": None,
        # 1 - cos: x is parallel, xy at 45 degrees (1 - 1/sqrt 2), y orthogonal.
        "cosine_query": rec([["x", "xy", "y"]], ["distances"], distances=[[0.0, 0.29289323, 1.0]]),
        "tagged_add": None,
        # $contains / $not_contains on a list-valued metadata key look at its elements
        "tagged_contains": rec(
            ["t1", "t3"],
            ["metadatas", "uris"],
            metadatas=[{"tags": ["red", "big"]}, {"tags": ["red"], "w": 0.5}],
            uris=["file:///1", "file:///3"],
        ),
        "tagged_not_contains": rec(["t2"], []),
        "tagged_nin": rec(["t1", "t2"], []),  # $nin (like $ne) matches records without the key
        "tagged_regex": rec(["t2", "t3"], []),
        "tagged_delete_document": {"deleted": 1},
        "tagged_after_delete": rec(
            ["t1", "t2"],
            ["uris", "documents"],
            uris=["file:///1", "file:///2"],
            documents=["one", "two"],
        ),
        "create_tenant": None,
        "create_database": None,
        "create_database_two": None,
        "get_database": {"name": "db_one", "tenant": "acme"},
        "list_databases": ["db_one", "db_two"],
        # a client scoped to acme/db_one sees only that database's collections
        "scoped_collections": ["fruits"],
        "delete_database": None,
        "list_databases_after": ["db_one"],
        "list_after_reset": [],
    }


def made(result: dict[str, Any], step: str, name: str, metadata: Any = None) -> dict[str, Any]:
    """The expected description of a collection a step created, under the UUID it was given."""
    got = result.get(step)
    cid = got.get("id") if isinstance(got, dict) else None
    try:
        uuid.UUID(str(cid))
    except ValueError:
        cid = f"<a UUID, not {cid!r}>"
    return {"id": cid, "name": name, "metadata": metadata}


def upserted(a_metadata: dict[str, Any]) -> dict[str, Any]:
    return rec(
        ["a", "e"],
        ["metadatas", "documents", "embeddings"],
        metadatas=[a_metadata, {"kind": "veg", "n": 5}],
        documents=["apple crumble", "eggplant stew"],
        embeddings=[[0.5, 0.5, 0.0], [0.0, 0.0, 2.0]],
    )


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TintServer]:
    with TintServer(tmp_path / "store", "--allow-reset") as srv:
        yield srv


# ---------------------------------------------------------------- Python client


def test_python_client_workload(server: TintServer) -> None:
    python = python_client()
    result = run_workload([str(python), str(PY_WORKLOAD)], server, OFFICIAL)
    assert result["client_version"] == pinned_python_client()
    fruits = made(result, "create", "fruits", {"topic": "food"})
    cid = fruits["id"]
    errors = "chromadb.errors"
    expected = common_expectations(cid) | {
        "create": fruits,
        "get_or_create_new": made(result, "get_or_create_new", "veggies"),
        "async_heartbeat_positive": True,
        # copied by the client from the chroma-trace-id header, as Chroma's server sends it
        "error_trace_id": "0" * 32,
        # tintdb sends the wire name UniqueConstraintError where Chroma sends ChromaError.
        "create_duplicate": Raised("UniqueConstraintError", errors, "[fruits] already exists"),
        "get_missing": Raised("NotFoundError", errors, "[no_such_collection] does not exist"),
        "get_old_name": Raised("NotFoundError", errors),
        "delete_collection_missing": Raised("NotFoundError", errors),
        # Chroma ignores an add of an existing id; tintdb refuses it, and the client maps the name.
        "add_existing_id": Raised("IDAlreadyExistsError", errors, "already exist"),
        "add_wrong_dimension": Raised("InvalidArgumentError", errors, "dimension of 3, got 2"),
        "query_wrong_dimension": Raised("InvalidArgumentError", errors, "dimension of 3, got 2"),
        # Documents without embeddings are embedded by the client itself: with no function
        # given, it takes the one the collection's schema names, which for a collection made
        # without one is the default model, as against Chroma; its onnxruntime is not
        # installed with chromadb-client, so nothing reaches the server.
        "update_document_no_ef": Raised("ValueError", "builtins", "onnxruntime"),
        "peek": rec(
            ["a", "b"],
            ["metadatas", "documents", "embeddings"],
            metadatas=[A_MD, B_MD],
            documents=DOCS[:2],
            embeddings=[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        ),
        # update merges metadata, and a None value (which only Python sends) deletes the key
        "get_after_update": rec(
            ["a", "b"],
            ["metadatas", "documents", "embeddings"],
            metadatas=[{"kind": "fruit", "n": 10}, B_MD],
            documents=["apple tart", "banana split"],
            embeddings=[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]],
        ),
        "upsert": None,
        "get_after_upsert": upserted({"kind": "fruit", "n": 10, "extra": "x"}),
        "create_cosine": made(result, "create_cosine", "angles"),
        "create_default_ef": made(result, "create_default_ef", "with_default_ef"),
        "default_ef_add": None,
        "list_all_in_order": ["fruits_v2", "angles", "with_default_ef", "tagged"],  # creation order
        "list_page": ["angles", "with_default_ef"],
        "create_tenant_again": Raised("UniqueConstraintError", errors, "[acme] already exists"),
        "get_tenant": {"name": "acme"},
        "get_tenant_missing": Raised("NotFoundError", errors, "[no_such_tenant] not found"),
        "get_database_missing": Raised("NotFoundError", errors, "[no_such_db] not found"),
        # HttpClient checks its tenant and database when it is constructed
        "client_missing_database": Raised("NotFoundError", errors, "[nope] not found"),
        "default_unchanged": ["fruits_v2", "angles", "with_default_ef", "tagged"],
        "reset": True,
        "default_ef_query": rec(
            [["p"]], ["distances", "embeddings"], distances=[[0.0]], embeddings=[[[0.25, 0.5]]]
        ),
    }
    check(result, expected)
    assert set(result) == set(expected) | {"client_version"}, "a workload step is not checked"


# ---------------------------------------------------------------- JavaScript client


def test_javascript_client_workload(server: TintServer) -> None:
    exe = node()
    result = run_workload([exe, str(JS_WORKLOAD)], server, JS_DIR)
    assert result["client_version"] == pinned_js_client()
    fruits = made(result, "create", "fruits", {"topic": "food"})
    cid = fruits["id"]
    # The JS client maps errors by HTTP status only and drops the server's message on 404/409.
    expected = (
        common_expectations(cid)
        | {
            "create": fruits,
            "create_duplicate": Raised("ChromaUniqueError"),  # 409
            "get_missing": Raised("ChromaNotFoundError"),  # 404
            "get_old_name": Raised("ChromaNotFoundError"),
            "delete_collection_missing": Raised("ChromaNotFoundError"),
            "add_existing_id": Raised("ChromaUniqueError"),  # 409 IDAlreadyExists
            "add_wrong_dimension": Raised(
                "ChromaClientError", None, "dimension of 3, got 2"
            ),  # 400
            "query_wrong_dimension": Raised("ChromaClientError", None, "dimension of 3, got 2"),
            "get_or_create_new": made(result, "get_or_create_new", "veggies"),
            "peek": rec(["a", "b"], DEFAULT_GET, metadatas=[A_MD, B_MD], documents=DOCS[:2]),
            # rows() needs the echoed include; it leaves out fields that were not included
            "get_rows": [{"id": "a", "document": "apple pie", "metadata": A_MD}],
            "query_rows": [[{"id": "a", "document": "apple pie", "distance": 0.0}]],
            # JS drops null metadata values before sending, so "ripe" cannot be deleted from JS
            "get_after_update": rec(
                ["a", "b"],
                ["metadatas", "documents", "embeddings"],
                metadatas=[{"kind": "fruit", "n": 10, "ripe": True}, B_MD],
                documents=["apple tart", "banana split"],
                embeddings=[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]],
            ),
            "upsert": None,
            "get_after_upsert": upserted({"kind": "fruit", "n": 10, "ripe": True, "extra": "x"}),
            "create_cosine": made(result, "create_cosine", "angles"),
            "list_all_in_order": ["fruits_v2", "angles", "tagged"],  # creation order
            "list_page": ["angles", "tagged"],
            "create_tenant_again": Raised("ChromaUniqueError"),  # 409
            "get_tenant": "acme",
            "get_tenant_missing": Raised("ChromaNotFoundError"),
            "get_database_missing": Raised("ChromaNotFoundError"),
            "default_unchanged": ["fruits_v2", "angles", "tagged"],
            "reset": None,
        }
    )
    check(result, expected)
    assert set(result) == set(expected) | {"client_version"}, "a workload step is not checked"
