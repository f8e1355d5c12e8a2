"""Shared by the test_asterisk_* modules (no tests here): a recording sink, configs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from cloudpbx.adapters.asterisk.cdr_import import CdrKey, cdr_key
from cloudpbx.adapters.asterisk.config import AsteriskConfig, parse_config
from cloudpbx.domain.events import Event
from cloudpbx.domain.records import CdrRecord, RecordingInfo, TranscriptionRecord

PBX = "MojaCentrala"
LAB_PBX: dict[str, Any] = {"name": PBX, "queues": ["Kolejka1"], "conferences": ["SesjaRady"]}

Item = tuple[str, dict[str, Any]]


def fake_ami_server_toml(port: int) -> str:
    """The `[[servers]]` table for the fake AMI server on `port`: pings, reconnects and
    flushes quick enough for tests."""
    return f"""
[[servers]]
name = "lab"
port = {port}
username = "api"
secret = "apisecret"
timezone = "UTC"
ping_interval = 0.5
reconnect_min = 0.05
reconnect_max = 0.2
flush_delay = 0.0
"""


class Sink:
    """A PbxSink that keeps everything; also a CdrLedger over the rows it stored."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.batches: list[tuple[str, list[Item]]] = []
        self.rows: list[tuple[str, CdrRecord]] = []
        self.recordings: list[tuple[str, RecordingInfo]] = []
        self.transcriptions: list[tuple[str, TranscriptionRecord]] = []

    async def events(self, pbx: str, events: Sequence[Event]) -> None:
        self.batches.append((pbx, [(e.event_type, e.payload()) for e in events]))

    async def cdr(self, pbx: str, record: CdrRecord) -> None:
        self.rows.append((pbx, record))

    async def cdrs(self, pbx: str, records: Sequence[CdrRecord]) -> None:
        self.rows.extend((pbx, r) for r in records)

    async def recording(self, pbx: str, info: RecordingInfo) -> None:
        self.recordings.append((pbx, info))

    async def transcription(self, pbx: str, record: TranscriptionRecord) -> None:
        self.transcriptions.append((pbx, record))

    def recordings_dir(self, pbx: str) -> Path:
        folder = self.root / pbx
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    async def stored(self, pbx: str, uniqueids: Iterable[str]) -> set[CdrKey]:
        wanted = set(uniqueids)
        return {cdr_key(p, r) for p, r in self.rows if p == pbx and r.uniqueid in wanted}

    # -- reading it back ---------------------------------------------------------------------

    def items(self, pbx: str | None = None) -> list[Item]:
        return [i for p, batch in self.batches if pbx in (None, p) for i in batch]

    def states(self, peer: str) -> list[int]:
        return [
            payload["statusValue"]
            for kind, payload in self.items()
            if kind == "subscriber" and payload["peer"] == peer
        ]

    def clear(self) -> None:
        self.batches.clear()


def server(port: int, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "name": "lab",
        "port": port,
        "username": "api",
        "secret": "apisecret",
        "connect_timeout": 1.0,
        "action_timeout": 1.0,
        "ping_interval": 0.2,
        "ping_timeout": 0.5,
        "reconnect_min": 0.05,
        "reconnect_max": 0.2,
        "auth_retry": 0.2,
        "flush_delay": 0.0,
        "pbx": [dict(LAB_PBX)],
    }
    values.update(overrides)
    return values


def config(*servers: dict[str, Any], **top: Any) -> AsteriskConfig:
    return parse_config({"servers": list(servers), **top})


async def until(predicate: Callable[[], object], seconds: float = 3.0) -> None:
    """Poll `predicate` until it holds; fail after `seconds`."""
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {seconds} s")


async def until_async(predicate: Callable[[], Awaitable[object]], seconds: float = 5.0) -> None:
    """Poll an async `predicate` (an HTTP call...) until it holds; fail after `seconds`."""
    for _ in range(int(seconds / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {seconds} s")


def last_states(items: Iterable[Item]) -> dict[tuple[str, str], dict[str, Any]]:
    """The last payload per subject: what a client shows once everything arrived."""
    state: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, payload in items:
        subject = payload.get("peer") or payload.get("exten") or payload.get("channel")
        state[(kind, f"{subject}/{payload.get('queue', '')}")] = payload
    return state
