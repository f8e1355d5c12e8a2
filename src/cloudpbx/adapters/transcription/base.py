"""The two small interfaces behind every transcription, and the pipeline joining them.

A `SpeechEngine` turns 16 kHz mono samples into timed text segments; a `Summariser`
turns the utterances of a call into a short summary. `Pipeline` implements the
TranscriptionEngine port (ports/transcription.py) with one of each: it decodes the
recording (audio.py), gives each party's channel to the engine, interleaves what they
said by time, renders the transcript and asks the summariser for the summary.

The transcript is one line per utterance, as the simulator writes them:

    [00:03] 101: good morning how can I help you
    [00:07] 48500100200: I am calling about my order

The label is the party: on a two-channel recording (Asterisk's MixMonitor `D` output:
the recorded channel's audio left, what it hears right) the call's `src` for the left
channel and its `dst` for the right one. A one-channel recording mixes both voices, so
its lines carry no label: `[00:03] good morning how can I help you`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cloudpbx.adapters.transcription.audio import (
    ENGINE_RATE,
    Samples,
    parties,
    read_audio,
    resample,
)
from cloudpbx.ports.transcription import Transcript


@dataclass(frozen=True, slots=True)
class Segment:
    """Text an engine heard between `start` and `end` (seconds into the audio it got)."""

    start: float
    end: float
    text: str


@dataclass(frozen=True, slots=True)
class Utterance:
    """One line of the transcript: who (None on a mixed recording), when, what."""

    start: float
    end: float
    speaker: str | None
    text: str

    def render(self) -> str:
        seconds = int(self.start)
        mark = f"[{seconds // 60:02d}:{seconds % 60:02d}]"
        return f"{mark} {self.speaker}: {self.text}" if self.speaker else f"{mark} {self.text}"


class SpeechEngine(Protocol):
    """Speech to text. Called from a worker thread, one call at a time per engine."""

    name: str

    def recognize(self, samples: Samples) -> list[Segment]:
        """The speech in `samples` (16 kHz mono float32), in order; [] for silence."""
        ...


class Summariser(Protocol):
    """A short summary of a call. Called from a worker thread."""

    name: str

    def summarise(self, utterances: Sequence[Utterance]) -> str: ...


class NoSummary:
    """`summariser = "none"`: transcripts only."""

    name = "none"

    def summarise(self, utterances: Sequence[Utterance]) -> str:
        return ""


class Pipeline:
    """Recording in, `Transcript` out: implements the TranscriptionEngine port."""

    def __init__(self, engine: SpeechEngine, summariser: Summariser) -> None:
        self.engine = engine
        self.summariser = summariser
        self._lock = threading.Lock()  # engines keep decoder state: one recording at a time

    @property
    def name(self) -> str:
        return f"{self.engine.name}+{self.summariser.name}"

    def close(self) -> None:
        """Let go of connections (the OpenAI-compatible clients)."""
        for part in (self.engine, self.summariser):
            close = getattr(part, "close", None)
            if close is not None:
                close()

    async def transcribe(
        self, audio: Path, *, fmt: str = "", speakers: Sequence[str] = ()
    ) -> Transcript:
        """Transcribe and summarise the recording at `audio` (in a thread: it is slow)."""
        return await asyncio.to_thread(self.run, audio, fmt, speakers)

    def run(self, audio: Path, fmt: str = "", speakers: Sequence[str] = ()) -> Transcript:
        with self._lock:
            utterances = self.utterances(audio, fmt, speakers)
            content = "\n".join(utterance.render() for utterance in utterances)
            summary = self.summariser.summarise(utterances) if utterances else ""
        return Transcript(content=content, summary=summary)

    def utterances(self, audio: Path, fmt: str, speakers: Sequence[str]) -> list[Utterance]:
        decoded = read_audio(audio, fmt)
        voices = parties(decoded)
        found: list[Utterance] = []
        for index, samples in enumerate(voices):
            if samples is None:
                continue
            speaker = None
            if len(voices) > 1:
                speaker = (
                    speakers[index] if index < len(speakers) and speakers[index] else "AB"[index]
                )
            for segment in self.engine.recognize(resample(samples, decoded.rate, ENGINE_RATE)):
                text = " ".join(segment.text.split())
                if text:
                    found.append(Utterance(segment.start, segment.end, speaker, text))
        found.sort(key=lambda u: (u.start, u.end))
        return found
