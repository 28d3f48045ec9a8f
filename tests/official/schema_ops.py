"""Build schemas from a list of operations, with tintdb's classes or chromadb's.

The same file runs in two places: imported by ``tests/test_schema_properties.py`` (with
``tintdb``), and run by the official client's interpreter (``chromadb``), which reads a
JSON list of operation sequences on stdin and prints, per sequence, the schema JSON or
the error it raised. The test compares the two.

An operation is ``[verb, kind, key, params]``: verb "create" or "delete", kind one of
KINDS, key a str or null, params the settings of a vector or sparse index config.
"""

from __future__ import annotations

import json
import sys
from typing import Any

KINDS = ("string", "int", "float", "bool", "fts", "vector", "sparse")


class FixedFunction:
    """An embedding function that describes itself (the same on both sides)."""

    def __call__(self, input: list[str]) -> list[list[float]]:
        return [[1.0, 2.0] for _ in input]

    @staticmethod
    def name() -> str:
        return "fixed_for_schema_tests"

    def get_config(self) -> dict[str, Any]:
        return {"dim": 2}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> FixedFunction:
        return FixedFunction()

    def default_space(self) -> str:
        return "ip"

    def supported_spaces(self) -> list[str]:
        return ["cosine", "l2", "ip"]

    def is_legacy(self) -> bool:
        return False


def build(lib: Any, ops: list[list[Any]]) -> Any:
    """The schema the operations build (``lib`` is the tintdb or chromadb module)."""
    schema = lib.Schema()
    for verb, kind, key, params in ops:
        config = _config(lib, kind, params or {})
        if verb == "create":
            schema.create_index(config=config, key=key)
        else:
            schema.delete_index(config=config, key=key)
    return schema


def _config(lib: Any, kind: str, params: dict[str, Any]) -> Any:
    simple = {
        "string": "StringInvertedIndexConfig",
        "int": "IntInvertedIndexConfig",
        "float": "FloatInvertedIndexConfig",
        "bool": "BoolInvertedIndexConfig",
        "fts": "FtsIndexConfig",
    }
    if kind in simple:
        return getattr(lib, simple[kind])()
    if kind == "vector":
        kwargs: dict[str, Any] = {}
        if params.get("space") is not None:
            kwargs["space"] = params["space"]
        if "ef" in params:
            kwargs["embedding_function"] = {"none": None, "fixed": FixedFunction()}.get(
                params["ef"]
            )
        if params.get("hnsw") is not None:
            kwargs["hnsw"] = lib.HnswIndexConfig(**params["hnsw"])
        if params.get("spann") is not None:
            kwargs["spann"] = lib.SpannIndexConfig(**params["spann"])
        return lib.VectorIndexConfig(**kwargs)
    if kind == "sparse":
        return lib.SparseVectorIndexConfig(bm25=params.get("bm25"))
    raise ValueError(kind)


def outcome(lib: Any, ops: list[list[Any]]) -> dict[str, Any]:
    try:
        return {"schema": build(lib, ops).serialize_to_json()}
    except Exception as exc:  # the comparison is of outcomes, errors included
        return {"error": type(exc).__name__, "message": str(exc)}


if __name__ == "__main__":
    import chromadb

    sequences = json.load(sys.stdin)
    print(json.dumps([outcome(chromadb, ops) for ops in sequences]))
