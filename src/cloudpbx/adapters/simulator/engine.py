"""A tiny discrete-event engine: scripts that yield delays, run in virtual time.

Every call, pause or registration is a generator ("script") that changes the PBX state
and then yields how many virtual seconds to wait before its next step. One engine runs
all scripts of a PBX in one thread of control, ordered by (due time, insertion order).

Why not one asyncio task per call: a single ordered timeline makes a run reproducible
from its seed (two steps due at the same moment always run in the same order), lets the
same scripts replay a week of history in a fraction of a second (backfill), and keeps
hundreds of calls per second cheap (a heap push per step instead of a task and a timer).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Generator

Script = Generator[float, None, None]
"""A scenario: each `yield` returns the virtual seconds until its next step."""


class Engine:
    """Runs scripts in virtual-time order; `now` is the virtual time of the current step."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Script]] = []
        self._order = itertools.count()

    def spawn(self, script: Script, delay: float = 0.0) -> None:
        """Schedule `script`'s first step `delay` seconds from now."""
        heapq.heappush(self._heap, (self.now + delay, next(self._order), script))

    def run_now(self, script: Script, at: float) -> None:
        """Run `script`'s first step right away (at virtual time `at`), the rest as usual.

        For outside requests (`/dial`): the request sees the step's effect at once, so a
        second request finds the phone already taken.
        """
        self.now = max(self.now, at)
        try:
            delay = next(script)
        except StopIteration:
            return
        heapq.heappush(self._heap, (self.now + max(delay, 0.0), next(self._order), script))

    def next_due(self) -> float | None:
        """Virtual time of the next step, None when nothing is scheduled."""
        return self._heap[0][0] if self._heap else None

    def step(self) -> None:
        """Run the earliest step; a script that yields is rescheduled, one that returns ends."""
        when, _, script = heapq.heappop(self._heap)
        self.run_now(script, when)

    def run_until(self, limit: float) -> None:
        """Run every step due at or before virtual time `limit`."""
        while self._heap and self._heap[0][0] <= limit:
            self.step()
        self.now = max(self.now, limit)

    def close(self) -> None:
        """Drop every pending script (a stopped PBX forgets its calls in progress)."""
        for _, _, script in self._heap:
            script.close()
        self._heap.clear()
