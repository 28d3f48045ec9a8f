"""What the PostgreSQL backend says to PostgreSQL: its schema, how values are encoded,
and filters compiled from the condition tree (``_conditions``) into SQL.

The schema follows Citus's rules from the start. The catalog (tenants, databases,
collections) is a few small tables that could be reference tables; records live in one
table partitioned by collection (``coll``), one partition per collection, which is also
the distribution column Citus would shard on, and every statement on records names one
collection. A collection's HNSW index is built on its own partition once its dimension
is known (pgvector indexes a typed expression, ``embedding::vector(dim)``), and dropping
a collection drops its partition: no vacuum of its rows.

Strings reach PostgreSQL exactly. Its ``text`` and ``jsonb`` cannot hold NUL, so:

* ids, uris and the metadata copy that filters read are escaped (``encode_text``):
  NUL becomes ``\\x01 0`` and ``\\x01`` itself ``\\x01 1``, so equality stays exact, and
  strings without either character are stored as they are;
* a document holding NUL is kept as UTF-8 bytes in ``document_bytes`` (``document`` is
  then NULL), where ``position()`` finds substrings exactly, NUL included;
* metadata is returned from ``metadata_json``, the record's metadata as JSON bytes,
  never from ``jsonb`` (which would also turn ``1e20`` into an integer).
"""

from __future__ import annotations

import hashlib
import re
import struct
from typing import Any

import numpy as np
import orjson

try:
    from psycopg import sql
    from psycopg.adapt import Dumper
    from psycopg.pq import Format
except ImportError as exc:  # the embedded install does not carry the driver
    raise ImportError(
        "the PostgreSQL backend needs its driver: pip install 'tintdb[postgres]'"
    ) from exc

from . import _regex
from ._conditions import AllOf, AnyOf, Field, Node, Text

__all__ = [
    "ESC",
    "SCHEMA",
    "FilterSQL",
    "compile_filter",
    "decode_text",
    "decode_vectors",
    "encode_metadata",
    "encode_text",
    "hnsw_index_sql",
    "like_pattern",
    "numeric_index_sql",
    "partition_name",
    "partition_sql",
    "vector_dumper",
]

# Bumped when the tables change; stored in tintdb.info, checked on connect. A database
# of an older version is brought up to this one by the first node to start (MIGRATIONS).
SCHEMA_VERSION = 2

SCHEMA = """
CREATE SCHEMA IF NOT EXISTS tintdb;
CREATE TABLE IF NOT EXISTS tintdb.info(key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS tintdb.tenants(
    name text PRIMARY KEY, pos bigserial);
CREATE TABLE IF NOT EXISTS tintdb.databases(
    id text PRIMARY KEY, name text NOT NULL, tenant text NOT NULL, pos bigserial,
    UNIQUE(tenant, name));
CREATE TABLE IF NOT EXISTS tintdb.collections(
    coll bigserial PRIMARY KEY,
    id text NOT NULL UNIQUE,
    name text NOT NULL,
    database_id text NOT NULL,
    metadata bytea,
    configuration bytea NOT NULL,
    dimension integer,
    -- Kept by every write in its own transaction: count() reads it instead of a pass.
    n_records bigint NOT NULL DEFAULT 0,
    -- Whether the partition has its HNSW index (built once the dimension is known,
    -- after a bulk load, or never above pgvector's 2,000 dimensions).
    indexed boolean NOT NULL DEFAULT false,
    -- n_records when the partition's statistics were last gathered (see _postgres).
    analyzed bigint NOT NULL DEFAULT 0,
    -- Bumped by every change of the row other than the counts: a node that keeps the
    -- row in memory reads this in the statement that relies on it (see _postgres).
    version bigint NOT NULL DEFAULT 0,
    UNIQUE(database_id, name));
-- The metadata keys a collection's records have used, with each value type seen: the
-- "discovered" keys of its schema (keys escaped as ids are). Only grows; small, and
-- keyed by collection as records are.
CREATE TABLE IF NOT EXISTS tintdb.collection_keys(
    coll bigint NOT NULL REFERENCES tintdb.collections(coll) ON DELETE CASCADE,
    key text NOT NULL,
    vtype text NOT NULL,
    PRIMARY KEY (coll, key, vtype));
CREATE SEQUENCE IF NOT EXISTS tintdb.record_seq;
CREATE TABLE IF NOT EXISTS tintdb.records(
    coll bigint NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('tintdb.record_seq'),
    id text NOT NULL,
    document text,
    document_bytes bytea,
    uri text,
    metadata_json bytea,
    metadata jsonb,
    embedding vector,
    PRIMARY KEY (coll, seq),
    UNIQUE (coll, id)
) PARTITION BY LIST (coll);
-- Vectors out of line (in the TOAST table, uncompressed): a row is then a few hundred
-- bytes, so that a filter that reads every record of a collection reads about a tenth
-- of the pages (partitions also set toast_tuple_target, see partition_sql).
ALTER TABLE tintdb.records ALTER COLUMN embedding SET STORAGE EXTERNAL;
CREATE INDEX IF NOT EXISTS records_metadata ON tintdb.records
    USING gin (metadata jsonb_path_ops);
CREATE INDEX IF NOT EXISTS records_document ON tintdb.records
    USING gin (document gin_trgm_ops);
-- The few documents kept as bytes (they hold NUL): with this, a document $contains is an
-- OR of two index scans (the trigram index, and this one) rather than a read of the
-- whole collection.
CREATE INDEX IF NOT EXISTS records_document_bytes ON tintdb.records (coll)
    WHERE document_bytes IS NOT NULL;
"""

# What a database of schema version N - 1 runs to reach N (under the schema lock, in one
# transaction with the rest of the start-up). Version 2: the collections' version
# column and the index of documents held as bytes (SCHEMA's IF NOT EXISTS statements
# make the latter); the numeric metadata indexes are made by _postgres.
MIGRATIONS: dict[int, str] = {
    2: "ALTER TABLE tintdb.collections ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0",
}

# pgvector's HNSW takes at most 2,000 dimensions of ``vector``; above, exact search.
HNSW_MAX_DIMENSION = 2000
# pgvector's largest hnsw.ef_search; an index scan returns at most that many rows.
MAX_EF_SEARCH = 1000

# Metadata keys of a collection that get a btree index of their numeric values (for
# $gt/$gte/$lt/$lte), at most: every index is one more for each write to maintain.
NUMERIC_INDEXES_MAX = 32
NUMERIC_TYPES = ("int", "float")

# $in / $nin lists up to this long become an OR of containments, which PostgreSQL
# serves from the metadata index; longer ones one array parameter (no index).
IN_AS_OR = 64

OPERATORS = {"l2": "<->", "ip": "<#>", "cosine": "<=>"}
OPCLASSES = {"l2": "vector_l2_ops", "ip": "vector_ip_ops", "cosine": "vector_cosine_ops"}

ESC = "\x01"
_DECODE = re.compile("\x01(.)", re.DOTALL)


def partition_name(coll: int) -> str:
    return f"tintdb.records_{int(coll)}"


def partition_sql(coll: int) -> list[str]:
    """A collection's partition: a table of its own, then attached (attaching takes a
    lock that lets reads and writes of other collections go on; CREATE ... PARTITION OF
    would not). Rows past 256 bytes move their vector out of line."""
    part = partition_name(coll)
    return [
        f"CREATE TABLE {part} (LIKE tintdb.records INCLUDING DEFAULTS INCLUDING STORAGE, "
        f"CHECK (coll = {int(coll)})) WITH (toast_tuple_target = 256)",
        f"ALTER TABLE tintdb.records ATTACH PARTITION {part} FOR VALUES IN ({int(coll)})",
    ]


def hnsw_index_sql(coll: int, dim: int, space: str, hnsw: dict[str, Any]) -> str:
    """The partition's HNSW index over ``embedding::vector(dim)``. pgvector needs
    ef_construction >= 2 * m; a smaller one is raised to that."""
    m = max(2, int(hnsw.get("max_neighbors") or 16))
    ef_construction = max(int(hnsw.get("ef_construction") or 100), 2 * m)
    return (
        f"CREATE INDEX IF NOT EXISTS records_{int(coll)}_hnsw ON {partition_name(coll)} "
        f"USING hnsw ((embedding::vector({int(dim)})) {OPCLASSES[space]}) "
        f"WITH (m = {m}, ef_construction = {ef_construction})"
    )


def numeric_index_sql(coll: int, key: str) -> sql.Composed:
    """A btree over the numeric values of one (escaped) metadata key in a collection's
    partition, for ranges; records whose value is not a number are left out (partial).
    Its expression is the one ``FilterSQL`` writes for a range, so PostgreSQL matches the
    two (the key reaches the filter as a parameter, which PostgreSQL folds into a
    constant when it plans the statement)."""
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]
    literal = sql.Literal(key)
    return sql.SQL(
        "CREATE INDEX IF NOT EXISTS {name} ON {part} ("
        "(CASE WHEN jsonb_typeof(metadata -> {k}) = 'number' THEN (metadata -> {k})::numeric END)"
        ") WHERE jsonb_typeof(metadata -> {k}) = 'number'"
    ).format(
        name=sql.Identifier(f"records_{int(coll)}_num_{digest}"),
        part=sql.SQL(partition_name(coll)),
        k=literal,
    )


def encode_text(s: str) -> str:
    """``s`` as PostgreSQL text can hold it (see the module's docstring)."""
    if "\0" not in s and ESC not in s:
        return s
    return s.replace(ESC, ESC + "1").replace("\0", ESC + "0")


def decode_text(s: str) -> str:
    if ESC not in s:
        return s
    return _DECODE.sub(lambda m: ESC if m.group(1) == "1" else "\0", s)


def _encode_value(value: Any) -> Any:
    if isinstance(value, str):
        return encode_text(value)
    if isinstance(value, list):
        return [_encode_value(v) for v in value]
    return value


def encode_metadata(md: dict[str, Any] | None) -> bytes | None:
    """The jsonb that filters read: keys and strings escaped, as JSON text."""
    if not md:
        return None
    return orjson.dumps({encode_text(k): _encode_value(v) for k, v in md.items()})


# ---------------------------------------------------------------- vectors


def vector_dumper(oid: int) -> type[Dumper]:
    """A psycopg dumper of float32 numpy vectors in pgvector's binary format (the
    dimension and a reserved word, then big-endian float32): no text round trip."""

    class VectorDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj: Any) -> bytes:
            a = np.asarray(obj, dtype=">f4")
            return struct.pack(">HH", a.shape[0], 0) + a.tobytes()

    VectorDumper.oid = oid
    return VectorDumper


def decode_vectors(raw: list[bytes], dim: int) -> np.ndarray:
    """pgvector's binary values (same dimension) as one (n, dim) float32 array: one
    numpy call for the lot, where an adapter per row cost 64 ms for 1,000 rows."""
    if not raw:
        return np.empty((0, dim), dtype=np.float32)
    joined = np.frombuffer(b"".join(raw), dtype=">f4").reshape(len(raw), dim + 1)
    return joined[:, 1:].astype(np.float32)


# ---------------------------------------------------------------- filters


def like_pattern(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere (backslash escapes)."""
    return anchored_like(text, False, False)


class FilterSQL:
    """A boolean SQL expression over ``records r`` and its parameters. A ``$regex`` that
    is plain text (``_regex.plain_text``) becomes a LIKE; for any other, ``regex`` gives
    the seqs whose document matches it (PostgreSQL's regex dialect is not Chroma's:
    those patterns run on RE2 in this process, see ``_regex``)."""

    def __init__(self, regex: Any) -> None:
        self.params: list[Any] = []
        self._regex = regex

    def _p(self, value: Any) -> str:
        self.params.append(value)
        return "%s"

    def compile(self, node: Node) -> str:
        if isinstance(node, (AllOf, AnyOf)):
            joiner = " AND " if isinstance(node, AllOf) else " OR "
            return "(" + joiner.join(self.compile(p) for p in node.parts) + ")"
        if isinstance(node, Field):
            return self._field(node)
        return self._text(node)

    def _contains(self, key: str, value: Any) -> str:
        return f"r.metadata @> {self._p(orjson.dumps({key: value}).decode())}::jsonb"

    def _field(self, f: Field) -> str:
        key, op, operand = encode_text(f.key), f.op, _encode_value(f.operand)
        if op in ("$eq", "$ne"):
            sql = self._contains(key, operand)
        elif op in ("$in", "$nin"):
            listed = [orjson.dumps({key: v}).decode() for v in operand]
            if len(listed) <= IN_AS_OR:  # each one a lookup in the metadata index
                sql = "(" + " OR ".join(f"r.metadata @> {self._p(v)}::jsonb" for v in listed) + ")"
            else:  # one parameter, whatever the length; read against every record
                sql = f"r.metadata @> ANY({self._p(listed)}::jsonb[])"
        elif op in ("$contains", "$not_contains"):
            sql = self._contains(key, [operand])
        else:
            # The expression of numeric_index_sql, so that its index serves the range.
            symbol = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[op]
            k, k2, k3 = self._p(key), self._p(key), self._p(key)
            bound = self._p(orjson.dumps(operand).decode())
            return (
                f"(jsonb_typeof(r.metadata -> {k}::text) = 'number' AND "
                f"(CASE WHEN jsonb_typeof(r.metadata -> {k2}::text) = 'number' "
                f"THEN (r.metadata -> {k3}::text)::numeric END) {symbol} {bound}::numeric)"
            )
        if op in ("$ne", "$nin", "$not_contains"):
            return f"NOT coalesce({sql}, false)"
        return sql

    def _like(self, text: str, at_start: bool, at_end: bool) -> str:
        """Documents holding ``text`` (anchored as asked): the text column by LIKE (its
        trigram index serves it), the few held as bytes by bytea's LIKE on UTF-8."""
        pattern = anchored_like(text, at_start, at_end)
        # Parameters are numbered in the order they appear in the SQL.
        like = None if "\0" in text else self._p(pattern)
        raw = self._p(pattern.encode("utf-8"))
        found = f"(r.document_bytes IS NOT NULL AND r.document_bytes LIKE {raw}::bytea)"
        return found if like is None else f"(r.document LIKE {like} OR {found})"

    def _text(self, t: Text) -> str:
        if t.op in ("$regex", "$not_regex"):
            plain = _regex.plain_text(t.value)
            if plain is not None:  # a text search: PostgreSQL runs it, by the trigram index
                found = self._like(*plain)
                return found if t.op == "$regex" else f"NOT coalesce({found}, false)"
            seqs = self._regex(t.value)
            sql = f"r.seq = ANY({self._p(seqs)}::bigint[])"
            return sql if t.op == "$regex" else f"NOT ({sql})"
        # Parameters are numbered in the order they appear in the SQL.
        like = None if "\0" in t.value else self._p(like_pattern(t.value))
        raw = self._p(t.value.encode("utf-8"))
        # Spelled so that the partial index of documents held as bytes serves this side
        # (never NULL: false for a document held as text).
        found = f"(r.document_bytes IS NOT NULL AND position({raw}::bytea in r.document_bytes) > 0)"
        if like is not None:
            found = f"(r.document LIKE {like} OR {found})"
        return found if t.op == "$contains" else f"NOT coalesce({found}, false)"


def anchored_like(text: str, at_start: bool, at_end: bool) -> str:
    """A LIKE pattern for ``text`` at the start, the end, both (equal) or anywhere."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return ("" if at_start else "%") + escaped + ("" if at_end else "%")


def compile_filter(node: Node | None, regex: Any) -> tuple[str, list[Any]]:
    """SQL for a condition tree (``TRUE`` without one) and its parameters."""
    if node is None:
        return "TRUE", []
    f = FilterSQL(regex)
    return f.compile(node), f.params
