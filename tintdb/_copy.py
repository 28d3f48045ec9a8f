"""Moving records between stores: the reader/writer seam and the copy loop.

Every place data can come from or go to is a small adapter: a ``Reader`` lists the
collections it holds and streams each one's records in batches, in an order that does
not change while nobody writes; a ``Writer`` creates (or finds) a collection and takes
batches. ``copy`` joins any reader to any writer:

* batches are sized by bytes (``batch_size_for``), and at most two are in memory at
  once (one being read ahead on a thread, one being written), so memory stays flat
  however large a collection is;
* every write is one call, atomic at the destination. A copy interrupted and run again
  asks the destination which ids of each batch it already holds and writes only the
  others, so it resumes without duplicating anything;
* a record the destination refuses (its own validation, per record) is reported with
  the reason, never dropped silently; the rest of its batch is written;
* at the end, each collection's count is checked and a random sample of records is
  read back from the destination and compared field by field, vectors bit for bit.

``tintdb/_endpoints.py`` turns a command-line location into a reader or a writer.

Over 500 lines because the copy loop and what makes it safe (read-ahead, per-record
validation, resuming by asking the destination, the count and sample check at the end)
are one algorithm whose pieces share the batch and report types defined here. What
would split off cleanly: the plan and the result in words (``describe_plan``,
``describe_result``), which only read a report.
"""

from __future__ import annotations

import fnmatch
import math
import queue
import random
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from .errors import InvalidArgumentError

__all__ = [
    "Batch",
    "CollectionResult",
    "CollectionSpec",
    "CopyReport",
    "Reader",
    "Writer",
    "batch_size_for",
    "copy_between",
    "space_of",
]

# Bytes of vectors per batch: large enough that per-call costs vanish, small enough that
# two batches in memory are nothing (8 MiB is 5,461 records at 384 dimensions).
BATCH_BYTES = 8 << 20
MIN_BATCH, MAX_BATCH = 16, 5000
# Records per collection read back and compared field by field after the copy.
DEFAULT_SAMPLE = 200


@dataclass
class CollectionSpec:
    """A collection as a reader found it: everything needed to create it elsewhere.

    ``configuration`` and ``schema`` are carried as the source gave them, unchanged;
    ``ref`` is the reader's own handle (a collection id, a position in a file).
    """

    tenant: str
    database: str
    name: str
    metadata: dict[str, Any] | None
    configuration: dict[str, Any]
    schema: dict[str, Any] | None
    dimension: int | None
    count: int
    ref: Any = None

    @property
    def path(self) -> str:
        return f"{self.tenant}/{self.database}/{self.name}"


@dataclass
class Batch:
    """Records in column form, as ``Collection.add`` takes them; embeddings float32."""

    ids: list[str]
    embeddings: np.ndarray
    documents: list[str | None] | None
    uris: list[str | None] | None
    metadatas: list[dict[str, Any] | None] | None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, positions: Sequence[int]) -> Batch:
        def pick(values: list[Any] | None) -> list[Any] | None:
            return None if values is None else [values[i] for i in positions]

        return Batch(
            [self.ids[i] for i in positions],
            self.embeddings[list(positions)],
            pick(self.documents),
            pick(self.uris),
            pick(self.metadatas),
        )

    def record(self, i: int) -> tuple[str, bytes, str | None, str | None, Any]:
        """One record, with its vector as float32 bytes (what is compared bit for bit)."""
        return (
            self.ids[i],
            np.ascontiguousarray(self.embeddings[i], dtype="<f4").tobytes(),
            None if self.documents is None else self.documents[i],
            None if self.uris is None else self.uris[i],
            _no_empty(None if self.metadatas is None else self.metadatas[i]),
        )


class Reader(Protocol):
    """Where records come from."""

    def describe(self) -> str:
        """A short human description, e.g. "Chroma directory ./chroma"."""
        ...

    def collections(self) -> list[CollectionSpec]:
        """Every collection, with its record count, in a stable order."""
        ...

    def batches(self, spec: CollectionSpec, size: int) -> Iterator[Batch]:
        """Every record of ``spec`` once, ``size`` at a time, in a stable order."""
        ...

    def close(self) -> None: ...


class Writer(Protocol):
    """Where records go. ``max_batch`` caps the records of one ``write`` (None: no cap)."""

    max_batch: int | None

    def describe(self) -> str: ...

    def existing(self, spec: CollectionSpec) -> int | None:
        """Records the destination already holds in this collection; None if it has no
        such collection. Changes nothing (used by ``--dry-run``)."""
        ...

    def prepare(self, spec: CollectionSpec) -> Any:
        """Create the collection (or open the existing one, after checking that it is
        compatible: same distance space and dimension) and return a handle for it."""
        ...

    def present(self, handle: Any, ids: list[str]) -> set[str]:
        """Which of ``ids`` the collection already holds."""
        ...

    def write(self, handle: Any, batch: Batch) -> None:
        """Add the records, all or none. A record the destination refuses raises
        ``InvalidArgumentError`` (or a subclass) and nothing of the batch is written."""
        ...

    def finish(self) -> None:
        """Everything is written: make it durable and visible (a file is renamed)."""
        ...

    def count(self, handle: Any) -> int: ...

    def read(self, handle: Any, ids: list[str]) -> Batch:
        """The records with these ids (for verification), in any order."""
        ...

    def close(self) -> None: ...


@dataclass
class CollectionResult:
    spec: CollectionSpec
    read: int = 0
    written: int = 0
    skipped: int = 0  # already at the destination (a resumed copy)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (id, reason)
    existed_before: int | None = None
    count_after: int | None = None
    sampled: int = 0
    problems: list[str] = field(default_factory=list)  # verification failures

    @property
    def ok(self) -> bool:
        return not self.refused and not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "collection": self.spec.path,
            "source_count": self.spec.count,
            "read": self.read,
            "written": self.written,
            "skipped": self.skipped,
            "refused": [{"id": i, "reason": r} for i, r in self.refused],
            "existed_before": self.existed_before,
            "count_after": self.count_after,
            "sampled": self.sampled,
            "problems": self.problems,
        }


@dataclass
class CopyReport:
    source: str
    dest: str
    dry_run: bool
    verified: bool
    collections: list[CollectionResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.collections)

    @property
    def records(self) -> int:
        return sum(c.read for c in self.collections)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "dest": self.dest,
            "dry_run": self.dry_run,
            "verified": self.verified,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "collections": [c.as_dict() for c in self.collections],
        }


# ---------------------------------------------------------------- helpers


def space_of(spec: CollectionSpec) -> str:
    """The distance space a collection uses, wherever its source keeps it."""
    hnsw = spec.configuration.get("hnsw") if isinstance(spec.configuration, dict) else None
    if isinstance(hnsw, dict) and isinstance(hnsw.get("space"), str):
        return str(hnsw["space"])
    spann = spec.configuration.get("spann") if isinstance(spec.configuration, dict) else None
    if isinstance(spann, dict) and isinstance(spann.get("space"), str):
        return str(spann["space"])
    try:
        vector = spec.schema["keys"]["#embedding"]["float_list"]["vector_index"]  # type: ignore[index]
        return str(vector["config"]["space"])
    except (KeyError, TypeError):
        pass
    space = (spec.metadata or {}).get("hnsw:space")
    return space if isinstance(space, str) else "l2"


def batch_size_for(dim: int | None, cap: int | None = None, asked: int | None = None) -> int:
    """Records per batch: ``asked`` if given, else about BATCH_BYTES of vectors."""
    if asked is not None:
        size = asked
    else:
        size = BATCH_BYTES // (4 * dim) if dim else 1000
        size = max(MIN_BATCH, min(MAX_BATCH, size))
    if cap:
        size = min(size, cap)
    return max(1, size)


def _no_empty(md: Any) -> Any:
    """No metadata and an empty dict are the same record (tintdb stores {} as none)."""
    return None if md == {} else md


def _same(a: Any, b: Any) -> bool:
    """Equal with types: True is not 1, 1 is not 1.0 (what a copy must preserve)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def selected(specs: list[CollectionSpec], patterns: Sequence[str] | None) -> list[CollectionSpec]:
    """The collections whose name (or tenant/database/name) matches a pattern; every
    pattern must match something, so a typo is an error rather than an empty copy."""
    if not patterns:
        return specs
    chosen = []
    hits = dict.fromkeys(patterns, 0)
    for spec in specs:
        matched = False
        for pattern in patterns:
            target = spec.path if "/" in pattern else spec.name
            if fnmatch.fnmatchcase(target, pattern):
                hits[pattern] += 1
                matched = True
        if matched:
            chosen.append(spec)
    missing = [p for p, n in hits.items() if n == 0]
    if missing:
        names = ", ".join(s.path for s in specs[:20]) or "none"
        raise InvalidArgumentError(
            f"No collection matches {', '.join(repr(p) for p in missing)}; the source has: {names}"
        )
    return chosen


def _read_ahead(batches: Iterator[Batch], depth: int = 1) -> Iterator[Batch]:
    """Read the next batch on a thread while the current one is written."""
    done = object()
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        try:
            for batch in batches:
                while not stop.is_set():
                    try:
                        slots.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            slots.put(exc)

    thread = threading.Thread(target=run, name="tintdb-copy-read", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            with _suppress_empty():
                slots.get_nowait()
            thread.join(0.05)


class _suppress_empty:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, *_: Any) -> bool:
        return kind is queue.Empty


def _validated(batch: Batch) -> tuple[Batch, list[tuple[str, str]]]:
    """The batch without the records tintdb's own argument checks refuse, and those
    records with the reason (the same checks ``Collection.add`` runs)."""
    from ._validation import (
        normalize_documents,
        normalize_embeddings,
        normalize_ids,
        normalize_metadatas,
        normalize_uris,
    )

    def check(b: Batch) -> None:
        n = len(b)
        normalize_ids(b.ids)
        normalize_embeddings(b.embeddings, n)
        normalize_metadatas(b.metadatas, n, allow_none_values=False)
        normalize_documents(b.documents, n)
        normalize_uris(b.uris, n)

    try:
        check(batch)
        return batch, []
    except InvalidArgumentError:
        pass
    keep, refused = [], []
    for i in range(len(batch)):
        try:
            check(batch.take([i]))
        except InvalidArgumentError as exc:
            refused.append((batch.ids[i], str(exc)))
        else:
            keep.append(i)
    return batch.take(keep), refused


def _write_checked(writer: Writer, handle: Any, batch: Batch) -> list[tuple[str, str]]:
    """Write ``batch``; if the destination refuses it, find the records at fault and
    write the others. Returns the refused records with the reason.

    tintdb's own per-record checks name most culprits at once; what they pass but the
    destination still refuses (a server's rules of its own) is found by halving."""
    if not len(batch):
        return []
    try:
        writer.write(handle, batch)
        return []
    except InvalidArgumentError as exc:
        if len(batch) == 1:
            return [(batch.ids[0], str(exc))]
    fine, refused = _validated(batch)
    if refused:
        return refused + _write_checked(writer, handle, fine)
    half = len(batch) // 2
    return _write_checked(writer, handle, batch.take(range(half))) + _write_checked(
        writer, handle, batch.take(range(half, len(batch)))
    )


class _Sample:
    """A uniform random sample of the records streamed past (reservoir sampling)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seen = 0
        self.records: list[tuple[str, bytes, Any, Any, Any]] = []
        self._rng = random.Random(seed)

    def offer(self, batch: Batch) -> None:
        for i in range(len(batch)):
            self.seen += 1
            if len(self.records) < self.size:
                self.records.append(batch.record(i))
            else:
                j = self._rng.randrange(self.seen)
                if j < self.size:
                    self.records[j] = batch.record(i)


def _renormalised(vector: bytes) -> bytes:
    """A vector as a Chroma server stores it in a cosine space (see _chroma)."""
    from ._chroma import chroma_cosine

    return chroma_cosine(np.frombuffer(vector, dtype="<f4")[None, :]).tobytes()


def _compare(
    expected: list[tuple[str, bytes, Any, Any, Any]], got: Batch, cosine: bool = False
) -> list[str]:
    """Problems found comparing sampled source records with the destination's. In a
    cosine space a vector that comes back exactly as Chroma normalises it (a Chroma
    server as the destination) is the same vector."""
    found = {got.ids[i]: got.record(i) for i in range(len(got))}
    problems = []
    names = ("id", "embedding", "document", "uri", "metadata")
    for record in expected:
        other = found.get(record[0])
        if other is None:
            problems.append(f"record {record[0]!r} is missing at the destination")
            continue
        for name, a, b in zip(names[1:], record[1:], other[1:], strict=True):
            if name == "embedding" and cosine and a != b and _renormalised(a) == b:
                continue
            if not _same(a, b):
                shown = "differs bit for bit" if name == "embedding" else f"{a!r} != {b!r}"
                problems.append(f"record {record[0]!r}: {name} {shown}")
    return problems


# ---------------------------------------------------------------- the copy


def copy_between(
    reader: Reader,
    writer: Writer,
    *,
    collections: Sequence[str] | None = None,
    dry_run: bool = False,
    verify: bool = True,
    sample: int = DEFAULT_SAMPLE,
    batch_size: int | None = None,
    progress: bool = True,
    out: TextIO | None = None,
    seed: int | None = None,
) -> CopyReport:
    """Copy the chosen collections from ``reader`` to ``writer`` (see the module doc)."""
    out = sys.stderr if out is None else out
    started = time.monotonic()
    specs = selected(reader.collections(), collections)
    report = CopyReport(reader.describe(), writer.describe(), dry_run, verify and not dry_run)
    if dry_run:
        for spec in specs:
            result = CollectionResult(spec)
            result.existed_before = writer.existing(spec)
            report.collections.append(result)
        report.seconds = time.monotonic() - started
        return report

    bar = _progress(sum(s.count for s in specs), progress, out)
    handles: list[tuple[CollectionResult, Any, _Sample]] = []
    try:
        for spec in specs:
            result = CollectionResult(spec)
            report.collections.append(result)
            result.existed_before = writer.existing(spec)
            handle = writer.prepare(spec)
            resuming = bool(result.existed_before)
            sampler = _Sample(sample, seed if seed is not None else random.randrange(2**32))
            handles.append((result, handle, sampler))
            size = batch_size_for(spec.dimension, writer.max_batch, batch_size)
            bar.set_postfix_str(spec.path, refresh=False)
            for batch in _read_ahead(reader.batches(spec, size)):
                result.read += len(batch)
                todo = batch
                if resuming:
                    there = writer.present(handle, batch.ids)
                    if there:
                        result.skipped += len(there)
                        todo = batch.take([i for i, x in enumerate(batch.ids) if x not in there])
                refused = _write_checked(writer, handle, todo)
                gone = {i for i, _ in refused}
                if gone:
                    result.refused.extend(refused)
                    todo = todo.take([i for i, x in enumerate(todo.ids) if x not in gone])
                    batch = batch.take([i for i, x in enumerate(batch.ids) if x not in gone])
                result.written += len(todo)
                sampler.offer(batch)  # what the destination now holds, skipped ones too
                bar.update(len(batch) + len(gone))
        writer.finish()
    finally:
        bar.close()
    if verify:
        for result, handle, sampler in handles:
            _verify(writer, handle, result, sampler)
    report.seconds = time.monotonic() - started
    return report


def _verify(writer: Writer, handle: Any, result: CollectionResult, sampler: _Sample) -> None:
    spec = result.spec
    expected_count = (result.existed_before or 0) + result.written
    result.count_after = writer.count(handle)
    if result.read != spec.count:
        result.problems.append(
            f"the source listed {spec.count} records but {result.read} were read "
            "(was it written to during the copy?)"
        )
    if result.count_after != expected_count:
        result.problems.append(
            f"the destination holds {result.count_after} records, expected {expected_count} "
            f"({result.existed_before or 0} before the copy + {result.written} written)"
        )
    ids = [r[0] for r in sampler.records]
    result.sampled = len(ids)
    got = writer.read(handle, ids) if ids else None
    if got is not None:
        result.problems.extend(_compare(sampler.records, got, space_of(spec) == "cosine"))


class _NoBar:
    def update(self, n: int) -> None: ...
    def set_postfix_str(self, text: str, refresh: bool = True) -> None: ...
    def close(self) -> None: ...


def _progress(total: int, enabled: bool, out: TextIO) -> Any:
    """A progress bar with records/s and the time left (tqdm)."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit=" rec",
        unit_scale=True,
        file=out,
        dynamic_ncols=True,
        smoothing=0.1,
        mininterval=0.5,
    )


# ---------------------------------------------------------------- the plan, in words


def describe_plan(report: CopyReport) -> str:
    """What a --dry-run would copy: each collection, its records and their size."""
    lines = [f"{report.source}  ->  {report.dest}", ""]
    total, total_bytes = 0, 0
    for result in report.collections:
        spec = result.spec
        vector_bytes = spec.count * 4 * (spec.dimension or 0)
        total += spec.count
        total_bytes += vector_bytes
        there = (
            "new at the destination"
            if result.existed_before is None
            else f"exists at the destination with {result.existed_before:,} records "
            "(ids already there are skipped)"
        )
        lines.append(
            f"  {spec.path}: {spec.count:,} records, dimension {spec.dimension or '-'}, "
            f"space {space_of(spec)}, {_size(vector_bytes)} of vectors; {there}"
        )
    lines += [
        "",
        f"{len(report.collections)} collections, {total:,} records, {_size(total_bytes)} "
        "of vectors (plus documents and metadata). Nothing was written (--dry-run).",
    ]
    return "\n".join(lines)


def describe_result(report: CopyReport, refused_shown: int = 20) -> str:
    """The outcome of a copy, one line per collection, then what went wrong."""
    lines = [f"{report.source}  ->  {report.dest}"]
    for result in report.collections:
        parts = [f"{result.read:,} read", f"{result.written:,} written"]
        if result.skipped:
            parts.append(f"{result.skipped:,} already there")
        if result.refused:
            parts.append(f"{len(result.refused):,} refused")
        if report.verified:
            parts.append(
                f"verified ({result.sampled} sampled)" if not result.problems else "VERIFY FAILED"
            )
        lines.append(f"  {result.spec.path}: " + ", ".join(parts))
    shown = 0
    for result in report.collections:
        for rid, reason in result.refused:
            if shown == refused_shown:
                break
            lines.append(f"  refused {result.spec.path} id {rid!r}: {reason}")
            shown += 1
        for problem in result.problems[:refused_shown]:
            lines.append(f"  verify {result.spec.path}: {problem}")
    refused_total = sum(len(r.refused) for r in report.collections)
    if refused_total > shown:
        lines.append(f"  ... {refused_total - shown} more refused (--report FILE lists them all)")
    rate = report.records / report.seconds if report.seconds > 0 else math.inf
    lines.append(
        f"{report.records:,} records in {report.seconds:.1f} s ({rate:,.0f} records/s)"
        + ("" if report.ok else "; NOT everything was copied, see above")
    )
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"


def copy(
    source: Any,
    dest: Any,
    *,
    collections: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    dry_run: bool = False,
    verify: bool = True,
    sample: int = DEFAULT_SAMPLE,
    batch_size: int | None = None,
    source_token: str | None = None,
    dest_token: str | None = None,
    chroma_reader: str = "auto",
    progress: bool = True,
    out: TextIO | None = None,
) -> CopyReport:
    """Copy collections (names, metadata, configuration, embedding function) and every
    record from ``source`` to ``dest``: each a location as ``tintdb copy`` takes it (a
    store or Chroma directory, an ``http://`` server, a ``*.jsonl`` export file) or a
    ``Reader`` / ``Writer``. Run again after an interruption, it skips the records
    already copied. ``collections`` are names or shell patterns. Returns a report whose
    ``ok`` is False if a record was refused or the check at the end found a difference."""
    from ._endpoints import open_reader, open_writer

    if (
        isinstance(source, (str, Path))
        and isinstance(dest, (str, Path))
        and Path(source).expanduser().resolve() == Path(dest).expanduser().resolve()
    ):
        raise InvalidArgumentError(f"source and destination are the same: {source}")
    reader = (
        open_reader(str(source), token=source_token, tenants=tenants, chroma_reader=chroma_reader)
        if isinstance(source, (str, Path))
        else source
    )
    try:
        writer = (
            open_writer(str(dest), token=dest_token, dry_run=dry_run)
            if isinstance(dest, (str, Path))
            else dest
        )
        try:
            return copy_between(
                reader,
                writer,
                collections=collections,
                dry_run=dry_run,
                verify=verify,
                sample=sample,
                batch_size=batch_size,
                progress=progress,
                out=out,
            )
        finally:
            writer.close()
    finally:
        reader.close()
