"""Moving data: copy throughput from Chroma, and backup time of a large store.

    .venv/bin/python bench/bench_moving.py                 # 100k x 384, 1 GB backup
    .venv/bin/python bench/bench_moving.py --records 20000 --backup-gb 0.2   # quick

Needs .venv-chromadb (bash tests/peers/setup.sh): chromadb 1.5.9 writes the Chroma
directory (its own ``add``, timed: the floor for migration), serves it with
``chroma run``, and reads it through the chromadb package. Rows:

* chromadb ``add`` of the records, in its largest batches;
* ``tintdb copy`` from the Chroma directory, its files read directly (tintdb's venv);
* the same through the chromadb package (tintdb run inside .venv-chromadb);
* ``tintdb copy`` from ``chroma run`` over HTTP;
* ``tintdb backup`` of a store of about ``--backup-gb`` GB, and its restore.

Every copy verifies at the end (counts and 200 records field by field), and that time
is included. Results go to stdout as a markdown table, with ``uptime`` before and after
(the machine is shared: load changes the numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("TINTDB_CHROMADB_VENV", ROOT / ".venv-chromadb"))

MAKE = """
import sys, time, numpy as np, chromadb
from chromadb.config import Settings
path, n, dim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
client = chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))
col = client.create_collection("bench", metadata={"hnsw:space": "cosine"}, embedding_function=None)
rng = np.random.default_rng(0)
step = client.get_max_batch_size()
began = time.perf_counter()
for s in range(0, n, step):
    e = min(n, s + step)
    col.add(ids=[f"id{i}" for i in range(s, e)],
            embeddings=rng.normal(size=(e - s, dim)).astype(np.float32),
            metadatas=[{"i": i, "group": f"g{i % 10}"} for i in range(s, e)],
            documents=[f"document {i}" for i in range(s, e)])
print(time.perf_counter() - began)
"""


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def timed(cmd: list[str], **kw: object) -> float:
    began = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - began


@contextlib.contextmanager
def chroma_server(path: Path):  # type: ignore[no-untyped-def]
    import httpx
    import psutil

    proc = subprocess.Popen(
        [
            str(VENV / "bin" / "chroma"),
            "run",
            "--path",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            for conn in psutil.Process(proc.pid).net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    url = f"http://127.0.0.1:{conn.laddr.port}"
                    with contextlib.suppress(httpx.HTTPError):
                        if httpx.get(url + "/api/v2/heartbeat").is_success:
                            yield url
                            return
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait()


def build_store(path: Path, gb: float, dim: int = 384) -> int:
    import tintdb

    n = int(gb * 1e9 / (dim * 4 + 120))
    client = tintdb.PersistentClient(path=str(path))
    col = client.create_collection("big", embedding_function=None)
    rng = np.random.default_rng(1)
    for s in range(0, n, 20_000):
        e = min(n, s + 20_000)
        col.add(
            ids=[f"r{i}" for i in range(s, e)],
            embeddings=rng.normal(size=(e - s, dim)).astype(np.float32),
            metadatas=[{"i": i} for i in range(s, e)],
        )
    client.close()
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--backup-gb", type=float, default=1.0)
    parser.add_argument("--skip-backup", action="store_true")
    args = parser.parse_args()
    chroma_py = VENV / "bin" / "python"
    if not chroma_py.exists():
        sys.exit(f"{chroma_py} is missing: bash tests/peers/setup.sh")
    n = args.records
    rows = []
    before = uptime()
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as tmp_name:
        tmp = Path(tmp_name)
        chroma_dir = tmp / "chroma"
        out = subprocess.run(
            [str(chroma_py), "-c", MAKE, str(chroma_dir), str(n), str(args.dim)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        add = float(out.strip().splitlines()[-1])
        rows.append(("chromadb add (the floor)", n, add))
        tintdb_cli = [sys.executable, "-m", "tintdb", "copy", "-q"]
        rows.append(
            (
                "copy Chroma directory, files read directly",
                n,
                timed([*tintdb_cli, str(chroma_dir), str(tmp / "t1")]),
            )
        )
        rows.append(
            (
                "copy Chroma directory, through chromadb",
                n,
                timed(
                    [str(chroma_py), "-m", "tintdb", "copy", "-q", str(chroma_dir), str(tmp / "t2")]
                ),
            )
        )
        served = tmp / "served"
        shutil.copytree(chroma_dir, served)
        with chroma_server(served) as url:
            rows.append(
                ("copy from chroma run over HTTP", n, timed([*tintdb_cli, url, str(tmp / "t3")]))
            )
        rows.append(
            ("export to .jsonl", n, timed([*tintdb_cli, str(tmp / "t1"), str(tmp / "e.jsonl")]))
        )
        rows.append(
            ("import from .jsonl", n, timed([*tintdb_cli, str(tmp / "e.jsonl"), str(tmp / "t4")]))
        )
        for path in ("t2", "t3", "t4", "served", "chroma"):
            shutil.rmtree(tmp / path, ignore_errors=True)
        backup_rows = []
        if not args.skip_backup:
            big = tmp / "big"
            count = build_store(big, args.backup_gb)
            size = sum(f.stat().st_size for f in big.rglob("*") if f.is_file())
            took = timed(
                [sys.executable, "-m", "tintdb", "backup", "--path", str(big), str(tmp / "bk")]
            )
            back = timed(
                [
                    sys.executable,
                    "-m",
                    "tintdb",
                    "restore",
                    str(tmp / "bk"),
                    "--path",
                    str(tmp / "rs"),
                ]
            )
            backup_rows = [
                (f"backup of {size / 1e9:.2f} GB ({count:,} x {args.dim})", took),
                ("restore of it", back),
            ]
    after = uptime()
    print(f"uptime before: {before}\nuptime after:  {after}\n")
    print(f"| {n:,} x {args.dim} | seconds | records/s |\n|---|---:|---:|")
    for name, count, secs in rows:
        print(f"| {name} | {secs:.1f} | {count / secs:,.0f} |")
    if backup_rows:
        print("\n| store | seconds |\n|---|---:|")
        for name, secs in backup_rows:
            print(f"| {name} | {secs:.1f} |")


if __name__ == "__main__":
    main()
