"""How the store's rows are encoded: the collection row, the change log's kinds and seq
arrays, the typed metadata index rows, and the small SQL helpers every part shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

from .._filter_sql import text_list
from .._filters import KIND_LIST_OFFSET, value_kind
from ..types import CollectionModel

# The kinds of change in the log: vectors set, records deleted, and records changed
# without their vectors (metadata, documents or uris only). A touch carries no seqs, so
# the index has nothing to replay, but its lsn still marks a new version of the records.
OP_SET, OP_DELETE, OP_TOUCH = 1, 2, 3

COLLECTION_COLUMNS = (
    "c.coll, c.id, c.name, d.tenant, d.name, c.metadata, c.configuration, c.dimension, "
    "c.last_lsn, c.log_floor"
)


class CollectionRow(CollectionModel):
    """A collection as stored, plus the internal fields the local backend needs.

    ``declared_schema`` is the schema the collection was created with, when not the
    default one (stored under "schema" in the configuration column, and left out of
    ``configuration``, which holds Chroma's three sections). ``schema`` (the wire form,
    with the keys the records use) costs a read and some JSON to build, and most calls
    never look at it: the backend sets ``schema_source`` and it is built on first access.
    """

    coll: int = 0
    last_lsn: int = 0
    log_floor: int = 0
    declared_schema: dict[str, Any] | None = None
    schema_source: Callable[[], dict[str, Any]] | None = None
    _schema: dict[str, Any] | None = None

    @property
    def schema(self) -> dict[str, Any] | None:
        if self._schema is None and self.schema_source is not None:
            self._schema = self.schema_source()
        return self._schema

    @schema.setter
    def schema(self, value: dict[str, Any] | None) -> None:
        self._schema = value


def loads(blob: bytes | None) -> Any:
    return None if blob is None else orjson.loads(blob)


def collection_row(row: Sequence[Any]) -> CollectionRow:
    """A CollectionRow from the ``COLLECTION_COLUMNS`` of one row."""
    configuration = loads(row[6])
    declared = configuration.pop("schema", None)  # kept in the same column; see _schema
    c = CollectionRow(
        id=row[1],
        name=row[2],
        tenant=row[3],
        database=row[4],
        metadata=loads(row[5]),
        configuration=configuration,
        dimension=row[7],
    )
    c.coll, c.last_lsn, c.log_floor = row[0], row[8], row[9]
    c.declared_schema = declared
    return c


def id_list(ids: Sequence[str]) -> tuple[str, list[Any]]:
    """Any number of ids as SQL rows through one parameter (no SQLite variable limit),
    each exactly as given, NUL included."""
    return text_list(list(ids))


def json_ints(values: Sequence[int] | np.ndarray) -> str:
    """Integers as one JSON parameter, read back in SQL by ``json_each``."""
    return orjson.dumps(np.asarray(values, dtype=np.int64).tolist()).decode()


def pack_seqs(seqs: Sequence[int] | np.ndarray) -> bytes:
    return np.asarray(seqs, dtype="<i8").tobytes()


def unpack_seqs(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<i8")


def meta_rows(coll: int, seq: int, md: dict[str, Any] | None) -> list[tuple[Any, ...]]:
    """Rows of the typed metadata index for one record (sparse vectors have their own)."""
    rows: list[tuple[Any, ...]] = []
    for key, value in (md or {}).items():
        if isinstance(value, dict):
            continue
        if isinstance(value, list):
            for item in value:
                kind = KIND_LIST_OFFSET + value_kind(item)
                rows.append((coll, seq, key, kind, int(item) if isinstance(item, bool) else item))
        else:
            kind = value_kind(value)
            rows.append((coll, seq, key, kind, int(value) if isinstance(value, bool) else value))
    return rows


def _same_value(a: Any, b: Any) -> bool:
    """Equal and of the same types (``1``, ``1.0`` and ``True`` are stored apart)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def meta_changes(
    coll: int,
    seqs: Sequence[int],
    before: Sequence[dict[str, Any] | None],
    after: Sequence[dict[str, Any] | None],
) -> tuple[list[tuple[int, str]], list[tuple[Any, ...]]]:
    """What changes in the typed metadata index when records ``seqs`` go from metadata
    ``before`` to ``after``: the (seq, key) whose rows go, and the rows that come. Keys
    whose value stays are left alone: an update of a few keys rewrites only their rows
    (each row sits in its key's part of the index, so fewer pages change)."""
    gone: list[tuple[int, str]] = []
    rows: list[tuple[Any, ...]] = []
    for seq, old, new in zip(seqs, before, after, strict=True):
        old, new = old or {}, new or {}
        for key in old.keys() | new.keys():
            if key in old and key in new and _same_value(old[key], new[key]):
                continue
            if key in old:
                gone.append((seq, key))
            if key in new:
                rows.extend(meta_rows(coll, seq, {key: new[key]}))
    return gone, rows
