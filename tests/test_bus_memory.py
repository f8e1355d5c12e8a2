"""MemoryBus: fan-out without waiting, bounded buffers, overflow, close."""

from __future__ import annotations

import asyncio

import pytest

from cloudpbx.bus.memory import MemoryBus
from cloudpbx.ports.bus import SubscriberOverflow, WireMessage


def msg(i: int) -> WireMessage:
    return WireMessage(i, f'{{"id":{i}}}')


async def test_publish_reaches_every_subscriber_of_the_channel_only() -> None:
    bus = MemoryBus()
    first = bus.subscribe("pbx_A", 10)
    second = bus.subscribe("pbx_A", 10)
    other = bus.subscribe("pbx_B", 10)
    await bus.publish("pbx_A", msg(1))
    await bus.publish("pbx_A", msg(2))
    assert await asyncio.wait_for(first.next_batch(), 1) == [msg(1), msg(2)]
    assert await asyncio.wait_for(second.next_batch(), 1) == [msg(1), msg(2)]
    assert other.drain() == []
    assert bus.subscriber_count("pbx_A") == 2
    await bus.close()


async def test_next_batch_waits_and_is_woken_by_a_publish() -> None:
    bus = MemoryBus()
    sub = bus.subscribe("pbx_A", 10)
    waiter = asyncio.create_task(sub.next_batch())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    bus.publish_nowait("pbx_A", msg(7))
    assert await asyncio.wait_for(waiter, 1) == [msg(7)]
    sub.close()


async def test_publishing_never_blocks_on_a_subscriber_that_does_not_read() -> None:
    bus = MemoryBus()
    stuck = bus.subscribe("pbx_A", 5)
    reader = bus.subscribe("pbx_A", 100_000)

    async def publish_many() -> None:
        for i in range(1, 50_001):
            await bus.publish("pbx_A", msg(i))

    await asyncio.wait_for(publish_many(), 5)
    assert len(reader.drain()) == 50_000
    assert stuck.overflowed
    await bus.close()


async def test_overflow_delivers_what_was_buffered_then_raises() -> None:
    bus = MemoryBus()
    sub = bus.subscribe("pbx_A", 3)
    for i in range(1, 4):
        bus.publish_nowait("pbx_A", msg(i))
    assert not sub.overflowed
    bus.publish_nowait("pbx_A", msg(4))  # the fourth does not fit: overflow
    assert sub.overflowed
    # An overflowed subscriber is detached: later messages are not even looked at.
    assert bus.subscriber_count("pbx_A") == 0
    bus.publish_nowait("pbx_A", msg(5))
    assert await sub.next_batch() == [msg(1), msg(2), msg(3)]
    with pytest.raises(SubscriberOverflow) as info:
        await sub.next_batch()
    assert info.value.last_delivered_id == 3


async def test_overflow_wakes_a_waiting_consumer() -> None:
    bus = MemoryBus()
    sub = bus.subscribe("pbx_A", 1)
    sub.push(msg(1))
    assert sub.drain() == [msg(1)]
    waiter = asyncio.create_task(sub.next_batch())
    await asyncio.sleep(0)
    # Two pushes while the consumer has not run yet: the second overflows.
    sub.push(msg(2))
    sub.push(msg(3))
    assert await asyncio.wait_for(waiter, 1) == [msg(2)]
    with pytest.raises(SubscriberOverflow):
        await asyncio.wait_for(sub.next_batch(), 1)


async def test_close_ends_iteration_and_detaches() -> None:
    bus = MemoryBus()
    sub = bus.subscribe("pbx_A", 10)
    received: list[int] = []

    async def consume() -> None:
        async for message in sub:
            received.append(message.id)

    consumer = asyncio.create_task(consume())
    bus.publish_nowait("pbx_A", msg(1))
    bus.publish_nowait("pbx_A", msg(2))
    await asyncio.sleep(0.01)
    sub.close()
    await asyncio.wait_for(consumer, 1)
    assert received == [1, 2]
    assert bus.subscriber_count("pbx_A") == 0
    bus.publish_nowait("pbx_A", msg(3))  # nobody left: nothing happens
    assert sub.drain() == []
    sub.close()  # closing twice is harmless


async def test_bus_close_closes_every_subscription() -> None:
    bus = MemoryBus()
    subs = [bus.subscribe(f"pbx_{n}", 10) for n in "ABC"]
    waiters = [asyncio.create_task(s.next_batch()) for s in subs]
    await asyncio.sleep(0)
    await bus.close()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [[], [], []]
    assert all(bus.subscriber_count(f"pbx_{n}") == 0 for n in "ABC")


async def test_a_subscriber_closed_while_publishing_is_skipped_safely() -> None:
    bus = MemoryBus()
    first = bus.subscribe("pbx_A", 1)
    second = bus.subscribe("pbx_A", 10)
    bus.publish_nowait("pbx_A", msg(1))
    bus.publish_nowait("pbx_A", msg(2))  # `first` overflows and detaches mid-iteration
    first.close()
    bus.publish_nowait("pbx_A", msg(3))
    assert [m.id for m in second.drain()] == [1, 2, 3]
