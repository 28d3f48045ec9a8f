"""``Schema`` and the index configuration classes, with chromadb's names and JSON.

Users build a schema in Python (``Schema().delete_index(...)``) and pass it to
``create_collection(schema=...)``; the wire carries ``serialize_to_json()``, which is the
same JSON chromadb's classes write, so either client's schema reaches either server.
What the JSON means (defaults, precedence, what may be enabled where) is decided in
``_schema``; these classes only build and read it. They are plain classes, not pydantic
models, so the thin HTTP client needs nothing beyond its own dependencies.

Over 500 lines because it mirrors chromadb's classes one for one (index
configurations, index types, value types, ``Schema``) so that names and JSON match;
each class is small, and they share ``_Config`` and the JSON helpers at the end. What
would split off cleanly: ``Schema`` with its JSON helpers, from the configuration classes.
"""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from ._schema import DOCUMENT_KEY, EMBEDDING_KEY
from ._validation import SPACES
from .errors import InvalidArgumentError

__all__ = [
    "BOOL_INVERTED_INDEX_NAME",
    "BOOL_VALUE_NAME",
    "DOCUMENT_KEY",
    "EMBEDDING_KEY",
    "FLOAT_INVERTED_INDEX_NAME",
    "FLOAT_LIST_VALUE_NAME",
    "FLOAT_VALUE_NAME",
    "FTS_INDEX_NAME",
    "HNSW_INDEX_NAME",
    "INT_INVERTED_INDEX_NAME",
    "INT_VALUE_NAME",
    "SPANN_INDEX_NAME",
    "SPARSE_VECTOR_INDEX_NAME",
    "SPARSE_VECTOR_TYPE_VALUE",
    "SPARSE_VECTOR_VALUE_NAME",
    "STRING_INVERTED_INDEX_NAME",
    "STRING_VALUE_NAME",
    "TYPE_KEY",
    "VECTOR_INDEX_NAME",
    "BoolInvertedIndexConfig",
    "BoolInvertedIndexType",
    "BoolValueType",
    "Cmek",
    "CmekProvider",
    "FloatInvertedIndexConfig",
    "FloatInvertedIndexType",
    "FloatListValueType",
    "FloatValueType",
    "FtsIndexConfig",
    "FtsIndexType",
    "HnswIndexConfig",
    "IndexConfig",
    "IntInvertedIndexConfig",
    "IntInvertedIndexType",
    "IntValueType",
    "Schema",
    "SpannIndexConfig",
    "SparseVectorIndexConfig",
    "SparseVectorIndexType",
    "SparseVectorValueType",
    "StringInvertedIndexConfig",
    "StringInvertedIndexType",
    "StringValueType",
    "ValueTypes",
    "VectorIndexConfig",
    "VectorIndexType",
    "embedding_function_space",
]

STRING_VALUE_NAME = "string"
INT_VALUE_NAME = "int"
BOOL_VALUE_NAME = "bool"
FLOAT_VALUE_NAME = "float"
FLOAT_LIST_VALUE_NAME = "float_list"
SPARSE_VECTOR_VALUE_NAME = "sparse_vector"
FTS_INDEX_NAME = "fts_index"
VECTOR_INDEX_NAME = "vector_index"
SPARSE_VECTOR_INDEX_NAME = "sparse_vector_index"
STRING_INVERTED_INDEX_NAME = "string_inverted_index"
INT_INVERTED_INDEX_NAME = "int_inverted_index"
FLOAT_INVERTED_INDEX_NAME = "float_inverted_index"
BOOL_INVERTED_INDEX_NAME = "bool_inverted_index"
HNSW_INDEX_NAME = "hnsw_index"
SPANN_INDEX_NAME = "spann_index"
TYPE_KEY = "#type"
SPARSE_VECTOR_TYPE_VALUE = "sparse_vector"

_DEFAULT_EF_DESCRIPTOR = {"type": "known", "name": "default", "config": {}}


def _fail(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(message)


# ---------------------------------------------------------------- embedding functions


def _ef_module() -> Any:
    try:
        from .utils import embedding_functions
    except ImportError:  # the thin HTTP client ships without it
        return None
    return embedding_functions


def _describe(ef: Any) -> dict[str, Any]:
    module = _ef_module()
    if module is not None:
        return dict(module.embedding_function_descriptor(ef))
    is_legacy = getattr(ef, "is_legacy", None)
    if callable(is_legacy) and is_legacy():
        return {"type": "legacy"}
    name, get_config = getattr(ef, "name", None), getattr(ef, "get_config", None)
    if not (callable(name) and callable(get_config)):
        return {"type": "legacy"}
    try:
        return {"type": "known", "name": name(), "config": get_config()}
    except NotImplementedError:
        return {"type": "legacy"}


def embedding_function_space(ef: Any) -> str | None:
    """The distance space a self-describing embedding function asks for, None for none.

    chromadb's default function asks for l2 (its collections are l2), and so does
    tintdb's, whatever the model class says on its own.
    """
    if ef is None:
        return None
    desc = _describe(ef)
    if desc.get("type") != "known":
        return None
    if desc.get("name") == "default":
        return "l2"
    default_space = getattr(ef, "default_space", None)
    space = default_space() if callable(default_space) else None
    return space if space in SPACES else None


def _rebuild_ef(desc: dict[str, Any]) -> Any:
    """The function a stored descriptor names, or None (with a warning) if it cannot be."""
    if desc.get("type") != "known":
        return None
    module = _ef_module()
    if module is None:
        return None
    try:
        return module.embedding_function_from_config(desc["name"], desc.get("config") or {})
    except Exception as exc:  # an unknown or misconfigured function: keep the descriptor
        warnings.warn(
            f"Could not rebuild embedding function {desc.get('name')!r}: {exc}",
            UserWarning,
            stacklevel=3,
        )
        return None


_shared_default: list[Any] = []


def _default_ef() -> Any:
    """One DefaultEmbeddingFunction for every config that does not name a function (as
    chromadb's default argument is one object); None in the thin client."""
    if not _shared_default:
        module = _ef_module()
        _shared_default.append(None if module is None else module.DefaultEmbeddingFunction())
    return _shared_default[0]


# ---------------------------------------------------------------- index configs


def _source_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) and isinstance(getattr(value, "name", None), str):
        value = value.name  # a Key
    if not isinstance(value, str):
        raise _fail(f"source_key must be a str or a Key, got {type(value).__name__}")
    if value.startswith("#") and value != DOCUMENT_KEY:
        raise _fail(
            f"source_key cannot begin with '#' (got {value!r}); '#document' is the only "
            "reserved key a vector can be computed from"
        )
    return value


class _Config:
    """Keyword-only settings with a fixed set of names, compared by value."""

    _fields: ClassVar[tuple[str, ...]] = ()
    # Names chromadb accepts and drops; accepted here too, so its code runs unchanged.
    _dropped: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **kwargs: Any) -> None:
        unknown = [k for k in kwargs if k not in self._fields and k not in self._dropped]
        if unknown:
            raise _fail(
                f"{', '.join(repr(k) for k in unknown)} is not a valid field for "
                f"{type(self).__name__}"
                + (f"; valid fields: {', '.join(self._fields)}" if self._fields else "")
            )
        for name in self._fields:
            setattr(self, name, kwargs.get(name))

    def model_dump(self, exclude_none: bool = False) -> dict[str, Any]:
        """The settings as a dict (pydantic's name, which chromadb's classes have)."""
        out: dict[str, Any] = {}
        for name in self._fields:
            value = getattr(self, name)
            if isinstance(value, _Config):
                value = value.model_dump(exclude_none=exclude_none)
            if value is not None or not exclude_none:
                out[name] = value
        return out

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._fields)

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields)
        return f"{type(self).__name__}({shown})"


class FtsIndexConfig(_Config):
    """Full-text search over documents (only on ``'#document'``); no settings."""


class StringInvertedIndexConfig(_Config):
    """Filtering on string metadata values; no settings."""


class IntInvertedIndexConfig(_Config):
    """Filtering on int metadata values; no settings."""


class FloatInvertedIndexConfig(_Config):
    """Filtering on float metadata values; no settings."""


class BoolInvertedIndexConfig(_Config):
    """Filtering on bool metadata values; no settings."""


def _int_setting(cls: str, name: str, value: Any, minimum: int) -> None:
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or value < minimum
    ):
        raise _fail(f"{cls}.{name} must be an int of at least {minimum}, got {value!r}")


class HnswIndexConfig(_Config):
    """HNSW parameters of a collection's vector index (None = the default)."""

    _fields = (
        "ef_construction",
        "max_neighbors",
        "ef_search",
        "num_threads",
        "batch_size",
        "sync_threshold",
        "resize_factor",
    )
    ef_construction: int | None
    max_neighbors: int | None
    ef_search: int | None
    num_threads: int | None
    batch_size: int | None
    sync_threshold: int | None
    resize_factor: float | None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in self._fields[:-1]:
            _int_setting("HnswIndexConfig", name, getattr(self, name), 0)
        factor = self.resize_factor
        if factor is not None and (
            not isinstance(factor, (int, float)) or isinstance(factor, bool)
        ):
            raise _fail(f"HnswIndexConfig.resize_factor must be a number, got {factor!r}")


class SpannIndexConfig(_Config):
    """SPANN parameters (Chroma's distributed index). A local collection gets an HNSW
    index instead; only the space of a SPANN request carries over."""

    _fields = (
        "search_nprobe",
        "write_nprobe",
        "ef_construction",
        "ef_search",
        "max_neighbors",
        "reassign_neighbor_count",
        "split_threshold",
        "merge_threshold",
    )
    _dropped = (
        "search_rng_factor",
        "search_rng_epsilon",
        "nreplica_count",
        "write_rng_factor",
        "write_rng_epsilon",
        "num_samples_kmeans",
        "initial_lambda",
        "num_centers_to_merge_to",
        "center_drift_threshold",
        "quantize",
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in self._fields:
            _int_setting("SpannIndexConfig", name, getattr(self, name), 0)


def _sub_config(cls: type[_Config], value: Any, what: str) -> Any:
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls(**value)
    raise _fail(f"{what} must be a {cls.__name__} or a dict, got {type(value).__name__}")


class VectorIndexConfig(_Config):
    """The dense vector index: distance space, embedding function, HNSW (or SPANN)
    parameters. Set it with ``Schema().create_index(VectorIndexConfig(...))``."""

    _fields = ("space", "embedding_function", "source_key", "hnsw", "spann")
    space: str | None
    embedding_function: Any  # an embedding function (any callable of chromadb's shape)
    source_key: str | None
    hnsw: HnswIndexConfig | None
    spann: SpannIndexConfig | None

    def __init__(self, **kwargs: Any) -> None:
        unnamed = "embedding_function" not in kwargs
        super().__init__(**kwargs)
        if self.space is not None and self.space not in SPACES:
            raise _fail(
                f"VectorIndexConfig.space must be one of {', '.join(SPACES)}, got {self.space!r}"
            )
        if self.embedding_function is not None and not callable(self.embedding_function):
            raise _fail("VectorIndexConfig.embedding_function must be callable or None")
        self.source_key = _source_key(self.source_key)
        self.hnsw = _sub_config(HnswIndexConfig, self.hnsw, "VectorIndexConfig.hnsw")
        self.spann = _sub_config(SpannIndexConfig, self.spann, "VectorIndexConfig.spann")
        # A function described in JSON that this process cannot rebuild: kept as described.
        self._descriptor: dict[str, Any] | None = None
        if unnamed:
            self.embedding_function = _default_ef()
            if self.embedding_function is None:  # the thin client has no model to build
                self._descriptor = dict(_DEFAULT_EF_DESCRIPTOR)


class SparseVectorIndexConfig(_Config):
    """A sparse vector index on one metadata key (for hybrid search)."""

    _fields = ("embedding_function", "source_key", "bm25")
    _dropped = ("algorithm",)
    embedding_function: Any  # a sparse embedding function, or None
    source_key: str | None
    bm25: bool | None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.embedding_function is not None and not callable(self.embedding_function):
            raise _fail("SparseVectorIndexConfig.embedding_function must be callable or None")
        self.source_key = _source_key(self.source_key)
        if self.bm25 is not None and not isinstance(self.bm25, bool):
            raise _fail(
                f"SparseVectorIndexConfig.bm25 must be True, False or None, got {self.bm25!r}"
            )
        self._descriptor: dict[str, Any] | None = None


IndexConfig = (
    FtsIndexConfig
    | VectorIndexConfig
    | SparseVectorIndexConfig
    | StringInvertedIndexConfig
    | IntInvertedIndexConfig
    | FloatInvertedIndexConfig
    | BoolInvertedIndexConfig
)


# ---------------------------------------------------------------- CMEK


class CmekProvider(str, Enum):
    GCP = "gcp"


_GCP_KEY = re.compile(r"^projects/.+/locations/.+/keyRings/.+/cryptoKeys/.+$")


@dataclass
class Cmek:
    """A customer-managed encryption key, as chromadb names it. Chroma's hosted service
    uses it; tintdb refuses a schema that carries one (it stores data unencrypted)."""

    provider: CmekProvider
    resource: str

    @classmethod
    def gcp(cls, resource: str) -> Cmek:
        return cls(provider=CmekProvider.GCP, resource=resource)

    def validate_pattern(self) -> bool:
        return self.provider == CmekProvider.GCP and _GCP_KEY.match(self.resource) is not None

    def to_dict(self) -> dict[str, Any]:
        return {"gcp": self.resource}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cmek:
        if isinstance(data, dict) and isinstance(data.get("gcp"), str):
            return cls.gcp(data["gcp"])
        raise _fail(f"Unsupported or malformed cmek: {data!r}")


# ---------------------------------------------------------------- index and value types


@dataclass
class FtsIndexType:
    enabled: bool
    config: FtsIndexConfig


@dataclass
class VectorIndexType:
    enabled: bool
    config: VectorIndexConfig


@dataclass
class SparseVectorIndexType:
    enabled: bool
    config: SparseVectorIndexConfig


@dataclass
class StringInvertedIndexType:
    enabled: bool
    config: StringInvertedIndexConfig


@dataclass
class IntInvertedIndexType:
    enabled: bool
    config: IntInvertedIndexConfig


@dataclass
class FloatInvertedIndexType:
    enabled: bool
    config: FloatInvertedIndexConfig


@dataclass
class BoolInvertedIndexType:
    enabled: bool
    config: BoolInvertedIndexConfig


@dataclass
class StringValueType:
    fts_index: FtsIndexType | None = None
    string_inverted_index: StringInvertedIndexType | None = None


@dataclass
class FloatListValueType:
    vector_index: VectorIndexType | None = None


@dataclass
class SparseVectorValueType:
    sparse_vector_index: SparseVectorIndexType | None = None


@dataclass
class IntValueType:
    int_inverted_index: IntInvertedIndexType | None = None


@dataclass
class FloatValueType:
    float_inverted_index: FloatInvertedIndexType | None = None


@dataclass
class BoolValueType:
    bool_inverted_index: BoolInvertedIndexType | None = None


@dataclass
class ValueTypes:
    string: StringValueType | None = None
    float_list: FloatListValueType | None = None
    sparse_vector: SparseVectorValueType | None = None
    int_value: IntValueType | None = None
    float_value: FloatValueType | None = None
    boolean: BoolValueType | None = None


# Each config class: (ValueTypes attribute, value type class, its attribute, index type
# class, JSON value type name, JSON index name).
_PLACES: dict[type[_Config], tuple[str, type, str, type, str, str]] = {
    FtsIndexConfig: ("string", StringValueType, "fts_index", FtsIndexType, "string", "fts_index"),
    StringInvertedIndexConfig: (
        "string",
        StringValueType,
        "string_inverted_index",
        StringInvertedIndexType,
        "string",
        "string_inverted_index",
    ),
    VectorIndexConfig: (
        "float_list",
        FloatListValueType,
        "vector_index",
        VectorIndexType,
        "float_list",
        "vector_index",
    ),
    SparseVectorIndexConfig: (
        "sparse_vector",
        SparseVectorValueType,
        "sparse_vector_index",
        SparseVectorIndexType,
        "sparse_vector",
        "sparse_vector_index",
    ),
    IntInvertedIndexConfig: (
        "int_value",
        IntValueType,
        "int_inverted_index",
        IntInvertedIndexType,
        "int",
        "int_inverted_index",
    ),
    FloatInvertedIndexConfig: (
        "float_value",
        FloatValueType,
        "float_inverted_index",
        FloatInvertedIndexType,
        "float",
        "float_inverted_index",
    ),
    BoolInvertedIndexConfig: (
        "boolean",
        BoolValueType,
        "bool_inverted_index",
        BoolInvertedIndexType,
        "bool",
        "bool_inverted_index",
    ),
}
_BY_JSON = {(p[4], p[5]): cls for cls, p in _PLACES.items()}
_ATTR_OF_JSON = {p[4]: (p[0], p[1]) for p in _PLACES.values()}


def _set(value_types: ValueTypes, config: _Config, enabled: bool) -> None:
    attr, value_cls, index_attr, index_cls, _, _ = _PLACES[type(config)]
    holder = getattr(value_types, attr)
    if holder is None:
        holder = value_cls()
        setattr(value_types, attr, holder)
    setattr(holder, index_attr, index_cls(enabled=enabled, config=config))


def _get(value_types: ValueTypes, config_cls: type[_Config]) -> Any:
    attr, _, index_attr, _, _, _ = _PLACES[config_cls]
    holder = getattr(value_types, attr)
    return None if holder is None else getattr(holder, index_attr)


# ---------------------------------------------------------------- Schema


@dataclass
class Schema:
    """Which indexes a collection keeps: ``defaults`` per value type, overrides per key.

    ``Schema()`` is the default schema: inverted indexes on every string, int, float and
    bool metadata value, full-text search on documents, the vector index on embeddings.
    ``create_index``/``delete_index`` change it and return it, so calls chain.
    """

    defaults: ValueTypes = field(default_factory=ValueTypes)
    keys: dict[str, ValueTypes] = field(default_factory=dict)
    cmek: Cmek | None = None

    def __init__(self) -> None:
        self.defaults = ValueTypes()
        self.keys = {}
        self.cmek = None
        for config, enabled in (
            (FtsIndexConfig(), False),
            (StringInvertedIndexConfig(), True),
            (VectorIndexConfig(), False),
            (SparseVectorIndexConfig(), False),
            (IntInvertedIndexConfig(), True),
            (FloatInvertedIndexConfig(), True),
            (BoolInvertedIndexConfig(), True),
        ):
            _set(self.defaults, config, enabled)
        self.keys[DOCUMENT_KEY] = ValueTypes()
        _set(self.keys[DOCUMENT_KEY], FtsIndexConfig(), True)
        _set(self.keys[DOCUMENT_KEY], StringInvertedIndexConfig(), False)
        self.keys[EMBEDDING_KEY] = ValueTypes()
        _set(self.keys[EMBEDDING_KEY], VectorIndexConfig(source_key=DOCUMENT_KEY), True)

    # -------------------------------------------------------- building

    def create_index(self, config: IndexConfig | None = None, key: Any = None) -> Schema:
        """Enable an index: for every key of its value type (no ``key``) or for one key.

        A ``VectorIndexConfig`` sets the collection's vector index (never per key); a
        ``SparseVectorIndexConfig`` needs a key; ``FtsIndexConfig`` exists only on
        ``'#document'``.
        """
        key = _key_name(key)
        if config is None and key is None:
            raise _fail(
                "create_index needs a config or a key; enabling every index everywhere "
                "is not allowed"
            )
        if key == EMBEDDING_KEY:
            raise _fail(
                "Cannot create index on special key '#embedding': it is managed by the "
                "collection; call create_index(VectorIndexConfig(...)) without a key instead"
            )
        if key == DOCUMENT_KEY and not isinstance(config, FtsIndexConfig):
            raise _fail(
                "Cannot create index on special key '#document' with this config: only "
                "FtsIndexConfig goes there"
            )
        if key is not None and key.startswith("#") and key != DOCUMENT_KEY:
            raise _fail(
                f"key cannot begin with '#' ({key!r}): such keys are reserved for the system"
            )
        if isinstance(config, VectorIndexConfig):
            if key is not None:
                raise _fail(
                    "A vector index cannot be created on a metadata key; to configure the "
                    "collection's, call create_index(VectorIndexConfig(...)) without a key"
                )
            self._set_vector_index(config)
            return self
        if isinstance(config, FtsIndexConfig) and key != DOCUMENT_KEY:
            raise _fail(
                "FTS index can only be enabled on '#document': "
                "create_index(FtsIndexConfig(), key='#document')"
            )
        if isinstance(config, SparseVectorIndexConfig) and key is None:
            raise _fail(
                "A sparse vector index must be created on a key: "
                "create_index(SparseVectorIndexConfig(...), key='...')"
            )
        if config is None:
            raise _fail(
                f"Cannot enable every index type for key {key!r}; name the index config to enable"
            )
        _check_config(config)
        if key is None:
            _set(self.defaults, config, True)
            return self
        if isinstance(config, SparseVectorIndexConfig):
            self._check_one_sparse(key)
            if config.source_key is not None and config.embedding_function is None:
                raise _fail(
                    "A sparse vector index with a source_key also needs an embedding_function "
                    "(there is no default sparse embedding function)"
                )
        _set(self.keys.setdefault(key, ValueTypes()), config, True)
        return self

    def delete_index(self, config: IndexConfig | None = None, key: Any = None) -> Schema:
        """Disable an index: for every key of its value type (no ``key``) or for one key.
        The vector and sparse vector indexes cannot be disabled; FTS only on '#document'."""
        key = _key_name(key)
        if config is None and key is None:
            raise _fail(
                "delete_index needs a config or a key; disabling every index is not allowed"
            )
        if key == EMBEDDING_KEY:
            raise _fail("Cannot delete index on special key '#embedding': it is not supported")
        if key == DOCUMENT_KEY and not isinstance(config, FtsIndexConfig):
            raise _fail(
                "Cannot delete index on special key '#document' with this config: only "
                "FtsIndexConfig goes there"
            )
        if key is not None and key.startswith("#") and key != DOCUMENT_KEY:
            raise _fail(
                f"key cannot begin with '#' ({key!r}): such keys are reserved for the system"
            )
        if isinstance(config, VectorIndexConfig):
            raise _fail("Deleting the vector index is not supported")
        if isinstance(config, SparseVectorIndexConfig):
            raise _fail("Deleting a sparse vector index is not supported")
        if isinstance(config, FtsIndexConfig) and key != DOCUMENT_KEY:
            raise _fail("The FTS index can only be disabled on '#document'")
        if config is None:
            raise _fail(
                f"Cannot disable every index type for key {key!r}; name the index config to disable"
            )
        _check_config(config)
        target = self.defaults if key is None else self.keys.setdefault(key, ValueTypes())
        _set(target, config, False)
        return self

    def set_cmek(self, cmek: Cmek | None) -> Schema:
        self.cmek = cmek
        return self

    def _set_vector_index(self, config: VectorIndexConfig) -> None:
        """The collection's vector index: in defaults (stays disabled) and on '#embedding'
        (stays enabled, still sourced from '#document')."""
        current = _get(self.defaults, VectorIndexConfig)
        _set(self.defaults, config, current.enabled if current else False)
        embedding = self.keys.setdefault(EMBEDDING_KEY, ValueTypes())
        current = _get(embedding, VectorIndexConfig)
        source = current.config.source_key if current else DOCUMENT_KEY
        copied = VectorIndexConfig(
            space=config.space,
            embedding_function=config.embedding_function,
            hnsw=config.hnsw,
            spann=config.spann,
            source_key=source,
        )
        copied._descriptor = config._descriptor
        _set(embedding, copied, current.enabled if current else True)

    def _check_one_sparse(self, key: str) -> None:
        for other, value_types in self.keys.items():
            index = _get(value_types, SparseVectorIndexConfig)
            if other != key and index is not None and index.enabled:
                raise _fail(
                    f"Cannot enable a sparse vector index on {key!r}: {other!r} has one, and a "
                    "collection has at most one"
                )

    # -------------------------------------------------------- JSON

    def serialize_to_json(self) -> dict[str, Any]:
        """The JSON the wire carries (the same as chromadb's ``Schema.serialize_to_json``)."""
        out: dict[str, Any] = {
            "defaults": _value_types_json(self.defaults),
            "keys": {key: _value_types_json(vt) for key, vt in self.keys.items()},
        }
        if self.cmek is not None:
            out["cmek"] = self.cmek.to_dict()
        return out

    @classmethod
    def deserialize_from_json(cls, json_data: dict[str, Any]) -> Schema:
        """A Schema from its JSON; embedding functions are rebuilt where tintdb knows them
        (one it cannot rebuild keeps its description, so it serializes back unchanged)."""
        schema = cls.__new__(cls)
        schema.defaults = _value_types_from_json(json_data.get("defaults") or {})
        schema.keys = {
            key: _value_types_from_json(vt or {})
            for key, vt in (json_data.get("keys") or {}).items()
        }
        cmek = json_data.get("cmek")
        schema.cmek = None if cmek is None else Cmek.from_dict(cmek)
        return schema


def _key_name(key: Any) -> str | None:
    if key is None or isinstance(key, str):
        return key
    name = getattr(key, "name", None)
    if isinstance(name, str):
        return name
    raise _fail(f"key must be a str or a Key, got {type(key).__name__}")


def _check_config(config: Any) -> None:
    if type(config) not in _PLACES:
        raise _fail(f"Not an index config: {config!r}")


def _config_json(config: _Config) -> dict[str, Any]:
    out = config.model_dump(exclude_none=True)
    if isinstance(config, VectorIndexConfig):
        ef = config.embedding_function
        if config._descriptor is not None:
            out["embedding_function"] = copy.deepcopy(config._descriptor)
        elif ef is None:
            out["embedding_function"] = {"type": "legacy"}
        else:
            desc = _describe(ef)
            out["embedding_function"] = desc
            if desc.get("type") == "known" and config.space is None:
                space = embedding_function_space(ef)
                if space is not None:
                    out["space"] = space
    elif isinstance(config, SparseVectorIndexConfig):
        ef = config.embedding_function
        if config._descriptor is not None:
            out["embedding_function"] = copy.deepcopy(config._descriptor)
        elif ef is None:
            out["embedding_function"] = {"type": "unknown"}
        else:
            out["embedding_function"] = _describe(ef)
    return out


def _value_types_json(value_types: ValueTypes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr, _, index_attr, _, vt_name, index_name in _PLACES.values():
        holder = getattr(value_types, attr)
        index = None if holder is None else getattr(holder, index_attr)
        if holder is not None:
            out.setdefault(vt_name, {})
        if index is not None:
            out[vt_name][index_name] = {
                "enabled": index.enabled,
                "config": _config_json(index.config),
            }
    return out


def _config_from_json(config_cls: type[_Config], data: dict[str, Any]) -> _Config:
    """One index config from JSON. A vector index without an embedding function gets the
    default one, as chromadb reads it."""
    data = dict(data or {})
    desc = None
    if config_cls in (VectorIndexConfig, SparseVectorIndexConfig) and "embedding_function" in data:
        desc = data.pop("embedding_function")
        ef = _rebuild_ef(desc) if isinstance(desc, dict) else None
        data["embedding_function"] = ef
        if ef is not None and config_cls is VectorIndexConfig and data.get("space") is None:
            data["space"] = embedding_function_space(ef)
        keep = isinstance(desc, dict) and desc.get("type") == "known" and ef is None
        desc = desc if keep else None
    config = config_cls(**data)
    if isinstance(config, (VectorIndexConfig, SparseVectorIndexConfig)) and desc is not None:
        config._descriptor = desc
    return config


def _value_types_from_json(data: dict[str, Any]) -> ValueTypes:
    value_types = ValueTypes()
    for vt_name, indexes in data.items():
        if vt_name not in _ATTR_OF_JSON or indexes is None:
            continue
        attr, value_cls = _ATTR_OF_JSON[vt_name]
        setattr(value_types, attr, value_cls())
        for index_name, spec in indexes.items():
            config_cls = _BY_JSON.get((vt_name, index_name))
            if config_cls is None or spec is None:
                continue
            config = _config_from_json(config_cls, spec.get("config") or {})
            _set(value_types, config, bool(spec.get("enabled", True)))
    return value_types
