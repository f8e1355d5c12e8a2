"""A fake OpenAI-compatible server (audio transcriptions, chat completions), served over
real HTTP on loopback, in the test's loop.

Written from OpenAI's public API reference, not from cloudpbx's adapter:

- `POST /v1/audio/transcriptions`, multipart form: `file` (required), `model` (required),
  `language`, `prompt`, `temperature`, `response_format` (`json` default, `text`,
  `verbose_json`), `timestamp_granularities[]`. Answers `{"text": ...}`, or for
  `verbose_json` `{"task": "transcribe", "language", "duration", "text", "segments":
  [{"id", "seek", "start", "end", "text", ...}]}`. Errors are
  `{"error": {"message", "type", "param", "code"}}` with 400 / 401 / 429 / 5xx.
- `POST /v1/chat/completions`, JSON `{model, messages: [{role, content}], ...}`: answers
  `{"id", "object": "chat.completion", "created", "model", "choices": [{"index",
  "message": {"role": "assistant", "content"}, "finish_reason"}], "usage"}`.

What it "hears": the file is read with the standard `wave` module (16-bit PCM), and each
stretch of sound is one segment whose text names its pitch, e.g. `" tone 440 hertz"`.
Tests put tones where a party speaks, so the transcript shows which channel went where.

`script` makes the next transcription answers misbehave (an HTTP status, a hold until
`release` is set) for the failure tests; `verbose_json = False` makes it a server that
refuses `verbose_json` (as some self-hosted servers do).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import time
import wave
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes import serve_on_loopback


@dataclass
class Step:
    """How to answer one transcription request: an error status, or a hold."""

    status: int = 200
    message: str = "The server had an error while processing your request."
    hold: bool = False


@dataclass
class FakeOpenAI:
    api_key: str = ""
    verbose_json: bool = True
    summary: str = "The caller asked about an order; it will be delivered tomorrow."
    script: deque[Step] = field(default_factory=deque)
    transcriptions: list[dict[str, Any]] = field(default_factory=list)
    chats: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._ids = itertools.count(1)
        self.app = Starlette(
            routes=[
                Route("/v1/audio/transcriptions", self._transcriptions, methods=["POST"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )
        self.held = asyncio.Event()  # a held request has arrived
        self.release = asyncio.Event()  # let held requests answer
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The base URL clients are configured with (OpenAI's `.../v1`)."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        self._server, self._task, self.port = await serve_on_loopback(
            self.app, self.port, "fake OpenAI server"
        )

    async def stop(self) -> None:
        self.release.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)
        self._server = self._task = None

    # -- the API ---------------------------------------------------------------------------

    def _error(self, status: int, message: str, kind: str, code: str | None = None) -> Response:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return JSONResponse(body, status_code=status)

    def _authorized(self, request: Request) -> bool:
        return not self.api_key or request.headers.get("authorization") == f"Bearer {self.api_key}"

    async def _transcriptions(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        async with request.form() as form:
            upload = form.get("file")
            fields = {key: str(value) for key, value in form.items() if key != "file"}
            has_file = isinstance(upload, UploadFile)
            audio = await upload.read() if isinstance(upload, UploadFile) else b""
        self.transcriptions.append(
            {"fields": fields, "audio": audio, "headers": dict(request.headers)}
        )
        step = self.script.popleft() if self.script else Step()
        if step.hold:
            self.held.set()
            await self.release.wait()
        if step.status != 200:
            kind = "server_error" if step.status >= 500 else "invalid_request_error"
            return self._error(step.status, step.message, kind)
        if not has_file or "model" not in fields:
            return self._error(400, "file and model are required", "invalid_request_error")
        fmt = fields.get("response_format", "json")
        if fmt == "verbose_json" and not self.verbose_json:
            return self._error(
                400, "response_format 'verbose_json' is not supported", "invalid_request_error"
            )
        try:
            _rate, segments, duration = hear(audio)
        except (wave.Error, EOFError, ValueError):
            return self._error(400, "Invalid file format.", "invalid_request_error")
        text = "".join(segment["text"] for segment in segments).strip()
        if fmt == "text":
            return PlainTextResponse(text)
        if fmt == "verbose_json":
            return JSONResponse(
                {
                    "task": "transcribe",
                    "language": fields.get("language", "english"),
                    "duration": duration,
                    "text": text,
                    "segments": segments,
                }
            )
        return JSONResponse({"text": text})

    async def _chat(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        body = await request.json()
        self.chats.append(body)
        if not body.get("messages") or not body.get("model"):
            return self._error(400, "model and messages are required", "invalid_request_error")
        return JSONResponse(
            {
                "id": f"chatcmpl-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.summary},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            }
        )


def hear(audio: bytes) -> tuple[int, list[dict[str, Any]], float]:
    """Stretches of sound in a 16-bit PCM WAV, each named by its pitch (rounded to 10 Hz)."""
    with wave.open(io.BytesIO(audio)) as reader:
        if reader.getsampwidth() != 2:
            raise ValueError("16-bit PCM only")
        rate, channels = reader.getframerate(), reader.getnchannels()
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    mono = samples.reshape(-1, channels).mean(axis=1) / 32768.0
    frame = rate // 50  # 20 ms
    frames = len(mono) // frame
    loud = [
        float(np.sqrt(np.mean(mono[i * frame : (i + 1) * frame] ** 2))) > 0.02
        for i in range(frames)
    ]
    segments: list[dict[str, Any]] = []
    start = None
    for index, on in enumerate([*loud, False]):
        if on and start is None:
            start = index
        elif not on and start is not None:
            if index - start >= 5:  # 100 ms or more
                piece = mono[start * frame : index * frame]
                spectrum = np.abs(np.fft.rfft(piece))
                pitch = float(np.fft.rfftfreq(len(piece), 1 / rate)[int(np.argmax(spectrum))])
                segments.append(
                    {
                        "id": len(segments),
                        "seek": 0,
                        "start": round(start * frame / rate, 2),
                        "end": round(index * frame / rate, 2),
                        "text": f" tone {round(pitch, -1):.0f} hertz",
                        "tokens": [],
                        "temperature": 0.0,
                        "avg_logprob": -0.2,
                        "compression_ratio": 1.0,
                        "no_speech_prob": 0.01,
                    }
                )
            start = None
    return rate, segments, len(mono) / rate
