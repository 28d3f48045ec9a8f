"""Which ANN library should tintdb's index use? hnswlib, usearch, faiss-cpu and voyager
measured on the same clustered workload.

    python bench/ann_choice.py            # 100,000 x 384
    python bench/ann_choice.py --n 20000  # quick

The libraries are installed into a throwaway virtualenv, bench/.venv-ann (created on
the first run). Every library runs in its own subprocess of that virtualenv so that
its peak memory is its own. Settings are matched: M (connectivity) = 16,
ef_construction (expansion_add) = 100, ef_search (expansion_search) = 100, float32
storage, squared euclidean distance. Builds use 2 threads, single queries 1 thread.
The parent computes exact neighbours with numpy and the recall of every answer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload as wl

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-ann"
PACKAGES = ["numpy", "psutil", "hnswlib", "usearch", "faiss-cpu", "voyager"]
LIBS = ["hnswlib", "usearch", "faiss", "voyager"]
M, EF_CONSTRUCTION, EF_SEARCH, K = 16, 100, 100, 10
THREADS = 2
N_FILTERED = 100  # filtered queries
N_CHANGED = 500  # vectors deleted, and vectors updated
POST_FILTER_K = 200  # over-fetch for libraries without a filter during search


# ================================================================ worker side


class Ann:
    """The few operations the benchmark needs, over one library."""

    name = ""
    filter_native = False

    def version(self) -> str:
        raise NotImplementedError

    def build(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def query(self, q: np.ndarray, k: int) -> list[int]:
        raise NotImplementedError

    def batch(self, q: np.ndarray, k: int) -> list[list[int]]:
        raise NotImplementedError

    def filtered(self, q: np.ndarray, k: int, mask: np.ndarray) -> list[int]:
        """Search restricted to rows where `mask` is true (native filters only)."""
        raise NotImplementedError

    def delete(self, labels: np.ndarray) -> str:
        """Delete `labels`; return how (raise if unsupported)."""
        raise NotImplementedError

    def update(self, labels: np.ndarray, x: np.ndarray) -> str:
        """Replace the vectors of `labels`; return how (raise if unsupported)."""
        raise NotImplementedError

    def save(self, path: str) -> None:
        raise NotImplementedError

    def load(self, path: str, n: int, dim: int) -> None:
        raise NotImplementedError


class Hnswlib(Ann):
    name = "hnswlib"
    filter_native = True

    def __init__(self) -> None:
        import hnswlib

        self.lib = hnswlib

    def version(self) -> str:
        from importlib.metadata import version

        return version("hnswlib")

    def build(self, x: np.ndarray) -> None:
        self.idx = self.lib.Index(space="l2", dim=x.shape[1])
        self.idx.init_index(
            max_elements=x.shape[0],
            M=M,
            ef_construction=EF_CONSTRUCTION,
            allow_replace_deleted=True,
        )
        self.idx.set_num_threads(THREADS)
        self.idx.add_items(x, np.arange(x.shape[0]))
        self.idx.set_ef(EF_SEARCH)

    def query(self, q: np.ndarray, k: int) -> list[int]:
        labels, _ = self.idx.knn_query(q[None, :], k=k, num_threads=1)
        return labels[0].tolist()

    def batch(self, q: np.ndarray, k: int) -> list[list[int]]:
        labels, _ = self.idx.knn_query(q, k=k, num_threads=THREADS)
        return labels.tolist()

    def filtered(self, q: np.ndarray, k: int, mask: np.ndarray) -> list[int]:
        allowed = mask.tolist()
        labels, _ = self.idx.knn_query(
            q[None, :], k=k, num_threads=1, filter=lambda label: allowed[label]
        )
        return labels[0].tolist()

    def delete(self, labels: np.ndarray) -> str:
        for label in labels.tolist():
            self.idx.mark_deleted(label)
        return "mark_deleted (slot reusable)"

    def update(self, labels: np.ndarray, x: np.ndarray) -> str:
        self.idx.add_items(x, labels)
        return "add_items on an existing label (in place)"

    def save(self, path: str) -> None:
        self.idx.save_index(path)

    def load(self, path: str, n: int, dim: int) -> None:
        self.idx = self.lib.Index(space="l2", dim=dim)
        self.idx.load_index(path, max_elements=n)
        self.idx.set_ef(EF_SEARCH)


class Faiss(Ann):
    name = "faiss"
    filter_native = True

    def __init__(self) -> None:
        import faiss

        self.lib = faiss

    def version(self) -> str:
        return str(self.lib.__version__)

    def build(self, x: np.ndarray) -> None:
        self.lib.omp_set_num_threads(THREADS)
        self.idx = self.lib.IndexHNSWFlat(x.shape[1], M)
        self.idx.hnsw.efConstruction = EF_CONSTRUCTION
        self.idx.add(x)
        self.idx.hnsw.efSearch = EF_SEARCH

    def query(self, q: np.ndarray, k: int) -> list[int]:
        self.lib.omp_set_num_threads(1)
        _, labels = self.idx.search(q[None, :], k)
        return labels[0].tolist()

    def batch(self, q: np.ndarray, k: int) -> list[list[int]]:
        self.lib.omp_set_num_threads(THREADS)
        _, labels = self.idx.search(q, k)
        return labels.tolist()

    def filtered(self, q: np.ndarray, k: int, mask: np.ndarray) -> list[int]:
        self.lib.omp_set_num_threads(1)
        if getattr(self, "_mask", None) is not mask:
            self._mask = mask
            self._bits = np.packbits(mask, bitorder="little")
            self._sel = self.lib.IDSelectorBitmap(mask.shape[0], self.lib.swig_ptr(self._bits))
            self._params = self.lib.SearchParametersHNSW(sel=self._sel, efSearch=EF_SEARCH)
        _, labels = self.idx.search(q[None, :], k, params=self._params)
        return [int(v) for v in labels[0] if v >= 0]

    def delete(self, labels: np.ndarray) -> str:
        self.idx.remove_ids(labels.astype(np.int64))
        return "remove_ids"

    def update(self, labels: np.ndarray, x: np.ndarray) -> str:
        self.idx.remove_ids(labels.astype(np.int64))
        return "remove_ids + add"

    def save(self, path: str) -> None:
        self.lib.write_index(self.idx, path)

    def load(self, path: str, n: int, dim: int) -> None:
        self.idx = self.lib.read_index(path)
        self.idx.hnsw.efSearch = EF_SEARCH


class Usearch(Ann):
    name = "usearch"

    def __init__(self) -> None:
        from usearch.index import Index

        self.Index = Index

    def version(self) -> str:
        from importlib.metadata import version

        return version("usearch")

    def _new(self, dim: int) -> Any:
        return self.Index(
            ndim=dim,
            metric="l2sq",
            dtype="f32",
            connectivity=M,
            expansion_add=EF_CONSTRUCTION,
            expansion_search=EF_SEARCH,
        )

    def build(self, x: np.ndarray) -> None:
        self.idx = self._new(x.shape[1])
        self.idx.add(np.arange(x.shape[0], dtype=np.uint64), x, threads=THREADS)

    def query(self, q: np.ndarray, k: int) -> list[int]:
        return self.idx.search(q, k, threads=1).keys.tolist()

    def batch(self, q: np.ndarray, k: int) -> list[list[int]]:
        return self.idx.search(q, k, threads=THREADS).keys.tolist()

    def delete(self, labels: np.ndarray) -> str:
        self.idx.remove(labels.astype(np.uint64))
        return "remove"

    def update(self, labels: np.ndarray, x: np.ndarray) -> str:
        try:
            self.idx.add(labels.astype(np.uint64), x)
            return "add on an existing key"
        except Exception:
            self.idx.remove(labels.astype(np.uint64))
            self.idx.add(labels.astype(np.uint64), x)
            return "remove + add (no in-place update)"

    def save(self, path: str) -> None:
        self.idx.save(path)

    def load(self, path: str, n: int, dim: int) -> None:
        self.idx = self._new(dim)
        self.idx.load(path)


class Voyager(Ann):
    name = "voyager"

    def __init__(self) -> None:
        import voyager

        self.lib = voyager

    def version(self) -> str:
        from importlib.metadata import version

        return version("voyager")

    def build(self, x: np.ndarray) -> None:
        v = self.lib
        self.idx = v.Index(
            v.Space.Euclidean,
            num_dimensions=x.shape[1],
            M=M,
            ef_construction=EF_CONSTRUCTION,
            max_elements=x.shape[0],
            storage_data_type=v.StorageDataType.Float32,
        )
        self.idx.add_items(x, ids=np.arange(x.shape[0], dtype=np.uint64), num_threads=THREADS)

    def query(self, q: np.ndarray, k: int) -> list[int]:
        ids, _ = self.idx.query(q, k=k, num_threads=1, query_ef=max(EF_SEARCH, k))
        return ids.tolist()

    def batch(self, q: np.ndarray, k: int) -> list[list[int]]:
        ids, _ = self.idx.query(q, k=k, num_threads=THREADS, query_ef=EF_SEARCH)
        return ids.tolist()

    def delete(self, labels: np.ndarray) -> str:
        for label in labels.tolist():
            self.idx.mark_deleted(label)
        return "mark_deleted"

    def update(self, labels: np.ndarray, x: np.ndarray) -> str:
        self.idx.add_items(x, ids=labels.astype(np.uint64), num_threads=THREADS)
        return "add_items on an existing id (in place)"

    def save(self, path: str) -> None:
        self.idx.save(path)

    def load(self, path: str, n: int, dim: int) -> None:
        self.idx = self.lib.Index.load(path)


ADAPTERS: dict[str, Callable[[], Ann]] = {
    "hnswlib": Hnswlib,
    "faiss": Faiss,
    "usearch": Usearch,
    "voyager": Voyager,
}


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def run_worker(lib: str, data_dir: Path, out: Path) -> None:
    """Measure one library; write a JSON document of timings and answers to `out`."""
    plan = json.loads((data_dir / "plan.json").read_text())
    x = np.load(data_dir / "vectors.npy")
    queries = np.load(data_dir / "queries.npy")
    mask = np.load(data_dir / "mask.npy")
    changed = np.load(data_dir / "changed.npy")
    n, dim = x.shape
    ann = ADAPTERS[lib]()
    res: dict[str, Any] = {"lib": lib, "version": ann.version()}
    rss0 = _rss()

    t, cpu = time.perf_counter(), time.process_time()
    ann.build(x)
    res["build_s"] = time.perf_counter() - t
    res["build_cpu_s"] = time.process_time() - cpu
    res["index_mem_mb"] = (_rss() - rss0) / 2**20
    res["build_peak_mb"] = wl.peak_rss_mb()

    lat, ids = [], []
    cpu = time.process_time()
    for q in queries:
        t = time.perf_counter()
        ids.append(ann.query(q, K))
        lat.append(time.perf_counter() - t)
    res["query_cpu_ms"] = (time.process_time() - cpu) * 1e3 / len(queries)
    res["query_ms"], res["query_ids"] = [v * 1e3 for v in lat], ids

    t = time.perf_counter()
    res["batch_ids"] = ann.batch(queries, K)
    res["batch_s"] = time.perf_counter() - t

    fq = queries[: plan["n_filtered"]]
    lat, ids = [], []
    how = "native"
    try:
        if not ann.filter_native:
            raise NotImplementedError
        for q in fq:
            t = time.perf_counter()
            ids.append(ann.filtered(q, K, mask))
            lat.append(time.perf_counter() - t)
    except NotImplementedError:
        how = f"post-filter of top {POST_FILTER_K}"
        lat, ids = [], []
        for q in fq:
            t = time.perf_counter()
            got = ann.query(q, POST_FILTER_K)
            ids.append([g for g in got if g >= 0 and mask[g]][:K])
            lat.append(time.perf_counter() - t)
    res["filter_how"], res["filter_ms"], res["filter_ids"] = how, [v * 1e3 for v in lat], ids

    # save / load come before the changes so every library saves the same index
    path = str(out.with_suffix(".index"))
    t = time.perf_counter()
    ann.save(path)
    res["save_s"] = time.perf_counter() - t
    res["file_mb"] = wl.dir_size(path) / 2**20
    ann.idx = None  # free the index first: the load must not count the old one
    t = time.perf_counter()
    ann.load(path, n, dim)
    res["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    ann.query(queries[0], K)
    res["first_query_ms"] = (time.perf_counter() - t) * 1e3
    os.remove(path)

    # deletion: the deleted rows' own vectors must no longer find them
    dele, upd = changed[:N_CHANGED], changed[N_CHANGED:]
    try:
        t = time.perf_counter()
        res["delete_how"] = ann.delete(dele)
        res["delete_s"] = time.perf_counter() - t
        back = [ann.query(x[i], K) for i in dele[:50]]
        res["delete_leaks"] = sum(int(i) in b for i, b in zip(dele[:50], back, strict=True))
    except Exception as e:
        res["delete_how"] = f"no ({type(e).__name__}: {str(e).splitlines()[0][:60]})"
    # update: after replacing vectors, each new vector must find its own label first
    new = np.load(data_dir / "new_vectors.npy")
    try:
        t = time.perf_counter()
        res["update_how"] = ann.update(upd, new)
        res["update_s"] = time.perf_counter() - t
        back = [ann.query(new[j], K) for j in range(len(upd))]
        res["update_top1"] = float(
            np.mean([b[:1] == [int(u)] for b, u in zip(back, upd, strict=True)])
        )
        res["update_top10"] = float(np.mean([int(u) in b for b, u in zip(back, upd, strict=True)]))
    except Exception as e:
        res["update_how"] = f"no ({type(e).__name__}: {str(e).splitlines()[0][:60]})"

    res["peak_rss_mb"] = wl.peak_rss_mb()
    res["base_rss_mb"] = rss0 / 2**20
    out.write_text(json.dumps(res))


# ================================================================ parent side


def _fmt(v: float, nd: int = 2) -> str:
    return f"{v:.{nd}f}"


def _table(results: list[dict[str, Any]], truth: dict[str, Any]) -> str:
    """Markdown table: one row per measurement, one column per library."""
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, f: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for r in results:
            try:
                if "error" in r:
                    cells.append("" if rows else "error: " + r["error"])
                else:
                    cells.append(f(r))
            except (KeyError, TypeError):
                cells.append("n/a")
        rows.append((label, cells))

    row("version", lambda r: r["version"])
    row("build, s (2 threads)", lambda r: _fmt(r["build_s"]))
    row("build, CPU s (all threads)", lambda r: _fmt(r["build_cpu_s"]))
    row(
        "single query, ms: mean / p50 / p95 (1 thread)",
        lambda r: " / ".join(
            f"{v:.3f}" for v in (np.mean(r["query_ms"]), *np.percentile(r["query_ms"], [50, 95]))
        ),
    )
    row("single query, CPU ms (mean)", lambda r: _fmt(r["query_cpu_ms"], 3))
    row("recall@10", lambda r: _fmt(wl.recall(r["query_ids"], truth["knn"]), 4))
    row(f"{len(truth['knn'])} queries in one batch, s (2 threads)", lambda r: _fmt(r["batch_s"], 3))
    row("filtered search (10% pass)", lambda r: r["filter_how"])
    row("filtered query, ms mean", lambda r: _fmt(float(np.mean(r["filter_ms"])), 3))
    row("filtered recall@10", lambda r: _fmt(wl.recall(r["filter_ids"], truth["filtered"]), 4))
    row("delete", lambda r: r["delete_how"])
    row(f"delete {N_CHANGED}, ms", lambda r: _fmt(r["delete_s"] * 1e3, 1))
    row("deleted ids still returned (of 50)", lambda r: str(r["delete_leaks"]))
    row("update", lambda r: r["update_how"])
    row(f"update {N_CHANGED}, ms", lambda r: _fmt(r["update_s"] * 1e3, 1))
    row(
        f"updated vectors found by themselves: top-1 / in top-{K}",
        lambda r: f"{r['update_top1']:.3f} / {r['update_top10']:.3f}",
    )
    row("save, s", lambda r: _fmt(r["save_s"], 3))
    row("load, s", lambda r: _fmt(r["load_s"], 3))
    row("first query after load, ms", lambda r: _fmt(r["first_query_ms"], 2))
    row("file size, MB", lambda r: _fmt(r["file_mb"], 1))
    row("index memory (RSS growth at build), MB", lambda r: _fmt(r["index_mem_mb"], 0))
    row(
        "process peak RSS after build / at end, MB (data alone)",
        lambda r: f"{r['build_peak_mb']:.0f} / {r['peak_rss_mb']:.0f} ({r['base_rss_mb']:.0f})",
    )

    head = "| measurement | " + " | ".join(r["lib"] for r in results) + " |"
    sep = "|---|" + "---|" * len(results)
    body = ["| " + label + " | " + " | ".join(cells) + " |" for label, cells in rows]
    return "\n".join([head, sep, *body])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="vectors (default 100000)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument(
        "--libs", default=",".join(LIBS), help="comma-separated subset of " + ",".join(LIBS)
    )
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="S",
        help="first wait up to S seconds for the load average to fall below 0.5",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        run_worker(args.worker, args.data, args.out)
        return

    libs = [s.strip() for s in args.libs.split(",") if s.strip()]
    unknown = set(libs) - set(LIBS)
    if unknown:
        ap.error(f"unknown libs {sorted(unknown)}; choose from {LIBS}")
    py = wl.ensure_venv(VENV, PACKAGES, "import hnswlib, usearch, faiss, voyager, psutil")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` cleans up
    load_note = wl.wait_quiet(0.5, args.wait_quiet)
    tmp = Path(tempfile.mkdtemp(prefix="tintdb-ann-"))
    try:
        print(f"generating {args.n} x {args.dim} clustered vectors ...", file=sys.stderr)
        ds = wl.make_dataset(args.n, args.dim, args.queries)
        x, queries = ds.vectors, ds.queries
        mask = np.array([m["category"] == "c3" for m in ds.metadatas])
        rng = np.random.default_rng(7)
        changed = rng.choice(args.n, size=2 * N_CHANGED, replace=False)
        np.save(tmp / "vectors.npy", x)
        np.save(tmp / "queries.npy", queries)
        np.save(tmp / "mask.npy", mask)
        np.save(tmp / "changed.npy", changed)
        np.save(tmp / "new_vectors.npy", wl.extra_vectors(N_CHANGED, args.dim))
        n_filtered = min(N_FILTERED, args.queries)
        (tmp / "plan.json").write_text(json.dumps({"n_filtered": n_filtered}))
        truth = {
            "knn": wl.exact_knn(x, queries, K),
            "filtered": wl.exact_knn(x, queries[:n_filtered], K, np.flatnonzero(mask)),
        }
        results = []
        for lib in libs:
            print(f"measuring {lib} ...", file=sys.stderr, flush=True)
            out = tmp / f"{lib}.json"
            proc = subprocess.run(
                [str(py), __file__, "--worker", lib, "--data", str(tmp), "--out", str(out)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0 or not out.exists():
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
                results.append({"lib": lib, "error": tail[0][:120]})
                sys.stderr.write(proc.stderr[-2000:])
            else:
                results.append(json.loads(out.read_text()))
        print(
            f"## ANN libraries: {args.n} x {args.dim}, clustered, M={M}, "
            f"ef_construction={EF_CONSTRUCTION}, ef_search={EF_SEARCH}, k={K}"
        )
        print(
            f"{time.strftime('%Y-%m-%d')}; {platform.machine()}, {os.cpu_count()} cores; "
            f"Python {platform.python_version()}; {wl.blas_info()}; {load_note}, "
            f"at end {os.getloadavg()[0]:.2f}"
        )
        print(f"filtered: {n_filtered} queries, category == c3 ({mask.mean():.1%} pass)\n")
        print(_table(results, truth))
        if args.json:
            args.json.write_text(json.dumps({"results": results}, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
