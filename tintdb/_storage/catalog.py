"""The catalog: tenants, databases and collections. ``Catalog`` reads it (shared by
``Store`` and ``Tx``); ``CatalogChanges`` changes it, and only ``Tx`` has those."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from .._validation import check_dimension
from ..config import DEFAULT_DATABASE, DEFAULT_DATABASE_ID, DEFAULT_TENANT
from ..errors import NotFoundError, UniqueConstraintError
from .rows import COLLECTION_COLUMNS, CollectionRow, collection_row

# Every table, emptied by reset() (docs, the full-text index, has a command of its own).
_TABLES = (
    "records",
    "vblocks",
    "meta",
    "sparse",
    "sparse_keys",
    "forks",
    "collection_keys",
    "ops",
    "collections",
    "databases",
    "tenants",
)


class Catalog:
    """Reads of tenants, databases and collections on ``_conn``."""

    _conn: sqlite3.Connection
    lock: threading.RLock

    def read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A consistent snapshot for multi-statement reads (see Store.read, Tx.read)."""
        raise NotImplementedError

    def get_tenant(self, name: str) -> dict[str, Any]:
        with self.read() as c:
            if not c.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                raise NotFoundError(f"Tenant [{name}] not found")
        return {"name": name}

    def list_tenants(self) -> list[str]:
        with self.read() as c:
            return [r[0] for r in c.execute("SELECT name FROM tenants ORDER BY name")]

    def database_id(self, name: str, tenant: str) -> str:
        row = self._conn.execute(
            "SELECT id FROM databases WHERE tenant = ? AND name = ?", (tenant, name)
        ).fetchone()
        if row is None:
            self.get_tenant(tenant)
            raise NotFoundError(f"Database [{name}] not found. Are you sure it exists?")
        return str(row[0])

    def get_database(self, name: str, tenant: str) -> dict[str, Any]:
        with self.read():
            return {"id": self.database_id(name, tenant), "name": name, "tenant": tenant}

    def list_databases(
        self, tenant: str, limit: int | None, offset: int | None
    ) -> list[dict[str, Any]]:
        with self.read() as c:
            self.get_tenant(tenant)
            rows = c.execute(
                "SELECT id, name, tenant FROM databases WHERE tenant = ? ORDER BY rowid "
                "LIMIT ? OFFSET ?",
                (tenant, -1 if limit is None else limit, offset or 0),
            ).fetchall()
        return [{"id": r[0], "name": r[1], "tenant": r[2]} for r in rows]

    def select_collection(self, where: str, params: Sequence[Any]) -> CollectionRow | None:
        row = self._conn.execute(
            f"SELECT {COLLECTION_COLUMNS} FROM collections c "
            f"JOIN databases d ON d.id = c.database_id WHERE {where}",
            params,
        ).fetchone()
        return None if row is None else collection_row(row)

    def collection_by_id(self, collection_id: str) -> CollectionRow:
        with self.lock:
            found = self.select_collection("c.id = ?", (collection_id,))
        if found is None:
            raise NotFoundError(f"Collection [{collection_id}] does not exist.")
        return found

    def collection_by_name(self, name: str, tenant: str, database: str) -> CollectionRow:
        with self.read():
            db_id = self.database_id(database, tenant)
            found = self.select_collection("c.database_id = ? AND c.name = ?", (db_id, name))
        if found is None:
            raise NotFoundError(f"Collection [{name}] does not exist")
        return found

    def list_collections(
        self, limit: int | None, offset: int | None, tenant: str, database: str
    ) -> list[CollectionRow]:
        with self.read() as c:
            db = c.execute(
                "SELECT id FROM databases WHERE tenant = ? AND name = ?", (tenant, database)
            ).fetchone()
            if db is None:
                return []
            rows = c.execute(
                f"SELECT {COLLECTION_COLUMNS} FROM collections c "
                "JOIN databases d ON d.id = c.database_id WHERE c.database_id = ? "
                "ORDER BY c.coll LIMIT ? OFFSET ?",
                (db[0], -1 if limit is None else limit, offset or 0),
            ).fetchall()
        return [collection_row(r) for r in rows]

    def count_collections(self, tenant: str, database: str) -> int:
        with self.read() as c:
            return int(
                c.execute(
                    "SELECT count(*) FROM collections c JOIN databases d ON d.id = c.database_id "
                    "WHERE d.tenant = ? AND d.name = ?",
                    (tenant, database),
                ).fetchone()[0]
            )

    def fork_count(self, col: CollectionRow) -> int:
        """Collections that exist and were forked from ``col``, or from its forks."""
        with self.read() as c:
            return int(
                c.execute(
                    "WITH RECURSIVE made(coll) AS (SELECT child FROM forks WHERE parent = ? "
                    "UNION SELECT f.child FROM forks f JOIN made ON f.parent = made.coll) "
                    "SELECT count(*) FROM made JOIN collections USING (coll)",
                    (col.coll,),
                ).fetchone()[0]
            )

    def value_types(self, coll: int) -> list[tuple[str, str]]:
        """The (metadata key, value type) pairs the records of ``coll`` have used."""
        with self.read() as c:
            rows = c.execute(
                "SELECT key, vtype FROM collection_keys WHERE coll = ?", (coll,)
            ).fetchall()
        return [(key, vtype) for key, vtype in rows]

    def lsn_state(self, collection_id: str) -> tuple[int, int] | None:
        """(last_lsn, log_floor) of a collection, or None if it is gone."""
        with self.lock:
            row = self._conn.execute(
                "SELECT last_lsn, log_floor FROM collections WHERE id = ?", (collection_id,)
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))


class CatalogChanges(Catalog):
    """Changes to the catalog, inside the caller's write (``Tx`` has these)."""

    def create_tenant(self, name: str) -> None:
        c = self._conn
        if c.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
            raise UniqueConstraintError(f"Tenant [{name}] already exists")
        c.execute("INSERT INTO tenants(name) VALUES (?)", (name,))

    def create_database(self, name: str, tenant: str) -> None:
        c = self._conn
        self.get_tenant(tenant)
        if c.execute(
            "SELECT 1 FROM databases WHERE tenant = ? AND name = ?", (tenant, name)
        ).fetchone():
            raise UniqueConstraintError(f"Database [{name}] already exists")
        c.execute(
            "INSERT INTO databases(id, name, tenant) VALUES (?, ?, ?)",
            (str(uuid.uuid4()), name, tenant),
        )

    def delete_database(self, name: str, tenant: str) -> list[str]:
        """Delete a database and its collections; returns the deleted collection ids."""
        c = self._conn
        db_id = self.database_id(name, tenant)
        ids = [
            r[0]
            for r in c.execute(
                "SELECT id FROM collections WHERE database_id = ?", (db_id,)
            ).fetchall()
        ]
        for cid in ids:
            self._delete_collection_rows(self.collection_by_id(cid))
        c.execute("DELETE FROM databases WHERE id = ?", (db_id,))
        return ids

    def create_collection(
        self,
        name: str,
        metadata: dict[str, Any] | None,
        configuration: dict[str, Any],
        get_or_create: bool,
        tenant: str,
        database: str,
    ) -> tuple[CollectionRow, bool]:
        """Returns the collection and whether it was created by this call."""
        db_id = self.database_id(database, tenant)
        existing = self.select_collection("c.database_id = ? AND c.name = ?", (db_id, name))
        if existing is not None:
            if get_or_create:
                return existing, False
            raise UniqueConstraintError(f"Collection [{name}] already exists")
        cid = str(uuid.uuid4())
        self._conn.execute(
            "INSERT INTO collections(id, name, database_id, metadata, configuration) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                cid,
                name,
                db_id,
                None if metadata is None else orjson.dumps(metadata),
                orjson.dumps(configuration),
            ),
        )
        return self.collection_by_id(cid), True

    def modify_collection(
        self,
        collection_id: str,
        new_name: str | None,
        new_metadata: dict[str, Any] | None,
        new_configuration: dict[str, Any] | None,
    ) -> CollectionRow:
        c = self._conn
        col = self.collection_by_id(collection_id)
        if new_name is not None and new_name != col.name:
            db_id = c.execute(
                "SELECT database_id FROM collections WHERE id = ?", (collection_id,)
            ).fetchone()[0]
            if self.select_collection("c.database_id = ? AND c.name = ?", (db_id, new_name)):
                raise UniqueConstraintError(
                    f"Cannot rename collection [{col.name}] to [{new_name}]: "
                    "a collection with that name already exists"
                )
            c.execute("UPDATE collections SET name = ? WHERE id = ?", (new_name, collection_id))
        if new_metadata is not None:
            c.execute(
                "UPDATE collections SET metadata = ? WHERE id = ?",
                (orjson.dumps(new_metadata), collection_id),
            )
        if new_configuration is not None:
            c.execute(
                "UPDATE collections SET configuration = ? WHERE id = ?",
                (orjson.dumps(new_configuration), collection_id),
            )
        return self.collection_by_id(collection_id)

    def set_dimension(self, col: CollectionRow, dim: int) -> None:
        """Fix the dimension on first write; afterwards refuse any other length."""
        if col.dimension is None:
            self._conn.execute(
                "UPDATE collections SET dimension = ? WHERE coll = ?", (dim, col.coll)
            )
            col.dimension = dim
        else:
            check_dimension(col.dimension, dim)

    def add_value_types(self, coll: int, pairs: Sequence[tuple[str, str]]) -> None:
        """Remember newly seen (key, value type) pairs."""
        self._conn.executemany(
            "INSERT OR IGNORE INTO collection_keys(coll, key, vtype) VALUES (?, ?, ?)",
            [(coll, key, vtype) for key, vtype in pairs],
        )

    def prune_log(self, col: CollectionRow, upto: int) -> None:
        """Forget log entries that an on-disk index snapshot already contains."""
        self._conn.execute("DELETE FROM ops WHERE coll = ? AND lsn <= ?", (col.coll, upto))
        self._conn.execute(
            "UPDATE collections SET log_floor = max(log_floor, ?) WHERE coll = ?",
            (upto, col.coll),
        )

    def delete_collection(self, name: str, tenant: str, database: str) -> CollectionRow:
        """Delete a collection and everything it holds (the caller reclaims the space
        after the commit, see Store.reclaim_space)."""
        col = self.collection_by_name(name, tenant, database)
        self._delete_collection_rows(col)
        return col

    def _delete_collection_rows(self, col: CollectionRow) -> None:
        c = self._conn
        c.execute("DELETE FROM vblocks WHERE coll = ?", (col.coll,))
        c.execute("DELETE FROM records WHERE coll = ?", (col.coll,))
        c.execute("DELETE FROM meta WHERE coll = ?", (col.coll,))
        c.execute(
            "DELETE FROM sparse WHERE slot IN (SELECT slot FROM sparse_keys WHERE coll = ?)",
            (col.coll,),
        )
        c.execute("DELETE FROM sparse_keys WHERE coll = ?", (col.coll,))
        c.execute("DELETE FROM collection_keys WHERE coll = ?", (col.coll,))
        c.execute("DELETE FROM ops WHERE coll = ?", (col.coll,))
        c.execute("DELETE FROM collections WHERE coll = ?", (col.coll,))

    def reset(self) -> None:
        """Empty the store back to the default tenant and database alone."""
        c = self._conn
        for table in _TABLES:
            c.execute(f"DELETE FROM {table}")
        c.execute("INSERT INTO docs(docs) VALUES ('delete-all')")
        c.execute("INSERT INTO tenants(name) VALUES (?)", (DEFAULT_TENANT,))
        c.execute(
            "INSERT INTO databases(id, name, tenant) VALUES (?, ?, ?)",
            (DEFAULT_DATABASE_ID, DEFAULT_DATABASE, DEFAULT_TENANT),
        )
