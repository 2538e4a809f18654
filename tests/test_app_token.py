"""The editor's network surface: listening beyond loopback needs a token; with one, every request
and the socket need it (once, then a cookie); the Host and any Origin must name this server; the
command line checks the port and can read the token from a file or the environment."""

from __future__ import annotations

import base64
import http.client
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from app.main import COOKIE, LOGIN_PATH, AccessGuard, Settings, check_settings, is_loopback
from graphcore.cli.main import main
from graphcore.core.diagnostics import GraphError

TOKEN = "correct-horse-battery"
SOCKET = "/_nicegui_ws/socket.io/"
SERVED = "http://127.0.0.1:8080"  # the address the in-process app is served at (TestClient's sockets: testserver)
# Paths (and a form's "next") that a browser would follow off the site: //host, /\host, /<tab>/host.
PATH_ESCAPES = ["//evil.example/steal", "/\\evil.example/steal", "/%09/evil.example", "/%2F/evil.example"]
NEXT_ESCAPES = ["//evil.example/steal", "/\\evil.example", "/\t/evil.example", "https://evil.example/",
                "javascript:alert(1)", ""]


async def socket_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("open")
    await websocket.close()


def guarded(host: str = "127.0.0.1", token: str | None = TOKEN) -> Starlette:
    """A stand-in editor: one page, one socket, behind the guard the editor uses."""
    inner = Starlette(routes=[Route("/{path:path}", lambda request: PlainTextResponse("the editor"),
                                    methods=["GET", "POST"]),
                              WebSocketRoute(SOCKET, socket_endpoint)])
    inner.add_middleware(AccessGuard, host=host, token=token)
    return inner


def browser(app: Starlette | None = None, base_url: str = SERVED) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app or guarded()), base_url=base_url)


def action_and_next(page: str) -> tuple[str, str]:
    """The login form's ``action`` and its hidden ``next`` field."""
    action = re.search(r'<form method="post" action="([^"]*)"', page)
    target = re.search(r'name="next" value="([^"]*)"', page)
    assert action and target, page
    return action[1], target[1]


def logged_in(client: TestClient) -> dict[str, str]:
    """Log in through the form; the cookie header that a socket sends (the test client's sockets
    do not send its cookies by themselves)."""
    assert client.post(LOGIN_PATH, data={"token": TOKEN, "next": "/"}, follow_redirects=False).status_code == 303
    return {"cookie": f"{COOKIE}={client.cookies[COOKIE]}"}


def test_a_public_host_needs_a_long_enough_token():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    with pytest.raises(GraphError, match="access token"):
        check_settings(Settings(host="0.0.0.0"))
    with pytest.raises(GraphError, match="too short .* at least 12"):
        check_settings(Settings(host="0.0.0.0", token="s3cret"))
    check_settings(Settings(host="0.0.0.0", token=TOKEN))


async def test_pages_ask_for_the_token_and_remember_it():
    async with browser() as client:
        page = await client.get("/", headers={"accept": "text/html"})
        assert page.status_code == 401 and 'name="token"' in page.text
        assert (await client.get("/", params={"token": "wrong"}, headers={"accept": "text/html"})).status_code == 401
        assert (await client.get(SOCKET)).status_code == 401
        login = await client.get("/", params={"token": TOKEN})
        assert login.status_code == 303 and TOKEN not in login.headers["set-cookie"]
        assert COOKIE in login.headers["set-cookie"] and "httponly" in login.headers["set-cookie"].lower()
        page = await client.get("/")
        assert page.status_code == 200 and page.text == "the editor"


async def test_the_login_form_posts_to_a_fixed_path_and_returns_only_within_the_site():
    async with browser() as client:
        page = await client.get("/graphs/a", headers={"accept": "text/html"})
        assert action_and_next(page.text) == (LOGIN_PATH, "/graphs/a")
        wrong = await client.post(LOGIN_PATH, data={"token": "wrong", "next": "/graphs/a"},
                                  headers={"accept": "text/html"})
        assert wrong.status_code == 401 and "Wrong token." in wrong.text and COOKIE not in client.cookies
        right = await client.post(LOGIN_PATH, data={"token": TOKEN, "next": "/graphs/a"})
        assert right.status_code == 303 and right.headers["location"] == "/graphs/a"
        assert TOKEN not in right.headers["location"] and COOKIE in client.cookies
    for escape in PATH_ESCAPES:
        async with browser() as client:
            page = await client.get(SERVED + escape, headers={"accept": "text/html"})
            assert page.status_code == 401 and action_and_next(page.text) == (LOGIN_PATH, "/"), escape
        async with browser() as client:  # the link printed in the terminal follows the same rule
            linked = await client.get(SERVED + escape, params={"token": TOKEN})
            assert linked.status_code == 303 and linked.headers["location"] == "/", escape
    for escape in NEXT_ESCAPES:
        async with browser() as client:
            posted = await client.post(LOGIN_PATH, data={"token": TOKEN, "next": escape})
            assert posted.status_code == 303 and posted.headers["location"] == "/", escape


def test_the_socket_needs_the_token_too():
    with TestClient(guarded()) as client:
        with pytest.raises(WebSocketDenialResponse) as refused:
            client.websocket_connect(SOCKET).__enter__()
        assert refused.value.status_code == 401
        with client.websocket_connect(SOCKET, headers=logged_in(client)) as websocket:
            assert websocket.receive_text() == "open"


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LOCALHOST:8080"])
async def test_the_loopback_editor_answers_to_its_own_names(host: str):
    async with browser(guarded(token=None)) as client:
        assert (await client.get("/", headers={"host": host})).status_code == 200


@pytest.mark.parametrize("host", ["evil.example:8080", "evil.example", "127.0.0.1:9090", "127.0.0.1",
                                  "127.0.0.1:8080@evil.example", "", "127.0.0.1.nip.io:8080"])
async def test_another_host_name_is_refused(host: str):
    """DNS rebinding: a page from evil.example, its name now resolving to 127.0.0.1, must not reach the
    editor (which has no token on loopback)."""
    async with browser(guarded(token=None)) as client:
        refused = await client.get("/", headers={"host": host})
        assert refused.status_code == 403 and "host" in refused.text.lower()


async def test_a_named_host_answers_to_that_name_and_all_interfaces_to_any():
    async with browser(guarded(host="editor.lan", token=None), base_url="http://10.0.0.5:8080") as client:
        assert (await client.get("/", headers={"host": "editor.lan:8080"})).status_code == 200
        assert (await client.get("/", headers={"host": "10.0.0.5:8080"})).status_code == 200
        assert (await client.get("/", headers={"host": "evil.example:8080"})).status_code == 403
    async with browser(guarded(host="0.0.0.0", token=None), base_url="http://10.0.0.5:8080") as client:
        assert (await client.get("/", headers={"host": "any-name.lan:8080"})).status_code == 200


async def test_a_foreign_origin_is_refused():
    async with browser(guarded(token=None)) as client:
        for method in ("POST", "GET"):
            refused = await client.request(method, "/", headers={"origin": "http://evil.example"})
            assert refused.status_code == 403 and "origin" in refused.text.lower(), method
        assert (await client.post("/", headers={"origin": "null"})).status_code == 403
        assert (await client.post("/", headers={"origin": SERVED})).status_code == 200
        assert (await client.post("/")).status_code == 200  # no Origin: not a browser's cross-site request
    with TestClient(guarded()) as client:
        cookie = logged_in(client)
        with pytest.raises(WebSocketDenialResponse) as refused:
            client.websocket_connect(SOCKET, headers={**cookie, "origin": "http://evil.example"}).__enter__()
        assert refused.value.status_code == 403
        with client.websocket_connect(SOCKET, headers={**cookie, "origin": "http://testserver"}) as websocket:
            assert websocket.receive_text() == "open"


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line of an argparse error (after its usage line) or of a refusal."""
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("usage:", " "))]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("port", ["99999999", "0", "-1", "65536", "http"])
def test_a_port_out_of_range_is_refused(port: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        main(["--port", port])
    assert exited.value.code == 2
    assert "--port" in one_line_error(capsys)


def test_a_busy_port_is_one_line(capsys: pytest.CaptureFixture[str]):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--port", str(port)]) == 2
    assert f"127.0.0.1:{port}" in one_line_error(capsys)


def test_the_token_can_come_from_a_file_and_help_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "--token-file" in shown and "NETCANVAS_TOKEN" in shown and "ps" in shown
    assert "validate" in shown and "train" in shown  # the commands are listed there too
    for content, problem in ((None, "No such file"), ("", "empty"), (f"{TOKEN}\nsecond\n", "one line")):
        path = tmp_path / "token"
        path.unlink(missing_ok=True)
        if content is not None:
            path.write_text(content)
        with pytest.raises(SystemExit) as exited:
            main(["--token-file", str(path)])
        assert exited.value.code == 2 and problem in one_line_error(capsys)
    with pytest.raises(SystemExit) as exited:
        main(["--token", TOKEN, "--token-file", str(path)])
    assert exited.value.code == 2


# --- a real server, started as `netcanvas` is -------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
            body: str | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``netcanvas --port P --token-file F`` in a process of its own; yields the port."""
    folder = tmp_path_factory.mktemp("server")
    (folder / "token").write_text(f"{TOKEN}\n")
    port = free_port()
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("PYTEST_", "NICEGUI_", "NETCANVAS_"))}  # else NiceGUI thinks it is under test
    netcanvas = Path(sys.executable).parent / "netcanvas"
    command = [str(netcanvas), "--port", str(port), "--token-file", str(folder / "token")]
    with open(folder / "log", "w") as log:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (folder / "log").read_text()
            try:
                request(port, "GET", "/")
                break
            except OSError:
                assert time.monotonic() < deadline, (folder / "log").read_text()
                time.sleep(0.3)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def login(port: int) -> str:
    """Log in through the form, as a browser would; the cookie header to send from then on."""
    answer = request(port, "POST", LOGIN_PATH, {"content-type": "application/x-www-form-urlencoded",
                                                "origin": f"http://127.0.0.1:{port}"},
                     f"token={TOKEN}&next=%2F%2Fevil.example%2Fsteal")
    assert answer.status == 303 and answer.getheader("location") == "/"
    return answer.getheader("set-cookie").split(";")[0]


def open_socket(port: int, headers: dict[str, str]) -> tuple[int, bytes]:
    """Open socket.io's websocket as the page does: the handshake's status and, once it is open,
    the payload of the first frame (engine.io's "open" packet)."""
    handshake = [f"GET {SOCKET}?EIO=4&transport=websocket HTTP/1.1", f"Host: 127.0.0.1:{port}",
                 "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                 f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
                 *(f"{name}: {value}" for name, value in headers.items())]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(("\r\n".join(handshake) + "\r\n\r\n").encode())
        received = b""

        def until(done) -> None:
            nonlocal received
            while not done():
                chunk = connection.recv(4096)
                assert chunk, received
                received += chunk

        until(lambda: b"\r\n\r\n" in received)
        head, _, received = received.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        if status != 101:
            return status, b""
        until(lambda: len(received) >= 4)
        length, start = received[1] & 0x7F, 2
        if length == 126:  # a 16-bit length follows
            length, start = int.from_bytes(received[2:4], "big"), 4
        until(lambda: len(received) >= start + length)
        return status, received[start:start + length]


@pytest.mark.slow
def test_a_served_editor_guards_pages_and_socket(server: int):
    assert request(server, "GET", "/").status == 401
    assert request(server, "GET", "//evil.example/steal", {"accept": "text/html"}).status == 401
    assert open_socket(server, {})[0] == 401
    assert open_socket(server, {"cookie": f"{COOKIE}=wrong"})[0] == 401
    cookie = login(server)
    assert request(server, "GET", "/", {"cookie": cookie}).status == 200
    status, first = open_socket(server, {"cookie": cookie, "origin": f"http://127.0.0.1:{server}"})
    assert status == 101 and first.startswith(b'0{"sid"')  # engine.io's "open" packet
    assert request(server, "GET", "/", {"cookie": cookie, "host": f"evil.example:{server}"}).status == 403
    assert open_socket(server, {"cookie": cookie, "origin": "http://evil.example"})[0] == 403
    assert request(server, "POST", SOCKET, {"cookie": cookie, "origin": "http://evil.example"}).status == 403
