"""MemoryBus: one encoding per message whatever the number of subscribers, one pass,
channels isolated, sinks that leave mid-pass, close."""

from __future__ import annotations

from cloudpbx.api.wsframe import text_frame
from cloudpbx.bus.memory import MemoryBus
from cloudpbx.ports.bus import FramedBatch, WireMessage
from tests.recording_sink import RecordingSink, record


def msg(i: int) -> WireMessage:
    return WireMessage(i, f'{{"id":{i}}}')


def test_a_batch_is_framed_once_and_the_same_bytes_reach_every_subscriber() -> None:
    bus = MemoryBus(frame=text_frame)
    sinks = [record(bus, "pbx_A") for _ in range(500)]
    other = record(bus, "pbx_B")
    bus.publish_batch("pbx_A", [msg(1), msg(2), msg(3)])
    assert bus.framed == 3  # not 3 x 500
    [first] = sinks[0].batches
    assert all(sink.batches[0] is first for sink in sinks)  # one object, shared
    assert first.joined == b"".join(text_frame(m.data) for m in (msg(1), msg(2), msg(3)))
    assert (first.first_id, first.last_id) == (1, 3)
    assert other.batches == []
    assert bus.subscriber_count("pbx_A") == 500
    assert bus.channels() == frozenset({"pbx_A", "pbx_B"})


def test_a_channel_nobody_follows_costs_no_framing() -> None:
    bus = MemoryBus(frame=text_frame)
    bus.publish_batch("pbx_A", [msg(1)])
    assert bus.framed == 0


def test_a_single_message_batch_is_its_frame() -> None:
    bus = MemoryBus(frame=text_frame)
    sink = record(bus, "pbx_A")
    bus.publish_batch("pbx_A", [msg(9)])
    [batch] = sink.batches
    assert batch.joined is batch.frames[0]
    assert batch.joined == b"\x81\x08" + b'{"id":9}'


class Quitter(RecordingSink):
    """Unsubscribes itself (as a too slow connection does) while the bus goes round."""

    def __init__(self, bus: MemoryBus) -> None:
        super().__init__()
        self.bus = bus

    def deliver(self, batch: FramedBatch) -> None:
        super().deliver(batch)
        self.bus.unsubscribe("pbx_A", self)


def test_a_sink_leaving_during_the_pass_is_safe_and_the_others_get_everything() -> None:
    bus = MemoryBus(frame=text_frame)
    before = record(bus, "pbx_A")
    quitter = Quitter(bus)
    bus.subscribe("pbx_A", quitter)
    after = record(bus, "pbx_A")
    bus.publish_batch("pbx_A", [msg(1)])
    bus.publish_batch("pbx_A", [msg(2)])
    assert [m.id for m in quitter.drain()] == [1]
    assert [m.id for m in before.drain()] == [1, 2]
    assert [m.id for m in after.drain()] == [1, 2]
    assert bus.subscriber_count("pbx_A") == 2


def test_unsubscribing_the_last_sink_forgets_the_channel() -> None:
    bus = MemoryBus(frame=text_frame)
    sink = record(bus, "pbx_A")
    bus.unsubscribe("pbx_A", sink)
    bus.unsubscribe("pbx_A", sink)  # twice is harmless
    assert bus.channels() == frozenset()
    assert bus.subscriber_count("pbx_A") == 0


async def test_bus_close_tells_every_sink_and_forgets_them() -> None:
    bus = MemoryBus(frame=text_frame)
    sinks = [record(bus, f"pbx_{n}") for n in "ABC"]
    await bus.close()
    assert all(sink.closed for sink in sinks)
    assert bus.channels() == frozenset()
    bus.publish_batch("pbx_A", [msg(1)])
    assert sinks[0].batches == []


def test_cut_off_tells_every_subscriber_of_that_channel_only() -> None:
    bus = MemoryBus(frame=text_frame)
    mine = [record(bus, "pbx_A") for _ in range(3)]
    other = record(bus, "pbx_B")
    bus.cut_off("pbx_A")
    bus.cut_off("pbx_C")  # nobody there: nothing to tell
    assert [sink.missed_count for sink in mine] == [1, 1, 1]
    assert other.missed_count == 0
