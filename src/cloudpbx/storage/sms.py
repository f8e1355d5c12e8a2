"""SMS messages sent through /sendSMS, their outbox state and the history of their statuses.

The `sms` row is the outbox: it is written (with the message's CDR row, in one
transaction) before the gateway is called, and says where the message stands with its
gateway (`outbox`) and when the dispatcher looks at it next (`due_at`: resubmit a message
the gateway may not have, poll the status of one it has, or give up). See docs/sms.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.domain.records import CdrRecord, SmsMessage
from cloudpbx.domain.states import SmsStatus
from cloudpbx.storage.calls import cdr_row_values, set_cdr_cost
from cloudpbx.storage.tables import cdr, pbx, sms, sms_status_history
from cloudpbx.storage.tenants import Tenant, utcnow

MAX_ERROR = 255  # sms.last_error is String(255)


class Outbox(StrEnum):
    """Where a message stands with its gateway."""

    PENDING = "pending"  # the gateway does not have it (not yet tried, or refused at the door)
    UNSURE = "unsure"  # the gateway may have it (a submission timed out): resubmit, same idx
    ACCEPTED = "accepted"  # the gateway has it; statuses come by callback or polling
    REFUSED = "refused"  # the gateway refused it for good; its status is FAILED


@dataclass(frozen=True, slots=True)
class StatusChange:
    """The outcome of applying a status report: whether it moved the message forward."""

    applied: bool
    message: SmsMessage | None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A message as the dispatcher sees it (times aware UTC)."""

    pbx_id: int
    pbx: str
    response_id: str
    to: str
    body: str
    test: bool
    parts: int
    status: SmsStatus
    gateway: str | None
    gateway_id: str | None
    outbox: Outbox
    attempts: int
    created_at: datetime


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)


def _naive(moment: datetime | None) -> datetime | None:
    """Naive UTC for the database (aware datetimes in any zone are converted)."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _message(row: Row[Any]) -> SmsMessage:
    """An SmsMessage from a row of the sms table (times are stored as naive UTC)."""
    return SmsMessage(
        response_id=row.response_id,
        to=row.to,
        body=row.body,
        test=bool(row.test),
        status=SmsStatus(row.status),
        parts=row.parts,
        cost=row.cost,
        created_at=_aware(row.created_at),
    )


def _item(row: Any) -> OutboxItem:
    return OutboxItem(
        pbx_id=row.pbx_id,
        pbx=row.pbx_name,
        response_id=row.response_id,
        to=row.to,
        body=row.body,
        test=bool(row.test),
        parts=row.parts,
        status=SmsStatus(row.status),
        gateway=row.gateway,
        gateway_id=row.gateway_id,
        outbox=Outbox(row.outbox),
        attempts=row.attempts,
        created_at=_aware(row.created_at),
    )


_ITEM_COLUMNS = (
    sms.c.id,
    sms.c.pbx_id,
    pbx.c.name.label("pbx_name"),
    sms.c.response_id,
    sms.c.to,
    sms.c.body,
    sms.c.test,
    sms.c.parts,
    sms.c.status,
    sms.c.gateway,
    sms.c.gateway_id,
    sms.c.outbox,
    sms.c.attempts,
    sms.c.created_at,
    sms.c.due_at,
)
_NOT_FINAL = [s.value for s in SmsStatus if not s.is_final]


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    """Messages their gateway does not have yet, by outbox state, and the oldest one's age."""

    by_state: dict[str, int]
    oldest_created: datetime | None


class SmsStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def outbox_depth(self) -> OutboxDepth:
        """One grouped query over the rows the dispatcher still looks at (`due_at` set,
        indexed), so its cost follows the live outbox, not the whole history."""
        waiting = (Outbox.PENDING.value, Outbox.UNSURE.value)
        query = (
            select(sms.c.outbox, func.count(), func.min(sms.c.created_at))
            .where(sms.c.due_at.is_not(None), sms.c.outbox.in_(waiting))
            .group_by(sms.c.outbox)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        by_state = dict.fromkeys(waiting, 0) | {row[0]: int(row[1]) for row in rows}
        oldest = min((row[2] for row in rows), default=None)
        return OutboxDepth(by_state, None if oldest is None else _aware(oldest))

    async def add(
        self,
        tenant: Tenant,
        message: SmsMessage,
        *,
        cdr_record: CdrRecord | None = None,
        gateway: str | None = None,
        outbox: Outbox = Outbox.ACCEPTED,
        due_at: datetime | None = None,
    ) -> None:
        """Store a message (and its CDR row, in the same transaction)."""
        now = utcnow()
        async with self._engine.begin() as conn:
            result = await conn.execute(
                insert(sms).values(
                    pbx_id=tenant.id,
                    response_id=message.response_id,
                    to=message.to,
                    body=message.body,
                    test=message.test,
                    status=message.status.value,
                    parts=message.parts,
                    cost=message.cost,
                    created_at=now,
                    updated_at=now,
                    gateway=gateway,
                    outbox=outbox.value,
                    attempts=0,
                    due_at=_naive(due_at),
                )
            )
            (sms_id,) = result.inserted_primary_key or (0,)
            await conn.execute(
                insert(sms_status_history).values(
                    sms_id=sms_id, status=message.status.value, at=now
                )
            )
            if cdr_record is not None:
                await conn.execute(insert(cdr).values(**cdr_row_values(tenant, cdr_record)))

    async def get(self, tenant: Tenant, response_id: str) -> SmsMessage | None:
        query = select(sms).where(sms.c.pbx_id == tenant.id, sms.c.response_id == response_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _message(row) if row is not None else None

    async def item(self, tenant: Tenant, response_id: str) -> OutboxItem | None:
        query = (
            select(*_ITEM_COLUMNS)
            .join(pbx, pbx.c.id == sms.c.pbx_id)
            .where(sms.c.pbx_id == tenant.id, sms.c.response_id == response_id)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _item(row) if row is not None else None

    async def resolve(
        self, tenant: Tenant, idx: str | None, gateway_id: str | None
    ) -> list[tuple[str, str | None]]:
        """`(response_id, gateway_id)` of this PBX's messages named by our idx or by the
        gateway's id (at most a few rows; the caller decides which one a report means)."""
        conditions = []
        if idx:
            conditions.append(sms.c.response_id == idx)
        if gateway_id:
            conditions.append(sms.c.gateway_id == gateway_id)
        if not conditions:
            return []
        query = (
            select(sms.c.response_id, sms.c.gateway_id)
            .where(sms.c.pbx_id == tenant.id, or_(*conditions))
            .limit(4)
        )
        async with self._engine.connect() as conn:
            return [(r.response_id, r.gateway_id) for r in (await conn.execute(query)).all()]

    async def apply_status(
        self,
        tenant: Tenant,
        response_id: str,
        status: SmsStatus,
        *,
        gateway_id: str | None = None,
        repeat_in_history: bool = True,
    ) -> StatusChange:
        """Record a status report unless it would move the message backwards.

        Reports can arrive twice or out of order; a final status is never replaced and a
        status never goes back to an earlier stage (a late SENT after DELIVERED is kept in
        the history only).

        The rule is checked by the UPDATE itself (`WHERE status IN (earlier stages)`), not
        by comparing a value read before: two reports applied at the same time (DELIVERED
        and a late SENT) cannot both pass a stale check and leave SENT last.

        A gateway's report (one with the gateway's `gateway_id`; our own verdicts have
        none) is proof that the gateway has the message: it fills in the message's id when
        it was not known yet (a submission whose answer was lost), and a message the
        outbox still meant to (re)submit counts as accepted from then on.
        A final status ends the dispatcher's interest (`due_at` NULL).

        Every report goes into the history, duplicates too; a status query repeating the
        current status every poll interval does not (`repeat_in_history=False`).
        """
        now = utcnow()
        earlier = [s.value for s in SmsStatus if not s.is_final and s.rank < status.rank]
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    select(sms.c.id, sms.c.gateway_id, sms.c.outbox, sms.c.status).where(
                        sms.c.pbx_id == tenant.id, sms.c.response_id == response_id
                    )
                )
            ).first()
            if row is None:
                return StatusChange(False, None)
            sms_id = row.id
            if gateway_id and row.outbox in (Outbox.PENDING.value, Outbox.UNSURE.value):
                await conn.execute(
                    update(sms)
                    .where(sms.c.id == sms_id, sms.c.outbox == row.outbox)
                    .values(outbox=Outbox.ACCEPTED.value)
                )
            if gateway_id and row.gateway_id is None:
                await conn.execute(
                    update(sms)
                    .where(sms.c.id == sms_id, sms.c.gateway_id.is_(None))
                    .values(gateway_id=gateway_id)
                )
            applied = False
            if earlier:
                values: dict[str, object] = {"status": status.value, "updated_at": now}
                if status.is_final:
                    values["due_at"] = None
                result = await conn.execute(
                    update(sms)
                    .where(sms.c.id == sms_id, sms.c.status.in_(earlier))
                    .values(**values)
                )
                applied = result.rowcount == 1
            if applied or repeat_in_history or row.status != status.value:
                await conn.execute(
                    insert(sms_status_history).values(sms_id=sms_id, status=status.value, at=now)
                )
            message = (await conn.execute(select(sms).where(sms.c.id == sms_id))).one()
        return StatusChange(applied, _message(message))

    async def record_attempt(
        self,
        pbx_id: int,
        response_id: str,
        *,
        outbox: Outbox,
        due_at: datetime | None,
        attempts: int | None = None,
        last_error: str | None = None,
        gateway_id: str | None = None,
        cost: int | None = None,
        parts: int | None = None,
    ) -> None:
        """What a submission came to: outbox state, next look, and what the gateway said.

        A `cost` replaces the estimate on the message and on its CDR row. A report that
        came in meanwhile wins: a message it showed to be with the gateway is not put back
        to pending/unsure, and a message with a final status gets no next look.
        """
        values: dict[str, object] = {
            "outbox": outbox.value,
            "last_error": last_error[:MAX_ERROR] if last_error else None,
            "updated_at": utcnow(),
        }
        if attempts is not None:
            values["attempts"] = attempts
        if parts is not None:
            values["parts"] = parts
        if cost is not None:
            values["cost"] = cost
        key = [sms.c.pbx_id == pbx_id, sms.c.response_id == response_id]
        where = list(key)
        if outbox in (Outbox.PENDING, Outbox.UNSURE):
            where.append(sms.c.outbox.in_([Outbox.PENDING.value, Outbox.UNSURE.value]))
        async with self._engine.begin() as conn:
            result = await conn.execute(update(sms).where(*where).values(**values))
            if not result.rowcount:
                return
            due_where = list(key)
            if due_at is not None:
                due_where.append(sms.c.status.in_(_NOT_FINAL))
            await conn.execute(update(sms).where(*due_where).values(due_at=_naive(due_at)))
            if gateway_id is not None:
                await conn.execute(
                    update(sms)
                    .where(*key, sms.c.gateway_id.is_(None))
                    .values(gateway_id=gateway_id)
                )
            if cost is not None:
                await set_cdr_cost(conn, pbx_id, response_id, cost)

    async def reschedule(self, pbx_id: int, response_id: str, due_at: datetime | None) -> None:
        """The next look at a message that has no final status yet."""
        async with self._engine.begin() as conn:
            await conn.execute(
                update(sms)
                .where(
                    sms.c.pbx_id == pbx_id,
                    sms.c.response_id == response_id,
                    sms.c.status.in_(_NOT_FINAL),
                )
                .values(due_at=_naive(due_at))
            )

    async def claim_due(self, now: datetime, lease_until: datetime, limit: int) -> list[OutboxItem]:
        """Messages whose `due_at` has come, oldest due first, each claimed until
        `lease_until` (a conditional UPDATE per row: two servers never take one message)."""
        query = (
            select(*_ITEM_COLUMNS)
            .join(pbx, pbx.c.id == sms.c.pbx_id)
            .where(sms.c.due_at <= _naive(now))
            .order_by(sms.c.due_at)
            .limit(limit)
        )
        claimed: list[OutboxItem] = []
        async with self._engine.begin() as conn:
            for row in (await conn.execute(query)).all():
                result = await conn.execute(
                    update(sms)
                    .where(sms.c.id == row.id, sms.c.due_at == row.due_at)
                    .values(due_at=_naive(lease_until))
                )
                if result.rowcount == 1:
                    claimed.append(_item(row))
        return claimed

    async def history(self, tenant: Tenant, response_id: str) -> list[SmsStatus]:
        query = (
            select(sms_status_history.c.status)
            .join(sms, sms.c.id == sms_status_history.c.sms_id)
            .where(sms.c.pbx_id == tenant.id, sms.c.response_id == response_id)
            .order_by(sms_status_history.c.id)
        )
        async with self._engine.connect() as conn:
            return [SmsStatus(s) for s in (await conn.execute(query)).scalars()]

    async def due_now(self, gateway: str, now: datetime) -> int:
        """Make every message gateway `gateway` does not have yet due at `now` (its held
        outbox resumes); returns how many."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(sms)
                .where(
                    sms.c.gateway == gateway,
                    sms.c.outbox.in_([Outbox.PENDING.value, Outbox.UNSURE.value]),
                    sms.c.status.in_(_NOT_FINAL),
                    sms.c.due_at > _naive(now),
                )
                .values(due_at=_naive(now))
            )
        return int(result.rowcount or 0)
