"""`/ws/pbx_{NAME}`: the PBX's live events, with resume from a bounded history.

Order of work for one connection: authenticate and authorise before the upgrade (401/403
as plain HTTP answers), subscribe to the live feed, then replay the history after the
client's last id, then stream live messages, skipping any id already sent. Subscribing
before reading the history is what makes resume lossless and duplicate-free.

A client that falls `ws_buffer_size` messages behind is closed with code 4008 and a reason
naming the last id it was sent; it reconnects with `last_event_id` and loses nothing that
is still in the history. The close frame queues behind what the client has not read yet
and waits up to `ws_ping_timeout` for it to drain. A `last_event_id` beyond the newest id
is taken as the newest. When the server stops, clients are closed with 1012; a client that
leaves a keep-alive ping unanswered is closed with 1011 (api/keepalive.py). Every close
the server initiates names the id to resume from.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from cloudpbx.api.auth import bearer_token, tenant_for_key
from cloudpbx.api.keepalive import RESUME_EXTENSION, resume_reason
from cloudpbx.api.responses import json_error
from cloudpbx.domain.errors import ApiError, BadRequest, Forbidden, NotFound
from cloudpbx.domain.events import channel_name
from cloudpbx.ports.bus import SubscriberOverflow, Subscription, WireMessage
from cloudpbx.runtime import Runtime
from cloudpbx.storage.tenants import Tenant

log = logging.getLogger(__name__)

CHANNEL = re.compile(r"pbx_[A-Za-z0-9_-]{1,64}")
"""`/ws/{CHANNEL}`: anything else (also with more path segments) is a 404."""
LAST_ID = re.compile(r"[0-9]{1,18}")
CLOSE_TOO_SLOW = 4008
CLOSE_SERVICE_RESTART = 1012
CLOSE_TIMEOUT = 2.0


class ResumePoint:
    """The id a client would resume from; the keep-alive reads it when it closes."""

    __slots__ = ("resume_id",)

    def __init__(self, resume_id: int | None) -> None:
        self.resume_id = resume_id


def _resume_point(websocket: WebSocket, sent: int) -> ResumePoint:
    """The server's per-connection record (see api/keepalive.py), else a local one."""
    point = websocket.scope.get("extensions", {}).get(RESUME_EXTENSION)
    if point is None:
        point = ResumePoint(None)
    point.resume_id = sent
    return point  # type: ignore[no-any-return]


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
    except ApiError as exc:
        await websocket.send_denial_response(json_error(exc.status, exc.message, exc.code))
        return
    settings = runtime.settings
    # A new client starts at the newest id, so that a 4008 close before it got anything
    # tells it to resume from there, not from the start of the history.
    baseline = await runtime.hub.last_id(tenant) if last_id is None else 0
    # Subscribe first, then read the history: whatever is published in between is in both,
    # and the id check in _stream sends it once.
    subscription = runtime.bus.subscribe(channel, settings.ws_buffer_size)
    try:
        backlog: list[WireMessage] = []
        sent = baseline
        headers: list[tuple[bytes, bytes]] = []
        if last_id is not None:
            replay = await runtime.hub.replay_after(tenant, last_id)
            backlog = replay.messages
            # An id from the future (a client of another server, a typo) must not
            # silence the live stream until the ids catch up with it.
            sent = min(last_id, replay.newest)
            headers.append((b"x-resume", b"complete" if replay.complete else b"partial"))
        point = _resume_point(websocket, sent)
        await websocket.accept(headers=headers)
        await _stream(websocket, subscription, backlog, point, settings.ws_ping_timeout)
    except WebSocketDisconnect:
        pass
    finally:
        subscription.close()


async def _stream(
    websocket: WebSocket,
    subscription: Subscription,
    backlog: list[WireMessage],
    point: ResumePoint,
    close_timeout: float,
) -> None:
    """Send the backlog, then live messages, until the client leaves or falls behind.

    Two tasks race: the sender and a receiver that notices the client leaving; the
    subscription cancels the sender the moment it overflows (so that a sender stuck on a
    full socket is cut off at once). The sender records an id only once its frame was handed to the
    transport; uvicorn waits for the socket to drain before writing, never in the middle
    of a frame, so cancelling the sender never loses or half-sends a message and the id
    in the 4008 reason is exactly the last message the client will receive.
    """

    async def send_all() -> None:
        for message in backlog:
            await websocket.send_text(message.data)
            point.resume_id = message.id
        while batch := await subscription.next_batch():
            for message in batch:
                if message.id > (point.resume_id or 0):
                    await websocket.send_text(message.data)
                    point.resume_id = message.id

    async def wait_disconnect() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # clients have nothing to say on this channel; their messages are ignored

    sender = asyncio.create_task(send_all())
    receiver = asyncio.create_task(wait_disconnect())
    subscription.on_overflow = sender.cancel
    tasks = (sender, receiver)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        # Collects every outcome (also the cancellations) without raising; our own
        # cancellation, should it come now, still propagates.
        await asyncio.gather(*tasks, return_exceptions=True)
    if receiver in done:
        return  # the client left (or closed); uvicorn has answered its close
    sender_error = sender.exception() if sender in done and not sender.cancelled() else None
    if subscription.overflowed or isinstance(sender_error, SubscriberOverflow):
        reason = resume_reason("too slow", point.resume_id)
        log.info("closing a slow WebSocket client: %s", reason)
        # The close frame queues behind what the client has not read yet: give it until
        # the ping timeout to drain (uvicorn waits for the socket before writing).
        await _close(websocket, CLOSE_TOO_SLOW, reason, close_timeout)
        return
    if sender_error is not None:
        raise sender_error
    # The subscription was closed under us: the server is stopping.
    reason = resume_reason("server restart", point.resume_id)
    await _close(websocket, CLOSE_SERVICE_RESTART, reason, CLOSE_TIMEOUT)


async def _close(websocket: WebSocket, code: int, reason: str, patience: float) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code, reason), patience)


route = WebSocketRoute("/ws/{channel:path}", pbx_events)
"""A plain Starlette route: FastAPI's dependency machinery cost ~4 KiB per idle connection
and the endpoint needs none of it (bench/, docs/benchmarks.md)."""
