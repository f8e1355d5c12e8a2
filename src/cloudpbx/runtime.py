"""The wiring: the one place that picks concrete adapters and connects them.

`Runtime` owns the database engine, the stores, the bus, the event hub, the PBX backends
and the SMS gateways; `start()`/`stop()` bring them up and down in order.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.adapters.smsapi import CallbackSigner, SmsapiGateway
from cloudpbx.api.wsframe import text_frame
from cloudpbx.bus.memory import MemoryBus
from cloudpbx.metrics.registry import Metrics
from cloudpbx.metrics.sampler import Sampler, Sources
from cloudpbx.metrics.sources import ami_readings, gateway_statuses
from cloudpbx.ports.health import Dependency
from cloudpbx.ports.lease import LeaseStore, OnGain, OnLoss
from cloudpbx.ports.pbx import PbxBackend
from cloudpbx.ports.sms import SmsGateway
from cloudpbx.services.engine_hub import EngineHub
from cloudpbx.services.events import EventHub
from cloudpbx.services.ingest import PbxIngest
from cloudpbx.services.leadership import Leadership, holder_id
from cloudpbx.services.sms import OutboxPolicy, SmsService
from cloudpbx.services.stream import EventStream
from cloudpbx.services.transcription import (
    TranscriberFor,
    TranscriptionQueue,
    Worker,
    WorkerPolicy,
    worker_name,
)
from cloudpbx.settings import Settings
from cloudpbx.storage import migrate
from cloudpbx.storage.calls import CallStore
from cloudpbx.storage.database import create_engine
from cloudpbx.storage.event_archive import EventArchive
from cloudpbx.storage.events import EventStore
from cloudpbx.storage.jobs import JobStore
from cloudpbx.storage.leases import SqlLeaseStore
from cloudpbx.storage.reads import SqliteReaders
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
    hub: EventStream
    ingest: PbxIngest
    sms: SmsService
    sms_gateways: dict[str, SmsGateway]
    leases: LeaseStore
    metrics: Metrics = field(init=False)
    sampler: Sampler = field(init=False)
    backends: list[PbxBackend] = field(default_factory=list)
    # This process in every lease it takes (services/leadership.py).
    holder: str = field(default_factory=holder_id)
    # Tokens of the SMSAPI callback URLs (api/routes/sms_callbacks.py); None: no account.
    sms_callbacks: CallbackSigner | None = None
    # Transcription jobs (docs/transcription.md): the queue the ingest feeds, each PBX's
    # engine, and the workers run inside this process (`transcription_workers`).
    transcription: TranscriptionQueue | None = None
    transcribers: TranscriberFor | None = None
    workers: list[Worker] = field(default_factory=list)
    # What /healthz reports beside the built-in dependencies (api/routes/dependencies.py).
    dependencies: list[Dependency] = field(default_factory=list)
    # Why the in-process workers could not start (engine checks); None: not checked.
    transcription_problems: list[str] | None = None
    # SQLite connections of the hot reads (storage/reads.py); None on PostgreSQL.
    readers: SqliteReaders | None = None
    _worker_tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def transcription_worker(self, name: str | None = None) -> Worker:
        """A worker on this runtime's database with the configured engines."""
        if self.transcription is None or self.transcribers is None:
            raise RuntimeError("transcription is not wired")
        settings = self.settings
        policy = WorkerPolicy(
            lease=settings.transcription_lease,
            max_attempts=settings.transcription_max_attempts,
            retry_delay=settings.transcription_retry_delay,
            retry_max=settings.transcription_retry_max,
            poll_interval=settings.transcription_poll_interval,
        )
        return Worker(
            self.transcription.jobs, self.transcribers, settings.recordings_dir, policy, name
        )

    async def _start_workers(self) -> None:
        if self.transcription is None or not self.settings.transcription_workers:
            return
        check = getattr(self.transcribers, "check", None)
        problems: list[str] = await asyncio.to_thread(check) if check is not None else []
        self.transcription_problems = problems
        if problems:
            # Jobs stay queued (for a `cloudpbx worker` that can run, or a fixed config)
            # rather than failing one by one.
            log.error("transcription workers not started: %s", "; ".join(problems))
            return
        for index in range(self.settings.transcription_workers):
            worker = self.transcription_worker(worker_name(f"api{index}"))
            self.transcription.on_enqueue(worker.wake)
            self.workers.append(worker)
            self._worker_tasks.append(asyncio.create_task(worker.run()))

    async def _stop_workers(self) -> None:
        for task in self._worker_tasks:
            task.cancel()
        await asyncio.gather(*self._worker_tasks, return_exceptions=True)
        self._worker_tasks.clear()
        close = getattr(self.transcribers, "close", None)
        if close is not None:
            close()

    def elect(self, name: str, on_gain: OnGain, on_loss: OnLoss) -> Leadership:
        """The lease `name` for a singleton job of this process (`ports.lease.Elect`)."""
        return Leadership(self.leases, name, self.holder, self.settings.lease_ttl, on_gain, on_loss)

    def backend_for(self, tenant: Tenant) -> PbxBackend | None:
        for backend in self.backends:
            if backend.serves(tenant.name):
                return backend
        return None

    async def migrate(self) -> None:
        await migrate.upgrade(self.engine)

    async def start(self) -> None:
        await self.migrate()
        if isinstance(self.hub, EngineHub):
            await self.hub.start()
        for gateway in self.sms_gateways.values():
            await gateway.start(self.sms)
        await self.sms.start()
        for backend in self.backends:
            await backend.start(self.ingest)
        await self._start_workers()
        self.sampler.start()

    async def stop(self) -> None:
        await self.sampler.stop()
        self.metrics.close()
        for backend in self.backends:
            await backend.stop()
        await self._stop_workers()
        await self.sms.stop()
        for gateway in self.sms_gateways.values():
            await gateway.stop()
        await self.hub.close()
        await self.bus.close()
        if self.readers is not None:
            await self.readers.close()
        await self.engine.dispose()


def build_runtime(settings: Settings) -> Runtime:
    """Build (not start) the runtime for `settings`; backends are added by the caller."""
    from cloudpbx.adapters.sms_simulator import SimulatedSmsGateway

    engine = create_engine(settings.effective_database_url)
    readers = SqliteReaders.for_engine(engine)
    tenants = TenantStore(engine, key_cache_ttl=settings.auth_cache_ttl, readers=readers)
    calls = CallStore(engine, readers=readers)
    sms_store = SmsStore(engine)
    bus = MemoryBus(frame=text_frame)
    hub = _event_stream(settings, engine, tenants, bus)
    ingest = PbxIngest(tenants, calls, hub, settings.recordings_dir)
    gateways: dict[str, SmsGateway] = {}
    if settings.sms_gateway == "simulator":
        gateways["simulator"] = SimulatedSmsGateway(step_delay=settings.sms_simulator_step)
    signer = _add_smsapi_gateways(settings, gateways)
    sms = SmsService(
        tenants,
        sms_store,
        calls,
        hub,
        gateways,
        settings.sms_price_per_part,
        policy=OutboxPolicy(
            submit_timeout=settings.sms_submit_timeout,
            retry_base=settings.sms_retry_base,
            retry_max=settings.sms_retry_max,
            retry_deadline=settings.sms_retry_deadline,
            poll_interval=settings.sms_poll_interval,
            report_max_age=settings.sms_report_max_age,
            dispatch_interval=settings.sms_dispatch_interval,
        ),
    )
    runtime = Runtime(
        settings,
        engine,
        tenants,
        calls,
        sms_store,
        bus,
        hub,
        ingest,
        sms,
        gateways,
        SqlLeaseStore(engine),
    )
    runtime.readers = readers
    runtime.sms_callbacks = signer
    jobs = JobStore(engine)
    _wire_transcription(runtime, jobs)
    _wire_metrics(runtime, jobs)
    return runtime


def _event_stream(
    settings: Settings, engine: AsyncEngine, tenants: TenantStore, bus: MemoryBus
) -> EventStream:
    """In this process (ids from the database), or shared through the event engine."""
    if not settings.event_engine_url:
        return EventHub(
            tenants,
            EventStore(engine),
            bus,
            history_size=settings.ws_history_size,
            flush_interval=settings.ws_commit_interval,
            bundle=settings.ws_bundle_events,
        )
    from cloudpbx.bus.jetstream import JetStreamEngine

    event_engine = JetStreamEngine(
        settings.event_engine_url,
        settings.event_engine_stream,
        settings.event_engine_history,
        settings.event_engine_timeout,
    )
    return EngineHub(
        event_engine,
        EventArchive(engine),
        bus,
        history_size=settings.ws_history_size,
        bundle=settings.ws_bundle_events,
    )


def _wire_metrics(runtime: Runtime, jobs: JobStore) -> None:
    """The metrics of this process and the sampler that feeds them (the WebSocket side
    is added by server.py, which builds the WebSocket protocol)."""
    runtime.metrics = Metrics()
    sources = Sources(
        ami=lambda: ami_readings(runtime.backends),
        sms_gateways=lambda: gateway_statuses(runtime.sms.health()),
        outbox=runtime.sms_store.outbox_depth,
        jobs=jobs.backlog,
    )
    runtime.sampler = Sampler(
        runtime.metrics,
        sources,
        interval=runtime.settings.metrics_interval,
        queue_interval=runtime.settings.metrics_queue_interval,
    )


def _wire_transcription(runtime: Runtime, jobs: JobStore) -> None:
    """The job queue behind the ingest, and the engine of each PBX (built on first use)."""
    from cloudpbx.adapters.transcription import EngineFactory

    engines = EngineFactory(runtime.settings)
    runtime.transcription = TranscriptionQueue(jobs, engines.enabled)
    runtime.transcribers = engines
    runtime.ingest.transcription_queue = runtime.transcription


def _add_smsapi_gateways(
    settings: Settings, gateways: dict[str, SmsGateway]
) -> CallbackSigner | None:
    """One SmsapiGateway per `[smsapi.NAME]` account, sharing one callback signer."""
    if not settings.smsapi:
        return None
    key_file = settings.sms_callback_secret_file or settings.data_dir / "sms-callback.key"
    signer = CallbackSigner(key_file, settings.sms_callback_base_url)
    for name, account in settings.smsapi.items():
        if name in gateways or not 1 <= len(name) <= 32:
            raise ValueError(
                f"SMSAPI account name {name!r}: must be 1-32 characters and not 'simulator'"
            )
        gateways[name] = SmsapiGateway(
            name, account, None, signer, timeout=settings.sms_submit_timeout
        )
    return signer
