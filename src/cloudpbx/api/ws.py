"""`/ws/pbx_{NAME}`: the PBX's live events, with resume from a bounded history.

Order of work for one connection: authenticate and authorise before the upgrade (401/403
as plain HTTP answers), subscribe to the live feed, then replay the history after the
client's last id, then stream live messages, skipping any id already sent. Subscribing
before reading the history is what makes resume lossless and duplicate-free.

A client that falls `ws_buffer_size` messages behind is closed with code 4008 and a reason
naming the last id it was sent; it reconnects with `last_event_id` and loses nothing that
is still in the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from cloudpbx.api.auth import bearer_token, tenant_for_key
from cloudpbx.api.responses import json_error
from cloudpbx.domain.errors import ApiError, BadRequest, Forbidden, NotFound
from cloudpbx.domain.events import channel_name
from cloudpbx.ports.bus import SubscriberOverflow, Subscription
from cloudpbx.runtime import Runtime
from cloudpbx.storage.tenants import Tenant

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_TOO_SLOW = 4008
CLOSE_TIMEOUT = 2.0


async def _authorise(websocket: WebSocket, runtime: Runtime, channel: str) -> Tenant:
    if not channel.startswith("pbx_") or len(channel) <= 4:
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
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest(
            f"last_event_id must be a non-negative integer, got {raw!r}", code="invalid_last_id"
        )
    return int(raw)


@router.websocket("/ws/{channel}")
async def pbx_events(websocket: WebSocket, channel: str) -> None:
    runtime: Runtime = websocket.app.state.runtime
    try:
        tenant = await _authorise(websocket, runtime, channel)
        last_id = _last_event_id(websocket)
    except ApiError as exc:
        await websocket.send_denial_response(json_error(exc.status, exc.message, exc.code))
        return
    settings = runtime.settings
    subscription = runtime.bus.subscribe(channel, settings.ws_buffer_size)
    try:
        replay = await runtime.hub.replay_after(tenant, last_id) if last_id is not None else None
        headers = []
        if replay is not None:
            headers.append((b"x-resume", b"complete" if replay.complete else b"partial"))
        await websocket.accept(headers=headers)
        sent = last_id or 0
        if replay is not None:
            for message in replay.messages:
                await websocket.send_text(message.data)
                sent = message.id
        await _stream(websocket, subscription, sent)
    except WebSocketDisconnect:
        pass
    finally:
        subscription.close()


async def _stream(websocket: WebSocket, subscription: Subscription, sent: int) -> None:
    """Send live messages until the client leaves or falls too far behind."""
    state = {"sent": sent}

    async def send_live() -> None:
        while batch := await subscription.next_batch():
            for message in batch:
                if message.id > state["sent"]:
                    await websocket.send_text(message.data)
                    state["sent"] = message.id

    async def wait_disconnect() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # clients have nothing to say on this channel; their messages are ignored

    sender = asyncio.create_task(send_live())
    receiver = asyncio.create_task(wait_disconnect())
    overflow = asyncio.create_task(subscription.overflow.wait())
    try:
        done, _ = await asyncio.wait(
            {sender, receiver, overflow}, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (sender, receiver, overflow):
            task.cancel()
        for task in (sender, receiver, overflow):
            with contextlib.suppress(
                asyncio.CancelledError, WebSocketDisconnect, SubscriberOverflow
            ):
                await task
    if receiver in done:
        return
    if overflow in done or (sender in done and isinstance(sender.exception(), SubscriberOverflow)):
        reason = f"too slow; resume with last_event_id={state['sent']}"
        log.info("closing a slow WebSocket client: %s", reason)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(CLOSE_TOO_SLOW, reason), CLOSE_TIMEOUT)
        return
    if sender in done and sender.exception() is not None:
        raise sender.exception()  # type: ignore[misc]
