"""A pytest plugin loaded into Chroma's own test run (``-p outcomes_plugin``).

It does two things Chroma's conftest cannot be asked to do from outside:

- fixes the hypothesis budget: every profile Chroma registers is replaced by one with
  ``derandomize=True``, no example database and ``max_examples`` from
  ``PEERS_MAX_EXAMPLES``, so two runs try the same examples;
- writes one JSON line per test to ``PEERS_OUTCOMES``: the node id, its outcome
  (passed, failed, error, skipped, or xfailed/xpassed for a test Chroma marks xfail)
  and the first lines of the failure, which the caller compares with the list of
  expected failures.
"""

from __future__ import annotations

import json
import os
from typing import Any

import hypothesis
import pytest

_results: dict[str, dict[str, Any]] = {}


def _budget() -> hypothesis.settings:
    return hypothesis.settings(
        hypothesis.settings.get_profile("base"),
        max_examples=int(os.environ.get("PEERS_MAX_EXAMPLES", "10")),
        stateful_step_count=int(os.environ.get("PEERS_STATEFUL_STEPS", "10")),
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=False,
        # No shrinking or explaining: a failure is reported as found, at once. Both
        # phases re-run a failing test many times, and the caller only needs to know
        # that it failed and why.
        phases=(hypothesis.Phase.explicit, hypothesis.Phase.generate),
        verbosity=hypothesis.Verbosity.normal,
    )


def pytest_configure(config: pytest.Config) -> None:
    # Chroma's conftest registered "base" and loaded its preset when it was imported,
    # which happens before this hook; decorators run later, at module import.
    budget = _budget()
    for name in ("fast", "normal", "slow"):
        hypothesis.settings.register_profile(name, budget)
    hypothesis.settings.load_profile("fast")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test's own @settings(max_examples=...) outranks any profile: cap it here, so the
    # budget holds for every test (the hypothesis version is pinned, and with it where
    # a decorated test keeps its settings).
    cap = _budget()
    for item in items:
        test = getattr(item, "obj", None)
        own = getattr(test, "_hypothesis_internal_use_settings", None)
        if own is None:
            continue
        test._hypothesis_internal_use_settings = hypothesis.settings(  # type: ignore[union-attr]
            own,
            max_examples=min(own.max_examples, cap.max_examples),
            stateful_step_count=min(own.stateful_step_count, cap.stateful_step_count),
            derandomize=True,
            database=None,
            deadline=None,
            phases=cap.phases,
        )


def _summary(report: pytest.TestReport) -> str:
    text = report.longreprtext or ""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    lines = [ln for ln in text.splitlines() if ln.startswith("E ")]
    return "\n".join(lines[:6]) if lines else "\n".join(text.splitlines()[-6:])


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _results.setdefault(report.nodeid, {"nodeid": report.nodeid, "outcome": "passed"})
    if report.when == "call":
        if report.passed and hasattr(report, "wasxfail"):
            entry["outcome"] = "xpassed"  # a test Chroma marks xfail, passing here
        elif report.failed:
            entry.update(outcome="failed", why=_summary(report))
        elif report.skipped:
            entry.update(outcome="xfailed" if hasattr(report, "wasxfail") else "skipped")
            entry["why"] = _summary(report)
    elif report.failed and entry["outcome"] in ("passed", "skipped"):
        entry.update(outcome="error", why=f"in {report.when}: {_summary(report)}")
    elif report.skipped and report.when == "setup":
        entry.update(outcome="skipped", why=_summary(report))


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("PEERS_OUTCOMES")
    if not path:
        return
    with open(path, "w", encoding="utf-8") as out:
        for entry in _results.values():
            out.write(json.dumps(entry) + "\n")
