"""No CDR lost: live `Event: Cdr` rows and the Master.csv catch-up, stored exactly once.

AMI only delivers a CDR to a connected client: rows Asterisk writes while the API is down
(or the connection is broken, or Asterisk shuts down with calls up) never come over AMI
again. cdr_csv writes the same rows to `Master.csv` (the lab: `usegmtime loguniqueid
loguserfield`; columns accountcode, src, dst, dcontext, clid, channel, dstchannel,
lastapp, lastdata, start, answer, end, duration, billsec, disposition, amaflags,
uniqueid, userfield). So on every (re)connect the backend reads Master.csv from where it
stopped last time (`MasterCsv`, offset and inode kept in a small JSON file) and stores the
rows the database does not have yet.

Exactly once (`CdrDelivery`): a row is identified by `CdrKey` — PBX, uniqueid, start,
disposition, lastapp, duration, billsec, dst, channel, dstchannel (one uniqueid may have
two rows: a failed Dial, then the rest of the leg). Live rows and imported rows pass one
lock and a ring of recently stored keys; imported rows are also checked against the
database (`CdrLedger`, one query per batch by the indexed (pbx_id, uniqueid)).
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from cloudpbx.adapters.asterisk.cdr import CdrConverter, CdrError, Rating
from cloudpbx.adapters.asterisk.framing import AmiMessage
from cloudpbx.domain.errors import NotFound
from cloudpbx.domain.records import CdrRecord
from cloudpbx.ports.pbx import PbxSink

__all__ = [
    "CSV_FIELDS",
    "CdrDelivery",
    "CdrKey",
    "CdrLedger",
    "MasterCsv",
    "cdr_key",
    "csv_message",
    "csv_records",
    "rate_record",
    "read_csv_messages",
]

log = logging.getLogger(__name__)

CSV_FIELDS = (
    "AccountCode",
    "Source",
    "Destination",
    "DestinationContext",
    "CallerID",
    "Channel",
    "DestinationChannel",
    "LastApplication",
    "LastData",
    "StartTime",
    "AnswerTime",
    "EndTime",
    "Duration",
    "BillableSeconds",
    "Disposition",
    "AMAFlags",
    "UniqueID",
    "UserField",
)
"""Master.csv's columns as the `Event: Cdr` headers of the same values."""

_UNIQUEID_COLUMN = CSV_FIELDS.index("UniqueID")
_BATCH_BYTES = 4 << 20
_RING = 20_000

CdrKey = tuple[str, str, datetime, str, str, int, int, str, str, str]


def cdr_key(pbx: str, record: CdrRecord) -> CdrKey:
    """What makes a CDR row the same row, wherever it came from."""
    started = record.started_at.astimezone(UTC).replace(tzinfo=None, microsecond=0)
    return (
        pbx,
        record.uniqueid,
        started,
        record.disposition.value,
        record.lastapp,
        record.duration,
        record.billsec,
        record.dst,
        record.channel,
        record.dstchannel,
    )


def csv_message(row: Sequence[str]) -> AmiMessage | None:
    """A Master.csv row as the `Event: Cdr` it equals; None without a uniqueid column
    (cdr_csv without `loguniqueid`: such rows cannot be told apart, so not imported)."""
    if len(row) <= _UNIQUEID_COLUMN or not row[_UNIQUEID_COLUMN]:
        return None
    return AmiMessage([("Event", "Cdr"), *zip(CSV_FIELDS, row, strict=False)])


def read_csv_messages(text: str) -> list[AmiMessage | None]:
    return [csv_message(row) for row in csv.reader(io.StringIO(text)) if row]


def csv_records(
    text: str, converter: CdrConverter, ratings: Mapping[str, Rating]
) -> tuple[list[tuple[str, CdrRecord]], int]:
    """Master.csv lines → `(pbx, record)` of the PBXes in `ratings`, rated; and how many
    rows were skipped (other PBXes, no uniqueid, unreadable)."""
    rows: list[tuple[str, CdrRecord]] = []
    skipped = 0
    for msg in read_csv_messages(text):
        converted = None
        if msg is not None:
            try:
                converted = converter.convert(msg)
            except CdrError as exc:
                log.warning("unreadable Master.csv row (%s)", exc)
        if converted is None or converted[0] not in ratings:
            skipped += 1
            continue
        pbx, record = converted
        rows.append((pbx, rate_record(record, ratings[pbx])))
    return rows, skipped


def rate_record(record: CdrRecord, rating: Rating) -> CdrRecord:
    """The record with the cost and zone of `rating` (unchanged when it does not rate it)."""
    rate = rating(record.dst, record.billsec)
    if rate is None:
        return record
    return dataclasses.replace(record, cost=rate.cost, zone=rate.zone)


class CdrLedger(Protocol):
    """Which rows of some calls the store already has."""

    async def stored(self, pbx: str, uniqueids: Iterable[str]) -> set[CdrKey]: ...


class CdrDelivery:
    """Stores live and imported CDR rows exactly once (see the module docstring)."""

    def __init__(self, sink: PbxSink, ledger: CdrLedger | None, *, ring: int = _RING) -> None:
        self._sink = sink
        self._ledger = ledger
        self._ring: OrderedDict[CdrKey, None] = OrderedDict()
        self._ring_size = ring
        self._lock = asyncio.Lock()

    def _remember(self, key: CdrKey) -> None:
        self._ring[key] = None
        if len(self._ring) > self._ring_size:
            self._ring.popitem(last=False)

    async def live(self, pbx: str, record: CdrRecord) -> bool:
        """A row from `Event: Cdr`; False when it was already stored (by the catch-up)."""
        key = cdr_key(pbx, record)
        async with self._lock:
            if key in self._ring:
                return False
            await self._sink.cdr(pbx, record)
            self._remember(key)
            return True

    async def catch_up(self, rows: Sequence[tuple[str, CdrRecord]]) -> list[tuple[str, CdrRecord]]:
        """Rows from Master.csv: stores those not stored yet; returns them."""
        async with self._lock:
            fresh: dict[CdrKey, tuple[str, CdrRecord]] = {}
            for pbx, record in rows:
                key = cdr_key(pbx, record)
                if key not in self._ring:
                    fresh.setdefault(key, (pbx, record))
            by_pbx: dict[str, list[tuple[CdrKey, CdrRecord]]] = {}
            for key, (pbx, record) in fresh.items():
                by_pbx.setdefault(pbx, []).append((key, record))
            stored: list[tuple[str, CdrRecord]] = []
            for pbx, items in by_pbx.items():
                known: set[CdrKey] = set()
                if self._ledger is not None:
                    try:
                        known = await self._ledger.stored(pbx, {r.uniqueid for _, r in items})
                    except NotFound:
                        # Configured for this server but not in the database: its rows
                        # cannot be stored (`cloudpbx asterisk import-cdr` can, later).
                        log.warning(
                            "CDR catch-up: PBX %s is not in the database; %d rows not imported",
                            pbx,
                            len(items),
                        )
                        continue
                new = [(key, record) for key, record in items if key not in known]
                for key, _ in items:
                    if key in known:
                        self._remember(key)
                if not new:
                    continue
                await self._store(pbx, [record for _, record in new])
                for key, record in new:
                    self._remember(key)
                    stored.append((pbx, record))
            return stored

    async def _store(self, pbx: str, records: list[CdrRecord]) -> None:
        many = getattr(self._sink, "cdrs", None)
        if many is not None:
            await many(pbx, records)
            return
        for record in records:
            await self._sink.cdr(pbx, record)


@dataclass(slots=True)
class _Position:
    inode: int
    offset: int


class MasterCsv:
    """Reads a growing Master.csv in batches of whole lines, from a remembered position.

    The position (inode, byte offset) is kept in `state_file` (None: in memory only). A
    file with another inode, or shorter than the position, was rotated or truncated: it
    is read from its start. The first time (no state), `start` decides: "beginning"
    imports the whole file, "end" only what is written from now on.
    """

    def __init__(
        self,
        path: Path,
        state_file: Path | None,
        *,
        start: Literal["beginning", "end"] = "beginning",
        batch_bytes: int = _BATCH_BYTES,
    ) -> None:
        self.path = path
        self.state_file = state_file
        self.start = start
        self.batch_bytes = batch_bytes
        self._position: _Position | None = None
        self._missing_logged = False

    def _load(self) -> _Position | None:
        if self._position is None and self.state_file is not None:
            try:
                data: Any = json.loads(self.state_file.read_text())
                if data.get("path") == str(self.path):
                    self._position = _Position(int(data["inode"]), int(data["offset"]))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                self._position = None
        return self._position

    @property
    def offset(self) -> int | None:
        position = self._load()
        return None if position is None else position.offset

    def commit(self, inode: int, offset: int) -> None:
        """Remember that everything before `offset` was imported."""
        self._position = _Position(inode, offset)
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_file.with_name(self.state_file.name + ".part")
        partial.write_text(
            json.dumps({"path": str(self.path), "inode": inode, "offset": offset}) + "\n"
        )
        os.replace(partial, self.state_file)

    def next_batch(self) -> tuple[str, int, int] | None:
        """(text of whole lines, inode, offset after them), or None when nothing is new.

        Blocking file I/O: run it in a thread.
        """
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            if not self._missing_logged:
                log.warning("CDR catch-up: %s does not exist (yet)", self.path)
                self._missing_logged = True
            return None
        self._missing_logged = False
        with handle:
            st = os.fstat(handle.fileno())
            position = self._load()
            if position is None:
                offset = 0 if self.start == "beginning" else st.st_size
                self.commit(st.st_ino, offset)
                position = self._position
                assert position is not None
            if position.inode != st.st_ino or st.st_size < position.offset:
                log.info("CDR catch-up: %s was rotated or truncated; reading it whole", self.path)
                position = _Position(st.st_ino, 0)
            handle.seek(position.offset)
            data = handle.read(self.batch_bytes)
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) >= self.batch_bytes:
                log.warning("CDR catch-up: skipping a line over %d bytes", self.batch_bytes)
                return "", st.st_ino, position.offset + len(data)
            return None
        return data[: end + 1].decode("utf-8", "replace"), st.st_ino, position.offset + end + 1
