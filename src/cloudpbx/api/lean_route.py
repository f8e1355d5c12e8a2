"""A FastAPI route that resolves the hot endpoints' parameters itself.

FastAPI solves an endpoint's dependencies on every request: for a list (`/cdr`,
`/record`, `/transcription`) that walks the tenant and runtime dependencies, the bearer
scheme and the two date parameters through its generic machinery, ~0.1-0.2 ms of CPU per
request (cProfile: `solve_dependencies` took a fifth of the server's time on the 50-row
list), while the precomputed baseline answers in ~0.2 ms in all (issue 13,
docs/benchmarks.md). These endpoints need nothing generic: the API key's tenant, the
runtime, the request and optional string query parameters.

`LeanRoute` keeps the endpoint, its signature and so the OpenAPI document exactly as
FastAPI builds them; only the per-request handler differs, and only for endpoints whose
parameters are all of those kinds. Any other endpoint on a LeanRoute router (a path
parameter with its own check, a body) gets FastAPI's handler unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from cloudpbx.api.auth import current_tenant, get_runtime, request_tenant

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _lean_shape(dependant: Dependant) -> tuple[str | None, str | None, list[str]] | None:
    """(tenant argument, runtime argument, query parameter names) when the endpoint's
    parameters are only those and the request; None otherwise."""
    if (
        dependant.path_params
        or dependant.header_params
        or dependant.cookie_params
        or dependant.body_params
        or dependant.websocket_param_name
        or dependant.background_tasks_param_name
        or dependant.response_param_name
        or dependant.security_scopes_param_name
    ):
        return None
    tenant_arg = runtime_arg = None
    for sub in dependant.dependencies:
        if sub.call is current_tenant and tenant_arg is None:
            tenant_arg = sub.name
        elif sub.call is get_runtime and runtime_arg is None:
            runtime_arg = sub.name
        else:
            return None
    queries = []
    for field in dependant.query_params:
        if field.field_info.annotation != (str | None) or field.field_info.default is not None:
            return None
        queries.append(field.alias)
    return tenant_arg, runtime_arg, queries


class LeanRoute(APIRoute):
    """APIRoute whose handler, for endpoints of the lean shape, reads the key, the runtime
    and the query parameters directly (the same functions the dependencies call) and calls
    the endpoint; errors go to the app's exception handlers as before."""

    @property
    def lean(self) -> bool:
        return _lean_shape(self.dependant) is not None

    def get_route_handler(self) -> Handler:
        shape = _lean_shape(self.dependant)
        if shape is None:
            return super().get_route_handler()
        tenant_arg, runtime_arg, queries = shape
        endpoint = self.dependant.call
        request_arg = self.dependant.request_param_name
        assert endpoint is not None

        async def handler(request: Request) -> Response:
            arguments: dict[str, Any] = {}
            if request_arg is not None:
                arguments[request_arg] = request
            if runtime_arg is not None:
                arguments[runtime_arg] = await get_runtime(request)
            if tenant_arg is not None:
                arguments[tenant_arg] = await request_tenant(request)
            params = request.query_params
            for name in queries:
                arguments[name] = params.get(name)
            response: Response = await endpoint(**arguments)
            return response

        return handler
