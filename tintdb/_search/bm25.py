"""BM25 as a sparse embedding function, offline, making the vectors chromadb 1.5.9's
``ChromaBm25EmbeddingFunction`` makes for the same text (stored name ``chroma_bm25``).

A document becomes one dimension per distinct term, the dimension being the term's
32-bit MurmurHash3 (seed 0, its absolute value as a signed int), the weight BM25's
term-frequency part ``tf * (k + 1) / (tf + k * (1 - b + b * len / avg_doc_length))``
with ``len`` the document's term count. The corpus part of BM25 (how rare a term is)
is not in the vector: a search ranks by the dot product of a query's vector with each
document's, so a query term's weight is its own saturation.

Terms: text with every run of characters that are neither word characters nor space
replaced by a space, lowercased, split on whitespace; English stopwords and tokens longer
than ``token_max_length`` dropped; the rest stemmed by the Snowball English stemmer
(PyPI ``snowballstemmer``, pure Python; the stemmer chromadb loads too). MurmurHash3 is
computed here (a few lines, checked against chromadb's output in the tests) rather than
taken from a compiled package.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

from ..errors import EmbeddingFunctionError, InvalidArgumentError
from .sparse import SparseVector

__all__ = ["DEFAULT_STOPWORDS", "ChromaBm25EmbeddingFunction", "murmur3_32"]

NAME = "chroma_bm25"
DEFAULT_K = 1.2
DEFAULT_B = 0.75
DEFAULT_AVG_DOC_LENGTH = 256.0
DEFAULT_TOKEN_MAX_LENGTH = 40

# English stopwords (the list NLTK ships, as chromadb's BM25 uses it).
DEFAULT_STOPWORDS: tuple[str, ...] = tuple(
    """a about above after again against ain all am an and any are aren aren't as at be
    because been before being below between both but by can couldn couldn't d did didn
    didn't do does doesn doesn't doing don don't down during each few for from further had
    hadn hadn't has hasn hasn't have haven haven't having he her here hers herself him
    himself his how i if in into is isn isn't it it's its itself just ll m ma me mightn
    mightn't more most mustn mustn't my myself needn needn't no nor not now o of off on
    once only or other our ours ourselves out over own re s same shan shan't she she's
    should should've shouldn shouldn't so some such t than that that'll the their theirs
    them themselves then there these they this those through to too under until up ve very
    was wasn wasn't we were weren weren't what when where which while who whom why will
    with won won't wouldn wouldn't y you you'd you'll you're you've your yours yourself
    yourselves""".split()  # noqa: SIM905 (a word list reads better as text)
)

_NOT_WORD = re.compile(r"[^\w\s]+")
_MASK = 0xFFFFFFFF
# Distinct raw tokens remembered with their term and hash (words repeat: Zipf's law).
_CACHE_LIMIT = 200_000


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3's 32-bit x86 variant of ``data``, as an unsigned int."""
    h = seed & _MASK
    n = len(data)
    end = n - n % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * 0xCC9E2D51) & _MASK
        k = ((k << 15) | (k >> 17)) & _MASK
        k = (k * 0x1B873593) & _MASK
        h ^= k
        h = ((h << 13) | (h >> 19)) & _MASK
        h = (h * 5 + 0xE6546B64) & _MASK
    rest = n - end
    if rest:
        k = 0
        for j in range(rest - 1, -1, -1):
            k = (k << 8) | data[end + j]
        k = (k * 0xCC9E2D51) & _MASK
        k = ((k << 15) | (k >> 17)) & _MASK
        k = (k * 0x1B873593) & _MASK
        h ^= k
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    h ^= h >> 16
    return h


def _dimension(term: str) -> int:
    """A term's dimension: |signed 32-bit MurmurHash3| of its UTF-8 bytes."""
    h = murmur3_32(term.encode("utf-8"))
    return abs(h - (1 << 32) if h >= 1 << 31 else h)


def _stemmer() -> Any:
    try:
        import snowballstemmer
    except ImportError as exc:
        raise EmbeddingFunctionError(
            "The BM25 embedding function needs the snowballstemmer package: "
            "pip install snowballstemmer"
        ) from exc
    return snowballstemmer.stemmer("english")


class ChromaBm25EmbeddingFunction:
    """Documents to BM25 sparse vectors; ``embed_query`` does the same for queries.

    ``k`` and ``b`` are BM25's, ``avg_doc_length`` the length documents are compared
    with, ``stopwords`` replaces the English list, ``include_tokens`` labels each
    dimension with its term.
    """

    def __init__(
        self,
        k: float = DEFAULT_K,
        b: float = DEFAULT_B,
        avg_doc_length: float = DEFAULT_AVG_DOC_LENGTH,
        token_max_length: int = DEFAULT_TOKEN_MAX_LENGTH,
        stopwords: Iterable[str] | None = None,
        include_tokens: bool = False,
    ) -> None:
        self.k = float(k)
        self.b = float(b)
        self.avg_doc_length = float(avg_doc_length)
        self.token_max_length = int(token_max_length)
        self.include_tokens = bool(include_tokens)
        self.stopwords: list[str] | None = (
            None if stopwords is None else [str(w) for w in stopwords]
        )
        words = DEFAULT_STOPWORDS if self.stopwords is None else self.stopwords
        self._stop = frozenset(w.lower() for w in words)
        # raw token -> (dimension, term), or None for a token that is dropped
        self._terms: dict[str, tuple[int, str] | None] = {}
        self._lock = threading.Lock()

    # -------------------------------------------------------- embedding

    def _tokens(self, text: str, stem: Any) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        cache = self._terms
        for raw in _NOT_WORD.sub(" ", text).lower().split():
            found: tuple[int, str] | bool | None = cache.get(raw, False)
            if found is False:
                found = None
                if raw not in self._stop and len(raw) <= self.token_max_length:
                    term = stem.stemWord(raw).strip()
                    if term:
                        found = (_dimension(term), term)
                if len(cache) >= _CACHE_LIMIT:
                    cache.clear()
                cache[raw] = found
            if isinstance(found, tuple):
                out.append(found)
        return out

    def _encode(self, text: str, stem: Any) -> SparseVector:
        tokens = self._tokens(text, stem)
        if not tokens:
            return SparseVector(indices=[], values=[])
        counts: dict[int, int] = {}
        labels: dict[int, str] = {}
        for dim, term in tokens:
            counts[dim] = counts.get(dim, 0) + 1
            labels.setdefault(dim, term)
        norm = self.k * (1 - self.b + self.b * len(tokens) / self.avg_doc_length)
        dims = sorted(counts)
        values = [counts[d] * (self.k + 1) / (counts[d] + norm) for d in dims]
        vector = SparseVector.__new__(SparseVector)
        vector.indices, vector.values = dims, values
        vector.labels = [labels[d] for d in dims] if self.include_tokens else None
        return vector

    def __call__(self, input: list[str]) -> list[SparseVector]:
        if isinstance(input, str):
            raise InvalidArgumentError("BM25 takes a list of texts, not a single str")
        texts = list(input)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidArgumentError(f"BM25 input {i} is a {type(text).__name__}, not a str")
        stem = _stemmer()  # one per call: a stemmer object is not safe to share across threads
        with self._lock:
            return [self._encode(text, stem) for text in texts]

    def embed_query(self, input: list[str]) -> list[SparseVector]:
        return self(input)

    # -------------------------------------------------------- description

    @staticmethod
    def name() -> str:
        return NAME

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "k": self.k,
            "b": self.b,
            "avg_doc_length": self.avg_doc_length,
            "token_max_length": self.token_max_length,
            "include_tokens": self.include_tokens,
        }
        if self.stopwords is not None:
            config["stopwords"] = list(self.stopwords)
        return config

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> ChromaBm25EmbeddingFunction:
        unknown = set(config) - {
            "k",
            "b",
            "avg_doc_length",
            "token_max_length",
            "stopwords",
            "include_tokens",
        }
        if unknown:
            raise EmbeddingFunctionError(f"Unknown BM25 settings: {sorted(unknown)}")
        return ChromaBm25EmbeddingFunction(
            k=config.get("k", DEFAULT_K),
            b=config.get("b", DEFAULT_B),
            avg_doc_length=config.get("avg_doc_length", DEFAULT_AVG_DOC_LENGTH),
            token_max_length=config.get("token_max_length", DEFAULT_TOKEN_MAX_LENGTH),
            stopwords=config.get("stopwords"),
            include_tokens=config.get("include_tokens", False),
        )

    def validate_config_update(
        self, old_config: dict[str, Any], new_config: dict[str, Any]
    ) -> None:
        return None

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        ChromaBm25EmbeddingFunction.build_from_config(config)

    def is_legacy(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"ChromaBm25EmbeddingFunction({self.get_config()!r})"
