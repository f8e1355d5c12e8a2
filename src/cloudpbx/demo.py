"""The demo's tenant: PBX `MojaCentrala` with the simulated SMS gateway and a key."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cloudpbx.runtime import Runtime

DEMO_PBX = "MojaCentrala"


@dataclass(frozen=True, slots=True)
class Demo:
    """What `cloudpbx demo` shows before serving."""

    key: str
    """A working API key of the demo PBX."""
    transcription_problems: list[str]
    """Why the configured transcription engine cannot run here (empty: it can)."""


async def prepare_demo(runtime: Runtime, key: str | None) -> Demo:
    """Create the demo PBX if missing, get a working API key for it, and check whether a
    transcription worker could run.

    With `key`, that key is imported (or reused if it already belongs to the demo PBX);
    without, a new key is issued, since stored keys are hashes and cannot be shown again.
    """
    if await runtime.tenants.get(DEMO_PBX) is None:
        await runtime.tenants.create(DEMO_PBX, "Europe/Warsaw", sms_gateway="simulator")
    # The same check the server makes before starting its workers (runtime.py).
    check = getattr(runtime.transcribers, "check", None)
    problems: list[str] = await asyncio.to_thread(check) if check is not None else []
    close = getattr(runtime.transcribers, "close", None)
    if close is not None:
        close()
    return Demo(await _demo_key(runtime, key), problems)


async def _demo_key(runtime: Runtime, key: str | None) -> str:
    if key is not None:
        owner = await runtime.tenants.authenticate(key)
        if owner is not None and owner.name == DEMO_PBX:
            return key
        return await runtime.tenants.create_key(DEMO_PBX, "demo", key)
    return await runtime.tenants.create_key(DEMO_PBX, "demo")
