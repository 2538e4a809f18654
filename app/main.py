"""The NetCanvas editor app: the page, the access token, and ``run`` (what ``netcanvas`` starts).

Run it directly (``python app/main.py``) or through ``netcanvas [--host H] [--port P]
[--token T] [--native] [G.json]``. The settings also come from the environment
(``NETCANVAS_GRAPH``, ``NETCANVAS_HOST``, ``NETCANVAS_PORT``, ``NETCANVAS_TOKEN``), which is how
the test fixtures, which run this file, configure it.
"""

from __future__ import annotations

import gc as garbage_collector
import hashlib
import hmac
import html
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nicegui import app, ui
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from app import pages
from graphcore.core.diagnostics import GraphError
from graphcore.core.gallery import open_graph

COOKIE = "netcanvas_token"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Settings:
    graph: str = "lenet5"  # a graph file or a template name, opened in every new tab
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    native: bool = False

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(graph=env.get("NETCANVAS_GRAPH", "lenet5"), host=env.get("NETCANVAS_HOST", "127.0.0.1"),
                   port=int(env.get("NETCANVAS_PORT", "8080")), token=env.get("NETCANVAS_TOKEN") or None)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_settings(settings: Settings) -> None:
    """Refuse to listen beyond this machine without a token."""
    if not is_loopback(settings.host) and not settings.token:
        raise GraphError(f"listening on {settings.host} lets other machines in: give an access token "
                         "(--token T or NETCANVAS_TOKEN); the page will ask for it")
    open_graph(settings.graph)  # a bad graph argument fails here, with its message, before serving


def _digest(token: str) -> str:
    return hashlib.sha256(f"netcanvas:{token}".encode()).hexdigest()


class TokenGate(BaseHTTPMiddleware):
    """Every HTTP request needs the token: once as ``?token=`` (or through the form), then a cookie."""

    def __init__(self, app_, token: str) -> None:
        super().__init__(app_)
        self.digest = _digest(token)

    async def dispatch(self, request: Request, call_next) -> Response:
        if hmac.compare_digest(request.cookies.get(COOKIE, ""), self.digest):
            return await call_next(request)
        given = request.query_params.get("token")
        if given is not None and hmac.compare_digest(_digest(given), self.digest):
            response = RedirectResponse(request.url.path, status_code=303)
            response.set_cookie(COOKIE, self.digest, httponly=True, samesite="strict")
            return response
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            wrong = given is not None
            return HTMLResponse(LOGIN_PAGE.format(action=html.escape(request.url.path),
                                                  message="Wrong token." if wrong else ""), status_code=401)
        return PlainTextResponse("NetCanvas: access token required", status_code=401)


LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>NetCanvas</title></head>
<body style="font-family: sans-serif; display: grid; place-items: center; height: 90vh">
<form method="get" action="{action}" style="display: grid; gap: 8px; width: 320px">
<h2>NetCanvas</h2><label for="token">This editor needs its access token.</label>
<input id="token" name="token" type="password" autofocus required>
<b style="color: #b00020">{message}</b><button type="submit">Open the editor</button></form></body></html>"""


def register(settings: Settings) -> None:
    """Register the page (and the token gate, where a token is set)."""
    if settings.token:
        app.add_middleware(TokenGate, token=settings.token)
    pages.register(settings.graph)


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
