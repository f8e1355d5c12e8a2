"""SMS messages sent through /sendSMS and the history of their statuses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from typing import Any

from sqlalchemy import Row, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.domain.records import SmsMessage
from cloudpbx.domain.states import SmsStatus
from cloudpbx.storage.tables import sms, sms_status_history
from cloudpbx.storage.tenants import Tenant, utcnow


@dataclass(frozen=True, slots=True)
class StatusChange:
    """The outcome of applying a status report: whether it moved the message forward."""

    applied: bool
    message: SmsMessage | None


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
        created_at=row.created_at.replace(tzinfo=UTC),
    )


class SmsStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(self, tenant: Tenant, message: SmsMessage) -> None:
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
                )
            )
            (sms_id,) = result.inserted_primary_key or (0,)
            await conn.execute(
                insert(sms_status_history).values(
                    sms_id=sms_id, status=message.status.value, at=now
                )
            )

    async def get(self, tenant: Tenant, response_id: str) -> SmsMessage | None:
        query = select(sms).where(sms.c.pbx_id == tenant.id, sms.c.response_id == response_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _message(row) if row is not None else None

    async def apply_status(
        self, tenant: Tenant, response_id: str, status: SmsStatus
    ) -> StatusChange:
        """Record a status report unless it would move the message backwards.

        Reports can arrive twice or out of order; a final status is never replaced and a
        status never goes back to an earlier stage (a late SENT after DELIVERED is kept in
        the history only).

        The rule is checked by the UPDATE itself (`WHERE status IN (earlier stages)`), not
        by comparing a value read before: two reports applied at the same time (DELIVERED
        and a late SENT) cannot both pass a stale check and leave SENT last.
        """
        now = utcnow()
        earlier = [s.value for s in SmsStatus if not s.is_final and s.rank < status.rank]
        async with self._engine.begin() as conn:
            sms_id = (
                await conn.execute(
                    select(sms.c.id).where(
                        sms.c.pbx_id == tenant.id, sms.c.response_id == response_id
                    )
                )
            ).scalar_one_or_none()
            if sms_id is None:
                return StatusChange(False, None)
            applied = False
            if earlier:
                result = await conn.execute(
                    update(sms)
                    .where(sms.c.id == sms_id, sms.c.status.in_(earlier))
                    .values(status=status.value, updated_at=now)
                )
                applied = result.rowcount == 1
            await conn.execute(
                insert(sms_status_history).values(sms_id=sms_id, status=status.value, at=now)
            )
            row = (await conn.execute(select(sms).where(sms.c.id == sms_id))).one()
        return StatusChange(applied, _message(row))

    async def history(self, tenant: Tenant, response_id: str) -> list[SmsStatus]:
        query = (
            select(sms_status_history.c.status)
            .join(sms, sms.c.id == sms_status_history.c.sms_id)
            .where(sms.c.pbx_id == tenant.id, sms.c.response_id == response_id)
            .order_by(sms_status_history.c.id)
        )
        async with self._engine.connect() as conn:
            return [SmsStatus(s) for s in (await conn.execute(query)).scalars()]
