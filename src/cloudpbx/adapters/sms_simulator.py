"""A simulated SMS gateway: answers like SMSAPI and walks messages through real statuses.

QUEUE → ACCEPTED → SENT → DELIVERED for most numbers. Numbers ending in `000` end
UNDELIVERED, in `999` REJECTED, in `555` EXPIRED, so integrators can test failure handling.
Test messages walk the same path (nothing reaches a phone, nothing is charged).

Durable like a real gateway: the message id it answers (`sim-<ms since epoch>-<final
status>-<idx>`) says when it took the message and how its path ends, so its status at
any moment follows from the id and the clock alone. Statuses are pushed to the sink as
they come due (one step every `step_delay`) and can also be looked up (`query`, which
the outbox dispatcher calls for accepted messages): a message whose steps were lost with
the process (SIGTERM, kill -9) gets them at the dispatcher's next look after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence

from cloudpbx.domain.states import SmsStatus
from cloudpbx.ports.sms import OutgoingSms, SmsStatusSink, StatusReport, SubmitResult

_FAILURES = {"000": SmsStatus.UNDELIVERED, "999": SmsStatus.REJECTED, "555": SmsStatus.EXPIRED}
_ID = re.compile(r"sim-([0-9]{1,15})-([A-Z_]{1,16})-([0-9]{1,40})")
# The dispatcher looks a message up no more often than this, whatever the step delay.
MIN_POLL_INTERVAL = 1.0


class SimulatedSmsGateway:
    kind = "simulator"
    # Statuses follow from the message id: they can always be looked up.
    polls = True

    def __init__(self, step_delay: float = 1.0) -> None:
        self._step_delay = step_delay
        self._sink: SmsStatusSink | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def poll_interval(self) -> float:
        """How often the dispatcher looks an accepted message up: once its whole path is
        due, so a running server (which pushes each step) is asked about it once."""
        return max(4 * self._step_delay, MIN_POLL_INTERVAL)

    async def start(self, sink: SmsStatusSink) -> None:
        self._sink = sink

    async def stop(self) -> None:
        # A copy: the tasks' done callbacks discard themselves from the set while we wait.
        tasks = list(self._tasks)
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sink = None

    async def submit(self, message: OutgoingSms) -> SubmitResult:
        final = self.final_status(message.to)
        message_id = f"sim-{int(time.time() * 1000)}-{final.value}-{message.idx}"
        task = asyncio.create_task(self._deliver(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return SubmitResult(message_id=message_id, status=SmsStatus.QUEUE, points=0.0)

    async def query(self, message_ids: Sequence[str]) -> list[StatusReport]:
        """Every step of each message that is due by now, in order."""
        reports: list[StatusReport] = []
        now = time.time()
        for message_id in message_ids:
            match = _ID.fullmatch(message_id)
            if match is None:
                continue
            try:
                final = SmsStatus(match.group(2))
            except ValueError:
                continue
            elapsed = now - int(match.group(1)) / 1000
            path = [SmsStatus.ACCEPTED, SmsStatus.SENT, final]
            due = len(path) if self._step_delay <= 0 else int(elapsed / self._step_delay)
            reports.extend(
                StatusReport(status, idx=match.group(3), message_id=message_id)
                for status in path[: max(0, due)]
            )
        return reports

    @staticmethod
    def final_status(to: str) -> SmsStatus:
        return _FAILURES.get(to[-3:], SmsStatus.DELIVERED)

    async def _deliver(self, message: OutgoingSms) -> None:
        path = [SmsStatus.ACCEPTED, SmsStatus.SENT, self.final_status(message.to)]
        for status in path:
            await asyncio.sleep(self._step_delay)
            sink = self._sink
            if sink is None:
                return
            await sink.sms_status(message.pbx, message.idx, status)
