"""A property-based API fuzzer (schemathesis) against a real ``tintdb run``, from the
OpenAPI document the server itself serves at /openapi.json.

For every operation, schemathesis generates requests that follow the document and
requests that break it (wrong types, missing fields, odd strings in paths and bodies),
and checks each answer: never a 5xx, a status the document lists for that operation,
and a body that matches the schema documented for that status. The run is bounded
(examples per operation) and derandomized, so it is the same run every time.

Half of the record and collection requests are pointed at a collection that exists,
so that the generated bodies reach the filters and the store rather than stopping at
"no such collection".
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from _profiles import examples
from _server import TintServer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
EXAMPLES = examples(30)


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TintServer]:
    with TintServer(tmp_path_factory.mktemp("fuzzed")) as server:
        yield server


@pytest.fixture(scope="module")
def collection_id(fuzzed_server: TintServer) -> str:
    base = f"{fuzzed_server.url}/api/v2/tenants/default_tenant/databases/default_database"
    created = httpx.post(f"{base}/collections", json={"name": "fuzzed"}, timeout=30).json()
    records = {
        "ids": ["a", "b", "c\u0000d"],
        "embeddings": [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]],
        "documents": ["apple pie", "banana bread", None],
        "metadatas": [{"n": 1, "s": "x"}, {"n": 2, "tags": ["p", "q"]}, None],
    }
    r = httpx.post(f"{base}/collections/{created['id']}/add", json=records, timeout=30)
    assert r.status_code == 201, r.text
    return str(created["id"])


def _aim(case: Any, turn: int, collection_id: str) -> None:
    """Every other request that names a collection names the one that exists."""
    params = case.path_parameters or {}
    if "collection_id" in params and turn % 2 == 0:
        params.update(
            tenant="default_tenant", database="default_database", collection_id=collection_id
        )


def test_api_answers_every_request_as_documented(
    fuzzed_server: TintServer, collection_id: str
) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    failures: list[str] = []
    turns = itertools.count()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
            )
            def fuzz(case: Any) -> None:
                _aim(case, next(turns), collection_id)
                case.call_and_validate(base_url=fuzzed_server.url, checks=CHECKS, timeout=60)

            try:
                fuzz()
            except Unsatisfiable:
                # Nothing to break: no parameters, or only strings, which any text satisfies.
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # every operation is fuzzed; all failures reported
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)


def test_the_document_lists_every_error_status(fuzzed_server: TintServer) -> None:
    doc = httpx.get(f"{fuzzed_server.url}/openapi.json", timeout=30).json()
    error = doc["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"error", "message"}
    ops = {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }
    prefix = "/api/v2/tenants/{tenant}/databases/{database}"
    add = ops[("POST", prefix + "/collections/{collection_id}/add")]["responses"]
    assert {"201", "400", "401", "404", "408", "409", "413", "414", "415", "422", "503"} <= set(add)
    assert "200" not in add
    assert "403" in ops[("POST", "/api/v2/reset")]["responses"]
    assert "401" not in ops[("GET", "/api/v2/heartbeat")]["responses"]
    assert "Retry-After" in add["503"]["headers"]
    for (method, path), op in ops.items():
        for status, answer in op["responses"].items():
            if status.startswith(("4", "5")):
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody"), (method, path, status)


def test_fuzzer_is_pinned() -> None:
    text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    assert f'"schemathesis=={schemathesis.__version__}; python_version' in text
