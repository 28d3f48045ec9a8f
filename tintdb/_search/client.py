"""What ``Collection`` does for search and sparse vectors before anything reaches a
backend: payloads checked (and their text queries embedded), sparse vectors filled in
from documents by the schema's sparse embedding function, and sparse metadata values
turned back into ``SparseVector`` objects in results.

Everything here runs in the caller's process, as in chromadb: the server receives
vectors, never text to embed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import EmbeddingFunctionError, InvalidArgumentError, TintError
from .expr import Search
from .plan import DOCUMENT, EMBEDDING, parse, parse_read_level, sparse_index_configs
from .result import SearchResult
from .sparse import from_wire, is_wire_sparse, sparse_from_any

__all__ = [
    "SearchResult",
    "fill_sparse",
    "parse_read_level",
    "payload",
    "sparse_function",
    "sparse_results",
]


def payload(collection: Any, search: Any, index: int) -> dict[str, Any]:
    """The JSON of one search, text queries embedded, checked as a backend will."""
    if isinstance(search, Search):
        data = search.to_dict()
    elif isinstance(search, Mapping):
        data = dict(search)
    else:
        raise InvalidArgumentError(
            f"search() takes Search objects (or their dicts), got {type(search).__name__} "
            f"at position {index}"
        )
    if data.get("rank") is not None:
        data["rank"] = _embed_texts(collection, data["rank"])
    parse(data, index)  # refused here: nothing is sent for a search that cannot run
    return data


def _embed_texts(collection: Any, node: Any) -> Any:
    """A copy of a rank's JSON with every text Knn query replaced by its vector."""
    if isinstance(node, list):
        return [_embed_texts(collection, n) for n in node]
    if not isinstance(node, Mapping):
        return node
    out = {}
    for op, value in node.items():
        if op == "$knn" and isinstance(value, Mapping) and isinstance(value.get("query"), str):
            value = dict(value)
            value["query"] = _embed_query(collection, value.get("key", EMBEDDING), value["query"])
            out[op] = value
        else:
            out[op] = _embed_texts(collection, value)
    return out


def _embed_query(collection: Any, key: str, text: str) -> Any:
    if key == EMBEDDING:
        return collection._embed([text], "a Knn query text")[0].tolist()
    fn = sparse_function(collection, key)
    if fn is None:
        raise InvalidArgumentError(
            f"Cannot embed the text of a Knn on key {key!r}: the collection's schema has no "
            "sparse vector index with an embedding function on that key; pass a SparseVector"
        )
    embed = getattr(fn, "embed_query", None) or fn
    vectors = _call(embed, [text], key)
    if len(vectors) != 1:
        raise EmbeddingFunctionError(
            f"The sparse embedding function of {key!r} returned {len(vectors)} vectors for 1 text"
        )
    return sparse_from_any(vectors[0], f"the sparse embedding of a Knn query on {key!r}")


def _call(fn: Any, texts: list[str], key: str) -> list[Any]:
    try:
        return list(fn(texts))
    except TintError:
        raise
    except Exception as exc:
        raise EmbeddingFunctionError(
            f"The sparse embedding function of {key!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _schema_of(model: Any) -> dict[str, Any] | None:
    """A collection's schema JSON, as far as its sparse indexes go: a store's collection
    carries the schema it was declared with (None for the default one), which is cheaper
    than the shown one; a collection from a server carries the shown one."""
    if hasattr(model, "declared_schema"):
        return model.declared_schema
    return model.schema


def sparse_function(collection: Any, key: str) -> Any:
    """The sparse embedding function the schema names for ``key``, rebuilt once per
    collection object; None if there is none."""
    cache = collection.__dict__.setdefault("_sparse_functions", {})
    if key in cache:
        return cache[key]
    config = sparse_index_configs(_schema_of(collection._model)).get(key) or {}
    fn = _build(config.get("embedding_function"), key)
    cache[key] = fn
    return fn


def _build(descriptor: Any, key: str) -> Any:
    if descriptor is None or not isinstance(descriptor, Mapping):
        return None
    if descriptor.get("type") != "known":
        if descriptor.get("type") in (None, "unknown"):
            return None
        raise EmbeddingFunctionError(
            f"The sparse embedding function of {key!r} was defined in user code and cannot "
            "be rebuilt here; pass SparseVectors yourself"
        )
    name, config = str(descriptor.get("name")), descriptor.get("config") or {}
    if name == "chroma_bm25":
        from .bm25 import ChromaBm25EmbeddingFunction

        return ChromaBm25EmbeddingFunction.build_from_config(dict(config))
    try:
        from ..utils import embedding_functions
    except ImportError:
        raise EmbeddingFunctionError(
            f"The sparse embedding function {name!r} of {key!r} needs the full tintdb package"
        ) from None
    return embedding_functions.embedding_function_from_config(name, dict(config))


def fill_sparse(
    collection: Any,
    metadatas: list[dict[str, Any] | None] | None,
    documents: list[str | None] | None,
    n: int,
) -> list[dict[str, Any] | None] | None:
    """Metadatas with each sparse-indexed key filled from its source (the document, or
    another metadata key) by the schema's function, where the caller gave no vector."""
    targets = {
        key: config
        for key, config in sparse_index_configs(_schema_of(collection._model)).items()
        if config.get("source_key") and config.get("embedding_function")
    }
    if not targets:
        return metadatas
    out = [dict(md) if md else {} for md in (metadatas or [None] * n)]
    changed = False
    for key, config in targets.items():
        source = config["source_key"]
        texts, where = [], []
        for i, md in enumerate(out):
            if key in md:
                continue
            if source == DOCUMENT:
                text = None if documents is None else documents[i]
            else:
                text = md.get(source)
            if isinstance(text, str):
                texts.append(text)
                where.append(i)
        if not texts:
            continue
        fn = sparse_function(collection, key)
        if fn is None:
            raise EmbeddingFunctionError(
                f"The schema fills {key!r} from {source!r}, but its sparse embedding function "
                "cannot be rebuilt here; pass the SparseVectors yourself"
            )
        vectors = _call(fn, texts, key)
        if len(vectors) != len(texts):
            raise EmbeddingFunctionError(
                f"The sparse embedding function of {key!r} returned {len(vectors)} vectors "
                f"for {len(texts)} texts"
            )
        for i, vector in zip(where, vectors, strict=True):
            out[i][key] = sparse_from_any(vector, f"the sparse embedding of record {i} ({key!r})")
        changed = True
    if not changed:
        return metadatas
    return [md or None for md in out]


def sparse_results(metadatas: list[Any] | None) -> None:
    """Turn the tagged sparse vectors of result metadatas into ``SparseVector``s, in place."""
    for md in metadatas or ():
        if md:
            for key, value in md.items():
                if type(value) is dict and is_wire_sparse(value):
                    md[key] = from_wire(value)
