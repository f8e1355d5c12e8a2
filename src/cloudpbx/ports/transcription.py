"""The transcription engine port: audio file in, text out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Transcript:
    content: str
    summary: str


class TranscriptionEngine(Protocol):
    """Turns a recording into text and a short summary."""

    async def transcribe(self, audio: Path) -> Transcript: ...
