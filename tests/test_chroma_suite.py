"""Chroma's own test suite (from the chromadb 1.5.9 wheel) against a real ``tintdb run``.

``tests/peers/chroma_tests/chroma_suite.py`` runs it in ``.venv-chroma-tests`` (installed by
``tests/peers/setup.sh``; missing, the test fails rather than skips) with a fixed,
derandomized hypothesis budget. Every test that fails must be in
``tests/peers/chroma_tests/expected_failures.txt`` with its reason, and every test listed
there must fail: one that passes now is reported, so the list cannot go stale. To see
or rewrite the list: ``make chroma-suite`` / ``make chroma-suite-update``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _server import TintServer

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers" / "chroma_tests"))
import chroma_suite as suite

HOW_TO_FIX = (
    "run `bash tests/peers/setup.sh` (the Makefile's test target does) and re-run the tests"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TintServer]:
    with TintServer(tmp_path / "store", "--allow-reset") as srv:
        yield srv


def test_expected_failures_list_is_well_formed() -> None:
    expected = suite.read_expected()
    assert expected, "the list of expected failures is empty"
    for nodeid in expected:
        assert nodeid.split("::")[0].removeprefix("chromadb/test/") in suite.FILES, (
            f"{nodeid} is not in a test file the suite runs"
        )
        assert "integration" in nodeid, f"{nodeid} is not one of the tests aimed at the server"


def test_chroma_suite_against_tintdb_run(server: TintServer) -> None:
    if not (suite.VENV / ".installed").exists():
        pytest.fail(
            f"Chroma's test suite is not installed in {suite.VENV}: {HOW_TO_FIX}", pytrace=False
        )
    run = suite.run_tests(server.url, server_pid=server.pid)
    assert run.outcomes, f"Chroma's tests reported nothing:\n{run.output[-5000:]}"
    comparison = suite.compare(run.outcomes, suite.read_expected())
    report = comparison.report()
    print(report)
    print(run.timing())
    # Guard against a run that quietly selected nothing of substance.
    assert comparison.counts["passed"] > 300, report
    assert comparison.ok(), f"{report}\n\nserver output:\n{server.output()[-3000:]}"
