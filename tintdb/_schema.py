"""A collection's schema and configuration, as JSON: checks, precedence, and the wire form.

Chroma 1.5 describes a collection twice: a *configuration* (``hnsw``/``spann`` settings
and the embedding function) and a *schema* (which indexes exist, per value type and per
metadata key). Legacy ``hnsw:*`` collection metadata is a third spelling of the
configuration. This module turns what a caller gives into what a collection stores,
and what it stores into the JSON both official clients parse. Everything here is a
pure function of JSON-shaped dicts, so every backend (SQLite today) shares it.

Stored, a collection's configuration is ``{"hnsw": {...every HNSW parameter}, "spann":
None, "embedding_function": descriptor | None}`` plus ``"schema"`` when the caller
declared a schema that differs from the default one. The HNSW parameters stay the one
source of truth for the vector index: the schema's vector index entries are rebuilt
from them whenever a schema is shown.

Over 500 lines because configuration and schema are one stored value seen two ways:
creating, updating, parsing and showing it all apply the same parameter rules and
defaults (the HNSW fields, the default schema), and Chroma's precedence between
configuration, schema and legacy metadata crosses every section. What would split off
cleanly: the shown form and the filter checks (``collection_schema``,
``metadata_value_types``, ``check_filters``), importing the rules from here.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from ._validation import HNSW_METADATA_KEYS, SPACES
from .config import HNSW_DEFAULTS
from .errors import InvalidArgumentError

__all__ = [
    "DOCUMENT_KEY",
    "EMBEDDING_KEY",
    "INDEX_NAMES",
    "VALUE_TYPES",
    "apply_update",
    "check_filters",
    "check_update",
    "collection_schema",
    "create_request",
    "declares_indexes",
    "metadata_value_types",
    "parse_schema",
    "resolve_create",
]

DOCUMENT_KEY = "#document"
EMBEDDING_KEY = "#embedding"

# Value types (Chroma's JSON names) and the indexes each one may carry.
VALUE_TYPES: dict[str, tuple[str, ...]] = {
    "string": ("fts_index", "string_inverted_index"),
    "float_list": ("vector_index",),
    "sparse_vector": ("sparse_vector_index",),
    "int": ("int_inverted_index",),
    "float": ("float_inverted_index",),
    "bool": ("bool_inverted_index",),
}
INDEX_NAMES = frozenset(name for names in VALUE_TYPES.values() for name in names)
# The inverted index a metadata filter on a value of each type needs, and how an error
# names the type.
_FILTER_INDEX = {
    "string": ("string_inverted_index", "Str"),
    "int": ("int_inverted_index", "Int"),
    "float": ("float_inverted_index", "Float"),
    "bool": ("bool_inverted_index", "Bool"),
}

# The schema's spelling of the HNSW parameters, in the order Chroma's server writes them.
HNSW_FIELDS = (
    "ef_construction",
    "max_neighbors",
    "ef_search",
    "num_threads",
    "batch_size",
    "sync_threshold",
    "resize_factor",
)
_CREATE_HNSW = ("space", *HNSW_FIELDS)
# What modify() may change: search-time and ingest settings. The graph's shape
# (space, ef_construction, max_neighbors) is fixed once the collection exists.
UPDATABLE_HNSW = ("ef_search", "num_threads", "batch_size", "sync_threshold", "resize_factor")
FIXED_HNSW = ("space", "ef_construction", "max_neighbors")
# SPANN (Chroma's distributed index) parameters. A local collection always gets an HNSW
# index: of a SPANN request only the space carries over, as on Chroma's single node.
_SPANN_CREATE = (
    "search_nprobe",
    "write_nprobe",
    "space",
    "ef_construction",
    "ef_search",
    "max_neighbors",
    "reassign_neighbor_count",
    "split_threshold",
    "merge_threshold",
)
_SPANN_SCHEMA_INT = (
    "search_nprobe",
    "write_nprobe",
    "ef_construction",
    "ef_search",
    "max_neighbors",
    "reassign_neighbor_count",
    "split_threshold",
    "merge_threshold",
    "nreplica_count",
    "num_samples_kmeans",
    "num_centers_to_merge_to",
)
_SPANN_SCHEMA_FLOAT = (
    "search_rng_factor",
    "search_rng_epsilon",
    "write_rng_factor",
    "write_rng_epsilon",
    "initial_lambda",
    "center_drift_threshold",
)
_VECTOR_CONFIG = ("space", "embedding_function", "source_key", "hnsw", "spann")
_SPARSE_CONFIG = ("embedding_function", "source_key", "bm25")
_CONFIG_SECTIONS = ("hnsw", "spann", "embedding_function")


def _fail(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(message)


def _cpu_count() -> int:
    return os.cpu_count() or 1


# ---------------------------------------------------------------- parameter checks


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _check_hnsw_param(field: str, value: Any, where: str) -> None:
    """tintdb's rules for an HNSW parameter (the same as for ``hnsw:*`` metadata)."""
    if field == "space":
        if value not in SPACES:
            raise _fail(
                f"Unknown distance space {value!r} in {where}; use one of {', '.join(SPACES)}"
            )
        return
    if field == "resize_factor":
        if not (_is_number(value) and value > 0):
            raise _fail(f"{where}.{field} must be a positive number, got {value!r}")
        return
    # num_threads 0 means "all cores" (the default); hnswlib cannot build a graph of one
    # link per node (Chroma's answers then come back short).
    least = {"num_threads": 0, "max_neighbors": 2}.get(field, 1)
    if not (_is_int(value) and value >= least):
        what = {0: "a non-negative int", 1: "a positive int"}.get(
            least, f"an int of at least {least}"
        )
        raise _fail(f"{where}.{field} must be {what}, got {value!r}")


def _check_hnsw(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any] | None:
    """An ``hnsw`` section: None, or a dict of known parameters; None values are dropped."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _fail(f"{where} must be a dict of HNSW parameters, got {type(value).__name__}")
    out: dict[str, Any] = {}
    for field, item in value.items():
        if field not in allowed:
            raise _fail(f"Unknown HNSW parameter {field!r} in {where}; known: {', '.join(allowed)}")
        if item is None:
            continue
        _check_hnsw_param(field, item, where)
        out[field] = item
    return out


def _check_spann(
    value: Any, where: str, ints: tuple[str, ...], floats: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """A ``spann`` section: checked as Chroma checks it (non-negative numbers), then only
    its space is used."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _fail(f"{where} must be a dict of SPANN parameters, got {type(value).__name__}")
    out: dict[str, Any] = {}
    for field, item in value.items():
        if item is None:
            continue
        if field == "space":
            _check_hnsw_param("space", item, where)
        elif field in ints:
            if not (_is_int(item) and item >= 0):
                raise _fail(f"{where}.{field} must be a non-negative int, got {item!r}")
        elif field in floats:
            if not _is_number(item):
                raise _fail(f"{where}.{field} must be a number, got {item!r}")
        else:
            known = ", ".join(f for f in (*ints, *floats) if f != "space")
            raise _fail(f"Unknown SPANN parameter {field!r} in {where}; known: space, {known}")
        out[field] = item
    return out


def _check_ef_descriptor(value: Any, where: str) -> dict[str, Any] | None:
    """An embedding function as stored: ``{"type": "known", "name", "config"}``,
    ``{"type": "legacy"}`` or ``{"type": "unknown"}``."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
        raise _fail(
            f"{where} must describe an embedding function as "
            '{"type": "known", "name": ..., "config": {...}} or {"type": "legacy"}, '
            f"got {value!r}"
        )
    kind = value["type"]
    if kind == "known":
        if not isinstance(value.get("name"), str) or not isinstance(
            value.get("config", {}), Mapping
        ):
            raise _fail(
                f"{where} of type 'known' needs a str name and a dict config, got {value!r}"
            )
        return {"type": "known", "name": value["name"], "config": dict(value.get("config") or {})}
    if kind in ("legacy", "unknown"):
        return {"type": kind}
    raise _fail(f"{where}: unknown embedding function type {kind!r}; use 'known' or 'legacy'")


def _is_default_hnsw(field: str, value: Any) -> bool:
    if field == "num_threads":
        return value in (0, _cpu_count())
    return bool(value == HNSW_DEFAULTS[field])


def _is_default_ef(ef: Mapping[str, Any] | None) -> bool:
    return ef is None or (ef.get("type") == "known" and ef.get("name") == "default")


# ---------------------------------------------------------------- configuration (create)


def create_request(
    configuration: Any, metadata: Mapping[str, Any] | None, ef_space: str | None
) -> dict[str, Any]:
    """What a client sends for ``create_collection(configuration=...)``, as Chroma's does.

    The sections are checked; when the collection has an embedding function that names
    a default space (``ef_space``), that space fills an ``hnsw``/``spann`` section that
    lacks one, or becomes the whole ``hnsw`` section when neither the configuration nor
    ``hnsw:space`` metadata says anything about the index. ``embedding_function`` is left
    to the caller.
    """
    if configuration is None:
        configuration = {}
    if not isinstance(configuration, Mapping):
        raise _fail(f"configuration must be a dict, got {type(configuration).__name__}")
    unknown = [k for k in configuration if k not in _CONFIG_SECTIONS]
    if unknown:
        raise _fail(
            f"Unknown configuration section {unknown[0]!r}; known: {', '.join(_CONFIG_SECTIONS)}"
        )
    hnsw = _check_hnsw(configuration.get("hnsw"), "configuration['hnsw']", _CREATE_HNSW)
    spann = _check_spann(configuration.get("spann"), "configuration['spann']", _SPANN_CREATE)
    if hnsw is not None and spann is not None:
        raise _fail(
            "configuration has both 'hnsw' and 'spann'; give one of them (a local "
            "collection's index is HNSW either way)"
        )
    if ef_space is not None:
        if hnsw is None and spann is None and (metadata or {}).get("hnsw:space") is None:
            hnsw = {"space": ef_space}
        elif hnsw is not None:
            hnsw.setdefault("space", ef_space)
        elif spann is not None:
            spann.setdefault("space", ef_space)
    return {"hnsw": hnsw, "spann": spann, "embedding_function": None}


def resolve_create(
    metadata: Mapping[str, Any] | None, request: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The configuration a new collection stores, from its metadata and what was sent.

    Precedence, as chromadb 1.5.9 resolves it:

    * ``configuration`` wins over ``hnsw:*`` metadata: once its ``hnsw`` section sets any
      parameter to a non-default value, or any ``spann`` section is given, the metadata
      is not read at all; otherwise ``hnsw:space`` applies, and the other ``hnsw:*`` keys
      fill the parameters the configuration left out;
    * a ``spann`` section gives an HNSW index in its space, with HNSW's defaults;
    * a schema that differs from the default one decides the vector index and, when it
      names one, the embedding function; a configuration (or metadata) that chooses
      otherwise is refused (Chroma refuses any choice at all next to such a schema).
    """
    request = dict(request or {})
    schema_in = request.pop("schema", None)
    unknown = [k for k in request if k not in _CONFIG_SECTIONS]
    if unknown:
        raise _fail(
            f"Unknown configuration section {unknown[0]!r}; known: {', '.join(_CONFIG_SECTIONS)}"
        )
    given = _check_hnsw(request.get("hnsw"), "configuration['hnsw']", _CREATE_HNSW) or {}
    spann = _check_spann(request.get("spann"), "configuration['spann']", _SPANN_CREATE)
    if request.get("hnsw") is not None and spann is not None:
        raise _fail(
            "configuration has both 'hnsw' and 'spann'; give one of them (a local "
            "collection's index is HNSW either way)"
        )
    ef = _check_ef_descriptor(
        request.get("embedding_function"), "configuration['embedding_function']"
    )
    if ef is not None and ef["type"] == "unknown":
        ef = None

    hnsw = dict(HNSW_DEFAULTS)
    hnsw.update(given)
    if spann is not None and spann.get("space") is not None:
        hnsw["space"] = spann["space"]
    chosen = spann is not None or any(not _is_default_hnsw(k, v) for k, v in given.items())
    if not chosen:
        for key, value in (metadata or {}).items():
            if key in HNSW_METADATA_KEYS:
                field = HNSW_METADATA_KEYS[key][0]
                if field == "space" or field not in given:
                    hnsw[field] = value
    out: dict[str, Any] = {"hnsw": hnsw, "spann": None, "embedding_function": ef}
    if schema_in is None:
        return out
    raw, merged = parse_schema(schema_in)
    if _is_default_schema(raw):
        if any(key not in (DOCUMENT_KEY, EMBEDDING_KEY) for key in raw["keys"]):
            # Keys that only list default indexes: kept so that they show from the
            # start, with the vector index of the configuration.
            defaults = merged["defaults"]["float_list"]["vector_index"]
            vector = {"space": hnsw["space"], "hnsw": {f: hnsw[f] for f in HNSW_FIELDS}}
            defaults["config"] = _vector_out({**vector, "embedding_function": ef})
            out["schema"] = merged
        return out
    vector = merged["keys"][EMBEDDING_KEY]["float_list"]["vector_index"]["config"]
    from_schema = dict(HNSW_DEFAULTS)
    from_schema["space"] = vector.get("space") or "l2"
    from_schema.update(vector.get("hnsw") or {})
    if from_schema["num_threads"] == _cpu_count():  # how a schema shows "all cores" (0)
        from_schema["num_threads"] = 0
    schema_ef = vector.get("embedding_function")
    # What the configuration (or metadata) chose must agree with the schema. Chroma
    # refuses any such choice next to a schema; agreeing ones are accepted here, so
    # that a collection's own configuration and schema, copied together, make it again.
    clashes = [
        f"{field} ({value!r} against the schema's {from_schema[field]!r})"
        for field, value in hnsw.items()
        if value != from_schema[field]
        and (value != "l2" if field == "space" else not _is_default_hnsw(field, value))
    ]
    if not _is_default_ef(ef) and schema_ef is not None and ef != schema_ef:
        clashes.append(f"embedding_function ({ef!r} against the schema's {schema_ef!r})")
    if clashes:
        raise _fail(
            "The schema and the configuration (or hnsw:* metadata) set the vector index "
            f"differently: {'; '.join(clashes)}. Put the vector index settings in the "
            "schema, with Schema().create_index(VectorIndexConfig(...)), and leave "
            "configuration out"
        )
    out["hnsw"] = from_schema
    if schema_ef is not None:
        out["embedding_function"] = schema_ef
    out["schema"] = merged
    return out


# ---------------------------------------------------------------- configuration (modify)


def check_update(update: Any) -> dict[str, Any]:
    """Check the shape of ``modify(configuration=...)``; returns a copy without None
    sections. Whether a fixed parameter changes is for ``apply_update`` to say."""
    if not isinstance(update, Mapping):
        raise _fail(f"configuration must be a dict, got {type(update).__name__}")
    unknown = [k for k in update if k not in _CONFIG_SECTIONS]
    if unknown:
        raise _fail(
            f"Unknown configuration section {unknown[0]!r}; known: {', '.join(_CONFIG_SECTIONS)}"
        )
    out: dict[str, Any] = {}
    hnsw = _check_hnsw(update.get("hnsw"), "configuration['hnsw']", _CREATE_HNSW)
    if hnsw is not None:
        out["hnsw"] = hnsw
    spann = _check_spann(update.get("spann"), "configuration['spann']", _SPANN_CREATE)
    if hnsw is not None and spann is not None:
        raise _fail("configuration has both 'hnsw' and 'spann'; give one of them")
    if spann is not None:
        raise _fail(
            "This collection's vector index is HNSW (a SPANN configuration becomes HNSW "
            "locally), so its spann settings cannot be changed; use "
            "configuration={'hnsw': {'ef_search': ...}}"
        )
    ef = update.get("embedding_function")
    if ef is not None:
        out["embedding_function"] = _check_ef_descriptor(ef, "configuration['embedding_function']")
    return out


def apply_update(config: Mapping[str, Any], update: Any) -> dict[str, Any]:
    """The configuration after ``modify(configuration=update)``.

    ef_search, num_threads, batch_size, sync_threshold and resize_factor change; space,
    ef_construction and max_neighbors shape the graph and are fixed (given their current
    value, as when a collection's own configuration is sent back, they are accepted).
    """
    update = check_update(update)
    new = copy.deepcopy(dict(config))
    current = new.get("hnsw") or dict(HNSW_DEFAULTS)
    for field, value in (update.get("hnsw") or {}).items():
        if field in FIXED_HNSW:
            if value != current.get(field):
                raise _fail(
                    f"hnsw {field} is fixed when a collection is created (it is "
                    f"{current.get(field)!r}); create a new collection to change it"
                )
            continue
        current[field] = value
    new["hnsw"] = current
    schema = new.get("schema")
    if schema is not None and update.get("hnsw"):
        defaults = schema["defaults"].get("float_list", {}).get("vector_index")
        if defaults is not None:
            hnsw = defaults["config"].setdefault("hnsw", {})
            for field in UPDATABLE_HNSW:
                if field in update["hnsw"]:
                    hnsw[field] = update["hnsw"][field]
    if update.get("embedding_function") is not None:
        new["embedding_function"] = update["embedding_function"]
    return new


# ---------------------------------------------------------------- schema: parse and check


def _index_spec(spec: Any, where: str, index: str) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise _fail(f"{where} must be {{'enabled': bool, 'config': {{...}}}}, got {spec!r}")
    extra = [k for k in spec if k not in ("enabled", "config")]
    if extra:
        raise _fail(f"{where} has unknown field {extra[0]!r}; an index has 'enabled' and 'config'")
    if not isinstance(spec.get("enabled"), bool):
        raise _fail(f"{where}.enabled must be true or false, got {spec.get('enabled')!r}")
    config = spec.get("config")
    if not isinstance(config, Mapping):
        raise _fail(f"{where}.config must be a dict, got {config!r}")
    if index == "vector_index":
        config = _vector_config(config, f"{where}.config")
    elif index == "sparse_vector_index":
        config = _sparse_config(config, f"{where}.config")
    elif config:
        raise _fail(f"{where}.config takes no settings, got {dict(config)!r}")
    return {"enabled": spec["enabled"], "config": dict(config)}


def _source_key(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _fail(f"{where}.source_key must be a str, got {value!r}")
    if value.startswith("#") and value != DOCUMENT_KEY:
        raise _fail(
            f"{where}.source_key {value!r}: the only source key starting with '#' is '#document'"
        )
    return value


def _vector_config(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    extra = [k for k in config if k not in _VECTOR_CONFIG]
    if extra:
        raise _fail(
            f"Unknown vector index setting {extra[0]!r} in {where}; "
            f"known: {', '.join(_VECTOR_CONFIG)}"
        )
    out: dict[str, Any] = {}
    if config.get("space") is not None:
        _check_hnsw_param("space", config["space"], where)
        out["space"] = config["space"]
    ef = _check_ef_descriptor(config.get("embedding_function"), f"{where}.embedding_function")
    if ef is not None and ef["type"] != "unknown":
        out["embedding_function"] = ef
    if config.get("source_key") is not None:
        out["source_key"] = _source_key(config["source_key"], where)
    hnsw = _check_hnsw(config.get("hnsw"), f"{where}.hnsw", HNSW_FIELDS)
    spann = _check_spann(
        config.get("spann"), f"{where}.spann", _SPANN_SCHEMA_INT, _SPANN_SCHEMA_FLOAT
    )
    if hnsw is not None:
        out["hnsw"] = hnsw
    if spann is not None:
        out["spann"] = spann
    return out


def _sparse_config(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    extra = [k for k in config if k not in _SPARSE_CONFIG]
    if extra:
        raise _fail(
            f"Unknown sparse vector index setting {extra[0]!r} in {where}; "
            f"known: {', '.join(_SPARSE_CONFIG)}"
        )
    out: dict[str, Any] = {}
    if "embedding_function" in config:
        ef = _check_ef_descriptor(config["embedding_function"], f"{where}.embedding_function")
        if ef is not None:
            out["embedding_function"] = ef
    if config.get("source_key") is not None:
        out["source_key"] = _source_key(config["source_key"], where)
    if config.get("bm25") is not None:
        if not isinstance(config["bm25"], bool):
            raise _fail(f"{where}.bm25 must be true or false, got {config['bm25']!r}")
        out["bm25"] = config["bm25"]
    return out


def _value_types(entry: Any, where: str) -> dict[str, dict[str, Any]]:
    """``{"string": {"fts_index": {...}}, ...}`` for defaults or one key."""
    if not isinstance(entry, Mapping):
        raise _fail(f"{where} must be a dict of value types, got {entry!r}")
    out: dict[str, dict[str, Any]] = {}
    for value_type, indexes in entry.items():
        if value_type not in VALUE_TYPES:
            raise _fail(
                f"Unknown value type {value_type!r} in {where}; known: {', '.join(VALUE_TYPES)}"
            )
        if indexes is None:
            continue
        if not isinstance(indexes, Mapping):
            raise _fail(f"{where}.{value_type} must be a dict of indexes, got {indexes!r}")
        checked: dict[str, Any] = {}
        for index, spec in indexes.items():
            if index not in VALUE_TYPES[value_type]:
                raise _fail(
                    f"{where}.{value_type} cannot hold a {index!r}; a {value_type} value has "
                    f"{', '.join(VALUE_TYPES[value_type])}"
                )
            if spec is not None:
                checked[index] = _index_spec(spec, f"{where}.{value_type}.{index}", index)
        out[value_type] = checked
    return out


def _enabled(entry: Mapping[str, Any], value_type: str, index: str) -> bool | None:
    spec = entry.get(value_type, {}).get(index)
    return None if spec is None else bool(spec["enabled"])


def _check_rules(defaults: Mapping[str, Any], keys: Mapping[str, Mapping[str, Any]]) -> None:
    """Where each index may be enabled (Chroma's rules), plus what tintdb cannot honour."""
    if _enabled(defaults, "string", "fts_index"):
        raise _fail(
            "schema: full-text search cannot be enabled for every key; "
            "it exists only on '#document'"
        )
    if _enabled(defaults, "float_list", "vector_index"):
        raise _fail(
            "schema: the vector index cannot be enabled for every key; "
            "it exists only on '#embedding'"
        )
    if _enabled(defaults, "sparse_vector", "sparse_vector_index"):
        raise _fail(
            "schema: a sparse vector index cannot be enabled by default; enable it on one key "
            "with create_index(SparseVectorIndexConfig(), key=...)"
        )
    sparse_keys = []
    for key, entry in keys.items():
        if key.startswith("#") and key not in (DOCUMENT_KEY, EMBEDDING_KEY):
            raise _fail(f"schema: key {key!r} cannot begin with '#'; such keys are reserved")
        if key == DOCUMENT_KEY:
            if set(entry) - {"string"}:
                raise _fail("schema: '#document' holds only the string value type")
            if _enabled(entry, "string", "string_inverted_index"):
                raise _fail(
                    "schema: '#document' cannot have a string inverted index; use its fts_index"
                )
            continue
        if key == EMBEDDING_KEY:
            if set(entry) - {"float_list"}:
                raise _fail("schema: '#embedding' holds only the float_list value type")
            spec = entry.get("float_list", {}).get("vector_index")
            if spec is not None:
                if not spec["enabled"]:
                    raise _fail("schema: the vector index on '#embedding' cannot be disabled")
                source = spec["config"].get("source_key")
                if source is not None and source != DOCUMENT_KEY:
                    raise _fail(
                        "schema: the vector index on '#embedding' can only source from '#document'"
                    )
            continue
        if _enabled(entry, "string", "fts_index"):
            raise _fail(
                f"schema: full-text search cannot be enabled on {key!r}, only on '#document'"
            )
        if _enabled(entry, "float_list", "vector_index"):
            raise _fail(
                f"schema: a vector index cannot be enabled on {key!r}, only on '#embedding'"
            )
        spec = entry.get("sparse_vector", {}).get("sparse_vector_index")
        if spec is not None and spec["enabled"]:
            sparse_keys.append(key)
    if len(sparse_keys) > 1:
        raise _fail(
            "schema: at most one sparse vector index per collection; enabled on "
            f"{sparse_keys[0]!r} and {sparse_keys[1]!r}"
        )


def parse_schema(data: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check a schema as the clients send it (``Schema.serialize_to_json()``).

    Returns it as given (checked, None entries dropped) and merged over the default
    schema: each index of ``defaults`` and of '#document'/'#embedding' replaces the
    default one; other keys hold exactly what was declared.
    """
    if not isinstance(data, Mapping):
        raise _fail(
            f"schema must be a dict (Schema().serialize_to_json()), got {type(data).__name__}"
        )
    extra = [k for k in data if k not in ("defaults", "keys", "cmek")]
    if extra:
        raise _fail(f"schema has unknown field {extra[0]!r}; a schema has 'defaults' and 'keys'")
    if not isinstance(data.get("defaults"), Mapping) or not isinstance(data.get("keys"), Mapping):
        raise _fail("schema needs 'defaults' and 'keys', each a dict")
    if data.get("cmek") is not None:
        raise _fail(
            "schema: customer-managed encryption keys (cmek) are not supported: tintdb "
            "stores collections unencrypted on your own disk; leave cmek out"
        )
    defaults = _value_types(data["defaults"], "schema.defaults")
    keys: dict[str, dict[str, Any]] = {}
    for key, entry in data["keys"].items():
        if not isinstance(key, str):
            raise _fail(f"schema keys must be str, got {key!r}")
        keys[key] = _value_types(entry, f"schema.keys[{key!r}]")
    _check_rules(defaults, keys)
    raw = {"defaults": defaults, "keys": keys}

    merged = _default_skeleton()
    for value_type, indexes in defaults.items():
        merged["defaults"].setdefault(value_type, {}).update(copy.deepcopy(indexes))
    for key, entry in keys.items():
        if key in (DOCUMENT_KEY, EMBEDDING_KEY):
            for value_type, indexes in entry.items():
                merged["keys"][key].setdefault(value_type, {}).update(copy.deepcopy(indexes))
        else:
            merged["keys"][key] = copy.deepcopy(entry)
    sparse = merged["defaults"]["sparse_vector"]["sparse_vector_index"]
    sparse["config"] = {**copy.deepcopy(_DEFAULT_SPARSE), **sparse["config"]}
    merged["defaults"]["float_list"]["vector_index"]["config"] = _vector_out(
        merged["defaults"]["float_list"]["vector_index"]["config"]
    )
    merged["keys"][EMBEDDING_KEY]["float_list"]["vector_index"]["config"] = _vector_out(
        merged["keys"][EMBEDDING_KEY]["float_list"]["vector_index"]["config"]
    )
    return raw, merged


def declares_indexes(data: Any) -> bool:
    """Whether a schema sets indexes beyond the default ones (disabled indexes, FTS off,
    a sparse vector index...): what no configuration can say. Its vector index, and keys
    listing only default indexes (a shown schema's discovered keys), do not count."""
    raw, _ = parse_schema(data)
    raw["defaults"].pop("float_list", None)
    raw["keys"].get(EMBEDDING_KEY, {}).pop("float_list", None)
    return not _is_default_schema(raw)


def _vector_out(config: Mapping[str, Any]) -> dict[str, Any]:
    """A vector index config as kept: a space, the HNSW parameters filled in (a SPANN
    request becomes HNSW's defaults), the embedding function and source key if any."""
    out: dict[str, Any] = {"space": config.get("space") or HNSW_DEFAULTS["space"]}
    if config.get("embedding_function") is not None:
        out["embedding_function"] = config["embedding_function"]
    if config.get("source_key") is not None:
        out["source_key"] = config["source_key"]
    hnsw = {field: HNSW_DEFAULTS[field] for field in HNSW_FIELDS}
    hnsw.update(config.get("hnsw") or {})
    out["hnsw"] = hnsw
    return out


def _is_default_vector(spec: Mapping[str, Any] | None, *, embedding_key: bool) -> bool:
    if spec is None:
        return True
    if spec["enabled"] != embedding_key:
        return False
    config = spec["config"]
    if config.get("space", "l2") != "l2" or not _is_default_ef(config.get("embedding_function")):
        return False
    if config.get("source_key") != (DOCUMENT_KEY if embedding_key else None):
        return False
    if any(not _is_default_hnsw(k, v) for k, v in (config.get("hnsw") or {}).items()):
        return False
    return not config.get("spann")


def _is_default_schema(raw: Mapping[str, Any]) -> bool:
    """Whether a checked schema (as given) asks for nothing beyond the default schema."""
    skeleton = _default_skeleton()
    for value_type, indexes in raw["defaults"].items():
        for index, spec in indexes.items():
            if index == "vector_index":
                if not _is_default_vector(spec, embedding_key=False):
                    return False
            elif index == "sparse_vector_index":
                config = spec["config"]
                if (
                    spec["enabled"]
                    or config.get("bm25")
                    or set(config) - {"bm25", "embedding_function"}
                ):
                    return False
                if config.get("embedding_function", _UNKNOWN_EF) != _UNKNOWN_EF:
                    return False
            elif spec != skeleton["defaults"][value_type][index]:
                return False
    for key, entry in raw["keys"].items():
        if key not in (DOCUMENT_KEY, EMBEDDING_KEY):
            # A key holding exactly the default indexes of its value types (as a shown
            # schema lists the keys records use) asks for nothing either.
            if any(indexes != skeleton["defaults"][vt] for vt, indexes in entry.items()):
                return False
            continue
        for value_type, indexes in entry.items():
            for index, spec in indexes.items():
                if index == "vector_index":
                    if not _is_default_vector(spec, embedding_key=True):
                        return False
                elif spec != skeleton["keys"][key][value_type][index]:
                    return False
    return True


_UNKNOWN_EF = {"type": "unknown"}
_DEFAULT_SPARSE = {"embedding_function": _UNKNOWN_EF, "bm25": False}


def _default_skeleton() -> dict[str, Any]:
    """The default schema; its vector index configs are empty until filled."""

    def index(enabled: bool, config: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"enabled": enabled, "config": config or {}}

    return {
        "defaults": {
            "string": {"fts_index": index(False), "string_inverted_index": index(True)},
            "float_list": {"vector_index": index(False)},
            "sparse_vector": {"sparse_vector_index": index(False, copy.deepcopy(_DEFAULT_SPARSE))},
            "int": {"int_inverted_index": index(True)},
            "float": {"float_inverted_index": index(True)},
            "bool": {"bool_inverted_index": index(True)},
        },
        "keys": {
            EMBEDDING_KEY: {
                "float_list": {"vector_index": index(True, {"source_key": DOCUMENT_KEY})}
            },
            DOCUMENT_KEY: {
                "string": {"fts_index": index(True), "string_inverted_index": index(False)}
            },
        },
    }


# ---------------------------------------------------------------- schema: the shown form


def _shown_vector(config: Mapping[str, Any]) -> dict[str, Any]:
    """A kept vector index config as the wire shows it (num_threads 0 = this machine's cores)."""
    out = dict(config)
    hnsw = out.get("hnsw")
    if hnsw is not None:
        out["hnsw"] = {field: hnsw.get(field, HNSW_DEFAULTS[field]) for field in HNSW_FIELDS}
        out["hnsw"]["num_threads"] = out["hnsw"]["num_threads"] or _cpu_count()
    return out


def collection_schema(
    config: Mapping[str, Any], discovered: Iterable[tuple[str, str]] = ()
) -> dict[str, Any]:
    """The schema a collection shows (the ``schema`` of Chroma's Collection JSON).

    The declared schema (or the default one), its '#embedding' vector index rebuilt from
    the collection's HNSW parameters and embedding function, and one entry per metadata
    key and value type seen in the collection's records ("discovered" keys), holding the
    default indexes for that type, as Chroma reports them.
    """
    stored = config.get("schema")
    base = stored or _default_skeleton()
    hnsw = dict(HNSW_DEFAULTS)
    hnsw.update(config.get("hnsw") or {})
    vector: dict[str, Any] = {"space": hnsw["space"]}
    ef = config.get("embedding_function")
    if ef is not None:
        vector["embedding_function"] = ef
    vector["hnsw"] = {field: hnsw[field] for field in HNSW_FIELDS}
    # Built from references into ``base``, then copied once (below) so that nothing
    # returned shares state with the stored configuration or with another key.
    defaults = dict(base["defaults"])
    vector_default = defaults["float_list"]["vector_index"]
    defaults["float_list"] = {
        "vector_index": {
            "enabled": vector_default["enabled"],
            "config": _shown_vector(vector_default["config"] if stored else vector),
        }
    }
    keys = dict(base["keys"])
    embedding = keys[EMBEDDING_KEY]["float_list"]["vector_index"]
    keys[EMBEDDING_KEY] = {
        "float_list": {
            "vector_index": {
                "enabled": embedding["enabled"],
                "config": _shown_vector({**vector, "source_key": DOCUMENT_KEY}),
            }
        }
    }
    for key, value_type in discovered:
        if value_type in defaults:
            entry = keys.get(key)
            if entry is None:
                keys[key] = {value_type: defaults[value_type]}
            elif value_type not in entry:
                keys[key] = {**entry, value_type: defaults[value_type]}
    shown = {"defaults": defaults, "keys": keys}
    return dict(orjson.loads(orjson.dumps(shown)))


def metadata_value_types(metadatas: Iterable[Mapping[str, Any] | None]) -> set[tuple[str, str]]:
    """The (key, value type) pairs in some metadata dicts; list values count as their
    elements' type. None values (key deletions in update) count as nothing."""
    seen: set[tuple[str, type]] = set()
    for md in metadatas:
        if md:
            for key, value in md.items():
                seen.add((key, type(value)))
    out: set[tuple[str, str]] = set()
    lists = set()
    for key, kind in seen:
        name = _TYPE_NAMES.get(kind)
        if name is not None:
            out.add((key, name))
        elif kind is list:
            lists.add(key)
    if lists:
        for md in metadatas:
            if md:
                for key in lists:
                    value = md.get(key)
                    if isinstance(value, list) and value:
                        name = _TYPE_NAMES.get(type(value[0]))
                        if name is not None:
                            out.add((key, name))
    return out


_TYPE_NAMES: dict[type, str] = {str: "string", bool: "bool", int: "int", float: "float"}


# ---------------------------------------------------------------- schema: honoured


def _filter_enabled(schema: Mapping[str, Any], key: str, value_type: str) -> bool:
    index = _FILTER_INDEX[value_type][0]
    spec = schema["keys"].get(key, {}).get(value_type, {}).get(index)
    if spec is None:
        spec = schema["defaults"].get(value_type, {}).get(index)
    return True if spec is None else bool(spec["enabled"])


def _operand_types(operand: Any) -> set[str]:
    values = operand if isinstance(operand, list) else [operand]
    return {_TYPE_NAMES[type(v)] for v in values if type(v) in _TYPE_NAMES}


def _check_where(schema: Mapping[str, Any], where: Mapping[str, Any]) -> None:
    for key, value in where.items():
        if key in ("$and", "$or"):
            for clause in value:
                _check_where(schema, clause)
            continue
        operand = next(iter(value.values())) if isinstance(value, Mapping) else value
        for value_type in sorted(_operand_types(operand)):
            if not _filter_enabled(schema, key, value_type):
                index, shown = _FILTER_INDEX[value_type]
                raise _fail(
                    f"Cannot filter using metadata key {key!r} with type {shown!r}: the "
                    f"collection's schema disables its {index} for that key"
                )


def check_filters(schema: Mapping[str, Any] | None, where: Any, where_document: Any) -> None:
    """Refuse filters that need an index the collection's schema disabled (after the
    filters' own shape was checked)."""
    if not schema:
        return
    if where:
        _check_where(schema, where)
    if where_document:
        spec = schema["keys"].get(DOCUMENT_KEY, {}).get("string", {}).get("fts_index")
        if spec is not None and not spec["enabled"]:
            raise _fail(
                "Cannot filter on documents (where_document): the collection's schema "
                "disables full-text search (FTS) on '#document'"
            )
