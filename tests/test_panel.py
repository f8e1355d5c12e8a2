"""The panel's files as the server hands them out: paths, types, headers, and what a strict
Content-Security-Policy needs (no inline script, style or handler; nothing from elsewhere)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import httpx

from cloudpbx.panel import STATIC
from tests.conftest import Tenants
from tests.live import LiveServer


class _Inline(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block, and the linked assets."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.assets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.problems.append(f"<{tag} {name}>")
        if tag == "style":
            self.problems.append("<style>")
        if tag == "script":
            if not values.get("src"):
                self.problems.append("inline <script>")
            else:
                self.assets.append(str(values["src"]))
        if tag == "link" and values.get("href"):
            self.assets.append(str(values["href"]))


async def test_panel_page_is_served_with_a_strict_policy(live: tuple[LiveServer, Tenants]) -> None:
    server, _ = live
    async with server.client() as client:
        bare = await client.get("/panel")
        assert bare.status_code == 308 and bare.headers["location"] == "/panel/"
        page = await client.get("/panel/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "connect-src 'self' ws: wss:" in policy and "'unsafe-inline'" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    parser = _Inline()
    parser.feed(page.text)
    assert parser.problems == []
    assert "/panel/app.js" in parser.assets and "/panel/panel.css" in parser.assets


async def test_panel_assets_are_local_modules_with_their_types(
    live: tuple[LiveServer, Tenants],
) -> None:
    server, _ = live
    names = sorted(path.name for path in STATIC.iterdir())
    assert {"index.html", "app.js", "state.js", "stream.js", "view.js", "i18n.js"} <= set(names)
    async with server.client() as client:
        for name in names:
            answer = await client.get(f"/panel/{name}")
            assert answer.status_code == 200, name
            assert "content-security-policy" in answer.headers
            expected = {".js": "javascript", ".css": "css", ".html": "html", ".svg": "svg+xml"}
            assert expected[name[name.rindex(".") :]] in answer.headers["content-type"]
            # Offline: nothing is fetched from another host (no CDN, no web fonts).
            assert not re.search(r"""(src|href|import)[^\n]*["'](https?:)?//""", answer.text)
        missing = await client.get("/panel/nope.js")
        assert missing.status_code == 404
        outside = await client.get("/panel/../pyproject.toml")
        assert outside.status_code == 404


async def test_panel_is_not_part_of_the_api_schema(live: tuple[LiveServer, Tenants]) -> None:
    server, _ = live
    async with server.client() as client:
        schema = (await client.get("/openapi.json")).json()
    assert not [path for path in schema["paths"] if path.startswith("/panel")]


async def test_the_demo_serves_the_panel_and_prints_its_address(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cloudpbx = Path(sys.executable).with_name("cloudpbx")
    command = [str(cloudpbx), "demo", "--port", str(port), "--data", str(tmp_path), "--rate", "0"]
    process = subprocess.Popen(  # noqa: ASYNC220 - the server must outlive this call
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            async with asyncio.timeout(60):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        page = await client.get("/panel/")
                        break
                    await asyncio.sleep(0.1)
        assert page.status_code == 200 and 'id="login-key"' in page.text
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
    assert f"http://127.0.0.1:{port}/panel/?pbx=MojaCentrala" in output
