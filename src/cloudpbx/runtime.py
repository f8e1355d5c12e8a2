"""The wiring: the one place that picks concrete adapters and connects them.

`Runtime` owns the database engine, the stores, the bus, the event hub, the PBX backends
and the SMS gateways; `start()`/`stop()` bring them up and down in order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.bus.memory import MemoryBus
from cloudpbx.ports.pbx import PbxBackend
from cloudpbx.ports.sms import SmsGateway
from cloudpbx.services.events import EventHub
from cloudpbx.services.ingest import PbxIngest
from cloudpbx.services.sms import SmsService
from cloudpbx.settings import Settings
from cloudpbx.storage import migrate
from cloudpbx.storage.calls import CallStore
from cloudpbx.storage.database import create_engine
from cloudpbx.storage.events import EventStore
from cloudpbx.storage.sms import SmsStore
from cloudpbx.storage.tenants import Tenant, TenantStore

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything a running server holds, built from Settings by `build_runtime`."""

    settings: Settings
    engine: AsyncEngine
    tenants: TenantStore
    calls: CallStore
    sms_store: SmsStore
    bus: MemoryBus
    hub: EventHub
    ingest: PbxIngest
    sms: SmsService
    sms_gateways: dict[str, SmsGateway]
    backends: list[PbxBackend] = field(default_factory=list)

    def backend_for(self, tenant: Tenant) -> PbxBackend | None:
        for backend in self.backends:
            if backend.serves(tenant.name):
                return backend
        return None

    async def migrate(self) -> None:
        await migrate.upgrade(self.engine)

    async def start(self) -> None:
        await self.migrate()
        for gateway in self.sms_gateways.values():
            await gateway.start(self.sms)
        for backend in self.backends:
            await backend.start(self.ingest)

    async def stop(self) -> None:
        for backend in self.backends:
            await backend.stop()
        for gateway in self.sms_gateways.values():
            await gateway.stop()
        await self.hub.close()
        await self.bus.close()
        await self.engine.dispose()


def build_runtime(settings: Settings) -> Runtime:
    """Build (not start) the runtime for `settings`; backends are added by the caller."""
    from cloudpbx.adapters.sms_simulator import SimulatedSmsGateway

    engine = create_engine(settings.effective_database_url)
    tenants = TenantStore(engine)
    calls = CallStore(engine)
    sms_store = SmsStore(engine)
    bus = MemoryBus()
    hub = EventHub(tenants, EventStore(engine), bus, history_size=settings.ws_history_size)
    ingest = PbxIngest(tenants, calls, hub, settings.recordings_dir)
    gateways: dict[str, SmsGateway] = {}
    if settings.sms_gateway == "simulator":
        gateways["simulator"] = SimulatedSmsGateway(step_delay=settings.sms_simulator_step)
    sms = SmsService(tenants, sms_store, calls, hub, gateways, settings.sms_price_per_part)
    return Runtime(settings, engine, tenants, calls, sms_store, bus, hub, ingest, sms, gateways)
