"""Many clients at once through real HTTP: every acknowledged write is there afterwards,
even after the server is killed with SIGKILL."""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _server import TintServer

import tintdb
from tintdb._client import Client
from tintdb._http import HttpBackend, HttpClient

DURATION = 3.0  # seconds of mixed traffic
DIM = 8
# However the server behaves, the test ends: no request waits longer than this...
REQUEST_TIMEOUT = 10.0
# ...and the threads get this long, all together, to finish after DURATION.
JOIN_TIMEOUT = 15.0


def _connect(server: TintServer) -> tintdb.Client:
    return Client(backend=HttpBackend(server.host, server.port, timeout=REQUEST_TIMEOUT))


def _vector(rng: random.Random) -> list[float]:
    return [rng.uniform(-1, 1) for _ in range(DIM)]


class Load:
    """Shared bookkeeping: what each thread was told succeeded, and what went wrong."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.vectors: dict[str, list[float]] = {}  # acknowledged and not deleted
        self.deleted: set[str] = set()
        self.failures: list[str] = []
        self.reads = 0

    def run(self, name: str, step: Callable[[], None]) -> None:
        while not self.stop.is_set():
            try:
                step()
            except Exception as exc:
                with self.lock:
                    self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
                return


def test_mixed_reads_and_writes_lose_nothing(tmp_path: Path) -> None:
    load = Load()
    with TintServer(tmp_path / "store") as server, contextlib.ExitStack() as opened:

        def connect() -> tintdb.Client:  # closed when the test ends
            return opened.enter_context(_connect(server))

        setup = connect()
        busy = setup.create_collection("busy", embedding_function=None)
        seed_rng = random.Random(0)
        seeds = {f"seed{i}": _vector(seed_rng) for i in range(200)}
        busy.add(
            ids=list(seeds),
            embeddings=list(seeds.values()),
            metadatas=[{"group": i % 4} for i in range(200)],
        )
        load.vectors.update(seeds)

        def writer(k: int) -> Callable[[], None]:
            client, rng, mine, n = connect(), random.Random(k), [], [0]
            col = client.get_collection("busy", embedding_function=None)

            def step() -> None:
                n[0] += 1
                roll = rng.random()
                if roll < 0.6 or not mine:
                    ids = [f"w{k}-{n[0]}-{j}" for j in range(5)]
                    vecs = [_vector(rng) for _ in ids]
                    col.add(ids=ids, embeddings=vecs, metadatas=[{"group": k % 4}] * 5)
                    with load.lock:
                        load.vectors.update(zip(ids, vecs, strict=True))
                    mine.extend(ids)
                elif roll < 0.8:
                    target = rng.choice(mine)
                    vec = _vector(rng)
                    col.upsert(ids=[target], embeddings=[vec], metadatas=[{"group": 9}])
                    with load.lock:
                        load.vectors[target] = vec
                else:
                    target = mine.pop(rng.randrange(len(mine)))
                    assert col.delete(ids=[target]) == {"deleted": 1}
                    with load.lock:
                        del load.vectors[target]
                        load.deleted.add(target)

            return step

        def reader(k: int) -> Callable[[], None]:
            client, rng = connect(), random.Random(100 + k)
            col = client.get_collection("busy", embedding_function=None)

            def step() -> None:
                where = {"group": rng.randrange(4)} if rng.random() < 0.5 else None
                found = col.query(query_embeddings=[_vector(rng)], n_results=5, where=where)
                distances = found["distances"][0]
                assert len(found["ids"][0]) == 5 and distances == sorted(distances)
                some = rng.sample(sorted(seeds), 3)
                assert sorted(col.get(ids=some)["ids"]) == sorted(some)  # seeds stay
                assert col.count() >= len(seeds)
                with load.lock:
                    load.reads += 1

            return step

        def churn() -> None:
            with _connect(server) as client:
                name = f"tmp-{threading.get_ident()}-{time.monotonic_ns()}"
                col = client.create_collection(name, embedding_function=None)
                col.add(ids=["x"], embeddings=[[1.0] * DIM])
                client.delete_collection(name)

        steps = [(f"writer{k}", writer(k)) for k in range(4)]
        steps += [(f"reader{k}", reader(k)) for k in range(4)]
        steps.append(("churn", churn))
        threads = [threading.Thread(target=load.run, args=s, daemon=True) for s in steps]
        for t in threads:
            t.start()
        time.sleep(DURATION)
        load.stop.set()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        hung = [name for (name, _), t in zip(steps, threads, strict=True) if t.is_alive()]
        assert not hung, f"clients still waiting: {hung}\n{server.output()[-3000:]}"
        assert not load.failures, "\n".join(load.failures) + "\n" + server.output()[-3000:]
        assert load.reads > 0 and len(load.vectors) > len(seeds)

        _check_everything_is_there(setup, load)
        # SIGKILL: no snapshot, no clean shutdown. Acknowledged means on disk.
        assert server._proc is not None
        server._proc.send_signal(signal.SIGKILL)
        server._proc.wait(30)

    with TintServer(tmp_path / "store") as again, _connect(again) as client:
        _check_everything_is_there(client, load)


def _check_everything_is_there(client: tintdb.Client, load: Load) -> None:
    col = client.get_collection("busy", embedding_function=None)
    stored = col.get(include=["embeddings"])
    present = dict(zip(stored["ids"], stored["embeddings"], strict=True))
    missing = set(load.vectors) - set(present)
    assert not missing, f"{len(missing)} acknowledged records are missing: {sorted(missing)[:5]}"
    assert not (load.deleted & set(present)), "deleted records came back"
    assert len(present) == len(load.vectors) == col.count()
    for rid, vec in load.vectors.items():
        np.testing.assert_array_equal(present[rid], np.asarray(vec, dtype=np.float32))
    assert [c.name for c in client.list_collections()] == ["busy"]


@pytest.mark.parametrize("clients", [16])
def test_many_clients_creating_collections_at_once(tmp_path: Path, clients: int) -> None:
    """Concurrent creates of the same name: exactly one wins, the rest see 409 or get it."""
    with TintServer(tmp_path / "store") as server:
        outcomes: list[str] = []
        barrier = threading.Barrier(clients)

        def race(i: int) -> None:
            client = _connect(server)
            barrier.wait(timeout=JOIN_TIMEOUT)
            try:
                if i % 2:
                    client.get_or_create_collection("contested", embedding_function=None)
                    outcomes.append("got")
                else:
                    client.create_collection("contested", embedding_function=None)
                    outcomes.append("created")
            except tintdb.errors.UniqueConstraintError:
                outcomes.append("conflict")
            except Exception as exc:  # anything else is a bug
                outcomes.append(f"{type(exc).__name__}: {exc}")
            finally:
                client.close()

        threads = [threading.Thread(target=race, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        assert len(outcomes) == clients
        assert set(outcomes) <= {"got", "created", "conflict"}, outcomes
        assert outcomes.count("created") <= 1
        assert outcomes.count("created") + outcomes.count("conflict") == clients // 2
        with HttpClient(host=server.host, port=server.port) as check:
            assert [c.name for c in check.list_collections()] == ["contested"]
