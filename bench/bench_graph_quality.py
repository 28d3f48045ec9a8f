"""Graph quality: recall@10 of many builds of the same records, tintdb and chromadb in turn.

Run by hand: ``.venv/bin/python bench/bench_graph_quality.py [--builds 8] [--n 100000]``.
Each build is a fresh store in a process of its own (tintdb in the project virtualenv,
chromadb 1.5.9 in ``bench/.venv-chroma``), loaded with the matrix's vectors in calls of
1,000, its graph waited for, then asked the 500 held-out queries (``n_results=10``,
``include=[]``) at the default parameters. The builds alternate between the libraries,
so the machine's hour weighs on both alike.

A build's recall moves by several thousandths from one build to the next: on clustered
data a few queries' searches end in the wrong cluster and find none of their ten
neighbours ("lost whole"), and how many depends on the build's random levels (and, on
two threads, the order of insertion). One build says little; this prints each build,
then the mean, standard deviation and standard error per library.
``--construction-ef E`` builds with ``hnsw:construction_ef`` E on both (the default is
100 in both): the cost of a better graph, in build time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _workload as wl
import numpy as np

HERE = Path(__file__).resolve().parent
CHROMA_VENV = HERE / ".venv-chroma"
CHROMA = "chromadb==1.5.9"
K = 10
BATCH = 1000


def build(lib: str, data: Path, name: str, construction_ef: int | None) -> dict[str, object]:
    """In this process (a worker): one build of ``lib`` and its answers' recall."""
    vectors = np.load(data / "vectors.npy")
    queries = np.load(data / "queries.npy")
    truth = np.load(data / "truth.npy")
    meta = {"hnsw:construction_ef": construction_ef} if construction_ef else None
    with tempfile.TemporaryDirectory() as path:
        if lib == "tintdb":
            import tintdb

            client = tintdb.PersistentClient(path=path)
            col = client.create_collection(name, embedding_function=None, metadata=meta)
        else:
            import chromadb

            client = chromadb.PersistentClient(path=path)
            col = client.create_collection(name, embedding_function=None, metadata=meta)
        t0 = time.perf_counter()
        for s in range(0, len(vectors), BATCH):
            rows = range(s, min(s + BATCH, len(vectors)))
            col.add(ids=[f"id{i}" for i in rows], embeddings=vectors[s : s + BATCH])
        if lib == "tintdb":
            client._backend.keeper.wait_jobs()  # the graph holds every record
        built = time.perf_counter() - t0
        got = col.query(query_embeddings=queries, n_results=K, include=[])["ids"]
        if lib == "tintdb":
            client.close()
    pairs = zip(got, truth, strict=True)
    found = [len({int(x[2:]) for x in ids} & set(t.tolist())) for ids, t in pairs]
    return {
        "lib": lib,
        "build_s": round(built, 1),
        "recall": float(np.mean(found)) / K,
        "lost_whole": sum(f == 0 for f in found),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--builds", type=int, default=8, help="builds per library")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--libs", default="tintdb,chromadb")
    ap.add_argument("--construction-ef", type=int, default=None)
    ap.add_argument("--json", help="also write every build's numbers here")
    ap.add_argument("--worker", nargs=3, metavar=("LIB", "DATA", "NAME"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        lib, data, name = args.worker
        print(json.dumps(build(lib, Path(data), name, args.construction_ef)))
        return
    libs = args.libs.split(",")
    python = {"tintdb": Path(sys.executable)}
    if "chromadb" in libs:
        python["chromadb"] = wl.ensure_venv(CHROMA_VENV, [CHROMA, "numpy"], "import chromadb")
    print(f"# {wl.blas_info()}; {args.n:,} x 384, {args.builds} builds each", flush=True)
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        ds = wl.make_dataset(args.n)
        np.save(data / "vectors.npy", ds.vectors)
        np.save(data / "queries.npy", ds.queries)
        np.save(data / "truth.npy", np.array(wl.exact_knn(ds.vectors, ds.queries, K)))
        del ds
        for b in range(args.builds):
            for lib in libs:
                cmd = [str(python[lib]), __file__, "--worker", lib, str(data), f"quality{b}"]
                if args.construction_ef:
                    cmd += ["--construction-ef", str(args.construction_ef)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=HERE)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                results.append(row)
                print(
                    f"build {b + 1} {lib:9} recall@10 {row['recall']:.4f}, lost whole "
                    f"{row['lost_whole']}, built in {row['build_s']} s",
                    flush=True,
                )
    print("\n| library | builds | mean recall@10 | sd | standard error | lost whole, mean |")
    print("|---|---|---|---|---|---|")
    for lib in libs:
        rec = [float(r["recall"]) for r in results if r["lib"] == lib]  # type: ignore[arg-type]
        lost = [int(r["lost_whole"]) for r in results if r["lib"] == lib]  # type: ignore[call-overload]
        sd = statistics.stdev(rec) if len(rec) > 1 else float("nan")
        print(
            f"| {lib} | {len(rec)} | {statistics.mean(rec):.4f} | {sd:.4f} | "
            f"{sd / len(rec) ** 0.5:.4f} | {statistics.mean(lost):.2f} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
