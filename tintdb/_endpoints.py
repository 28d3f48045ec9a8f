"""Where a copy reads from and writes to: a location on the command line becomes a
``Reader`` or a ``Writer`` (the seam is in ``_copy``).

* ``http://host:port`` / ``https://...``: a tintdb or Chroma server, through Chroma's v2
  REST API (``_http.HttpBackend``), so any Chroma that speaks v2 can be read without
  installing chromadb; a token goes in ``x-chroma-token``;
* a directory holding ``chroma.sqlite3``: a Chroma persistent directory (``_chroma``);
* a directory holding ``tintdb.sqlite3`` (or, as a destination, an empty or new one):
  a tintdb store on disk;
* a file named ``*.jsonl`` or ``*.jsonl.gz``: an export file (``_export``);
* ``postgresql://...`` / ``postgres://...``: a store in PostgreSQL (``_postgres``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from . import _schema
from ._copy import Batch, CollectionSpec, space_of
from ._search.sparse import SparseVector
from .config import DEFAULT_TENANT
from .errors import InvalidArgumentError, NotFoundError

__all__ = ["TintReader", "TintWriter", "open_reader", "open_writer"]

_FULL = ["embeddings", "documents", "uris", "metadatas"]


def _kind(location: str, for_writing: bool) -> str:
    lower = location.lower()
    if lower.startswith(("http://", "https://")):
        return "server"
    if lower.startswith(("postgresql://", "postgres://")):
        return "postgres"
    if lower.endswith((".jsonl", ".jsonl.gz")):
        return "file"
    path = Path(location).expanduser()
    if (path / "chroma.sqlite3").is_file():
        return "chroma"
    if (path / "tintdb.sqlite3").is_file():
        return "tintdb"
    if path.is_file():
        raise InvalidArgumentError(
            f"{location} is a file but not an export file (*.jsonl or *.jsonl.gz)"
        )
    if for_writing and (not path.exists() or (path.is_dir() and not any(path.iterdir()))):
        return "tintdb"
    if not path.exists():
        raise InvalidArgumentError(f"{location} does not exist")
    raise InvalidArgumentError(
        f"{location} holds neither a tintdb store (tintdb.sqlite3) nor a Chroma directory "
        "(chroma.sqlite3); a new tintdb store needs an empty or new directory"
    )


def open_reader(
    location: str,
    *,
    token: str | None = None,
    tenants: Sequence[str] | None = None,
    chroma_reader: str = "auto",
) -> Any:
    """The ``Reader`` for a location (see the module doc)."""
    kind = _kind(location, for_writing=False)
    if kind == "server":
        from ._http import HttpBackend

        backend = HttpBackend(location, headers=_token_headers(token))
        return TintReader(backend, f"server {location}", tenants=tenants, remote=True)
    if kind == "chroma":
        from ._chroma import open_chroma_directory

        return open_chroma_directory(Path(location).expanduser(), chroma_reader)
    if kind == "tintdb":
        from ._local import LocalBackend

        path = Path(location).expanduser()
        return TintReader(LocalBackend(path), f"tintdb store {path}", tenants=tenants)
    if kind == "file":
        from ._export import ExportReader

        return ExportReader(Path(location).expanduser())
    from ._postgres import PostgresBackend, redacted

    return PostgresReader(
        PostgresBackend(location), f"PostgreSQL {redacted(location)}", tenants=tenants
    )


def open_writer(location: str, *, token: str | None = None, dry_run: bool = False) -> Any:
    """The ``Writer`` for a location (see the module doc); for a dry run, a store that
    does not exist yet is not created."""
    kind = _kind(location, for_writing=True)
    if (
        dry_run
        and kind == "tintdb"
        and not (Path(location).expanduser() / "tintdb.sqlite3").exists()
    ):
        return _NewStore(f"tintdb store {Path(location).expanduser()} (new)")
    if kind == "server":
        from ._http import HttpBackend

        backend = HttpBackend(location, headers=_token_headers(token))
        return TintWriter(backend, f"server {location}")
    if kind == "tintdb":
        from ._local import LocalBackend

        path = Path(location).expanduser()
        return TintWriter(LocalBackend(path), f"tintdb store {path}")
    if kind == "file":
        from ._export import ExportWriter

        return ExportWriter(Path(location).expanduser())
    if kind == "chroma":
        raise InvalidArgumentError(
            f"{location} is a Chroma directory: tintdb reads Chroma directories but does not "
            "write them. To copy into Chroma, start `chroma run --path` on it and copy to its "
            "http:// address."
        )
    from ._postgres import PostgresBackend, redacted

    # Indexes are built once at the end of the copy, not record by record.
    return PostgresWriter(
        PostgresBackend(location, defer_index=True), f"PostgreSQL {redacted(location)}"
    )


class _NewStore:
    """A destination store that does not exist yet, as a dry run sees it."""

    max_batch = None

    def __init__(self, description: str) -> None:
        self.description = description

    def describe(self) -> str:
        return self.description

    def existing(self, spec: CollectionSpec) -> int | None:
        return None

    def close(self) -> None:
        return None


def _token_headers(token: str | None) -> dict[str, str] | None:
    return None if token is None else {"x-chroma-token": token}


def batch_from_get(found: dict[str, Any], dim: int | None) -> Batch:
    """A Batch from a ``Backend.get`` result with every field included."""
    vectors = found.get("embeddings")
    ids = list(found["ids"])
    if vectors is None or len(vectors) == 0:
        vectors = np.empty((len(ids), dim or 0), dtype=np.float32)
    metadatas = found.get("metadatas")
    if metadatas is not None:  # sparse vectors in their stored form, whoever read them
        metadatas = [
            md
            if not md or not any(isinstance(v, SparseVector) for v in md.values())
            else {k: v.to_dict() if isinstance(v, SparseVector) else v for k, v in md.items()}
            for md in metadatas
        ]
    return Batch(
        ids,
        np.ascontiguousarray(vectors, dtype=np.float32),
        found.get("documents"),
        found.get("uris"),
        metadatas,
    )


class TintReader:
    """A tintdb store on disk, a tintdb server or a Chroma server, through its Backend.

    On disk, records are read in storage order a page at a time after the last seq
    read (each page one indexed range read, however deep into the collection); over
    HTTP, with ``limit``/``offset`` in insertion order, the only way the protocol has.
    """

    def __init__(
        self,
        backend: Any,
        description: str,
        *,
        tenants: Sequence[str] | None = None,
        remote: bool = False,
    ) -> None:
        self.backend = backend
        self.description = description
        self.tenants = list(tenants) if tenants else None
        self.remote = remote

    def describe(self) -> str:
        return self.description

    def _tenants(self) -> list[str]:
        if self.tenants:
            return self.tenants
        if self.remote:  # the protocol cannot list tenants
            return [DEFAULT_TENANT]
        return self.backend.store.list_tenants()

    def _raw_collections(self, tenant: str, database: str) -> Iterator[dict[str, Any]]:
        """Collections as the server sends them: the ``schema`` travels with them."""
        from ._http import _seg

        path = f"/tenants/{_seg(tenant)}/databases/{_seg(database)}/collections"
        offset = 0
        while True:
            page = self.backend._call("GET", path, params={"limit": 100, "offset": offset})
            yield from page
            if len(page) < 100:
                return
            offset += len(page)

    def collections(self) -> list[CollectionSpec]:
        specs = []
        for tenant in self._tenants():
            try:
                databases = self.backend.list_databases(tenant)
            except NotFoundError as exc:
                raise InvalidArgumentError(f"{self.description} has no tenant {tenant!r}") from exc
            for db in sorted(databases, key=lambda d: d["name"]):
                if self.remote:
                    found = []
                    for raw in self._raw_collections(tenant, db["name"]):
                        model = self.backend._model(raw)
                        schema = raw.get("schema") if isinstance(raw.get("schema"), dict) else None
                        found.append((model, schema))
                else:
                    found = [
                        (m, getattr(m, "schema", None))
                        for m in self.backend.list_collections(None, None, tenant, db["name"])
                    ]
                for model, schema in found:
                    specs.append(
                        CollectionSpec(
                            tenant=tenant,
                            database=db["name"],
                            name=model.name,
                            metadata=model.metadata,
                            configuration=dict(model.configuration or {}),
                            schema=schema,
                            dimension=model.dimension,
                            count=self.backend.count(model.id),
                            ref=model.id,
                        )
                    )
        return specs

    def batches(self, spec: CollectionSpec, size: int) -> Iterator[Batch]:
        if self.remote:
            yield from self._pages(spec, size)
        else:
            yield from self._ranges(spec, size)

    def _pages(self, spec: CollectionSpec, size: int) -> Iterator[Batch]:
        offset = 0
        while True:
            found = self.backend.get(spec.ref, None, None, None, size, offset, _FULL)
            if not found["ids"]:
                return
            yield batch_from_get(found, spec.dimension)
            offset += len(found["ids"])
            if len(found["ids"]) < size:
                return

    def _ranges(self, spec: CollectionSpec, size: int) -> Iterator[Batch]:
        store = self.backend.store
        coll = store.collection_by_id(spec.ref).coll
        dim = store.collection_by_id(spec.ref).dimension or spec.dimension or 0
        columns = ["embedding", "document", "uri", "metadata"]
        last = -1
        while True:
            with store.read():
                seqs = store.seq_array(
                    "SELECT seq FROM records WHERE coll = ? AND seq > ? ORDER BY seq LIMIT ?",
                    [coll, last, size],
                )
                if not len(seqs):
                    return
                rows = store.fetch_seqs(coll, seqs.tolist(), columns)
            seqs.sort()
            last = int(seqs[-1])
            ordered = [rows[s] for s in seqs.tolist() if s in rows]
            yield Batch(
                [r[1] for r in ordered],
                np.frombuffer(b"".join(r[2] for r in ordered), dtype=np.float32).reshape(
                    len(ordered), dim
                ),
                [r[3] for r in ordered],
                [r[4] for r in ordered],
                [None if r[5] is None else orjson.loads(r[5]) for r in ordered],
            )

    def close(self) -> None:
        self.backend.close()


class TintWriter:
    """A tintdb store on disk, a tintdb server or a Chroma server, through the public
    ``Client``: every record passes the same checks as ``Collection.add``."""

    def __init__(self, backend: Any, description: str) -> None:
        self.backend = backend
        self.description = description
        self.remote = bool(getattr(backend, "remote", False))
        self.max_batch: int | None = None
        if self.remote:
            limit = backend.pre_flight().get("max_batch_size")
            self.max_batch = limit if isinstance(limit, int) and limit > 0 else None
        self._clients: dict[tuple[str, str], Any] = {}

    def describe(self) -> str:
        return self.description

    def _client(self, tenant: str, database: str, create: bool) -> Any:
        from ._client import Client

        key = (tenant, database)
        if key in self._clients:
            return self._clients[key]
        try:
            self.backend.get_tenant(tenant)
        except NotFoundError:
            if not create:
                return None
            self.backend.create_tenant(tenant)
        try:
            self.backend.get_database(database, tenant)
        except NotFoundError:
            if not create:
                return None
            self.backend.create_database(database, tenant)
        client = self._clients[key] = Client(tenant=tenant, database=database, backend=self.backend)
        return client

    def _find(self, spec: CollectionSpec) -> Any:
        client = self._client(spec.tenant, spec.database, create=False)
        if client is None:
            return None
        try:
            return client.get_collection(spec.name, embedding_function=None)
        except NotFoundError:
            return None

    def existing(self, spec: CollectionSpec) -> int | None:
        found = self._find(spec)
        return None if found is None else found.count()

    def prepare(self, spec: CollectionSpec) -> Any:
        found = self._find(spec)
        if found is not None:
            _check_compatible(spec, found)
            return found
        client = self._client(spec.tenant, spec.database, create=True)
        return client.create_collection(spec.name, **creation_arguments(client, spec))

    def present(self, handle: Any, ids: list[str]) -> set[str]:
        return set(handle.get(ids=ids, include=[])["ids"])

    def write(self, handle: Any, batch: Batch) -> None:
        handle.add(
            ids=batch.ids,
            embeddings=batch.embeddings,
            metadatas=batch.metadatas,
            documents=batch.documents,
            uris=batch.uris,
        )

    def finish(self) -> None:
        return None

    def count(self, handle: Any) -> int:
        return int(handle.count())

    def read(self, handle: Any, ids: list[str]) -> Batch:
        return batch_from_get(handle.get(ids=ids, include=_FULL), handle.dimension)

    def close(self) -> None:
        self.backend.close()


def creation_arguments(client: Any, spec: CollectionSpec) -> dict[str, Any]:
    """Keyword arguments for ``create_collection`` that give the new collection the
    source's metadata, configuration (embedding function included) and schema as they
    are. A source that stored no embedding function gets none (``None``); a schema is
    passed where this version's ``create_collection`` takes one."""
    import inspect

    kwargs: dict[str, Any] = {"metadata": spec.metadata, "configuration": spec.configuration}
    if not (spec.configuration or {}).get("embedding_function"):
        kwargs["embedding_function"] = None
    if (
        spec.schema is not None
        and "schema" in inspect.signature(client.create_collection).parameters
        and _schema.declares_indexes(spec.schema)
    ):
        # The schema then carries the vector index and its embedding function too; a
        # configuration beside it is refused by Chroma's server.
        kwargs["schema"] = spec.schema
        kwargs["configuration"] = None
    return kwargs


def _check_compatible(spec: CollectionSpec, found: Any) -> None:
    """Resuming into an existing collection: its space and dimension must be the source's."""
    theirs = CollectionSpec(
        spec.tenant,
        spec.database,
        spec.name,
        found.metadata,
        dict(found.configuration or {}),
        None,
        found.dimension,
        0,
    )
    if space_of(theirs) != space_of(spec):
        raise InvalidArgumentError(
            f"{spec.path} exists at the destination with distance space {space_of(theirs)!r}, "
            f"but the source's is {space_of(spec)!r}: delete it there or copy another collection"
        )
    if spec.dimension and found.dimension and spec.dimension != found.dimension:
        raise InvalidArgumentError(
            f"{spec.path} exists at the destination with dimension {found.dimension}, but the "
            f"source's is {spec.dimension}"
        )


class PostgresReader(TintReader):
    """A store in PostgreSQL: its tenants from the catalog, each collection's records a
    page at a time after the last seq read (one index range read per page)."""

    def _tenants(self) -> list[str]:
        return self.tenants or self.backend.list_tenants()

    def batches(self, spec: CollectionSpec, size: int) -> Iterator[Batch]:
        after = -1
        while True:
            after, found = self.backend.page_after(spec.ref, after, size)
            if not found["ids"]:
                return
            yield batch_from_get(found, spec.dimension)


class PostgresWriter(TintWriter):
    """A store in PostgreSQL, through the public ``Client`` like ``TintWriter``; the
    HNSW index of each new collection is built once, when the copy is done."""

    def finish(self) -> None:
        self.backend.build_indexes()
