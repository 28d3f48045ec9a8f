"""``tintdb copy`` / export / import between tintdb stores, servers and export files.

Chroma sources are in test_chroma_migration.py; backups in test_backup.py.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from _server import TintServer

import tintdb
from tintdb import _copy
from tintdb._endpoints import open_reader, open_writer
from tintdb.errors import InvalidArgumentError

DIM = 12


def _fill(path: Path) -> dict[str, Any]:
    """A store with three collections (one per space, one in another tenant/database),
    list metadata, uris, records without documents or metadata; returns what was added."""
    client = tintdb.PersistentClient(path=str(path))
    rng = np.random.default_rng(5)
    added: dict[str, Any] = {}
    for space, n in (("l2", 700), ("ip", 300), ("cosine", 450)):
        col = client.create_collection(
            f"c-{space}", metadata={"hnsw:space": space, "team": "search"}, embedding_function=None
        )
        vectors = rng.normal(size=(n, DIM)).astype(np.float32)
        ids = [f"{space}-{i}" for i in range(n)]
        col.add(
            ids=ids,
            embeddings=vectors,
            documents=[f"text {i}" if i % 3 else None for i in range(n)],
            uris=[f"file:///{i}" if i % 4 == 0 else None for i in range(n)],
            metadatas=[
                {"i": i, "f": i / 3, "flag": i % 2 == 0, "tags": ["a", "b"][: 1 + i % 2]}
                if i % 5
                else None
                for i in range(n)
            ],
        )
        added[f"default_tenant/default_database/c-{space}"] = (ids, vectors)
    admin = tintdb.AdminClient.from_client(client)
    admin.create_tenant("acme")
    admin.create_database("prod", tenant="acme")
    other = tintdb.Client(tenant="acme", database="prod", backend=client._live_backend())
    notes = other.create_collection("notes")  # the default embedding function, stored
    notes.add(ids=["x", "y"], embeddings=[[1.0] * DIM, [0.5] * DIM], documents=["a", "b"])
    client.close()
    return added


TENANTS = ["acme", "default_tenant"]


def _dump(location: str) -> dict[str, Any]:
    """Everything a store holds, by collection path: specs and records, vectors as bytes."""
    reader = open_reader(location, tenants=TENANTS if location.startswith("http") else None)
    try:
        out = {}
        for spec in reader.collections():
            records = {}
            for batch in reader.batches(spec, 97):
                for i in range(len(batch)):
                    records[batch.ids[i]] = batch.record(i)
            out[spec.path] = {
                "metadata": spec.metadata,
                "configuration": spec.configuration,
                "dimension": spec.dimension,
                "count": spec.count,
                "records": records,
            }
        return out
    finally:
        reader.close()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("copy") / "source"
    _fill(path)
    return path


def test_store_to_store_carries_everything(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    report = tintdb.copy(str(source), str(dest), progress=False)
    assert report.ok, report.as_dict()
    assert {c.spec.path for c in report.collections} == set(_dump(str(source)))
    assert _dump(str(dest)) == _dump(str(source))
    # the stored embedding function and the metadata came along
    client = tintdb.PersistentClient(path=str(dest), tenant="acme", database="prod")
    notes = client.get_collection("notes")
    assert notes.configuration["embedding_function"]["name"] == "default"
    assert client.count_collections() == 1
    client.close()


def test_queries_answer_the_same_after_a_copy(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    tintdb.copy(str(source), str(dest), progress=False)
    q = np.random.default_rng(1).normal(size=(4, DIM)).astype(np.float32)
    a, b = tintdb.PersistentClient(path=str(source)), tintdb.PersistentClient(path=str(dest))
    for name in ("c-l2", "c-ip", "c-cosine"):
        for where in (None, {"flag": True}, {"tags": {"$contains": "b"}}):
            got_a = a.get_collection(name).query(query_embeddings=q, n_results=7, where=where)
            got_b = b.get_collection(name).query(query_embeddings=q, n_results=7, where=where)
            assert got_a["ids"] == got_b["ids"]
            assert got_a["distances"] == got_b["distances"]
    a.close()
    b.close()


def test_export_and_import_round_trip(source: Path, tmp_path: Path) -> None:
    for name in ("all.jsonl", "all.jsonl.gz"):
        file = tmp_path / name
        assert tintdb.copy(str(source), str(file), progress=False).ok
        assert not (tmp_path / (name + ".partial")).exists()
        dest = tmp_path / f"from-{name}"
        assert tintdb.copy(str(file), str(dest), progress=False).ok
        assert _dump(str(dest)) == _dump(str(source))


def test_export_file_is_the_documented_format(source: Path, tmp_path: Path) -> None:
    file = tmp_path / "one.jsonl"
    tintdb.copy(str(source), str(file), collections=["c-ip"], progress=False)
    lines = [orjson.loads(line) for line in file.read_bytes().splitlines()]
    assert lines[0]["tintdb_export"] == 1
    assert lines[1]["collection"]["name"] == "c-ip"
    assert lines[1]["collection"]["configuration"]["hnsw"]["space"] == "ip"
    records = lines[2:-2]
    assert len(records) == 300
    assert lines[-2] == {"end": {"collection": "c-ip", "records": 300}}
    assert lines[-1] == {"end_of_export": {"collections": 1, "records": 300}}
    client = tintdb.PersistentClient(path=str(source))
    stored = client.get_collection("c-ip").get(ids=["ip-7"], include=["embeddings", "metadatas"])
    client.close()
    line = next(r for r in records if r["id"] == "ip-7")
    vector = np.frombuffer(base64.b64decode(line["embedding"]), dtype="<f4")
    assert vector.tobytes() == stored["embeddings"][0].tobytes()
    assert line["metadata"] == stored["metadatas"][0]


def test_a_damaged_export_file_is_refused(source: Path, tmp_path: Path) -> None:
    file = tmp_path / "x.jsonl"
    tintdb.copy(str(source), str(file), collections=["c-l2"], progress=False)
    data = file.read_bytes()
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_bytes(data[: len(data) // 2].rsplit(b"\n", 1)[0] + b"\n")
    with pytest.raises(InvalidArgumentError, match="truncated"):
        tintdb.copy(str(truncated), str(tmp_path / "d1"), progress=False)
    newer = tmp_path / "newer.jsonl"
    newer.write_bytes(data.replace(b'"tintdb_export":1', b'"tintdb_export":9', 1))
    with pytest.raises(InvalidArgumentError, match="newer"):
        tintdb.copy(str(newer), str(tmp_path / "d2"), progress=False)
    assert not (tmp_path / "d1" / "tintdb.sqlite3").exists()
    with pytest.raises(InvalidArgumentError, match="exists"):
        tintdb.copy(str(source), str(file), progress=False)  # never overwrites


def test_dry_run_writes_nothing(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    out = subprocess.run(
        [sys.executable, "-m", "tintdb", "copy", str(source), str(dest), "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "default_tenant/default_database/c-l2: 700 records, dimension 12, space l2" in out
    assert "acme/prod/notes: 2 records" in out
    assert "4 collections, 1,452 records" in out
    assert not dest.exists()
    export = tmp_path / "e.jsonl"
    tintdb.copy(str(source), str(export), dry_run=True, progress=False)
    assert not export.exists() and not (tmp_path / "e.jsonl.partial").exists()


def test_collections_chosen_by_pattern(source: Path, tmp_path: Path) -> None:
    report = tintdb.copy(
        str(source), str(tmp_path / "d"), collections=["c-?2", "acme/*/*"], progress=False
    )
    assert [c.spec.path for c in report.collections] == [
        "acme/prod/notes",
        "default_tenant/default_database/c-l2",
    ]
    with pytest.raises(InvalidArgumentError, match="No collection matches 'nope'"):
        tintdb.copy(str(source), str(tmp_path / "e"), collections=["nope"], progress=False)


class _Interrupted(Exception):
    pass


class _StopsAfter:
    """The real writer, interrupted (as by Ctrl+C or a crash) after ``n`` writes."""

    def __init__(self, writer: Any, n: int) -> None:
        self.writer, self.left = writer, n
        self.max_batch = writer.max_batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.writer, name)

    def write(self, handle: Any, batch: Any) -> None:
        if self.left == 0:
            raise _Interrupted
        self.left -= 1
        self.writer.write(handle, batch)


@pytest.mark.parametrize("dest_kind", ["store", "server"])
def test_an_interrupted_copy_resumes_without_duplicates(
    source: Path, tmp_path: Path, dest_kind: str
) -> None:
    server = None
    if dest_kind == "server":
        server = TintServer(tmp_path / "served").start()
        dest = server.url
    else:
        dest = str(tmp_path / "dest")
    try:
        writer = _StopsAfter(open_writer(dest), 5)
        with pytest.raises(_Interrupted):
            tintdb.copy(str(source), writer, batch_size=100, progress=False)
        writer.writer.close()
        partial = _dump(dest)
        copied = sum(len(c["records"]) for c in partial.values())
        assert copied == 2 + 400  # five whole batches (acme/prod/notes first), nothing half
        report = tintdb.copy(str(source), dest, batch_size=100, progress=False)
        assert report.ok, report.as_dict()
        assert sum(c.skipped for c in report.collections) == copied
        assert sum(c.written for c in report.collections) == 1452 - copied
        assert _dump(dest) == _dump(str(source))
        again = tintdb.copy(str(source), dest, progress=False)  # a third run: nothing to do
        assert sum(c.written for c in again.collections) == 0 and again.ok
    finally:
        if server is not None:
            server.stop()


def test_refused_records_are_reported_and_the_rest_copied(tmp_path: Path) -> None:
    """Records tintdb's own checks refuse (here: an empty id, a nested metadata value, a
    NaN) are listed with the reason; every other record of their batch is written."""
    file = tmp_path / "in.jsonl"
    vec = base64.b64encode(np.ones(3, dtype="<f4").tobytes()).decode()
    nan = base64.b64encode(np.array([1, np.nan, 0], dtype="<f4").tobytes()).decode()
    rows = [
        {"tintdb_export": 1},
        {"collection": {"name": "mixed", "dimension": 3, "configuration": {}, "metadata": None}},
        {"id": "good-1", "embedding": vec, "document": "d", "uri": None, "metadata": {"k": 1}},
        {"id": "", "embedding": vec, "document": None, "uri": None, "metadata": None},
        {"id": "nested", "embedding": vec, "document": None, "uri": None, "metadata": {"a": {}}},
        {"id": "nan", "embedding": nan, "document": None, "uri": None, "metadata": None},
        {"id": "good-2", "embedding": vec, "document": None, "uri": "u", "metadata": None},
        {"end": {"collection": "mixed", "records": 5}},
        {"end_of_export": {"collections": 1, "records": 5}},
    ]
    file.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    dest = tmp_path / "dest"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tintdb",
            "import",
            str(file),
            str(dest),
            "-q",
            "--report",
            str(tmp_path / "r.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stderr
    report = orjson.loads((tmp_path / "r.json").read_bytes())
    refused = {r["id"]: r["reason"] for r in report["collections"][0]["refused"]}
    assert set(refused) == {"", "nested", "nan"}
    assert "Empty id" in refused[""]
    assert "nested" in refused["nested"]
    assert "NaN" in refused["nan"]
    assert "refused default_tenant/default_database/mixed id 'nested'" in result.stdout
    assert report["collections"][0]["written"] == 2
    client = tintdb.PersistentClient(path=str(dest))
    assert sorted(client.get_collection("mixed").get()["ids"]) == ["good-1", "good-2"]
    client.close()


class _RefusesAt:
    """The real writer behind a destination whose own rules refuse some ids (as a
    server with stricter rules would): the copy finds them by halving the batch."""

    def __init__(self, writer: Any, bad: set[str]) -> None:
        self.writer, self.bad, self.calls = writer, bad, 0
        self.max_batch = writer.max_batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.writer, name)

    def write(self, handle: Any, batch: Any) -> None:
        self.calls += 1
        hit = self.bad.intersection(batch.ids)
        if hit:
            raise InvalidArgumentError(f"refused here: {sorted(hit)[0]}")
        self.writer.write(handle, batch)


def test_records_the_destination_refuses_are_found_and_reported(
    source: Path, tmp_path: Path
) -> None:
    writer = _RefusesAt(open_writer(str(tmp_path / "dest")), {"l2-10", "l2-11", "l2-650"})
    report = tintdb.copy(str(source), writer, collections=["c-l2"], batch_size=256, progress=False)
    writer.writer.close()
    result = report.collections[0]
    assert sorted(result.refused) == [
        ("l2-10", "refused here: l2-10"),
        ("l2-11", "refused here: l2-11"),
        ("l2-650", "refused here: l2-650"),
    ]
    assert result.written == 697 and not result.problems
    assert writer.calls < 60  # halving, not one call per record


def test_verification_finds_a_difference(source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    tintdb.copy(str(source), str(dest), collections=["c-ip"], progress=False)
    client = tintdb.PersistentClient(path=str(dest))
    col = client.get_collection("c-ip")
    col.update(ids=[f"ip-{i}" for i in range(300)], metadatas=[{"i": -1}] * 300)
    col.delete(ids=["ip-0"])
    client.close()
    report = tintdb.copy(str(source), str(dest), collections=["c-ip"], progress=False)
    result = report.collections[0]
    assert result.skipped == 299 and result.written == 1
    assert not report.ok
    assert any("metadata" in p for p in result.problems)


def test_server_source_with_a_token(source: Path, tmp_path: Path) -> None:
    with TintServer(tmp_path / "served", "--auth-token", "s3cret") as server:
        tintdb.copy(str(source), server.url, dest_token="s3cret", progress=False)
        with pytest.raises(tintdb.errors.TintError):
            tintdb.copy(server.url, str(tmp_path / "no"), progress=False)  # no token
        dest = tmp_path / "back"
        report = tintdb.copy(
            server.url,
            str(dest),
            tenants=["default_tenant", "acme"],
            source_token="s3cret",
            progress=False,
        )
        assert report.ok
    assert _dump(str(dest)) == _dump(str(source))


def test_progress_bar_shows_rate(source: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tintdb", "export", str(source), str(tmp_path / "p.jsonl")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "rec/s" in result.stderr and "1.45k/1.45k" in result.stderr
    assert "verified" in result.stdout


def test_batches_stay_small_whatever_the_collection_size() -> None:
    assert _copy.batch_size_for(384) == 5000
    assert _copy.batch_size_for(3072) * 3072 * 4 <= _copy.BATCH_BYTES
    assert _copy.batch_size_for(1_000_000) == _copy.MIN_BATCH
    assert _copy.batch_size_for(384, cap=1000) == 1000
    assert _copy.batch_size_for(384, asked=7) == 7


def test_copy_refuses_nonsense_locations(source: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="same"):
        tintdb.copy(str(source), str(source), progress=False)
    with pytest.raises(tintdb.errors.TintError, match="cannot connect to PostgreSQL"):
        tintdb.copy(str(source), "postgresql://nobody@127.0.0.1:1/db", progress=False)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InvalidArgumentError, match="not an export file"):
        tintdb.copy(str(tmp_path / "file.txt"), str(tmp_path / "d"), progress=False)
    with pytest.raises(InvalidArgumentError, match="does not exist"):
        tintdb.copy(str(tmp_path / "missing"), str(tmp_path / "d"), progress=False)


def test_store_to_postgres_and_back(source: Path, tmp_path: Path, postgres_server: Any) -> None:
    """SQLite to PostgreSQL and back, through the command with its progress bar: every
    record, field by field and vector bit for bit, and the same answers to queries."""
    dsn = postgres_server.create_database("copy_round_trip")
    result = subprocess.run(
        [sys.executable, "-m", "tintdb", "copy", str(source), dsn],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "rec/s" in result.stderr and "verified" in result.stdout
    assert _dump(dsn) == _dump(str(source))
    back = tmp_path / "back"
    report = tintdb.copy(dsn, str(back), progress=False)
    assert report.ok, report.as_dict()
    assert _dump(str(back)) == _dump(str(source))
    q = np.random.default_rng(2).normal(size=(3, DIM)).astype(np.float32)
    local = tintdb.PersistentClient(path=str(source))
    pg = tintdb.PostgresClient(dsn)
    try:
        for name in ("c-l2", "c-ip", "c-cosine"):
            for where in (None, {"flag": True}):
                want = local.get_collection(name).query(
                    query_embeddings=q, n_results=7, where=where
                )
                got = pg.get_collection(name).query(query_embeddings=q, n_results=7, where=where)
                assert got["ids"] == want["ids"]
                assert got["distances"] == want["distances"]
            assert pg.get_collection(name)._model.indexed  # type: ignore[attr-defined]
    finally:
        local.close()
        pg.close()
