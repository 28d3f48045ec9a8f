"""Reading a Chroma persistent directory (``chroma.sqlite3`` and one folder per index).

Two readers, chosen by ``open_chroma_directory``:

* ``ChromaPackageReader`` goes through the ``chromadb`` package, Chroma's own code:
  used when it is installed in this interpreter.
* ``ChromaFileReader`` reads the files directly, for when it is not. Chroma 1.x keeps
  collections, records, documents, uris and metadata in plain SQLite tables; vectors
  live in two places: the HNSW segment's files (written every ``sync_threshold``
  changes: ``header.bin``, ``data_level0.bin`` with each element's links, vector and
  label, ``index_metadata.pickle`` mapping ids to labels, and ``length.bin`` holding
  each vector's norm in a cosine space, where the stored vector is normalised), and,
  for the changes since, the log table ``embeddings_queue`` (float32 blobs). The
  reader replays that log tail over the persisted index, as Chroma does on open, and
  gives each vector as Chroma's own ``get`` returns it (in a cosine space: normalised,
  then multiplied back by its norm, in float32).

The direct reader reads only what it can check: the tables and columns it needs must
be there, the index header must be the version and shape it knows, the id mapping is
unpickled with no classes allowed, every record must end up with exactly one vector,
and the log must not hold writes the metadata tables have not applied. Anything else
is refused with what to do instead (install chromadb, or read the directory through
``chroma run``). It opens the database read-only; Chroma should not be writing the
directory meanwhile (copy from its server instead).

Over 500 lines because the two readers must give the same collections and records,
and keeping them side by side is how that is checked by reading. What would split off
cleanly: the file formats the direct reader parses (``_Hnsw``, ``_Vectors``).
"""

from __future__ import annotations

import io
import pickle
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson

from ._copy import Batch, CollectionSpec, space_of
from .errors import InvalidArgumentError

__all__ = ["ChromaFileReader", "ChromaPackageReader", "open_chroma_directory"]

_VECTOR_SEGMENT = "urn:chroma:segment/vector/hnsw-local-persisted"
_METADATA_SEGMENT = "urn:chroma:segment/metadata/sqlite"
_ADD, _UPDATE, _UPSERT, _DELETE = 0, 1, 2, 3
_DOCUMENT_KEY, _URI_KEY = "chroma:document", "chroma:uri"
# What Chroma shows of an HNSW configuration (collection.configuration_json["hnsw"]).
_SHOWN_HNSW = ("ef_construction", "ef_search", "max_neighbors", "resize_factor", "sync_threshold")
_NEEDED = {
    "tenants": {"id"},
    "databases": {"id", "name", "tenant_id"},
    "collections": {"id", "name", "dimension", "database_id", "config_json_str"},
    "collection_metadata": {"collection_id", "key", "str_value", "int_value", "float_value"},
    "segments": {"id", "type", "scope", "collection"},
    "embeddings": {"id", "segment_id", "embedding_id"},
    "embedding_metadata": {"id", "key", "string_value", "int_value", "float_value"},
    "embeddings_queue": {"seq_id", "operation", "topic", "id", "vector", "encoding"},
    "max_seq_id": {"segment_id", "seq_id"},
}
_INSTALL = "pip install chromadb (the version that wrote the directory)"


class Unreadable(InvalidArgumentError):
    """The directory is not in a layout the direct reader can read safely."""


def open_chroma_directory(path: Path, how: str = "auto") -> Any:
    """A reader for the Chroma directory at ``path``: ``how`` is "auto" (the chromadb
    package when installed, else the files directly), "chromadb" or "files"."""
    if how not in ("auto", "chromadb", "files"):
        raise InvalidArgumentError(f"chroma reader must be auto, chromadb or files, got {how!r}")
    if how in ("auto", "chromadb"):
        try:
            import chromadb  # noqa: F401
        except ImportError:
            if how == "chromadb":
                raise InvalidArgumentError(
                    f"reading {path} through the chromadb package needs it installed: {_INSTALL}"
                ) from None
        else:
            return ChromaPackageReader(path)
    return ChromaFileReader(path)


def _open_readonly(path: Path) -> sqlite3.Connection:
    db = path / "chroma.sqlite3"
    conn = sqlite3.connect(
        f"file:{quote(str(db))}?mode=ro", uri=True, check_same_thread=False, timeout=30.0
    )
    conn.execute("PRAGMA query_only = 1")
    return conn


def _tenants(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT id FROM tenants ORDER BY id")]


class _NoClasses(pickle.Unpickler):
    """Chroma's id mapping holds dicts, strings, ints and None: anything that names a
    class or a function is refused, so a crafted file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _int_seq(value: Any) -> int:
    """A seq id as Chroma stores it: an integer, or (older files) big-endian bytes."""
    if isinstance(value, bytes):
        return int.from_bytes(value, "big")
    return int(value)


def chroma_cosine(vectors: np.ndarray) -> np.ndarray:
    """A vector as Chroma returns it in a cosine space: normalised (sum of squares
    accumulated in float32, one reciprocal of the norm plus 1e-30), then multiplied
    by its norm, all in float32 (checked bit for bit against chromadb 1.5.9)."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    sums = np.zeros(len(v), dtype=np.float32)
    for j in range(v.shape[1]):
        sums += v[:, j] * v[:, j]
    norms = np.sqrt(sums)
    inverse = np.float32(1.0) / (norms + np.float32(1e-30))
    return (v * inverse[:, None]) * norms[:, None]


class _Hnsw:
    """A persisted HNSW segment: vectors by record id, read from a memory map."""

    def __init__(self, folder: Path, dim: int, cosine: bool) -> None:
        where = f"index folder {folder}"
        try:
            with open(folder / "index_metadata.pickle", "rb") as f:
                mapping = _NoClasses(io.BytesIO(f.read())).load()
            header = (folder / "header.bin").read_bytes()
        except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise Unreadable(f"{where}: {exc}") from exc
        id_to_label = mapping.get("id_to_label") if isinstance(mapping, dict) else None
        if not isinstance(id_to_label, dict):
            raise Unreadable(f"{where}: index_metadata.pickle holds no id_to_label mapping")
        if len(header) < 100:
            raise Unreadable(f"{where}: header.bin is {len(header)} bytes, not 100")
        (version, offset0, max_elements, count, per_element, label_at, data_at) = (
            struct.unpack_from("<iQQQQQQ", header, 0)
        )
        max_m0 = struct.unpack_from("<Q", header, 68)[0]
        if version != 1 or offset0 != 0:
            raise Unreadable(f"{where}: header version {version} is not the one this reader knows")
        if (
            data_at != 4 + 4 * max_m0
            or label_at != data_at + 4 * dim
            or per_element != label_at + 8
            or count > max_elements
        ):
            raise Unreadable(
                f"{where}: header layout does not match dimension {dim} (element {per_element} "
                f"bytes, vector at {data_at}, label at {label_at})"
            )
        data_path = folder / "data_level0.bin"
        if data_path.stat().st_size < count * per_element:
            raise Unreadable(f"{where}: data_level0.bin is shorter than {count} elements")
        self.data = (
            np.memmap(data_path, dtype=np.uint8, mode="r", shape=(count, per_element))
            if count
            else np.empty((0, per_element), dtype=np.uint8)
        )
        labels = np.ascontiguousarray(self.data[:, label_at : label_at + 8]).view("<u8").ravel()
        self.order = np.argsort(labels, kind="stable")
        self.sorted_labels = labels[self.order]
        self.lengths: np.ndarray | None = None
        if cosine:
            lengths = np.fromfile(folder / "length.bin", dtype="<f4")
            if len(lengths) < count:
                raise Unreadable(f"{where}: length.bin holds fewer than {count} norms")
            self.lengths = lengths[:count]
        self.id_to_label: dict[str, int] = id_to_label
        self.span = (data_at, label_at)

    def rows(self, ids: list[str]) -> np.ndarray:
        labels = np.array([self.id_to_label[i] for i in ids], dtype=np.uint64)
        at = np.searchsorted(self.sorted_labels, labels)
        if len(at) and (
            at.max() >= len(self.sorted_labels) or (self.sorted_labels[at] != labels).any()
        ):
            raise Unreadable("a label in index_metadata.pickle has no element in data_level0.bin")
        return self.order[at]

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        a, b = self.span
        out = np.ascontiguousarray(self.data[rows][:, a:b]).view("<f4").astype(np.float32)
        if self.lengths is not None:  # normalised in the index; Chroma multiplies back
            out = out * self.lengths[rows][:, None]
        return out


class _Vectors:
    """Every live vector of one collection: the persisted index plus the log's tail."""

    def __init__(self, reader: ChromaFileReader, spec: CollectionSpec) -> None:
        cid, vseg, mseg = spec.ref
        conn = reader.conn
        dim = spec.dimension or 0
        self.dim = dim
        self.cosine = space_of(spec) == "cosine"
        seqs = dict(conn.execute("SELECT segment_id, seq_id FROM max_seq_id"))
        vector_seen = _int_seq(seqs[vseg]) if seqs.get(vseg) is not None else 0
        meta_seen = _int_seq(seqs[mseg]) if seqs.get(mseg) is not None else 0
        self.index: _Hnsw | None = None
        if vector_seen:
            self.index = _Hnsw(reader.path / vseg, dim, self.cosine)
        # The log's tail, in order: what the persisted index does not have yet.
        self.tail: dict[str, bytes | None] = {}
        rows = conn.execute(
            "SELECT seq_id, operation, id, vector, encoding FROM embeddings_queue "
            "WHERE topic LIKE ? AND seq_id > ? ORDER BY seq_id",
            (f"%/{cid}", vector_seen),
        )
        for seq, op, rid, vector, encoding in rows:
            if _int_seq(seq) > meta_seen:
                raise Unreadable(
                    f"{spec.path} has writes in Chroma's log that its tables have not applied yet: "
                    "open the directory once with chromadb (or chroma run) so it applies them"
                )
            if vector is not None and encoding not in (None, "FLOAT32"):
                raise Unreadable(f"{spec.path}: a logged vector is encoded as {encoding!r}")
            if vector is not None and len(vector) != 4 * dim:
                raise Unreadable(f"{spec.path}: a logged vector is not {dim} float32 values")
            live = self.live(rid)
            if op == _DELETE:
                self.tail[rid] = None
            elif vector is not None and (
                (op == _ADD and not live) or op == _UPSERT or (op == _UPDATE and live)
            ):
                self.tail[rid] = vector
            elif op not in (_ADD, _UPDATE, _UPSERT):
                raise Unreadable(f"{spec.path}: unknown operation {op} in Chroma's log")
        live_count = sum(1 for v in self.tail.values() if v is not None)
        if self.index is not None:
            live_count += sum(1 for i in self.index.id_to_label if i not in self.tail)
        if live_count != spec.count:
            raise Unreadable(
                f"{spec.path}: {spec.count} records but {live_count} vectors; the index and "
                "the tables disagree"
            )

    def live(self, rid: str) -> bool:
        if rid in self.tail:
            return self.tail[rid] is not None
        return self.index is not None and rid in self.index.id_to_label

    def get(self, ids: list[str], where: str) -> np.ndarray:
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        logged: list[int] = []
        indexed: list[int] = []
        for i, rid in enumerate(ids):
            if rid in self.tail:
                if self.tail[rid] is None:
                    raise Unreadable(f"{where}: record {rid!r} is deleted but still listed")
                logged.append(i)
            elif self.index is not None and rid in self.index.id_to_label:
                indexed.append(i)
            else:
                raise Unreadable(f"{where}: record {rid!r} has no vector")
        if logged:
            raw = b"".join(self.tail[ids[i]] for i in logged)  # type: ignore[misc]
            vecs = np.frombuffer(raw, dtype="<f4").reshape(len(logged), self.dim)
            out[logged] = chroma_cosine(vecs) if self.cosine else vecs
        if indexed:
            assert self.index is not None
            out[indexed] = self.index.vectors(self.index.rows([ids[i] for i in indexed]))
        return out


class ChromaFileReader:
    """A Chroma directory read from its files (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not (path / "chroma.sqlite3").is_file():
            raise InvalidArgumentError(f"{path} has no chroma.sqlite3")
        self.conn = _open_readonly(path)
        self._check_tables()

    def describe(self) -> str:
        return f"Chroma directory {self.path} (read from its files; chromadb is not installed)"

    def _columns(self, table: str) -> set[str]:
        return {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}

    def _check_tables(self) -> None:
        for table, needed in _NEEDED.items():
            missing = needed - self._columns(table)
            if missing:
                raise Unreadable(
                    f"{self.path}: chroma.sqlite3 has no {table}({', '.join(sorted(missing))}): "
                    f"a Chroma version this reader does not know; {_INSTALL}"
                )
        self.has_arrays = bool(self._columns("embedding_metadata_array"))
        self.has_schema = "schema_str" in self._columns("collections")
        self.has_bools = "bool_value" in self._columns("embedding_metadata")

    def collections(self) -> list[CollectionSpec]:
        schema_col = "c.schema_str" if self.has_schema else "NULL"
        rows = self.conn.execute(
            f"SELECT c.id, c.name, c.dimension, d.tenant_id, d.name, c.config_json_str, "
            f"{schema_col} FROM collections c JOIN databases d ON d.id = c.database_id "
            "ORDER BY d.tenant_id, d.name, c.name"
        ).fetchall()
        specs = []
        for cid, name, dim, tenant, database, config_text, schema_text in rows:
            segments = dict(
                self.conn.execute("SELECT type, id FROM segments WHERE collection = ?", (cid,))
            )
            if _METADATA_SEGMENT not in segments or _VECTOR_SEGMENT not in segments:
                raise Unreadable(
                    f"{tenant}/{database}/{name} has segments {sorted(segments)}, not a local "
                    f"HNSW index with SQLite metadata; {_INSTALL}"
                )
            mseg = segments[_METADATA_SEGMENT]
            count = self.conn.execute(
                "SELECT count(*) FROM embeddings WHERE segment_id = ?", (mseg,)
            ).fetchone()[0]
            schema = orjson.loads(schema_text) if schema_text else None
            metadata = self._collection_metadata(cid)
            specs.append(
                CollectionSpec(
                    tenant=tenant,
                    database=database,
                    name=name,
                    metadata=metadata,
                    configuration=_shown_configuration(
                        orjson.loads(config_text or "{}"), schema, metadata
                    ),
                    schema=schema,
                    dimension=dim,
                    count=int(count),
                    ref=(cid, segments[_VECTOR_SEGMENT], mseg),
                )
            )
        return specs

    def _collection_metadata(self, cid: str) -> dict[str, Any] | None:
        bool_col = "bool_value" if "bool_value" in self._columns("collection_metadata") else "NULL"
        rows = self.conn.execute(
            f"SELECT key, str_value, int_value, float_value, {bool_col} FROM collection_metadata "
            "WHERE collection_id = ? ORDER BY rowid",
            (cid,),
        ).fetchall()
        return {key: _value(s, i, f, b) for key, s, i, f, b in rows} or None

    def batches(self, spec: CollectionSpec, size: int) -> Iterator[Batch]:
        vectors = _Vectors(self, spec)
        _, _, mseg = spec.ref
        last = -1
        bool_col = "bool_value" if self.has_bools else "NULL"
        while True:
            page = self.conn.execute(
                "SELECT id, embedding_id FROM embeddings WHERE segment_id = ? AND id > ? "
                "ORDER BY id LIMIT ?",
                (mseg, last, size),
            ).fetchall()
            if not page:
                return
            last = page[-1][0]
            keys = orjson.dumps([r[0] for r in page]).decode()
            where = {r[0]: n for n, r in enumerate(page)}
            metadatas: list[dict[str, Any] | None] = [None] * len(page)
            documents: list[str | None] = [None] * len(page)
            uris: list[str | None] = [None] * len(page)
            for rowid, key, s, i, f, b in self.conn.execute(
                f"SELECT id, key, string_value, int_value, float_value, {bool_col} "
                "FROM embedding_metadata WHERE id IN (SELECT value FROM json_each(?)) "
                "ORDER BY rowid",
                (keys,),
            ):
                n = where[rowid]
                if key == _DOCUMENT_KEY:
                    documents[n] = s
                elif key == _URI_KEY:
                    uris[n] = s
                else:
                    md = metadatas[n]
                    if md is None:
                        md = metadatas[n] = {}
                    md[key] = _value(s, i, f, b)
            if self.has_arrays:
                for rowid, key, s, i, f, b in self.conn.execute(
                    "SELECT id, key, string_value, int_value, float_value, bool_value FROM "
                    "embedding_metadata_array WHERE id IN (SELECT value FROM json_each(?)) "
                    "ORDER BY rowid",
                    (keys,),
                ):
                    n = where[rowid]
                    md = metadatas[n]
                    if md is None:
                        md = metadatas[n] = {}
                    md.setdefault(key, []).append(_value(s, i, f, b))
            ids = [r[1] for r in page]
            yield Batch(ids, vectors.get(ids, spec.path), documents, uris, metadatas)

    def close(self) -> None:
        self.conn.close()


def _value(s: Any, i: Any, f: Any, b: Any) -> Any:
    if b is not None:
        return bool(b)
    if s is not None:
        return s
    if i is not None:
        return int(i)
    if f is not None:
        return float(f)
    return None


def _shown_configuration(
    stored: dict[str, Any], schema: dict[str, Any] | None, metadata: dict[str, Any] | None
) -> dict[str, Any]:
    """The configuration as Chroma shows it (``collection.configuration_json``): the
    stored one when it names its index, else the index the schema resolved (where
    Chroma 1.x keeps the space, the parameters and the embedding function)."""
    if stored.get("hnsw") or stored.get("spann"):
        return stored
    try:
        vector = schema["keys"]["#embedding"]["float_list"]["vector_index"]["config"]  # type: ignore[index]
    except (KeyError, TypeError):
        return stored
    params = vector.get("hnsw") or {}
    hnsw = {"space": vector.get("space", (metadata or {}).get("hnsw:space", "l2"))}
    hnsw.update({k: params[k] for k in _SHOWN_HNSW if k in params})
    ef = stored.get("embedding_function", vector.get("embedding_function"))
    return {"hnsw": hnsw, "spann": None, "embedding_function": ef}


class ChromaPackageReader:
    """A Chroma directory read through the chromadb package (Chroma's own code)."""

    def __init__(self, path: Path) -> None:
        import chromadb
        from chromadb.config import Settings

        self.path = path
        self.chromadb = chromadb
        self.settings = Settings(
            anonymized_telemetry=False, is_persistent=True, persist_directory=str(path)
        )
        conn = _open_readonly(path)
        try:
            self._tenant_names = _tenants(conn)
        finally:
            conn.close()
        self._clients: dict[tuple[str, str], Any] = {}

    def describe(self) -> str:
        return f"Chroma directory {self.path} (through chromadb {self.chromadb.__version__})"

    def _client(self, tenant: str, database: str) -> Any:
        key = (tenant, database)
        if key not in self._clients:
            self._clients[key] = self.chromadb.PersistentClient(
                path=str(self.path), settings=self.settings, tenant=tenant, database=database
            )
        return self._clients[key]

    def collections(self) -> list[CollectionSpec]:
        admin = self.chromadb.AdminClient(self.settings)
        specs = []
        for tenant in self._tenant_names:
            for db in sorted(admin.list_databases(tenant=tenant), key=lambda d: d["name"]):
                client = self._client(tenant, db["name"])
                for col in sorted(client.list_collections(), key=lambda c: c.name):
                    model = col._model
                    schema = getattr(model, "serialized_schema", None)
                    specs.append(
                        CollectionSpec(
                            tenant=tenant,
                            database=db["name"],
                            name=col.name,
                            metadata=dict(col.metadata) if col.metadata else None,
                            configuration=dict(col.configuration_json or {}),
                            schema=dict(schema) if isinstance(schema, dict) else None,
                            dimension=model.dimension,
                            count=col.count(),
                            ref=col,
                        )
                    )
        return specs

    def batches(self, spec: CollectionSpec, size: int) -> Iterator[Batch]:
        col = spec.ref
        offset = 0
        while True:
            found = col.get(
                include=["embeddings", "documents", "uris", "metadatas"], limit=size, offset=offset
            )
            ids = list(found["ids"])
            if not ids:
                return
            vectors = np.asarray(found["embeddings"], dtype=np.float32).reshape(
                len(ids), spec.dimension or -1
            )
            yield Batch(
                ids,
                vectors,
                list(found["documents"]) if found.get("documents") is not None else None,
                list(found["uris"]) if found.get("uris") is not None else None,
                [dict(m) if m else None for m in found["metadatas"]]
                if found.get("metadatas") is not None
                else None,
            )
            offset += len(ids)
            if len(ids) < size:
                return

    def close(self) -> None:
        self._clients.clear()
