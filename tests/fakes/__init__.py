"""Fakes of the outside services the tests cannot reach, speaking their real wire
protocols over loopback: SMSAPI, OpenAI-compatible speech/chat servers, and an AMI server
that replays recorded Asterisk sessions."""

from __future__ import annotations

import asyncio

import uvicorn
from starlette.types import ASGIApp


async def serve_on_loopback(
    app: ASGIApp, port: int, what: str
) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """Serve `app` on 127.0.0.1:`port` (0: any) in this event loop; wait until it listens.

    Returns the server, its task (set `server.should_exit` and await it to stop) and the
    port it listens on.
    """
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
        raise RuntimeError(f"{what} stopped during start")
    return server, task, server.servers[0].sockets[0].getsockname()[1]
