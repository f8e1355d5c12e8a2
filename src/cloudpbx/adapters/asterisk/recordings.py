"""MixMonitor recordings: found where Asterisk writes them, handed to the PBX when complete.

The lab's dialplan runs `MixMonitor(${UNIQUEID}.wav)`, so a call's file is
`<monitor dir>/<uniqueid>.wav`, named after the channel that ran MixMonitor, the CDR's
party A (`UniqueID` of its `Event: Cdr`). The monitor folder must be readable from this
server: the same machine, an NFS/SMB share, or an object-storage bucket mounted as a
folder (s3fs, rclone mount); `RecordingsConfig.dir` points to it.

When is a file complete? MixMonitor closes it when its channel hangs up. So a recording is
collected once both are known: the call's CDR (uniqueid, start, src, dst) and the end of
its channel (`Hangup`; a CDR whose channel we never saw alive counts as ended). The file
must then stay unchanged (size and mtime) for `settle` seconds. A file of at most 44 bytes
(`min_size` 45) is a WAV header without audio — calls never bridged (busy, unregistered
target) leave those — and is ignored.

The finished file is hard-linked into the PBX's recordings folder (`sink.recordings_dir`,
served by `/record/{uniqueid}`), copied when the two are on different file systems (or
with `mode = "copy"`), or moved (`mode = "move"`), and reported with `sink.recording`;
that is also where the transcription pipeline picks recordings up.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import time
from collections import OrderedDict
from pathlib import Path

from cloudpbx.adapters.asterisk.config import RecordingsConfig
from cloudpbx.domain.records import CdrRecord, RecordingInfo
from cloudpbx.ports.pbx import PbxSink

__all__ = ["RecordingCollector", "place_file"]

log = logging.getLogger(__name__)

_DONE_LIMIT = 10_000
_NO_MIXMONITOR_GRACE = 1.0
"""Seconds to look for the file of a call whose MixMonitorStart we did not see."""


class RecordingCollector:
    """Follows channels and CDRs of one Asterisk server; collects finished recordings."""

    def __init__(self, config: RecordingsConfig, *, name: str = "asterisk") -> None:
        self.config = config
        self.name = name
        self._sink: PbxSink | None = None
        self._live: set[str] = set()
        self._recording: set[str] = set()
        self._waiting: dict[str, tuple[str, CdrRecord]] = {}
        self._done: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.collected = 0

    def bind(self, sink: PbxSink) -> None:
        self._sink = sink

    # -- what the backend tells us -----------------------------------------------------------

    def channel_up(self, uniqueid: str) -> None:
        if uniqueid:
            self._live.add(uniqueid)

    def recording_started(self, uniqueid: str) -> None:
        """`MixMonitorStart`: this channel records, so its file is worth waiting for."""
        if uniqueid:
            self._live.add(uniqueid)
            self._recording.add(uniqueid)

    def channel_down(self, uniqueid: str) -> None:
        self._live.discard(uniqueid)
        waiting = self._waiting.pop(uniqueid, None)
        if waiting is not None:
            self._schedule(*waiting)

    def reset_channels(self) -> None:
        """The AMI connection was lost: which channels live is unknown until the resync."""
        self._live.clear()

    def resynced(self) -> None:
        """The channel listing is in: calls that ended while we were away are complete."""
        for uniqueid in [u for u in self._waiting if u not in self._live]:
            self._schedule(*self._waiting.pop(uniqueid))

    def cdr(self, pbx: str, record: CdrRecord) -> None:
        """A CDR row (live or imported): its call may have a recording."""
        uniqueid = record.uniqueid
        if uniqueid in self._done or uniqueid in self._waiting:
            return
        if uniqueid in self._live:
            self._waiting[uniqueid] = (pbx, record)
        else:
            self._schedule(pbx, record)

    async def close(self) -> None:
        """Stop collecting: pending checks are cancelled and awaited."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._waiting.clear()

    async def idle(self, wait: float = 10.0) -> None:
        """Until no collection is running (for tests), `wait` seconds at most."""
        async with asyncio.timeout(wait):
            while self._tasks:
                await asyncio.wait(set(self._tasks))

    # -- collecting --------------------------------------------------------------------------

    def _schedule(self, pbx: str, record: CdrRecord) -> None:
        uniqueid = record.uniqueid
        if uniqueid in self._done:
            return
        self._done[uniqueid] = None
        if len(self._done) > _DONE_LIMIT:
            self._done.popitem(last=False)
        expected = uniqueid in self._recording
        self._recording.discard(uniqueid)
        task = asyncio.get_running_loop().create_task(
            self._collect(pbx, record, expected), name=f"{self.name}-recording-{uniqueid}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def source(self, uniqueid: str) -> Path:
        return self.config.dir / self.config.name.format(uniqueid=uniqueid)

    async def _collect(self, pbx: str, record: CdrRecord, expected: bool) -> None:
        try:
            await self._collect_one(pbx, record, expected)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(
                "%s: recording of %s on %s not collected", self.name, record.uniqueid, pbx
            )

    async def _collect_one(self, pbx: str, record: CdrRecord, expected: bool) -> None:
        path = self.source(record.uniqueid)
        size = await self._settled(path, self.config.wait if expected else _NO_MIXMONITOR_GRACE)
        if size is None:
            if expected:
                log.warning("%s: no recording file %s after the call ended", self.name, path)
            return
        if size < self.config.min_size:
            log.debug("%s: %s is a bare header (%d bytes): no recording", self.name, path, size)
            return
        sink = self._sink
        if sink is None:
            return
        target = sink.recordings_dir(pbx) / path.name
        size = await asyncio.to_thread(place_file, path, target, self.config.mode)
        await sink.recording(
            pbx,
            RecordingInfo(
                uniqueid=record.uniqueid,
                started_at=record.started_at,
                src=record.src,
                dst=record.dst,
                format=path.suffix.lstrip(".").lower() or "wav",
                path=target.name,
                size=size,
            ),
        )
        self.collected += 1

    async def _settled(self, path: Path, wait: float) -> int | None:
        """The file's size once unchanged for `settle` s; None if it does not appear."""
        settle = self.config.settle
        poll = min(0.1, settle / 3)
        appear_by = time.monotonic() + wait
        give_up = appear_by + max(30.0, wait)
        last: tuple[int, int] | None = None
        since = 0.0
        while True:
            now = time.monotonic()
            signature = await asyncio.to_thread(_signature, path)
            if signature is None:
                if now >= appear_by:
                    return None
            elif signature != last:
                last, since = signature, now
            elif now - since >= settle or now >= give_up:
                return signature[0]
            await asyncio.sleep(poll)


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


def place_file(source: Path, target: Path, mode: str) -> int:
    """Put `source` at `target` (hard link, copy, or move); returns the size there.

    An existing `target` of the same size is kept (a second CDR row of the same call).
    """
    try:
        if target.stat().st_size == source.stat().st_size:
            return target.stat().st_size
    except FileNotFoundError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    if mode == "move":
        shutil.move(source, partial)
    elif mode == "link":
        try:
            os.link(source, partial)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            shutil.copyfile(source, partial)
    else:
        shutil.copyfile(source, partial)
    os.replace(partial, target)
    return target.stat().st_size
