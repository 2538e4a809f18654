"""Listening beyond loopback needs a token; every request then needs it (once, then a cookie)."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.main import COOKIE, Settings, TokenGate, check_settings, is_loopback
from graphcore.core.diagnostics import GraphError


def gated() -> httpx.AsyncClient:
    inner = Starlette(routes=[Route("/", lambda request: PlainTextResponse("the editor"))])
    inner.add_middleware(TokenGate, token="s3cret")
    return httpx.AsyncClient(transport=httpx.ASGITransport(inner), base_url="http://test")


def test_a_public_host_needs_a_token():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    with pytest.raises(GraphError, match="access token"):
        check_settings(Settings(host="0.0.0.0"))
    check_settings(Settings(host="0.0.0.0", token="s3cret"))


async def test_pages_ask_for_the_token_and_remember_it():
    async with gated() as client:
        page = await client.get("/", headers={"accept": "text/html"})
        assert page.status_code == 401 and 'name="token"' in page.text
        assert (await client.get("/", params={"token": "wrong"}, headers={"accept": "text/html"})).status_code == 401
        assert (await client.get("/_nicegui_ws/socket.io/")).status_code == 401
        login = await client.get("/", params={"token": "s3cret"})
        assert login.status_code == 303 and "s3cret" not in login.headers["set-cookie"]
        assert COOKIE in login.headers["set-cookie"] and "httponly" in login.headers["set-cookie"].lower()
        page = await client.get("/")
        assert page.status_code == 200 and page.text == "the editor"
