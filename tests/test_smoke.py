from __future__ import annotations

from datetime import UTC, datetime

from cloudpbx.domain.records import CdrRecord
from cloudpbx.domain.states import Disposition


async def test_cdr_roundtrip(live) -> None:
    server, tenants = live
    tenant = await server.runtime.tenants.require(tenants.a_name)
    await server.runtime.calls.add_cdrs(
        tenant,
        [
            CdrRecord(
                started_at=datetime.now(UTC),
                clid='"A" <101>',
                src="101",
                dst="102",
                channel="SIP/MojaCentrala-101-00000001",
                dstchannel="SIP/MojaCentrala-102-00000002",
                lastapp="Dial",
                duration=10,
                billsec=5,
                disposition=Disposition.ANSWERED,
                uniqueid="1764312345.1",
            )
        ],
    )
    async with server.client(tenants.a_key) as client:
        response = await client.get("/cdr")
    assert response.status_code == 200, response.text
    rows = response.json()
    assert rows[0]["uniqueid"] == "1764312345.1"
    assert rows[0]["duration"] == 10 and rows[0]["cost"] == ""
    assert response.headers["x-total-count"] == "1"
