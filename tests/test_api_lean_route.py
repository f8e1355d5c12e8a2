"""LeanRoute (api/lean_route.py): the lists skip FastAPI's dependency solving, and answer
exactly as FastAPI's handler of the same endpoint does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from cloudpbx.api.lean_route import LeanRoute
from cloudpbx.api.routes import calls
from tests.live import LiveServer, make_settings, running
from tests.test_api_rest import add_cdrs, cdr, local, new_pbxes, today_warsaw

LISTS = {"/cdr", "/record", "/transcription"}


def test_the_lists_and_only_they_get_the_lean_handler() -> None:
    lean = {
        (route.path, method)
        for route in calls.router.routes
        if isinstance(route, LeanRoute) and route.lean
        for method in route.methods
    }
    assert lean == {(path, method) for path in LISTS for method in ("GET", "HEAD")}


@pytest.fixture
async def twin(tmp_path: Path) -> AsyncIterator[LiveServer]:
    """A server whose app also serves the list endpoints under /fastapi/ through
    FastAPI's own handler: the reference the lean handler must equal."""
    router = APIRouter(route_class=APIRoute)
    for route in calls.router.routes:
        if isinstance(route, APIRoute) and route.path in LISTS:
            router.add_api_route(
                "/fastapi" + route.path, route.endpoint, methods=list(route.methods)
            )
    async with running(make_settings(tmp_path)) as server:
        app = server.server.config.app
        assert isinstance(app, FastAPI)
        app.include_router(router)
        yield server


async def test_lean_answers_equal_fastapis(twin: LiveServer) -> None:
    tenants = await new_pbxes(twin)
    today = today_warsaw()
    await add_cdrs(twin, tenants.a_name, cdr("1.1", local(today, 9)), cdr("1.2", local(today, 10)))
    yesterday = (today - timedelta(days=1)).isoformat()
    queries = [
        "",
        f"?datestart={yesterday}",
        f"?datestart={today}&datestop={today}",
        f"?datestart={yesterday}&datestart={today}",  # repeated: the last one counts
        "?datestart=",
        "?datestart=2025-02-30",
        f"?datestart={today}&datestop={yesterday}",
        "?datestop=yesterday&unknown=1",
    ]
    keys = [tenants.a_key, tenants.b_key, tenants.revoked_key, None, "cpbx_not-a-key"]
    async with httpx.AsyncClient(base_url=twin.url) as client:
        for path in sorted(LISTS):
            for query in queries:
                for key in keys:
                    headers = {"Authorization": f"Bearer {key}"} if key else {}
                    for method in ("GET", "HEAD"):
                        lean = await client.request(method, path + query, headers=headers)
                        full = await client.request(
                            method, "/fastapi" + path + query, headers=headers
                        )
                        case = (method, path, query, key)
                        assert lean.status_code == full.status_code, case
                        assert lean.content == full.content, case
                        assert _headers(lean) == _headers(full), case


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [(name, value) for name, value in response.headers.items() if name != "date"]
