"""The core workload on tintdb, chromadb and raw hnswlib, in one run.

    .venv/bin/python bench/bench_core.py                  # 100,000 x 384, all three
    .venv/bin/python bench/bench_core.py --n 20000        # quick
    .venv/bin/python bench/bench_core.py --libs chromadb,hnswlib

tintdb runs in the project virtualenv; chromadb in its own, bench/.venv-chroma, which
this script creates on first use (chromadb is never installed into the project's).
Raw hnswlib (M=16, ef_construction=100, ef=100: the settings both databases default
to) is the bar for add and single query: the ANN library alone, no storage.

Every library runs in its own subprocess (this file with --worker), so its peak memory
is its own; the time to first query after a restart is measured in one more, fresh
subprocess (--reopen). The parent makes the data, computes the exact answers with numpy
(squared euclidean distance, as "hnsw:space": "l2" uses) and every recall.
"""

from __future__ import annotations

import argparse
import importlib
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
ROOT = HERE.parent
CHROMA_VENV = HERE / ".venv-chroma"
LIBS = ["tintdb", "chromadb", "hnswlib"]
K = 10
DEFAULT_EF = 100  # chromadb's (and tintdb's) default hnsw search_ef
SWEEP_EF = (128, 160, 200, 256, 320)
BATCH = 1000
N_FILTERED = 100  # queries per filtered kind
N_CHANGED = 500  # records updated, and records deleted
N_POST = 100  # queries after the changes, and after reopening
N_GET = 100  # get(where, limit=100) calls
WHERE_EQ: dict[str, Any] = {"category": "c3"}
WHERE_RANGE: dict[str, Any] = {"$and": [{"year": {"$gte": 2015}}, {"category": {"$ne": "c1"}}]}
GET_WHERES: list[dict[str, Any]] = [
    WHERE_EQ,
    WHERE_RANGE,
    {"score": {"$lt": 0.1}},
    {"$or": [{"category": "c7"}, {"year": {"$lte": 2001}}]},
]
HNSW = {"M": 16, "ef_construction": 100, "ef": 100}


# ================================================================ worker side


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Clock:
    """Collects named timings (seconds) and errors of one worker."""

    def __init__(self, res: dict[str, Any]) -> None:
        self.res = res

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Time `fn()` into res[name + "_s"]; on an exception record it and return None."""
        t, cpu = time.perf_counter(), time.process_time()
        try:
            out = fn()
        except Exception as e:
            self.res.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:300]
            return None
        self.res[name + "_s"] = time.perf_counter() - t
        self.res[name + "_cpu_s"] = time.process_time() - cpu
        self.res.setdefault("peak_after_mb", {})[name] = wl.peak_rss_mb()
        self.res.setdefault("rss_after_mb", {})[name] = _rss_mb()
        return out

    def each(self, name: str, items: list[Any], fn: Callable[[Any], Any]) -> list[Any] | None:
        """Time `fn(item)` per item into res[name + "_ms"] (a list); outputs, or None."""
        lat, outs = [], []
        cpu = time.process_time()
        try:
            for item in items:
                t = time.perf_counter()
                outs.append(fn(item))
                lat.append((time.perf_counter() - t) * 1e3)
        except Exception as e:
            self.res.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:300]
            return None
        self.res[name + "_ms"] = lat
        self.res[name + "_cpu_s"] = time.process_time() - cpu
        return outs


def _plan(data: Path) -> tuple[wl.Dataset, dict[str, Any], np.ndarray]:
    ds = wl.load(data)
    plan = json.loads((data / "plan.json").read_text())
    return ds, plan, np.load(data / "new_vectors.npy")


def api_worker(lib: str, data: Path, db: Path, out: Path) -> None:
    """The workload through the chromadb-style API (tintdb or chromadb)."""
    ds, plan, new_vecs = _plan(data)
    res: dict[str, Any] = {"lib": lib}
    res["rss_before_import_mb"] = _rss_mb()
    mod = importlib.import_module(lib)
    res["version"] = mod.__version__
    res["module"] = str(Path(mod.__file__).parent)
    clock = Clock(res)
    n, q = len(ds.ids), ds.queries
    k = plan["k"]

    client = mod.PersistentClient(path=str(db))
    col = client.create_collection("bench", metadata={"hnsw:space": "l2"})

    def add_all() -> None:
        for s in range(0, n, plan["batch"]):
            e = s + plan["batch"]
            col.add(
                ids=ds.ids[s:e],
                embeddings=ds.vectors[s:e],
                metadatas=ds.metadatas[s:e],
                documents=ds.documents[s:e],
            )

    clock.run("add", add_all)
    res["count"] = clock.run("count", col.count)

    def query(vec: np.ndarray, **kw: Any) -> list[str]:
        return col.query(query_embeddings=vec[None, :], n_results=k, **kw)["ids"][0]

    res["first_query_ids"] = clock.run("first_query", lambda: query(q[0]))
    res["query_ids"] = clock.each("query", list(q), query)
    res["batch_ids"] = clock.run("batch", lambda: col.query(query_embeddings=q, n_results=k)["ids"])
    if lib == "tintdb":
        # Speed at wider beams, to compare at equal recall when chromadb's graph (built on
        # two threads, so not the same graph twice) came out better than this one.
        for ef in SWEEP_EF:
            col.modify(configuration={"hnsw": {"ef_search": ef}})
            res[f"query_ef{ef}_ids"] = clock.each(f"query_ef{ef}", list(q), query)
        col.modify(configuration={"hnsw": {"ef_search": DEFAULT_EF}})
    fq = list(q[: plan["n_filtered"]])
    res["eq_ids"] = clock.each("eq", fq, lambda v: query(v, where=WHERE_EQ))
    res["range_ids"] = clock.each("range", fq, lambda v: query(v, where=WHERE_RANGE))
    words = plan["doc_words"]
    res["doc_ids"] = clock.each(
        "doc",
        list(range(len(fq))),
        lambda i: query(fq[i], where_document={"$contains": words[i]}),
    )
    res["get_where_ids"] = clock.each(
        "get_where",
        [GET_WHERES[i % len(GET_WHERES)] for i in range(N_GET)],
        lambda w: col.get(where=w, limit=100)["ids"],
    )
    get_ids = [ds.ids[i] for i in plan["get_rows"]]
    got = clock.each("get_ids", [get_ids] * 5, lambda ids: col.get(ids=ids)["ids"])
    res["get_ids_found"] = len(got[-1]) if got else None

    upd = plan["update_rows"]
    upd_meta = [{**ds.metadatas[i], "score": 1.5} for i in upd]
    clock.run(
        "update",
        lambda: col.update(ids=[ds.ids[i] for i in upd], embeddings=new_vecs, metadatas=upd_meta),
    )
    dele = [ds.ids[i] for i in plan["delete_rows"]]
    clock.run("delete", lambda: col.delete(ids=dele))
    res["post_ids"] = clock.each("post", list(q[:N_POST]), query)
    res["count_after"] = clock.run("count_after", col.count)
    res["updated_meta_found"] = clock.run(
        "updated_meta",
        lambda: len(col.get(where={"score": {"$gt": 1.0}}, include=["metadatas"])["ids"]),
    )
    res["deleted_found"] = clock.run("deleted_get", lambda: len(col.get(ids=dele)["ids"]))

    clock.run("close", client.close)
    res["disk_mb"] = wl.dir_size(db) / 2**20

    reopened: list[Any] = []

    def reopen() -> list[str]:
        reopened.append(mod.PersistentClient(path=str(db)))
        return (
            reopened[0].get_collection("bench").query(query_embeddings=q[:1], n_results=k)["ids"][0]
        )

    res["reopen_ids"] = clock.run("reopen", reopen)
    for c2 in reopened:
        c2.close()
    res["peak_rss_mb"] = wl.peak_rss_mb()
    out.write_text(json.dumps(res))


def api_reopen(lib: str, data: Path, db: Path, out: Path) -> None:
    """A fresh process: open the path, time to the first query's answer, then more."""
    q = np.load(data / "queries.npy")[:N_POST]
    mod = importlib.import_module(lib)
    res: dict[str, Any] = {"rss_before_open_mb": _rss_mb()}
    t = time.perf_counter()
    client = mod.PersistentClient(path=str(db))
    col = client.get_collection("bench")
    first = col.query(query_embeddings=q[:1], n_results=K)["ids"][0]
    res["cold_first_s"] = time.perf_counter() - t
    lat, ids = [], [first]
    for v in q[1:]:
        t = time.perf_counter()
        ids.append(col.query(query_embeddings=v[None, :], n_results=K)["ids"][0])
        lat.append((time.perf_counter() - t) * 1e3)
    res["cold_ids"], res["cold_next_ms"] = ids, lat
    client.close()
    res["cold_peak_rss_mb"] = wl.peak_rss_mb()
    res["disk_after_reopen_mb"] = wl.dir_size(db) / 2**20
    out.write_text(json.dumps(res))


def hnswlib_worker(data: Path, db: Path, out: Path) -> None:
    """The same workload on the ANN library alone (no storage, metadata or documents)."""
    ds, plan, new_vecs = _plan(data)
    res: dict[str, Any] = {"lib": "hnswlib", "rss_before_import_mb": _rss_mb()}
    from importlib.metadata import version

    import hnswlib

    res["version"] = version("hnswlib")
    clock = Clock(res)
    n, dim = ds.vectors.shape
    q, k = ds.queries, plan["k"]
    idx = hnswlib.Index(space="l2", dim=dim)

    def add_all() -> None:
        idx.init_index(max_elements=n, M=HNSW["M"], ef_construction=HNSW["ef_construction"])
        idx.set_ef(HNSW["ef"])
        for s in range(0, n, plan["batch"]):
            idx.add_items(
                ds.vectors[s : s + plan["batch"]], np.arange(s, min(n, s + plan["batch"]))
            )

    clock.run("add", add_all)

    def query(vec: np.ndarray, allowed: list[bool] | None = None) -> list[str]:
        kw: dict[str, Any] = {} if allowed is None else {"filter": lambda i: allowed[i]}
        labels, _ = idx.knn_query(vec[None, :], k=k, num_threads=1, **kw)
        return [ds.ids[i] for i in labels[0]]

    res["first_query_ids"] = clock.run("first_query", lambda: query(q[0]))
    res["query_ids"] = clock.each("query", list(q), query)
    res["batch_ids"] = clock.run(
        "batch", lambda: [[ds.ids[i] for i in row] for row in idx.knn_query(q, k=k)[0]]
    )
    # A filter here is a mask the application computed beforehand (not timed).
    masks = {name: np.load(data / f"mask_{name}.npy").tolist() for name in ("eq", "range")}
    fq = list(q[: plan["n_filtered"]])
    res["eq_ids"] = clock.each("eq", fq, lambda v: query(v, masks["eq"]))
    res["range_ids"] = clock.each("range", fq, lambda v: query(v, masks["range"]))
    word_masks = {w: [w in d for d in ds.documents] for w in sorted(set(plan["doc_words"]))}
    words = plan["doc_words"]
    res["doc_ids"] = clock.each(
        "doc", list(range(len(fq))), lambda i: query(fq[i], word_masks[words[i]])
    )

    def update() -> None:
        idx.add_items(new_vecs, np.array(plan["update_rows"]))

    def delete() -> None:
        for i in plan["delete_rows"]:
            idx.mark_deleted(i)

    clock.run("update", update)
    clock.run("delete", delete)
    res["post_ids"] = clock.each("post", list(q[:N_POST]), query)
    res["count_after"] = idx.get_current_count() - len(plan["delete_rows"])
    db.mkdir(parents=True, exist_ok=True)
    clock.run("close", lambda: idx.save_index(str(db / "index.bin")))
    res["disk_mb"] = wl.dir_size(db) / 2**20

    def reopen() -> list[str]:
        idx2 = hnswlib.Index(space="l2", dim=dim)
        idx2.load_index(str(db / "index.bin"))
        idx2.set_ef(HNSW["ef"])
        return [ds.ids[i] for i in idx2.knn_query(q[:1], k=k)[0][0]]

    idx = None  # free the graph before loading the saved one
    res["reopen_ids"] = clock.run("reopen", reopen)
    res["peak_rss_mb"] = wl.peak_rss_mb()
    out.write_text(json.dumps(res))


def hnswlib_reopen(data: Path, db: Path, out: Path) -> None:
    """A fresh process: load the saved graph, time to the first query's answer."""
    import hnswlib

    q = np.load(data / "queries.npy")[:N_POST]
    with open(data / "records.json") as f:
        ids = json.load(f)["ids"]
    res: dict[str, Any] = {"rss_before_open_mb": _rss_mb()}
    t = time.perf_counter()
    idx = hnswlib.Index(space="l2", dim=q.shape[1])
    idx.load_index(str(db / "index.bin"))
    idx.set_ef(HNSW["ef"])
    first = [ids[i] for i in idx.knn_query(q[:1], k=K)[0][0]]
    res["cold_first_s"] = time.perf_counter() - t
    lat, found = [], [first]
    for v in q[1:]:
        t = time.perf_counter()
        found.append([ids[i] for i in idx.knn_query(v[None, :], k=K, num_threads=1)[0][0]])
        lat.append((time.perf_counter() - t) * 1e3)
    res["cold_ids"], res["cold_next_ms"] = found, lat
    res["cold_peak_rss_mb"] = wl.peak_rss_mb()
    res["disk_after_reopen_mb"] = wl.dir_size(db) / 2**20
    out.write_text(json.dumps(res))


# ================================================================ parent side


def _python_for(lib: str) -> Path:
    if lib == "chromadb":
        return wl.ensure_venv(CHROMA_VENV, ["chromadb==1.5.9", "numpy"], "import chromadb, numpy")
    project = ROOT / ".venv" / "bin" / "python"
    return project if project.exists() else Path(sys.executable)


def _run(
    py: Path, mode: str, lib: str, tmp: Path, out: Path, timeout: float, src: Path | None = None
) -> dict[str, Any]:
    """Run this file as a worker subprocess; its JSON, or {"error": ...}.

    `src`, if given, goes first on PYTHONPATH (a tintdb checked out at some commit).
    """
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False", "PYTHONUNBUFFERED": "1"}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    cmd = [
        str(py),
        __file__,
        mode,
        lib,
        "--data",
        str(tmp / "data"),
        "--db",
        str(tmp / f"db-{lib}"),
        "--out",
        str(out),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{mode} timed out after {timeout:.0f} s"}
    if proc.returncode != 0 or not out.exists():
        lines = (proc.stderr or proc.stdout or "?").strip().splitlines()
        sys.stderr.write("\n".join(lines[-25:]) + "\n")
        return {"error": f"{mode} exited {proc.returncode}: {lines[-1][:200]}"}
    return json.loads(out.read_text())


def _prepare(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Make and save the data and plan; return the exact answers (as id lists)."""
    ds = wl.make_dataset(args.n, args.dim, args.queries)
    data = tmp / "data"
    wl.save(ds, data)
    rng = np.random.default_rng(11)
    rows = rng.permutation(args.n)
    upd, dele = rows[:N_CHANGED], rows[N_CHANGED : 2 * N_CHANGED]
    n_filtered = min(N_FILTERED, args.queries)
    doc_words = [wl.THEMES[i % len(wl.THEMES)] for i in range(n_filtered)]
    plan = {
        "k": K,
        "batch": BATCH,
        "n_filtered": n_filtered,
        "doc_words": doc_words,
        "get_rows": rng.choice(args.n, 1000, replace=False).tolist(),
        "update_rows": upd.tolist(),
        "delete_rows": dele.tolist(),
    }
    (data / "plan.json").write_text(json.dumps(plan))
    new_vecs = wl.extra_vectors(N_CHANGED, args.dim)
    np.save(data / "new_vectors.npy", new_vecs)

    cat = np.array([m["category"] for m in ds.metadatas])
    year = np.array([m["year"] for m in ds.metadatas])
    score = np.array([m["score"] for m in ds.metadatas])
    masks = {
        "eq": cat == "c3",
        "range": (year >= 2015) & (cat != "c1"),
    }
    for name, m in masks.items():
        np.save(data / f"mask_{name}.npy", m)
    get_masks = [masks["eq"], masks["range"], score < 0.1, (cat == "c7") | (year <= 2001)]
    word_rows = {w: np.flatnonzero([w in d for d in ds.documents]) for w in sorted(set(doc_words))}

    x, q = ds.vectors, ds.queries
    fq = q[:n_filtered]

    def as_ids(rows_: list[list[int]]) -> list[list[str]]:
        return [[ds.ids[i] for i in r] for r in rows_]

    doc_truth: list[list[str]] = []
    for i, w in enumerate(doc_words):
        doc_truth += as_ids(wl.exact_knn(x, fq[i : i + 1], K, word_rows[w]))
    post = x.copy()
    post[upd] = new_vecs
    alive = np.setdiff1d(np.arange(args.n), dele)
    post_truth = as_ids(wl.exact_knn(post, q[:N_POST], K, alive))
    return {
        "knn": as_ids(wl.exact_knn(x, q, K)),
        "eq": as_ids(wl.exact_knn(x, fq, K, np.flatnonzero(masks["eq"]))),
        "range": as_ids(wl.exact_knn(x, fq, K, np.flatnonzero(masks["range"]))),
        "doc": doc_truth,
        "post": post_truth,
        "get_sets": [set(np.array(ds.ids)[m].tolist()) for m in get_masks],
        "get_counts": [int(m.sum()) for m in get_masks],
        "selectivity": {
            "eq": float(masks["eq"].mean()),
            "range": float(masks["range"].mean()),
            "doc": float(np.mean([len(r) for r in word_rows.values()]) / args.n),
        },
        "n_alive": int(alive.size),
    }


# ---------------------------------------------------------------- the table


def _mean(v: list[float]) -> float:
    return float(np.mean(v))


def _lat(r: dict[str, Any], key: str) -> str:
    v = r[key + "_ms"]
    return " / ".join(f"{x:.2f}" for x in (_mean(v), *np.percentile(v, [50, 95]), max(v)))


def _ok(value: float | None, cond: Callable[[float], bool]) -> str:
    if value is None or np.isnan(value):
        return "?"
    return "yes" if cond(value) else "**no**"


def build_table(res: dict[str, dict[str, Any]], truth: dict[str, Any], n: int) -> str:
    """The markdown table: measurements x libraries, ratio and target columns."""
    t, c = res.get("tintdb", {}), res.get("chromadb", {})
    lines: list[str] = []

    def val(r: dict[str, Any], f: Callable[[dict[str, Any]], Any]) -> Any:
        try:
            return f(r)
        except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
            return None

    def row(
        label: str,
        show: Callable[[dict[str, Any]], str],
        cost: Callable[[dict[str, Any]], float] | None = None,
        target: str = "",
        met: Callable[[float, dict[str, Any], dict[str, Any]], bool] | None = None,
        libs: tuple[str, ...] = ("tintdb", "chromadb", "hnswlib"),
        p50: str | None = None,
    ) -> None:
        cells = []
        for lib in LIBS:
            r = res.get(lib)
            if r is None:
                cells.append("")
            elif lib not in libs:
                cells.append("—")
            else:
                s = val(r, show)
                cells.append("n/a" if s is None else s)
        ratio_s, met_s = "", ""
        if cost is not None and t and c:
            tc, cc = val(t, cost), val(c, cost)
            if tc and cc:
                ratio = cc / tc
                ratio_s = f"{ratio:.2f}"
                if met is not None:
                    met_s = _ok(ratio, lambda x: met(x, t, c))
                    if t.get("errors") or c.get("errors"):
                        met_s = "? (errors)"
                tm, cm = (
                    val(t, lambda r: np.median(r[f"{p50}_ms"])),
                    val(c, lambda r: np.median(r[f"{p50}_ms"])),
                )
                if p50 and tm and cm:
                    ratio_s += f" (p50: {cm / tm:.2f})"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio_s} | {target} | {met_s} |")

    def rec(key: str, tkey: str) -> Callable[[dict[str, Any]], str]:
        return lambda r: f"{wl.recall(r[key], truth[tkey]):.4f}"

    def recall_of(r: dict[str, Any], key: str, tkey: str) -> float:
        return wl.recall(r[key], truth[tkey])

    sel = truth["selectivity"]
    row(
        f"add {n} in batches of {BATCH}, s",
        lambda r: f"{r['add_s']:.1f}",
        lambda r: r["add_s"],
        ">= 3 (the call alone)",
        lambda x, *_: x >= 3,
    )
    row("add throughput, vectors/s", lambda r: f"{n / r['add_s']:,.0f}")
    row(
        "first query after add, ms",
        lambda r: f"{r['first_query_s'] * 1e3:.1f}",
        lambda r: r["first_query_s"],
    )
    row(
        "add → searchable (add + first query), s",
        lambda r: f"{r['add_s'] + r['first_query_s']:.1f}",
        lambda r: r["add_s"] + r["first_query_s"],
        ">= 3",
        lambda x, *_: x >= 3,
    )
    row(
        "single query (n_results=10), ms mean / p50 / p95 / max",
        lambda r: _lat(r, "query"),
        lambda r: _mean(r["query_ms"]),
        p50="query",
        target=">= 3, recall >=",
        met=lambda x, tt, cc: (
            x >= 3 and recall_of(tt, "query_ids", "knn") >= recall_of(cc, "query_ids", "knn") - 5e-4
        ),
    )
    row("single query recall@10", rec("query_ids", "knn"))

    def matched(r: dict[str, Any]) -> tuple[int, str]:
        """tintdb's narrowest beam whose recall is at least chromadb's (at its default)."""
        want = recall_of(c, "query_ids", "knn") - 5e-4
        for ef, key in [(DEFAULT_EF, "query"), *((e, f"query_ef{e}") for e in SWEEP_EF)]:
            if f"{key}_ids" in r and recall_of(r, f"{key}_ids", "knn") >= want:
                return ef, key
        raise ValueError("no swept beam reached chromadb's recall")

    row(
        "single query at chromadb's recall or better: ef_search, ms mean / p50 / p95 / max, recall",
        lambda r: (
            f"{matched(r)[0]}: {_lat(r, matched(r)[1])}, "
            f"{recall_of(r, matched(r)[1] + '_ids', 'knn'):.4f}"
        ),
        lambda r: _mean(r[f"{matched(r)[1]}_ms"]) if r is t else _mean(r["query_ms"]),
        target=">= 3 at equal or better recall",
        met=lambda x, *_: x >= 3,
        libs=("tintdb",),
    )
    row(
        f"{len(truth['knn'])} queries in one call, s",
        lambda r: f"{r['batch_s']:.2f}",
        lambda r: r["batch_s"],
    )
    row("batch recall@10", rec("batch_ids", "knn"))
    row(
        f"where category == c3 ({sel['eq']:.0%}), ms mean / p50 / p95 / max",
        lambda r: _lat(r, "eq"),
        lambda r: _mean(r["eq_ms"]),
        p50="eq",
        target=">= 20, recall >= 0.99",
        met=lambda x, tt, _c: x >= 20 and recall_of(tt, "eq_ids", "eq") >= 0.99,
    )
    row("  recall@10 vs exact filtered", rec("eq_ids", "eq"))
    row(
        f"where year >= 2015 and category != c1 ({sel['range']:.0%}), ms mean / p50 / p95 / max",
        lambda r: _lat(r, "range"),
        lambda r: _mean(r["range_ms"]),
        p50="range",
        target=">= 20, recall >= 0.99",
        met=lambda x, tt, _c: x >= 20 and recall_of(tt, "range_ids", "range") >= 0.99,
    )
    row("  recall@10 vs exact filtered", rec("range_ids", "range"))
    row(
        f"where_document $contains word ({sel['doc']:.0%}), ms mean / p50 / p95 / max",
        lambda r: _lat(r, "doc"),
        lambda r: _mean(r["doc_ms"]),
        p50="doc",
        target=">= 10",
        met=lambda x, *_: x >= 10,
    )
    row("  recall@10 vs exact filtered", rec("doc_ids", "doc"))

    def get_where_ok(r: dict[str, Any]) -> str:
        bad = 0
        for i, ids in enumerate(r["get_where_ids"]):
            j = i % len(GET_WHERES)
            want = min(100, truth["get_counts"][j])
            bad += len(ids) != want or not set(ids) <= truth["get_sets"][j]
        return "all correct" if bad == 0 else f"**{bad} wrong**"

    row(
        "get(where, limit=100), ms mean / p50 / p95 / max",
        lambda r: _lat(r, "get_where"),
        lambda r: _mean(r["get_where_ms"]),
        p50="get_where",
        target=">= 10",
        met=lambda x, *_: x >= 10,
        libs=("tintdb", "chromadb"),
    )
    row("  results (count and match)", get_where_ok, libs=("tintdb", "chromadb"))
    row(
        "get 1,000 ids, ms (median of 5)",
        lambda r: f"{np.median(r['get_ids_ms']):.1f} ({r['get_ids_found']} found)",
        lambda r: float(np.median(r["get_ids_ms"])),
        libs=("tintdb", "chromadb"),
    )
    row(
        f"update {N_CHANGED} (embeddings + metadata), ms",
        lambda r: f"{r['update_s'] * 1e3:.0f}",
        lambda r: r["update_s"],
    )
    row(f"delete {N_CHANGED}, ms", lambda r: f"{r['delete_s'] * 1e3:.0f}", lambda r: r["delete_s"])
    row(
        "after changes: count / updated found / deleted found",
        lambda r: (
            f"{r['count_after']} / {r.get('updated_meta_found', '—')} / "
            f"{r.get('deleted_found', '—')}"
        ),
    )
    row(
        f"after changes: {N_POST} queries, ms mean / p50 / p95 / max",
        lambda r: _lat(r, "post"),
        lambda r: _mean(r["post_ms"]),
        p50="post",
    )
    row("  recall@10 (deleted gone, updated moved)", rec("post_ids", "post"))
    row("close, ms", lambda r: f"{r['close_s'] * 1e3:.0f}", lambda r: r["close_s"])
    row(
        "reopen in the same process → first result, ms",
        lambda r: f"{r['reopen_s'] * 1e3:.0f}",
        lambda r: r["reopen_s"],
    )
    row(
        "**new process: open → first result, ms**",
        lambda r: f"{r['cold_first_s'] * 1e3:.0f}",
        lambda r: r["cold_first_s"],
        "<= 1x time",
        lambda x, *_: x >= 1,
    )
    row(
        f"  new process: next {N_POST - 1} queries, ms mean / p50 / p95 / max",
        lambda r: _lat(r, "cold_next"),
        lambda r: _mean(r["cold_next_ms"]),
        p50="cold_next",
    )
    row("  new process: recall@10", lambda r: f"{wl.recall(r['cold_ids'], truth['post']):.4f}")
    row(
        "disk after close, MB",
        lambda r: f"{r['disk_mb']:.0f}",
        lambda r: r["disk_mb"],
        "<= 1x",
        lambda x, *_: x >= 1,
    )
    row(
        "disk after the new process, MB",
        lambda r: f"{r['disk_after_reopen_mb']:.0f}",
        lambda r: r["disk_after_reopen_mb"],
    )
    row(
        "**peak RSS of the workload process, MB**",
        lambda r: f"{r['peak_rss_mb']:.0f}",
        lambda r: r["peak_rss_mb"],
        "<= 1x",
        lambda x, *_: x >= 1,
    )
    row(
        "  same, minus RSS before import (data alone), MB",
        lambda r: f"{r['peak_rss_mb'] - r['rss_before_import_mb']:.0f}",
        lambda r: r["peak_rss_mb"] - r["rss_before_import_mb"],
        "<= 1x",
        lambda x, *_: x >= 1,
    )
    row(
        "peak RSS of the new process (open + 100 queries), MB",
        lambda r: (
            f"{r['cold_peak_rss_mb']:.0f} "
            f"({r['cold_peak_rss_mb'] - r['rss_before_open_mb']:.0f} after import)"
        ),
        lambda r: r["cold_peak_rss_mb"],
    )

    lines.append("")
    lines.append(
        "CPU time of the process per operation (time.process_time: all threads, "
        "so it is little changed by a busy machine), ms"
    )
    lines.append("")
    lines.append("| operation | tintdb | chromadb | hnswlib | chromadb ÷ tintdb |")
    lines.append("|---|---|---|---|---|")
    per_op = [
        ("add, per batch of 1,000", "add", n / BATCH),
        ("single query", "query", len(truth["knn"])),
        ("where category == c3", "eq", len(truth["eq"])),
        ("where year/category range", "range", len(truth["range"])),
        ("where_document $contains", "doc", len(truth["doc"])),
        ("get(where, limit=100)", "get_where", N_GET),
        ("get 1,000 ids", "get_ids", 5),
        (f"update {N_CHANGED}", "update", 1),
        (f"delete {N_CHANGED}", "delete", 1),
    ]
    for label, key, count in per_op:
        cells, vals = [], {}
        for lib in LIBS:
            v = val(
                res.get(lib, {}), lambda r, key=key, count=count: r[f"{key}_cpu_s"] * 1e3 / count
            )
            vals[lib] = v
            cells.append("" if lib not in res else ("—" if v is None else f"{v:.2f}"))
        ratio = (
            f"{vals['chromadb'] / vals['tintdb']:.2f}"
            if vals.get("chromadb") and vals.get("tintdb")
            else ""
        )
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")

    head = (
        "| measurement | tintdb | chromadb | hnswlib | chromadb ÷ tintdb (>1: tintdb better)"
        " | target | met |"
    )
    return "\n".join([head, "|---|---|---|---|---|---|---|", *lines])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="vectors (default 100000)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=500, help="single queries (default 500)")
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
    ap.add_argument("--timeout", type=float, default=3600, help="per subprocess, s")
    ap.add_argument(
        "--tintdb-rev",
        metavar="REV",
        help="benchmark tintdb as committed at REV (e.g. HEAD) instead of the working tree",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--reopen", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        if args.worker == "hnswlib":
            hnswlib_worker(args.data, args.db, args.out)
        else:
            api_worker(args.worker, args.data, args.db, args.out)
        return
    if args.reopen:
        if args.reopen == "hnswlib":
            hnswlib_reopen(args.data, args.db, args.out)
        else:
            api_reopen(args.reopen, args.data, args.db, args.out)
        return

    libs = [s.strip() for s in args.libs.split(",") if s.strip()]
    if set(libs) - set(LIBS) or not libs:
        ap.error(f"--libs: choose from {LIBS}")
    pythons = {lib: _python_for(lib) for lib in libs}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` cleans up
    load_note = wl.wait_quiet(0.5, args.wait_quiet)
    tmp = Path(tempfile.mkdtemp(prefix="tintdb-bench-"))
    started = time.strftime("%Y-%m-%d %H:%M")
    try:
        print(f"making {args.n} x {args.dim} vectors and exact answers ...", file=sys.stderr)
        truth = _prepare(args, tmp)
        src = _checkout(args.tintdb_rev, tmp / "src") if args.tintdb_rev else None
        results: dict[str, dict[str, Any]] = {}
        for lib in libs:
            print(f"{lib}: workload ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            load_before = os.getloadavg()[0]
            lib_src = src if lib == "tintdb" else None
            r = _run(pythons[lib], "--worker", lib, tmp, tmp / f"{lib}.json", args.timeout, lib_src)
            if "error" not in r:
                print(f"{lib}: new process reopen ...", file=sys.stderr, flush=True)
                out = tmp / f"{lib}-reopen.json"
                r.update(_run(pythons[lib], "--reopen", lib, tmp, out, args.timeout, lib_src))
            r.setdefault("lib", lib)
            r["load"] = (load_before, os.getloadavg()[0])
            print(f"{lib}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            shutil.rmtree(tmp / f"db-{lib}", ignore_errors=True)
            results[lib] = r
        load_note += f", at end {os.getloadavg()[0]:.2f}"
        print(_header(args, started, results, load_note))
        print(build_table(results, truth, args.n))
        problems = [
            f"- {lib}: {name}: {msg}"
            for lib, r in results.items()
            for name, msg in {
                **r.get("errors", {}),
                **({"run": r["error"]} if "error" in r else {}),
            }.items()
        ]
        if problems:
            print("\nFailures:\n" + "\n".join(problems))
        if args.json:
            args.json.write_text(json.dumps({"results": results}, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _checkout(rev: str, dest: Path) -> Path:
    """Extract tintdb/ as committed at `rev` into `dest`; return `dest`."""
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "tintdb"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    # Bytecode, as installing a wheel compiles it (chromadb's was compiled by pip): with
    # PYTHONDONTWRITEBYTECODE set, every fresh process would otherwise compile tintdb's
    # modules again, about 50 ms inside the timed reopen.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest / "tintdb")], check=True)
    return dest


def _tintdb_commit(rev: str | None) -> str:
    """The commit measured: `rev`, or HEAD marked '+dirty' if tintdb/ has uncommitted changes."""
    if rev:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", rev], capture_output=True, text=True
        )
        return f"({out.stdout.strip() or rev}, committed)"
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "tintdb"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "(commit unknown)"
    return f"({head}{'+dirty' if dirty else ''})"


def _header(
    args: argparse.Namespace, started: str, results: dict[str, dict[str, Any]], load: str
) -> str:
    """Date, machine, versions, BLAS and load: what a reader needs to weigh the numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = ", ".join(f"{lib} {r.get('version', '?')}" for lib, r in results.items())
    if "tintdb" in results:
        versions = versions.replace("tintdb ", f"tintdb {_tintdb_commit(args.tintdb_rev)} ", 1)
    loads = ", ".join(
        f"{lib} {r['load'][0]:.1f}→{r['load'][1]:.1f}" for lib, r in results.items() if "load" in r
    )
    return (
        f"## Core workload: {args.n} x {args.dim}, 100 clusters, k={K}\n"
        f"{started}; {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"{versions}\n{wl.blas_info()}\n{load}; per library (before→after): {loads}\n"
        f"latencies: mean / p50 / p95 / max over {args.queries} single queries, "
        f"{min(N_FILTERED, args.queries)} per filtered kind, {N_GET} get(where) calls; "
        "ratio = chromadb ÷ tintdb for times, memory and disk, so > 1 means tintdb is better\n"
    )


if __name__ == "__main__":
    main()
