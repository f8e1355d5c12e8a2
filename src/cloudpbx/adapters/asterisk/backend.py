"""`AsteriskBackend`: the PbxBackend of real Asterisk servers, over AMI.

Per server (`_Server`): one `AmiConnection`; the pure `Translator` (events) and
`CdrConverter` (CDRs); a dispatcher task that applies what the connection read, in wire
order, and delivers to the sink; a `RecordingCollector`; the Master.csv catch-up.

Resync on every (re)connect: after `Login`, `CoreShowChannels` (calls in progress),
`DeviceStateList`, `ExtensionStateList`, `QueueStatus`, `ConfbridgeListRooms` (its
`No active conferences` error means none) and `ConfbridgeList` per room. Their events go
through the translator like live ones; it remembers what it published, so only the
differences to what clients already saw come out. While a resync runs nothing is
published, so each subject changes once, not per listing. What a listing cannot say — a
conference participant or dynamic queue member that left while we were away — is found
by comparing with what we knew before, and published as `remove`. Then the CDR catch-up
runs (see `.cdr_import`).

With `elect` (several server processes on one database), a server's connector runs only
in the process that holds the server's lease (`asterisk:HOST:PORT`, ports/lease.py); the
others stand by and take over when it expires. Every term starts from a fresh translator,
so the take-over's resync publishes the whole state, not a difference to an old term. The
lease is checked before every side effect (publishing, storing a CDR, a `/dial` on the
connector's session), so a holder that woke from a pause past its term does nothing. A
`/dial` on a standby goes through a short AMI session of its own (`Events: off`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from cloudpbx.adapters.asterisk.cdr import CdrConverter, CdrError, RatingTable
from cloudpbx.adapters.asterisk.cdr_import import (
    CdrDelivery,
    CdrLedger,
    MasterCsv,
    csv_records,
    rate_record,
)
from cloudpbx.adapters.asterisk.config import AsteriskConfig, PbxConfig, RatingConfig, ServerConfig
from cloudpbx.adapters.asterisk.connection import (
    AmiActionError,
    AmiConnection,
    AmiError,
    AmiSession,
)
from cloudpbx.adapters.asterisk.framing import AmiMessage
from cloudpbx.adapters.asterisk.recordings import RecordingCollector
from cloudpbx.adapters.asterisk.tenancy import TenantMap
from cloudpbx.adapters.asterisk.translate import Translator
from cloudpbx.domain.records import CdrRecord
from cloudpbx.domain.states import DeviceState
from cloudpbx.ports.lease import Elect, Leader, Term
from cloudpbx.ports.pbx import OriginateResult, PbxSink

__all__ = ["AsteriskBackend"]

log = logging.getLogger(__name__)

NO_CONFERENCES = "No active conferences"
_COMPLAIN_EVERY = 60.0
_ORIGINATES_KEPT = 1_000

ORIGINATE_REASONS = {
    "0": "no channel (failed)",
    "1": "hung up",
    "3": "rang, not answered",
    "4": "answered",
    "5": "busy",
    "8": "congestion",
}
"""`OriginateResponse.Reason` (AST_CONTROL_*) in words."""


@dataclasses.dataclass(slots=True)
class _Resynced:
    conferences: bool
    queues: bool


@dataclasses.dataclass(slots=True)
class _NewTerm:
    """This process took the server's lease: start from a blank translator."""

    token: int


_Item = list[AmiMessage] | Literal["disconnected"] | _Resynced | _NewTerm


class _Complainer:
    """Logs a failure with traceback at most once a minute per kind."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._at: dict[str, float] = {}
        self._hushed: dict[str, int] = {}

    def __call__(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._at.get(kind, -_COMPLAIN_EVERY) < _COMPLAIN_EVERY:
            self._hushed[kind] = self._hushed.get(kind, 0) + 1
            return
        hushed = self._hushed.pop(kind, 0)
        suffix = f" ({hushed} more not logged)" if hushed else ""
        log.exception(f"%s: {message}{suffix}", self.name, *args)
        self._at[kind] = now


class _Server:
    """One Asterisk server and the PBXes it serves."""

    def __init__(
        self,
        config: ServerConfig,
        rating: RatingConfig,
        *,
        state_dir: Path | None,
        ledger: CdrLedger | None,
        elect: Elect | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.tenants: TenantMap = config.tenants()
        self.pbxes: dict[str, PbxConfig] = {p.name: p for p in config.pbx}
        self.ratings: dict[str, RatingTable] = {
            p.name: (p.rating or rating).table() for p in config.pbx
        }
        self.translator = Translator(self.tenants)
        self.converter = CdrConverter(self.tenants, asterisk_tz=ZoneInfo(config.timezone))
        self.ledger = ledger
        self.learned: dict[str, dict[str, str]] = {p: {} for p in self.pbxes}
        """Per PBX: extension → its device (`PJSIP/MojaCentrala-101`), from Asterisk."""
        self.recordings = (
            RecordingCollector(config.recordings, name=self.name) if config.recordings else None
        )
        self.csv: MasterCsv | None = None
        self.csv_converter: CdrConverter | None = None
        if config.cdr_csv is not None:
            state_file = None if state_dir is None else state_dir / f"{self.name}.cdr-csv.json"
            self.csv = MasterCsv(config.cdr_csv.path, state_file, start=config.cdr_csv.start)
            self.csv_converter = CdrConverter(
                self.tenants, asterisk_tz=ZoneInfo(config.cdr_csv.timezone)
            )
        self.connection = AmiConnection(
            config.host,
            config.port,
            config.username,
            config.secret,
            name=self.name,
            options=config.options(),
            on_messages=self._received,
            on_connect=self._resync,
            on_disconnect=self._disconnected,
        )
        self._queue: asyncio.Queue[tuple[float, _Item]] = asyncio.Queue()
        self._carry: tuple[float, _Item] | None = None
        self._sink: PbxSink | None = None
        self._delivery: CdrDelivery | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._catchup: asyncio.Task[None] | None = None
        self._catchup_again = False
        self._periodic: asyncio.Task[None] | None = None
        self._holding = True
        self._members: dict[tuple[str, str], AmiMessage] = {}
        self._participants: dict[tuple[str, str], AmiMessage] = {}
        self._stale_members: set[tuple[str, str]] = set()
        self._stale_participants: set[tuple[str, str]] = set()
        self._originates: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self._complain = _Complainer(self.name)
        self.synced = asyncio.Event()
        """Set once the first resync's state was published."""
        self.resyncs = 0
        self.last_resync: float | None = None
        self.cdrs_live = 0
        self.cdrs_imported = 0
        self.leader: Leader | None = (
            None
            if elect is None
            else elect(f"asterisk:{config.host}:{config.port}", self._lead, self._stand_by)
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, sink: PbxSink) -> None:
        self._sink = sink
        self._delivery = CdrDelivery(sink, self.ledger)
        if self.recordings is not None:
            self.recordings.bind(sink)
        self._dispatcher = asyncio.get_running_loop().create_task(
            self._dispatch(), name=f"{self.name}-dispatcher"
        )
        if self.leader is None:
            self.connection.start()
        else:
            self.leader.start()
        if self.config.cdr_csv is not None and self.config.cdr_csv.interval > 0:
            self._periodic = asyncio.get_running_loop().create_task(
                self._catch_up_every(self.config.cdr_csv.interval), name=f"{self.name}-cdr-timer"
            )

    async def stop(self) -> None:
        if self.leader is not None:
            await self.leader.stop()
        await self.connection.stop()
        for task in (self._periodic, self._catchup, self._dispatcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._periodic = self._catchup = self._dispatcher = None
        if self.recordings is not None:
            await self.recordings.close()
        self._sink = None

    def _acts(self) -> bool:
        """Whether this process is the server's connector now (always, without leases)."""
        return self.leader is None or self.leader.holds()

    async def _lead(self, term: Term) -> None:
        self._put(_NewTerm(term.token))
        self.connection.start()

    async def _stand_by(self, why: str) -> None:
        await self.connection.stop(wait=0.5)
        self._put("disconnected")

    # -- what the connection hands over --------------------------------------------------

    def _put(self, item: _Item) -> None:
        self._queue.put_nowait((asyncio.get_running_loop().time(), item))

    def _received(self, messages: list[AmiMessage]) -> None:
        self._put(messages)

    def _disconnected(self, reason: str) -> None:
        self._put("disconnected")

    async def _resync(self, session: AmiSession) -> None:
        limit = max(self.config.action_timeout, 10.0)
        await session.list_action("CoreShowChannels", wait=limit)
        await session.list_action("DeviceStateList", wait=limit)
        await session.list_action("ExtensionStateList", wait=limit)
        queues = True
        try:
            await session.list_action("QueueStatus", wait=limit)
        except AmiActionError as exc:
            log.info("%s: QueueStatus refused (%s): queue state not resynced", self.name, exc)
            queues = False
        conferences = True
        rooms: list[str] = []
        try:
            listing = await session.list_action("ConfbridgeListRooms", wait=limit)
            rooms = [m.value("Conference") for m in listing.events if m.value("Conference")]
        except AmiActionError as exc:
            if NO_CONFERENCES not in exc.message:
                log.info("%s: ConfbridgeListRooms refused (%s)", self.name, exc)
                conferences = False
        for room in rooms:
            try:
                await session.list_action("ConfbridgeList", {"Conference": room}, wait=limit)
            except AmiActionError as exc:
                if NO_CONFERENCES not in exc.message:  # the room ended meanwhile: no members
                    conferences = False
        self._put(_Resynced(conferences=conferences, queues=queues))
        self.resyncs += 1
        self.last_resync = time.time()
        self.catch_up()

    # -- the dispatcher ----------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while True:
            cdrs: list[tuple[str, CdrRecord]] = []
            resynced = False
            for item in await self._gather():
                if isinstance(item, list):
                    for msg in item:
                        self._apply(msg, cdrs)
                elif isinstance(item, _Resynced):
                    self._finish_resync(item)
                    resynced = True
                elif isinstance(item, _NewTerm):
                    self.translator = Translator(self.tenants)
                    self._start_resync()
                else:
                    await self._publish()
                    self._start_resync()
            await self._publish()
            if resynced:
                self.synced.set()
            for pbx, record in cdrs:
                await self._deliver_cdr(pbx, record)

    async def _gather(self) -> list[_Item]:
        """The next read, and the reads that arrived within `flush_delay` after it.

        Arrival times count, not when we get to them: a dispatcher that fell behind does
        not squash a whole call into one flush (and so lose its intermediate states).
        """
        first = self._carry
        self._carry = None
        if first is None:
            first = await self._queue.get()
        items = [first[1]]
        until = first[0] + self.config.flush_delay
        loop = asyncio.get_running_loop()
        while True:
            if self._queue.empty():
                left = until - loop.time()
                if left <= 0:
                    break
                try:
                    async with asyncio.timeout(left):
                        following = await self._queue.get()
                except TimeoutError:
                    break
            else:
                following = self._queue.get_nowait()
            if following[0] > until:
                self._carry = following
                break
            items.append(following[1])
        return items

    def _apply(self, msg: AmiMessage, cdrs: list[tuple[str, CdrRecord]]) -> None:
        name = msg.event
        if name is None:
            return
        if name == "Cdr":
            self._cdr(msg, cdrs)
            return
        if name == "OriginateResponse":
            self._originate_response(msg)
        elif name in ("DeviceStateChange", "ExtensionStatus"):
            self._learn(msg)
        elif name in ("ConfbridgeJoin", "ConfbridgeList"):
            key = (msg.value("Conference"), msg.value("Channel"))
            self._participants[key] = msg
            self._stale_participants.discard(key)
        elif name == "ConfbridgeLeave":
            key = (msg.value("Conference"), msg.value("Channel"))
            self._participants.pop(key, None)
            self._stale_participants.discard(key)
        elif name in ("QueueMember", "QueueMemberStatus", "QueueMemberPause", "QueueMemberAdded"):
            key = (msg.value("Queue"), msg.value("Interface") or msg.value("Location"))
            self._members[key] = msg
            self._stale_members.discard(key)
        elif name == "QueueMemberRemoved":
            key = (msg.value("Queue"), msg.value("Interface") or msg.value("Location"))
            self._members.pop(key, None)
            self._stale_members.discard(key)
        recordings = self.recordings
        if recordings is not None:
            if name in ("Newchannel", "CoreShowChannel"):
                recordings.channel_up(msg.value("Uniqueid"))
            elif name == "MixMonitorStart":
                recordings.recording_started(msg.value("Uniqueid"))
            elif name == "Hangup":
                recordings.channel_down(msg.value("Uniqueid"))
        self.translator.feed(msg)

    def _start_resync(self) -> None:
        """The connection is gone: forget live channels, hold publishing until resynced."""
        self.translator.reset_calls()
        if self.recordings is not None:
            self.recordings.reset_channels()
        self._holding = True
        self._stale_participants = set(self._participants)
        self._stale_members = {key for key, msg in self._members.items() if _dynamic(msg)}

    def _finish_resync(self, done: _Resynced) -> None:
        if done.conferences:
            for key in sorted(self._stale_participants):
                left = self._participants.pop(key)
                self.translator.feed(_as_event(left, "ConfbridgeLeave"))
        if done.queues:
            for key in sorted(self._stale_members):
                gone = self._members.pop(key)
                self.translator.feed(_as_event(gone, "QueueMemberRemoved"))
        self._stale_participants = set()
        self._stale_members = set()
        if self.recordings is not None:
            self.recordings.resynced()
        self._holding = False

    async def _publish(self) -> None:
        if self._holding:
            return
        batches = self.translator.flush()
        sink = self._sink
        if sink is None or not self._acts():
            return
        for pbx, events in batches:
            try:
                await sink.events(pbx, events)
            except Exception:
                self._complain("events", "the sink refused events of %s", pbx)

    # -- extensions and /dial ----------------------------------------------------------------

    def _learn(self, msg: AmiMessage) -> None:
        device = msg.value("Device") if msg.event == "DeviceStateChange" else msg.value("Hint")
        for one in device.split(",", 1)[0].split("&"):
            peer = self.tenants.device(one)
            if peer is not None and peer.pbx in self.learned:
                self.learned[peer.pbx][peer.extension] = one

    def device_for(self, pbx: str, number: str) -> str | None:
        """The device `/dial` rings for extension `number`, None if it is none."""
        config = self.pbxes.get(pbx)
        if config is None:
            return None
        learned = self.learned[pbx].get(number)
        if config.extensions is not None:
            if number not in config.extensions:
                return None
            if learned is not None:
                return learned
            prefix = config.endpoint_prefix if config.endpoint_prefix is not None else f"{pbx}-"
            return f"{config.endpoint_tech}/{prefix}{number}"
        return learned

    def may_be_extension(self, pbx: str, number: str) -> bool:
        """`device_for`, except that a standby, which reads no events, cannot know the
        extensions Asterisk reports: it learns them when it dials (`_originate_standby`)."""
        if self.device_for(pbx, number) is not None:
            return True
        config = self.pbxes.get(pbx)
        return config is not None and config.extensions is None and not self._acts()

    async def originate(self, pbx: str, cpa: str, cpb: str) -> OriginateResult:
        if not self._acts():
            return await self._originate_standby(pbx, cpa, cpb)
        device = self.device_for(pbx, cpa)
        if device is None:
            return OriginateResult(False, message=f"{cpa} is not an extension of {pbx}")
        if not self.connection.connected:
            return OriginateResult(
                False, message=f"Asterisk {self.name} is not connected: {self.connection.error}"
            )
        if self.translator.device_state(device) is DeviceState.UNAVAILABLE:
            # Asterisk would accept the Originate and fail it a millisecond later
            # (OriginateResponse Reason 0): say so now.
            log.info("dial %s %s→%s refused: %s is unavailable", pbx, cpa, cpb, device)
            return OriginateResult(
                False, message=f"{cpa} is unavailable (Asterisk reports {device} UNAVAILABLE)"
            )
        action_id = f"cloudpbx-dial-{secrets.token_hex(8)}"
        headers = self._originate_headers(pbx, cpa, cpb, device, action_id)
        self._originates[action_id] = (pbx, cpa, cpb)
        while len(self._originates) > _ORIGINATES_KEPT:
            self._originates.popitem(last=False)
        self.translator.expect_originate(device, cpb)
        try:
            response = await self.connection.action("Originate", headers, action_id=action_id)
        except AmiActionError as exc:
            self._originates.pop(action_id, None)
            self.translator.cancel_originate(device, cpb)
            log.info("dial %s %s→%s refused by Asterisk: %s", pbx, cpa, cpb, exc.message)
            return OriginateResult(False, action_id, exc.message or "Response: Error")
        except AmiError as exc:
            self.translator.cancel_originate(device, cpb)
            log.warning("dial %s %s→%s failed: %s", pbx, cpa, cpb, exc)
            return OriginateResult(False, action_id, str(exc))
        log.info("dial %s %s→%s queued as %s", pbx, cpa, cpb, action_id)
        return OriginateResult(True, action_id, response.value("Message"))

    def _originate_headers(
        self, pbx: str, cpa: str, cpb: str, device: str, action_id: str
    ) -> list[tuple[str, str]]:
        config = self.pbxes[pbx]
        headers = [
            ("Channel", device),
            ("Context", config.dial_context),
            ("Exten", cpb),
            ("Priority", "1"),
            ("CallerID", config.callerid.format(pbx=pbx, cpa=cpa, cpb=cpb)),
            ("Timeout", str(int(config.originate_timeout * 1000))),
            ("Async", "true"),
            ("Variable", f"CLOUDPBX_DIAL={action_id}"),
        ]
        if config.account:
            headers.append(("Account", config.account))
        return headers

    async def _originate_standby(self, pbx: str, cpa: str, cpb: str) -> OriginateResult:
        """`/dial` in a process that is not the connector: a session of its own, without
        events (Login, [DeviceStateList to learn cpa's device], Originate, Logoff). The
        connector's session sees the call as usual; the device-state pre-check is left to
        Asterisk, which fails the call itself."""
        action_id = f"cloudpbx-dial-{secrets.token_hex(8)}"
        opts = self.connection.options
        try:
            session = await AmiSession.open(
                self.config.host, self.config.port, wait=opts.connect_timeout, name=self.name
            )
        except AmiError as exc:
            return OriginateResult(False, action_id, f"Asterisk {self.name}: {exc}")
        try:
            await session.login(
                self.config.username, self.config.secret, events="off", wait=opts.action_timeout
            )
            device = self.device_for(pbx, cpa)
            if device is None:
                listing = await session.list_action("DeviceStateList", wait=opts.action_timeout)
                for msg in listing.events:
                    self._learn(msg)
                device = self.device_for(pbx, cpa)
            if device is None:
                return OriginateResult(False, message=f"{cpa} is not an extension of {pbx}")
            headers = self._originate_headers(pbx, cpa, cpb, device, action_id)
            response = await session.action(
                "Originate", headers, wait=opts.action_timeout, action_id=action_id
            )
        except AmiActionError as exc:
            log.info("dial %s %s→%s refused by Asterisk: %s", pbx, cpa, cpb, exc.message)
            return OriginateResult(False, action_id, exc.message or "Response: Error")
        except AmiError as exc:
            log.warning("dial %s %s→%s failed: %s", pbx, cpa, cpb, exc)
            return OriginateResult(False, action_id, str(exc))
        finally:
            await session.close(wait=1.0)
        log.info("dial %s %s→%s queued as %s (from a standby process)", pbx, cpa, cpb, action_id)
        return OriginateResult(True, action_id, response.value("Message"))

    def _originate_response(self, msg: AmiMessage) -> None:
        action_id = msg.action_id or ""
        dial = self._originates.pop(action_id, None)
        if dial is None:
            return
        pbx, cpa, cpb = dial
        device = self.device_for(pbx, cpa)
        if device is not None:
            # The leg, if any, exists by now (Newchannel comes first): no later channel
            # of cpa is this call's.
            self.translator.cancel_originate(device, cpb)
        reason = msg.value("Reason")
        log.info(
            "dial %s %s→%s (%s): %s, reason %s (%s), channel %s, uniqueid %s",
            pbx,
            cpa,
            cpb,
            action_id,
            msg.value("Response"),
            reason,
            ORIGINATE_REASONS.get(reason, "?"),
            msg.value("Channel"),
            msg.value("Uniqueid"),
        )

    # -- CDRs --------------------------------------------------------------------------------

    def _rate(self, pbx: str, record: CdrRecord) -> CdrRecord:
        return rate_record(record, self.ratings[pbx])

    def _cdr(self, msg: AmiMessage, cdrs: list[tuple[str, CdrRecord]]) -> None:
        try:
            converted = self.converter.convert(msg)
        except CdrError as exc:
            log.warning("%s: unreadable Cdr event (%s): %r", self.name, exc, msg)
            return
        if converted is None:
            self.translator.note_dropped(msg)
        else:
            cdrs.append((converted[0], self._rate(*converted)))

    async def _deliver_cdr(self, pbx: str, record: CdrRecord) -> None:
        delivery = self._delivery
        if delivery is None or not self._acts():
            return
        try:
            if await delivery.live(pbx, record):
                self.cdrs_live += 1
        except Exception:
            self._complain("cdr", "CDR %s of %s not stored", record.uniqueid, pbx)
            return
        if self.recordings is not None:
            self.recordings.cdr(pbx, record)

    def catch_up(self) -> None:
        """Import what Master.csv has and the store lacks (in a task; one at a time)."""
        if self.csv is None or self._sink is None:
            return
        if self._catchup is not None and not self._catchup.done():
            self._catchup_again = True
            return
        self._catchup = asyncio.get_running_loop().create_task(
            self._catch_up(), name=f"{self.name}-cdr-catchup"
        )

    async def _catch_up_every(self, interval: float) -> None:
        """Also while connected: rows AMI lost (a failed store, cdr_manager off a while)."""
        while True:
            await asyncio.sleep(interval)
            if self.connection.connected:
                self.catch_up()

    async def wait_catch_up(self) -> None:
        while self._catchup is not None and not self._catchup.done():
            await asyncio.wait({self._catchup})

    async def _catch_up(self) -> None:
        while True:
            self._catchup_again = False
            try:
                await self._import_csv()
            except asyncio.CancelledError:
                raise
            except Exception:
                self._complain("catchup", "CDR catch-up from %s failed", self.config.cdr_csv)
            if not self._catchup_again:
                return

    async def _import_csv(self) -> None:
        csv, converter, delivery = self.csv, self.csv_converter, self._delivery
        assert csv is not None and converter is not None and delivery is not None
        while True:
            batch = await asyncio.to_thread(csv.next_batch)
            if batch is None:
                return
            text, inode, offset = batch
            if not self._acts():
                return
            rows = self.convert_csv(text, converter)
            stored = await delivery.catch_up(rows)
            self.cdrs_imported += len(stored)
            if stored:
                log.info(
                    "%s: imported %d CDR rows from %s that AMI did not deliver",
                    self.name,
                    len(stored),
                    csv.path,
                )
            if self.recordings is not None:
                for pbx, record in stored:
                    self.recordings.cdr(pbx, record)
            csv.commit(inode, offset)

    def convert_csv(self, text: str, converter: CdrConverter) -> list[tuple[str, CdrRecord]]:
        return csv_records(text, converter, self.ratings)[0]

    # -- health ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        info = self.connection.health()
        if self.leader is not None:
            info["lease"] = self.leader.state
            if not self.leader.holds():
                info["state"] = "standby"
        info["pbxes"] = list(self.pbxes)
        info["resyncs"] = self.resyncs
        info["cdrs"] = {"live": self.cdrs_live, "imported": self.cdrs_imported}
        info["dropped"] = dict(self.translator.dropped)
        if self.csv is not None:
            info["cdr_csv"] = {"path": str(self.csv.path), "offset": self.csv.offset}
        if self.recordings is not None:
            info["recordings"] = {"dir": str(self.recordings.config.dir)}
        return info


def _dynamic(msg: AmiMessage) -> bool:
    return msg.value("Membership").lower() == "dynamic"


def _as_event(msg: AmiMessage, event: str) -> AmiMessage:
    """A remembered event re-issued as another (a leave for a join), without its ActionID."""
    return AmiMessage(
        [("Event", event)]
        + [(k, v) for k, v in msg.headers if k.lower() not in ("event", "actionid")]
    )


class AsteriskBackend:
    """The PBXes of one or more Asterisk servers (see the module docstring).

    `state_dir` keeps the Master.csv positions across restarts (None: in memory only);
    `ledger` tells the CDR catch-up which rows are stored (None: it only remembers the
    rows this process stored); `elect` makes each server's connector run only where its
    lease is held (None: always here).
    """

    def __init__(
        self,
        config: AsteriskConfig,
        *,
        state_dir: Path | None = None,
        ledger: CdrLedger | None = None,
        elect: Elect | None = None,
    ) -> None:
        self.config = config
        self._servers = [
            _Server(server, config.rating, state_dir=state_dir, ledger=ledger, elect=elect)
            for server in config.servers
        ]
        self._by_pbx = {pbx: server for server in self._servers for pbx in server.pbxes}
        self._started = False

    @property
    def servers(self) -> Sequence[_Server]:
        return self._servers

    def server_for(self, pbx: str) -> _Server | None:
        return self._by_pbx.get(pbx)

    # -- PbxBackend ------------------------------------------------------------------------

    def serves(self, pbx: str) -> bool:
        return pbx in self._by_pbx

    def is_extension(self, pbx: str, number: str) -> bool:
        server = self._by_pbx.get(pbx)
        return server is not None and server.may_be_extension(pbx, number)

    async def start(self, sink: PbxSink) -> None:
        """Start connecting to every server; returns at once (see `wait_connected`)."""
        if self._started:
            raise RuntimeError("the Asterisk backend is already running")
        self._started = True
        for server in self._servers:
            server.start(sink)

    async def stop(self) -> None:
        """Log off every server, stop every task; nothing is delivered afterwards."""
        if not self._started:
            return
        self._started = False
        await asyncio.gather(*(server.stop() for server in self._servers))

    async def originate(self, pbx: str, cpa: str, cpb: str) -> OriginateResult:
        server = self._by_pbx.get(pbx)
        if server is None:
            return OriginateResult(False, message=f"PBX {pbx} is not served by Asterisk here")
        return await server.originate(pbx, cpa, cpb)

    # -- beyond the port -------------------------------------------------------------------

    async def wait_connected(self, wait: float = 10.0) -> bool:
        """Until every server's first resync was published (True), or `wait` s (False)."""
        try:
            async with asyncio.timeout(wait):
                await asyncio.gather(*(server.synced.wait() for server in self._servers))
        except TimeoutError:
            return False
        return True

    def health(self) -> dict[str, Any]:
        """`{"status": "ok"|"degraded", "servers": [...]}`: ok when every server is
        connected or standing by. Each server: name, address, state (`connected`,
        `connecting`, `disconnected`, `auth_failed`, `stopped`, or `standby` where another
        process holds the server's lease), `lease` (`leader`/`standby`, with leases only),
        since, error, connects, pbxes,
        `dropped` (AMI event name → events naming no PBX of it). `dropped` at the top:
        their sum over all servers."""
        servers = [server.health() for server in self._servers]
        # A standby is healthy: the server's connector runs in the process holding its lease.
        ok = all(info["state"] in ("connected", "standby") for info in servers)
        dropped = sum(sum(info["dropped"].values()) for info in servers)
        return {
            "backend": "asterisk",
            "status": "ok" if ok else "degraded",
            "dropped": dropped,
            "servers": servers,
        }
