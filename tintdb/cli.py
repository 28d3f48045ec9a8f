"""The ``tintdb`` command: ``tintdb run`` serves a store over Chroma's REST API.

Every flag can also come from the environment (``TINTDB_PATH``, ``TINTDB_PORT`` ...), so
a container or a service manager can configure the server without a command line. A
flag given on the command line wins over the environment.

Over 500 lines because every command shares one argument parser and one way of
reading flags from the environment. What would split off cleanly: the store commands
(``copy``/``export``/``import``, ``backup``/``restore``, ``vacuum``: their parsers and
handlers), leaving ``run`` here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "main"]

DEFAULT_PATH = "./tintdb_data"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_MAX_BODY_MB = 256
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 60.0
DEFAULT_MAX_CONCURRENT = 64

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class UsageError(Exception):
    """A bad flag or environment value: reported in one line, exit status 2."""


def _env_bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f"{name}={raw!r} is not a boolean: use 1/0, true/false, yes/no or on/off")


def _env_number(env: Mapping[str, str], name: str, default: float, kind: type) -> Any:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The argument parser, with defaults taken from ``env`` (``os.environ`` by default)."""
    env = os.environ if env is None else env
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="tintdb",
        description="tintdb: an embedding database with Chroma's API.",
    )
    parser.add_argument("--version", action="version", version=f"tintdb {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser(
        "run",
        help="serve a store over HTTP (Chroma's REST API, for HttpClient and the official clients)",
        description="Serve a store over Chroma's v2 REST API. Each flag also reads the "
        "environment variable named in its help; the flag wins.",
    )
    run.add_argument(
        "--path",
        default=env.get("TINTDB_PATH") or DEFAULT_PATH,
        help=f"directory of the store, created if missing (TINTDB_PATH; default {DEFAULT_PATH})",
    )
    run.add_argument(
        "--postgres",
        default=env.get("TINTDB_POSTGRES") or None,
        metavar="DSN",
        help="keep the store in PostgreSQL with pgvector instead of --path "
        "(postgresql://user:password@host:5432/db; needs tintdb[postgres]). Any number of "
        "nodes may serve one database; each keeps nothing of its own (TINTDB_POSTGRES)",
    )
    run.add_argument(
        "--host",
        default=env.get("TINTDB_HOST") or DEFAULT_HOST,
        help=f"address to listen on; 0.0.0.0 for every interface (TINTDB_HOST; "
        f"default {DEFAULT_HOST})",
    )
    run.add_argument(
        "--port",
        type=int,
        default=_env_number(env, "TINTDB_PORT", DEFAULT_PORT, int),
        help=f"port to listen on; 0 picks a free one (TINTDB_PORT; default {DEFAULT_PORT})",
    )
    run.add_argument(
        "--auth-token",
        default=env.get("TINTDB_AUTH_TOKEN") or None,
        help="require this token in 'x-chroma-token' or 'Authorization: Bearer' on every "
        "request except heartbeat, version, pre-flight-checks and healthcheck "
        "(TINTDB_AUTH_TOKEN; default: no auth)",
    )
    run.add_argument(
        "--allow-reset",
        action="store_true",
        default=_env_bool(env, "TINTDB_ALLOW_RESET"),
        help="let clients call reset(), which deletes everything (TINTDB_ALLOW_RESET)",
    )
    cors_env = [o.strip() for o in env.get("TINTDB_CORS_ORIGINS", "").split(",") if o.strip()]
    run.add_argument(
        "--cors-origin",
        dest="cors_origins",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="allow browser requests from this origin; repeat for several, '*' for any "
        "(TINTDB_CORS_ORIGINS, comma-separated; default: none)",
    )
    run.add_argument(
        "--max-body-mb",
        type=float,
        default=_env_number(env, "TINTDB_MAX_BODY_MB", DEFAULT_MAX_BODY_MB, float),
        help=f"largest request body accepted, in MiB (TINTDB_MAX_BODY_MB; "
        f"default {DEFAULT_MAX_BODY_MB})",
    )
    run.add_argument(
        "--header-timeout",
        type=float,
        default=_env_number(env, "TINTDB_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT, float),
        metavar="SECONDS",
        help="a request's line and headers must arrive within this many seconds of the "
        f"connection opening or of the previous answer (TINTDB_HEADER_TIMEOUT; "
        f"default {DEFAULT_HEADER_TIMEOUT:g})",
    )
    run.add_argument(
        "--body-timeout",
        type=float,
        default=_env_number(env, "TINTDB_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT, float),
        metavar="SECONDS",
        help="a request's whole body must arrive within this many seconds "
        f"(TINTDB_BODY_TIMEOUT; default {DEFAULT_BODY_TIMEOUT:g})",
    )
    run.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=_env_number(env, "TINTDB_MAX_CONCURRENT_REQUESTS", DEFAULT_MAX_CONCURRENT, int),
        metavar="N",
        help="requests in progress at once; more are answered 503 with Retry-After "
        f"(TINTDB_MAX_CONCURRENT_REQUESTS; default {DEFAULT_MAX_CONCURRENT})",
    )
    run.add_argument(
        "--log-level",
        default=env.get("TINTDB_LOG_LEVEL") or "warning",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level; 'info' also logs every request (TINTDB_LOG_LEVEL; default warning)",
    )
    run.set_defaults(handler=_run, cors_env=cors_env)

    vacuum = commands.add_parser(
        "vacuum",
        help="give the disk space of deleted records back (stop servers on the path first)",
        description="Rewrite a store's database file compactly. It needs the store to itself "
        "for the duration: stop 'tintdb run' and other clients on the path first.",
    )
    vacuum.add_argument(
        "--path",
        default=env.get("TINTDB_PATH") or DEFAULT_PATH,
        help=f"directory of the store (TINTDB_PATH; default {DEFAULT_PATH})",
    )
    vacuum.set_defaults(handler=_vacuum)
    _moving_commands(commands, env)
    return parser


def _moving_commands(commands: Any, env: Mapping[str, str]) -> None:
    """copy / export / import (any store to any other) and backup / restore."""
    described = {
        "copy": "Copy collections and their records from SOURCE to DEST, any of: a tintdb "
        "store directory, a Chroma persistent directory (read only), a tintdb or Chroma "
        "server (http://host:port), an export file (*.jsonl, *.jsonl.gz). Run it again "
        "after an interruption: records already at DEST are skipped.",
        "export": "Write collections to an export file (DEST: *.jsonl or *.jsonl.gz); the "
        "same as copy, described in docs/export-format.md.",
        "import": "Read an export file (SOURCE) into a store or server; the same as copy.",
    }
    for name, description in described.items():
        sub = commands.add_parser(
            name, help=description.split(";")[0].split(", any")[0], description=description
        )
        sub.add_argument("source", metavar="SOURCE")
        sub.add_argument("dest", metavar="DEST")
        sub.add_argument(
            "-c",
            "--collection",
            dest="collections",
            action="append",
            metavar="PATTERN",
            help="copy only collections whose name (or "
            "tenant/database/name) matches; shell patterns (*, ?); repeatable",
        )
        sub.add_argument(
            "--tenant",
            dest="tenants",
            action="append",
            metavar="TENANT",
            help="tenants to read (a server cannot list them: default "
            "default_tenant there, every tenant elsewhere); repeatable",
        )
        sub.add_argument(
            "--dry-run",
            action="store_true",
            help="show what would be copied (collections, records, sizes); write nothing",
        )
        sub.add_argument(
            "--no-verify",
            dest="verify",
            action="store_false",
            help="skip the check at the end (counts, and a sample compared field by field)",
        )
        sub.add_argument(
            "--sample",
            type=int,
            default=200,
            help="records per collection compared at the end (default 200)",
        )
        sub.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="records per write (default: about 8 MiB of vectors)",
        )
        sub.add_argument(
            "--source-token",
            default=env.get("TINTDB_SOURCE_TOKEN") or None,
            help="token for a SOURCE server, sent as x-chroma-token (TINTDB_SOURCE_TOKEN)",
        )
        sub.add_argument(
            "--dest-token",
            default=env.get("TINTDB_DEST_TOKEN") or None,
            help="token for a DEST server, sent as x-chroma-token (TINTDB_DEST_TOKEN)",
        )
        sub.add_argument(
            "--chroma-reader",
            choices=["auto", "chromadb", "files"],
            default="auto",
            help="how to read a Chroma directory: through the chromadb package, "
            "its files directly, or auto (chromadb if installed; default)",
        )
        sub.add_argument(
            "--report",
            metavar="FILE",
            default=None,
            help="write the full outcome as JSON (every refused id, every problem)",
        )
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        sub.set_defaults(handler=_copy, verb=name)

    backup = commands.add_parser(
        "backup",
        help="copy a store consistently while it is in use",
        description="Copy the store at --path to DEST (a new or empty directory) while "
        "servers and clients go on writing to it. The copy holds exactly the writes "
        "committed before the backup began; it is a store (open it, or restore it).",
    )
    backup.add_argument(
        "--path",
        default=env.get("TINTDB_PATH") or DEFAULT_PATH,
        help=f"directory of the store (TINTDB_PATH; default {DEFAULT_PATH})",
    )
    backup.add_argument("dest", metavar="DEST")
    backup.set_defaults(handler=_backup)
    restore = commands.add_parser(
        "restore",
        help="put a backup in place as a store",
        description="Copy the backup BACKUP to --path, which must be new or empty (move an "
        "old store aside first, with its servers stopped). The backup is left untouched.",
    )
    restore.add_argument("backup", metavar="BACKUP")
    restore.add_argument(
        "--path",
        default=env.get("TINTDB_PATH") or DEFAULT_PATH,
        help=f"directory to restore into (TINTDB_PATH; default {DEFAULT_PATH})",
    )
    restore.set_defaults(handler=_restore)


def _check_run_args(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port number (0-65535)")
    if not args.max_body_mb > 0:
        raise UsageError(f"--max-body-mb must be positive, got {args.max_body_mb}")
    for flag, value in (
        ("--header-timeout", args.header_timeout),
        ("--body-timeout", args.body_timeout),
    ):
        if not 0 < value < float("inf"):
            raise UsageError(f"{flag} must be a positive number of seconds, got {value}")
    if args.max_concurrent_requests < 1:
        raise UsageError(
            f"--max-concurrent-requests must be at least 1, got {args.max_concurrent_requests}"
        )
    if args.cors_origins is None:
        args.cors_origins = args.cors_env
    if args.auth_token is not None and not args.auth_token.strip():
        raise UsageError("--auth-token must not be empty")


def _bind(host: str, port: int) -> socket.socket:
    """Bind before starting, so the banner can name the real port (``--port 0``) and a
    port in use is reported plainly."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve --host {host!r}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            + ("; pick another port with --port" if port else "")
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _connect_host(host: str) -> str:
    return "localhost" if host in ("0.0.0.0", "::", "") else host


def banner(
    *,
    version: str,
    path: Path,
    host: str,
    port: int,
    auth: bool,
    allow_reset: bool,
    cors_origins: Sequence[str],
    max_body_mb: float,
) -> str:
    """What the operator needs on start: where the data is, and how to connect."""
    shown = _connect_host(host)
    url_host = f"[{shown}]" if ":" in shown else shown
    headers_py = ', headers={"x-chroma-token": "<token>"}' if auth else ""
    headers_js = ', headers: { "x-chroma-token": "<token>" }' if auth else ""
    lines = [
        f"tintdb {version} is serving Chroma's REST API on http://{url_host}:{port}",
        f"  data:        {path}",
        f"  auth:        {'token required' if auth else 'off (open to anyone who can connect)'}",
        f"  reset:       {'allowed' if allow_reset else 'refused (--allow-reset allows it)'}",
        f"  CORS:        {', '.join(cors_origins) if cors_origins else 'off'}",
        f"  max body:    {max_body_mb:g} MiB",
        "",
        "Connect from Python (tintdb or chromadb):",
        "    import tintdb",
        f'    client = tintdb.HttpClient(host="{shown}", port={port}{headers_py})',
        "Connect from JavaScript (npm chromadb):",
        '    import { ChromaClient } from "chromadb";',
        f'    const client = new ChromaClient({{ host: "{shown}", port: {port}{headers_js} }});',
        "",
        "Press Ctrl+C to stop.",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def _quiet_stop_signals() -> Iterator[None]:
    """After a graceful shutdown uvicorn re-raises SIGINT/SIGTERM to the handler that was
    installed before it; with Python's defaults that kills the process before the index
    snapshots are written. A recording handler lets ``run`` return normally instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from . import __version__
    from ._local import LocalBackend
    from ._serving import H11_BUFFER, guarded_protocol
    from .config import Settings
    from .server import create_app

    _check_run_args(args)
    backend: Any
    if args.postgres:
        from .errors import TintError

        try:
            from ._postgres import PostgresBackend, redacted
        except ImportError as exc:  # no driver: pip install 'tintdb[postgres]'
            raise UsageError(str(exc)) from None
        shown: Any = f"PostgreSQL {redacted(args.postgres)} (this node keeps no state)"
        settings = Settings(allow_reset=args.allow_reset)
        sock = _bind(args.host, args.port)
        try:
            backend = PostgresBackend(args.postgres, settings)
        except (TintError, ImportError) as exc:  # unreachable, refused, no driver...
            sock.close()
            raise UsageError(str(exc)) from None
        except BaseException:
            sock.close()
            raise
    else:
        path = Path(args.path).expanduser().resolve()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create the data directory {path}: {exc}") from exc
        shown = path
        sock = _bind(args.host, args.port)
        settings = Settings(
            allow_reset=args.allow_reset, is_persistent=True, persist_directory=str(path)
        )
        backend = LocalBackend(path, settings)
    port = sock.getsockname()[1]
    try:
        app = create_app(
            backend,
            auth_token=args.auth_token,
            allow_reset=args.allow_reset,
            cors_origins=args.cors_origins,
            max_body_bytes=int(args.max_body_mb * 1024 * 1024),
            body_timeout=args.body_timeout,
            max_concurrent=args.max_concurrent_requests,
        )
        print(
            banner(
                version=__version__,
                path=shown,
                host=args.host,
                port=port,
                auth=args.auth_token is not None,
                allow_reset=args.allow_reset,
                cors_origins=args.cors_origins,
                max_body_mb=args.max_body_mb,
            ),
            flush=True,
        )
        config = uvicorn.Config(
            app,
            log_level=args.log_level,
            access_log=args.log_level in ("info", "debug"),
            server_header=False,
            timeout_graceful_shutdown=10,
            http=guarded_protocol(args.header_timeout),
            h11_max_incomplete_event_size=H11_BUFFER,
        )
        with _quiet_stop_signals():
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        backend.close()  # writes index snapshots, so the next start is fast
        sock.close()
    where = "in PostgreSQL" if args.postgres else "on disk"
    print(f"tintdb stopped; all data is {where}.", flush=True)
    return 0


def _vacuum(args: argparse.Namespace) -> int:
    from ._local import LocalBackend

    path = Path(args.path).expanduser().resolve()
    if not (path / "tintdb.sqlite3").is_file():
        raise UsageError(f"no tintdb store at {path}")
    before = _store_bytes(path)
    backend = LocalBackend(path)
    try:
        backend.vacuum()
    finally:
        backend.close()
    after = _store_bytes(path)
    print(f"vacuumed {path}: {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB", flush=True)
    return 0


def _copy(args: argparse.Namespace) -> int:
    from . import _copy as copying
    from .errors import TintError

    if args.verb == "export" and not args.dest.lower().endswith((".jsonl", ".jsonl.gz")):
        raise UsageError(f"export writes a *.jsonl or *.jsonl.gz file, not {args.dest!r}")
    if args.verb == "import" and not args.source.lower().endswith((".jsonl", ".jsonl.gz")):
        raise UsageError(f"import reads a *.jsonl or *.jsonl.gz file, not {args.source!r}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.sample < 0:
        raise UsageError("--sample must not be negative")
    try:
        report = copying.copy(
            args.source,
            args.dest,
            collections=args.collections,
            tenants=args.tenants,
            dry_run=args.dry_run,
            verify=args.verify,
            sample=args.sample,
            batch_size=args.batch_size,
            source_token=args.source_token,
            dest_token=args.dest_token,
            chroma_reader=args.chroma_reader,
            progress=not args.quiet,
        )
    except (TintError, OSError) as exc:
        print(f"tintdb {args.verb}: {exc}", file=sys.stderr)
        return 1
    if args.report:
        import orjson

        Path(args.report).write_bytes(
            orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2) + b"\n"
        )
    print(
        copying.describe_plan(report) if args.dry_run else copying.describe_result(report),
        flush=True,
    )
    return 0 if report.ok else 1


def _backup(args: argparse.Namespace) -> int:
    from ._backup import backup_store
    from .errors import TintError

    try:
        info = backup_store(Path(args.path), Path(args.dest))
    except (TintError, OSError, sqlite3_error()) as exc:
        print(f"tintdb backup: {exc}", file=sys.stderr)
        return 1
    print(
        f"backed up {Path(args.path).resolve()} to {info.path.resolve()}: "
        f"{info.bytes / 1e6:.1f} MB, {info.collections} collections "
        f"({info.index_snapshots} index snapshots copied), every write up to change "
        f"{info.lsn}, in {info.seconds:.1f} s",
        flush=True,
    )
    return 0


def _restore(args: argparse.Namespace) -> int:
    from ._backup import restore_store
    from .errors import TintError

    try:
        info = restore_store(Path(args.backup), Path(args.path))
    except (TintError, OSError, sqlite3_error()) as exc:
        print(f"tintdb restore: {exc}", file=sys.stderr)
        return 1
    print(
        f"restored {Path(args.backup).resolve()} to {info.path.resolve()}: "
        f"{info.bytes / 1e6:.1f} MB, {info.collections} collections, in {info.seconds:.1f} s",
        flush=True,
    )
    return 0


def sqlite3_error() -> type[Exception]:
    import sqlite3

    return sqlite3.Error


def _store_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("tintdb.sqlite3*") if f.is_file())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tintdb`` console script and ``python -m tintdb``."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.handler(args))
    except UsageError as exc:
        print(f"tintdb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
