"""``PostgresBackend``: the Backend whose state lives entirely in PostgreSQL + pgvector.

A process running it keeps nothing but a connection pool, so any number of them
(``tintdb run --postgres DSN`` behind a load balancer) serve one database, and any one
can be killed, added or replaced at any time. Each call is one transaction: a write
acknowledged by one node is what the next call on any node reads, and a failed call
(or a killed node) leaves nothing behind.

Filtered queries are planned here, not by PostgreSQL, whose filtered HNSW scan returns
short answers: count the matches, then decide as the embedded backend does
(``_planning``): exact search among them when they are few; when they are many, a
window of the nearest neighbours, with exact search for a query whose window holds
fewer than it needs. Every answer's distances are computed
from the float32 vectors exactly as the embedded backend computes them.

Over 500 lines because ``PostgresBackend`` is every ``Backend`` method over one
connection pool, each call one transaction written in SQL beside its Python, plus the
filtered-query planner (``_Planner``) that needs the same cursor. What would split it:
the catalog (tenants, databases, collections) from the record methods, and the
planner into a module of its own.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import orjson

from . import __version__, _regex, _schema
from ._conditions import condition_tree
from ._exact import RERANK_EXTRA, space_distances, unit
from ._pgsql import (
    HNSW_MAX_DIMENSION,
    MAX_EF_SEARCH,
    MIGRATIONS,
    NUMERIC_INDEXES_MAX,
    NUMERIC_TYPES,
    OPERATORS,
    SCHEMA,
    SCHEMA_VERSION,
    compile_filter,
    decode_text,
    decode_vectors,
    encode_metadata,
    encode_text,
    hnsw_index_sql,
    like_pattern,
    numeric_index_sql,
    partition_name,
    partition_sql,
    vector_dumper,
)
from ._planning import postfilter_beam, postfilter_fetch, searched_exactly, window_short
from ._results import columns_for, get_result, query_result
from ._storage import CollectionRow
from ._validation import check_dimension, merge_metadata, strip_none
from .config import DEFAULT_DATABASE, DEFAULT_DATABASE_ID, DEFAULT_TENANT, Settings
from .errors import (
    IDAlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    TintError,
    UniqueConstraintError,
)
from .types import (
    CollectionModel,
    GetResult,
    IndexingStatus,
    Metadata,
    QueryResult,
    Where,
    WhereDocument,
)

__all__ = ["PostgresBackend", "redacted"]

log = logging.getLogger("tintdb")

# Taken around schema creation, so that nodes starting together create it once.
_SCHEMA_LOCK = 0x74696E7464620001
# Matches counted at most, per filtered query (see _Planner.search).
COUNT_CAP = 100_000
# A filtered query on a collection of at least SAMPLE_ABOVE records first tests about
# SAMPLE_ROWS of them (whole pages, sampled): where at least DENSE_SHARE match, it
# post-filters a window of neighbours without counting (see _Planner._sampled).
SAMPLE_ABOVE = 4096
SAMPLE_ROWS = 1000
DENSE_SHARE = 0.05
# Writes that meet a concurrent insert of the same new id (upsert) start again, at most
# this many times.
WRITE_RETRIES = 8
DEFAULT_POOL_SIZE = 10
# A partition's statistics are gathered again once its records have doubled (and grown
# by at least this many) since the last time.
ANALYZE_STEP = 1000
# An add of at least BULK_MIN records that makes up at least 1/BULK_SHARE of the
# collection once added rebuilds its HNSW index instead of inserting into it (see
# PostgresBackend._insert): measured, building cost about a seventh of inserting per
# record, so the rebuild wins from about 1/7; 1/4 leaves room for the larger graph.
BULK_MIN = 1000
BULK_SHARE = 4
# Collections a node keeps what it plans queries by for (see _Known); past this many the
# memory is emptied and refilled by the next calls.
KNOWN_MAX = 4096

_COLLECTION_SELECT = (
    "SELECT c.coll, c.id, c.name, d.tenant, d.name, c.metadata, c.configuration, "
    "c.dimension, c.n_records, c.indexed, c.version FROM tintdb.collections c "
    "JOIN tintdb.databases d ON d.id = c.database_id"
)


def _driver() -> Any:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:  # the embedded install does not carry the driver
        raise ImportError(
            "the PostgreSQL backend needs its driver: pip install 'tintdb[postgres]'"
        ) from exc
    return psycopg, psycopg_pool


class _Collection(CollectionRow):
    """A collection row with what the PostgreSQL backend plans by."""

    n_records: int = 0
    indexed: bool = False
    version: int = 0


def _collection(row: Sequence[Any]) -> _Collection:
    configuration = orjson.loads(row[6])
    declared = configuration.pop("schema", None)  # kept in the same column, as embedded
    c = _Collection(
        id=row[1],
        name=row[2],
        tenant=row[3],
        database=row[4],
        metadata=None if row[5] is None else orjson.loads(row[5]),
        configuration=configuration,
        dimension=row[7],
    )
    c.coll, c.n_records, c.indexed = int(row[0]), int(row[8]), bool(row[9])
    c.version = int(row[10])
    c.declared_schema = declared
    return c


@dataclass(frozen=True)
class _Known:
    """What an unfiltered query on a collection is planned and written by, as a node read
    it in an earlier call. Only a hint: the statement that relies on it also reads the
    collection's row (its ``version``, bumped by every change of the row, and its count),
    and the answer is used only if they still agree; otherwise the call is made again
    the long way. So a collection changed or deleted through another node is never
    answered from this memory."""

    coll: int
    dimension: int
    space: str
    ef: int
    indexed: bool
    version: int
    n_records: int


def _plain(conn: Any) -> None:
    """Put a connection's transaction settings back before the pool has it again. It
    runs in ``finally``: should psycopg refuse (it does for a connection not idle), the
    call's own error is the one to report, and the pool discards a broken connection."""
    with contextlib.suppress(Exception):
        conn.isolation_level = None
        conn.read_only = None


def _known(col: _Collection) -> _Known | None:
    if col.dimension is None:
        return None
    return _Known(
        coll=col.coll,
        dimension=col.dimension,
        space=col.space,
        ef=int(col.configuration["hnsw"].get("ef_search") or 100),
        indexed=col.indexed,
        version=col.version,
        n_records=col.n_records,
    )


def _ranked(
    space: str, dim: int, v: np.ndarray, k: int, rows: Sequence[tuple[Any, ...]]
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest of ``rows`` (seq, pgvector binary vector) by the distance the
    embedded backend computes, in float32."""
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.float32)
    seqs = np.array([r[0] for r in rows], dtype=np.int64)
    vecs = decode_vectors([bytes(r[1]) for r in rows], dim)
    query = v.astype(np.float32)
    if space == "cosine":
        vecs = unit(vecs).astype(np.float32)
        query = unit(query[None, :])[0].astype(np.float32)
    d = space_distances(space, query, vecs)
    order = np.lexsort((seqs, d))[:k]
    return seqs[order], d[order]


def _stored_configuration(col: _Collection) -> dict[str, Any]:
    """The configuration column as written: Chroma's sections plus the declared schema."""
    if col.declared_schema is None:
        return dict(col.configuration)
    return {**col.configuration, "schema": col.declared_schema}


def _exact_shown(ids: Sequence[str]) -> str:
    shown = ", ".join(sorted(ids)[:10])
    return shown + (" ..." if len(ids) > 10 else "")


class PostgresBackend:
    """Every call is a transaction on PostgreSQL; this object holds only a pool."""

    remote = False

    def __init__(
        self,
        dsn: str,
        settings: Settings | None = None,
        *,
        pool_size: int = DEFAULT_POOL_SIZE,
        defer_index: bool = False,
    ) -> None:
        """``defer_index``: collections whose first write comes through this backend get
        their HNSW index only from ``build_indexes()`` (a bulk load: one build at the
        end instead of insertion record by record); they are searched exactly until then."""
        psycopg, psycopg_pool = _driver()
        self._psycopg = psycopg
        self.settings = settings or Settings()
        self.dsn = dsn
        self.defer_index = defer_index
        self._deferred: set[int] = set()
        # collection id -> what its unfiltered queries are planned by (see _Known).
        self._known: dict[str, _Known] = {}
        self._vector_oid = 0
        self._init_schema()
        self.pool = psycopg_pool.ConnectionPool(
            dsn,
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True, "prepare_threshold": None},
            configure=self._configure,
            open=False,
            name="tintdb",
        )
        try:
            self.pool.open(wait=True, timeout=30)
        except psycopg_pool.PoolTimeout as exc:
            raise TintError(f"cannot connect to PostgreSQL at {redacted(dsn)}: {exc}") from None
        self._closed = False

    # ------------------------------------------------------------ connections

    def _init_schema(self) -> None:
        psycopg = self._psycopg
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=30)
        except psycopg.OperationalError as exc:
            raise TintError(
                f"cannot connect to PostgreSQL at {redacted(self.dsn)}: {exc}"
            ) from None
        with conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for extension in ("vector", "pg_trgm"):
                try:
                    with conn.transaction():
                        conn.execute(f"CREATE EXTENSION IF NOT EXISTS {extension}")
                except psycopg.Error as exc:
                    raise TintError(
                        f"PostgreSQL extension {extension!r} is missing and could not be "
                        f"created ({exc.diag.message_primary}); ask the database's owner "
                        f"to run CREATE EXTENSION {extension}"
                    ) from None
            conn.execute(SCHEMA)
            row = conn.execute("SELECT value FROM tintdb.info WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO tintdb.info VALUES ('schema', %s)", (str(SCHEMA_VERSION),)
                )
                self._insert_defaults(conn)
            elif int(row[0]) > SCHEMA_VERSION:
                raise TintError(
                    f"this PostgreSQL database has tintdb schema {row[0]}, newer than this "
                    f"version of tintdb reads ({SCHEMA_VERSION}); upgrade tintdb"
                )
            elif int(row[0]) < SCHEMA_VERSION:
                self._migrate(conn, int(row[0]))

    @staticmethod
    def _migrate(conn: Any, found: int) -> None:
        """Bring a database of schema ``found`` up to SCHEMA_VERSION, inside the start-up
        transaction (so all of it or none), under the schema lock."""
        for version in range(found + 1, SCHEMA_VERSION + 1):
            conn.execute(MIGRATIONS[version])
            if version == 2:  # the range indexes of the collections there already are
                rows = conn.execute(
                    "SELECT coll, key FROM tintdb.collection_keys WHERE vtype = ANY(%s) "
                    "GROUP BY coll, key ORDER BY coll, key",
                    (list(NUMERIC_TYPES),),
                ).fetchall()
                per_collection: dict[int, int] = {}
                for coll, key in rows:
                    per_collection[coll] = per_collection.get(coll, 0) + 1
                    if per_collection[coll] <= NUMERIC_INDEXES_MAX:
                        conn.execute(numeric_index_sql(coll, key))
        conn.execute(
            "UPDATE tintdb.info SET value = %s WHERE key = 'schema'", (str(SCHEMA_VERSION),)
        )

    @staticmethod
    def _insert_defaults(conn: Any) -> None:
        conn.execute(
            "INSERT INTO tintdb.tenants(name) VALUES (%s) ON CONFLICT DO NOTHING",
            (DEFAULT_TENANT,),
        )
        conn.execute(
            "INSERT INTO tintdb.databases(id, name, tenant) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (DEFAULT_DATABASE_ID, DEFAULT_DATABASE, DEFAULT_TENANT),
        )

    def _configure(self, conn: Any) -> None:
        from psycopg.types.json import set_json_dumps

        oid = int(conn.execute("SELECT 'vector'::regtype::oid").fetchone()[0])
        conn.adapters.register_dumper(np.ndarray, vector_dumper(oid))
        set_json_dumps(_json_dumps, context=conn)
        self._vector_oid = oid

    @contextlib.contextmanager
    def _tx(self, *, read: bool = False) -> Iterator[Any]:
        """A binary cursor in one transaction. Reads of several statements see one
        snapshot (REPEATABLE READ, read only); writes are READ COMMITTED, with rows
        locked where a decision depends on them."""
        if self._closed:
            raise InvalidArgumentError("This client is closed; create a new one")
        with self.pool.connection() as conn:
            if not read:
                with conn.transaction():
                    yield conn.cursor(binary=True)
                return
            # Sent with BEGIN itself (no statement of its own), and put back before the
            # connection returns to the pool.
            conn.isolation_level = self._psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            try:
                with conn.transaction():
                    yield conn.cursor(binary=True)
            finally:
                _plain(conn)

    # ------------------------------------------------------------ lifecycle

    def heartbeat(self) -> int:
        return time.time_ns()

    def version(self) -> str:
        return __version__

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self.pool.close()

    def vacuum(self) -> None:
        """``client.vacuum()``: PostgreSQL's VACUUM (and ANALYZE) of every collection's
        records, which makes the space of deleted and updated rows reusable. It does not
        shrink the files (VACUUM FULL would, locking each collection while it runs);
        deleting a collection drops its partition and frees its space at once."""
        if self._closed:
            raise InvalidArgumentError("This client is closed; create a new one")
        with self.pool.connection() as conn:  # autocommit: VACUUM runs outside a transaction
            conn.execute("VACUUM (ANALYZE) tintdb.records")

    def reset(self) -> bool:
        with self._tx() as cur:
            for (coll,) in cur.execute("SELECT coll FROM tintdb.collections").fetchall():
                cur.execute(f"DROP TABLE IF EXISTS {partition_name(coll)}")
            cur.execute("DELETE FROM tintdb.collections")
            cur.execute("DELETE FROM tintdb.databases")
            cur.execute("DELETE FROM tintdb.tenants")
            self._insert_defaults(cur)
        return True

    # ------------------------------------------------------------ tenants and databases

    def create_tenant(self, name: str) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO tintdb.tenants(name) VALUES (%s) ON CONFLICT DO NOTHING RETURNING 1",
                (name,),
            )
            if cur.fetchone() is None:
                raise UniqueConstraintError(f"Tenant [{name}] already exists")

    @staticmethod
    def _check_tenant(cur: Any, name: str) -> None:
        if cur.execute("SELECT 1 FROM tintdb.tenants WHERE name = %s", (name,)).fetchone() is None:
            raise NotFoundError(f"Tenant [{name}] not found")

    def get_tenant(self, name: str) -> dict[str, Any]:
        with self._tx(read=True) as cur:
            self._check_tenant(cur, name)
        return {"name": name}

    def list_tenants(self) -> list[str]:
        """Every tenant's name (for ``tintdb copy``; not part of Chroma's API)."""
        with self._tx(read=True) as cur:
            return [r[0] for r in cur.execute("SELECT name FROM tintdb.tenants ORDER BY name")]

    def create_database(self, name: str, tenant: str) -> None:
        with self._tx() as cur:
            self._check_tenant(cur, tenant)
            cur.execute(
                "INSERT INTO tintdb.databases(id, name, tenant) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                (str(uuid.uuid4()), name, tenant),
            )
            if cur.fetchone() is None:
                raise UniqueConstraintError(f"Database [{name}] already exists")

    def _database_id(self, cur: Any, name: str, tenant: str) -> str:
        row = cur.execute(
            "SELECT id FROM tintdb.databases WHERE tenant = %s AND name = %s", (tenant, name)
        ).fetchone()
        if row is None:
            self._check_tenant(cur, tenant)
            raise NotFoundError(f"Database [{name}] not found. Are you sure it exists?")
        return str(row[0])

    def get_database(self, name: str, tenant: str) -> dict[str, Any]:
        with self._tx(read=True) as cur:
            return {"id": self._database_id(cur, name, tenant), "name": name, "tenant": tenant}

    def list_databases(
        self, tenant: str, limit: int | None = None, offset: int | None = None
    ) -> list[dict[str, Any]]:
        with self._tx(read=True) as cur:
            self._check_tenant(cur, tenant)
            rows = cur.execute(
                "SELECT id, name, tenant FROM tintdb.databases WHERE tenant = %s ORDER BY pos "
                "LIMIT %s OFFSET %s",
                (tenant, limit, offset or 0),
            ).fetchall()
        return [{"id": r[0], "name": r[1], "tenant": r[2]} for r in rows]

    def delete_database(self, name: str, tenant: str) -> None:
        with self._tx() as cur:
            db_id = self._database_id(cur, name, tenant)
            rows = cur.execute(
                "DELETE FROM tintdb.collections WHERE database_id = %s RETURNING coll", (db_id,)
            ).fetchall()
            for (coll,) in rows:
                cur.execute(f"DROP TABLE IF EXISTS {partition_name(coll)}")
            cur.execute("DELETE FROM tintdb.databases WHERE id = %s", (db_id,))

    # ------------------------------------------------------------ collections

    def _select(
        self, cur: Any, where: str, params: Sequence[Any], lock: str = ""
    ) -> _Collection | None:
        sql = f"{_COLLECTION_SELECT} WHERE {where}"
        if lock:
            sql += f" FOR {lock} OF c"
        row = cur.execute(sql, params).fetchone()
        return None if row is None else self._shown(_collection(row))

    def _shown(self, col: _Collection) -> _Collection:
        """``col``, able to show its schema (discovered metadata keys included) when
        asked: built on first access, in a read of its own."""

        def source() -> dict[str, Any]:
            with self._tx(read=True) as cur:
                rows = cur.execute(
                    "SELECT key, vtype FROM tintdb.collection_keys WHERE coll = %s",
                    (col.coll,),
                ).fetchall()
            found = [(decode_text(key), vtype) for key, vtype in rows]
            return _schema.collection_schema(_stored_configuration(col), found)

        col.schema_source = source
        return col

    @staticmethod
    def _note_value_types(cur: Any, coll: int, metadatas: Sequence[Metadata | None]) -> None:
        """Inside a write: remember the (key, value type) pairs of ``metadatas`` (the
        collection's discovered keys; a pair already known is left as it is). A key
        that holds numbers for the first time gets its range index (numeric_index_sql),
        while the collection has fewer than NUMERIC_INDEXES_MAX of them."""
        pairs = sorted(_schema.metadata_value_types(metadatas))
        if not pairs:
            return
        added = cur.execute(
            "INSERT INTO tintdb.collection_keys(coll, key, vtype) "
            "SELECT %s, k, t FROM unnest(%s::text[], %s::text[]) AS p(k, t) "
            "ON CONFLICT DO NOTHING RETURNING key, vtype",
            (coll, [encode_text(k) for k, _ in pairs], [t for _, t in pairs]),
        ).fetchall()
        fresh = sorted({key for key, vtype in added if vtype in NUMERIC_TYPES})
        if not fresh:
            return
        # A key that held numbers before this write (of the other type: an int key that
        # now also holds a float) has its index already.
        numeric = cur.execute(
            "SELECT key, vtype FROM tintdb.collection_keys WHERE coll = %s AND vtype = ANY(%s)",
            (coll, list(NUMERIC_TYPES)),
        ).fetchall()
        just = set(added)
        before = {key for key, vtype in numeric if (key, vtype) not in just}
        new = [key for key in fresh if key not in before]
        for key in new[: max(0, NUMERIC_INDEXES_MAX - len(before))]:
            cur.execute(numeric_index_sql(coll, key))

    def _by_id(self, cur: Any, collection_id: str, lock: str = "") -> _Collection:
        found = self._select(cur, "c.id = %s", (collection_id,), lock)
        if found is None:
            raise NotFoundError(f"Collection [{collection_id}] does not exist.")
        return found

    def create_collection(
        self,
        name: str,
        metadata: dict[str, Any] | None,
        configuration: dict[str, Any] | None,
        get_or_create: bool,
        tenant: str,
        database: str,
    ) -> CollectionModel:
        """``configuration`` is what the client sent (sections, ``schema``); the
        collection stores it resolved (see _schema.resolve_create)."""
        resolved = _schema.resolve_create(metadata, configuration)
        with self._tx() as cur:
            db_id = self._database_id(cur, database, tenant)
            cur.execute(
                "INSERT INTO tintdb.collections(id, name, database_id, metadata, configuration) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (database_id, name) DO NOTHING "
                "RETURNING coll",
                (
                    str(uuid.uuid4()),
                    name,
                    db_id,
                    None if metadata is None else orjson.dumps(metadata),
                    orjson.dumps(resolved),
                ),
            )
            row = cur.fetchone()
            if row is None:  # the name is taken (perhaps by a call on another node)
                existing = self._select(cur, "c.database_id = %s AND c.name = %s", (db_id, name))
                if get_or_create and existing is not None:
                    return existing
                raise UniqueConstraintError(f"Collection [{name}] already exists")
            coll = int(row[0])
            for sql in partition_sql(coll):
                cur.execute(sql)
            return self._by_id_coll(cur, coll)

    def _by_id_coll(self, cur: Any, coll: int) -> _Collection:
        found = self._select(cur, "c.coll = %s", (coll,))
        assert found is not None
        return found

    def get_collection(self, name: str, tenant: str, database: str) -> CollectionModel:
        with self._tx(read=True) as cur:
            db_id = self._database_id(cur, database, tenant)
            found = self._select(cur, "c.database_id = %s AND c.name = %s", (db_id, name))
        if found is None:
            raise NotFoundError(f"Collection [{name}] does not exist")
        return found

    def get_collection_by_id(self, collection_id: str) -> CollectionModel:
        with self._tx(read=True) as cur:
            return self._by_id(cur, collection_id)

    def list_collections(
        self, limit: int | None, offset: int | None, tenant: str, database: str
    ) -> list[CollectionModel]:
        with self._tx(read=True) as cur:
            db = cur.execute(
                "SELECT id FROM tintdb.databases WHERE tenant = %s AND name = %s",
                (tenant, database),
            ).fetchone()
            if db is None:
                return []
            rows = cur.execute(
                f"{_COLLECTION_SELECT} WHERE c.database_id = %s ORDER BY c.coll LIMIT %s OFFSET %s",
                (db[0], limit, offset or 0),
            ).fetchall()
        return [self._shown(_collection(r)) for r in rows]

    def count_collections(self, tenant: str, database: str) -> int:
        with self._tx(read=True) as cur:
            row = cur.execute(
                "SELECT count(*) FROM tintdb.collections c JOIN tintdb.databases d "
                "ON d.id = c.database_id WHERE d.tenant = %s AND d.name = %s",
                (tenant, database),
            ).fetchone()
        return int(row[0])

    def modify_collection(
        self,
        collection_id: str,
        new_name: str | None,
        new_metadata: dict[str, Any] | None,
        new_configuration: dict[str, Any] | None,
    ) -> CollectionModel:
        with self._tx() as cur:
            col = self._by_id(cur, collection_id, "NO KEY UPDATE")
            if new_name is not None and new_name != col.name:
                cur.execute(
                    "UPDATE tintdb.collections SET name = %s, version = version + 1 "
                    "WHERE coll = %s AND NOT EXISTS "
                    "(SELECT 1 FROM tintdb.collections o WHERE o.database_id = "
                    "(SELECT database_id FROM tintdb.collections WHERE coll = %s) AND o.name = %s) "
                    "RETURNING 1",
                    (new_name, col.coll, col.coll, new_name),
                )
                if cur.fetchone() is None:
                    raise UniqueConstraintError(
                        f"Cannot rename collection [{col.name}] to [{new_name}]: "
                        "a collection with that name already exists"
                    )
            if new_metadata is not None:
                cur.execute(
                    "UPDATE tintdb.collections SET metadata = %s, version = version + 1 "
                    "WHERE coll = %s",
                    (orjson.dumps(new_metadata), col.coll),
                )
            if new_configuration is not None:  # the change asked for (_schema.apply_update)
                config = _schema.apply_update(_stored_configuration(col), new_configuration)
                cur.execute(
                    "UPDATE tintdb.collections SET configuration = %s, version = version + 1 "
                    "WHERE coll = %s",
                    (orjson.dumps(config), col.coll),
                )
            return self._by_id_coll(cur, col.coll)

    def delete_collection(self, name: str, tenant: str, database: str) -> None:
        with self._tx() as cur:
            db_id = self._database_id(cur, database, tenant)
            row = cur.execute(
                "DELETE FROM tintdb.collections WHERE database_id = %s AND name = %s "
                "RETURNING coll",
                (db_id, name),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"Collection [{name}] does not exist")
            cur.execute(f"DROP TABLE IF EXISTS {partition_name(row[0])}")

    # ------------------------------------------------------------ search and fork

    def search(
        self, collection_id: str, searches: list[dict[str, Any]], read_level: str = ""
    ) -> dict[str, Any]:
        """Not on PostgreSQL yet: refused with what to use (docs/deployment.md)."""
        raise InvalidArgumentError(
            "collection.search() is not available on the PostgreSQL backend yet; "
            "use collection.query()"
        )

    def fork(self, collection_id: str, new_name: str) -> CollectionModel:
        """Not on PostgreSQL yet: refused with what to use (docs/deployment.md)."""
        raise InvalidArgumentError(
            "collection.fork() is not available on the PostgreSQL backend yet; "
            "tintdb copy copies a collection"
        )

    def fork_count(self, collection_id: str) -> int:
        with self._tx(read=True) as cur:
            self._by_id(cur, collection_id)
        return 0

    def indexing_status(self, collection_id: str) -> IndexingStatus:
        """pgvector's index takes each row in the writing transaction: nothing waits."""
        return IndexingStatus.of(self.count(collection_id), 0)

    # ------------------------------------------------------------ records: writes

    def _writing(self, cur: Any, collection_id: str) -> _Collection:
        """The collection, locked against deletion (not against other writers) for the
        rest of the write."""
        return self._by_id(cur, collection_id, "KEY SHARE")

    def _set_dimension(self, cur: Any, col: _Collection, dim: int) -> bool:
        """Fix the dimension on first write (True if this write fixed it); afterwards
        refuse any other length. A concurrent first write waits on the row, then sees
        the dimension the other one set."""
        if col.dimension is None:
            cur.execute(
                "UPDATE tintdb.collections SET dimension = %s, version = version + 1 "
                "WHERE coll = %s AND dimension IS NULL RETURNING 1",
                (dim, col.coll),
            )
            if cur.fetchone() is not None:
                col.dimension = dim
                return True
            row = cur.execute(
                "SELECT dimension FROM tintdb.collections WHERE coll = %s", (col.coll,)
            ).fetchone()
            col.dimension = row[0]
        check_dimension(col.dimension, dim)
        return False

    def _index_new(self, cur: Any, col: _Collection) -> None:
        """The partition's HNSW index, built in the write that fixed the dimension,
        after its rows (one build, not one insertion per record)."""
        dim = col.dimension
        assert dim is not None
        if dim > HNSW_MAX_DIMENSION:
            return
        if self.defer_index:
            self._deferred.add(col.coll)
            return
        cur.execute(hnsw_index_sql(col.coll, dim, col.space, col.configuration["hnsw"]))
        cur.execute(
            "UPDATE tintdb.collections SET indexed = true, version = version + 1 WHERE coll = %s",
            (col.coll,),
        )

    def build_indexes(self) -> None:
        """Build the HNSW indexes deferred by ``defer_index``."""
        for coll in sorted(self._deferred):
            with self._tx() as cur:
                col = self._select(cur, "c.coll = %s", (coll,), "NO KEY UPDATE")
                if col is None or col.indexed or col.dimension is None:
                    continue
                cur.execute(
                    hnsw_index_sql(coll, col.dimension, col.space, col.configuration["hnsw"])
                )
                cur.execute(
                    "UPDATE tintdb.collections SET indexed = true, version = version + 1 "
                    "WHERE coll = %s",
                    (coll,),
                )
        self._deferred.clear()

    @staticmethod
    def _existing(
        cur: Any, coll: int, ids: list[str], lock: bool = False
    ) -> dict[str, tuple[int, bytes | None]]:
        """id -> (seq, metadata JSON) for the ids that exist (rows locked with ``lock``)."""
        rows = cur.execute(
            "SELECT id, seq, metadata_json FROM tintdb.records WHERE coll = %s AND id = ANY(%s)"
            # Locked in one order (seq) by every call, so two calls never wait on each other.
            + (" ORDER BY seq FOR NO KEY UPDATE" if lock else ""),
            (coll, [encode_text(i) for i in ids]),
        ).fetchall()
        return {decode_text(r[0]): (int(r[1]), r[2]) for r in rows}

    def _insert(
        self,
        cur: Any,
        col: _Collection,
        ids: list[str],
        embeddings: np.ndarray,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        """New records through COPY (binary), in the call's transaction.

        Into a partition with its HNSW index, each row is inserted into the graph one by
        one, several times slower per record than building the graph over all of them.
        So a batch that is a large share of the collection it goes into (BULK_SHARE, at
        least BULK_MIN records) drops the index, copies, and builds it again over the
        whole partition, all in the one transaction: a failure anywhere (a bad record,
        the build) leaves records and index as they were. The price: while that call
        runs, other calls on this collection (reads too) wait for it, as DROP INDEX
        locks the partition; other collections are not affected."""
        coll, n = col.coll, len(ids)
        rebuild = (
            col.indexed
            and col.dimension is not None
            and n >= BULK_MIN
            and n * BULK_SHARE >= col.n_records + n
        )
        if rebuild:
            cur.execute(f"DROP INDEX IF EXISTS tintdb.records_{int(coll)}_hnsw")
        with cur.copy(
            "COPY tintdb.records (coll, id, document, document_bytes, uri, metadata_json, "
            "metadata, embedding) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(
                ["int8", "text", "text", "bytea", "text", "bytea", "jsonb", self._vector_oid]
            )
            for i in range(n):
                md = None if metadatas is None else strip_none(metadatas[i])
                doc = None if documents is None else documents[i]
                uri = None if uris is None else uris[i]
                nul = doc is not None and "\0" in doc
                copy.write_row(
                    (
                        coll,
                        encode_text(ids[i]),
                        None if nul else doc,
                        doc.encode("utf-8") if nul and doc is not None else None,
                        None if uri is None else encode_text(uri),
                        None if md is None else orjson.dumps(md),
                        _raw_json(encode_metadata(md)),
                        embeddings[i],
                    )
                )
        if rebuild:
            assert col.dimension is not None
            cur.execute(hnsw_index_sql(coll, col.dimension, col.space, col.configuration["hnsw"]))
        cur.execute(
            "UPDATE tintdb.collections SET n_records = n_records + %s WHERE coll = %s "
            "RETURNING n_records, analyzed",
            (n, coll),
        )
        count, analyzed = cur.fetchone()
        if count >= 2 * analyzed + ANALYZE_STEP:
            # PostgreSQL plans by statistics that autovacuum gathers only after a while:
            # a partition that doubled since they were taken gets them now, or its
            # filters are planned as if it were nearly empty (every record read, the
            # metadata index unused). ANALYZE reads a bounded sample.
            cur.execute(f"ANALYZE {partition_name(coll)}")
            cur.execute(
                "UPDATE tintdb.collections SET analyzed = %s WHERE coll = %s", (count, coll)
            )

    def _update_rows(
        self,
        cur: Any,
        coll: int,
        found: dict[str, tuple[int, bytes | None]],
        ids: list[str],
        rows: list[int],
        embeddings: np.ndarray | None,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        """Overwrite the given fields of existing records ``ids[i] for i in rows``:
        None leaves a field as it is; metadata merges key by key."""
        groups: dict[tuple[str, ...], list[tuple[Any, ...]]] = {}
        for i in rows:
            seq, stored = found[ids[i]]
            sets: list[tuple[str, Any]] = []
            if embeddings is not None:
                sets.append(("embedding", embeddings[i]))
            if documents is not None and documents[i] is not None:
                doc = documents[i]
                assert doc is not None
                nul = "\0" in doc
                sets.append(("document", None if nul else doc))
                sets.append(("document_bytes", doc.encode("utf-8") if nul else None))
            if uris is not None and uris[i] is not None:
                sets.append(("uri", encode_text(uris[i] or "")))
            if metadatas is not None and metadatas[i] is not None:
                merged = merge_metadata(
                    orjson.loads(stored) if stored else None, metadatas[i] or {}
                )
                sets.append(("metadata_json", None if merged is None else orjson.dumps(merged)))
                sets.append(("metadata", encode_metadata(merged)))
            if sets:
                key = tuple(name for name, _ in sets)
                groups.setdefault(key, []).append((*(v for _, v in sets), coll, seq))
        for names, params in groups.items():
            assignments = ", ".join(
                f"{n} = %s::jsonb"
                if n == "metadata"
                else f"{n} = %b"
                if n == "embedding"
                else f"{n} = %s"
                for n in names
            )
            cur.executemany(
                f"UPDATE tintdb.records SET {assignments} WHERE coll = %s AND seq = %s",
                [
                    tuple(
                        v.decode() if n == "metadata" and v is not None else v
                        for n, v in zip((*names, "coll", "seq"), p, strict=True)
                    )
                    for p in params
                ],
            )

    def add(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: np.ndarray,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        self._retrying(
            lambda: self._add_once(collection_id, ids, embeddings, metadatas, documents, uris)
        )

    def _retrying(self, call: Any, *, on_unique: bool = False) -> Any:
        """Run a write, again if PostgreSQL aborted it for a deadlock with a concurrent
        call (two adds inserting the same ids in opposite orders, say) or, with
        ``on_unique``, for a new id another call inserted after this one looked. An
        aborted call wrote nothing, so running it again is safe."""
        errors = self._psycopg.errors
        retry: tuple[type[BaseException], ...] = (errors.DeadlockDetected,)
        if on_unique:
            retry += (errors.UniqueViolation,)
        for attempt in range(WRITE_RETRIES):
            try:
                return call()
            except retry:
                if attempt == WRITE_RETRIES - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))

    def _add_once(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: np.ndarray,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        unique_violation = self._psycopg.errors.UniqueViolation
        try:
            with self._tx() as cur:
                col = self._writing(cur, collection_id)
                if not ids:
                    return
                first = self._set_dimension(cur, col, int(embeddings.shape[1]))
                taken = self._existing(cur, col.coll, ids)
                if taken:
                    raise self._already(col, list(taken))
                self._insert(cur, col, ids, embeddings, metadatas, documents, uris)
                if metadatas:
                    self._note_value_types(cur, col.coll, metadatas)
                if first:
                    self._index_new(cur, col)
        except unique_violation:
            # Another call inserted some of these ids between the check and the insert:
            # nothing of this call was written; say which, as the check would have.
            with self._tx(read=True) as cur:
                col = self._by_id(cur, collection_id)
                taken = self._existing(cur, col.coll, ids)
            raise self._already(col, list(taken) or ids) from None

    @staticmethod
    def _already(col: CollectionModel, taken: list[str]) -> IDAlreadyExistsError:
        return IDAlreadyExistsError(
            f"{len(taken)} of the ids already exist in collection {col.name!r}: "
            f"{_exact_shown(taken)}. Nothing was added; use upsert() to overwrite."
        )

    def update(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: np.ndarray | None,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        self._retrying(
            lambda: self._update_once(collection_id, ids, embeddings, metadatas, documents, uris)
        )

    def _update_once(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: np.ndarray | None,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        with self._tx() as cur:
            col = self._writing(cur, collection_id)
            if embeddings is not None and col.dimension is not None:
                self._set_dimension(cur, col, int(embeddings.shape[1]))
            found = self._existing(cur, col.coll, ids, lock=True)
            rows = [i for i, x in enumerate(ids) if x in found]
            if rows:
                self._update_rows(
                    cur, col.coll, found, ids, rows, embeddings, metadatas, documents, uris
                )
                if metadatas:
                    self._note_value_types(cur, col.coll, [metadatas[i] for i in rows])

    def upsert(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: np.ndarray,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        # A new id inserted by a concurrent call after this one looked rolls this one
        # back whole; looking again, it is an update.
        self._retrying(
            lambda: self._upsert_once(collection_id, ids, embeddings, metadatas, documents, uris),
            on_unique=True,
        )

    def _upsert_once(
        self,
        collection_id: str,
        ids: list[str],
        embeddings: np.ndarray,
        metadatas: list[Metadata | None] | None,
        documents: list[str | None] | None,
        uris: list[str | None] | None,
    ) -> None:
        with self._tx() as cur:
            col = self._writing(cur, collection_id)
            if not ids:
                return
            first = self._set_dimension(cur, col, int(embeddings.shape[1]))
            found = self._existing(cur, col.coll, ids, lock=True)
            old = [i for i, x in enumerate(ids) if x in found]
            new = [i for i, x in enumerate(ids) if x not in found]
            if old:
                self._update_rows(
                    cur, col.coll, found, ids, old, embeddings, metadatas, documents, uris
                )
            if new:
                self._insert(
                    cur,
                    col,
                    [ids[i] for i in new],
                    embeddings[new],
                    None if metadatas is None else [metadatas[i] for i in new],
                    None if documents is None else [documents[i] for i in new],
                    None if uris is None else [uris[i] for i in new],
                )
            if metadatas:
                self._note_value_types(cur, col.coll, metadatas)
            if first:
                self._index_new(cur, col)

    def _filter(
        self,
        cur: Any,
        col: _Collection,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
    ) -> tuple[str, list[Any]]:
        """SQL selecting the collection's records that pass every filter."""

        def regex(pattern: str) -> list[int]:
            # Chroma's regex dialect is not PostgreSQL's: documents are read and matched
            # here, on RE2, in the call's transaction. A run of text that every match
            # holds (_regex.required_literal) narrows them first, through the trigram
            # index (documents held as bytes, a few, are all read).
            literal = _regex.required_literal(pattern)
            narrow = "document IS NOT NULL"
            params: tuple[Any, ...] = (col.coll,)
            if literal is not None and "\0" not in literal:
                narrow, params = "document LIKE %s", (col.coll, like_pattern(literal))
            rows = cur.execute(
                "SELECT seq, document, document_bytes FROM tintdb.records WHERE coll = %s "
                f"AND ({narrow} OR document_bytes IS NOT NULL)",
                params,
            ).fetchall()
            return [
                int(seq)
                for seq, doc, raw in rows
                if _regex.search(pattern, doc if doc is not None else raw.decode("utf-8"))
            ]

        cond, params = compile_filter(condition_tree(where, where_document), regex)
        sql = "r.coll = %s"
        out: list[Any] = [col.coll]
        if ids is not None:
            sql += " AND r.id = ANY(%s)"
            out.append([encode_text(i) for i in ids])
        return f"{sql} AND {cond}", [*out, *params]

    def delete(
        self,
        collection_id: str,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        limit: int | None = None,
    ) -> int:
        return int(
            self._retrying(
                lambda: self._delete_once(collection_id, ids, where, where_document, limit)
            )
        )

    def _delete_once(
        self,
        collection_id: str,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        limit: int | None,
    ) -> int:
        with self._tx() as cur:
            col = self._writing(cur, collection_id)
            cond, params = self._filter(cur, col, ids, where, where_document)
            cur.execute(
                "DELETE FROM tintdb.records WHERE coll = %s AND seq IN (SELECT r.seq FROM "
                f"tintdb.records r WHERE {cond} ORDER BY r.seq LIMIT %s)",
                (col.coll, *params, limit),
            )
            gone = cur.rowcount
            if gone:
                cur.execute(
                    "UPDATE tintdb.collections SET n_records = n_records - %s WHERE coll = %s",
                    (gone, col.coll),
                )
            return int(gone)

    # ------------------------------------------------------------ records: reads

    def count(self, collection_id: str) -> int:
        with self._tx(read=True) as cur:
            return self._by_id(cur, collection_id).n_records

    @staticmethod
    def _select_list(columns: list[str]) -> str:
        parts = []
        for c in columns:
            parts.append(
                "r.document, r.document_bytes"
                if c == "document"
                else f"r.{c if c != 'metadata' else 'metadata_json'}"
            )
        return "".join(", " + p for p in parts)

    @staticmethod
    def _rows(
        raw: list[tuple[Any, ...]], columns: list[str], dim: int | None
    ) -> list[tuple[Any, ...]]:
        """Rows as ``(seq, id, *columns)`` the way result shaping reads them: strings
        decoded, the documents held as bytes put back, vectors decoded in one call."""
        if not raw:
            return []
        out: list[list[Any]] = [[r[0], decode_text(r[1])] for r in raw]
        pos = 2
        vec_pos = None
        for c in columns:
            if c == "document":
                for row, r in zip(out, raw, strict=True):
                    row.append(r[pos] if r[pos + 1] is None else bytes(r[pos + 1]).decode("utf-8"))
                pos += 2
                continue
            if c == "embedding":
                vec_pos = len(out[0])
                for row, r in zip(out, raw, strict=True):
                    row.append(r[pos])
            elif c == "uri":
                for row, r in zip(out, raw, strict=True):
                    row.append(None if r[pos] is None else decode_text(r[pos]))
            else:
                for row, r in zip(out, raw, strict=True):
                    row.append(None if r[pos] is None else bytes(r[pos]))
            pos += 1
        if vec_pos is not None:
            out = [row for row in out if row[vec_pos] is not None]  # as a join would
            vecs = decode_vectors([bytes(row[vec_pos]) for row in out], dim or 0)
            for row, v in zip(out, vecs, strict=True):
                row[vec_pos] = v.tobytes()
        return [tuple(row) for row in out]

    def get(
        self,
        collection_id: str,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        limit: int | None,
        offset: int | None,
        include: list[str],
    ) -> GetResult:
        columns = columns_for(include)
        with self._tx(read=True) as cur:
            col = self._by_id(cur, collection_id)
            cond, params = self._filter(cur, col, ids, where, where_document)
            raw = cur.execute(
                f"SELECT r.seq, r.id{self._select_list(columns)} FROM tintdb.records r "
                f"WHERE {cond} ORDER BY r.seq LIMIT %s OFFSET %s",
                (*params, limit, offset or 0),
            ).fetchall()
        return get_result(self._rows(raw, columns, col.dimension), columns, include, col.dimension)

    def page_after(self, collection_id: str, after: int, size: int) -> tuple[int, GetResult]:
        """Up to ``size`` records after seq ``after``, in storage order, with every field,
        and the last seq read: ``tintdb copy`` reads a collection this way, one index
        range read per page however deep into it."""
        columns = columns_for(["embeddings", "documents", "uris", "metadatas"])
        with self._tx(read=True) as cur:
            col = self._by_id(cur, collection_id)
            raw = cur.execute(
                f"SELECT r.seq, r.id{self._select_list(columns)} FROM tintdb.records r "
                "WHERE r.coll = %s AND r.seq > %s ORDER BY r.seq LIMIT %s",
                (col.coll, after, size),
            ).fetchall()
        last = int(raw[-1][0]) if raw else after
        include = ["embeddings", "documents", "uris", "metadatas"]
        rows = self._rows(raw, columns, col.dimension)
        return last, get_result(rows, columns, include, col.dimension)

    def query(
        self,
        collection_id: str,
        query_embeddings: np.ndarray,
        n_results: int,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
        include: list[str],
    ) -> QueryResult:
        nq = len(query_embeddings)
        if ids is None and not where and not where_document:
            known = self._known.get(collection_id)
            if known is not None:
                answer = self._query_known(
                    collection_id, known, query_embeddings, n_results, include
                )
                if answer is not None:
                    return answer
        with self._tx(read=True) as cur:
            col = self._by_id(cur, collection_id)
            check_dimension(col.dimension, query_embeddings.shape[1])
            if ids is not None:
                missing = set(ids) - set(self._existing(cur, col.coll, ids))
                if missing:
                    raise NotFoundError(
                        f"Error finding id: query(ids=...) names {len(missing)} id(s) not in "
                        f"collection {col.name!r}: {', '.join(sorted(missing)[:10])}"
                    )
            labels: list[np.ndarray] = [np.empty(0, np.int64)] * nq
            dists: list[np.ndarray] = [np.empty(0, np.float32)] * nq
            if col.dimension is not None and col.n_records > 0:
                labels, dists = _Planner(self, cur, col).search(
                    query_embeddings, n_results, ids, where, where_document
                )
            wanted = sorted({int(s) for row in labels for s in row.tolist()})
            columns = columns_for(include)
            rows: dict[int, tuple[Any, ...]] = {}
            if wanted:
                raw = cur.execute(
                    f"SELECT r.seq, r.id{self._select_list(columns)} FROM tintdb.records r "
                    "WHERE r.coll = %s AND r.seq = ANY(%s)",
                    (col.coll, wanted),
                ).fetchall()
                rows = {r[0]: r for r in self._rows(raw, columns, col.dimension)}
        self._remember(collection_id, col)
        return query_result(labels, dists, rows, include, col.dimension)

    def _remember(self, collection_id: str, col: _Collection) -> None:
        known = _known(col)
        if known is None:
            return
        if len(self._known) >= KNOWN_MAX:
            self._known.clear()
        self._known[collection_id] = known

    def _query_known(
        self,
        collection_id: str,
        known: _Known,
        q: np.ndarray,
        k: int,
        include: list[str],
    ) -> QueryResult | None:
        """An unfiltered query in one round trip to PostgreSQL, planned by what this node
        knows of the collection (``known``): per query vector one statement that reads
        the collection's row, sets ``hnsw.ef_search`` for its transaction and searches
        (see ``_known_sql``). Several query vectors send their statements together
        (psycopg's pipeline mode) in one transaction. None when the row says ``known``
        is out of date (the caller then plans the long way)."""
        if q.shape[1] != known.dimension or known.n_records == 0:
            return None
        if self._closed:
            raise InvalidArgumentError("This client is closed; create a new one")
        graph = known.indexed and not searched_exactly(known.n_records) and k <= MAX_EF_SEARCH
        columns = columns_for(include)
        sql, at = _known_sql(known, columns, graph)
        width = 2 + sum(2 if c == "document" else 1 for c in columns)  # seq, id, columns
        params: list[tuple[Any, ...]]
        if graph:  # the index's k nearest, as the long way's window (fetch = k)
            beam = str(min(MAX_EF_SEARCH, max(known.ef, k)))
            params = [(beam, known.coll, v, k, collection_id) for v in q]
        else:  # exact search, as _Planner._exact
            params = [(known.coll, v, k + RERANK_EXTRA, collection_id) for v in q]
        psycopg = self._psycopg
        try:
            with self.pool.connection() as conn:
                if len(q) == 1:  # one statement: its own transaction, one round trip
                    results = [conn.cursor(binary=True).execute(sql, params[0]).fetchall()]
                else:  # several statements: one snapshot, as the long way
                    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                    conn.read_only = True
                    try:
                        with conn.pipeline(), conn.transaction():
                            cursors = []
                            for p in params:
                                cur = conn.cursor(binary=True)
                                cur.execute(sql, p)
                                cursors.append(cur)
                        results = [cur.fetchall() for cur in cursors]
                    finally:
                        _plain(conn)
        except psycopg.Error:
            # Whatever it was (the partition dropped by a concurrent delete, say), the
            # long way meets it again and answers or raises as it should.
            self._known.pop(collection_id, None)
            return None
        n_records = 0
        for rows in results:
            if not rows or rows[0][0] != known.version:
                self._known.pop(collection_id, None)  # deleted or changed since
                return None
            n_records = int(rows[0][1])
        same_plan = known.indexed and not searched_exactly(n_records) and k <= MAX_EF_SEARCH
        if n_records == 0 or same_plan != graph:
            self._known.pop(collection_id, None)
            return None
        labels: list[np.ndarray] = []
        dists: list[np.ndarray] = []
        found: list[tuple[Any, ...]] = []
        for rows in results:
            near_rows = [(r[2], r[at]) for r in rows if r[2] is not None]
            if graph and window_short(len(near_rows), k, n_records):
                return None  # the long way searches exactly, as its window would
            seqs, d = _ranked(known.space, known.dimension, q[len(labels)], k, near_rows)
            labels.append(seqs)
            dists.append(d)
            found.extend(r[2 : 2 + width] for r in rows if r[2] is not None)
        if n_records != known.n_records:
            self._known[collection_id] = replace(known, n_records=n_records)
        shaped = {r[0]: r for r in self._rows(found, columns, known.dimension)}
        return query_result(labels, dists, shaped, include, known.dimension)


def _known_sql(known: _Known, columns: list[str], graph: bool) -> tuple[str, int]:
    """The one statement of an unfiltered query planned by ``known``, and the position
    in its rows of the vector that ranks them.

    It reads the collection's row (its ``version`` and count, which the caller checks)
    beside the nearest records. When it searches the HNSW index it also sets
    ``hnsw.ef_search`` for its transaction only (``set_config(..., true)``, as ``SET
    LOCAL``), in the same statement: the setting's result feeds the search's ``LIMIT``,
    so PostgreSQL must have run it before the index scan fetches its first row, which
    is when pgvector reads the setting. One statement is one round trip with no
    transaction of its own to open and close."""
    cols = PostgresBackend._select_list(columns)
    near = "" if "embedding" in columns else ", r.embedding"
    if graph:
        typed = f"vector({known.dimension})"
        order = f"(r.embedding::{typed}) {OPERATORS[known.space]} (%b::{typed})"
        where = "r.coll = %s"
        setting = "CROSS JOIN LATERAL set_config('hnsw.ef_search', %s, true) s(ef) "
        limit = "%s + 0 * length(s.ef)"
    else:
        order = f"r.embedding {OPERATORS[known.space]} %b"
        where = "r.coll = %s AND r.embedding IS NOT NULL"
        setting, limit = "", "%s"
    sql = (
        f"SELECT c.version, c.n_records, w.* FROM tintdb.collections c {setting}"
        f"LEFT JOIN LATERAL (SELECT r.seq, r.id{cols}{near} FROM tintdb.records r "
        f"WHERE {where} ORDER BY {order} LIMIT {limit}) w ON true WHERE c.id = %s"
    )
    width = 2 + sum(2 if c == "document" else 1 for c in columns)  # seq, id, columns
    at = 2 + width  # the vector ranked by: the embedding column, or the one added
    if not near:
        at = 4 + sum(2 if c == "document" else 1 for c in columns[: columns.index("embedding")])
    return sql, at


class _RawJson:
    """JSON text already made, for a jsonb column of a binary COPY."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _raw_json(data: bytes | None) -> _RawJson | None:
    """``data`` for COPY into a jsonb column; None (no metadata) stays NULL."""
    return None if data is None else _RawJson(data)


def _json_dumps(obj: Any) -> bytes:
    return obj.data if isinstance(obj, _RawJson) else orjson.dumps(obj)


class _Planner:
    """One query call's plan, inside its read transaction (see the module docstring)."""

    def __init__(self, backend: PostgresBackend, cur: Any, col: _Collection) -> None:
        self.backend, self.cur, self.col = backend, cur, col
        assert col.dimension is not None
        self.dim = col.dimension
        self.space = col.space
        self.op = OPERATORS[self.space]
        self.ef = int(col.configuration["hnsw"].get("ef_search") or 100)

    def search(
        self,
        q: np.ndarray,
        k: int,
        ids: list[str] | None,
        where: Where | None,
        where_document: WhereDocument | None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        col, total = self.col, self.col.n_records
        cond, params = self.backend._filter(self.cur, col, ids, where, where_document)
        filtered = ids is not None or bool(where) or bool(where_document)
        graph = col.indexed and not searched_exactly(total)
        fetch: int | None = None
        matches = total
        bound = total  # no answer can hold more than this many matches
        if filtered and graph and ids is None:
            # A filter that a sample says is dense is post-filtered without counting
            # its matches (counting reads every one of them, up to the cap below).
            estimate = self._sampled(cond, params, total)
            if estimate is not None:
                matches = estimate
                fetch = postfilter_fetch(matches, total, k, self.ef, max_beam=MAX_EF_SEARCH)
        if filtered and fetch is None:
            # Counted up to the point past which the plan no longer changes: with at
            # least ``cap`` matches, a window of at most ef_search neighbours holds
            # enough of them (postfilter_fetch), so a larger count only narrows it.
            cap = min(COUNT_CAP, max(10 * self.ef, 2 * k * total // self.ef + 1))
            matches = bound = int(
                self.cur.execute(
                    f"SELECT count(*) FROM (SELECT 1 FROM tintdb.records r WHERE {cond} "
                    "LIMIT %s) m",
                    (*params, cap),
                ).fetchone()[0]
            )
            if graph:
                fetch = postfilter_fetch(matches, total, k, self.ef, max_beam=MAX_EF_SEARCH)
        elif not filtered and graph and k <= MAX_EF_SEARCH:
            fetch = k
        labels, dists = [], []
        for v in q:
            found = None
            if fetch is not None:
                found = self._window(v, k, fetch, cond if filtered else None, params)
                if window_short(len(found[0]), k, bound):
                    found = None  # the exact plan answers this query
            if found is None:
                found = self._exact(v, k, cond, params)
            labels.append(found[0])
            dists.append(found[1])
        return labels, dists

    def _ranked(
        self, v: np.ndarray, k: int, rows: list[tuple[Any, ...]]
    ) -> tuple[np.ndarray, np.ndarray]:
        return _ranked(self.space, self.dim, v, k, rows)

    def _sampled(self, cond: str, params: list[Any], total: int) -> int | None:
        """The matches of a filter estimated from a sample of the collection's pages
        (the same sample at each call on the same data: REPEATABLE), when at least
        DENSE_SHARE of the sample matches; None otherwise (the caller counts). As the
        embedded backend's sample: for a dense filter a window of neighbours holds
        enough matches; a query whose window does not falls back to exact search."""
        if total < SAMPLE_ABOVE:
            return None
        percent = min(100.0, 100.0 * SAMPLE_ROWS / total)
        hits, seen = self.cur.execute(
            f"SELECT count(*) FILTER (WHERE {cond}), count(*) FROM tintdb.records r "
            "TABLESAMPLE SYSTEM (%s) REPEATABLE (0) WHERE r.coll = %s",
            (*params, percent, self.col.coll),
        ).fetchone()
        if seen < SAMPLE_ROWS // 4 or hits < DENSE_SHARE * seen:
            return None
        return int(total * hits / seen)

    def _exact(
        self, v: np.ndarray, k: int, cond: str, params: list[Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the matching rows: ordered by pgvector's distance on the
        untyped column, which no index serves, then re-ranked in float32."""
        rows = self.cur.execute(
            f"SELECT r.seq, r.embedding FROM tintdb.records r WHERE {cond} "
            f"AND r.embedding IS NOT NULL ORDER BY r.embedding {self.op} %b LIMIT %s",
            (*params, v, k + RERANK_EXTRA),
        ).fetchall()
        return self._ranked(v, k, rows)

    def _window(
        self, v: np.ndarray, k: int, fetch: int, cond: str | None, params: list[Any]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The HNSW index's ``fetch`` nearest neighbours, unfiltered, then those of them
        that pass the filter, in one statement that also sets the beam, ``SET LOCAL``
        (through set_config): it holds for this transaction only, which also suits
        PgBouncer in transaction mode."""
        beam = min(MAX_EF_SEARCH, max(self.ef, postfilter_beam(fetch, self.ef) if cond else fetch))
        typed = f"vector({self.dim})"
        # The setting feeds the LIMIT, so it is made before the index scan starts (see
        # _known_sql): one statement, no round trip of its own.
        window = (
            "set_config('hnsw.ef_search', %s, true) s(ef) CROSS JOIN LATERAL (SELECT * FROM "
            f"tintdb.records r WHERE r.coll = %s ORDER BY (r.embedding::{typed}) {self.op} "
            f"(%b::{typed}) LIMIT %s + 0 * length(s.ef)) r"
        )
        head = (str(beam), self.col.coll, v, fetch)
        if cond is None:
            rows = self.cur.execute(f"SELECT r.seq, r.embedding FROM {window}", head).fetchall()
        else:
            rows = self.cur.execute(
                f"SELECT r.seq, r.embedding FROM {window} WHERE {cond}", (*head, *params)
            ).fetchall()
        return self._ranked(v, k, rows)


def redacted(dsn: str) -> str:
    """A DSN without its password, for messages."""
    if "@" in dsn and "://" in dsn:
        scheme, rest = dsn.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
    return dsn
