"""Engines on any server that speaks OpenAI's HTTP API: hosted, or self-hosted Whisper
servers (faster-whisper-server/speaches, LocalAI, vLLM, ...) and chat models.

- `OpenAIEngine`: `POST {openai_url}/audio/transcriptions` (multipart: `file` as 16 kHz
  16-bit WAV, `model`, `response_format=verbose_json`, `language` when set), one request
  per party's channel, cut into pieces of at most `openai_chunk_seconds` (hosted OpenAI
  takes 25 MB, about 13 minutes of such audio). The segments of `verbose_json` give each
  utterance its time; a server that refuses `verbose_json` is asked again for `json`
  (the whole text as one utterance), and is not asked for `verbose_json` again.
- `ChatSummariser`: `POST {summary_url}/chat/completions` with `DEFAULT_PROMPT` (or
  `summary_prompt`) as the system message and the transcript as the user message.

Failures: no answer, a timeout, 408/409/425/429, 5xx, and 401/403 (a key being rotated
is an operator's fix, not the recording's fault) are transient: the job is retried with
backoff. Other 4xx answers (the server refuses this audio or request) are permanent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from cloudpbx.adapters.transcription.audio import ENGINE_RATE, Samples, chunks, wav_bytes
from cloudpbx.adapters.transcription.base import Segment, Utterance
from cloudpbx.adapters.transcription.errors import (
    PermanentError,
    TranscriptionError,
    TransientError,
)

DEFAULT_PROMPT = """\
You summarise transcripts of business phone calls.
Each line is `[mm:ss] SPEAKER: text`, where SPEAKER is the phone number or extension of \
the party speaking (lines without SPEAKER mix both parties). The transcript comes from \
speech recognition and may contain misheard words.
Write a summary of one to three sentences, in the language of the transcript: what the \
call was about, and what was agreed or remains to be done, with any names, numbers, \
dates and amounts that matter. Do not invent anything the transcript does not say. \
Reply with the summary only."""
"""The system prompt of the chat summariser (`summary_prompt` replaces it)."""

MAX_TRANSCRIPT_CHARS = 60_000
"""Transcript sent for a summary at most (about 15,000 tokens); the rest is cut."""

_TRANSIENT_STATUSES = frozenset({401, 403, 408, 409, 425, 429})


def _endpoint(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _failure(response: httpx.Response, what: str) -> TranscriptionError:
    detail = response.text[:300]
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            detail = str(body["error"].get("message", detail))
        elif isinstance(body, dict) and "detail" in body:
            detail = str(body["detail"])
    except ValueError:
        pass
    message = f"{what} answered {response.status_code}: {detail}".strip()
    status = response.status_code
    transient = status >= 500 or status in _TRANSIENT_STATUSES
    return TransientError(message) if transient else PermanentError(message)


def _post(client: httpx.Client, url: str, what: str, **kwargs: Any) -> httpx.Response:
    try:
        return client.post(url, **kwargs)
    except httpx.TimeoutException:
        raise TransientError(f"{what} did not answer in time") from None
    except httpx.HTTPError as exc:
        raise TransientError(f"{what} unreachable: {exc}") from None


class OpenAIEngine:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        model: str = "whisper-1",
        language: str = "",
        timeout: float = 300.0,
        chunk_seconds: float = 600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url:
            raise PermanentError(
                "the openai engine needs openai_url, e.g. https://api.openai.com/v1"
            )
        self._url = _endpoint(base_url, "/audio/transcriptions")
        self._model = model
        self._language = language
        self._chunk_seconds = chunk_seconds
        self._verbose = True
        self._client = httpx.Client(headers=_headers(api_key), timeout=timeout, transport=transport)

    def close(self) -> None:
        self._client.close()

    def recognize(self, samples: Samples) -> list[Segment]:
        found: list[Segment] = []
        for offset, piece in chunks(samples, ENGINE_RATE, self._chunk_seconds):
            for segment in self._request(piece):
                found.append(Segment(segment.start + offset, segment.end + offset, segment.text))
        return found

    def _request(self, samples: Samples) -> list[Segment]:
        duration = len(samples) / ENGINE_RATE
        audio = wav_bytes(samples, ENGINE_RATE)
        while True:
            data = {"model": self._model, "temperature": "0"}
            if self._language:
                data["language"] = self._language
            if self._verbose:
                data["response_format"] = "verbose_json"
                data["timestamp_granularities[]"] = "segment"
            else:
                data["response_format"] = "json"
            response = _post(
                self._client,
                self._url,
                "the transcription server",
                data=data,
                files={"file": ("audio.wav", audio, "audio/wav")},
            )
            if response.status_code == 400 and self._verbose:
                # Perhaps a server without verbose_json: ask once more for plain json.
                self._verbose = False
                continue
            if response.status_code != 200:
                raise _failure(response, "the transcription server")
            return self._segments(response, duration)

    def _segments(self, response: httpx.Response, duration: float) -> list[Segment]:
        try:
            body = response.json()
        except ValueError:
            raise TransientError("the transcription server sent no JSON") from None
        if not isinstance(body, dict):
            raise TransientError("the transcription server sent no JSON object")
        segments = body.get("segments")
        if isinstance(segments, list) and segments:
            found = []
            for item in segments:
                if not isinstance(item, dict):
                    continue
                text = str(item.get("text", "")).strip()
                start = float(item.get("start", 0.0) or 0.0)
                end = float(item.get("end", start) or start)
                if text:
                    found.append(Segment(start, end, text))
            return found
        text = str(body.get("text", "")).strip()
        return [Segment(0.0, duration, text)] if text else []


class ChatSummariser:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str = "",
        model: str = "gpt-4o-mini",
        prompt: str = "",
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url:
            raise PermanentError(
                "the openai summariser needs summary_url (or openai_url), "
                "e.g. https://api.openai.com/v1"
            )
        self._url = _endpoint(base_url, "/chat/completions")
        self._model = model
        self.prompt = prompt or DEFAULT_PROMPT
        self._client = httpx.Client(headers=_headers(api_key), timeout=timeout, transport=transport)

    def close(self) -> None:
        self._client.close()

    def summarise(self, utterances: Sequence[Utterance]) -> str:
        transcript = "\n".join(utterance.render() for utterance in utterances)
        if len(transcript) > MAX_TRANSCRIPT_CHARS:
            transcript = transcript[:MAX_TRANSCRIPT_CHARS] + "\n[...]"
        body = {
            "model": self._model,
            "temperature": 0.2,
            "messages": [
                {"role": "system", "content": self.prompt},
                {"role": "user", "content": transcript},
            ],
        }
        response = _post(self._client, self._url, "the summary server", json=body)
        if response.status_code != 200:
            raise _failure(response, "the summary server")
        try:
            answer = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise TransientError("the summary server sent no chat completion") from None
        return " ".join(str(answer or "").split())
