"""The lease port: at most one holder of a named job across every process and machine.

A term is granted for `ttl` seconds by the store's clock and carries a fencing token that
grows with every new term, so a holder that lost its term (it hung, or its network did)
can be told apart from the one that holds it now (docs/operations.md, "Leases").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Term:
    """One holder's term of one lease."""

    name: str
    holder: str
    token: int


class LeaseStore(Protocol):
    """Where leases live; every time is the store's, never the caller's."""

    async def acquire(self, name: str, holder: str, ttl: float) -> Term | None:
        """A new term when the lease is free or expired (token + 1), else None."""
        ...

    async def renew(self, term: Term, ttl: float) -> bool:
        """Extend `term` by `ttl` from now; False when it expired or another holds it."""
        ...

    async def release(self, term: Term) -> None:
        """End `term` now (a clean stop), so a standby takes over without waiting."""
        ...

    async def is_current(self, term: Term) -> bool:
        """Whether `term` is still the lease's live term (the store's fencing check)."""
        ...


OnGain = Callable[[Term], Awaitable[None]]
"""Start the guarded job: this process holds `term` now."""
OnLoss = Callable[[str], Awaitable[None]]
"""Stop the guarded job at once: the term is over (the argument says why)."""


class Leader(Protocol):
    """A guarded job's view of its lease (services/leadership.py)."""

    @property
    def state(self) -> str:
        """`leader` or `standby`."""
        ...

    def holds(self) -> bool:
        """Whether this process may act now; checked before every side effect."""
        ...

    def start(self) -> None: ...

    async def stop(self) -> None:
        """Stop the job if it runs and release the lease."""
        ...


Elect = Callable[[str, OnGain, OnLoss], Leader]
"""Builds the `Leader` of a lease name with the job's start and stop."""
