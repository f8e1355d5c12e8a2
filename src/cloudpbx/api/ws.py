"""`/ws/pbx_{NAME}`: the PBX's live events, with resume from a bounded history.

This is the handshake's decision, run once per connection by api/pbx_socket.py (which
owns the socket and the delivery afterwards). Order of work: authenticate and authorise
before the upgrade (401/403 as plain HTTP answers), subscribe to the live feed, then read
the history after the client's last id, accept, write that backlog, then go live,
skipping any id already sent. Subscribing before reading the history is what makes
resume lossless and duplicate-free.

A client whose unread data passes the write limit is closed with code 4008 and a reason
naming the last id it was sent; it reconnects with `last_event_id` and loses nothing that
is still in the history. So is a client whose process missed messages of its PBX that
neither the event engine nor the archive still holds (services/engine_hub.py). While the
event engine (or, for a resume, the database) does not answer, the upgrade gets 503 with
`Retry-After`. A `last_event_id` beyond the newest id is taken as the newest.
When the server stops, clients are closed with 1012; a client that leaves a keep-alive
ping unanswered is closed with 1011 (api/keepalive.py). Every close the server initiates
names the id to resume from.
"""

from __future__ import annotations

import logging
import re

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from cloudpbx.api.auth import bearer_token, tenant_for_key
from cloudpbx.api.database_errors import database_unavailable
from cloudpbx.api.errors import RETRY_AFTER_S
from cloudpbx.api.pbx_socket import SOCKET_EXTENSION, PbxSocket
from cloudpbx.api.responses import json_error
from cloudpbx.domain.errors import ApiError, BadRequest, Forbidden, NotFound
from cloudpbx.domain.events import channel_name
from cloudpbx.ports.bus import WireMessage
from cloudpbx.ports.engine import EngineNotAnswering
from cloudpbx.runtime import Runtime
from cloudpbx.storage.tenants import Tenant

CHANNEL = re.compile(r"pbx_[A-Za-z0-9_-]{1,64}")
"""`/ws/{CHANNEL}`: anything else (also with more path segments) is a 404."""
LAST_ID = re.compile(r"[0-9]{1,18}")

log = logging.getLogger(__name__)


async def _authorise(websocket: WebSocket, runtime: Runtime, channel: str) -> Tenant:
    if not CHANNEL.fullmatch(channel):
        raise NotFound(f"no such channel {channel!r}; use /ws/pbx_NAME", code="unknown_channel")
    key = websocket.query_params.get("pbxkey") or bearer_token(
        websocket.headers.get("authorization")
    )
    tenant = await tenant_for_key(runtime, key)
    if channel_name(tenant.name) != channel:
        raise Forbidden("this API key does not give access to that PBX", code="wrong_pbx")
    return tenant


def _last_event_id(websocket: WebSocket) -> int | None:
    raw = websocket.query_params.get("last_event_id") or websocket.headers.get("last-event-id")
    if raw is None or raw == "":
        return None
    if not LAST_ID.fullmatch(raw):  # not str.isdigit(): it takes "²", which int() refuses
        raise BadRequest(
            f"last_event_id must be a non-negative integer, got {raw!r}", code="invalid_last_id"
        )
    return int(raw)


async def pbx_events(websocket: WebSocket) -> None:
    channel: str = websocket.path_params["channel"]
    runtime: Runtime = websocket.app.state.runtime
    try:
        tenant = await _authorise(websocket, runtime, channel)
        last_id = _last_event_id(websocket)
        await _subscribe_and_accept(websocket, runtime, tenant, channel, last_id)
    except ApiError as exc:
        await websocket.send_denial_response(json_error(exc.status, exc.message, exc.code))
    except EngineNotAnswering as exc:
        log.warning("WebSocket upgrade of %s refused: %s", channel, exc)
        await _refuse_for_now(
            websocket, "event engine unavailable; retry shortly", "engine_unavailable"
        )
    except Exception as exc:
        if not database_unavailable(exc):
            raise
        cause = getattr(exc, "orig", None) or exc  # never the statement and its parameters
        log.warning(
            "WebSocket upgrade of %s refused: database unavailable: %s: %s",
            channel, type(cause).__name__, cause,
        )  # fmt: skip
        await _refuse_for_now(
            websocket, "database unavailable; retry shortly", "database_unavailable"
        )


async def _subscribe_and_accept(
    websocket: WebSocket, runtime: Runtime, tenant: Tenant, channel: str, last_id: int | None
) -> None:
    socket: PbxSocket = websocket.scope["extensions"][SOCKET_EXTENSION]
    # A new client starts at the newest id, so that a 4008 close before it got anything
    # tells it to resume from there, not from the start of the history.
    baseline = await runtime.hub.last_id(tenant) if last_id is None else 0
    # Subscribe first, then read the history: whatever is published in between is in both,
    # and go_live sends it once.
    socket.join(runtime.bus, channel)
    backlog: list[WireMessage] = []
    sent = baseline
    headers: list[tuple[bytes, bytes]] = []
    if last_id is not None:
        replay = await runtime.hub.replay_after(tenant, last_id)
        backlog = replay.messages
        # An id from the future (a client of another server, a typo) must not silence
        # the live stream until the ids catch up with it.
        sent = min(last_id, replay.newest)
        headers.append((b"x-resume", b"complete" if replay.complete else b"partial"))
    await websocket.accept(headers=headers)
    await socket.go_live(backlog, sent)


async def _refuse_for_now(websocket: WebSocket, message: str, code: str) -> None:
    """503 with `Retry-After`: a passing outage, the answer the REST API gives too (the
    connection's subscription, if made, ends with the connection)."""
    answer = json_error(503, message, code, headers={"Retry-After": RETRY_AFTER_S})
    await websocket.send_denial_response(answer)


route = WebSocketRoute("/ws/{channel:path}", pbx_events)
"""A plain Starlette route: FastAPI's dependency machinery is not needed for a decision
taken once per connection."""
