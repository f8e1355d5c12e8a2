"""The demo's tenant: PBX `MojaCentrala` with the simulated SMS gateway and a key."""

from __future__ import annotations

from cloudpbx.runtime import Runtime

DEMO_PBX = "MojaCentrala"


async def prepare_demo(runtime: Runtime, key: str | None) -> str:
    """Create the demo PBX if missing and return a working API key for it.

    With `key`, that key is imported (or reused if it already belongs to the demo PBX);
    without, a new key is issued, since stored keys are hashes and cannot be shown again.
    """
    if await runtime.tenants.get(DEMO_PBX) is None:
        await runtime.tenants.create(DEMO_PBX, "Europe/Warsaw", sms_gateway="simulator")
    if key is not None:
        owner = await runtime.tenants.authenticate(key)
        if owner is not None and owner.name == DEMO_PBX:
            return key
        return await runtime.tenants.create_key(DEMO_PBX, "demo", key)
    return await runtime.tenants.create_key(DEMO_PBX, "demo")
