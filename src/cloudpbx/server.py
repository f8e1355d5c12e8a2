"""Running the server: uvicorn over the app, with the backends the settings name."""

from __future__ import annotations

import gc
import logging
import socket

import uvicorn

from cloudpbx.api.app import create_app
from cloudpbx.api.http_limits import HeadLimits, guarded_http_protocol
from cloudpbx.api.keepalive import keepalive_protocol
from cloudpbx.api.redaction import install_log_redaction
from cloudpbx.runtime import Runtime, build_runtime
from cloudpbx.settings import Settings

log = logging.getLogger(__name__)


def uvicorn_config(runtime: Runtime) -> uvicorn.Config:
    """wsproto serves the WebSocket: it accepts the document's own curl handshake, whose
    13-byte `Sec-WebSocket-Key` the `websockets` implementation rejects. Pings come from
    one keep-alive sweep (api/keepalive.py), not from uvicorn's timers per connection.
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
    return uvicorn.Config(
        create_app(runtime),
        host=settings.host,
        port=settings.port,
        http=guarded_http_protocol(limits),
        timeout_keep_alive=settings.http_keep_alive_timeout,
        ws=keepalive_protocol(settings.ws_ping_interval, settings.ws_ping_timeout),
        ws_ping_interval=None,
        ws_ping_timeout=None,
        # Every message is small JSON; compressing it per connection doubled the CPU of
        # fan-out and grew each connection from ~38 to ~130 KiB (bench/, docs/benchmarks.md).
        ws_per_message_deflate=False,
        log_level=settings.log_level,
        lifespan="on",
        server_header=False,
        # X-Forwarded-For names the client only when the peer is a configured proxy.
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
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
