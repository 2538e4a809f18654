"""The NetCanvas editor app: the page, the access guard (token, Host, Origin), and ``run`` (what
``netcanvas`` starts).

Run it directly (``python app/main.py``) or through ``netcanvas [--host H] [--port P]
[--token T | --token-file F] [--native] [DIR | G.json | M.onnx]``. The settings also come from the
environment (``NETCANVAS_GRAPH``, ``NETCANVAS_WORKSPACE``, ``NETCANVAS_HOST``, ``NETCANVAS_PORT``,
``NETCANVAS_TOKEN``), which is how
the test fixtures, which run this file, configure it.
"""

from __future__ import annotations

import gc as garbage_collector
import hashlib
import hmac
import html
import ipaddress
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nicegui import app, ui
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from app import pages
from graphcore.core.diagnostics import GraphError
from graphcore.core.gallery import open_graph

COOKIE = "netcanvas_token"
LOGIN_PATH = "/_netcanvas/login"  # where the login form posts (the page asked for travels in the form)
LOGIN_FORM_LIMIT = 4096  # bytes; a login form is far smaller
MIN_TOKEN_LENGTH = 12  # the token is all that guards an editor on the network, and guessing it costs nothing
LOOPBACK = ("127.0.0.1", "localhost", "::1")
ALL_INTERFACES = ("0.0.0.0", "::", "")
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
DENIAL = "websocket.http.response"  # the ASGI extension that lets a socket be refused with an HTTP answer
NETLOC = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::(\d{1,5}))?")
# A path that keeps the browser on this site: not //host or /\host (other sites to a browser), and no
# control character (browsers drop them, so "/<tab>/host" would become "//host").
SAME_SITE_PATH = re.compile(r"/(?![/\\])[^\x00-\x1f\x7f\\]*")


@dataclass
class Settings:
    graph: str = "lenet5"  # a graph file or a template name, opened in every new tab
    workspace: str = "."  # the folder holding graphs/ and runs/ (graphcore.runtime.workspace)
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    native: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(graph=env.get("NETCANVAS_GRAPH", "lenet5"), workspace=env.get("NETCANVAS_WORKSPACE", "."),
                   host=env.get("NETCANVAS_HOST", "127.0.0.1"),
                   port=int(env.get("NETCANVAS_PORT", "8080")), token=env.get("NETCANVAS_TOKEN") or None)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_settings(settings: Settings) -> None:
    """Refuse to listen beyond this machine without a token, or with one short enough to guess."""
    if not is_loopback(settings.host) and not settings.token:
        raise GraphError(f"listening on {settings.host} lets other machines in: give an access token "
                         "($NETCANVAS_TOKEN, --token-file F or --token T); the page will ask for it")
    if settings.token and len(settings.token) < MIN_TOKEN_LENGTH:
        raise GraphError(f"the access token is too short ({len(settings.token)} characters): use at least "
                         f"{MIN_TOKEN_LENGTH}, e.g. from python -c 'import secrets; print(secrets.token_urlsafe())'")
    if settings.graph.lower().endswith(".onnx"):  # imported when a tab opens it; here only found
        if not Path(settings.graph).is_file():
            raise GraphError(f"{settings.graph}: no such ONNX file")
    else:
        open_graph(settings.graph)  # a bad graph argument fails here, with its message, before serving


def _digest(token: str) -> str:
    return hashlib.sha256(f"netcanvas:{token}".encode()).hexdigest()


def same_site_path(path: str) -> str:
    """``path`` as a place to send the browser after login, or ``/`` where a browser would leave
    the site for it (``//host``, ``/\\host``, a scheme, a control character it would drop)."""
    return path if SAME_SITE_PATH.fullmatch(path) else "/"


def _address(netloc: str, default_port: int) -> tuple[str, int] | None:
    """A Host header's or an origin's ``name[:port]`` as (lower-case name, port), or None if it is not one."""
    match = NETLOC.fullmatch(netloc.lower())
    return (match[1].strip("[]"), int(match[2] or default_port)) if match else None


def _origin_address(origin: str) -> tuple[str, int] | None:
    scheme, _, netloc = origin.partition("://")
    return _address(netloc, DEFAULT_PORTS[scheme]) if scheme in ("http", "https") else None


async def _login_form(request: Request) -> dict[str, str]:
    """The login form's fields; none from a body larger than any login form (read no further)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > LOGIN_FORM_LIMIT:
            return {}
    return dict(parse_qsl(body.decode("utf-8", errors="replace")))


class AccessGuard:
    """In front of every route, the page's socket included (a pure ASGI middleware: Starlette's
    ``BaseHTTPMiddleware`` never sees websockets). The Host must name the address served, so that
    a DNS name rebound to this machine cannot reach a loopback editor; an Origin, where a browser
    sends one, must be this same site; and with a token, every request needs it: once, from a
    ``?token=`` link or the login form, then as a cookie."""

    def __init__(self, app_: ASGIApp, host: str, token: str | None) -> None:
        self.app = app_
        self.host = host.lower().strip("[]")
        self.digest = _digest(token) if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan events
            await self.app(scope, receive, send)
            return
        answer: ASGIApp | None = await self.gate(scope, receive)
        if answer is not None and scope["type"] == "websocket" and DENIAL not in scope.get("extensions", {}):
            answer = WebSocketClose(code=1008)  # a server that cannot answer a socket with HTTP: just close it
        await (answer or self.app)(scope, receive, send)

    async def gate(self, scope: Scope, receive: Receive) -> Response | None:
        """The answer to send instead of the app's, or None to let the request through."""
        connection = HTTPConnection(scope)
        refusal = self.misdirected(connection)
        if refusal:
            return PlainTextResponse(refusal, status_code=403)
        if self.digest is None:
            return None
        if scope.get("method") == "POST" and scope["path"] == LOGIN_PATH:
            return await self.login(Request(scope, receive))
        if hmac.compare_digest(connection.cookies.get(COOKIE, ""), self.digest):
            return None
        return self.ask(connection)

    def misdirected(self, connection: HTTPConnection) -> str | None:
        """Why this request is not for this server (another Host, another site's page), or None."""
        default_port = DEFAULT_PORTS.get(connection.scope.get("scheme", "http"), 80)
        host = connection.headers.get("host", "")
        address = _address(host, default_port)
        if address is None or not self.serves(address, connection.scope.get("server"), default_port):
            return f"NetCanvas: this server does not answer to the host name {host!r}"
        origin = connection.headers.get("origin")
        if origin is not None and _origin_address(origin) != address:
            return f"NetCanvas: requests from another site (origin {origin!r}) are refused"
        return None

    def serves(self, address: tuple[str, int], server: tuple[str, int | None] | None, default_port: int) -> bool:
        """Whether ``address`` names the one the request arrived at (or, on loopback, another loopback
        name for it). Listening on all interfaces, any name does: the token guards that editor."""
        if self.host in ALL_INTERFACES:
            return True
        name, port = server or (self.host, address[1])
        names = {self.host, name.lower()}
        if any(is_loopback(known) for known in names):
            names.update(LOOPBACK)
        return address[0] in names and address[1] == (port or default_port)

    def accepts(self, token: str) -> bool:
        return self.digest is not None and hmac.compare_digest(_digest(token), self.digest)

    def ask(self, connection: HTTPConnection) -> Response:
        """No token yet: take one from a ``?token=`` link, or show a page request the login form;
        a socket (which has no method) must come with the cookie."""
        given = connection.query_params.get("token")
        method = connection.scope.get("method")
        if given is not None and method is not None and self.accepts(given):
            return self.admit(connection.scope["path"])
        if method == "GET" and "text/html" in connection.headers.get("accept", ""):
            return login_page(connection.scope["path"], wrong=given is not None)
        return PlainTextResponse("NetCanvas: access token required", status_code=401)

    async def login(self, request: Request) -> Response:
        form = await _login_form(request)
        if self.accepts(form.get("token", "")):
            return self.admit(form.get("next", "/"))
        return login_page(form.get("next", "/"), wrong=True)

    def admit(self, path: str) -> Response:
        """Remember the token in a cookie and go on to ``path`` (if it stays on this site)."""
        response = RedirectResponse(same_site_path(path), status_code=303)
        response.set_cookie(COOKIE, self.digest or "", httponly=True, samesite="strict")
        return response


def login_page(path: str, wrong: bool) -> HTMLResponse:
    """The login form: it posts to a fixed path; the page asked for travels in the form, and the
    browser goes there after login only if it stays on this site."""
    return HTMLResponse(LOGIN_PAGE.format(action=LOGIN_PATH, next=html.escape(same_site_path(path)),
                                          message="Wrong token." if wrong else ""), status_code=401)


LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>NetCanvas</title></head>
<body style="font-family: sans-serif; display: grid; place-items: center; height: 90vh">
<form method="post" action="{action}" style="display: grid; gap: 8px; width: 320px">
<h2>NetCanvas</h2><label for="token">This editor needs its access token.</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus required>
<input name="next" value="{next}" type="hidden">
<b style="color: #b00020">{message}</b><button type="submit">Open the editor</button></form></body></html>"""


def register(settings: Settings) -> None:
    """Register the page, behind the access guard."""
    app.add_middleware(AccessGuard, host=settings.host, token=settings.token)
    pages.register(settings.graph, settings.workspace)


def start(**options: object) -> None:
    """What ``netcanvas`` calls (the ``netcanvas.editor`` entry point): serve the editor with these settings."""
    run(Settings(**options))  # type: ignore[arg-type]


def run(settings: Settings) -> None:
    check_settings(settings)
    register(settings)
    # Torch and pydantic leave many objects behind at import; a full GC pass over them costs
    # ~200 ms in the middle of an edit. Freeze them out of the collector's reach.
    garbage_collector.freeze()
    ui.run(host=settings.host, port=settings.port, title="NetCanvas", reload=False, show=False,
           native=settings.native, window_size=(1400, 900) if settings.native else None, favicon="🧠",
           show_welcome_message=True)


if __name__ == "__main__":  # not "__mp_main__": a training job's spawned process imports this file too
    run(Settings.from_env())
