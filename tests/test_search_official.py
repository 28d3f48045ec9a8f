"""The official clients' ``collection.search``, ``fork`` and ``fork_count`` against a real
``tintdb run``, unchanged (tests/official/python_search_workload.py in the pinned
chromadb-client's own virtualenv, tests/official/js/search_workload.mjs under Node).

Each workload prints the JSON of the searches it built with its own builders; the test
runs those same payloads embedded, on the same store, and the answers must be equal:
the same records in the same order, the same scores to the last bit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _server import TintServer
from test_official_clients import (
    JS_DIR,
    OFFICIAL,
    node,
    pinned_js_client,
    pinned_python_client,
    python_client,
    run_workload,
    server,  # noqa: F401 (the fixture)
)

import tintdb


def plain(value: Any) -> Any:
    """An embedded answer as the workloads print theirs: sparse vectors as plain dicts."""
    if isinstance(value, tintdb.SparseVector):
        return {"indices": value.indices, "values": value.values}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def embedded(path: Path, name: str, payloads: list[dict[str, Any]]) -> Any:
    with tintdb.PersistentClient(str(path)) as client:
        return client.get_collection(name).search(payloads)


def check_common(result: dict[str, Any], name: str, path: Path) -> Any:
    payloads = result["payloads"]
    assert len(payloads) == 7
    mine = embedded(path, name, payloads)
    got = result["search"]
    assert "error" not in got, got
    assert got["result"] == plain(dict(mine))
    assert got["rows"] == plain(mine.rows())
    ids = got["result"]["ids"]
    assert all(ids[:5]), ids  # every ranked search found records
    assert got["result"]["select"][2] == ["#document", "#embedding", "#metadata", "#score"]
    return mine


def test_python_client_search_and_fork(server: TintServer) -> None:  # noqa: F811
    result = run_workload(
        [str(python_client()), str(OFFICIAL / "python_search_workload.py")], server, OFFICIAL
    )
    assert result["client_version"] == pinned_python_client()
    mine = check_common(result, "hybrid", server.path)
    assert result["search"]["result"]["ids"][5] == ["r2", "r3", "r4"]  # no rank: stored order
    assert result["one"] == plain(dict(embedded(server.path, "hybrid", result["payloads"][1:2])))
    assert result["get_sparse"] == [
        {"team": "infra", "sev": 4, "terms": {"indices": [1, 6], "values": [1.0, 1.0]}}
    ]
    for step, words in (("no_knn", "has no Knn"), ("bad_key", "searches #embedding only")):
        assert result[step]["error"] == "InvalidArgumentError", result[step]
        assert result[step]["module"] == "chromadb.errors"
        assert words in result[step]["message"]
    assert result["read_level"] == [["r0"]]
    fork = result["fork"]
    assert (fork["name"], fork["count"], fork["source_count"], fork["fork_count"]) == (
        "hybrid_fork",
        13,
        12,
        1,
    )
    assert fork["search"]["ids"] == plain(dict(mine))["ids"][1:2]
    assert fork["search"]["scores"] == plain(dict(mine))["scores"][1:2]
    assert result["fork_taken"]["error"] in ("UniqueConstraintError", "ChromaError"), result[
        "fork_taken"
    ]


def test_js_client_search_and_fork(server: TintServer, tmp_path: Path) -> None:  # noqa: F811
    result = run_workload([node(), str(JS_DIR / "search_workload.mjs")], server, JS_DIR)
    assert result["client_version"] == pinned_js_client()
    mine = check_common(result, "hybrid_js", server.path)
    assert result["search"]["result"]["ids"][5] == ["j2", "j3", "j4"]
    assert "has no Knn" in result["no_knn"]["message"]  # the server's message, shown
    assert result["read_level"] == [["j0"]]
    fork = result["fork"]
    assert (fork["name"], fork["count"], fork["source_count"], fork["fork_count"]) == (
        "hybrid_js_fork",
        11,
        10,
        1,
    )
    assert fork["search"]["ids"] == plain(dict(mine))["ids"][1:2]
    assert "error" in result["fork_taken"]
