"""The OpenAI-compatible engine and summariser against a fake server over loopback."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cloudpbx.adapters.transcription.base import Pipeline, Utterance
from cloudpbx.adapters.transcription.errors import PermanentError, TransientError
from cloudpbx.adapters.transcription.openai_compat import (
    DEFAULT_PROMPT,
    ChatSummariser,
    OpenAIEngine,
)
from cloudpbx.adapters.transcription.summary import ExtractiveSummariser
from tests.fakes.openai import FakeOpenAI, Step

KEY = "sk-test-0123456789"


def tones(
    rate: int, seconds: float, parts: Sequence[Sequence[tuple[float, float, float]]]
) -> bytes:
    """A 16-bit WAV, one channel per entry of `parts`: (from, to, frequency) tones."""
    count = int(seconds * rate)
    t = np.arange(count) / rate
    channels = []
    for spans in parts:
        signal = np.zeros(count)
        for start, end, freq in spans:
            where = (t >= start) & (t < end)
            signal[where] = 0.4 * np.sin(2 * np.pi * freq * t[where])
        channels.append(signal)
    frames = (np.stack(channels, axis=1) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(len(parts))
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames.tobytes())
    return buffer.getvalue()


STEREO_CALL = tones(8000, 4.0, [[(0.5, 1.5, 440)], [(2.0, 3.0, 880)]])
"""A MixMonitor-like stereo recording: the caller speaks first (left), then the callee."""


_OPEN: list[OpenAIEngine | ChatSummariser] = []


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=KEY)
    await server.start()
    try:
        yield server
    finally:
        while _OPEN:
            _OPEN.pop().close()
        await server.stop()


def engine(fake: FakeOpenAI, **kwargs: Any) -> OpenAIEngine:
    client = OpenAIEngine(fake.url, api_key=KEY, model="whisper-large-v3", **kwargs)
    _OPEN.append(client)
    return client


def summariser(url: str, **kwargs: Any) -> ChatSummariser:
    client = ChatSummariser(url, **kwargs)
    _OPEN.append(client)
    return client


async def test_a_stereo_call_is_transcribed_per_party_and_summarised(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    path = tmp_path / "1795838273.7.wav"
    path.write_bytes(STEREO_CALL)
    pipeline = Pipeline(
        engine(fake, language="pl"), summariser(fake.url, api_key=KEY, model="llama-3")
    )
    result = await pipeline.transcribe(path, fmt="wav", speakers=("101", "48500100200"))
    assert result.content == ("[00:00] 101: tone 440 hertz\n[00:02] 48500100200: tone 880 hertz")
    assert result.summary == fake.summary

    # What went over the wire: one request per party, 16 kHz mono WAV, our fields.
    assert len(fake.transcriptions) == 2
    for request in fake.transcriptions:
        assert request["headers"]["authorization"] == f"Bearer {KEY}"
        assert request["fields"]["model"] == "whisper-large-v3"
        assert request["fields"]["language"] == "pl"
        assert request["fields"]["response_format"] == "verbose_json"
        with wave.open(io.BytesIO(request["audio"])) as sent:
            assert (sent.getframerate(), sent.getnchannels(), sent.getsampwidth()) == (16000, 1, 2)
            assert sent.getnframes() == 4 * 16000
    [chat] = fake.chats
    assert chat["model"] == "llama-3"
    assert chat["messages"][0] == {"role": "system", "content": DEFAULT_PROMPT}
    assert chat["messages"][1] == {"role": "user", "content": result.content}


async def test_a_server_without_verbose_json_gets_json(fake: FakeOpenAI) -> None:
    fake.verbose_json = False
    audio = tones(16000, 2.0, [[(0.2, 1.2, 300)]])
    samples = np.frombuffer(audio[44:], dtype="<i2").astype(np.float32) / 32768
    recognizer = engine(fake)
    segments = await asyncio.to_thread(recognizer.recognize, samples)
    assert [(s.start, s.text) for s in segments] == [(0.0, "tone 300 hertz")]
    assert [r["fields"]["response_format"] for r in fake.transcriptions] == [
        "verbose_json",
        "json",
    ]
    await asyncio.to_thread(recognizer.recognize, samples)  # it remembers
    assert fake.transcriptions[-1]["fields"]["response_format"] == "json"


async def test_long_audio_goes_in_pieces_with_their_times(fake: FakeOpenAI) -> None:
    audio = tones(16000, 70.0, [[(5.0, 6.0, 500), (40.0, 41.0, 600), (65.0, 66.0, 700)]])
    samples = np.frombuffer(audio[44:], dtype="<i2").astype(np.float32) / 32768
    segments = await asyncio.to_thread(engine(fake, chunk_seconds=30).recognize, samples)
    assert len(fake.transcriptions) == 3
    assert [s.text for s in segments] == ["tone 500 hertz", "tone 600 hertz", "tone 700 hertz"]
    assert [round(s.start) for s in segments] == [5, 40, 65]


@pytest.mark.parametrize(
    ("steps", "error", "message"),
    [
        ([Step(503)], TransientError, "answered 503"),
        ([Step(429, "Rate limit reached")], TransientError, "Rate limit reached"),
        ([Step(400, "Invalid file"), Step(400, "Invalid file")], PermanentError, "Invalid file"),
        ([Step(413, "Maximum content size exceeded")], PermanentError, "413"),
    ],
)
async def test_failures_say_whether_to_retry(
    fake: FakeOpenAI, steps: list[Step], error: type[Exception], message: str
) -> None:
    fake.script.extend(steps)
    samples = np.zeros(16000, np.float32)
    with pytest.raises(error, match=message):
        await asyncio.to_thread(engine(fake).recognize, samples)


async def test_bad_key_and_no_server_are_transient(fake: FakeOpenAI) -> None:
    samples = np.zeros(1600, np.float32)
    wrong = OpenAIEngine(fake.url, api_key="sk-wrong")
    _OPEN.append(wrong)
    with pytest.raises(TransientError, match="Incorrect API key"):
        await asyncio.to_thread(wrong.recognize, samples)
    gone = OpenAIEngine("http://127.0.0.1:9/v1", timeout=2)
    _OPEN.append(gone)
    with pytest.raises(TransientError, match="unreachable"):
        await asyncio.to_thread(gone.recognize, samples)
    with pytest.raises(PermanentError, match="openai_url"):
        OpenAIEngine("")


async def test_the_summariser_prompt_and_its_failures(fake: FakeOpenAI) -> None:
    said = [
        Utterance(1.0, 2.0, "101", "good morning"),
        Utterance(3.0, 4.0, "102", "my order did not arrive"),
    ]
    chat = summariser(fake.url, api_key=KEY, prompt="Summarise in Polish.")
    assert await asyncio.to_thread(chat.summarise, said) == fake.summary
    assert fake.chats[0]["messages"] == [
        {"role": "system", "content": "Summarise in Polish."},
        {
            "role": "user",
            "content": "[00:01] 101: good morning\n[00:03] 102: my order did not arrive",
        },
    ]
    unauthorised = summariser(fake.url, api_key="sk-wrong")
    with pytest.raises(TransientError):
        await asyncio.to_thread(unauthorised.summarise, said)


async def test_a_mono_recording_has_no_speaker_labels(fake: FakeOpenAI, tmp_path: Path) -> None:
    path = tmp_path / "mono.wav"
    path.write_bytes(tones(8000, 3.0, [[(0.2, 0.8, 400), (1.5, 2.5, 600)]]))
    pipeline = Pipeline(engine(fake), ExtractiveSummariser(1))
    result = await pipeline.transcribe(path, speakers=("101", "102"))
    assert result.content == "[00:00] tone 400 hertz\n[00:01] tone 600 hertz"
    assert result.summary in ("tone 400 hertz.", "tone 600 hertz.")
