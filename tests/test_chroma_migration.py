"""Migrating from real Chroma: a persistent directory and a ``chroma run`` server made by
chromadb 1.5.9 (in .venv-chromadb, installed by tests/peers/setup.sh; ``make test``
runs it). Without that virtualenv these tests fail, never skip.

The directory is built once per test run (tests/migrate/make_chroma.py), shared by the
test workers, and never written to: each server gets a copy of it. Its ANSWERS file
holds every record and query result as chromadb itself returns them.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import psutil
import pytest

import tintdb
from tintdb._chroma import ChromaFileReader, chroma_cosine, open_chroma_directory

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("TINTDB_CHROMADB_VENV", ROOT / ".venv-chromadb"))
MAKER = ROOT / "tests" / "migrate" / "make_chroma.py"
TENANTS = ["default_tenant", "acme"]


def _venv_bin(name: str) -> Path:
    path = VENV / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `bash tests/peers/setup.sh` (make test does)")
    return path


@pytest.fixture(scope="session")
def chroma(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """(the Chroma directory, what chromadb returned from it), built once for all workers."""
    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker's base is one folder of this run's; without it, the base's
    # parent holds every run's, and an old run's answers would be read.
    shared = (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / "chroma-fixture"
    shared.mkdir(exist_ok=True)
    with open(shared / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        answers = shared / "answers.json"
        if not answers.exists():
            shutil.rmtree(shared / "chroma", ignore_errors=True)
            subprocess.run(
                [str(_venv_bin("python")), str(MAKER), str(shared / "chroma"), str(answers)],
                check=True,
                capture_output=True,
                timeout=300,
            )
    return shared / "chroma", orjson.loads(answers.read_bytes())


def _check_against_chroma(store: Path, answers: dict[str, Any]) -> None:
    """Every collection and record of ``store`` is exactly what chromadb returned, and
    queries answer with the same ids in the same order."""
    queries = np.asarray(answers["queries"], dtype=np.float32)
    for path, expected in answers["collections"].items():
        tenant, database, name = path.split("/")
        client = tintdb.PersistentClient(path=str(store), tenant=tenant, database=database)
        try:
            col = client.get_collection(name)
            assert col.count() == expected["count"], path
            assert col.metadata == expected["metadata"], path
            wanted = expected["configuration"]
            assert col.configuration["hnsw"]["space"] == wanted["hnsw"]["space"], path
            assert col.configuration["embedding_function"] == wanted["embedding_function"], path
            got = col.get(include=["embeddings", "documents", "uris", "metadatas"])
            records = {
                rid: {
                    "embedding": base64.b64encode(np.asarray(e, "<f4").tobytes()).decode(),
                    "document": d,
                    "uri": u,
                    "metadata": m,
                }
                for rid, e, d, u, m in zip(
                    got["ids"],
                    got["embeddings"],
                    got["documents"],
                    got["uris"],
                    got["metadatas"],
                    strict=True,
                )
            }
            # Chroma shows {} for a record whose only "metadata" is its document or uri;
            # tintdb stores an empty metadata as none (a documented difference).
            wanted_records = {
                rid: {**r, "metadata": r["metadata"] or None}
                for rid, r in expected["records"].items()
            }
            assert records == wanted_records, path
            if "query" in expected:
                k = len(expected["query"][0])
                plain = col.query(query_embeddings=queries, n_results=k, include=[])
                assert plain["ids"] == expected["query"], path
                filtered = col.query(
                    query_embeddings=queries,
                    n_results=k,
                    where={"group": {"$in": ["g1", "g2"]}},
                    include=[],
                )
                assert filtered["ids"] == expected["query_filtered"], path
        finally:
            client.close()


def test_the_fixture_has_what_the_tests_need(chroma: tuple[Path, dict[str, Any]]) -> None:
    """All three spaces, list metadata, uris, records without documents or metadata, and
    vectors both in the index files and only in Chroma's log."""
    _, answers = chroma
    cols = answers["collections"]
    assert {c["configuration"]["hnsw"]["space"] for c in cols.values()} == {"l2", "ip", "cosine"}
    records = [r for c in cols.values() for r in c["records"].values()]
    assert any(isinstance(v, list) for r in records for v in (r["metadata"] or {}).values())
    assert any(r["uri"] for r in records) and any(r["document"] is None for r in records)
    assert any(r["metadata"] is None for r in records)
    directory, _ = chroma
    reader = ChromaFileReader(directory)
    spec = next(s for s in reader.collections() if s.name == "space-l2")
    from tintdb._chroma import _Vectors

    vectors = _Vectors(reader, spec)
    assert vectors.index is not None and len(vectors.index.id_to_label) >= 1000
    assert {"r4", "r6", "new-1", "r3"} <= set(vectors.tail)  # changes after the persist
    reader.close()


def test_directory_read_from_its_files(chroma: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    directory, answers = chroma
    reader = open_chroma_directory(directory)  # chromadb is not installed here
    assert isinstance(reader, ChromaFileReader)
    reader.close()
    dest = tmp_path / "tint"
    result = subprocess.run(
        [sys.executable, "-m", "tintdb", "copy", str(directory), str(dest), "--sample", "5000"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "read from its files; chromadb is not installed" in result.stdout + result.stderr
    _check_against_chroma(dest, answers)


def test_directory_read_through_chromadb(
    chroma: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The same copy, with tintdb running where chromadb is installed: through Chroma's
    own code; the report is the same."""
    directory, answers = chroma
    dest = tmp_path / "tint"
    report_file = tmp_path / "report.json"
    result = subprocess.run(
        [
            str(_venv_bin("python")),
            "-m",
            "tintdb",
            "copy",
            str(directory),
            str(dest),
            "-q",
            "--sample",
            "5000",
            "--report",
            str(report_file),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = orjson.loads(report_file.read_bytes())
    assert "through chromadb 1.5.9" in report["source"]
    assert report["ok"] and all(c["sampled"] == c["source_count"] for c in report["collections"])
    _check_against_chroma(dest, answers)


def test_cosine_vectors_as_chroma_returns_them() -> None:
    """Chroma normalises in a cosine space and multiplies back by the norm: a vector
    comes back a bit off, and tintdb's reader gives exactly Chroma's bits."""
    v = np.array([[0.5, 0.5, 0.0], [3.0, 4.0, 0.0]], dtype=np.float32)
    got = chroma_cosine(v)
    assert got[0].tolist() == [np.float32(0.49999997), np.float32(0.49999997), 0.0]
    assert got[1].tolist() == [3.0, 4.0, 0.0]


@contextlib.contextmanager
def _chroma_server(directory: Path) -> Iterator[str]:
    """``chroma run`` on port 0; the port it got is read from the process's sockets."""
    log = open(directory.parent / "chroma-run.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(_venv_bin("chroma")),
            "run",
            "--path",
            str(directory),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None:
            assert proc.poll() is None, (directory.parent / "chroma-run.log").read_text()
            assert time.monotonic() < deadline, "chroma run did not start"
            with contextlib.suppress(psutil.Error):
                for conn in psutil.Process(proc.pid).net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN:
                        candidate = f"http://127.0.0.1:{conn.laddr.port}"
                        with contextlib.suppress(httpx.HTTPError):
                            if httpx.get(candidate + "/api/v2/heartbeat", timeout=2).is_success:
                                url = candidate
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_chroma_server_to_tintdb_and_back(
    chroma: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Read a running Chroma server through its REST API (a token is sent, as a
    deployment behind an authenticating proxy needs), then write a store back into a
    database of that server, which Chroma then serves."""
    directory, answers = chroma
    served = tmp_path / "served"
    shutil.copytree(directory, served)
    with _chroma_server(served) as url:
        plan = subprocess.run(
            [
                sys.executable,
                "-m",
                "tintdb",
                "copy",
                url,
                str(tmp_path / "x"),
                "--dry-run",
                "--tenant",
                "default_tenant",
                "--tenant",
                "acme",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "default_tenant/default_database/space-l2: 1,499 records, dimension 16" in plan
        dest = tmp_path / "tint"
        report = tintdb.copy(
            url, str(dest), tenants=TENANTS, source_token="any", sample=5000, progress=False
        )
        assert report.ok, report.as_dict()
        _check_against_chroma(dest, answers)

        # and into Chroma: two collections dropped there, copied back from tintdb
        client = tintdb.HttpClient(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]))
        client.delete_collection("space-cosine")
        client.delete_collection("space-l2")
        back = tintdb.copy(str(dest), url, collections=["space-*"], sample=5000, progress=False)
        # verified: cosine vectors come back exactly as Chroma normalises them
        assert back.ok, back.as_dict()
        assert sorted((c.spec.name, c.written, c.skipped) for c in back.collections) == [
            ("space-cosine", 1499, 0),
            ("space-ip", 0, 1499),
            ("space-l2", 1499, 0),
        ]
        cosine = client.get_collection("space-cosine")
        assert cosine.count() == 1499
        assert cosine.configuration["hnsw"]["space"] == "cosine"
        assert cosine.metadata == {"hnsw:space": "cosine", "hnsw:search_ef": 1500, "v": 2}
        k = len(answers["collections"]["default_tenant/default_database/space-cosine"]["query"][0])
        got = cosine.query(query_embeddings=np.asarray(answers["queries"], np.float32), n_results=k)
        expected = answers["collections"]["default_tenant/default_database/space-cosine"]["query"]
        assert got["ids"] == expected
        client.close()
