"""Each dependency of the server with its status, for `/healthz`.

Statuses: `ok`; `off` (not configured: nothing to check); `down` (it does not answer or
is not connected); `held`/`alert` (an SMS account waits or needs its operator); `error`
(it cannot run as configured). Anything but `ok` and `off` makes the answer `degraded`.
Public like /healthz: kinds, configured server names and states, never a PBX, an
address, an account name or an error text that could hold one (the log has those).
"""

from __future__ import annotations

import asyncio
from typing import Any

from cloudpbx.ports.health import Dependency
from cloudpbx.ports.pbx import ReportsHealth
from cloudpbx.runtime import Runtime

FINE = frozenset({"ok", "off"})
CHECK_TIMEOUT = 2.0
"""Seconds the database, or a registered dependency, may take to answer before it
counts as `down` (a load balancer's health check typically gives up after 5)."""


async def dependencies(
    runtime: Runtime, database: str, sms: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {"name": "database", "status": "ok" if database == "ok" else "down"}
    ]
    items += [await _registered(dependency) for dependency in runtime.dependencies]
    items += _asterisk(runtime)
    items += [
        {"name": "sms", "gateway": entry["gateway"], "status": entry["status"]} for entry in sms
    ]
    items.append(_transcription(runtime))
    return items


async def _registered(dependency: Dependency) -> dict[str, Any]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            report = await dependency.health()
    except TimeoutError:
        return {"name": dependency.name, "status": "down", "error": "no answer in time"}
    except Exception as exc:  # a failing check is a finding, not a 500
        return {"name": dependency.name, "status": "down", "error": type(exc).__name__}
    return {"name": dependency.name, **report}


def _asterisk(runtime: Runtime) -> list[dict[str, Any]]:
    """Each AMI connection: its configured name and state (`connected`, `connecting`,
    `disconnected`, `auth_failed`, `stopped`); not connected is `down`."""
    items = []
    for backend in runtime.backends:
        if not isinstance(backend, ReportsHealth):
            continue
        for server in backend.health().get("servers", ()):
            state = str(server.get("state"))
            items.append(
                {
                    "name": "asterisk",
                    "server": str(server.get("name")),
                    "status": "ok" if state == "connected" else "down",
                    "state": state,
                }
            )
    return items


def _transcription(runtime: Runtime) -> dict[str, Any]:
    """`off` with no engine in use; `ok` when the in-process workers run, or when the
    jobs are left to `cloudpbx worker` processes (`mode: external`); `error` when the
    engines failed their start-up check (the log says why)."""
    transcribers: Any = runtime.transcribers
    engines = sorted(transcribers.used_engines()) if transcribers is not None else []
    if not engines:
        return {"name": "transcription", "status": "off"}
    item: dict[str, Any] = {"name": "transcription", "engines": engines}
    if not runtime.settings.transcription_workers:
        return item | {"status": "ok", "mode": "external"}
    problems = runtime.transcription_problems
    status = "error" if problems else "ok"
    return item | {"status": status, "mode": "in-process", "workers": len(runtime.workers)}
