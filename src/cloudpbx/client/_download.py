"""Where a recording's bytes go, and how a resumed transfer is checked.

A path destination is written to `NAME.part` beside it and renamed when complete, so an
interrupted download leaves a `.part` that the next call continues with a `Range`
request. A folder destination gets the server's file name (`{uniqueid}.{format}`); its
partial file is `{uniqueid}.part`. A file object is written from its current position;
a transfer that breaks during the call is continued with `Range` as well.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
from pathlib import Path
from typing import BinaryIO

import httpx

from cloudpbx.client._backoff import RetryPolicy
from cloudpbx.client._calls import transient, transport_error
from cloudpbx.client._exceptions import ProtocolError
from cloudpbx.client._types import Destination, ProgressCallback

_EXTENSIONS = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/x-gsm": "gsm",
    "audio/mpeg": "mp3",
    "audio/ogg": "ogg",
}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")
_FILENAME = re.compile(r"""filename\*?=(?:UTF-8'')?"?([^";]+)"?""", re.IGNORECASE)


class Next(enum.Enum):
    """What the client does with an answer to a (possibly ranged) request."""

    STREAM = "stream"  # write the body
    COMPLETE = "complete"  # the partial file already holds everything
    RESTART = "restart"  # ask again for the whole file


def _safe_name(name: str) -> str | None:
    name = os.path.basename(name.replace("\\", "/")).strip()
    return name if name and name not in (".", "..") else None


class DownloadTarget:
    """The file being written, the byte offset reached, and the progress callback.

    A path's `.part` file is opened only once the server answered with the recording, so a
    refused download leaves nothing behind.
    """

    def __init__(
        self,
        destination: Destination,
        uniqueid: str,
        *,
        resume: bool,
        progress: ProgressCallback | None,
    ) -> None:
        self.uniqueid = uniqueid
        self._progress = progress
        self._folder: Path | None = None
        self.final: Path | None = None
        self.part: Path | None = None
        self.total: int | None = None
        self.content_type = ""
        self.etag: str | None = None
        self._stream: BinaryIO | None = None
        self._base = 0
        self.offset = 0
        if isinstance(destination, str | os.PathLike):
            path = Path(destination)
            if path.is_dir():
                self._folder = path
                self.part = path / f"{uniqueid.replace('/', '_').replace(os.sep, '_')}.part"
            else:
                self.final = path
                self.part = path.with_name(path.name + ".part")
            if resume and self.part.is_file():
                self.offset = self.part.stat().st_size
        else:
            self._stream = destination
            self._base = destination.tell() if destination.seekable() else 0
        self._fresh = not self.offset  # a path's .part must be (re)created, not appended to
        self.resumed_from = self.offset

    def request_headers(self) -> dict[str, str]:
        if self.offset == 0:
            return {}
        headers = {"Range": f"bytes={self.offset}-"}
        if self.etag:
            headers["If-Range"] = self.etag  # a changed file comes back whole (200)
        return headers

    def accepts(self, status: int) -> bool:
        """Whether `begin` handles an answer with this status (else it is an error)."""
        return 200 <= status < 300 or (status == 416 and self.offset > 0)

    def begin(self, response: httpx.Response) -> Next:
        """Check an answer that `accepts` against the offset: what to do with it."""
        self.content_type = response.headers.get("content-type", "")
        self.etag = response.headers.get("etag") or self.etag
        if response.status_code == 416:
            match = _UNSATISFIED_RANGE.fullmatch(response.headers.get("content-range", ""))
            named = self._folder is None or self.final is not None
            if match and int(match.group(1)) == self.offset and named:
                self.total = self.offset
                return Next.COMPLETE
            self._restart()
            return Next.RESTART
        if response.status_code == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))
            if match is None or int(match.group(1)) != self.offset:
                raise ProtocolError(
                    f"asked for bytes from {self.offset}, got Content-Range "
                    f"{response.headers.get('content-range')!r}"
                )
            self.total = None if match.group(3) == "*" else int(match.group(3))
        else:  # 200: the whole file, whatever we asked
            if self.offset:
                self._restart()
            length = response.headers.get("content-length")
            self.total = int(length) if length and length.isdigit() else None
        self._name_from(response)
        self._report()
        return Next.STREAM

    def _file(self) -> BinaryIO:
        if self._stream is None:
            assert self.part is not None
            self._stream = self.part.open("wb" if self._fresh else "ab")
            self._fresh = False
        return self._stream

    def write(self, chunk: bytes) -> None:
        self._file().write(chunk)
        self.offset += len(chunk)
        self._report()

    def _report(self) -> None:
        if self._progress is not None:
            self._progress(self.offset, self.total)

    def _restart(self) -> None:
        """Start over from byte 0 (the server sent, or will send, the whole file)."""
        if self.part is None:
            assert self._stream is not None
            if not self._stream.seekable():
                raise ProtocolError("the server ignored the Range request; the file cannot seek")
            self._stream.seek(self._base)
            self._stream.truncate()
        elif self._stream is not None:
            self._stream.seek(0)
            self._stream.truncate()
        else:
            self._fresh = True
        self.offset = 0
        self.resumed_from = 0

    def _name_from(self, response: httpx.Response) -> None:
        if self._folder is None or self.final is not None:
            return
        match = _FILENAME.search(response.headers.get("content-disposition", ""))
        name = _safe_name(match.group(1)) if match else None
        if name is None:
            mime = self.content_type.split(";")[0].strip().lower()
            extension = _EXTENSIONS.get(mime)
            name = f"{self.uniqueid}.{extension}" if extension else self.uniqueid
        self.final = self._folder / name

    def finish(self) -> Path | None:
        """Check the size and move the partial file to its name; the final path."""
        if self.total is not None and self.offset != self.total:
            raise ProtocolError(f"received {self.offset} of {self.total} bytes")
        stream = self._file()  # an empty recording still gets its (empty) file
        stream.flush()
        if self.part is None:
            return None
        stream.close()
        assert self.final is not None
        self.part.replace(self.final)
        return self.final

    def close(self) -> None:
        """Stop writing, keeping the partial file for a later resume."""
        if self.part is not None and self._stream is not None:
            with contextlib.suppress(OSError):
                self._stream.close()


class DownloadRetry:
    """Retries of a download: a 5xx answer or a broken transfer waits and tries again; the
    budget starts over whenever bytes arrived since the last failure."""

    def __init__(self, policy: RetryPolicy, target: DownloadTarget) -> None:
        self._policy = policy
        self._target = target
        self._delays = policy.delays()
        self._offset = target.offset

    def _next(self) -> float | None:
        if self._target.offset > self._offset:
            self._delays = self._policy.delays()
            self._offset = self._target.offset
        return next(self._delays, None)

    def after_status(self, status: int) -> float | None:
        """The wait before retrying an answer with `status`; None: use this answer."""
        return self._next() if status >= 500 else None

    def after_error(self, exc: httpx.TransportError) -> float:
        delay = self._next() if transient(exc) else None
        if delay is None:
            raise transport_error(exc) from exc
        return delay
