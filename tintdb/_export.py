"""The export file: JSON Lines, one collection or a whole store, streamed both ways.

The format (version 1, described for other tools in docs/export-format.md) is one
JSON object per line, UTF-8:

    {"tintdb_export": 1, "created": "...", "generator": "tintdb 0.1.0"}
    {"collection": {"tenant", "database", "name", "metadata", "configuration",
                    "schema", "dimension", "count"}}
    {"id": "...", "embedding": "<base64 of little-endian float32>", "document": ...,
     "uri": ..., "metadata": {...}}                       (one line per record)
    {"end": {"collection": "...", "records": n}}
    ... more collections ...
    {"end_of_export": {"collections": k, "records": N}}

A name ending in ``.gz`` is gzip-compressed. The file is written as ``NAME.partial``
and renamed when complete, so a file under its final name is always whole; the end
lines let a reader prove it (a truncated file is refused, never half-imported).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import gzip
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from ._copy import Batch, CollectionSpec
from .errors import InvalidArgumentError

__all__ = ["FORMAT_VERSION", "ExportReader", "ExportWriter"]

FORMAT_VERSION = 1
_RECORD_PREFIX = b'{"id"'
# gzip level 1: most of the size gain of level 6 (float noise barely compresses) at a
# fraction of its time.
_GZIP_LEVEL = 1


def _open(path: Path, mode: str) -> IO[bytes]:
    if path.name.endswith(".gz") or (path.suffix == ".partial" and path.stem.endswith(".gz")):
        return gzip.open(path, mode, compresslevel=_GZIP_LEVEL)  # type: ignore[return-value]
    return open(path, mode)


class ExportWriter:
    """Writes an export file; see the module doc."""

    max_batch: int | None = None

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists():
            raise InvalidArgumentError(
                f"{path} exists; choose another name or remove it (an export never overwrites)"
            )
        if not path.parent.is_dir():
            raise InvalidArgumentError(f"{path.parent} is not a directory")
        self.partial = path.with_name(path.name + ".partial")
        self._file: IO[bytes] | None = None  # opened by the first collection
        self._done = False
        self._current: dict[str, Any] | None = None
        self._collections = 0
        self._records = 0
        self._reader: ExportReader | None = None

    def _start(self) -> None:
        from . import __version__

        self._file = _open(self.partial, "wb")
        self._line(
            {
                "tintdb_export": FORMAT_VERSION,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "generator": f"tintdb {__version__}",
            }
        )

    def describe(self) -> str:
        return f"export file {self.path}"

    def _line(self, obj: Any) -> None:
        assert self._file is not None
        self._file.write(orjson.dumps(obj) + b"\n")

    def _end_collection(self) -> None:
        if self._current is not None:
            self._line(
                {"end": {"collection": self._current["name"], "records": self._current["n"]}}
            )
            self._current = None

    def existing(self, spec: CollectionSpec) -> int | None:
        return None

    def prepare(self, spec: CollectionSpec) -> Any:
        if self._file is None:
            self._start()
        self._end_collection()
        self._line(
            {
                "collection": {
                    "tenant": spec.tenant,
                    "database": spec.database,
                    "name": spec.name,
                    "metadata": spec.metadata,
                    "configuration": spec.configuration,
                    "schema": spec.schema,
                    "dimension": spec.dimension,
                    "count": spec.count,
                }
            }
        )
        self._collections += 1
        self._current = {"name": spec.name, "n": 0, "spec": spec}
        return self._current

    def present(self, handle: Any, ids: list[str]) -> set[str]:
        return set()

    def write(self, handle: Any, batch: Batch) -> None:
        assert self._file is not None and self._current is not None
        assert handle is self._current
        vectors = np.ascontiguousarray(batch.embeddings, dtype="<f4")
        lines = []
        for i, rid in enumerate(batch.ids):
            lines.append(
                orjson.dumps(
                    {
                        "id": rid,
                        "embedding": base64.b64encode(vectors[i].tobytes()).decode("ascii"),
                        "document": None if batch.documents is None else batch.documents[i],
                        "uri": None if batch.uris is None else batch.uris[i],
                        "metadata": None if batch.metadatas is None else batch.metadatas[i],
                    }
                )
            )
        lines.append(b"")
        self._file.write(b"\n".join(lines))
        handle["n"] += len(batch.ids)
        self._records += len(batch.ids)

    def finish(self) -> None:
        if self._done:
            return
        if self._file is None:  # no collection at all: still a valid, empty export
            self._start()
        self._done = True
        self._end_collection()
        self._line({"end_of_export": {"collections": self._collections, "records": self._records}})
        assert self._file is not None  # opened by _start above
        self._file.close()
        self._file = None
        with open(self.partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self.partial, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _read_back(self) -> ExportReader:
        if self._reader is None:
            self._reader = ExportReader(self.path)
        return self._reader

    def _spec(self, handle: Any) -> CollectionSpec:
        spec = handle["spec"]
        for found in self._read_back().collections():
            if (found.tenant, found.database, found.name) == (
                spec.tenant,
                spec.database,
                spec.name,
            ):
                return found
        raise InvalidArgumentError(f"{spec.path} is missing from {self.path}")

    def count(self, handle: Any) -> int:
        return self._spec(handle).count

    def read(self, handle: Any, ids: list[str]) -> Batch:
        wanted = set(ids)
        parts = [
            b.take([i for i, x in enumerate(b.ids) if x in wanted])
            for b in self._read_back().batches(self._spec(handle), 4096)
        ]
        return _joined(parts, self._spec(handle).dimension)

    def close(self) -> None:
        if self._file is not None:  # not finished: leave no half file under any name
            self._file.close()
            self._file = None
            self.partial.unlink(missing_ok=True)
        if self._reader is not None:
            self._reader.close()


def _joined(parts: list[Batch], dim: int | None) -> Batch:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Batch([], np.empty((0, dim or 0), dtype=np.float32), [], [], [])
    return Batch(
        [x for p in parts for x in p.ids],
        np.concatenate([p.embeddings for p in parts]),
        [x for p in parts for x in (p.documents or [None] * len(p))],
        [x for p in parts for x in (p.uris or [None] * len(p))],
        [x for p in parts for x in (p.metadatas or [None] * len(p))],
    )


class ExportReader:
    """Reads an export file. Opening it reads it through once (records are skipped
    without being decoded) to list its collections and prove it complete."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise InvalidArgumentError(f"{path} does not exist")
        self._file = _open(path, "rb")
        try:
            self._specs = self._index()
        except BaseException:  # a damaged file is refused; its handle is not left open
            self._file.close()
            raise

    def describe(self) -> str:
        return f"export file {self.path}"

    def _fail(self, line_no: int, what: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{self.path}, line {line_no}: {what}")

    def _index(self) -> list[CollectionSpec]:
        f = self._file
        f.seek(0)
        specs: list[CollectionSpec] = []
        current: CollectionSpec | None = None
        n = 0
        line_no = 0
        header_seen = finished = False
        try:
            while True:
                line = f.readline()
                if not line:
                    break
                line_no += 1
                if finished:
                    if line.strip():
                        raise self._fail(line_no, "data after the end_of_export line")
                    continue
                if line.startswith(_RECORD_PREFIX):
                    if current is None:
                        raise self._fail(line_no, "a record outside any collection")
                    n += 1
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise self._fail(line_no, f"not JSON: {exc}") from exc
                if not isinstance(obj, dict):
                    raise self._fail(line_no, "not a JSON object")
                if not header_seen:
                    version = obj.get("tintdb_export")
                    if not isinstance(version, int):
                        raise self._fail(line_no, "not a tintdb export file (no header line)")
                    if version > FORMAT_VERSION:
                        raise self._fail(
                            line_no,
                            f"format version {version} is newer than this tintdb reads "
                            f"({FORMAT_VERSION}); upgrade tintdb",
                        )
                    header_seen = True
                elif "collection" in obj and isinstance(obj["collection"], dict):
                    if current is not None:
                        raise self._fail(line_no, f"collection {current.name!r} has no end line")
                    c = obj["collection"]
                    current = CollectionSpec(
                        tenant=str(c.get("tenant") or "default_tenant"),
                        database=str(c.get("database") or "default_database"),
                        name=str(c["name"]),
                        metadata=c.get("metadata"),
                        configuration=dict(c.get("configuration") or {}),
                        schema=c.get("schema"),
                        dimension=c.get("dimension"),
                        count=0,
                        ref=None,
                    )
                    n = 0
                    current.ref = f.tell()
                elif "end" in obj:
                    if current is None:
                        raise self._fail(line_no, "an end line outside any collection")
                    if obj["end"].get("records") != n:
                        raise self._fail(
                            line_no,
                            f"collection {current.name!r} says {obj['end'].get('records')} "
                            f"records but holds {n}",
                        )
                    current.count = n
                    specs.append(current)
                    current = None
                elif "end_of_export" in obj:
                    if current is not None:
                        raise self._fail(line_no, f"collection {current.name!r} has no end line")
                    finished = True
                elif "id" in obj:  # a record written by another tool, keys in another order
                    if current is None:
                        raise self._fail(line_no, "a record outside any collection")
                    n += 1
                else:
                    raise self._fail(line_no, f"unknown line (keys {sorted(obj)[:5]})")
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InvalidArgumentError(f"{self.path} cannot be read: {exc}") from exc
        if not header_seen:
            raise InvalidArgumentError(f"{self.path} is empty, not an export file")
        if not finished:
            raise InvalidArgumentError(
                f"{self.path} is truncated (no end_of_export line): an interrupted export? "
                "Export again."
            )
        return specs

    def collections(self) -> list[CollectionSpec]:
        return list(self._specs)

    def batches(self, spec: CollectionSpec, size: int) -> Iterator[Batch]:
        f = self._file
        f.seek(spec.ref)
        left = spec.count
        while left:
            lines = [f.readline() for _ in range(min(size, left))]
            left -= len(lines)
            yield self._decode(lines, spec)

    def _decode(self, lines: list[bytes], spec: CollectionSpec) -> Batch:
        rows = [orjson.loads(line) for line in lines]
        try:
            raw = b"".join(base64.b64decode(r["embedding"], validate=True) for r in rows)
        except (KeyError, TypeError, binascii.Error) as exc:
            raise InvalidArgumentError(
                f"{self.path}: a record of {spec.path} has no valid base64 embedding: {exc}"
            ) from exc
        dim = spec.dimension or (len(raw) // 4 // len(rows) if rows else 0)
        if len(raw) != 4 * dim * len(rows):
            raise InvalidArgumentError(
                f"{self.path}: a record of {spec.path} has an embedding that is not {dim} "
                "float32 values"
            )
        return Batch(
            [r["id"] for r in rows],
            np.frombuffer(raw, dtype="<f4").reshape(len(rows), dim).astype(np.float32),
            [r.get("document") for r in rows],
            [r.get("uri") for r in rows],
            [r.get("metadata") for r in rows],
        )

    def close(self) -> None:
        self._file.close()
