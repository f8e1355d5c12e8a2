"""SMS messages sent through /sendSMS and the history of their statuses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

from sqlalchemy import insert, select, update
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


def _message(row: object) -> SmsMessage:
    r = row  # a Row of the sms table
    return SmsMessage(
        response_id=r.response_id,  # type: ignore[attr-defined]
        to=r.to,  # type: ignore[attr-defined]
        body=r.body,  # type: ignore[attr-defined]
        test=bool(r.test),  # type: ignore[attr-defined]
        status=SmsStatus(r.status),  # type: ignore[attr-defined]
        parts=r.parts,  # type: ignore[attr-defined]
        cost=r.cost,  # type: ignore[attr-defined]
        created_at=r.created_at.replace(tzinfo=UTC),  # type: ignore[attr-defined]
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
        """
        now = utcnow()
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    select(sms).where(sms.c.pbx_id == tenant.id, sms.c.response_id == response_id)
                )
            ).first()
            if row is None:
                return StatusChange(False, None)
            current = SmsStatus(row.status)
            await conn.execute(
                insert(sms_status_history).values(sms_id=row.id, status=status.value, at=now)
            )
            if current.is_final or status == current or status.rank < current.rank:
                return StatusChange(False, _message(row))
            await conn.execute(
                update(sms).where(sms.c.id == row.id).values(status=status.value, updated_at=now)
            )
            updated = (await conn.execute(select(sms).where(sms.c.id == row.id))).first()
        return StatusChange(True, _message(updated))

    async def history(self, tenant: Tenant, response_id: str) -> list[SmsStatus]:
        query = (
            select(sms_status_history.c.status)
            .join(sms, sms.c.id == sms_status_history.c.sms_id)
            .where(sms.c.pbx_id == tenant.id, sms.c.response_id == response_id)
            .order_by(sms_status_history.c.id)
        )
        async with self._engine.connect() as conn:
            return [SmsStatus(s) for s in (await conn.execute(query)).scalars()]
