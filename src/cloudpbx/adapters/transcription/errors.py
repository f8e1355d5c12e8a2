"""How an engine says whether a failure is worth a retry.

The job service (services/transcription.py) reads only the `transient` attribute of what
an engine raises: `False` fails the job at once with the message as its reason; anything
else (including exceptions that are not `TranscriptionError`) is retried with backoff
until the job's attempts run out.
"""

from __future__ import annotations


class TranscriptionError(Exception):
    """A failure of one transcription; `transient` says whether retrying may help."""

    transient: bool = True

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient

    @property
    def message(self) -> str:
        return str(self)


class PermanentError(TranscriptionError):
    """Retrying cannot help: unreadable audio, a missing model, a request the server refuses."""

    transient = False


class TransientError(TranscriptionError):
    """Retrying later may help: a server down or overloaded, a timeout."""

    transient = True
