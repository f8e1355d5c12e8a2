"""The health port: a dependency that `/healthz` shows beside the built-in ones.

The database, the Asterisk connections, the SMS gateways and the transcription engines
are reported from what the runtime holds; a component added later (the cross-process
event engine) appends itself to `Runtime.dependencies` and is reported the same way.
"""

from __future__ import annotations

from typing import Any, Protocol


class Dependency(Protocol):
    """Something the server needs, with a status a load balancer may read."""

    name: str
    """Short and public (`event_engine`): /healthz names no PBX and no address."""

    async def health(self) -> dict[str, Any]:
        """`{"status": "ok"|"down"|..., ...}`, quickly: /healthz waits `CHECK_TIMEOUT`."""
        ...
