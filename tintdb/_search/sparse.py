"""Sparse vectors: the ``SparseVector`` metadata value and its JSON form.

A sparse vector is a list of (dimension, weight) pairs, dimensions strictly ascending.
On the wire and in SQLite it is the tagged object Chroma's clients send,
``{"#type": "sparse_vector", "indices": [...], "values": [...]}`` with ``"tokens"``
when the vector carries the words its dimensions stand for. That tagged dict is also
the normalised form a record's metadata holds between validation and storage; results
turn it back into ``SparseVector`` objects for the embedded API.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgumentError

__all__ = [
    "SPARSE_TYPE",
    "TYPE_KEY",
    "SparseVector",
    "from_wire",
    "is_sparse",
    "is_wire_sparse",
    "sparse_from_any",
    "to_wire",
]

TYPE_KEY = "#type"
SPARSE_TYPE = "sparse_vector"
# Dimensions are unsigned 32-bit in Chroma (BM25 hashes fill that range).
MAX_INDEX = 2**32 - 1


@dataclass
class SparseVector:
    """Weights on a few dimensions of a very large space (BM25 term weights, say).

    ``indices`` strictly ascending non-negative ints, ``values`` one number each;
    ``labels`` optionally names each dimension (the token it hashes).
    """

    indices: list[int]
    values: list[float]
    labels: list[str] | None = None

    def __post_init__(self) -> None:
        checked = _checked(self.indices, self.values, self.labels, "SparseVector")
        self.indices, self.values, self.labels = checked

    def to_dict(self) -> dict[str, Any]:
        """The tagged JSON object Chroma's wire protocol carries."""
        return to_wire(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SparseVector:
        if not is_wire_sparse(data):
            raise InvalidArgumentError(
                f"A sparse vector object needs {TYPE_KEY!r}: {SPARSE_TYPE!r}, got {dict(data)!r}"
            )
        return from_wire(data)


def _checked(
    indices: Any, values: Any, labels: Any, what: str
) -> tuple[list[int], list[float], list[str] | None]:
    if not isinstance(indices, (list, tuple)) or not isinstance(values, (list, tuple)):
        raise InvalidArgumentError(f"{what}: indices and values must be lists")
    if len(indices) != len(values):
        raise InvalidArgumentError(
            f"{what}: {len(indices)} indices but {len(values)} values; they pair up one to one"
        )
    out_i: list[int] = []
    prev = -1
    for pos, i in enumerate(indices):
        try:
            if isinstance(i, bool):
                raise TypeError
            i = operator.index(i)  # ints, numpy ints; never floats
        except TypeError:
            raise InvalidArgumentError(
                f"{what}: index at position {pos} must be an int, got {i!r}"
            ) from None
        if i < 0 or i > MAX_INDEX:
            raise InvalidArgumentError(
                f"{what}: index {i} at position {pos} is outside 0..{MAX_INDEX}"
            )
        if i <= prev:
            raise InvalidArgumentError(
                f"{what}: indices must be strictly ascending; {i} at position {pos} follows {prev}"
            )
        out_i.append(i)
        prev = i
    out_v: list[float] = []
    for pos, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            try:
                v = float(v)  # numpy scalars
            except (TypeError, ValueError):
                raise InvalidArgumentError(
                    f"{what}: value at position {pos} must be a number, got {v!r}"
                ) from None
        v = float(v)
        if not math.isfinite(v):
            raise InvalidArgumentError(f"{what}: value at position {pos} is {v}, not finite")
        out_v.append(v)
    out_l: list[str] | None = None
    if labels is not None:
        if not isinstance(labels, (list, tuple)) or len(labels) != len(out_i):
            raise InvalidArgumentError(f"{what}: labels must be a list with one str per index")
        if not all(isinstance(s, str) for s in labels):
            raise InvalidArgumentError(f"{what}: labels must be str")
        out_l = list(labels)
    return out_i, out_v, out_l


def is_sparse(value: Any) -> bool:
    """A ``SparseVector`` (ours or chromadb's, by shape) or its tagged dict."""
    return isinstance(value, SparseVector) or is_wire_sparse(value) or _foreign(value)


def _foreign(value: Any) -> bool:
    """chromadb's own SparseVector class, passed to tintdb by code written for both."""
    return (
        type(value).__name__ == "SparseVector"
        and hasattr(value, "indices")
        and hasattr(value, "values")
        and not isinstance(value, Mapping)
    )


def is_wire_sparse(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get(TYPE_KEY) == SPARSE_TYPE


def sparse_from_any(value: Any, what: str) -> dict[str, Any]:
    """Check a sparse vector given in any accepted form; return its tagged dict."""
    if isinstance(value, SparseVector):
        return to_wire(value)
    if is_wire_sparse(value):
        extra = set(value) - {TYPE_KEY, "indices", "values", "tokens"}
        if extra:
            raise InvalidArgumentError(f"{what}: unknown sparse vector field {sorted(extra)[0]!r}")
        i, v, labels = _checked(
            value.get("indices"), value.get("values"), value.get("tokens"), what
        )
        return _wire(i, v, labels)
    if _foreign(value):
        i, v, labels = _checked(
            list(value.indices), list(value.values), getattr(value, "labels", None), what
        )
        return _wire(i, v, labels)
    raise InvalidArgumentError(f"{what}: expected a SparseVector, got {type(value).__name__}")


def _wire(indices: list[int], values: list[float], labels: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {TYPE_KEY: SPARSE_TYPE, "indices": indices, "values": values}
    if labels is not None:
        out["tokens"] = labels
    return out


def to_wire(vector: SparseVector) -> dict[str, Any]:
    return _wire(list(vector.indices), list(vector.values), vector.labels)


def from_wire(data: Mapping[str, Any]) -> SparseVector:
    """A tagged dict known to be valid (stored, or checked) as a SparseVector."""
    vector = SparseVector.__new__(SparseVector)
    vector.indices = list(data["indices"])
    vector.values = [float(v) for v in data["values"]]
    tokens = data.get("tokens")
    vector.labels = None if tokens is None else list(tokens)
    return vector
