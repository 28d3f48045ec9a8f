"""Property tests of the schema JSON: round trips, what a collection shows and honours,
configuration precedence, and the same JSON as chromadb's own classes.

The chromadb comparison runs the official client (PyPI chromadb-client, in the virtualenv
``tests/official/setup.sh`` installs) on the same operation sequences.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _profiles import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tintdb
from tintdb import _schema
from tintdb.config import HNSW_DEFAULTS
from tintdb.errors import InvalidArgumentError

sys.path.insert(0, str(Path(__file__).parent / "official"))
import schema_ops
from test_official_clients import OFFICIAL, python_client

# The operations' own embedding function is unknown to tintdb: reading its JSON back
# warns that it cannot be rebuilt (and keeps its description), as chromadb does.
pytestmark = pytest.mark.filterwarnings("ignore:Could not rebuild embedding function")

KEYS = ["title", "year", "score", "flag", "sparse", "#document", "#custom", None]
# The keys each kind of index may go on (most drawn operations are valid).
VALID_KEYS: dict[str, list[Any]] = {
    "fts": ["#document"],
    "vector": [None],
    "sparse": ["sparse", "title"],
    **{
        kind: ["title", "year", "score", "flag", None]
        for kind in ("string", "int", "float", "bool")
    },
}
SPACES = ["l2", "cosine", "ip"]
HNSW_INTS = ["ef_construction", "max_neighbors", "ef_search", "batch_size", "sync_threshold"]

hnsw_params = st.fixed_dictionaries(
    {},
    optional={
        **{f: st.integers(min_value=2, max_value=500) for f in HNSW_INTS},
        "resize_factor": st.floats(min_value=1.0, max_value=4.0),
    },
)
spann_params = st.fixed_dictionaries(
    {},
    optional={
        f: st.integers(min_value=1, max_value=200)
        for f in ("search_nprobe", "write_nprobe", "ef_construction", "max_neighbors")
    },
)
vector_params = st.fixed_dictionaries(
    {},
    optional={
        "space": st.sampled_from(SPACES),
        "ef": st.sampled_from(["none", "fixed"]),
        "hnsw": hnsw_params,
        "spann": spann_params,
    },
)


@st.composite
def operation(draw: st.DrawFn) -> list[Any]:
    kind = draw(st.sampled_from(schema_ops.KINDS))
    params: dict[str, Any] = {}
    if kind == "vector":
        params = draw(vector_params)
    elif kind == "sparse":
        params = draw(st.fixed_dictionaries({}, optional={"bm25": st.booleans()}))
    keys = st.sampled_from(VALID_KEYS[kind]) | st.sampled_from(KEYS)
    return [draw(st.sampled_from(["create", "delete"])), kind, draw(keys), params]


operations = st.lists(operation(), max_size=8)


def build(ops: list[list[Any]]) -> tintdb.Schema | None:
    try:
        return schema_ops.build(tintdb, ops)
    except InvalidArgumentError:
        return None  # an operation the API refuses (tested against chromadb below)


# ---------------------------------------------------------------- JSON round trips


@settings(max_examples=examples(150), deadline=None)
@given(operations)
def test_schema_json_round_trips_through_the_classes(ops: list[list[Any]]) -> None:
    schema = build(ops)
    if schema is None:
        return
    data = schema.serialize_to_json()
    assert json.loads(json.dumps(data)) == data
    again = tintdb.Schema.deserialize_from_json(data)
    assert again.serialize_to_json() == data


@pytest.fixture(scope="module")
def local() -> tintdb.Client:
    return tintdb.EphemeralClient()


@settings(
    max_examples=examples(120),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=operations)
def test_a_collection_shows_and_honours_the_schema_it_was_given(
    local: tintdb.Client, ops: list[list[Any]]
) -> None:
    schema = build(ops)
    if schema is None:
        return
    data = schema.serialize_to_json()
    name = f"c{abs(hash(json.dumps(data, sort_keys=True))) % 10**12}"
    try:
        col = local.get_or_create_collection(name, schema=schema, embedding_function=None)
    except InvalidArgumentError as exc:
        # Only what tintdb cannot honour is refused: a sparse index fed from a source key.
        assert "source_key" in str(exc) or "sparse" in str(exc), exc
        return
    got = col._model.schema
    raw, _ = _schema.parse_schema(data)
    for value_type, indexes in raw["defaults"].items():
        for index, spec in indexes.items():
            if index != "vector_index":
                assert got["defaults"][value_type][index]["enabled"] == spec["enabled"]
    for key, entry in raw["keys"].items():
        for value_type, indexes in entry.items():
            for index, spec in indexes.items():
                assert got["keys"][key][value_type][index]["enabled"] == spec["enabled"]
    vector = data["keys"]["#embedding"]["float_list"]["vector_index"]["config"]
    space = vector.get("space") or "l2"
    hnsw = {**HNSW_DEFAULTS, "space": space, **(vector.get("hnsw") or {})}
    assert col.configuration["hnsw"] == hnsw
    # honoured: a filter is refused exactly when its index is disabled
    for key in ("title", "year", "unseen"):
        for value, value_type in (("v", "string"), (1, "int"), (1.5, "float"), (True, "bool")):
            spec = got["keys"].get(key, {}).get(value_type, {}).get(f"{value_type}_inverted_index")
            spec = spec or got["defaults"][value_type][f"{value_type}_inverted_index"]
            if spec["enabled"]:
                col.get(where={key: value})
            else:
                with pytest.raises(InvalidArgumentError, match="Cannot filter using metadata key"):
                    col.get(where={key: value})
    fts = got["keys"]["#document"]["string"]["fts_index"]["enabled"]
    if fts:
        col.get(where_document={"$contains": "x"})
    else:
        with pytest.raises(InvalidArgumentError, match="FTS"):
            col.get(where_document={"$contains": "x"})
    # A collection's shown schema, given back at creation, reproduces itself.
    copy = local.get_or_create_collection(name + "b", schema=got, embedding_function=None)
    assert copy._model.schema == got
    assert copy.configuration["hnsw"]["space"] == col.configuration["hnsw"]["space"]


# ---------------------------------------------------------------- precedence


def expected_hnsw(
    metadata: dict[str, Any] | None, configuration: dict[str, Any] | None
) -> dict[str, Any]:
    """chromadb 1.5.9's precedence, stated plainly (observed on chroma run):
    configuration first; hnsw:* metadata only while the configuration changes nothing,
    where hnsw:space always applies and the other keys fill what the configuration left
    out; a spann section gives HNSW in its space."""
    names = {
        "hnsw:space": "space",
        "hnsw:construction_ef": "ef_construction",
        "hnsw:search_ef": "ef_search",
        "hnsw:M": "max_neighbors",
        "hnsw:num_threads": "num_threads",
        "hnsw:batch_size": "batch_size",
        "hnsw:sync_threshold": "sync_threshold",
        "hnsw:resize_factor": "resize_factor",
    }
    out = dict(HNSW_DEFAULTS)
    hnsw = (configuration or {}).get("hnsw") or {}
    spann = (configuration or {}).get("spann")
    out.update(hnsw)
    if spann is not None and spann.get("space"):
        out["space"] = spann["space"]
    if spann is None and all(HNSW_DEFAULTS[k] == v for k, v in hnsw.items()):
        for key, value in (metadata or {}).items():
            if names[key] == "space" or names[key] not in hnsw:
                out[names[key]] = value
    return out


metadata_strategy = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "hnsw:space": st.sampled_from(SPACES),
            "hnsw:construction_ef": st.integers(2, 300),
            "hnsw:search_ef": st.sampled_from([100, 7, 250]),
            "hnsw:M": st.sampled_from([16, 8, 32]),
            "hnsw:resize_factor": st.sampled_from([1.2, 2.0]),
        },
    ).filter(bool),
)
configuration_strategy = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "hnsw": st.fixed_dictionaries(
                {},
                optional={
                    "space": st.sampled_from(SPACES),
                    "ef_construction": st.sampled_from([100, 55]),
                    "ef_search": st.sampled_from([100, 20]),
                    "max_neighbors": st.sampled_from([16, 12]),
                },
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "spann": st.fixed_dictionaries(
                {}, optional={"space": st.sampled_from(SPACES), "search_nprobe": st.integers(1, 64)}
            )
        }
    ),
)


@settings(max_examples=examples(300), deadline=None)
@given(metadata=metadata_strategy, configuration=configuration_strategy)
def test_configuration_metadata_precedence(
    metadata: dict[str, Any] | None, configuration: dict[str, Any] | None
) -> None:
    request = _schema.create_request(configuration, metadata, None)
    stored = _schema.resolve_create(metadata, request)
    assert stored["hnsw"] == expected_hnsw(metadata, configuration)
    assert stored["spann"] is None and "schema" not in stored
    shown = _schema.collection_schema(stored)
    vector = shown["keys"]["#embedding"]["float_list"]["vector_index"]["config"]
    assert vector["space"] == stored["hnsw"]["space"]
    assert vector["hnsw"]["ef_search"] == stored["hnsw"]["ef_search"]


# ---------------------------------------------------------------- the same JSON as chromadb


def random_sequences(count: int, seed: int) -> list[list[list[Any]]]:
    """Operation sequences drawn from a fixed seed (one official-client run checks them all)."""
    rng = random.Random(seed)

    def params(kind: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if kind == "vector":
            if rng.random() < 0.5:
                out["space"] = rng.choice(SPACES)
            if rng.random() < 0.5:
                out["ef"] = rng.choice(["none", "fixed"])
            if rng.random() < 0.4:
                out["hnsw"] = {f: rng.randint(2, 500) for f in rng.sample(HNSW_INTS, 2)}
            elif rng.random() < 0.3:
                out["spann"] = {"search_nprobe": rng.randint(1, 64)}
        elif kind == "sparse" and rng.random() < 0.5:
            out["bm25"] = rng.random() < 0.5
        return out

    sequences = []
    for _ in range(count):
        ops = []
        for _ in range(rng.randint(0, 6)):
            kind = rng.choice(schema_ops.KINDS)
            verb = rng.choice(["create", "delete"])
            key = rng.choice(VALID_KEYS[kind] if rng.random() < 0.85 else KEYS)
            ops.append([verb, kind, key, params(kind)])
        sequences.append(ops)
    return sequences


def test_schemas_serialize_to_the_json_chromadbs_classes_write() -> None:
    sequences = random_sequences(500, seed=1509)
    proc = subprocess.run(
        [str(python_client()), str(OFFICIAL / "schema_ops.py")],
        input=json.dumps(sequences),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=OFFICIAL,
    )
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    built = 0
    for ops, their in zip(sequences, theirs, strict=True):
        ours = schema_ops.outcome(tintdb, ops)
        assert ("error" in ours) == ("error" in their), (ops, ours, their)
        if "schema" in their:
            built += 1
            assert ours["schema"] == their["schema"], ops
            # and chromadb's JSON reads back into the same schema here
            read = tintdb.Schema.deserialize_from_json(their["schema"])
            assert read.serialize_to_json() == their["schema"], ops
    assert built > 200  # many sequences are valid: the comparison is not vacuous
