"""Sending SMS (`/sendSMS`) and following their status to the WebSocket.

The message is stored before the gateway is called (an outbox, with its CDR row, in one
transaction), so a crash between the two never forgets it; its `responseId` becomes the
`uniqueid` of its CDR row and is the gateway's idempotency key (`idx`), so no retry can
send it twice.

The request submits once, with a bounded timeout. A background dispatcher then takes
every message whose `due_at` has come: it resubmits what the gateway may not have (with
backoff, until `retry_deadline`), polls the status of what it has (gateways that can be
asked), and gives a message that never got a final status UNKNOWN after
`report_max_age`. Every status change that moves a message forward is stored in its
history and published as `smsSendResponse`; see docs/sms.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudpbx.domain.errors import Forbidden
from cloudpbx.domain.events import SmsSendResponse
from cloudpbx.domain.records import CdrRecord, SmsMessage
from cloudpbx.domain.sms import count_parts
from cloudpbx.domain.states import Disposition, SmsStatus
from cloudpbx.ports.sms import (
    OutgoingSms,
    SmsGateway,
    SmsGatewayUnavailable,
    SmsLookupRefused,
    StatusReport,
    SubmitOutcome,
    SubmitResult,
)
from cloudpbx.services.stream import EventStream
from cloudpbx.storage.calls import CallStore
from cloudpbx.storage.sms import Outbox, OutboxItem, SmsStore
from cloudpbx.storage.tenants import Tenant, TenantStore

log = logging.getLogger(__name__)

SMS_LASTAPP = "SMS"
SMS_ZONE = "SMS"
# How long past its submission timeout a message stays claimed by the request (or
# dispatcher round) that submits it, before another round may take it over.
LEASE_MARGIN = 30.0


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What `/sendSMS` answers: the contract's RESPONSE object and whether it failed."""

    response_id: str
    status: SmsStatus
    error: str | None

    def body(self) -> dict[str, str | None]:
        return {
            "responseId": self.response_id,
            "responseStatus": self.status.value,
            "responseErrorMessage": self.error,
        }


@dataclass(frozen=True, slots=True)
class OutboxPolicy:
    """Timing of submissions, retries and status polling (settings `sms_*`)."""

    submit_timeout: float = 10.0
    retry_base: float = 2.0
    retry_max: float = 300.0
    retry_deadline: float = 3600.0
    poll_interval: float = 120.0
    report_max_age: float = 259_200.0
    dispatch_interval: float = 1.0
    batch: int = 100

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.submit_timeout + LEASE_MARGIN)

    def retry_delay(self, attempts: int) -> timedelta:
        """Exponential backoff after `attempts` failed submissions, ±20 % jitter."""
        delay = min(self.retry_max, self.retry_base * 2 ** min(attempts - 1, 30))
        return timedelta(seconds=delay * random.uniform(0.8, 1.2))


@dataclass(frozen=True, slots=True)
class ReportsOutcome:
    """How many reports moved a message forward, and how many named no message of the
    PBX (another PBX's message, or one we never sent)."""

    applied: int
    unknown: int


def new_response_id() -> str:
    """A 19-digit message id, like the provider's (`3421756012963258480`)."""
    return str(10**18 + secrets.randbelow(9 * 10**18))


def _polls(gateway: SmsGateway) -> bool:
    return bool(getattr(gateway, "polls", False))


@dataclass(slots=True)
class AccountHold:
    """A gateway account that refused a submission for its own sake (SMSAPI 101, 103,
    105...): its messages wait; one of them is submitted at `next_probe` to see whether
    the account was fixed."""

    error: str
    since: datetime
    probes: int
    next_probe: datetime


class SmsService:
    """Implements SmsStatusSink for the gateways; used by the API for sending and for the
    gateways' callbacks; runs the outbox dispatcher between `start` and `stop`."""

    def __init__(
        self,
        tenants: TenantStore,
        store: SmsStore,
        calls: CallStore,
        hub: EventStream,
        gateways: dict[str, SmsGateway],
        price_per_part: int,
        *,
        policy: OutboxPolicy | None = None,
    ) -> None:
        self._tenants = tenants
        self._store = store
        self._calls = calls
        self._hub = hub
        # Shared with the Runtime (and looked up at each use): swapping a gateway there
        # takes effect here.
        self._gateways = gateways
        self._price_per_part = price_per_part
        self.policy = policy or OutboxPolicy()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        # By gateway name, in this process (another server learns it at its own next
        # submission; a restart forgets it and the first submission finds it again).
        self._holds: dict[str, AccountHold] = {}
        # Gateways whose status lookups were refused: not asked again until restart.
        self._lookups_refused: dict[str, str] = {}

    def gateway_for(self, tenant: Tenant) -> SmsGateway:
        gateway = self._gateways.get(tenant.sms_gateway or "")
        if gateway is None:
            raise Forbidden(
                f"PBX {tenant.name} has no SMS gateway; sendSMS is not available",
                code="sms_not_enabled",
            )
        return gateway

    # -- sending ---------------------------------------------------------------------------

    async def send(self, tenant: Tenant, to: str, body: str, test: bool) -> SendOutcome:
        """Store, bill and submit one message. `to` is already international.

        QUEUE (200) when the gateway took the message or it is stored for another try
        after a transient failure; FAILED with the gateway's reason (500) when it was
        refused for good.
        """
        gateway = self.gateway_for(tenant)
        response_id = new_response_id()
        parts = count_parts(body)
        cost = 0 if test else parts * self._price_per_part
        now = datetime.now(UTC)
        await self._store.add(
            tenant,
            SmsMessage(response_id, to, body, test, SmsStatus.QUEUE, parts, cost, now),
            cdr_record=CdrRecord(
                started_at=now,
                clid=f'"{tenant.name}" <SMS>',
                src="SMS",
                dst=to,
                channel="",
                dstchannel="",
                lastapp=SMS_LASTAPP,
                duration=0,
                billsec=0,
                disposition=Disposition.ANSWERED,
                uniqueid=response_id,
                cost=cost,
                zone=SMS_ZONE,
            ),
            gateway=tenant.sms_gateway,
            outbox=Outbox.PENDING,
            due_at=now + self.policy.lease,
        )
        item = OutboxItem(
            pbx_id=tenant.id,
            pbx=tenant.name,
            response_id=response_id,
            to=to,
            body=body,
            test=test,
            parts=parts,
            status=SmsStatus.QUEUE,
            gateway=tenant.sms_gateway,
            gateway_id=None,
            outbox=Outbox.PENDING,
            attempts=0,
            created_at=now,
        )
        hold = self._holds.get(tenant.sms_gateway or "")
        if hold is not None:
            # The account is held: the message waits with the others for the next probe.
            await self._store.reschedule(tenant.id, response_id, hold.next_probe)
            return SendOutcome(response_id, SmsStatus.QUEUE, None)
        failure = await self._submit(tenant, gateway, item)
        if failure is not None:
            log.warning("SMS %s on %s refused by gateway: %s", response_id, tenant.name, failure)
            return SendOutcome(response_id, SmsStatus.FAILED, failure)
        return SendOutcome(response_id, SmsStatus.QUEUE, None)

    async def _submit(self, tenant: Tenant, gateway: SmsGateway, item: OutboxItem) -> str | None:
        """One submission and what follows from its outcome; the refusal text if the
        message failed for good, else None."""
        attempts = item.attempts + 1
        outgoing = OutgoingSms(
            item.pbx, item.response_id, item.to, item.body, item.test, item.parts
        )
        try:
            result = await asyncio.wait_for(
                gateway.submit(outgoing), self.policy.submit_timeout + 1
            )
        except TimeoutError:
            result = SubmitResult(
                None,
                SmsStatus.QUEUE,
                "the SMS gateway did not answer in time",
                outcome=SubmitOutcome.UNSURE,
            )
        except Exception as exc:  # an adapter's bug must not lose the message
            log.exception("SMS gateway %s failed on SMS %s", item.gateway, item.response_id)
            result = SubmitResult(
                None,
                SmsStatus.QUEUE,
                f"SMS gateway error ({type(exc).__name__})",
                outcome=SubmitOutcome.UNSURE,
            )
        now = datetime.now(UTC)
        kind = result.kind
        name = item.gateway or ""
        if kind is SubmitOutcome.HOLD:
            hold = self._hold(name, result.error or "account refused", now)
            await self._store.record_attempt(
                item.pbx_id,
                item.response_id,
                outbox=item.outbox,
                attempts=attempts,
                due_at=hold.next_probe,
                last_error=result.error,
            )
            return None
        if kind in (SubmitOutcome.ACCEPTED, SubmitOutcome.DUPLICATE) and name in self._holds:
            hold = self._holds.pop(name)
            waiting = await self._store.due_now(name, now)
            log.warning(
                "SMS gateway %s accepts messages again (held since %s for: %s); its "
                "outbox resumes with %d waiting messages",
                name,
                hold.since.isoformat(timespec="seconds"),
                hold.error,
                waiting,
            )
        elif name in self._holds:
            hold = self._holds[name]
            hold.next_probe = now + self.policy.retry_delay(hold.probes)
        if kind in (SubmitOutcome.ACCEPTED, SubmitOutcome.DUPLICATE):
            gateway_id = result.message_id if kind is SubmitOutcome.ACCEPTED else None
            await self._store.record_attempt(
                item.pbx_id,
                item.response_id,
                outbox=Outbox.ACCEPTED,
                attempts=attempts,
                due_at=self._next_look(gateway, gateway_id or item.gateway_id, item, now),
                last_error=result.error if kind is SubmitOutcome.DUPLICATE else None,
                gateway_id=gateway_id,
                cost=result.cost,
                parts=result.parts,
            )
            if kind is SubmitOutcome.DUPLICATE:
                log.info(
                    "SMS %s on %s was already with the gateway (%s); its reports will follow",
                    item.response_id,
                    item.pbx,
                    result.error,
                )
            elif result.status is not SmsStatus.QUEUE:
                await self._apply(tenant, item.response_id, result.status, gateway_id)
            return None
        if kind is SubmitOutcome.REFUSED and item.outbox is Outbox.UNSURE:
            # An earlier attempt may have reached the gateway (its answer was lost), and a
            # gateway may check e.g. credit before the idx: FAILED could be wrong, and a
            # final status would hide the delivery report. Stop resubmitting; wait for it.
            log.warning(
                "SMS %s on %s refused on resubmission (%s); an earlier attempt may have "
                "been sent, waiting for reports",
                item.response_id,
                item.pbx,
                result.error,
            )
            await self._store.record_attempt(
                item.pbx_id,
                item.response_id,
                outbox=Outbox.UNSURE,
                attempts=attempts,
                due_at=item.created_at + timedelta(seconds=self.policy.report_max_age),
                last_error=result.error,
            )
            return None
        if kind is SubmitOutcome.REFUSED:
            error = result.error or "refused by the SMS gateway"
            return await self._fail(tenant, item, error, attempts=attempts)
        # RETRY or UNSURE: try again later with the same idx, until the deadline.
        unsure = kind is SubmitOutcome.UNSURE or item.outbox is Outbox.UNSURE
        deadline = item.created_at + timedelta(seconds=self.policy.retry_deadline)
        await self._store.record_attempt(
            item.pbx_id,
            item.response_id,
            outbox=Outbox.UNSURE if unsure else Outbox.PENDING,
            attempts=attempts,
            due_at=min(now + self.policy.retry_delay(attempts), deadline),
            last_error=result.error,
        )
        log.info(
            "SMS %s on %s not taken by the gateway yet (attempt %d, %s): %s",
            item.response_id,
            item.pbx,
            attempts,
            kind.value,
            result.error,
        )
        return None

    async def _fail(
        self, tenant: Tenant, item: OutboxItem, error: str, *, attempts: int | None = None
    ) -> str:
        """The message will never be sent: FAILED, not charged, published."""
        await self._store.record_attempt(
            item.pbx_id,
            item.response_id,
            outbox=Outbox.REFUSED,
            due_at=None,
            attempts=attempts,
            last_error=error,
            cost=0,
        )
        await self._apply(tenant, item.response_id, SmsStatus.FAILED)
        return error

    def _next_look(
        self, gateway: SmsGateway, gateway_id: str | None, item: OutboxItem, now: datetime
    ) -> datetime:
        """When to look at an accepted message: its next poll, or (no polling) when it is
        due to be given up as UNKNOWN."""
        give_up = item.created_at + timedelta(seconds=self.policy.report_max_age)
        if self._may_poll(gateway, item.gateway) and gateway_id:
            return min(now + timedelta(seconds=self._poll_interval(gateway)), give_up)
        return give_up

    def _may_poll(self, gateway: SmsGateway, name: str | None) -> bool:
        return _polls(gateway) and (name or "") not in self._lookups_refused

    def _poll_interval(self, gateway: SmsGateway) -> float:
        """The gateway's own (the simulator's), else `sms_poll_interval`."""
        own = getattr(gateway, "poll_interval", None)
        return float(own) if isinstance(own, int | float) and own > 0 else self.policy.poll_interval

    # -- account holds ---------------------------------------------------------------------

    def _hold(self, name: str, error: str, now: datetime) -> AccountHold:
        """Hold gateway `name`'s outbox (or push its next probe back): logged once when
        it starts, as an error, naming the account and the gateway's reason."""
        hold = self._holds.get(name)
        if hold is None:
            hold = AccountHold(error, now, 0, now)
            self._holds[name] = hold
            log.error(
                "SMS gateway %s refused a message for the account's sake (%s): its outbox "
                "is held, no message is failed for it; resumes once a submission is accepted",
                name,
                error,
            )
        hold.error = error
        hold.probes += 1
        hold.next_probe = now + self.policy.retry_delay(hold.probes)
        return hold

    def health(self) -> list[dict[str, Any]]:
        """Each gateway's state for /healthz: kind and status (`ok`, `held` with the
        reason and since when, `alert` with the operator's problem), never its name."""
        entries: list[dict[str, Any]] = []
        for name, gateway in self._gateways.items():
            entry: dict[str, Any] = {"gateway": str(getattr(gateway, "kind", "sms"))}
            hold = self._holds.get(name)
            alert = getattr(gateway, "alert", None)
            if hold is not None:
                entry.update(
                    status="held", error=hold.error, since=hold.since.isoformat(timespec="seconds")
                )
            elif alert:
                entry.update(status="alert", error=str(alert))
            else:
                entry["status"] = "ok"
            entries.append(entry)
        return entries

    # -- status reports --------------------------------------------------------------------

    async def _apply(
        self,
        tenant: Tenant,
        response_id: str,
        status: SmsStatus,
        gateway_id: str | None = None,
        *,
        polled: bool = False,
    ) -> bool:
        """Store a status (in the history: every report; a poll only when it differs);
        publish it when it moved the message."""
        change = await self._store.apply_status(
            tenant, response_id, status, gateway_id=gateway_id, repeat_in_history=not polled
        )
        if change.applied and change.message is not None:
            await self._hub.publish(
                tenant, [SmsSendResponse(response_id, change.message.to, status)]
            )
        return change.applied

    async def _resolve(self, tenant: Tenant, report: StatusReport) -> str | None:
        """The responseId of this PBX's message a report is about, or None."""
        rows = await self._store.resolve(tenant, report.idx, report.message_id)
        if report.idx:
            for response_id, gateway_id in rows:
                if response_id != report.idx:
                    continue
                if report.message_id and gateway_id and gateway_id != report.message_id:
                    log.warning(
                        "report on %s names SMS %s with gateway id %s, stored %s: ignored",
                        tenant.name,
                        report.idx,
                        report.message_id,
                        gateway_id,
                    )
                    return None
                return response_id
        if report.message_id:
            for response_id, gateway_id in rows:
                if gateway_id == report.message_id:
                    return response_id
        return None

    async def apply_reports(
        self, tenant: Tenant, reports: Sequence[StatusReport]
    ) -> ReportsOutcome:
        """Reports of a gateway for `tenant`'s messages, applied in order.

        A report naming no message of this PBX (by our idx or the gateway's id) is
        ignored and counted: a PBX's callback URL can never touch another PBX's message.
        """
        applied = unknown = 0
        for report in reports:
            response_id = await self._resolve(tenant, report)
            if response_id is None:
                unknown += 1
                log.warning(
                    "status %s for unknown SMS (idx %s, gateway id %s) on %s ignored",
                    report.status.value,
                    report.idx,
                    report.message_id,
                    tenant.name,
                )
                continue
            if await self._apply(tenant, response_id, report.status, report.message_id):
                applied += 1
        return ReportsOutcome(applied, unknown)

    async def sms_status(self, pbx: str, message_id: str, status: SmsStatus) -> None:
        """A gateway's report naming the message by our idx (the simulator's pushed
        steps); applied once, in order, then published as smsSendResponse."""
        tenant = await self._tenants.get(pbx)
        if tenant is None:
            log.warning("status %s for SMS %s of unknown PBX %s ignored", status, message_id, pbx)
            return
        await self.apply_reports(tenant, [StatusReport(status, idx=message_id)])

    # -- the dispatcher --------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._stopping = asyncio.Event()
            self._task = asyncio.create_task(self._run(self._stopping), name="sms-dispatcher")

    async def stop(self) -> None:
        """Let the current round finish (a status stored is also published), then stop;
        a round stuck past its gateways' timeouts is cancelled (its messages are claimed
        only until their lease runs out, so nothing is lost)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.policy.submit_timeout * 4 + 5)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                handled = await self.dispatch_once()
            except Exception:
                log.exception("SMS dispatcher round failed; trying again")
                handled = 0
            if handled < self.policy.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self.policy.dispatch_interval)

    async def dispatch_once(self) -> int:
        """One round: take the messages that are due and handle them; returns how many."""
        now = datetime.now(UTC)
        items = await self._store.claim_due(now, now + self.policy.lease, self.policy.batch)
        if not items:
            return 0
        tenants: dict[str, Tenant | None] = {}
        for item in items:
            if item.pbx not in tenants:
                tenants[item.pbx] = await self._tenants.get(item.pbx)
        work: list[Awaitable[None]] = []
        polls: dict[str, list[tuple[Tenant, OutboxItem]]] = defaultdict(list)
        for item in items:
            tenant = tenants[item.pbx]
            if tenant is None:
                continue
            gateway = self._gateways.get(item.gateway or "")
            action = self._plan(tenant, gateway, item, now)
            if isinstance(action, str):  # "poll": batched per gateway below
                polls[item.gateway or ""].append((tenant, item))
            elif action is not None:
                work.append(action)
        for name, entries in polls.items():
            work.append(self._poll(name, entries))
        for outcome in await asyncio.gather(*work, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.error("SMS dispatcher task failed", exc_info=outcome)
        return len(items)

    def _plan(
        self, tenant: Tenant, gateway: SmsGateway | None, item: OutboxItem, now: datetime
    ) -> Awaitable[None] | str | None:
        """What a due message needs: a coroutine to run, "poll", or None."""
        age = (now - item.created_at).total_seconds()
        if item.outbox in (Outbox.PENDING, Outbox.UNSURE):
            if age >= self.policy.retry_deadline:
                return self._expire_unsent(tenant, item, now)
            if gateway is None:
                return self._reschedule(item, now + timedelta(seconds=self.policy.retry_max))
            hold = self._holds.get(item.gateway or "")
            if hold is not None:
                if now < hold.next_probe:
                    return self._reschedule(item, hold.next_probe)
                # This message is the probe; the others wait until it is answered.
                hold.next_probe = now + self.policy.lease
            return self._resubmit(tenant, gateway, item)
        if item.status.is_final or item.outbox is Outbox.REFUSED:
            return self._reschedule(item, None)
        if age >= self.policy.report_max_age:
            return self._give_up_unknown(tenant, item)
        if gateway is not None and self._may_poll(gateway, item.gateway) and item.gateway_id:
            return "poll"
        give_up = item.created_at + timedelta(seconds=self.policy.report_max_age)
        return self._reschedule(item, give_up)

    async def _resubmit(self, tenant: Tenant, gateway: SmsGateway, item: OutboxItem) -> None:
        await self._submit(tenant, gateway, item)

    async def _reschedule(self, item: OutboxItem, due_at: datetime | None) -> None:
        await self._store.reschedule(item.pbx_id, item.response_id, due_at)

    async def _expire_unsent(self, tenant: Tenant, item: OutboxItem, now: datetime) -> None:
        """Past the retry deadline. Never with the gateway: FAILED. Maybe with it: stop
        resubmitting and wait for its reports; UNKNOWN after report_max_age."""
        if item.outbox is Outbox.PENDING:
            await self._fail(
                tenant,
                item,
                "not sent: the SMS gateway did not take the message within "
                f"{self.policy.retry_deadline:.0f} s",
            )
            return
        age = (now - item.created_at).total_seconds()
        if age >= self.policy.report_max_age:
            await self._give_up_unknown(tenant, item)
            return
        await self._reschedule(
            item, item.created_at + timedelta(seconds=self.policy.report_max_age)
        )

    async def _give_up_unknown(self, tenant: Tenant, item: OutboxItem) -> None:
        log.warning(
            "SMS %s on %s: no final status after %.0f s, reported UNKNOWN",
            item.response_id,
            item.pbx,
            self.policy.report_max_age,
        )
        await self._apply(tenant, item.response_id, SmsStatus.UNKNOWN)
        await self._reschedule(item, None)

    async def _poll(self, name: str, entries: list[tuple[Tenant, OutboxItem]]) -> None:
        """Ask gateway `name` for the status of its accepted messages."""
        now = datetime.now(UTC)
        gateway = self._gateways.get(name)
        by_id = {item.gateway_id: (tenant, item) for tenant, item in entries if item.gateway_id}
        reports: list[StatusReport] = []
        if gateway is not None:
            try:
                reports = await asyncio.wait_for(
                    gateway.query(list(by_id)), self.policy.submit_timeout * 4 + 1
                )
            except SmsLookupRefused as exc:
                # SMSAPI no longer supports status lookups and may refuse them: stop
                # asking; reports come by callback, else UNKNOWN after report_max_age.
                self._lookups_refused[name] = str(exc)
                log.error(
                    "status lookups refused by SMS gateway %s (%s): not asked again until "
                    "restart; statuses come only by callback, messages without one end "
                    "UNKNOWN after %.0f s",
                    name,
                    exc,
                    self.policy.report_max_age,
                )
            except (SmsGatewayUnavailable, TimeoutError) as exc:
                log.warning("status query of SMS gateway %s failed: %s", name, exc)
        for report in reports:
            found = by_id.get(report.message_id) if report.message_id else None
            if found is None:
                continue
            tenant, item = found
            if report.status.rank <= item.status.rank:
                continue  # a status the message already has or passed: nothing new
            if report.idx and report.idx != item.response_id:
                log.warning(
                    "status query of %s: id %s has idx %s, expected %s; ignored",
                    name,
                    report.message_id,
                    report.idx,
                    item.response_id,
                )
                continue
            await self._apply(
                tenant, item.response_id, report.status, report.message_id, polled=True
            )
        for _tenant, item in entries:
            if gateway is None:
                await self._reschedule(item, now + timedelta(seconds=self.policy.retry_max))
            else:
                await self._reschedule(item, self._next_look(gateway, item.gateway_id, item, now))
