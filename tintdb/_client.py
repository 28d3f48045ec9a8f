"""The public API: ``Client``, ``Collection`` and ``AdminClient``, as in chromadb.

This layer owns everything that does not depend on where the data lives: argument
checks, embedding functions, and the exact shape of results. Storage is a ``Backend``
(see ``_backend``), so the same classes serve the embedded store and a server.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ._backend import Backend
from ._filters import validate_where, validate_where_document
from ._validation import (
    HNSW_METADATA_KEYS,
    normalize_documents,
    normalize_embeddings,
    normalize_ids,
    normalize_include,
    normalize_metadatas,
    normalize_uris,
    resolve_configuration,
    validate_collection_metadata,
    validate_collection_name,
    validate_database_name,
    validate_limit_offset,
    validate_n_results,
    validate_tenant_name,
)
from .config import DEFAULT_DATABASE, DEFAULT_TENANT, Settings
from .errors import (
    EmbeddingFunctionError,
    InvalidArgumentError,
    ResetDisabledError,
    TintError,
)
from .types import CollectionModel, GetResult, Include, QueryResult

__all__ = [
    "AdminClient",
    "Client",
    "Collection",
    "EphemeralClient",
    "PersistentClient",
]


class _Default:
    """Marks "no embedding_function argument given" (None means "no function")."""

    def __repr__(self) -> str:
        return "<default embedding function>"


DEFAULT_EF: Any = _Default()

GET_DEFAULT_INCLUDE: Include = ["metadatas", "documents"]
QUERY_DEFAULT_INCLUDE: Include = ["metadatas", "documents", "distances"]
# Parameters that shape the graph itself: fixed at creation.
_FIXED_HNSW = ("space", "ef_construction", "max_neighbors")


def _local_backend_class() -> Any:
    """The embedded store's backend; the thin HTTP client (``tintdb-client``) lacks it."""
    try:
        from ._local import LocalBackend
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}._local":
            raise  # the full package with a broken dependency: show the real cause
        raise ImportError(
            "An embedded store (PersistentClient, EphemeralClient, Client() or AdminClient() "
            "without a backend) needs the full package: pip install tintdb. This install "
            "only talks to a server: use tintdb.HttpClient(host=..., port=...)."
        ) from exc
    return LocalBackend


# ---------------------------------------------------------------- embedding functions


def _ef_module() -> Any:
    try:
        from .utils import embedding_functions
    except ImportError:  # the thin HTTP client ships without it
        return None
    return embedding_functions


def _default_ef() -> Any:
    module = _ef_module()
    return None if module is None else module.DefaultEmbeddingFunction()


def _descriptor(ef: Any) -> dict[str, Any] | None:
    if ef is None:
        return None
    module = _ef_module()
    if module is not None:
        return dict(module.embedding_function_descriptor(ef))
    name = getattr(ef, "name", None)
    if callable(name) and callable(getattr(ef, "get_config", None)):
        return {"type": "known", "name": name(), "config": ef.get_config()}
    return {"type": "legacy"}


def _ef_from_descriptor(desc: dict[str, Any] | None) -> Any:
    """Rebuild a persisted function; None when it cannot be (user-defined, or absent)."""
    if not desc or desc.get("type") != "known":
        return None
    module = _ef_module()
    if module is None:
        return None
    try:
        return module.embedding_function_from_config(desc["name"], desc.get("config") or {})
    except EmbeddingFunctionError:
        return None


def _check_same_ef(collection: str, stored: dict[str, Any] | None, given: Any) -> None:
    """Refuse an embedding function that differs from the one the collection was made with."""
    if given is None or not stored or stored.get("type") != "known":
        return
    desc = _descriptor(given) or {}
    if desc.get("type") != "known":
        return  # a user-defined function: we cannot tell, trust the caller
    if desc.get("name") != stored.get("name"):
        raise EmbeddingFunctionError(
            f"Collection {collection!r} was created with embedding function "
            f"{stored.get('name')!r}, but {desc.get('name')!r} was given. Vectors from different "
            "functions are not comparable; pass the same function, or none to use the stored one."
        )


# ---------------------------------------------------------------- collection


class Collection:
    """A named set of records; get it from a client, never construct it directly."""

    def __init__(self, client: Client, model: CollectionModel, embedding_function: Any) -> None:
        self._client = client
        self._model = model
        self._ef = embedding_function
        self._ef_built = embedding_function is not DEFAULT_EF

    # -------------------------------------------------------- properties

    @property
    def name(self) -> str:
        return self._model.name

    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(self._model.id)

    @property
    def metadata(self) -> dict[str, Any] | None:
        return self._model.metadata

    @property
    def configuration(self) -> dict[str, Any]:
        return self._model.configuration

    @property
    def configuration_json(self) -> dict[str, Any]:
        return self._model.configuration

    @property
    def tenant(self) -> str:
        return self._model.tenant

    @property
    def database(self) -> str:
        return self._model.database

    @property
    def dimension(self) -> int | None:
        return self._model.dimension

    @property
    def embedding_function(self) -> Any:
        if not self._ef_built:
            self._ef = _ef_from_descriptor(self._model.configuration.get("embedding_function"))
            self._ef_built = True
        return self._ef

    def __repr__(self) -> str:
        return f"Collection(name={self.name!r}, id={self._model.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Collection) and other._model.id == self._model.id

    def __hash__(self) -> int:
        return hash(self._model.id)

    @property
    def _backend(self) -> Backend:
        return self._client._live_backend()

    # -------------------------------------------------------- embedding

    def _embed(self, texts: list[str], what: str) -> np.ndarray:
        ef = self.embedding_function
        if ef is None:
            stored = self._model.configuration.get("embedding_function")
            hint = (
                " It was created with a user-defined function: pass it again with "
                "get_collection(name, embedding_function=...)."
                if stored and stored.get("type") != "known"
                else " Pass embeddings, or give the collection an embedding_function."
            )
            raise EmbeddingFunctionError(
                f"Collection {self.name!r} has no embedding function to turn {what} into "
                f"vectors.{hint}"
            )
        try:
            vectors = ef(list(texts))
        except TintError:
            raise
        except Exception as exc:
            raise EmbeddingFunctionError(
                f"The embedding function failed on {what}: {type(exc).__name__}: {exc}"
            ) from exc
        out = normalize_embeddings(vectors, len(texts))
        assert out is not None
        return out

    def _records(
        self,
        ids: Any,
        embeddings: Any,
        metadatas: Any,
        documents: Any,
        uris: Any,
        images: Any,
    ) -> tuple[list[str], np.ndarray | None, Any, Any, Any]:
        if images is not None:
            raise InvalidArgumentError(
                "images are not supported: embed them yourself and pass embeddings"
            )
        ids = normalize_ids(ids)
        n = len(ids)
        return (
            ids,
            normalize_embeddings(embeddings, n),
            normalize_metadatas(metadatas, n, allow_none_values=True),
            normalize_documents(documents, n),
            normalize_uris(uris, n),
        )

    def _embed_documents(self, documents: list[str | None] | None, op: str) -> np.ndarray:
        if documents is None:
            raise InvalidArgumentError(f"{op}() needs embeddings or documents to embed")
        missing = [i for i, d in enumerate(documents) if d is None]
        if missing:
            raise InvalidArgumentError(
                f"{op}() without embeddings needs a document for every id; "
                f"position {missing[0]} has none"
            )
        return self._embed(documents, "documents")  # type: ignore[arg-type]

    # -------------------------------------------------------- writes

    def add(
        self,
        ids: Any,
        embeddings: Any = None,
        metadatas: Any = None,
        documents: Any = None,
        images: Any = None,
        uris: Any = None,
    ) -> None:
        """Add new records; an id that already exists is an error and nothing is added."""
        ids, vecs, mds, docs, us = self._records(
            ids, embeddings, metadatas, documents, uris, images
        )
        if vecs is None:
            vecs = self._embed_documents(docs, "add")
        self._backend.add(self._model.id, ids, vecs, mds, docs, us)

    def upsert(
        self,
        ids: Any,
        embeddings: Any = None,
        metadatas: Any = None,
        documents: Any = None,
        images: Any = None,
        uris: Any = None,
    ) -> None:
        """Insert new ids, update existing ones (metadata merged, document kept if not given)."""
        ids, vecs, mds, docs, us = self._records(
            ids, embeddings, metadatas, documents, uris, images
        )
        if vecs is None:
            vecs = self._embed_documents(docs, "upsert")
        self._backend.upsert(self._model.id, ids, vecs, mds, docs, us)

    def update(
        self,
        ids: Any,
        embeddings: Any = None,
        metadatas: Any = None,
        documents: Any = None,
        images: Any = None,
        uris: Any = None,
    ) -> None:
        """Change existing records; unknown ids are ignored. New documents are re-embedded."""
        ids, vecs, mds, docs, us = self._records(
            ids, embeddings, metadatas, documents, uris, images
        )
        if vecs is None and docs is not None:
            given = [i for i, d in enumerate(docs) if d is not None]
            if given:
                fresh = self._embed([docs[i] for i in given], "documents")
                if len(given) == len(ids):
                    vecs = fresh
                else:  # keep the stored vectors of records whose document is unchanged
                    current = self._backend.get(
                        self._model.id, ids, None, None, None, None, ["embeddings"]
                    )
                    stored = dict(zip(current["ids"], current["embeddings"], strict=False))  # type: ignore[arg-type]
                    vecs = np.zeros((len(ids), fresh.shape[1]), dtype=np.float32)
                    vecs[given] = fresh
                    for i in (i for i, d in enumerate(docs) if d is None):
                        if ids[i] in stored:
                            vecs[i] = stored[ids[i]]
                        else:
                            vecs[i] = fresh[0]  # an unknown id: update() ignores it anyway
        self._backend.update(self._model.id, ids, vecs, mds, docs, us)

    def delete(
        self,
        ids: Any = None,
        where: Any = None,
        where_document: Any = None,
        limit: int | None = None,
    ) -> dict[str, int]:
        """Delete by ids and/or filters; returns ``{"deleted": n}``."""
        id_list = None if ids is None else normalize_ids(ids, allow_empty=True)
        self._check_filters(where, where_document)
        if not id_list and not where and not where_document:
            raise InvalidArgumentError(
                "delete() needs ids, where or where_document; to remove every record, "
                "delete the collection"
            )
        limit, _ = validate_limit_offset(limit, None)
        if limit is not None and not where and not where_document:
            raise InvalidArgumentError(
                "delete(limit=...) is only allowed with where or where_document"
            )
        n = self._backend.delete(
            self._model.id, id_list, where or None, where_document or None, limit
        )
        return {"deleted": n}

    def modify(
        self,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        configuration: dict[str, Any] | None = None,
    ) -> None:
        """Rename, replace the metadata, or change search-time parameters."""
        if name is not None:
            validate_collection_name(name)
        metadata = validate_collection_metadata(metadata)
        current = self._model.configuration.get("hnsw") or {}
        new_config = None
        if metadata is not None:
            for key, value in metadata.items():
                if key in HNSW_METADATA_KEYS:
                    field = HNSW_METADATA_KEYS[key][0]
                    if field in _FIXED_HNSW and value != current.get(field):
                        raise InvalidArgumentError(
                            f"{key} is fixed when a collection is created "
                            f"(it is {current.get(field)!r}); create a new collection to change it"
                        )
        if configuration is not None:
            wanted = resolve_configuration(None, {"hnsw": configuration.get("hnsw") or {}})["hnsw"]
            given = configuration.get("hnsw") or {}
            for field in _FIXED_HNSW:
                if (
                    field in given
                    and given[field] is not None
                    and wanted[field] != current.get(field)
                ):
                    raise InvalidArgumentError(
                        f"hnsw {field} is fixed when a collection is created "
                        f"(it is {current.get(field)!r})"
                    )
            new_config = dict(self._model.configuration)
            new_config["hnsw"] = {**current, **{k: v for k, v in given.items() if v is not None}}
            if "embedding_function" in configuration:
                ef = configuration["embedding_function"]
                new_config["embedding_function"] = (
                    ef if isinstance(ef, dict) or ef is None else _descriptor(ef)
                )
                if not isinstance(ef, dict):
                    self._ef, self._ef_built = ef, True
        self._model = self._backend.modify_collection(self._model.id, name, metadata, new_config)

    # -------------------------------------------------------- reads

    def count(self) -> int:
        return self._backend.count(self._model.id)

    def _check_filters(self, where: Any, where_document: Any) -> None:
        """None means "no filter"; anything else, an empty dict included, must be valid."""
        single = self._client._single_clause_ok
        if where is not None:
            validate_where(where, single_clause_ok=single)
        if where_document is not None:
            validate_where_document(where_document, single_clause_ok=single)

    def get(
        self,
        ids: Any = None,
        where: Any = None,
        limit: int | None = None,
        offset: int | None = None,
        where_document: Any = None,
        include: Include = GET_DEFAULT_INCLUDE,
    ) -> GetResult:
        """Records by id and/or filter, in insertion order; unknown ids are left out."""
        id_list = None if ids is None else normalize_ids(ids, allow_empty=True)
        self._check_filters(where, where_document)
        limit, offset = validate_limit_offset(limit, offset)
        include = normalize_include(include, for_query=False)
        return self._backend.get(
            self._model.id, id_list, where or None, where_document or None, limit, offset, include
        )

    def peek(self, limit: int = 10) -> GetResult:
        return self.get(limit=limit, include=["embeddings", "documents", "metadatas"])

    def query(
        self,
        query_embeddings: Any = None,
        query_texts: Any = None,
        query_images: Any = None,
        query_uris: Any = None,
        ids: Any = None,
        n_results: int = 10,
        where: Any = None,
        where_document: Any = None,
        include: Include = QUERY_DEFAULT_INCLUDE,
    ) -> QueryResult:
        """The ``n_results`` nearest records to each query, nearest first."""
        if query_images is not None or query_uris is not None:
            raise InvalidArgumentError("query_images and query_uris are not supported")
        if (query_embeddings is None) == (query_texts is None):
            raise InvalidArgumentError(
                "query() needs exactly one of query_embeddings or query_texts"
            )
        n_results = validate_n_results(n_results)
        self._check_filters(where, where_document)
        include = normalize_include(include, for_query=True)
        id_list = None if ids is None else normalize_ids(ids, allow_empty=True)
        if query_texts is not None:
            texts = [query_texts] if isinstance(query_texts, str) else list(query_texts)
            if not texts or not all(isinstance(t, str) for t in texts):
                raise InvalidArgumentError("query_texts must be a str or a non-empty list of str")
            vectors = self._embed(texts, "query_texts")
        else:
            vectors = normalize_embeddings(query_embeddings)
            assert vectors is not None
            if len(vectors) == 0:
                raise InvalidArgumentError("query_embeddings must not be empty")
        if id_list is not None and not id_list:
            empty: dict[str, Any] = {"ids": [[] for _ in vectors]}
            for field in ("embeddings", "documents", "uris", "metadatas", "distances"):
                empty[field] = [[] for _ in vectors] if field in include else None
            empty["data"], empty["included"] = None, list(include)
            return empty  # type: ignore[return-value]
        return self._backend.query(
            self._model.id,
            vectors,
            n_results,
            id_list,
            where or None,
            where_document or None,
            include,
        )


# ---------------------------------------------------------------- clients


class Client:
    """A connection to a store: embedded (``PersistentClient``/``EphemeralClient``) or HTTP.

    Usable as a context manager; ``close()`` writes index snapshots and releases files.
    """

    # The HTTP server passes clauses through as Chroma's server does ($and of one item).
    _single_clause_ok = False

    def __init__(
        self,
        backend: Backend | None = None,
        tenant: str = DEFAULT_TENANT,
        database: str = DEFAULT_DATABASE,
        settings: Settings | None = None,
    ) -> None:
        if backend is None:
            LocalBackend = _local_backend_class()

            backend = LocalBackend(None, settings)
        self._backend: Backend | None = backend
        self.settings = settings or Settings()
        self.tenant = tenant
        self.database = database
        self._live_backend().get_database(database, tenant)

    def _live_backend(self) -> Backend:
        if self._backend is None:
            raise InvalidArgumentError("This client is closed; create a new one")
        return self._backend

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Persist what is pending and release files and connections. Idempotent."""
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # -------------------------------------------------------- server

    def heartbeat(self) -> int:
        return self._live_backend().heartbeat()

    def get_version(self) -> str:
        return self._live_backend().version()

    def reset(self) -> bool:
        """Delete everything. Refused unless the client was made with allow_reset=True."""
        if not self.settings.allow_reset:
            raise ResetDisabledError(
                "Resetting is not allowed by this configuration; create the client with "
                "settings=tintdb.Settings(allow_reset=True)"
            )
        return self._live_backend().reset()

    def get_settings(self) -> Settings:
        return self.settings

    def set_tenant(self, tenant: str, database: str = DEFAULT_DATABASE) -> None:
        self._live_backend().get_database(database, tenant)
        self.tenant, self.database = tenant, database

    def set_database(self, database: str) -> None:
        self._live_backend().get_database(database, self.tenant)
        self.database = database

    # -------------------------------------------------------- collections

    def _wrap(self, model: CollectionModel, ef: Any) -> Collection:
        return Collection(self, model, ef)

    def list_collections(
        self, limit: int | None = None, offset: int | None = None
    ) -> list[Collection]:
        limit, offset = validate_limit_offset(limit, offset)
        models = self._live_backend().list_collections(limit, offset, self.tenant, self.database)
        return [self._wrap(m, DEFAULT_EF) for m in models]

    def count_collections(self) -> int:
        return self._live_backend().count_collections(self.tenant, self.database)

    def create_collection(
        self,
        name: str,
        configuration: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        embedding_function: Any = DEFAULT_EF,
        data_loader: Any = None,
        get_or_create: bool = False,
    ) -> Collection:
        """Create a collection; an existing name raises UniqueConstraintError."""
        validate_collection_name(name)
        metadata = validate_collection_metadata(metadata)
        config = resolve_configuration(metadata, configuration)
        explicit_ef = embedding_function is not DEFAULT_EF
        ef = _default_ef() if embedding_function is DEFAULT_EF else embedding_function
        if config.get("embedding_function") is None or explicit_ef:
            config["embedding_function"] = _descriptor(ef)
        model = self._live_backend().create_collection(
            name, metadata, config, get_or_create, self.tenant, self.database
        )
        stored = model.configuration.get("embedding_function")
        if get_or_create and explicit_ef:
            _check_same_ef(name, stored, ef)
        if not explicit_ef and stored != config["embedding_function"]:
            ef = DEFAULT_EF  # an existing collection: rebuild its own function lazily
        return self._wrap(model, ef)

    def get_collection(
        self, name: str, embedding_function: Any = DEFAULT_EF, data_loader: Any = None
    ) -> Collection:
        """An existing collection; its embedding function is rebuilt unless one is given."""
        if not isinstance(name, str):
            raise InvalidArgumentError(f"Collection name must be a str, got {type(name).__name__}")
        model = self._live_backend().get_collection(name, self.tenant, self.database)
        if embedding_function is not DEFAULT_EF:
            _check_same_ef(name, model.configuration.get("embedding_function"), embedding_function)
        return self._wrap(model, embedding_function)

    def get_or_create_collection(
        self,
        name: str,
        configuration: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        embedding_function: Any = DEFAULT_EF,
        data_loader: Any = None,
    ) -> Collection:
        return self.create_collection(
            name, configuration, metadata, embedding_function, data_loader, get_or_create=True
        )

    def _collection_by_id(self, collection_id: str, embedding_function: Any = None) -> Collection:
        """For the server: a collection by UUID, with no embedding function by default."""
        return self._wrap(
            self._live_backend().get_collection_by_id(collection_id), embedding_function
        )

    def delete_collection(self, name: str) -> None:
        if not isinstance(name, str):
            raise InvalidArgumentError(f"Collection name must be a str, got {type(name).__name__}")
        self._live_backend().delete_collection(name, self.tenant, self.database)

    def vacuum(self) -> None:
        """Give the disk space of deleted records back to the file system (embedded only)."""
        vacuum = getattr(self._live_backend(), "vacuum", None)
        if vacuum is None:
            raise InvalidArgumentError("vacuum() runs on the server: use `tintdb vacuum --path`")
        vacuum()


class AdminClient:
    """Tenants and databases."""

    def __init__(self, backend: Backend | None = None, settings: Settings | None = None) -> None:
        if backend is None:
            LocalBackend = _local_backend_class()

            backend = LocalBackend(None, settings)
        self._backend = backend

    @classmethod
    def from_client(cls, client: Client) -> AdminClient:
        return cls(client._live_backend())

    def create_tenant(self, name: str) -> None:
        validate_tenant_name(name)
        self._backend.create_tenant(name)

    def get_tenant(self, name: str) -> dict[str, Any]:
        return self._backend.get_tenant(name)

    def create_database(self, name: str, tenant: str = DEFAULT_TENANT) -> None:
        validate_database_name(name)
        self._backend.create_database(name, tenant)

    def get_database(self, name: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        return self._backend.get_database(name, tenant)

    def list_databases(
        self, limit: int | None = None, offset: int | None = None, tenant: str = DEFAULT_TENANT
    ) -> list[dict[str, Any]]:
        limit, offset = validate_limit_offset(limit, offset)
        return self._backend.list_databases(tenant, limit, offset)

    def delete_database(self, name: str, tenant: str = DEFAULT_TENANT) -> None:
        self._backend.delete_database(name, tenant)


def EphemeralClient(
    settings: Settings | None = None,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
) -> Client:
    """An in-memory store of its own (each call gives a separate, empty store)."""
    LocalBackend = _local_backend_class()

    return Client(LocalBackend(None, settings), tenant, database, settings)


def PersistentClient(
    path: str | Path = "./chroma",
    settings: Settings | None = None,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
) -> Client:
    """A store on disk at ``path``; several clients and processes may share it."""
    LocalBackend = _local_backend_class()

    if not isinstance(path, (str, Path)):
        raise InvalidArgumentError(f"path must be a str or Path, got {type(path).__name__}")
    settings = settings or Settings()
    settings.is_persistent = True
    settings.persist_directory = str(path)
    return Client(LocalBackend(path, settings), tenant, database, settings)
