"""Shared data for the benchmarks: a clustered vector set with metadata and documents.

Only numpy is needed, so the module runs under any of the benchmark virtualenvs. The
data is made once by the parent process and written to a directory; every library's
subprocess reads the same files, so no result depends on a random generator's version.

The vectors are 100 Gaussian clusters (by default). Each cluster has a random centre and
its own low-rank spread (a few dozen directions) plus a little isotropic noise, so the
set has the low intrinsic dimension of real text embeddings rather than the 384
independent dimensions of white noise, on which no graph index reaches a useful recall.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

N_CLUSTERS = 100
CATEGORIES = [f"c{i}" for i in range(10)]
YEARS = (2000, 2024)
# One theme word per tenth of the clusters: `$contains` on a theme word hits ~10%.
THEMES = [
    "amber",
    "birch",
    "cobalt",
    "dune",
    "ember",
    "fjord",
    "garnet",
    "harbor",
    "indigo",
    "jasper",
]
FILLER = [
    "quiet",
    "river",
    "stone",
    "paper",
    "lamp",
    "window",
    "orange",
    "signal",
    "cloud",
    "metal",
    "forest",
    "tiny",
    "bright",
    "morning",
    "salt",
    "copper",
    "field",
    "glass",
    "winter",
    "tower",
    "market",
    "velvet",
    "thread",
    "music",
    "pocket",
    "rain",
    "silver",
    "bridge",
    "garden",
    "smoke",
]
assert not any(t in f or f in t for t in THEMES for f in FILLER)


@dataclass
class Dataset:
    """Everything a benchmark needs, as arrays and plain lists."""

    vectors: F32  # (n, dim)
    clusters: npt.NDArray[np.int64]  # (n,)
    ids: list[str]
    metadatas: list[dict[str, Any]]
    documents: list[str]
    queries: F32  # (q, dim), drawn from the same distribution, not in the set


class _Mixture:
    """The cluster model: centres, low-rank spreads and per-cluster weights."""

    def __init__(self, dim: int, rank: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.centres = rng.standard_normal((N_CLUSTERS, dim)).astype(np.float32)
        # Spread directions: each cluster a random rank-`rank` basis with decaying scales.
        scales = (1.2 / np.sqrt(np.arange(1, rank + 1))).astype(np.float32)
        bases = rng.standard_normal((N_CLUSTERS, rank, dim)).astype(np.float32)
        self.bases = bases * scales[None, :, None]
        self.noise = 0.08
        weights = rng.uniform(0.5, 1.5, N_CLUSTERS)
        self.weights = weights / weights.sum()

    def sample(self, n: int, rng: np.random.Generator) -> tuple[F32, npt.NDArray[np.int64]]:
        """Draw `n` points and the cluster each came from."""
        clusters = rng.choice(N_CLUSTERS, size=n, p=self.weights)
        out = np.empty((n, self.dim), dtype=np.float32)
        for c in range(N_CLUSTERS):
            rows = np.flatnonzero(clusters == c)
            if rows.size == 0:
                continue
            z = rng.standard_normal((rows.size, self.bases.shape[1])).astype(np.float32)
            eps = rng.standard_normal((rows.size, self.dim)).astype(np.float32)
            out[rows] = self.centres[c] + z @ self.bases[c] + self.noise * eps
        return out, clusters.astype(np.int64)


def make_dataset(n: int, dim: int = 384, n_queries: int = 500, seed: int = 1234) -> Dataset:
    """Build the clustered set, its metadata and documents, and held-out queries."""
    mix = _Mixture(dim, rank=24, seed=seed)
    rng = np.random.default_rng(seed + 1)
    vectors, clusters = mix.sample(n, rng)
    queries, _ = mix.sample(n_queries, np.random.default_rng(seed + 2))
    cat = rng.integers(0, len(CATEGORIES), n)
    year = rng.integers(YEARS[0], YEARS[1] + 1, n)
    score = np.round(rng.uniform(0.0, 1.0, n), 4)
    fill = rng.integers(0, len(FILLER), (n, 2))
    ids = [f"id{i}" for i in range(n)]
    metadatas = [
        {"category": CATEGORIES[int(c)], "year": int(y), "score": float(s)}
        for c, y, s in zip(cat, year, score, strict=True)
    ]
    documents = [
        f"{THEMES[int(k) % len(THEMES)]} {FILLER[int(a)]} {FILLER[int(b)]} note"
        for k, (a, b) in zip(clusters, fill, strict=True)
    ]
    return Dataset(vectors, clusters, ids, metadatas, documents, queries)


def extra_vectors(n: int, dim: int = 384, seed: int = 1234) -> F32:
    """Fresh vectors from the same mixture (for updates)."""
    mix = _Mixture(dim, rank=24, seed=seed)
    vecs, _ = mix.sample(n, np.random.default_rng(seed + 3))
    return vecs


# ---------------------------------------------------------------- exact search


def exact_knn(
    data: F32, queries: F32, k: int, rows: npt.NDArray[np.int64] | None = None
) -> list[list[int]]:
    """Exact k nearest rows by squared euclidean distance, computed in float64.

    `rows` restricts the search to those row numbers (a filter); the answer is row
    numbers of `data` either way, nearest first.
    """
    sub = data if rows is None else data[rows]
    sub64 = sub.astype(np.float64)
    norms = np.einsum("ij,ij->i", sub64, sub64)
    out: list[list[int]] = []
    kk = min(k, sub.shape[0])
    for start in range(0, queries.shape[0], 64):
        q = queries[start : start + 64].astype(np.float64)
        d = norms[None, :] - 2.0 * q @ sub64.T + np.einsum("ij,ij->i", q, q)[:, None]
        if kk == 0:
            out.extend([] for _ in range(q.shape[0]))
            continue
        part = np.argpartition(d, kk - 1, axis=1)[:, :kk]
        for i in range(q.shape[0]):
            top = part[i][np.argsort(d[i, part[i]], kind="stable")]
            out.append([int(r) for r in (top if rows is None else rows[top])])
    return out


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    """Mean fraction of each true neighbour list that was found (1.0 when truth is empty)."""
    vals = []
    for f, t in zip(found, truth, strict=True):
        vals.append(1.0 if not t else len(set(f) & set(t)) / len(t))
    return float(np.mean(vals)) if vals else float("nan")


# ---------------------------------------------------------------- files


def save(ds: Dataset, folder: Path) -> None:
    """Write the dataset where a subprocess can read it with `load`."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "vectors.npy", ds.vectors)
    np.save(folder / "queries.npy", ds.queries)
    np.save(folder / "clusters.npy", ds.clusters)
    with open(folder / "records.json", "w") as f:
        json.dump({"ids": ds.ids, "metadatas": ds.metadatas, "documents": ds.documents}, f)


def load(folder: Path) -> Dataset:
    """Read a dataset written by `save`."""
    with open(folder / "records.json") as f:
        rec = json.load(f)
    return Dataset(
        vectors=np.load(folder / "vectors.npy"),
        clusters=np.load(folder / "clusters.npy"),
        ids=rec["ids"],
        metadatas=rec["metadatas"],
        documents=rec["documents"],
        queries=np.load(folder / "queries.npy"),
    )


def dir_size(path: str | os.PathLike[str]) -> int:
    """Total bytes of the regular files under `path` (or of the file itself)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def blas_info() -> str:
    """One line naming numpy's BLAS, and OPENBLAS_CORETYPE if it is set."""
    name = "unknown"
    try:
        cfg = np.show_config(mode="dicts")  # type: ignore[func-returns-value]
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        name = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older numpy: no dict mode
        pass
    core = os.environ.get("OPENBLAS_CORETYPE")
    return f"numpy {np.__version__}, BLAS {name}" + (
        f", OPENBLAS_CORETYPE={core}" if core else ", OPENBLAS_CORETYPE unset"
    )


# ---------------------------------------------------------------- virtualenvs


def ensure_venv(venv: Path, packages: list[str], probe: str) -> Path:
    """Return the python of `venv`, creating it and installing `packages` if needed.

    `probe` is a statement that must run without error once the packages are in.
    """
    import subprocess
    import sys

    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0:
        return py
    print(f"setting up {venv} ({', '.join(packages)}) ...", file=sys.stderr, flush=True)
    if not py.exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    proc = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"could not install {packages} into {venv}")
    subprocess.run([str(py), "-c", probe], check=True)
    return py


def peak_rss_mb() -> float:
    """This process's peak resident memory, MB.

    Read from VmHWM, the high-water mark of the process's own address space. On Linux
    `getrusage(RUSAGE_SELF).ru_maxrss` is kept across fork+exec, so a subprocess started
    by a large parent would report the parent's peak; VmHWM starts afresh at exec.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def wait_quiet(max_load: float, timeout_s: float) -> str:
    """Wait (up to `timeout_s`) for the 1-minute load average to drop below `max_load`.

    Benchmarks on a 2-core machine are only as good as the machine is idle. Returns a
    note for the report: the load average when the run starts.
    """
    import sys
    import time

    deadline = time.monotonic() + timeout_s
    load = os.getloadavg()[0]
    while load >= max_load and time.monotonic() < deadline:
        print(f"waiting for a quiet machine (load {load:.2f})...", file=sys.stderr, flush=True)
        time.sleep(15)
        load = os.getloadavg()[0]
    return f"load average at start {load:.2f}"
