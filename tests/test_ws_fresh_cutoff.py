"""A new client cut off before its first event is told to resume from where it joined."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cloudpbx.domain.events import QueueCalls
from tests.conftest import Tenants, create_tenants
from tests.live import make_settings, running


async def test_cut_off_before_the_first_event_resumes_from_the_join(tmp_path: Path) -> None:
    tenants = Tenants()
    settings = make_settings(tmp_path, ws_buffer_size=4)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        tenant = await server.runtime.tenants.require(tenants.a_name)
        old = await server.runtime.hub.publish(tenant, [QueueCalls("Kolejka1", 1)])
        # Stored (store-first) before the client joins: a client that joins while the
        # event is still pending is rightly told to resume from before it.
        await server.runtime.hub.flush()
        url = f"{server.ws_url}/ws/pbx_{tenants.a_name}?pbxkey={tenants.a_key}"
        async with connect(url, proxy=None) as ws:
            for _ in range(100):  # until the server has subscribed this connection
                if server.runtime.bus.subscriber_count(f"pbx_{tenants.a_name}"):
                    break
                await asyncio.sleep(0.01)
            burst = [QueueCalls(f"Q{n}", n) for n in range(30)]  # one change, 30 messages
            await server.runtime.hub.publish(tenant, burst)
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
        assert closed.value.rcvd.reason.endswith(f"last_event_id={old[-1].id}")
