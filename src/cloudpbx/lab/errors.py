"""The lab's exceptions: everything it raises on purpose is a `LabError`."""

from __future__ import annotations


class LabError(RuntimeError):
    """The lab could not be built, brought up or down; the message says why and where to look."""


class LabBuildError(LabError):
    """The chroot could not be built (or this host cannot build it: not root, not Debian)."""


class LabProcessError(LabError):
    """A lab program could not be started or stopped."""
