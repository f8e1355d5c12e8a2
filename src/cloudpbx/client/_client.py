"""`Client` and `AsyncClient`: the same methods, blocking or awaitable.

Both send the :mod:`~cloudpbx.client._calls` descriptions over httpx, retry idempotent
ones on connection errors and 5xx answers (never `dial` or `send_sms`), and translate
httpx's exceptions where they are raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx

from cloudpbx import __version__
from cloudpbx.client import _calls
from cloudpbx.client._backoff import RetryPolicy
from cloudpbx.client._calls import Call, RangeCursor, raise_for_status
from cloudpbx.client._download import DownloadRetry, DownloadTarget, Next
from cloudpbx.client._models import (
    CdrRow,
    DialResult,
    Download,
    Page,
    Recording,
    SmsResponse,
    Transcription,
    TranscriptionItem,
)
from cloudpbx.client._stream import AsyncEventStream, EventStream, GapCallback, StreamCore
from cloudpbx.client._types import DateLike, Destination, ProgressCallback

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DEFAULT_RETRY = RetryPolicy()
EVENTS_RECONNECT = RetryPolicy(attempts=None, initial=0.5, maximum=30.0)
USER_AGENT = f"cloudpbx-client/{__version__}"


class _Base:
    """Settings shared by both clients."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        pbx: str | None,
        ws_url: str | None,
        retry: RetryPolicy,
    ) -> None:
        if not api_url:
            raise ValueError("api_url is required, e.g. https://api.cloudpbx.pl")
        if not api_key:
            raise ValueError("api_key is required")
        self.api_url = api_url.rstrip("/")
        self.pbx = pbx
        self.ws_url = (ws_url or self.api_url).rstrip("/")
        self.retry = retry
        self._api_key = api_key

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        base = {"Authorization": f"Bearer {self._api_key}", "User-Agent": USER_AGENT}
        return {**base, **(extra or {})}

    def _stream_core(
        self,
        pbx: str | None,
        last_event_id: int | None,
        reconnect: RetryPolicy | None,
        on_gap: GapCallback | None,
    ) -> StreamCore:
        return StreamCore(
            self.ws_url,
            pbx or self.pbx or "",
            self._api_key,
            last_event_id=last_event_id,
            reconnect=reconnect or EVENTS_RECONNECT,
            on_gap=on_gap,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.api_url!r}, pbx={self.pbx!r})"


class Client(_Base):
    """A blocking client. Thread-safe; use it as a context manager or call `close()`.

    >>> with Client("https://api.cloudpbx.pl", "KEY", pbx="MojaCentrala") as pbx:
    ...     for row in pbx.iter_cdr("2026-03-01", "2026-03-31"):
    ...         print(row.calldate, row.src, row.dst, row.billsec)
    """

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        pbx: str | None = None,
        ws_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: bool | str = True,
    ) -> None:
        super().__init__(api_url, api_key, pbx=pbx, ws_url=ws_url, retry=retry)
        self._http = httpx.Client(
            base_url=self.api_url,
            headers=self._headers(headers),
            timeout=timeout,
            transport=transport,
            verify=verify,
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _send(self, call: Call[T]) -> T:
        delays: Iterator[float] = self.retry.delays() if call.idempotent else iter(())
        while True:
            try:
                response = self._http.request(
                    call.method, call.path, params=call.params, data=call.data
                )
            except httpx.TransportError as exc:
                delay = next(delays, None) if _calls.transient(exc) else None
                if delay is None:
                    raise _calls.transport_error(exc) from exc
                time.sleep(delay)
                continue
            except httpx.HTTPError as exc:
                raise _calls.transport_error(exc) from exc
            if response.status_code >= 500 and (delay := next(delays, None)) is not None:
                time.sleep(delay)
                continue
            return call.parse(response)

    def _walk(self, cursor: RangeCursor[R]) -> Iterator[R]:
        while (call := cursor.next_call()) is not None:
            page = self._send(call)
            yield from cursor.feed(page)

    # -- REST -------------------------------------------------------------------------------

    def cdr(self, start: DateLike | None = None, stop: DateLike | None = None) -> Page[CdrRow]:
        """CDR rows of `start`..`stop` (inclusive, PBX days; absent: today), one request.

        At most the server's cap (10,000): check `.truncated`, or use `iter_cdr`.
        """
        return self._send(_calls.cdr(start, stop))

    def iter_cdr(
        self, start: DateLike | None = None, stop: DateLike | None = None, *, strict: bool = True
    ) -> Iterator[CdrRow]:
        """Every CDR row of the range, oldest first, in as many requests as the cap needs.

        Raises TruncatedError (after yielding the rows before it) when one day alone holds
        more rows than the cap; `strict=False` yields that day's capped rows and goes on.
        """
        return self._walk(_calls.cdr_cursor(start, stop, strict))

    def recordings(
        self, start: DateLike | None = None, stop: DateLike | None = None
    ) -> Page[Recording]:
        """Recordings of the range, at most the server's cap (5,000); see `iter_recordings`."""
        return self._send(_calls.recordings(start, stop))

    def iter_recordings(
        self, start: DateLike | None = None, stop: DateLike | None = None, *, strict: bool = True
    ) -> Iterator[Recording]:
        return self._walk(_calls.recording_cursor(start, stop, strict))

    def transcriptions(
        self, start: DateLike | None = None, stop: DateLike | None = None
    ) -> Page[TranscriptionItem]:
        """Calls of the range whose transcription is finished."""
        return self._send(_calls.transcriptions(start, stop))

    def iter_transcriptions(
        self, start: DateLike | None = None, stop: DateLike | None = None, *, strict: bool = True
    ) -> Iterator[TranscriptionItem]:
        return self._walk(_calls.transcription_cursor(start, stop, strict))

    def transcription(self, uniqueid: str) -> Transcription:
        """The text and summary of a call; NotFound when it has none."""
        return self._send(_calls.transcription(uniqueid))

    def dial(self, cpa: str, cpb: str) -> DialResult:
        """Ring extension `cpa`, then connect it to `cpb`; ActionError when refused.

        Never retried (a retry could ring twice).
        """
        return self._send(_calls.dial(str(cpa), str(cpb)))

    def send_sms(self, to: str, body: str, test: bool = False) -> SmsResponse:
        """Send an SMS through the PBX's gateway; `test=True`: not delivered, not charged.

        BadRequest for a missing or invalid `to`/`body`, SmsError when the gateway fails,
        Forbidden when the PBX has no gateway. Never retried (a retry could send twice).
        """
        return self._send(_calls.send_sms(str(to), body, test))

    def download_recording(
        self,
        uniqueid: str,
        destination: Destination,
        *,
        progress: ProgressCallback | None = None,
        resume: bool = True,
    ) -> Download:
        """Stream a recording to a file path, a folder, or a binary file object.

        Resumable: a path is written as `NAME.part` and renamed when complete, and a later
        call continues a `.part` with a `Range` request (`resume=False` starts over); a
        transfer that breaks is continued the same way, as often as `retry` allows.
        `progress(bytes_so_far, total)` is called as bytes arrive.
        """
        path = _calls.recording_path(uniqueid)
        target = DownloadTarget(destination, uniqueid, resume=resume, progress=progress)
        retry = DownloadRetry(self.retry, target)
        try:
            while True:
                try:
                    with self._http.stream("GET", path, headers=target.request_headers()) as rsp:
                        delay = retry.after_status(rsp.status_code)
                        if delay is None:
                            if not target.accepts(rsp.status_code):
                                rsp.read()
                                raise_for_status(rsp)
                            step = target.begin(rsp)
                            if step is Next.STREAM:
                                for chunk in rsp.iter_bytes():
                                    target.write(chunk)
                            if step is not Next.RESTART:
                                break
                            continue
                except httpx.TransportError as exc:
                    delay = retry.after_error(exc)
                except httpx.HTTPError as exc:
                    raise _calls.transport_error(exc) from exc
                time.sleep(delay)
            saved = target.finish()
        finally:
            target.close()
        return Download(uniqueid, saved, target.offset, target.resumed_from, target.content_type)

    # -- WebSocket --------------------------------------------------------------------------

    def events(
        self,
        pbx: str | None = None,
        *,
        last_event_id: int | None = None,
        reconnect: RetryPolicy | None = None,
        on_gap: GapCallback | None = None,
        open_timeout: float = 10.0,
        **connect_options: Any,
    ) -> EventStream:
        """The PBX's live events as `(id, event)`, reconnecting and resuming for ever.

        `last_event_id`: start after this id (0: everything the server still keeps; None:
        only new events). `on_gap(last_id)` is called when the server could not replay
        everything since `last_id` (its history was shorter). Extra keyword arguments go to
        `websockets.sync.client.connect`.
        """
        core = self._stream_core(pbx, last_event_id, reconnect, on_gap)
        return EventStream(core, open_timeout=open_timeout, **connect_options)

    # -- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_Base):
    """The same API as :class:`Client`, awaitable; `events()` is an async iterator.

    >>> async with AsyncClient(url, key, pbx="MojaCentrala") as pbx:
    ...     async with pbx.events() as stream:
    ...         async for event_id, event in stream:
    ...             print(event_id, event)
    """

    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        pbx: str | None = None,
        ws_url: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | str = True,
    ) -> None:
        super().__init__(api_url, api_key, pbx=pbx, ws_url=ws_url, retry=retry)
        self._http = httpx.AsyncClient(
            base_url=self.api_url,
            headers=self._headers(headers),
            timeout=timeout,
            transport=transport,
            verify=verify,
        )

    async def _send(self, call: Call[T]) -> T:
        delays: Iterator[float] = self.retry.delays() if call.idempotent else iter(())
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, params=call.params, data=call.data
                )
            except httpx.TransportError as exc:
                delay = next(delays, None) if _calls.transient(exc) else None
                if delay is None:
                    raise _calls.transport_error(exc) from exc
                await asyncio.sleep(delay)
                continue
            except httpx.HTTPError as exc:
                raise _calls.transport_error(exc) from exc
            if response.status_code >= 500 and (delay := next(delays, None)) is not None:
                await asyncio.sleep(delay)
                continue
            return call.parse(response)

    async def _walk(self, cursor: RangeCursor[R]) -> AsyncIterator[R]:
        while (call := cursor.next_call()) is not None:
            page = await self._send(call)
            for row in cursor.feed(page):
                yield row

    async def cdr(
        self, start: DateLike | None = None, stop: DateLike | None = None
    ) -> Page[CdrRow]:
        return await self._send(_calls.cdr(start, stop))

    def iter_cdr(
        self, start: DateLike | None = None, stop: DateLike | None = None, *, strict: bool = True
    ) -> AsyncIterator[CdrRow]:
        return self._walk(_calls.cdr_cursor(start, stop, strict))

    async def recordings(
        self, start: DateLike | None = None, stop: DateLike | None = None
    ) -> Page[Recording]:
        return await self._send(_calls.recordings(start, stop))

    def iter_recordings(
        self, start: DateLike | None = None, stop: DateLike | None = None, *, strict: bool = True
    ) -> AsyncIterator[Recording]:
        return self._walk(_calls.recording_cursor(start, stop, strict))

    async def transcriptions(
        self, start: DateLike | None = None, stop: DateLike | None = None
    ) -> Page[TranscriptionItem]:
        return await self._send(_calls.transcriptions(start, stop))

    def iter_transcriptions(
        self, start: DateLike | None = None, stop: DateLike | None = None, *, strict: bool = True
    ) -> AsyncIterator[TranscriptionItem]:
        return self._walk(_calls.transcription_cursor(start, stop, strict))

    async def transcription(self, uniqueid: str) -> Transcription:
        return await self._send(_calls.transcription(uniqueid))

    async def dial(self, cpa: str, cpb: str) -> DialResult:
        return await self._send(_calls.dial(str(cpa), str(cpb)))

    async def send_sms(self, to: str, body: str, test: bool = False) -> SmsResponse:
        return await self._send(_calls.send_sms(str(to), body, test))

    async def download_recording(
        self,
        uniqueid: str,
        destination: Destination,
        *,
        progress: ProgressCallback | None = None,
        resume: bool = True,
    ) -> Download:
        """See :meth:`Client.download_recording`. File writes are plain blocking writes
        of network-sized chunks."""
        path = _calls.recording_path(uniqueid)
        target = DownloadTarget(destination, uniqueid, resume=resume, progress=progress)
        retry = DownloadRetry(self.retry, target)
        try:
            while True:
                try:
                    async with self._http.stream(
                        "GET", path, headers=target.request_headers()
                    ) as rsp:
                        delay = retry.after_status(rsp.status_code)
                        if delay is None:
                            if not target.accepts(rsp.status_code):
                                await rsp.aread()
                                raise_for_status(rsp)
                            step = target.begin(rsp)
                            if step is Next.STREAM:
                                async for chunk in rsp.aiter_bytes():
                                    target.write(chunk)
                            if step is not Next.RESTART:
                                break
                            continue
                except httpx.TransportError as exc:
                    delay = retry.after_error(exc)
                except httpx.HTTPError as exc:
                    raise _calls.transport_error(exc) from exc
                await asyncio.sleep(delay)
            saved = target.finish()
        finally:
            target.close()
        return Download(uniqueid, saved, target.offset, target.resumed_from, target.content_type)

    def events(
        self,
        pbx: str | None = None,
        *,
        last_event_id: int | None = None,
        reconnect: RetryPolicy | None = None,
        on_gap: GapCallback | None = None,
        open_timeout: float = 10.0,
        **connect_options: Any,
    ) -> AsyncEventStream:
        """See :meth:`Client.events`; use `async with` so the connection gets closed."""
        core = self._stream_core(pbx, last_event_id, reconnect, on_gap)
        return AsyncEventStream(core, open_timeout=open_timeout, **connect_options)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
