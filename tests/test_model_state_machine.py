"""Stateful property test: random call sequences on tintdb and the reference model.

A hypothesis ``RuleBasedStateMachine`` drives one collection and the model of
``_model`` with the same add / upsert / update / delete / get / query / peek calls
(random filters included) and compares them after every step: results, errors, and
the whole stored state. It runs for each distance space, in memory and on disk; on
disk a ``reopen`` rule closes the client and opens the store again, a
``switch_client`` rule carries on through a second client open on the same store
(whose index must catch up with the first one's writes), and snapshots of
the vector index are forced often (``hnsw:sync_threshold`` 2) so that loading a
snapshot and replaying the change log are exercised too.

Unfiltered queries go through HNSW, which on collections this small returns the
exact neighbours; the comparison allows for ties and float32 rounding (see
``assert_query``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _model import ERROR_KINDS, Model, ModelError
from _profiles import examples
from conftest import hnsw_for_every_size
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from test_filter_properties import (
    DIM,
    SPACES,
    assert_query,
    assert_records,
    assert_same_state,
    documents,
    metadatas,
    vectors,
    where_documents,
    wheres_for,
)

import tintdb
from tintdb import _exact, _planning, errors

ID_POOL = (*(f"id{i}" for i in range(8)), "é-ü", "x y")
NAME = "machine"


def _weighted_none(strategy: st.SearchStrategy[Any], one_in: int) -> st.SearchStrategy[Any]:
    """``strategy``, or None once in ``one_in`` draws."""
    return st.tuples(st.sampled_from(range(one_in)), strategy).map(lambda t: t[1] if t[0] else None)


def id_lists(pool: tuple[str, ...] | list[str] = ID_POOL) -> st.SearchStrategy[list[str]]:
    """1-4 ids; one list in eight may repeat an id (DuplicateIDError)."""
    distinct = st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True)
    repeats = st.lists(st.sampled_from(pool), min_size=2, max_size=4)
    return st.tuples(st.sampled_from(range(8)), distinct, repeats).map(
        lambda t: t[1] if t[0] else t[2]
    )


@st.composite
def batches(
    draw: st.DrawFn, *, embeddings: bool = True, none_values: bool = False
) -> dict[str, Any]:
    """Arguments of one add/upsert/update call; rarely with a wrong dimension."""
    ids = draw(id_lists())
    n = len(ids)
    dim = draw(st.sampled_from((DIM,) * 15 + (DIM - 1,)))
    out: dict[str, Any] = {"ids": ids}
    if embeddings:
        out["embeddings"] = draw(st.lists(vectors(dim), min_size=n, max_size=n))
    out["metadatas"] = draw(
        _weighted_none(st.lists(metadatas(none_values), min_size=n, max_size=n), 4)
    )
    if embeddings:  # without embeddings, documents would need an embedding function
        out["documents"] = draw(_weighted_none(st.lists(documents, min_size=n, max_size=n), 4))
    return out


class CollectionMachine(RuleBasedStateMachine):
    """One collection in tintdb and in the model, kept in lockstep."""

    space = "l2"
    persistent = False
    dsn: str | None = None  # a PostgreSQL database instead (persistent: its store outlives clients)

    def __init__(self) -> None:
        super().__init__()
        local = self.persistent and self.dsn is None
        self.path = Path(tempfile.mkdtemp(prefix="tintdb-machine-")) if local else None
        self.client = self._open()
        if self.dsn is not None:
            self.client.reset()
        metadata: dict[str, Any] = {"hnsw:space": self.space}
        if self.persistent:
            metadata["hnsw:sync_threshold"] = 2
        self.col = self.client.create_collection(NAME, metadata=metadata, embedding_function=None)
        self.model = Model(self.space)
        self.other: tintdb.Client | None = None  # a second client on the same store

    def _open(self) -> tintdb.Client:
        if self.dsn is not None:
            return tintdb.PostgresClient(self.dsn, settings=tintdb.Settings(allow_reset=True))
        if self.path is None:
            return tintdb.EphemeralClient()
        return tintdb.PersistentClient(path=str(self.path))

    def teardown(self) -> None:
        self.client.close()
        if self.other is not None:
            self.other.close()
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)

    # ------------------------------------------------------------ helpers

    def _both(self, on_model: Callable[[], Any], on_tintdb: Callable[[], Any]) -> tuple[Any, Any]:
        """Run the call on both; if the model refuses, tintdb must refuse alike.

        Returns (model answer, tintdb answer), or (None, None) after a refusal.
        """
        try:
            want = on_model()
        except ModelError as refused:
            expected = getattr(errors, ERROR_KINDS[refused.kind])
            with pytest.raises(errors.TintError) as raised:
                on_tintdb()
            assert isinstance(raised.value, expected), (
                f"model: {refused}; tintdb raised {type(raised.value).__name__}: {raised.value}"
            )
            return None, None
        return want, on_tintdb()

    def _filters(self, data: st.DataObject, one_in: int = 2) -> tuple[Any, Any]:
        """A where and a where_document (each None once in ``one_in``), biased to hit."""
        recs = list(self.model.records.values())
        where = data.draw(_weighted_none(wheres_for([r.metadata for r in recs]), one_in), "where")
        where_document = data.draw(
            _weighted_none(where_documents([r.document for r in recs]), one_in),
            "where_document",
        )
        return where, where_document

    def _some_ids(self, data: st.DataObject) -> list[str]:
        """Mostly ids that exist; one draw in four from the whole pool."""
        live = list(self.model.records)
        pool = live if live and data.draw(st.sampled_from(range(4)), "live ids?") else ID_POOL
        return data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4, unique=True))

    # ------------------------------------------------------------ writes

    @initialize(
        n=st.integers(0, 6),
        data=st.data(),
    )
    def seed(self, n: int, data: st.DataObject) -> None:
        """Start from up to six records, so that most steps see a non-empty collection."""
        if n == 0:
            return
        batch = {
            "ids": list(ID_POOL[:n]),
            "embeddings": data.draw(st.lists(vectors(), min_size=n, max_size=n)),
            "metadatas": data.draw(st.lists(metadatas(), min_size=n, max_size=n)),
            "documents": data.draw(st.lists(documents, min_size=n, max_size=n)),
        }
        self._both(lambda: self.model.add(**batch), lambda: self.col.add(**batch))

    @rule(batch=batches())
    def add(self, batch: dict[str, Any]) -> None:
        self._both(lambda: self.model.add(**batch), lambda: self.col.add(**batch))

    @rule(batch=batches(none_values=True))
    def upsert(self, batch: dict[str, Any]) -> None:
        self._both(lambda: self.model.upsert(**batch), lambda: self.col.upsert(**batch))

    @rule(data=st.data())
    def update(self, data: st.DataObject) -> None:
        batch = data.draw(
            st.one_of(batches(none_values=True), batches(embeddings=False, none_values=True)),
            "batch",
        )
        if data.draw(st.booleans(), "existing ids?") and self.model.records:
            live = list(self.model.records)
            ids = data.draw(st.lists(st.sampled_from(live), min_size=1, max_size=len(batch["ids"])))
            batch = {**batch, "ids": (ids + batch["ids"])[: len(batch["ids"])]}
        self._both(lambda: self.model.update(**batch), lambda: self.col.update(**batch))

    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        where, where_document = self._filters(data)
        ids = self._some_ids(data) if data.draw(st.booleans(), "by ids?") else None
        limit = data.draw(_weighted_none(st.integers(0, 3), 2), "limit")
        kwargs = {"ids": ids, "where": where, "where_document": where_document, "limit": limit}
        want, got = self._both(
            lambda: self.model.delete(**kwargs), lambda: self.col.delete(**kwargs)
        )
        if want is not None:
            assert got == {"deleted": want}

    # ------------------------------------------------------------ reads

    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        where, where_document = self._filters(data)
        ids = self._some_ids(data) if data.draw(st.booleans(), "by ids?") else None
        limit = data.draw(_weighted_none(st.integers(0, 4), 2), "limit")
        offset = data.draw(_weighted_none(st.integers(0, 4), 2), "offset")
        kwargs = {
            "ids": ids,
            "where": where,
            "where_document": where_document,
            "limit": limit,
            "offset": offset,
        }
        want, got = self._both(
            lambda: self.model.get(**kwargs),
            lambda: self.col.get(**kwargs, include=["embeddings", "metadatas", "documents"]),
        )
        if want is not None:
            assert_records(self.model, want, got)

    @rule(data=st.data())
    def query(self, data: st.DataObject) -> None:
        where, where_document = self._filters(data)
        ids = None
        # query(ids=) on an EMPTY collection is left to test_query_unknown_ids_on_empty_collection.
        if self.model.records and data.draw(st.sampled_from(range(4)), "by ids?") == 0:
            ids = self._some_ids(data)
        dim = data.draw(st.sampled_from((self.model.dim or DIM,) * 15 + (DIM + 1,)), "dim")
        queries = data.draw(st.lists(vectors(dim), min_size=1, max_size=2), "queries")
        n_results = data.draw(st.integers(1, 12), "n_results")
        kwargs = {"ids": ids, "where": where, "where_document": where_document}
        want, got = self._both(
            lambda: self.model.query(queries, n_results, **kwargs),
            lambda: self.col.query(
                query_embeddings=queries,
                n_results=n_results,
                include=["metadatas", "documents", "distances"],
                **kwargs,
            ),
        )
        if want is not None:
            assert_query(self.model, got, want, n_results)

    @rule(n=st.integers(1, 5))
    def peek(self, n: int) -> None:
        got = self.col.peek(n)
        assert_records(self.model, list(self.model.records)[:n], got)

    @precondition(lambda self: self.persistent)
    @rule()
    def reopen(self) -> None:
        """Close the client and open the store again: everything must still be there."""
        self.client.close()
        self.client = self._open()
        self.col = self.client.get_collection(NAME, embedding_function=None)

    @precondition(lambda self: self.persistent)
    @rule()
    def switch_client(self) -> None:
        """Carry on through a second open client on the same store (opened if needed).

        The idle client keeps its in-memory index, now stale: when it is used again
        it must catch up with the writes made through the other one.
        """
        if self.other is None:
            self.other = self._open()
        self.client, self.other = self.other, self.client
        self.col = self.client.get_collection(NAME, embedding_function=None)

    # ------------------------------------------------------------ after every step

    @invariant()
    def same_state(self) -> None:
        assert_same_state(self.model, self.col)


MACHINE_SETTINGS = settings(
    max_examples=examples(25),
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("persistent", [False, True], ids=["memory", "disk"])
@pytest.mark.parametrize("space", SPACES)
def test_collection_matches_model(space: str, persistent: bool) -> None:
    """Random call sequences leave tintdb and the model in the same state."""
    machine = type(
        f"Machine_{space}_{'disk' if persistent else 'memory'}",
        (CollectionMachine,),
        {"space": space, "persistent": persistent},
    )
    run_state_machine_as_test(machine, settings=MACHINE_SETTINGS)


@pytest.mark.parametrize("plan", ["exact", "graph"])
@pytest.mark.parametrize("space", SPACES)
def test_collection_matches_model_on_postgres(space: str, plan: str, postgres_dsn: str) -> None:
    """The same on the PostgreSQL backend, reopened and switched between clients as a
    store on disk is (fewer examples: each one starts from a reset database). ``graph``:
    every query goes through the HNSW index plans (the window, and its fallback)."""
    machine = type(
        f"Machine_{space}_postgres_{plan}",
        (CollectionMachine,),
        {"space": space, "persistent": True, "dsn": postgres_dsn},
    )
    below = 0 if plan == "graph" else _planning.EXACT_BELOW
    with hnsw_for_every_size(below):
        run_state_machine_as_test(machine, settings=settings(MACHINE_SETTINGS, max_examples=8))


@pytest.mark.parametrize("space", SPACES)
def test_collection_matches_model_with_bfloat16_mirrors(
    space: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same on disk, with every exact search going through a bfloat16 mirror and
    its error bounds (normally only collections of more than 24 MiB of float32 do)."""
    monkeypatch.setattr(_exact, "COMPACT_ABOVE", 0)
    machine = type(
        f"Machine_{space}_disk_bf16", (CollectionMachine,), {"space": space, "persistent": True}
    )
    run_state_machine_as_test(machine, settings=MACHINE_SETTINGS)


@pytest.mark.parametrize("emptied", [False, True], ids=["never-filled", "emptied"])
def test_query_unknown_ids_on_empty_collection(client: tintdb.Client, emptied: bool) -> None:
    """SPEC §2: query(ids=) naming an id not in the collection is an error, empty or not.

    tintdb raises NotFoundError when the collection has other records, but answers
    ``[[]]`` when it has none.
    """
    col = client.create_collection("empty-query", embedding_function=None)
    model = Model()
    if emptied:
        for target in (model, col):
            target.add(ids=["a"], embeddings=[[1.0, 2.0]])
            target.delete(ids=["a"])
    with pytest.raises(ModelError) as refused:
        model.query([[1.0, 2.0]], ids=["nope"])
    assert refused.value.kind == "not_found"
    with pytest.raises(errors.NotFoundError, match="nope"):
        col.query(query_embeddings=[[1.0, 2.0]], ids=["nope"])
