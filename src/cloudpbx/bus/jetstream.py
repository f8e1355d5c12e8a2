"""The event engine on NATS JetStream: one stream, one subject per PBX.

- Ids are the stream's sequence numbers: JetStream assigns them as it stores, one writer
  per stream, so concurrent publishers in many processes get strictly increasing ids in
  one order, never reused (a purge keeps the sequence). At start the sequence is moved
  above every id the database already holds (`purge` with a sequence), so switching from
  the single-process hub keeps ids increasing.
- Durable: file storage; the ack comes after the message is written, so a client only ever
  gets stored messages (store-first). `Nats-Msg-Id` makes a retried publish a no-op within
  the duplicate window, so a timeout never turns into a second copy.
- Bounded: `max_msgs_per_subject` keeps the newest `history` messages of each PBX.
- Followers are ordered push consumers from a given sequence. After a reconnection (the
  engine restarted, or the link stalled and pings failed) each starts again after the last
  id it handed over, so nothing is skipped or repeated.
- A follower further behind than the history finds messages gone. Ids are the stream's
  sequence (shared by every PBX), so a jump between two ids says nothing; but messages
  are only dropped from a full subject, oldest first: when the next message handed over
  after id L is the oldest the subject holds (`num_pending` + 1 ≥ history), messages of
  the PBX after L may have been dropped, and the owner's `fill_gap` runs first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, PubAck, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from cloudpbx.ports.engine import EngineMessage, EngineNotAnswering, EngineRange, Outgoing

log = logging.getLogger(__name__)

PING_INTERVAL = 2.0
"""Seconds between client pings: a stalled link is found (and reconnected) in ~3 pings."""
HEARTBEAT = 2.0
"""Idle heartbeat of followers: a silently lost consumer is recreated after two misses."""
RESTART_PAUSE = 0.5
START_PATIENCE = 5
"""How many `timeout`s the first connection may take before the server gives up."""


NOT_ANSWERING: tuple[type[Exception], ...] = (
    asyncio.TimeoutError,  # nats.errors.TimeoutError too
    ConnectionError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.js.errors.ServiceUnavailableError,
)
"""What a stopped, stalled or reconnecting engine (or link) raises: `EngineNotAnswering`."""


class EngineUnavailable(RuntimeError):
    """The engine cannot be reached or has no JetStream: the server does not start."""


@contextlib.contextmanager
def _answering(what: str) -> Iterator[None]:
    try:
        yield
    except NOT_ANSWERING as exc:
        raise EngineNotAnswering(f"event engine did not answer ({what}): {exc!r}") from None


class JetStreamFollower:
    """One PBX's live feed: an ordered consumer, restarted after the last id delivered."""

    def __init__(
        self,
        engine: JetStreamEngine,
        pbx_id: int,
        after_id: int,
        deliver: Callable[[list[EngineMessage]], None],
        fill_gap: Callable[[int, int], Awaitable[None]],
    ) -> None:
        self._engine = engine
        self._pbx_id = pbx_id
        self._deliver = deliver
        self._fill_gap = fill_gap
        self._in_order = asyncio.Lock()
        """Held while a gap is filled: a restarted subscription's callback waits for it."""
        self._last_id = after_id
        self._batch: list[EngineMessage] = []
        self._subscription: Subscription | None = None
        self._restart: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def last_id(self) -> int:
        return self._last_id

    async def subscribe(self) -> None:
        old, self._subscription = self._subscription, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.unsubscribe()
        if self._stopped:
            return
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self._last_id + 1
        )
        self._subscription = await self._engine.js.subscribe(
            self._engine.subject(self._pbx_id),
            cb=self._on_message,
            ordered_consumer=True,
            idle_heartbeat=HEARTBEAT,
            config=config,
        )

    def restart(self) -> None:
        """Subscribe again after the last id delivered, retrying until it works."""
        if self._stopped or (self._restart is not None and not self._restart.done()):
            return
        self._restart = asyncio.create_task(self._restart_loop(), name="engine-follow")

    async def _restart_loop(self) -> None:
        while not self._stopped:
            try:
                await self.subscribe()
                return
            except Exception as exc:
                log.warning("event engine: follower of PBX %d: %r", self._pbx_id, exc)
                await asyncio.sleep(RESTART_PAUSE)

    async def _on_message(self, msg: Msg) -> None:
        async with self._in_order:
            metadata = msg.metadata
            sequence = metadata.sequence.stream
            if sequence <= self._last_id or self._stopped:
                return  # a consumer restarted a little early: already delivered
            if sequence > self._last_id + 1 and metadata.num_pending + 1 >= self._engine.history:
                # The oldest message the PBX's subject holds: some after _last_id may be gone.
                self._hand_over()  # what came before it first
                await self._fill_gap(self._last_id, sequence)
                if sequence <= self._last_id or self._stopped:
                    return
            self._take(sequence, msg.data)

    def _take(self, sequence: int, data: bytes) -> None:
        self._last_id = sequence
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._hand_over)
        self._batch.append(EngineMessage(sequence, data))

    def _hand_over(self) -> None:
        batch, self._batch = self._batch, []
        if batch and not self._stopped:
            self._deliver(batch)

    def stop(self) -> None:
        self._stopped = True
        self._engine.forget(self)
        if self._restart is not None:
            self._restart.cancel()
        if self._subscription is not None:
            subscription, self._subscription = self._subscription, None
            task = asyncio.get_running_loop().create_task(subscription.unsubscribe())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())


class JetStreamEngine:
    """EventEngine on one JetStream stream (`stream`), subjects `{stream}.pbx.{pbx_id}`."""

    def __init__(self, url: str, stream: str, history: int, timeout: float) -> None:
        self._url = url
        self._stream = stream
        self._history = history
        self._timeout = timeout
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._followers: set[JetStreamFollower] = set()
        self._problem = "not started"
        self._closing = False

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("the event engine is not started")
        return self._js

    @property
    def history(self) -> int:
        """Messages kept per PBX."""
        return self._history

    def subject(self, pbx_id: int) -> str:
        return f"{self._stream}.pbx.{pbx_id}"

    async def start(self, id_floor: int) -> None:
        try:
            # Bounded: with reconnection on (forever, for later outages) nats-py would
            # retry a first connection that never works forever too.
            await asyncio.wait_for(self._connect(), START_PATIENCE * self._timeout)
        except Exception as exc:
            where = self._url.rsplit("@", 1)[-1]  # never the credentials
            raise EngineUnavailable(f"event engine: cannot use {where}: {exc!r}") from None
        await self._ensure_stream(id_floor)
        self._problem = ""

    async def _connect(self) -> None:
        self._nc = await nats.connect(
            self._url,
            name="cloudpbx",
            ping_interval=PING_INTERVAL,
            max_outstanding_pings=2,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RESTART_PAUSE,
            connect_timeout=self._timeout,
            disconnected_cb=self._on_disconnect,
            reconnected_cb=self._on_reconnect,
            error_cb=self._on_error,
        )
        self._js = self._nc.jetstream(timeout=self._timeout)
        await self._js.account_info()  # JetStream is on (a plain nats-server says no)

    async def _ensure_stream(self, id_floor: int) -> None:
        js = self.js
        config = StreamConfig(
            name=self._stream,
            subjects=[f"{self._stream}.pbx.*"],
            storage=StorageType.FILE,
            max_msgs_per_subject=self._history,
        )
        try:
            info = await js.stream_info(self._stream)
        except NotFoundError:
            info = await js.add_stream(config)
        else:
            if info.config.max_msgs_per_subject != self._history:
                info = await js.update_stream(config)
        last = info.state.last_seq
        if last < id_floor:
            # Empty, or older than what the database holds (ids handed out by the
            # single-process hub since): start above it. Messages dropped here are archived.
            log.info("event engine: stream %s continues after id %d", self._stream, id_floor)
            await js.purge_stream(self._stream, seq=id_floor + 1)

    async def _on_disconnect(self) -> None:
        if self._closing:
            return
        self._problem = "disconnected"
        log.warning("event engine: disconnected, reconnecting")

    async def _on_reconnect(self) -> None:
        self._problem = ""
        log.info("event engine: reconnected; %d followers resume", len(self._followers))
        for follower in list(self._followers):
            follower.restart()

    async def _on_error(self, exc: Exception) -> None:
        log.warning("event engine: %r", exc)

    async def append(self, batch: Sequence[Outgoing]) -> list[int | None]:
        """Publish in order without waiting in between; each ack names its id."""
        js = self.js
        futures: list[asyncio.Future[PubAck]] = []
        for item in batch:
            try:
                future = await js.publish_async(
                    self.subject(item.pbx_id),
                    item.text,
                    wait_stall=self._timeout,
                    headers={"Nats-Msg-Id": item.key},
                )
            except Exception as exc:
                log.warning("event engine: publishing failed: %r", exc)
                break
            futures.append(future)
        if futures:
            await asyncio.wait(futures, timeout=self._timeout)
        ids: list[int | None] = []
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is None:
                ids.append(int(future.result().seq))
            else:
                future.cancel()
                ids.append(None)
        return ids + [None] * (len(batch) - len(ids))

    async def newest(self) -> int:
        with _answering("stream info"):
            info = await self.js.stream_info(self._stream)
        return int(info.state.last_seq)

    async def newest_of(self, pbx_id: int) -> int:
        try:
            with _answering("last message"):
                last = await self.js.get_last_msg(self._stream, self.subject(pbx_id))
        except NotFoundError:
            return 0
        return int(last.seq or 0)

    async def read_after(self, pbx_id: int, after_id: int) -> EngineRange:
        """Reads up to the PBX's newest id as of the call, through a short-lived consumer."""
        with _answering("history"):
            return await self._read_after(pbx_id, after_id)

    async def _read_after(self, pbx_id: int, after_id: int) -> EngineRange:
        newest = await self.newest_of(pbx_id)
        if newest <= after_id:
            return EngineRange([], newest)
        messages: list[EngineMessage] = []
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_id + 1
        )
        subscription = await self.js.subscribe(
            self.subject(pbx_id), ordered_consumer=True, config=config
        )
        try:
            while True:
                msg = await subscription.next_msg(timeout=self._timeout)
                sequence = msg.metadata.sequence.stream
                if sequence > after_id:
                    messages.append(EngineMessage(sequence, msg.data))
                if sequence >= newest or msg.metadata.num_pending == 0:
                    break
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        return EngineRange(messages, newest)

    async def follow(
        self,
        pbx_id: int,
        after_id: int,
        deliver: Callable[[list[EngineMessage]], None],
        fill_gap: Callable[[int, int], Awaitable[None]],
    ) -> JetStreamFollower:
        follower = JetStreamFollower(self, pbx_id, after_id, deliver, fill_gap)
        with _answering("subscribe"):
            await follower.subscribe()
        self._followers.add(follower)
        return follower

    def forget(self, follower: JetStreamFollower) -> None:
        self._followers.discard(follower)

    def health(self) -> str:
        if self._nc is None:
            return "error: not started"
        if self._problem or not self._nc.is_connected:
            return f"error: {self._problem or 'disconnected'}"
        return "ok"

    async def close(self) -> None:
        self._closing = True
        for follower in list(self._followers):
            follower.stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None
            self._js = None
