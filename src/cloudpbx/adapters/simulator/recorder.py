"""Turns an answered call into a stored recording and its transcription.

The WAV is named after the call's uniqueid (`1795838273.42.wav`), as MixMonitor names it,
and written into the sink's recordings folder before the sink hears about it.

Decision: the conversation lasts the call's billable time, and the transcription covers
all of it; the audio file keeps only its first `max_seconds` (so that a long-running demo
does not fill the disk). Where both exist they agree: the `[mm:ss]` marks of the
transcript are where the voices speak in the file.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from cloudpbx.adapters.simulator.audio import render, write_wav
from cloudpbx.adapters.simulator.conversation import Dialogue, write_dialogue
from cloudpbx.adapters.simulator.sim import Talk
from cloudpbx.domain.records import CdrRecord, RecordingInfo, TranscriptionRecord
from cloudpbx.ports.pbx import PbxSink


class Recorder:
    """Writes recordings of at most `max_seconds`; dialogues are drawn from `rng`."""

    def __init__(self, rng: random.Random, max_seconds: float) -> None:
        self._rng = rng
        self._max_seconds = max_seconds

    async def store(self, sink: PbxSink, pbx: str, record: CdrRecord, talk: Talk) -> None:
        """Write the call's WAV, then report the recording and the transcription."""
        dialogue = write_dialogue(talk, self._rng)
        talked = max(1.0, float(record.billsec))
        name = f"{record.uniqueid}.wav"
        path = sink.recordings_dir(pbx) / name
        size = await asyncio.to_thread(_write, path, dialogue, min(talked, self._max_seconds))
        await sink.recording(
            pbx,
            RecordingInfo(
                uniqueid=record.uniqueid,
                started_at=record.started_at,
                src=record.src,
                dst=record.dst,
                format="wav",
                path=name,
                size=size,
            ),
        )
        await sink.transcription(
            pbx,
            TranscriptionRecord(
                uniqueid=record.uniqueid,
                started_at=record.started_at,
                src=record.src,
                dst=record.dst,
                content=dialogue.transcript(talked),
                summary=dialogue.summary,
            ),
        )


def _write(path: Path, dialogue: Dialogue, seconds: float) -> int:
    return write_wav(path, render(dialogue.timeline(seconds), seconds))
