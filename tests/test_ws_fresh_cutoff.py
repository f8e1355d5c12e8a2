"""A new client cut off by its very first burst is told to resume from the end of what it
was sent, never from the start of the history (it had no id of its own)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from cloudpbx.domain.events import QueueCalls
from tests.conftest import Tenants, create_tenants
from tests.live import make_settings, running


async def test_cut_off_by_the_first_burst_resumes_after_it_not_from_zero(tmp_path: Path) -> None:
    tenants = Tenants()
    settings = make_settings(tmp_path, ws_buffer_size=4)  # 4 KiB of unsent data
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        tenant = await server.runtime.tenants.require(tenants.a_name)
        old = await server.runtime.hub.publish(tenant, [QueueCalls("Kolejka1", 1)])
        # Stored (store-first) before the client joins: a client that joins while the
        # event is still pending is rightly told to resume from before it.
        await server.runtime.hub.flush()
        url = f"{server.ws_url}/ws/pbx_{tenants.a_name}?pbxkey={tenants.a_key}"
        async with connect(url, proxy=None, max_size=None) as ws:
            for _ in range(100):  # until the server has subscribed this connection
                if server.runtime.bus.subscriber_count(f"pbx_{tenants.a_name}"):
                    break
                await asyncio.sleep(0.01)
            # One change, 30 messages of ~400 kB that the client does not read yet: more
            # than the socket buffers of loopback hold, so the write buffer passes 4 KiB.
            burst = [QueueCalls(f"Q{n}-" + "x" * 400_000, n) for n in range(30)]
            sent = await server.runtime.hub.publish(tenant, burst)
            await server.runtime.hub.flush()
            assert server.runtime.bus.subscriber_count(f"pbx_{tenants.a_name}") == 0
            got: list[int] = []
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        got.append(int((await ws.recv())[6:].split(",", 1)[0]))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
        # Everything handed to the socket arrives before the close, which names its end.
        assert got == [m.id for m in sent]
        assert got[0] == old[-1].id + 1
        assert closed.value.rcvd.reason.endswith(f"last_event_id={got[-1]}")
