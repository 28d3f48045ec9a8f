"""``tintdb run`` protects itself: deadlines for a request's head and body, limits on
the request line and headers, and a bound on requests in progress, each answered with
a JSON error body. Raw sockets, since an HTTP client library would not misbehave."""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from _server import TintServer

from tintdb import cli
from tintdb._serving import MAX_HEAD, MAX_REQUEST_LINE

GUARD = 60.0  # a hang guard on every socket read, not a measured time


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TintServer]:
    """A server with one-second deadlines."""
    path = tmp_path_factory.mktemp("strict")
    with TintServer(path, "--header-timeout", "1", "--body-timeout", "1") as server:
        yield server


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TintServer]:
    """A server that takes two requests at a time."""
    path = tmp_path_factory.mktemp("narrow")
    with TintServer(path, "--max-concurrent-requests", "2") as server:
        yield server


def _connect(server: TintServer) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=GUARD)
    return sock


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, str]]:
    """Status, headers and JSON body of one response (read until the connection ends
    or the body is complete)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed without an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return status, headers, orjson.loads(body[:length])


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_connection_that_sends_nothing_is_closed(strict: TintServer) -> None:
    with _connect(strict) as sock:
        assert _closed(sock)


def test_a_trickled_request_head_gets_408(strict: TintServer) -> None:
    with _connect(strict) as sock:
        sock.sendall(b"GET /api/v2/heartbeat HTTP/1.1\r\nHost: x\r\n")  # no blank line
        status, headers, body = _read_answer(sock)
        assert status == 408 and headers["connection"] == "close"
        assert body == {
            "error": "ChromaError",
            "message": "The request headers did not arrive within 1 seconds",
        }
        assert _closed(sock)


def test_a_trickled_body_gets_408(strict: TintServer) -> None:
    with _connect(strict) as sock:
        sock.sendall(
            b"POST /api/v2/tenants HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            b"content-length: 100\r\n\r\n{"
        )
        status, headers, body = _read_answer(sock)
        assert status == 408 and headers["connection"] == "close"
        assert body["message"] == "The request body did not arrive within 1 seconds"
        assert _closed(sock)


def test_a_prompt_request_is_served_on_a_strict_server(strict: TintServer) -> None:
    with httpx.Client(base_url=strict.url, timeout=GUARD) as c:
        for _ in range(3):  # keep-alive: each request's head gets its own deadline
            assert c.get("/api/v2/heartbeat").status_code == 200
        r = c.post("/api/v2/tenants", json={"name": "prompt"})
        assert r.status_code == 200


def test_an_overlong_url_gets_414(strict: TintServer) -> None:
    with _connect(strict) as sock:
        target = b"/api/v2/heartbeat?x=" + b"a" * 100_000
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = _read_answer(sock)
        assert status == 414
        assert body["message"].startswith(
            f"The request line is longer than {MAX_REQUEST_LINE} bytes"
        )


def test_a_url_just_under_the_limit_is_served(strict: TintServer) -> None:
    path = "/api/v2/heartbeat?x="
    url = strict.url + path + "a" * (MAX_REQUEST_LINE - len(path) - 100)
    assert httpx.get(url, timeout=GUARD).status_code == 200


def test_oversized_headers_get_431(strict: TintServer) -> None:
    r = httpx.get(
        strict.url + "/api/v2/heartbeat", headers={"x-big": "b" * (MAX_HEAD + 1)}, timeout=GUARD
    )
    assert r.status_code == 431
    assert r.json()["message"] == f"The request headers are larger than {MAX_HEAD} bytes"


def _held(server: TintServer) -> socket.socket:
    """A request in progress: its head sent, its body held back."""
    sock = _connect(server)
    sock.sendall(
        b"POST /api/v2/tenants HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: 16\r\n\r\n"
    )
    return sock


def _answered(sock: socket.socket) -> bool:
    """Has the server answered (refused) this held request already? Never waits."""
    return bool(select.select([sock], [], [], 0)[0])


def _until_refused(server: TintServer, probe: Callable[[], Any]) -> tuple[Any, list[socket.socket]]:
    """Hold two requests and probe until the probe is refused.

    A held request whose head reaches the server while a probe is in progress is
    itself refused; such ones are replaced, so that two are in progress in the end."""
    held: list[socket.socket] = []
    for _ in range(600):  # a hang guard
        for sock in [s for s in held if _answered(s)]:
            held.remove(sock)
            sock.close()
        while len(held) < 2:
            held.append(_held(server))
        refused = probe()
        if refused is not None:
            return refused, held
    pytest.fail("the server never refused a request past its bound")


def test_past_the_bound_on_requests_the_answer_is_503(narrow: TintServer) -> None:
    with httpx.Client(base_url=narrow.url, timeout=GUARD) as c:

        def probe() -> httpx.Response | None:
            r = c.get("/api/v2/heartbeat")
            return r if r.status_code == 503 else None

        busy, held = _until_refused(narrow, probe)
        assert busy.headers["retry-after"] == "1"
        assert busy.json() == {
            "error": "ServiceUnavailableError",
            "message": "The server is answering 2 requests already; retry after a second",
        }
        for i, sock in enumerate(held):
            sock.sendall(b'{"name": "t-%d"}' % (i + 10))
            status, _, _ = _read_answer(sock)
            assert status == 200
            sock.close()
        assert c.get("/api/v2/heartbeat").status_code == 200
        assert c.get("/api/v2/tenants/t-10").json()["name"] == "t-10"


def test_tintdbs_client_raises_service_unavailable(narrow: TintServer) -> None:
    import tintdb
    from tintdb.errors import ServiceUnavailableError

    with tintdb.HttpClient(host=narrow.host, port=narrow.port) as client:

        def probe() -> ServiceUnavailableError | None:
            try:
                client.list_collections()
            except ServiceUnavailableError as exc:
                return exc
            return None

        refused, held = _until_refused(narrow, probe)
        assert "retry after a second" in str(refused)
        for sock in held:
            sock.close()


@pytest.mark.parametrize(
    "args",
    [
        ["--header-timeout", "0"],
        ["--body-timeout", "-1"],
        ["--body-timeout", "inf"],
        ["--max-concurrent-requests", "0"],
    ],
)
def test_bad_limits_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    parser = cli.build_parser({})
    parsed = parser.parse_args(["run", "--path", str(tmp_path), *args])
    with pytest.raises(cli.UsageError):
        cli._check_run_args(parsed)


def test_limits_come_from_the_environment() -> None:
    env = {
        "TINTDB_HEADER_TIMEOUT": "3",
        "TINTDB_BODY_TIMEOUT": "7.5",
        "TINTDB_MAX_CONCURRENT_REQUESTS": "9",
    }
    args = cli.build_parser(env).parse_args(["run"])
    assert (args.header_timeout, args.body_timeout, args.max_concurrent_requests) == (3, 7.5, 9)
    args = cli.build_parser({}).parse_args(["run"])
    assert (args.header_timeout, args.body_timeout, args.max_concurrent_requests) == (10, 60, 64)
