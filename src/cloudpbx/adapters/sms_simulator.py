"""A simulated SMS gateway: answers like SMSAPI and walks messages through real statuses.

QUEUE → ACCEPTED → SENT → DELIVERED for most numbers. Numbers ending in `000` end
UNDELIVERED, in `999` REJECTED, in `555` EXPIRED, so integrators can test failure handling.
Test messages walk the same path (nothing reaches a phone, nothing is charged).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from cloudpbx.domain.states import SmsStatus
from cloudpbx.ports.sms import OutgoingSms, SmsStatusSink, StatusReport, SubmitResult

_FAILURES = {"000": SmsStatus.UNDELIVERED, "999": SmsStatus.REJECTED, "555": SmsStatus.EXPIRED}


class SimulatedSmsGateway:
    # Statuses come through the sink; there is nothing to look up.
    polls = False

    def __init__(self, step_delay: float = 1.0) -> None:
        self._step_delay = step_delay
        self._sink: SmsStatusSink | None = None
        self._tasks: set[asyncio.Task[None]] = set()

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
        task = asyncio.create_task(self._deliver(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return SubmitResult(message_id=message.idx, status=SmsStatus.QUEUE, points=0.0)

    async def query(self, message_ids: Sequence[str]) -> list[StatusReport]:
        return []

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
