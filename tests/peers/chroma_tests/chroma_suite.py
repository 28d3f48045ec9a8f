"""Run Chroma's own tests (the chromadb 1.5.9 wheel's ``chromadb/test``) against a server.

Chroma's conftest has a mode for this, ``CHROMA_INTEGRATION_TEST_ONLY``: its ``client``
and ``api`` fixtures become Chroma's HTTP clients (sync and async) pointed at the server
named by ``CHROMA_SERVER_HOST``/``CHROMA_SERVER_HTTP_PORT``, which they reset between
tests. The tests run in ``.venv-chroma-tests`` (``tests/peers/setup.sh``), with
``outcomes_plugin.py`` fixing the hypothesis budget and recording each test's outcome.

Only the tests parametrized over those two fixtures (their ids say ``integration``) are
run: the others never reach the server (client-side validation, or an in-process Chroma).
What they give is compared with ``expected_failures.txt``. Used by
``tests/test_chroma_suite.py``; as a command it runs the suite and shows or rewrites
the list (``--help``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent.parent
VENV = Path(os.environ.get("TINTDB_CHROMA_TESTS_VENV", ROOT / ".venv-chroma-tests"))
EXPECTED = HERE / "expected_failures.txt"

# The test files that can target a server, relative to chromadb/test/.
FILES = [
    "test_api.py",
    "test_multithreaded.py",
    "api/test_collection.py",
    "api/test_delete_database.py",
    "api/test_get_database.py",
    "api/test_invalid_update.py",
    "api/test_limit_offset.py",
    "api/test_list_databases.py",
    "api/test_numpy_list_inputs.py",
    "api/test_schema_e2e.py",
    "client/test_database_tenant.py",
    "configurations/test_collection_configuration.py",
    "property/test_add.py",
    "property/test_collections.py",
    "property/test_collections_with_database_tenant.py",
    "property/test_embeddings.py",
    "property/test_filtering.py",
    "property/test_schema.py",
]
# The hypothesis budget: examples per property test, steps per state-machine run.
MAX_EXAMPLES = 10
STATEFUL_STEPS = 10
TIMEOUT = 1500.0
REASON_KINDS = ("pending", "differs", "internals", "network", "tls")
FAILED = ("failed", "error")
PASSED = ("passed", "xpassed")


@dataclass
class Comparison:
    """What a run gave, set against the list of expected failures."""

    outcomes: dict[str, dict[str, str]]
    expected: dict[str, str]
    unexpected_failures: list[str] = field(default_factory=list)
    unexpected_passes: list[str] = field(default_factory=list)
    not_failing: list[str] = field(default_factory=list)  # listed, but skipped or not run

    @property
    def counts(self) -> Counter[str]:
        return Counter(o["outcome"] for o in self.outcomes.values())

    def ok(self) -> bool:
        return not (self.unexpected_failures or self.unexpected_passes or self.not_failing)

    def report(self) -> str:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()))
        lines = [f"Chroma's tests: {counts}; {len(self.expected)} expected failures listed"]
        for nodeid in self.unexpected_failures:
            o = self.outcomes[nodeid]
            lines.append(
                f"UNEXPECTED {o['outcome'].upper()}: {nodeid}\n    {_indent(o.get('why', ''))}"
            )
        for nodeid in self.unexpected_passes:
            lines.append(
                f"NOW PASSES (remove it from {EXPECTED.name}): {nodeid}\n"
                f"    was listed as: {self.expected[nodeid]}"
            )
        for nodeid in self.not_failing:
            got = self.outcomes.get(nodeid, {}).get("outcome", "not run")
            lines.append(f"LISTED BUT {got.upper()} (fix or remove the entry): {nodeid}")
        return "\n".join(lines)


def _indent(text: str) -> str:
    return text.strip().replace("\n", "\n    ")


def read_expected(path: Path = EXPECTED) -> dict[str, str]:
    """``node id | reason`` lines; every reason starts with one of REASON_KINDS."""
    expected: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        nodeid, sep, reason = (part.strip() for part in line.partition(" | "))
        kind = reason.split(":", 1)[0]
        if not sep or kind not in REASON_KINDS or not reason[len(kind) + 1 :].strip():
            raise ValueError(
                f"{path}:{number}: expected '<node id> | <kind>: <why>' with a kind among "
                f"{', '.join(REASON_KINDS)}, got {raw!r}"
            )
        if nodeid in expected:
            raise ValueError(f"{path}:{number}: {nodeid} is listed twice")
        expected[nodeid] = reason
    return expected


def compare(outcomes: dict[str, dict[str, str]], expected: dict[str, str]) -> Comparison:
    result = Comparison(outcomes, expected)
    for nodeid, o in sorted(outcomes.items()):
        if o["outcome"] in FAILED and nodeid not in expected:
            result.unexpected_failures.append(nodeid)
        elif o["outcome"] in PASSED and nodeid in expected:
            result.unexpected_passes.append(nodeid)
    for nodeid in sorted(expected):
        if outcomes.get(nodeid, {}).get("outcome") not in (*FAILED, *PASSED):
            result.not_failing.append(nodeid)
    return result


def site_packages(venv: Path = VENV) -> Path:
    python = venv / "bin" / "python"
    out = subprocess.run(
        [
            str(python),
            "-c",
            "import chromadb, os; print(os.path.dirname(os.path.dirname(chromadb.__file__)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


@dataclass
class Run:
    outcomes: dict[str, dict[str, str]]
    returncode: int
    output: str
    seconds: float
    cpu_seconds: float  # of the test process and its children
    server_cpu_seconds: float | None  # of the server, when its pid was given

    def timing(self) -> str:
        server = (
            ""
            if self.server_cpu_seconds is None
            else f", {self.server_cpu_seconds:.0f} s in the server"
        )
        return f"{self.seconds:.0f} s; CPU: {self.cpu_seconds:.0f} s in the tests{server}"

    def slowest(self) -> str:
        """pytest's --durations table from the output."""
        found = re.search(r"=+ slowest \d+ durations =+\n(.*?)(?:\n=|\Z)", self.output, re.S)
        return found.group(1) if found else ""


def run_tests(
    server_url: str,
    venv: Path = VENV,
    files: list[str] | None = None,
    max_examples: int = MAX_EXAMPLES,
    stateful_steps: int = STATEFUL_STEPS,
    extra_args: list[str] | None = None,
    server_pid: int | None = None,
) -> Run:
    """Chroma's tests against ``server_url``; every test's outcome by node id."""
    url = urlparse(server_url)
    site = site_packages(venv)
    tests = site / "chromadb" / "test"
    with tempfile.TemporaryDirectory(prefix="chroma-tests-") as work:
        outcomes_file = Path(work) / "outcomes.jsonl"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "VIRTUAL_ENV", "CHROMA_", "PYTEST_", "HYPOTHESIS"))
        }
        env.update(
            CHROMA_INTEGRATION_TEST_ONLY="1",
            CHROMA_SERVER_HOST=url.hostname or "127.0.0.1",
            CHROMA_SERVER_HTTP_PORT=str(url.port),
            CHROMA_API_IMPL="chromadb.api.fastapi.FastAPI",
            ALLOW_RESET="TRUE",
            ANONYMIZED_TELEMETRY="False",
            PYTHONPATH=str(HERE),
            PEERS_OUTCOMES=str(outcomes_file),
            PEERS_MAX_EXAMPLES=str(max_examples),
            PEERS_STATEFUL_STEPS=str(stateful_steps),
        )
        argv = [
            str(venv / "bin" / "python"),
            "-m",
            "pytest",
            "-p",
            "outcomes_plugin",
            "-p",
            "no:cacheprovider",
            "-c",
            str(HERE / "pytest.ini"),
            "--rootdir",
            str(site),
            "-q",
            "-rN",
            "--tb=short",
            "--durations=12",
            "-W",
            "ignore::DeprecationWarning",
            "-k",
            "integration",
            *(extra_args or []),
            *(str(tests / f) for f in (files or FILES)),
        ]
        server_before = _cpu(server_pid)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        proc = subprocess.run(
            argv, cwd=work, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
        seconds = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        outcomes: dict[str, dict[str, str]] = {}
        if outcomes_file.exists():
            for line in outcomes_file.read_text().splitlines():
                entry = json.loads(line)
                outcomes[entry.pop("nodeid")] = entry
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    server_cpu = None if server_pid is None else _cpu(server_pid) - server_before
    return Run(outcomes, proc.returncode, proc.stdout + proc.stderr, seconds, cpu, server_cpu)


def _cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


# ---------------------------------------------------------------- the command


@contextlib.contextmanager
def tintdb_server() -> Iterator[tuple[str, int | None]]:
    sys.path.insert(0, str(ROOT / "tests"))
    from _server import TintServer

    with (
        tempfile.TemporaryDirectory(prefix="tintdb-chroma-tests-") as store,
        TintServer(Path(store) / "store", "--allow-reset") as server,
    ):
        yield server.url, server.pid


def rewrite(expected: dict[str, str], comparison: Comparison, path: Path = EXPECTED) -> int:
    """The list with passing entries dropped and new failures added as 'unclassified'."""
    keep = {n: r for n, r in expected.items() if n not in comparison.unexpected_passes}
    for nodeid in comparison.unexpected_failures:
        why = comparison.outcomes[nodeid].get("why", "").strip().splitlines()
        first = re.sub(r"\s+", " ", why[0] if why else "").lstrip("E ").strip()
        keep[nodeid] = f"unclassified: {first[:160]}"
    header = [ln for ln in path.read_text().splitlines() if ln.startswith("#")]
    body = [
        f"{n} | {r}"
        for n, r in sorted(keep.items(), key=lambda item: (item[0].split("::")[0], item[0]))
    ]
    path.write_text("\n".join([*header, "", *body]) + "\n")
    return sum(r.startswith("unclassified:") for r in keep.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", help="URL of a running server (default: start `tintdb run`)")
    parser.add_argument("--max-examples", type=int, default=MAX_EXAMPLES)
    parser.add_argument("--stateful-steps", type=int, default=STATEFUL_STEPS)
    parser.add_argument("--file", action="append", help="only this test file (repeatable)")
    parser.add_argument("--json", type=Path, help="also write every outcome to this file")
    parser.add_argument(
        "--update",
        action="store_true",
        help="rewrite expected_failures.txt: drop entries that pass, add new failures as "
        "'unclassified: ...' (which the list refuses until each gets a real reason)",
    )
    args = parser.parse_args()
    expected = read_expected() if not args.update else _read_loosely()
    with contextlib.ExitStack() as stack:
        url, pid = (args.server, None) if args.server else stack.enter_context(tintdb_server())
        run = run_tests(
            url,
            files=args.file,
            max_examples=args.max_examples,
            stateful_steps=args.stateful_steps,
            server_pid=pid,
        )
    if not run.outcomes:
        print(run.output)
        return 2
    if args.json:
        args.json.write_text(json.dumps(run.outcomes, indent=1, sort_keys=True))
    if args.file:  # only the entries of the files that ran
        ran = {f"chromadb/test/{f}" for f in args.file}
        expected = {n: r for n, r in expected.items() if n.split("::")[0] in ran}
    comparison = compare(run.outcomes, expected)
    print(comparison.report())
    print(f"slowest:\n{run.slowest()}")
    print(run.timing())
    if args.update:
        if args.file:
            print("--update rewrites the whole list: run it without --file")
            return 2
        left = rewrite(expected, comparison)
        print(f"rewrote {EXPECTED}: {left} entries need a reason")
    return 0 if comparison.ok() else 1


def _read_loosely() -> dict[str, str]:
    """The list as it stands, unclassified entries included (for --update)."""
    expected = {}
    for line in EXPECTED.read_text().splitlines():
        if line.strip() and not line.startswith("#") and " | " in line:
            nodeid, _, reason = line.partition(" | ")
            expected[nodeid.strip()] = reason.strip()
    return expected


if __name__ == "__main__":
    sys.exit(main())
