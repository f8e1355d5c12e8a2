"""How long to wait between tries: a pure generator and the policy that feeds it."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass


def backoff(
    initial: float = 0.5,
    factor: float = 2.0,
    maximum: float = 30.0,
    jitter: float = 0.2,
    rand: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Endless delays: `initial`, then times `factor` each time, capped at `maximum`.

    Each delay is shortened by up to `jitter` (a fraction) at random, so that many clients
    cut off together do not come back together. Pure: no clock, no sleeping; pass `rand`
    to make it deterministic.
    """
    delay = initial
    while True:
        yield delay * (1.0 - jitter * rand())
        delay = min(delay * factor, maximum)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of idempotent requests, and reconnects of the event stream.

    `attempts` is how many times to try again after the first failure (None: forever;
    the event stream's default). Delays come from :func:`backoff`.
    """

    attempts: int | None = 3
    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.2

    def delays(self) -> Iterator[float]:
        """The waits before each retry, `attempts` of them (endless when None)."""
        source = backoff(self.initial, self.factor, self.maximum, self.jitter)
        if self.attempts is None:
            yield from source
            return
        for _ in range(self.attempts):
            yield next(source)


NO_RETRY = RetryPolicy(attempts=0)
