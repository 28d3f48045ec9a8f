"""Start and stop a real ``tintdb run`` for tests that need a server over real HTTP.

The server is told ``--port 0`` and reports the port it got in its banner, so there is
no race for a "free" port. ``TintServer`` is a context manager; see the test modules
for pytest fixtures built on it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

_URL = re.compile(r"http://(\S+):(\d+)")
START_TIMEOUT = 60.0


class TintServer:
    """``python -m tintdb run --path <path> --port 0 <args>`` in a subprocess."""

    def __init__(self, path: str | Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.args: Sequence[str] = args
        self.env = env
        self.host = "127.0.0.1"
        self.port = 0
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._port_seen = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _drain(self, stream: Any, sink: list[str], watch: bool) -> None:
        with stream:  # closed at the end of output, once the server has exited
            for line in stream:
                sink.append(line)
                if watch and not self._port_seen.is_set():
                    found = _URL.search(line)
                    if found:
                        self.port = int(found.group(2))
                        self._port_seen.set()

    def start(self) -> TintServer:
        # Only what the test asks for: no TINTDB_* setting leaks in from the shell.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TINTDB_")}
        env.update(self.env or {})
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tintdb",
                "run",
                "--path",
                str(self.path),
                "--host",
                self.host,
                "--port",
                "0",
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for stream, sink, watch in (
            (self._proc.stdout, self.stdout, True),
            (self._proc.stderr, self.stderr, False),
        ):
            threading.Thread(target=self._drain, args=(stream, sink, watch), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._port_seen.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tintdb run did not start:\n{self.output()}")
        while True:
            try:
                if httpx.get(self.url + "/api/v2/heartbeat", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tintdb run never answered heartbeat:\n{self.output()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a graceful stop that writes index snapshots), SIGKILL if it hangs."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def output(self) -> str:
        return "".join(self.stdout) + "".join(self.stderr)

    def __enter__(self) -> TintServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ChromaRun:
    """A real ``chroma run`` (chromadb's own server) from ``chroma``, the CLI of a
    virtualenv that has chromadb installed: the reference that tests compare with.

    It is told port 0 in a config file and does not print the port it got, so the
    port is read from the process's listening socket.
    """

    def __init__(self, chroma: str | Path, path: str | Path) -> None:
        self.chroma = Path(chroma)
        self.path = Path(path)
        self.host = "127.0.0.1"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self.path / "chroma-run.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ChromaRun:
        import psutil

        self.path.mkdir(parents=True, exist_ok=True)
        config = self.path / "chroma.yaml"
        config.write_text(
            f'port: 0\nlisten_address: "{self.host}"\n'
            f'persist_path: "{self.path / "data"}"\nallow_reset: true\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHROMA_")}
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(
                [str(self.chroma), "run", str(config)], stdout=log, stderr=log, env=env
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"chroma run did not start:\n{self.output()}")
            listening = [
                c.laddr.port
                for c in psutil.Process(self._proc.pid).net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN
            ]
            if listening:
                self.port = listening[0]
                try:
                    if httpx.get(self.url + "/api/v2/heartbeat", timeout=2).status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
            time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def output(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""

    def __enter__(self) -> ChromaRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
