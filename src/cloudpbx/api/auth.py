"""API keys at the edge: `Authorization: Bearer KEY` (and `?pbxkey=` on the WebSocket)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloudpbx.domain.errors import Unauthorized
from cloudpbx.runtime import Runtime
from cloudpbx.storage.tenants import Tenant


async def get_runtime(request: Request) -> Runtime:
    """Async although it awaits nothing: FastAPI runs a plain `def` dependency in its
    thread pool, a thread hand-off on every request for an attribute read."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def tenant_for_key(runtime: Runtime, key: str | None) -> Tenant:
    if key is None:
        raise Unauthorized("missing API key: send 'Authorization: Bearer KEY'", code="missing_key")
    tenant = await runtime.tenants.authenticate(key)
    if tenant is None:
        raise Unauthorized("invalid or revoked API key", code="invalid_key")
    return tenant


# Declares the scheme in the OpenAPI document (and gives /docs its Authorize button);
# auto_error=False leaves every refusal to tenant_for_key, so all 401s share one shape.
BEARER_SCHEME = HTTPBearer(
    auto_error=False, scheme_name="ApiKey", description="The PBX's API key: `Bearer KEY`"
)


async def request_tenant(request: Request) -> Tenant:
    """The PBX of the request's key; the header is read by bearer_token, as on the WebSocket."""
    runtime: Runtime = request.app.state.runtime
    return await tenant_for_key(runtime, bearer_token(request.headers.get("authorization")))


async def current_tenant(
    request: Request,
    _scheme: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER_SCHEME)],
) -> Tenant:
    """request_tenant as a dependency, declaring the bearer scheme in the OpenAPI document
    (api/lean_route.py calls request_tenant itself)."""
    return await request_tenant(request)


TenantDep = Annotated[Tenant, Depends(current_tenant)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
