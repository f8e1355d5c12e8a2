"""Read functions over the components, for the sampler (see sampler.py).

Each reads what the component already reports (`health()`), so the metrics add no
state to the components and follow them wherever they run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from cloudpbx.metrics.sampler import AmiReadings
from cloudpbx.ports.pbx import ReportsHealth


def ami_readings(backends: Sequence[object]) -> Iterator[AmiReadings]:
    """Each Asterisk server of the backends that report servers (the simulator has none)."""
    for backend in backends:
        if not isinstance(backend, ReportsHealth):
            continue
        servers: Any = backend.health().get("servers", ())
        for info in servers:
            rtt = info.get("ping_rtt")
            yield AmiReadings(
                server=str(info["name"]),
                connected=info.get("state") == "connected",
                ping_rtt=float(rtt) if isinstance(rtt, int | float) else None,
                connects=int(info.get("connects", 0)),
                dropped=dict(info.get("dropped", {})),
            )


def gateway_statuses(health: Iterable[dict[str, Any]]) -> list[str]:
    """`ok`, `held` or `alert` for each SMS gateway of `SmsService.health()`."""
    return [str(entry.get("status", "ok")) for entry in health]
