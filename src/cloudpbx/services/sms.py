"""Sending SMS (`/sendSMS`) and following their status to the WebSocket.

The message is stored before the gateway is called (an outbox), so a crash between the
two never forgets it; its `responseId` becomes the `uniqueid` of its CDR row.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudpbx.domain.errors import Forbidden
from cloudpbx.domain.events import SmsSendResponse
from cloudpbx.domain.records import CdrRecord, SmsMessage
from cloudpbx.domain.sms import count_parts
from cloudpbx.domain.states import Disposition, SmsStatus
from cloudpbx.ports.sms import OutgoingSms, SmsGateway
from cloudpbx.services.events import EventHub
from cloudpbx.storage.calls import CallStore
from cloudpbx.storage.sms import SmsStore
from cloudpbx.storage.tenants import Tenant, TenantStore

log = logging.getLogger(__name__)

SMS_LASTAPP = "SMS"
SMS_ZONE = "SMS"


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


def new_response_id() -> str:
    """A 19-digit message id, like the provider's (`3421756012963258480`)."""
    return str(10**18 + secrets.randbelow(9 * 10**18))


class SmsService:
    """Implements SmsStatusSink for the gateways; used by the API for sending."""

    def __init__(
        self,
        tenants: TenantStore,
        store: SmsStore,
        calls: CallStore,
        hub: EventHub,
        gateways: dict[str, SmsGateway],
        price_per_part: int,
    ) -> None:
        self._tenants = tenants
        self._store = store
        self._calls = calls
        self._hub = hub
        self._gateways = gateways
        self._price_per_part = price_per_part

    def gateway_for(self, tenant: Tenant) -> SmsGateway:
        gateway = self._gateways.get(tenant.sms_gateway or "")
        if gateway is None:
            raise Forbidden(
                f"PBX {tenant.name} has no SMS gateway; sendSMS is not available",
                code="sms_not_enabled",
            )
        return gateway

    async def send(self, tenant: Tenant, to: str, body: str, test: bool) -> SendOutcome:
        """Store, bill and submit one message. `to` is already international."""
        gateway = self.gateway_for(tenant)
        response_id = new_response_id()
        parts = count_parts(body)
        cost = 0 if test else parts * self._price_per_part
        now = datetime.now(UTC)
        await self._store.add(
            tenant,
            SmsMessage(response_id, to, body, test, SmsStatus.QUEUE, parts, cost, now),
        )
        await self._calls.add_cdrs(
            tenant,
            [
                CdrRecord(
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
                )
            ],
        )
        result = await gateway.submit(OutgoingSms(tenant.name, response_id, to, body, test, parts))
        if result.error is not None:
            log.warning(
                "SMS %s on %s refused by gateway: %s", response_id, tenant.name, result.error
            )
            await self._store.apply_status(tenant, response_id, SmsStatus.FAILED)
            return SendOutcome(response_id, SmsStatus.FAILED, result.error)
        return SendOutcome(response_id, SmsStatus.QUEUE, None)

    async def sms_status(self, pbx: str, message_id: str, status: SmsStatus) -> None:
        """A gateway's report; applied once, in order, then published as smsSendResponse."""
        tenant = await self._tenants.get(pbx)
        if tenant is None:
            log.warning("status %s for SMS %s of unknown PBX %s ignored", status, message_id, pbx)
            return
        change = await self._store.apply_status(tenant, message_id, status)
        if change.applied and change.message is not None:
            await self._hub.publish(
                tenant, [SmsSendResponse(message_id, change.message.to, status)]
            )
