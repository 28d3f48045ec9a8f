"""The public API: ``Client``, ``Collection`` and ``AdminClient``, as in chromadb.

This layer owns everything that does not depend on where the data lives: argument
checks, embedding functions, and the exact shape of results. Storage is a ``Backend``
(see ``_backend``), so the same classes serve the embedded store and a server.

Long because it is chromadb's whole public surface (clients, collections, admin,
constructors) in one place, each method's checks beside it; the rules themselves live
in ``_validation``, ``_filters`` and ``_schema``.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from . import _schema
from ._backend import Backend
from ._filters import validate_where, validate_where_document
from ._schema_api import Schema, embedding_function_space
from ._search import client as _search_api
from ._validation import (
    HNSW_METADATA_KEYS,
    normalize_documents,
    normalize_embeddings,
    normalize_ids,
    normalize_include,
    normalize_metadatas,
    normalize_uris,
    validate_collection_metadata,
    validate_collection_name,
    validate_database_name,
    validate_limit_offset,
    validate_n_results,
    validate_tenant_name,
)
from .config import (
    ASYNC_HTTP_API_IMPL,
    DEFAULT_DATABASE,
    DEFAULT_TENANT,
    HTTP_API_IMPL,
    Settings,
    default_settings,
    names_server,
)
from .errors import (
    EmbeddingFunctionError,
    InvalidArgumentError,
    ResetDisabledError,
    TintError,
)
from .types import CollectionModel, GetResult, Include, IndexingStatus, QueryResult, ReadLevel

__all__ = [
    "AdminClient",
    "Client",
    "CloudClient",
    "Collection",
    "EphemeralClient",
    "PersistentClient",
    "RustClient",
]

log = logging.getLogger("tintdb")


class _Default:
    """Marks "no embedding_function argument given": the collection's stored function,
    else the default one, is used (None differs only in what a new collection stores)."""

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
    """What a collection stores about its function (Chroma's ``embedding_function``
    field): ``{"type": "known", "name": ..., "config": ...}`` for a function that
    describes itself, ``{"type": "legacy"}`` for a bare callable or one whose
    ``name``/``get_config`` are not implemented."""
    if ef is None:
        return None
    is_legacy = getattr(ef, "is_legacy", None)
    if callable(is_legacy) and is_legacy():
        return {"type": "legacy"}
    name = getattr(ef, "name", None)
    get_config = getattr(ef, "get_config", None)
    if not (callable(name) and callable(get_config)):
        return {"type": "legacy"}
    try:
        return {"type": "known", "name": name(), "config": get_config()}
    except NotImplementedError:
        return {"type": "legacy"}


def _ef_from_descriptor(desc: dict[str, Any] | None) -> Any:
    """The function a collection uses when none is given: its stored one rebuilt, or the
    default when it stored none (as chromadb 1.5.9 does); None when the stored one cannot
    be rebuilt (user-defined, or not available in this install)."""
    if not desc:
        return _default_ef()
    if desc.get("type") != "known":
        return None
    module = _ef_module()
    if module is None:
        return None
    try:
        return module.embedding_function_from_config(desc["name"], desc.get("config") or {})
    except EmbeddingFunctionError:
        return None


def _is_default_ef(ef: Any) -> bool:
    """A plain instance of the default function (no options that change its vectors):
    like no argument at all, as in chromadb, it gives way to a function the collection
    stored."""
    module = _ef_module()
    return (
        module is not None
        and isinstance(ef, module.DefaultEmbeddingFunction)
        and not ef.get_config()
    )


def _chosen_ef(ef: Any, stored: dict[str, Any] | None) -> Any:
    """The function a collection object embeds with, given the argument and the stored
    description. No argument or None: the stored one, else the default (DEFAULT_EF
    resolves it lazily). An instance of the default function gives way to a different
    stored one, as in chromadb; otherwise it is used as given (with its options)."""
    if ef is None or ef is DEFAULT_EF:
        return DEFAULT_EF
    if _is_default_ef(ef) and stored and stored.get("type") == "known":
        given = _descriptor(ef) or {}
        if stored.get("name") != given.get("name"):
            return DEFAULT_EF
    return ef


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


def _ef_name(ef: Any) -> str | None:
    desc = _descriptor(ef) or {}
    return desc.get("name") if desc.get("type") == "known" else None


def _check_ef_conflict(param: Any, configured: Any) -> None:
    """Refuse two different functions, one as embedding_function and one in the
    configuration (the default function as the argument is no conflict)."""
    name = None if param is None else _ef_name(param)
    if name is not None and name != "default" and name != _ef_name(configured):
        raise EmbeddingFunctionError(
            f"Two embedding functions were given: {name!r} as embedding_function and "
            f"{_ef_name(configured)!r} in configuration; give one of them"
        )


def _schema_ef(schema: Any) -> Any:
    """The function object a Schema's vector index names, if it names one."""
    if not isinstance(schema, Schema):
        return None
    value_types = schema.keys.get(_schema.EMBEDDING_KEY)
    vector = value_types.float_list if value_types is not None else None
    index = vector.vector_index if vector is not None else None
    return index.config.embedding_function if index is not None else None


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
    def schema(self) -> Schema:
        """The collection's indexes, as of when this object was fetched."""
        return Schema.deserialize_from_json(self._model.schema or {})

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
        op: str,
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
            # None deletes a key in update/upsert; add() has nothing to delete (chromadb
            # refuses it there too)
            normalize_metadatas(metadatas, n, allow_none_values=op != "add"),
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
            ids, embeddings, metadatas, documents, uris, images, "add"
        )
        if vecs is None:
            vecs = self._embed_documents(docs, "add")
        mds = _search_api.fill_sparse(self, mds, docs, len(ids))
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
            ids, embeddings, metadatas, documents, uris, images, "upsert"
        )
        if vecs is None:
            vecs = self._embed_documents(docs, "upsert")
        mds = _search_api.fill_sparse(self, mds, docs, len(ids))
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
            ids, embeddings, metadatas, documents, uris, images, "update"
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
        mds = _search_api.fill_sparse(self, mds, docs, len(ids))
        self._backend.update(self._model.id, ids, vecs, mds, docs, us)

    def delete(
        self,
        ids: Any = None,
        where: Any = None,
        where_document: Any = None,
        limit: int | None = None,
    ) -> dict[str, int]:
        """Delete by ids and/or filters; returns ``{"deleted": n}``, n the records deleted."""
        id_list = None if ids is None else _nonempty_ids(ids, "delete")
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
        """Rename, replace the metadata, or change search-time parameters
        (``configuration={"hnsw": {"ef_search": ...}}``; see _schema.apply_update)."""
        if name is not None:
            validate_collection_name(name)
        metadata = validate_collection_metadata(metadata)
        current = self._model.configuration.get("hnsw") or {}
        update = None
        if metadata is not None:
            for key, value in metadata.items():
                if key in HNSW_METADATA_KEYS:
                    field = HNSW_METADATA_KEYS[key][0]
                    if field in _FIXED_HNSW and value != current.get(field):
                        raise InvalidArgumentError(
                            f"{key} is fixed when a collection is created "
                            f"(it is {current.get(field)!r}); create a new collection to change it"
                        )
        ef = None
        if configuration is not None:
            update = dict(configuration) if isinstance(configuration, dict) else configuration
            ef = update.get("embedding_function") if isinstance(update, dict) else None
            if ef is not None and not isinstance(ef, dict):
                update["embedding_function"] = _descriptor(ef)
            # Checked against what is stored where it is applied (the backend); here,
            # only its shape, before anything is sent.
            update = _schema.check_update(update)
        self._model = self._backend.modify_collection(self._model.id, name, metadata, update)
        if ef is not None and not isinstance(ef, dict):
            self._ef, self._ef_built = ef, True

    # -------------------------------------------------------- reads

    def count(self, read_level: ReadLevel | str = ReadLevel.INDEX_AND_WAL) -> int:
        """The number of records; every committed write counts, whatever ``read_level``."""
        try:
            ReadLevel(read_level)
        except ValueError:
            raise InvalidArgumentError(
                f"read_level must be one of {', '.join(r.value for r in ReadLevel)}, "
                f"got {read_level!r}"
            ) from None
        return self._backend.count(self._model.id)

    def _check_filters(self, where: Any, where_document: Any) -> None:
        """None means "no filter"; anything else, an empty dict included, must be valid."""
        single = self._client._single_clause_ok
        if where is not None:
            validate_where(where, single_clause_ok=single)
        if where_document is not None:
            validate_where_document(where_document, single_clause_ok=single)
        # Filters on an index the schema disabled are refused, as Chroma does (a store's
        # collections carry their declared schema; a server checks its own).
        declared = getattr(self._model, "declared_schema", None)
        _schema.check_filters(declared, where, where_document)

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
        id_list = None if ids is None else _nonempty_ids(ids, "get")
        self._check_filters(where, where_document)
        limit, offset = validate_limit_offset(limit, offset)
        fields = normalize_include(include, for_query=False)
        found = self._backend.get(
            self._model.id, id_list, where or None, where_document or None, limit, offset, fields
        )
        found["embeddings"] = _no_rows_flat(found["embeddings"])
        _search_api.sparse_results(found["metadatas"])
        return found

    def peek(self, limit: int = 10) -> GetResult:
        """The first ``limit`` records, with their embeddings."""
        return self.get(limit=limit, include=["metadatas", "documents", "embeddings"])

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
        fields = normalize_include(include, for_query=True)
        id_list = None if ids is None else normalize_ids(ids, allow_empty=True)
        vectors: np.ndarray | None
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
        if id_list is not None and not id_list:  # no candidates: nothing to search
            empty: dict[str, Any] = {"ids": [[] for _ in vectors]}
            for field in ("embeddings", "documents", "uris", "metadatas", "distances"):
                empty[field] = [[] for _ in vectors] if field in fields else None
            if "embeddings" in fields:
                empty["embeddings"] = [np.empty(0, dtype=np.float32) for _ in vectors]
            empty["data"], empty["included"] = None, list(fields)
            return empty  # type: ignore[return-value]
        found = self._backend.query(
            self._model.id,
            vectors,
            n_results,
            id_list,
            where or None,
            where_document or None,
            fields,
        )
        if found["embeddings"] is not None:
            found["embeddings"] = [_no_rows_flat(e) for e in found["embeddings"]]
        for batch in found["metadatas"] or ():
            _search_api.sparse_results(batch)
        return found

    # -------------------------------------------------------- search and fork

    def search(
        self, searches: Any, read_level: ReadLevel | str = ReadLevel.INDEX_AND_WAL
    ) -> _search_api.SearchResult:
        """One or more searches (``Search`` objects) in one call: dense, sparse and
        hybrid ranking, filters, grouping, paging. Every committed write is seen,
        whatever ``read_level``. Text queries in ``Knn`` are embedded here with the
        collection's function for that key."""
        level = _search_api.parse_read_level(read_level)
        items = list(searches) if isinstance(searches, (list, tuple)) else [searches]
        payloads = [_search_api.payload(self, s, i) for i, s in enumerate(items)]
        if not payloads:
            return _search_api.SearchResult(
                {f: [] for f in ("ids", "documents", "embeddings", "metadatas", "scores", "select")}
            )
        found = self._backend.search(self._model.id, payloads, level)
        for batch in found.get("metadatas") or ():
            _search_api.sparse_results(batch)
        return _search_api.SearchResult(found)

    def fork(self, new_name: str) -> Collection:
        """A copy of this collection under ``new_name``: the same records, metadata,
        configuration and embedding function, independent of this one from now on."""
        validate_collection_name(new_name)
        model = self._backend.fork(self._model.id, new_name)
        return Collection(self._client, model, self._ef if self._ef_built else DEFAULT_EF)

    def fork_count(self) -> int:
        """How many forks of this collection exist: those made from it, and from them."""
        return self._backend.fork_count(self._model.id)

    def get_indexing_status(self) -> IndexingStatus:
        """How many records the vector index's graph holds, and how many still wait
        for it (searched exactly meanwhile): poll it to wait for a bulk load's graph."""
        return self._backend.indexing_status(self._model.id)


def _nonempty_ids(ids: Any, op: str) -> list[str]:
    """Ids given to get() or delete(): an empty list is refused, as in chromadb, rather
    than read as "no records" (a delete that deletes nothing, silently)."""
    found = normalize_ids(ids, allow_empty=True)
    if not found:
        raise InvalidArgumentError(
            f"Expected IDs to be a non-empty list, got 0 IDs in {op}(); pass ids=None to "
            f"{op} by where/where_document alone"
        )
    return found


def _no_rows_flat(embeddings: Any) -> Any:
    """No rows come back as an empty array of shape (0,), as chromadb returns them."""
    if isinstance(embeddings, np.ndarray) and embeddings.shape[0] == 0:
        return np.empty(0, dtype=embeddings.dtype)
    return embeddings


# ---------------------------------------------------------------- clients


class Client:
    """A connection to a store: embedded (``PersistentClient``/``EphemeralClient``) or HTTP.

    Usable as a context manager; ``close()`` writes index snapshots and releases files.
    """

    # The HTTP server passes clauses through as Chroma's server does ($and of one item).
    _single_clause_ok = False

    def __init__(
        self,
        settings: Settings | None = None,
        tenant: str = DEFAULT_TENANT,
        database: str = DEFAULT_DATABASE,
        *,
        backend: Backend | None = None,
    ) -> None:
        """``Client(settings, tenant, database)``, chromadb's signature: the settings say
        whether the store is in memory, on disk (``is_persistent``) or a server
        (``chroma_api_impl``/``chroma_server_host``). ``backend`` serves an existing one."""
        _check_settings_type(settings)
        tenant, database = str(tenant), str(database)
        owned = backend is None
        if backend is None:
            settings = settings if settings is not None else default_settings()
            backend = _backend_from_settings(settings, tenant, database)
        self._backend: Backend | None = backend
        self.settings = settings if settings is not None else Settings()
        self.tenant = tenant
        self.database = database
        try:
            if getattr(backend, "remote", False):
                backend.get_tenant(tenant)  # a missing tenant fails here, as in chromadb
            backend.get_database(database, tenant)
        except BaseException:
            if owned:
                backend.close()
            raise

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
        """Delete everything. An embedded store refuses unless the client was made with
        allow_reset=True; a server decides by its own setting (``tintdb run --allow-reset``)."""
        if not getattr(self._live_backend(), "remote", False) and not self.settings.allow_reset:
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
        schema: Schema | dict[str, Any] | None = None,
        configuration: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        embedding_function: Any = DEFAULT_EF,
        data_loader: Any = None,
        get_or_create: bool = False,
    ) -> Collection:
        """Create a collection; an existing name raises UniqueConstraintError.

        ``schema`` declares its indexes, ``configuration`` (or legacy ``hnsw:*``
        metadata) its vector index; how they combine with the embedding function is
        chromadb's, described in _schema.resolve_create. ``embedding_function=None``
        stores no function: the collection then embeds with the default one (or the
        schema's) unless a function is given when it is opened (chromadb 1.5.9).
        """
        validate_collection_name(name)
        metadata = validate_collection_metadata(metadata)
        given = configuration.get("embedding_function") if isinstance(configuration, dict) else None
        if given is not None and not isinstance(given, dict):  # a function object
            explicit = embedding_function not in (None, DEFAULT_EF)
            _check_ef_conflict(embedding_function if explicit else None, given)
            if not explicit or _is_default_ef(embedding_function):
                embedding_function = given
            given = None
        # The function the request describes, and the object behind it (for its space).
        described, behind = given, None
        if embedding_function is not None and embedding_function is not DEFAULT_EF:
            if not _is_default_ef(embedding_function) or given is None:
                described, behind = _descriptor(embedding_function), embedding_function
        elif embedding_function is DEFAULT_EF and given is None:
            behind = _default_ef()
            described = _descriptor(behind)
        config = _schema.create_request(configuration, metadata, embedding_function_space(behind))
        config["embedding_function"] = described
        if schema is not None:
            config["schema"] = schema.serialize_to_json() if isinstance(schema, Schema) else schema
        _schema.resolve_create(metadata, config)  # every check, before anything is sent
        model = self._live_backend().create_collection(
            name, metadata, config, get_or_create, self.tenant, self.database
        )
        collection = self._opened(model, embedding_function)
        schema_ef = _schema_ef(schema)
        stored = model.configuration.get("embedding_function")
        if (
            collection._ef is DEFAULT_EF
            and schema_ef is not None
            and _descriptor(schema_ef) == stored
        ):
            collection._ef, collection._ef_built = schema_ef, True  # the schema's own object
        return collection

    def get_collection(
        self, name: str, embedding_function: Any = DEFAULT_EF, data_loader: Any = None
    ) -> Collection:
        """An existing collection. Without a function of your own (none, ``None`` or the
        default), it embeds with the function it was created with, else the default."""
        if not isinstance(name, str):
            raise InvalidArgumentError(f"Collection name must be a str, got {type(name).__name__}")
        model = self._live_backend().get_collection(name, self.tenant, self.database)
        return self._opened(model, embedding_function)

    def _opened(self, model: CollectionModel, embedding_function: Any) -> Collection:
        stored = model.configuration.get("embedding_function")
        ef = _chosen_ef(embedding_function, stored)
        if ef is not DEFAULT_EF:
            _check_same_ef(model.name, stored, ef)
        return self._wrap(model, ef)

    def get_or_create_collection(
        self,
        name: str,
        schema: Schema | dict[str, Any] | None = None,
        configuration: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        embedding_function: Any = DEFAULT_EF,
        data_loader: Any = None,
    ) -> Collection:
        return self.create_collection(
            name, schema, configuration, metadata, embedding_function, data_loader, True
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

    def backup(self, dest: str | Path) -> Any:
        """A consistent copy of this store in the new directory ``dest``, taken while it
        is in use: it holds exactly the writes committed before the backup began
        (``BackupInfo.lsn``); open it as a store. Embedded stores only."""
        from ._backup import backup_backend

        return backup_backend(self._live_backend(), Path(dest))


class AdminClient:
    """Tenants and databases: ``AdminClient(settings)``, chromadb's signature.

    One made from settings holds a connection of its own (an HTTP connection pool, or
    the store's files): ``close()`` it, or use it as a context manager. One made over a
    client's backend (``from_client``) leaves closing to that client.
    """

    def __init__(self, settings: Settings | None = None, *, backend: Backend | None = None) -> None:
        _check_settings_type(settings)
        self._owned = backend is None
        self._closed = False
        if backend is None:
            settings = settings if settings is not None else Settings()
            backend = _backend_from_settings(settings, DEFAULT_TENANT, DEFAULT_DATABASE)
        self._backend = backend

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection this admin client opened (none if it was given a
        backend). Idempotent."""
        if self._owned and not self._closed:
            self._backend.close()
        self._closed = True

    def _live(self) -> Backend:
        if self._closed:
            raise InvalidArgumentError("This admin client is closed; create a new one")
        return self._backend

    @classmethod
    def from_client(cls, client: Client) -> AdminClient:
        return cls(backend=client._live_backend())

    def create_tenant(self, name: str) -> None:
        validate_tenant_name(name)
        self._live().create_tenant(name)

    def get_tenant(self, name: str) -> dict[str, Any]:
        return self._live().get_tenant(name)

    def create_database(self, name: str, tenant: str = DEFAULT_TENANT) -> None:
        validate_database_name(name)
        self._live().create_database(name, tenant)

    def get_database(self, name: str, tenant: str = DEFAULT_TENANT) -> dict[str, Any]:
        return self._live().get_database(name, tenant)

    def list_databases(
        self, limit: int | None = None, offset: int | None = None, tenant: str = DEFAULT_TENANT
    ) -> list[dict[str, Any]]:
        limit, offset = validate_limit_offset(limit, offset)
        return self._live().list_databases(tenant, limit, offset)

    def delete_database(self, name: str, tenant: str = DEFAULT_TENANT) -> None:
        self._live().delete_database(name, tenant)


# ---------------------------------------------------------------- from settings to a store


def _check_settings_type(settings: Any) -> None:
    if settings is not None and not isinstance(settings, Settings):
        hint = " (a backend goes in backend=...)" if hasattr(settings, "get_database") else ""
        raise InvalidArgumentError(
            f"settings must be a tintdb.Settings, got {type(settings).__name__}{hint}"
        )


def _backend_from_settings(settings: Settings, tenant: str, database: str) -> Backend:
    """The store ``settings`` describe: a server, a directory on disk, or memory."""
    _raise_open_files_limit(settings.chroma_server_nofile)
    if names_server(settings):
        if settings.chroma_api_impl == ASYNC_HTTP_API_IMPL:
            raise InvalidArgumentError(
                f"Settings chroma_api_impl={ASYNC_HTTP_API_IMPL!r} is the asynchronous client: "
                "use `await tintdb.AsyncHttpClient(...)`, or chroma_api_impl="
                f"{HTTP_API_IMPL!r} for this one"
            )
        from ._http import http_backend_from_settings

        return http_backend_from_settings(settings, tenant=tenant, database=database)
    LocalBackend = _local_backend_class()
    path = settings.persist_directory if settings.is_persistent else None
    return LocalBackend(path, settings)  # type: ignore[no-any-return]


def _raise_open_files_limit(wanted: int | None) -> None:
    """``chroma_server_nofile``: raise this process's soft limit of open files, as chromadb
    does (never above the hard limit, never lowered; logged when it cannot be applied)."""
    if wanted is None:
        return
    try:
        import resource
    except ImportError:  # Windows
        log.warning("chroma_server_nofile is not supported on this platform; not applied")
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and wanted > hard:
        log.warning(
            "chroma_server_nofile=%d is above the hard limit of open files (%d); keeping %d",
            wanted,
            hard,
            soft,
        )
    elif soft != resource.RLIM_INFINITY and wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit to %d: %s", wanted, exc)


def _embedded_only(settings: Settings | None, constructor: str) -> Settings:
    """The settings of an embedded-store constructor; settings naming a server are an
    error (chromadb would quietly talk to the server instead)."""
    _check_settings_type(settings)
    settings = settings if settings is not None else Settings()
    if names_server(settings):
        raise InvalidArgumentError(
            f"{constructor} is an embedded store, but these settings name a server "
            f"(chroma_api_impl={settings.chroma_api_impl!r}, "
            f"chroma_server_host={settings.chroma_server_host!r}): use HttpClient(...) or "
            "Client(settings) for a server"
        )
    return settings


def EphemeralClient(
    settings: Settings | None = None,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
) -> Client:
    """An in-memory store of its own (each call gives a separate, empty store)."""
    settings = _embedded_only(settings, "EphemeralClient")
    settings.is_persistent = False
    return Client(settings, tenant, database)


def PersistentClient(
    path: str | Path = "./chroma",
    settings: Settings | None = None,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
) -> Client:
    """A store on disk at ``path``; several clients and processes may share it."""
    if not isinstance(path, (str, Path)):
        raise InvalidArgumentError(f"path must be a str or Path, got {type(path).__name__}")
    settings = _embedded_only(settings, "PersistentClient")
    settings.persist_directory = str(path)
    settings.is_persistent = True
    return Client(settings, tenant, database)


def PostgresClient(
    dsn: str,
    settings: Settings | None = None,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
    *,
    pool_size: int = 10,
) -> Client:
    """A store held in PostgreSQL with pgvector (``postgresql://user:pass@host/db``),
    shared with every other client and ``tintdb run --postgres`` node on that database.
    Needs the driver: ``pip install 'tintdb[postgres]'``."""
    if not isinstance(dsn, str):
        raise InvalidArgumentError(f"dsn must be a str, got {type(dsn).__name__}")
    settings = _embedded_only(settings, "PostgresClient")
    try:
        from ._postgres import PostgresBackend
    except ModuleNotFoundError as exc:  # the thin HTTP client ships without it
        raise ImportError(
            "PostgresClient needs the full package: pip install 'tintdb[postgres]'"
        ) from exc
    backend = PostgresBackend(dsn, settings, pool_size=pool_size)
    try:
        return Client(settings, tenant, database, backend=backend)
    except BaseException:
        backend.close()
        raise


def RustClient(
    path: str | None = None,
    settings: Settings | None = None,
    tenant: str = DEFAULT_TENANT,
    database: str = DEFAULT_DATABASE,
) -> Client:
    """chromadb's name for an embedded store: on disk at ``path``, in memory without one."""
    if path is None:
        return EphemeralClient(settings, tenant, database)
    return PersistentClient(path, settings, tenant, database)


def CloudClient(
    tenant: str | None = None,
    database: str | None = None,
    api_key: str | None = None,
    settings: Settings | None = None,
    *,
    cloud_host: str = "api.trychroma.com",
    cloud_port: int = 443,
    enable_ssl: bool = True,
) -> Client:
    """Refused: tintdb does not connect to Chroma Cloud (its service, not its protocol)."""
    raise InvalidArgumentError(
        "CloudClient connects to Chroma Cloud, which tintdb does not support. For a tintdb "
        "(or Chroma) server, use HttpClient(host=..., port=..., ssl=..., "
        "headers={'x-chroma-token': <token>}); for a store of your own, PersistentClient(path)."
    )


# The seam a server (``tintdb.server``) serves a client through: the backend a client
# calls, a collection's stored model, and a collection by UUID. Internal, not part of
# the chromadb API, so that the server needs no private attribute of these classes.


def backend_of(client: Client) -> Backend:
    """The backend ``client`` calls."""
    return client._live_backend()


def model_of(collection: Collection) -> CollectionModel:
    """The collection as the backend returned it (id, name, configuration ...)."""
    return collection._model


def collection_by_id(
    client: Client, collection_id: str, embedding_function: Any = None
) -> Collection:
    """A collection of ``client`` by UUID, with no embedding function by default (a
    server never embeds)."""
    return client._collection_by_id(collection_id, embedding_function)
