"""Running the server: uvicorn over the app, with the backends the settings name."""

from __future__ import annotations

import gc
import logging
import socket
from functools import partial

import uvicorn

from cloudpbx.api.app import create_app
from cloudpbx.api.http_limits import HeadLimits, guarded_http_protocol
from cloudpbx.api.keepalive import KeepAlive
from cloudpbx.api.pbx_socket import PbxSocket, pbx_socket_protocol
from cloudpbx.api.redaction import install_log_redaction
from cloudpbx.metrics.websocket import websocket_readings
from cloudpbx.runtime import Runtime, build_runtime
from cloudpbx.settings import Settings

log = logging.getLogger(__name__)


def uvicorn_config(runtime: Runtime) -> uvicorn.Config:
    """WebSocket upgrades go to our own protocol (api/pbx_socket.py): the handshake by
    wsproto's sans-I/O parser (it accepts the document's curl line, whose 13-byte
    `Sec-WebSocket-Key` the `websockets` implementation rejects), messages framed once per
    batch for every subscriber, pings from one keep-alive sweep (api/keepalive.py).
    HTTP is httptools with limits on the request head (api/http_limits.py). Log records
    lose their API keys from here on (api/redaction.py)."""
    install_log_redaction()
    settings = runtime.settings
    limits = HeadLimits(
        max_head_bytes=settings.http_max_head_bytes,
        max_headers=settings.http_max_headers,
        head_timeout=settings.http_head_timeout,
    )
    proxies = [item.strip() for item in settings.trusted_proxies.split(",") if item.strip()]
    ws_protocol = websocket_protocol(settings)
    runtime.sampler.sources.websockets = partial(websocket_readings, runtime.bus, ws_protocol)
    return uvicorn.Config(
        create_app(runtime),
        host=settings.host,
        port=settings.port,
        http=guarded_http_protocol(limits),
        timeout_keep_alive=settings.http_keep_alive_timeout,
        ws=ws_protocol,
        ws_ping_interval=None,
        ws_ping_timeout=None,
        # permessage-deflate is not offered back (docs/decisions.md); uvicorn's own
        # protocols, which would read this, are not used.
        ws_per_message_deflate=False,
        log_level=settings.log_level,
        lifespan="on",
        server_header=False,
        # X-Forwarded-For names the client only when the peer is a configured proxy.
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )


def websocket_protocol(settings: Settings) -> type[PbxSocket]:
    """The WebSocket protocol class of one server: one keep-alive sweep for all of its
    connections; `ws_buffer_bytes` unset means `ws_buffer_size` KiB of unsent data."""
    return pbx_socket_protocol(
        KeepAlive(settings.ws_ping_interval, settings.ws_ping_timeout),
        write_limit=settings.ws_buffer_bytes or settings.ws_buffer_size * 1024,
        pending_limit=settings.ws_buffer_size,
        drain_timeout=settings.ws_ping_timeout,
    )


async def attach_backends(runtime: Runtime) -> None:
    """Add the PBX backend the settings name, serving every PBX in the database."""
    settings = runtime.settings
    if settings.backend == "none":
        return
    if settings.backend == "asterisk":
        from cloudpbx.adapters.asterisk.wiring import asterisk_backend

        runtime.backends.append(await asterisk_backend(runtime))
        return
    if settings.backend != "simulator":
        raise ValueError(
            f"unknown backend {settings.backend!r}; use 'simulator', 'asterisk' or 'none'"
        )
    from cloudpbx.adapters.simulator import SimulatorBackend

    names = [tenant.name for tenant in await runtime.tenants.list()]
    if not names:
        log.warning("no PBX in the database: the simulator has nothing to run")
        return
    simulator = SimulatorBackend(
        names,
        seed=settings.simulator_seed,
        rate=settings.simulator_rate,
        speed=settings.simulator_speed,
        backfill_days=settings.simulator_backfill_days,
    )
    runtime.backends.append(simulator)
    for name in names:
        tenant = await runtime.tenants.require(name)
        if settings.simulator_backfill_days and await runtime.calls.count_cdrs(tenant) == 0:
            count = await simulator.backfill(runtime.ingest, name, timezone=tenant.timezone)
            log.info(
                "backfilled %d calls of the last %d days on %s",
                count,
                settings.simulator_backfill_days,
                name,
            )


async def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    """Migrate, attach backends, serve until interrupted; on `sock` when given (a worker
    of `serve --workers N`, supervisor.py), else on `settings.host`/`port`."""
    install_log_redaction()  # before anything logs; uvicorn_config installs it for embedders
    runtime = build_runtime(settings)
    await runtime.migrate()
    await attach_backends(runtime)
    server = uvicorn.Server(uvicorn_config(runtime))
    freeze_startup_heap()
    await server.serve(sockets=None if sock is None else [sock])


def freeze_startup_heap() -> None:
    """Keep what start-up allocated (it lives as long as the process) out of the garbage
    collector's full passes, which otherwise stall the event loop for every client."""
    gc.collect()
    gc.freeze()
