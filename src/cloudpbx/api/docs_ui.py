"""`/docs`: Swagger UI served from this server, so it works offline and under a strict CSP.

The Swagger UI files come from the `fastapi-offline` package (a maintained copy of
swagger-ui-dist 5, which renders OpenAPI 3.1), served under /docs/assets/. The page's one
inline script is allowed by its hash, not by `'unsafe-inline'` (styles may be inline:
Swagger UI sets some, and a style runs no code).
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from cloudpbx.api.security_headers import ASSETS_PREFIX

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def _assets_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def docs_page(title: str, openapi_url: str) -> HTMLResponse:
    """The Swagger UI page, with a CSP that names its own assets and inline script."""
    page = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=title,
        swagger_js_url=ASSETS_PREFIX + "swagger-ui-bundle.js",
        swagger_css_url=ASSETS_PREFIX + "swagger-ui.css",
        swagger_favicon_url=ASSETS_PREFIX + "favicon.png",
    )
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(page.body)
    )
    policy = (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
    )
    return HTMLResponse(page.body, headers={"Content-Security-Policy": policy})


def install_docs(app: FastAPI, openapi_url: str) -> None:
    """`/docs` and its assets; the app is built with `docs_url=None`."""
    title = f"{app.title} - Swagger UI"

    async def swagger_ui() -> HTMLResponse:
        return docs_page(title, openapi_url)

    app.add_api_route("/docs", swagger_ui, include_in_schema=False, methods=["GET"])
    app.mount(ASSETS_PREFIX.rstrip("/"), StaticFiles(directory=_assets_dir()), name="docs-assets")
