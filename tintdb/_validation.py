"""Argument checks for every public entry point.

Everything here runs before any write begins, so a bad call is refused with a
specific error and the store is untouched. Normalisers accept what chromadb accepts
(a single value or a list, Python lists or numpy arrays) and return one canonical form.

Over 500 lines because every public entry point's checks sit together, so that each
rule is written once and its message reads the same from every call. What would split
off cleanly: the collection and name checks, from the record checks.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._search.sparse import is_sparse, sparse_from_any
from .errors import DuplicateIDError, InvalidArgumentError, InvalidDimensionException

__all__ = [
    "GET_INCLUDE",
    "QUERY_INCLUDE",
    "SPACES",
    "normalize_documents",
    "normalize_embeddings",
    "normalize_ids",
    "normalize_include",
    "normalize_metadatas",
    "normalize_uris",
    "validate_collection_metadata",
    "validate_collection_name",
    "validate_database_name",
    "validate_limit_offset",
    "validate_n_results",
    "validate_record_metadata",
    "validate_tenant_name",
]

SPACES = ("l2", "ip", "cosine")
GET_INCLUDE = ("documents", "embeddings", "metadatas", "uris", "data")
QUERY_INCLUDE = (*GET_INCLUDE, "distances")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Metadata spelling of the hnsw parameters -> configuration spelling and type.
HNSW_METADATA_KEYS: dict[str, tuple[str, type]] = {
    "hnsw:space": ("space", str),
    "hnsw:construction_ef": ("ef_construction", int),
    "hnsw:search_ef": ("ef_search", int),
    "hnsw:M": ("max_neighbors", int),
    "hnsw:num_threads": ("num_threads", int),
    "hnsw:batch_size": ("batch_size", int),
    "hnsw:sync_threshold": ("sync_threshold", int),
    "hnsw:resize_factor": ("resize_factor", float),
}

# How the metadata errors name what is allowed; "Expected metadata value to be" is the
# phrase chromadb's errors share, on which LangChain keys its filter_complex_metadata hint.
_VALUE_KINDS = "a str, int, float, bool, a SparseVector, or a non-empty list of one of those"

_NAME_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")


def _type_name(value: Any) -> str:
    return type(value).__name__


# ---------------------------------------------------------------- collections


def validate_collection_name(name: Any) -> str:
    """Apply the collection naming rules, saying exactly which one failed."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"Collection name must be a str, got {_type_name(name)}")
    if not 3 <= len(name) <= 63:
        raise InvalidArgumentError(
            f"Collection name {name!r} must be 3-63 characters long, it has {len(name)}"
        )
    if not _NAME_CHARS.match(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9._-]", c)})
        raise InvalidArgumentError(
            f"Collection name {name!r} may contain only letters, digits, '.', '_' and '-'; "
            f"found {''.join(bad)!r}"
        )
    if not (name[0].isalnum() and name[-1].isalnum()):
        raise InvalidArgumentError(
            f"Collection name {name!r} must start and end with a letter or a digit"
        )
    if ".." in name:
        raise InvalidArgumentError(f"Collection name {name!r} must not contain '..'")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        pass
    else:
        raise InvalidArgumentError(f"Collection name {name!r} must not be an IPv4 address")
    return name


MAX_ADMIN_NAME = 512


def _shown(name: str) -> str:
    return repr(name) if len(name) <= 40 else repr(name[:40]) + "..."


def validate_tenant_name(name: Any) -> str:
    """Chroma asks only for 3 characters; a tenant is also addressed in URL paths, so
    no '/' and no control characters (NUL included), and at most 512 characters."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"A tenant name must be a str, got {_type_name(name)}")
    if not 3 <= len(name) <= MAX_ADMIN_NAME:
        raise InvalidArgumentError(
            f"Tenant name {_shown(name)} must be 3-{MAX_ADMIN_NAME} characters long, "
            f"it has {len(name)}"
        )
    _check_text(name, "tenant name")
    bad = sorted({c for c in name if c == "/" or ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0})
    if bad:
        raise InvalidArgumentError(
            f"Tenant name {name!r} must not contain '/' or control characters; found {bad!r}"
        )
    return name


def validate_database_name(name: Any) -> str:
    """Chroma's server rule for database names: 3-512 of letters, digits, '.', '_' and
    '-', starting and ending with a letter or digit, no '..', not an IPv4 address."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"A database name must be a str, got {_type_name(name)}")
    if not 3 <= len(name) <= MAX_ADMIN_NAME:
        raise InvalidArgumentError(
            f"Database name {_shown(name)} must be 3-{MAX_ADMIN_NAME} characters long, "
            f"it has {len(name)}"
        )
    if not _NAME_CHARS.match(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9._-]", c)})
        raise InvalidArgumentError(
            f"Database name {name!r} may contain only letters, digits, '.', '_' and '-'; "
            f"found {''.join(bad)!r}"
        )
    if not (name[0].isalnum() and name[-1].isalnum()):
        raise InvalidArgumentError(
            f"Database name {name!r} must start and end with a letter or a digit"
        )
    if ".." in name:
        raise InvalidArgumentError(f"Database name {name!r} must not contain '..'")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise InvalidArgumentError(f"Database name {name!r} must not be an IPv4 address")


def validate_collection_metadata(metadata: Any) -> dict[str, Any] | None:
    """Collection metadata: None or a non-empty dict of metadata values; hnsw keys checked."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            f"Collection metadata must be a dict, got {_type_name(metadata)}"
        )
    if len(metadata) == 0:
        raise InvalidArgumentError(
            "Collection metadata cannot be an empty dict; pass None for no metadata"
        )
    out = _check_metadata_dict(metadata, "collection metadata", allow_none=False)
    for key, value in out.items():
        if key.startswith("hnsw:"):
            _check_hnsw_value(key, value)
    return out


def _check_hnsw_value(key: str, value: Any) -> None:
    if key not in HNSW_METADATA_KEYS:
        known = ", ".join(HNSW_METADATA_KEYS)
        raise InvalidArgumentError(f"Unknown collection parameter {key!r}; known: {known}")
    _, kind = HNSW_METADATA_KEYS[key]
    if key == "hnsw:space":
        if value not in SPACES:
            raise InvalidArgumentError(
                f"Unknown distance space {value!r} for hnsw:space; use one of {', '.join(SPACES)}"
            )
        return
    ok = (
        isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is float
        else isinstance(value, int) and not isinstance(value, bool)
    )
    # num_threads 0 means "all cores" (the default), so it may be sent back as it came.
    # hnswlib cannot build a graph of one link per node.
    least = {"hnsw:num_threads": 0, "hnsw:M": 2}.get(key)
    too_small = value <= 0 if least is None else value < least
    if not ok or too_small:
        if least is None:
            what = f"positive {kind.__name__}"
        else:
            what = {0: "non-negative int", 2: "positive int of at least 2"}[least]
        raise InvalidArgumentError(f"{key} must be a {what}, got {value!r}")


# ---------------------------------------------------------------- records


def _as_list(value: Any, what: str) -> list[Any]:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (str, bytes, Mapping)):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    raise InvalidArgumentError(f"Expected {what} to be a list, got {_type_name(value)}")


def normalize_ids(ids: Any, *, allow_empty: bool = False) -> list[str]:
    """One id or a list of ids -> list of non-empty, distinct str."""
    if ids is None:
        raise InvalidArgumentError("ids are required")
    out = _as_list(ids, "ids")
    for i, value in enumerate(out):
        if not isinstance(value, str):
            raise InvalidArgumentError(
                f"Expected every id to be a str, got {_type_name(value)} at position {i}"
            )
        if value == "":
            raise InvalidArgumentError(
                f"Empty id at position {i}: an id must have at least one character"
            )
        _check_text(value, f"id at position {i}")
    if not out and not allow_empty:
        raise InvalidArgumentError("Expected ids to be a non-empty list")
    if len(set(out)) != len(out):
        dupes = [k for k, n in Counter(out).items() if n > 1]
        shown = ", ".join(dupes[:10]) + (" ..." if len(dupes) > 10 else "")
        raise DuplicateIDError(f"Expected ids to be unique, found {len(dupes)} duplicated: {shown}")
    return out


# Exact types: a bool is an int subclass, so a set of types keeps it out.
_PLAIN_NUMBERS = frozenset({float, int})


def normalize_embeddings(embeddings: Any, n: int | None = None) -> np.ndarray | None:
    """Lists or arrays, one vector or many -> C-contiguous float32 array (n, dim).

    Refuses ragged input, non-numbers, NaN and infinity, naming the offending row.
    """
    if embeddings is None:
        return None
    if isinstance(embeddings, np.ndarray):
        arr = embeddings
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.dtype.kind not in "iuf" or arr.dtype == np.bool_:
            raise InvalidArgumentError(f"Expected numeric embeddings, got dtype {arr.dtype}")
    else:
        rows = _as_list(embeddings, "embeddings")
        if rows and not isinstance(rows[0], (Sequence, np.ndarray)):
            rows = [rows]  # a single vector given as a flat list of numbers
        lengths = set()
        for i, row in enumerate(rows):
            if not isinstance(row, (Sequence, np.ndarray)) or isinstance(row, str):
                raise InvalidArgumentError(
                    f"Expected embedding {i} to be a list of numbers, got {_type_name(row)}"
                )
            lengths.add(len(row))
        if len(lengths) > 1:
            raise InvalidArgumentError(
                f"All embeddings in one call must have the same length, got lengths "
                f"{sorted(lengths)}"
            )
        for i, row in enumerate(rows):
            # Rows of plain floats and ints (what JSON and embedding APIs give) are
            # told apart by a set test run in C; the loop below, which names the
            # offending value, runs only for rows holding anything else.
            if isinstance(row, np.ndarray) or _PLAIN_NUMBERS.issuperset(map(type, row)):
                continue
            for x in row:
                if isinstance(x, bool) or not isinstance(x, (int, float, np.number)):
                    raise InvalidArgumentError(
                        f"Expected embedding {i} to contain only numbers, got {x!r}"
                    )
        try:
            arr = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidArgumentError(f"Embeddings must be lists of numbers: {exc}") from exc
        if arr.ndim == 1:  # an empty list
            arr = arr.reshape(len(rows), 0)
    if arr.ndim != 2:
        raise InvalidArgumentError(
            f"Expected embeddings as a list of vectors, got an array of shape {arr.shape}"
        )
    if arr.shape[0] and arr.shape[1] == 0:
        raise InvalidArgumentError("Embeddings must not be empty vectors")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise InvalidArgumentError(
            f"Embedding {bad} contains NaN or infinity (or a value too large for float32)"
        )
    if n is not None and arr.shape[0] != n:
        raise InvalidArgumentError(
            f"Got {arr.shape[0]} embeddings for {n} ids: the counts must match"
        )
    return arr


def _check_text(value: str, where: object) -> str:
    """Refuse text that cannot be stored as UTF-8 (lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgumentError(
            f"{where}: the text is not valid Unicode ({exc.reason})"
        ) from exc
    return value


def _check_scalar(value: Any, where: object) -> Any:
    kind = type(value)  # exact types first: the common case pays for no isinstance chain
    if kind is str:
        return _check_text(value, where)
    if kind is float:
        if value - value != 0.0:  # NaN or infinity
            raise InvalidArgumentError(f"{where}: NaN and infinity are not allowed")
        return value
    if kind is bool:
        return value
    if kind is int and INT64_MIN <= value <= INT64_MAX:
        return value
    if isinstance(value, str):
        return _check_text(value, where)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, np.integer)):
        value = int(value)
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidArgumentError(f"{where}: integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            raise InvalidArgumentError(f"{where}: NaN and infinity are not allowed")
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    raise InvalidArgumentError(
        f"{where}: Expected metadata value to be {_VALUE_KINDS}, got {value!r} which is a "
        f"{_type_name(value)}"
    )


class _Where:
    """Where a metadata value sits, turned into text only for an error message."""

    __slots__ = ("key", "where")

    def __init__(self, where: str, key: str) -> None:
        self.where, self.key = where, key

    def __format__(self, spec: str) -> str:
        return f"{self.where}, key {self.key!r}"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "str"
    return "number"


def _check_metadata_dict(md: Mapping[str, Any], where: str, *, allow_none: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in md.items():
        if not isinstance(key, str):
            raise InvalidArgumentError(f"{where}: keys must be str, got {_type_name(key)}")
        _check_text(key, where)
        if key == "" or key[0] in "#$":
            raise InvalidArgumentError(
                f"{where}: key {key!r} is not allowed (keys must be non-empty and must not "
                "start with '#' or '$')"
            )
        at = _Where(where, key)
        if value is None:
            if not allow_none:
                raise InvalidArgumentError(
                    f"{at}: Expected metadata value to be {_VALUE_KINDS}, got None (a None "
                    "value deletes a key in update() and upsert(); elsewhere leave the key out)"
                )
            out[key] = None
        elif isinstance(value, (list, tuple, np.ndarray)):
            items = [
                _check_scalar(v, at)
                for v in (value.tolist() if isinstance(value, np.ndarray) else value)
            ]
            if not items:
                raise InvalidArgumentError(f"{at}: a list value must not be empty")
            kinds = {_kind(v) for v in items}
            if len(kinds) > 1:
                raise InvalidArgumentError(
                    f"{at}: all items of a list value must have one type, got {sorted(kinds)}"
                )
            out[key] = items
        elif type(value).__name__ == "SparseVector" or (
            isinstance(value, Mapping) and is_sparse(value)
        ):
            out[key] = sparse_from_any(value, f"{at}")
        elif isinstance(value, Mapping):
            raise InvalidArgumentError(
                f"{at}: Expected metadata value to be {_VALUE_KINDS}, got {value!r} which is a "
                f"{_type_name(value)}: nested dicts are not allowed, flatten them into keys"
            )
        else:
            out[key] = _check_scalar(value, at)
    return out


def validate_record_metadata(
    md: Any, index: int, *, allow_none_values: bool
) -> dict[str, Any] | None:
    if md is None:
        return None
    if not isinstance(md, Mapping):
        raise InvalidArgumentError(f"Expected metadata {index} to be a dict, got {_type_name(md)}")
    return _check_metadata_dict(md, f"metadata {index}", allow_none=allow_none_values)


def normalize_metadatas(
    metadatas: Any, n: int, *, allow_none_values: bool
) -> list[dict[str, Any] | None] | None:
    """``None`` values are allowed where they mean "delete this key" (update/upsert)."""
    if metadatas is None:
        return None
    items = _as_list(metadatas, "metadatas")
    if len(items) != n:
        raise InvalidArgumentError(f"Got {len(items)} metadatas for {n} ids: the counts must match")
    return [
        validate_record_metadata(md, i, allow_none_values=allow_none_values)
        for i, md in enumerate(items)
    ]


def _normalize_strings(values: Any, n: int, what: str) -> list[str | None] | None:
    if values is None:
        return None
    items = _as_list(values, what)
    if len(items) != n:
        raise InvalidArgumentError(f"Got {len(items)} {what} for {n} ids: the counts must match")
    for i, value in enumerate(items):
        if value is not None and not isinstance(value, str):
            raise InvalidArgumentError(f"Expected {what} {i} to be a str, got {_type_name(value)}")
        if value is not None:
            _check_text(value, f"{what} {i}")
    return items


def normalize_documents(documents: Any, n: int) -> list[str | None] | None:
    return _normalize_strings(documents, n, "documents")


def normalize_uris(uris: Any, n: int) -> list[str | None] | None:
    return _normalize_strings(uris, n, "uris")


def normalize_include(include: Any, *, for_query: bool) -> list[str]:
    allowed = QUERY_INCLUDE if for_query else GET_INCLUDE
    if isinstance(include, str) or not isinstance(include, (list, tuple)):
        raise InvalidArgumentError(
            f"include must be a list such as ['documents', 'metadatas'], got {include!r}"
        )
    for item in include:
        if item not in allowed:
            hint = " (distances are only available from query)" if item == "distances" else ""
            raise InvalidArgumentError(
                f"Unknown include value {item!r}{hint}; allowed: {', '.join(allowed)}"
            )
    return list(include)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def validate_limit_offset(limit: Any, offset: Any) -> tuple[int | None, int | None]:
    for name, value in (("limit", limit), ("offset", offset)):
        if value is None:
            continue
        if not _is_int(value):
            raise InvalidArgumentError(f"{name} must be an int, got {_type_name(value)}")
        if value < 0:
            raise InvalidArgumentError(f"{name} must not be negative, got {value}")
        if value > INT64_MAX:
            raise InvalidArgumentError(f"{name} {value} does not fit in 64 bits")
    return (
        None if limit is None else int(limit),
        None if offset is None else int(offset),
    )


def validate_n_results(n_results: Any) -> int:
    if not _is_int(n_results):
        raise InvalidArgumentError(f"n_results must be an int, got {_type_name(n_results)}")
    if n_results <= 0:
        raise InvalidArgumentError(f"n_results must be a positive int, got {n_results}")
    if n_results > INT64_MAX:
        raise InvalidArgumentError(f"n_results {n_results} does not fit in 64 bits")
    return int(n_results)


# ------------------------------------------------------------ record rules every backend applies


def check_dimension(expected: int | None, got: int) -> None:
    """Refuse vectors of another length than the collection's, once it has one."""
    if expected is not None and got != expected:
        raise InvalidDimensionException(
            f"Collection expecting embedding with dimension of {expected}, got {got}"
        )


def merge_metadata(stored: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any] | None:
    """An update's metadata, key by key over the stored one; a None value deletes the
    key; nothing left -> None."""
    merged = dict(stored or {})
    for key, value in new.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged or None


def strip_none(md: dict[str, Any] | None) -> dict[str, Any] | None:
    """A metadata written whole (add, upsert of a new record): None values are dropped."""
    if md is None:
        return None
    return {k: v for k, v in md.items() if v is not None} or None
