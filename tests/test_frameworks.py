"""LangChain and LlamaIndex on tintdb, step by step against real chromadb 1.5.9.

The frameworks (PyPI ``langchain-chroma``, ``llama-index-vector-stores-chroma``) live in
``.venv-chromadb`` with chromadb and tintdb (``tests/peers/setup.sh``; missing, the
tests fail rather than skip). Each workload in ``tests/peers/frameworks/`` runs one script
of framework calls on every target (see ``_common.py``) and reports what each step gave.
Each step on each tintdb target must give what the same step gave on its reference:
real chromadb embedded for ``tintdb`` and ``tintdb-http``, chromadb's ``HttpClient`` on
a real ``chroma run`` for ``chromadb-http`` (Chroma's official client on tintdb's
server). Same ids, same order, same documents and metadata, scores equal to 1e-5.

Where tintdb differs on purpose, ``DIFFERS`` says what it gives instead and why. Where it
differs but is to match chromadb, the step is a strict xfail (``PENDING``): it fails
today and turns into a failure of the suite the day it passes, so the mark goes with it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from _server import ChromaRun, TintServer

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ROOT / "tests" / "peers" / "frameworks"
VENV = Path(os.environ.get("TINTDB_CHROMADB_VENV", ROOT / ".venv-chromadb"))
HOW_TO_FIX = (
    "run `bash tests/peers/setup.sh` (the Makefile's test target does) and re-run the tests"
)
RUN_TIMEOUT = 300.0

FRAMEWORKS = {"langchain": "langchain_workload.py", "llamaindex": "llamaindex_workload.py"}
# each tintdb target, and the chromadb target whose results it must match
REFERENCE = {"tintdb": "chromadb", "tintdb-http": "chromadb", "chromadb-http": "chroma-run"}
TINTDB_CLIENTS = ("tintdb", "tintdb-http")

# One xdist worker runs this module, so the workloads run once.
pytestmark = pytest.mark.xdist_group("frameworks")


def steps_of(framework: str) -> list[str]:
    """The step names of a workload, in order, read from its source."""
    source = (WORKLOADS / FRAMEWORKS[framework]).read_text()
    return re.findall(r'\bstep\(\s*"([a-z0-9_]+)"', source)


# ---------------------------------------------------------------- comparing


def same(got: Any, want: Any, where: str = "") -> str | None:
    """Why ``got`` differs from ``want`` (floats to 1e-5), or None.

    A step that raised on the reference must raise the same kind of error: an exception
    of the reference's class name or a subclass of it (tintdb's errors are its own
    classes, named as chromadb's, and its argument errors are ValueErrors, as chromadb
    raises). Messages are tintdb's own; ``MESSAGES`` names the parts that must match.
    """
    if isinstance(want, dict) and "raised" in want:
        if not (isinstance(got, dict) and want["raised"] in got.get("classes", ())):
            return f"{where}: expected {want['raised']} ({want['message']!r}), got {got!r}"
        return None
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        ok = abs(got - want) <= 1e-5 + 1e-5 * abs(want)
        return None if ok else f"{where}: {got!r} != {want!r}"
    if isinstance(want, dict) and isinstance(got, dict):
        if set(got) != set(want):
            return f"{where}: keys {sorted(got)} != {sorted(want)}: {got!r}"
        for key in want:
            why = same(got[key], want[key], f"{where}.{key}")
            if why:
                return why
        return None
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return f"{where}: {len(got)} items != {len(want)}:\n got  {got!r}\n want {want!r}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            why = same(g, w, f"{where}[{i}]")
            if why:
                return why
        return None
    if type(got) is not type(want) or got != want:
        return f"{where}: {got!r} != {want!r}"
    return None


@dataclass(frozen=True)
class Raises:
    """A step that raises ``error`` with ``message_part`` in its message."""

    error: str
    message_part: str

    def check(self, got: Any) -> str | None:
        if (
            isinstance(got, dict)
            and got.get("raised") == self.error
            and self.message_part in got.get("message", "")
        ):
            return None
        return f"expected {self.error} with {self.message_part!r}, got {got!r}"


@dataclass(frozen=True)
class Differs:
    """A deliberate difference: on ``targets`` the step gives ``expect`` instead."""

    targets: tuple[str, ...]
    expect: Raises
    why: str


DIFFERS: dict[tuple[str, str], Differs] = {
    # README: adding an id that exists raises and adds nothing (chromadb skips it quietly).
    ("llamaindex", "add_existing_node"): Differs(
        ("tintdb", "tintdb-http", "chromadb-http"),
        Raises("IDAlreadyExistsError", "already exist"),
        "an add of an existing id raises (README: What is different from Chroma)",
    ),
    # docs/integrations.md: from_collection checks isinstance(collection, chromadb.Collection).
    ("llamaindex", "from_collection"): Differs(
        TINTDB_CLIENTS,
        Raises("Exception", "argument is not chromadb collection instance"),
        "ChromaVectorStore.from_collection accepts only chromadb's Collection class",
    ),
}

# What a step's error message must say, on every target, reference included.
MESSAGES: dict[tuple[str, str], str] = {
    # LangChain adds its hint only to a message with "Expected metadata value to be".
    ("langchain", "nested_metadata"): "filter_complex_metadata",
}

PENDING: dict[tuple[str, str, str], str] = {
    # None open: each entry is (framework, target, step) -> "pending: <why>".
}


# ---------------------------------------------------------------- running the workloads


def frameworks_python() -> Path:
    python = VENV / "bin" / "python"
    if not (python.exists() and (VENV / ".installed").exists()):
        pytest.fail(f"the frameworks are not installed in {VENV}: {HOW_TO_FIX}", pytrace=False)
    return python


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TintServer, ChromaRun]]:
    frameworks_python()
    base = tmp_path_factory.mktemp("framework-servers")
    with (
        TintServer(base / "tintdb", "--allow-reset") as tint,
        ChromaRun(VENV / "bin" / "chroma", base / "chroma") as chroma,
    ):
        yield tint, chroma


@pytest.fixture(scope="module")
def outputs(
    servers: tuple[TintServer, ChromaRun], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], dict[str, Any]]:
    """A framework's workload output (run on first use, once per module)."""
    tint, chroma = servers
    cache: dict[str, dict[str, Any]] = {}

    def get(framework: str) -> dict[str, Any]:
        if framework not in cache:
            work = tmp_path_factory.mktemp(framework)
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("PYTHON", "VIRTUAL_ENV", "CHROMA_", "TINTDB_"))
            }
            env["ANONYMIZED_TELEMETRY"] = "False"
            proc = subprocess.run(
                [str(frameworks_python()), FRAMEWORKS[framework], str(work), tint.url, chroma.url],
                cwd=WORKLOADS,
                env=env,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
            )
            assert proc.returncode == 0, (
                f"{framework} workload exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
                f"stderr:\n{proc.stderr[-3000:]}\ntintdb run:\n{tint.output()[-2000:]}"
            )
            cache[framework] = json.loads(proc.stdout.strip().splitlines()[-1])
        return cache[framework]

    return get


# ---------------------------------------------------------------- the tests


def _cases() -> list[Any]:
    cases = []
    for framework in FRAMEWORKS:
        for target in REFERENCE:
            for step in steps_of(framework):
                reason = PENDING.get((framework, target, step))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                cases.append(
                    pytest.param(
                        framework, target, step, marks=marks, id=f"{framework}-{target}-{step}"
                    )
                )
    return cases


@pytest.mark.parametrize(("framework", "target", "step"), _cases())
def test_step_matches_chromadb(
    outputs: Callable[[str], dict[str, Any]], framework: str, target: str, step: str
) -> None:
    out = outputs(framework)
    reference = out[REFERENCE[target]]
    assert "scenario_crashed" not in out[target], out[target]["scenario_crashed"]
    assert step in out[target], f"{step} did not run on {target}"
    differs = DIFFERS.get((framework, step))
    if differs and target in differs.targets:
        why = differs.expect.check(out[target][step])
        assert why is None, f"{differs.why}: {why}"
        return
    why = same(out[target][step], reference[step], step)
    assert why is None, f"{target} differs from {REFERENCE[target]}: {why}"
    part = MESSAGES.get((framework, step))
    if part is not None:
        for name in (REFERENCE[target], target):
            message = out[name][step].get("message", "")
            assert part in message, f"{name}: {part!r} not in {message!r}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_step_ran_everywhere(
    outputs: Callable[[str], dict[str, Any]], framework: str
) -> None:
    out = outputs(framework)
    assert out["versions"]["chromadb"] == "1.5.9"
    steps = steps_of(framework)
    assert len(steps) == len(set(steps)), "a step name is used twice"
    for target in ("chromadb", "chroma-run", *REFERENCE):
        assert list(out[target]) == steps, f"{target} ran {list(out[target])}"


def test_integrations_doc_runs(servers: tuple[TintServer, ChromaRun], tmp_path: Path) -> None:
    """docs/integrations.md's Python blocks, in order, as one program, against tintdb run."""
    tint, _ = servers
    blocks = re.findall(
        r"```python\n(.*?)```", (ROOT / "docs" / "integrations.md").read_text(), re.S
    )
    assert len(blocks) == 3, "the test expects the doc's three Python blocks"
    program = "\n".join(blocks)
    program = program.replace('"localhost"', f'"{tint.host}"').replace(
        "port=8000", f"port={tint.port}"
    )
    (tmp_path / "program.py").write_text(program)
    proc = subprocess.run(
        [str(frameworks_python()), "program.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # what the doc's comments say each print shows
    assert proc.stdout.splitlines() == [
        "[('n3', 0.495), ('n1', 0.715)]",
        "n2 0.36",
        "['n3', 'n1']",
        "['n3']",
        "['Compound interest rewards saving early.']",
        "d2 0.334",
        "['d1', 'd2']",
    ], proc.stdout


def _ids(found: Any) -> list[str]:
    return [hit["id"] for hit in found]


def test_langchain_reference_results_mean_something(
    outputs: Callable[[str], dict[str, Any]],
) -> None:
    """The comparisons above are only as good as the reference: check what it found."""
    ref = outputs("langchain")["chromadb"]
    assert ref["count"] == 8
    assert _ids(ref["search"])[0] == "p2"  # dogs, for "pets that enjoy outdoor exercise"
    assert _ids(ref["search_score"])[0] == "f1"  # sourdough, for "baking bread at home"
    assert [h["metadata"]["topic"] for h in ref["search_filter"]] == ["food", "food"]
    assert set(_ids(ref["search_filter_and"])) == {"p1", "s1"}
    assert _ids(ref["search_filter_list"]) == ["s2"]
    assert all("the" in h["text"] for h in ref["search_where_document"])
    assert _ids(ref["search_filter_and_document"]) == ["p2"]
    assert len(ref["mmr"]) == 3 and len(set(_ids(ref["mmr"]))) == 3
    assert _ids(ref["after_update_filter_new"]) == ["p2"]
    assert "p2" not in _ids(ref["after_update_filter_old"])
    assert ref["after_delete_get"]["ids"] == ["p1", "p2", "f1", "f2", "s1", "s2"]
    assert ref["nested_metadata"]["raised"] == "ValueError"
    assert ref["cosine_space"] == "cosine"
    assert ref["noef_count"] == 4 and len(ref["noef_search"]) == 3
    assert ref["reopen_count"] == 6
    assert ref["after_reset_count"] == 0
    # Over HTTP too, chromadb's client embeds with the collection's default function.
    assert outputs("langchain")["chroma-run"]["noef_count"] == 4


def test_llamaindex_reference_results_mean_something(
    outputs: Callable[[str], dict[str, Any]],
) -> None:
    ref = outputs("llamaindex")["chromadb"]
    assert ref["count"] == 7
    assert _ids(ref["retrieve"])[0] == "p2"
    assert all(0 < h["score"] <= 1 for h in ref["retrieve"])
    assert [h["metadata"]["topic"] for h in ref["retrieve_filter_eq"]] == ["food", "food"]
    assert set(_ids(ref["retrieve_filter_and"])) == {"p1", "s1"}
    assert _ids(ref["after_update_filter"]) == ["f1", "f3"]
    assert ref["after_delete_ids"] == ["f1", "f3", "m1", "p1"]
    assert ref["vectors_query"]["ids"] == ["v1", "v2", "v3"]
    assert ref["vectors_query_where_document"]["ids"] == ["v2", "v3"]
    assert ref["vectors_count"] == 0
    assert ref["reopen_count"] == 4
    assert ref["delete_nodes_filter"]["raised"] == "ValueError"
