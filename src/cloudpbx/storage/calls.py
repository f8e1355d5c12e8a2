"""CDR rows, recordings and transcriptions of a PBX."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    Integer,
    LargeBinary,
    Select,
    Table,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloudpbx.domain.dates import DateRange, local_timestamp
from cloudpbx.domain.records import CdrRecord, RecordingInfo, TranscriptionRecord
from cloudpbx.storage import revisions
from cloudpbx.storage.json_rows import JsonPage, json_array_of, ordered
from cloudpbx.storage.page_cache import Fingerprint, PageCache, Stamp
from cloudpbx.storage.reads import ConnectionReader, Read, SqliteReaders
from cloudpbx.storage.tables import cdr, pbx, recording, transcription
from cloudpbx.storage.tenants import Tenant, utcnow


@dataclass(frozen=True, slots=True)
class PageQuery:
    """The two statements behind a list endpoint: the JSON array and the total count
    (for `/cdr`: the fingerprint, and the fingerprint with the page)."""

    body: Select[*tuple[Any, ...]]
    count: Select[*tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class _ListReads:
    """A small list's reads: the PBX's revision of it, and (revision, count, page)."""

    name: str
    revision: Read
    page: Read


def _page_tag(key: Hashable, fingerprint: Fingerprint) -> str:
    """A strong validator of a /cdr page: the page's bytes follow from its key and its
    fingerprint (storage/page_cache.py), so the tag changes whenever the bytes can."""
    text = repr((key, fingerprint)).encode("utf-8")
    return hashlib.blake2b(text, digest_size=12, person=b"cdr-page-v1").hexdigest()


def _utc_naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def cdr_row_values(tenant: Tenant, record: CdrRecord) -> dict[str, object]:
    """The `cdr` table row of a record: times in UTC for ranges, `calldate` in the PBX zone,
    and the row's `/cdr` JSON object (`rendered`), so that no read renders it again."""
    shown: dict[str, object] = {
        "calldate": local_timestamp(record.started_at, tenant.zone),
        "clid": record.clid,
        "src": record.src,
        "dst": record.dst,
        "channel": record.channel,
        "dstchannel": record.dstchannel,
        "lastapp": record.lastapp,
        "duration": record.duration,
        "billsec": record.billsec,
        "disposition": record.disposition.value,
        "uniqueid": record.uniqueid,
        "cost": "" if record.cost is None else str(record.cost),
        "zone": record.zone,
    }
    return {
        **shown,
        "pbx_id": tenant.id,
        "started_at": _utc_naive(record.started_at),
        "cost": record.cost,
        "rendered": orjson.dumps(shown).decode("utf-8"),
    }


async def set_cdr_cost(conn: AsyncConnection, pbx_id: int, uniqueid: str, cost: int) -> None:
    """Set the cost of a stored CDR row (an SMS's, known after it was sent), with its
    rendered JSON, and bump the PBX's cdr_revision so that cached pages and ETags change."""
    rows = await conn.execute(
        select(cdr.c.id, cdr.c.rendered).where(cdr.c.pbx_id == pbx_id, cdr.c.uniqueid == uniqueid)
    )
    changed = 0
    for row_id, rendered in rows.all():
        shown = orjson.loads(rendered)
        shown["cost"] = str(cost)
        values = {"cost": cost, "rendered": orjson.dumps(shown).decode("utf-8")}
        await conn.execute(update(cdr).where(cdr.c.id == row_id).values(**values))
        changed += 1
    if changed:
        await conn.execute(
            update(pbx).where(pbx.c.id == pbx_id).values(cdr_revision=pbx.c.cdr_revision + 1)
        )


class CallStore:
    """Everything per call: billing rows, recordings, transcriptions."""

    def __init__(
        self,
        engine: AsyncEngine,
        page_cache_bytes: int = 64 * 1024 * 1024,
        readers: SqliteReaders | None = None,
    ) -> None:
        """`readers`: SQLite connections for the list reads (storage/reads.py); without
        them the lists are read through the engine's pool."""
        self._engine = engine
        self._readers = readers
        self._dialect = engine.dialect.name
        # One budget for every list's pages: /cdr keys start with the PBX's id, the other
        # lists' with their name (`_list_page`).
        self._pages = PageCache(page_cache_bytes)
        self._cdr_statements = self._cdr_page_statements()
        self._cdr_count = Read(self._cdr_statements.count, engine.dialect)
        self._cdr_body = Read(self._cdr_statements.body, engine.dialect, may_be_large=True)
        self._cdr_stamp = Read(
            select(
                select(func.max(cdr.c.id)).scalar_subquery(),
                select(pbx.c.cdr_revision).where(pbx.c.id == bindparam("pbx")).scalar_subquery(),
            ),
            engine.dialect,
        )
        self._recording_list = self._list_reads(
            "recording",
            recording,
            pbx.c.recording_revision,
            recording.c.uniqueid,
            recording.c.src,
            recording.c.dst,
            recording.c.format,
            recording.c.calldate.label("date"),
        )
        self._transcription_list = self._list_reads(
            "transcription",
            transcription,
            pbx.c.transcription_revision,
            transcription.c.uniqueid,
            transcription.c.calldate,
            transcription.c.src,
            transcription.c.dst,
        )

    # -- CDR -------------------------------------------------------------------------------

    async def add_cdrs(self, tenant: Tenant, records: Sequence[CdrRecord]) -> None:
        if not records:
            return
        async with self._engine.begin() as conn:
            await conn.execute(insert(cdr), [cdr_row_values(tenant, r) for r in records])

    async def cdr_page(self, tenant: Tenant, period: DateRange, cap: int) -> JsonPage:
        """CDR rows of `period`, oldest first, at most `cap`, as JSON bytes.

        A page rendered before is served again when the range's rows are provably the
        same (storage/page_cache.py). Otherwise one statement reads the fingerprint and
        joins the rows' stored JSON objects, so the page and the fingerprint it is cached
        (and tagged) under come from the same snapshot. Both statements are built once
        (bound parameters): building them per request cost more than running the count.
        """
        if self._readers is not None:
            return await self._cdr_page(self._readers, tenant, period, cap)
        async with self._engine.connect() as conn:
            return await self._cdr_page(ConnectionReader(conn), tenant, period, cap)

    async def _cdr_page(
        self, reader: SqliteReaders | ConnectionReader, tenant: Tenant, period: DateRange, cap: int
    ) -> JsonPage:
        low, high = period.utc_bounds()
        params = {"pbx": tenant.id, "low": low, "high": high, "cap": cap}
        key = (tenant.id, tenant.name, low, high, cap)
        stamp: Stamp | None = None
        if self._dialect == "sqlite":  # ids in commit order: see storage/page_cache.py
            newest, revision = await reader.one(self._cdr_stamp, params)
            stamp = (int(newest or 0), int(revision))
            cached = self._pages.fresh(key, stamp)
            if cached is not None:
                return cached
        if key in self._pages:  # else the count could only tell what the page read does
            count, revision = await reader.one(self._cdr_count, params)
            cached = self._pages.get(key, (int(count), int(revision)), stamp)
            if cached is not None:
                return cached
        count, revision, joined = await reader.one(self._cdr_body, params)
        fingerprint = (int(count), int(revision))
        body = b"".join((b"[", joined or b"", b"]"))  # one 3 MB copy; `+` made two
        page = JsonPage(body, fingerprint[0], cap, _page_tag(key, fingerprint))
        self._pages.put(key, fingerprint, page, stamp)
        return page

    def cdr_query(self, tenant: Tenant, period: DateRange, cap: int) -> PageQuery:
        """The statements of `cdr_page` with this request's values (for tests to EXPLAIN).

        `count` is the fingerprint (rows in the range, the PBX's cdr_revision); `body` is
        the same fingerprint and the page: the first `cap` rows' `rendered` objects, joined.
        Both are served by the index ix_cdr_pbx_started on (pbx_id, started_at).
        """
        low, high = period.utc_bounds()
        values = {"pbx": tenant.id, "low": low, "high": high, "cap": cap}
        return PageQuery(
            self._cdr_statements.body.params(values), self._cdr_statements.count.params(values)
        )

    def _cdr_page_statements(self) -> PageQuery:
        where = (
            cdr.c.pbx_id == bindparam("pbx"),
            cdr.c.started_at >= bindparam("low", type_=cdr.c.started_at.type),
            cdr.c.started_at < bindparam("high", type_=cdr.c.started_at.type),
        )
        revision = select(pbx.c.cdr_revision).where(pbx.c.id == bindparam("pbx"))
        fingerprint = select(
            func.count().label("total"), revision.scalar_subquery().label("revision")
        ).where(*where)
        rows = (
            select(cdr.c.rendered, cdr.c.started_at, cdr.c.id)
            .where(*where)
            .order_by(cdr.c.started_at, cdr.c.id)
            .limit(bindparam("cap", type_=Integer))
            .subquery("rows")
        )
        # The ordered, limited subquery feeds the aggregate in its order (as in
        # json_rows.json_array_of on SQLite; tests/test_storage_calls.py checks order and
        # ties on both engines). An ORDER BY inside string_agg would sort the 3 MB of
        # rendered rows a second time.
        #
        # The shape is the cheapest measured on PostgreSQL (docs/benchmarks.md, "Small
        # lists cached per revision; uncached /cdr on PostgreSQL"): the aggregate at the
        # top level, the fingerprint as scalar subqueries, and nothing concatenated around
        # the 3 MB (`'[' || agg || ']'` copies it twice more); 10 ms of server CPU per
        # 10,000 rows against 13 ms. The brackets are added in Python (`_cdr_page`; NULL
        # when no row matched). Bytes straight from the driver: no 3 MB decode to str and
        # encode back.
        joined: Any
        if self._dialect == "postgresql":
            joined = func.convert_to(
                func.string_agg(rows.c.rendered, literal(",")), literal("UTF8"), type_=LargeBinary
            )
        else:
            joined = cast(func.group_concat(rows.c.rendered, ","), LargeBinary)
        total = select(func.count()).select_from(cdr).where(*where).scalar_subquery()
        page = select(
            total.label("total"), revision.scalar_subquery().label("revision"), joined
        ).select_from(rows)
        return PageQuery(page, fingerprint)

    async def find_cdr(self, tenant: Tenant, uniqueid: str) -> dict[str, object] | None:
        query = select(cdr).where(cdr.c.pbx_id == tenant.id, cdr.c.uniqueid == uniqueid).limit(1)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return dict(row) if row is not None else None

    # -- recordings ------------------------------------------------------------------------

    async def add_recording(self, tenant: Tenant, info: RecordingInfo) -> bool:
        """Store a recording's row; False if the call already has one (kept as it was)."""
        values = {
            "pbx_id": tenant.id,
            "uniqueid": info.uniqueid,
            "started_at": _utc_naive(info.started_at),
            "calldate": local_timestamp(info.started_at, tenant.zone),
            "src": info.src,
            "dst": info.dst,
            "format": info.format,
            "path": info.path,
            "size": info.size,
        }
        # ON CONFLICT DO NOTHING rather than catching IntegrityError: a duplicate is a normal
        # outcome (a PBX re-announcing a file), not an error in the database's log.
        statement = (
            self._insert(recording)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["pbx_id", "uniqueid"])
        )
        async with self._engine.begin() as conn:
            added = (await conn.execute(statement)).rowcount == 1
            if added:
                await revisions.bump(conn, "recording", tenant.id)
        return bool(added)

    async def recording_page(self, tenant: Tenant, period: DateRange, cap: int) -> JsonPage:
        return await self._page(self._recording_list, tenant, period, cap)

    async def get_recording(self, tenant: Tenant, uniqueid: str) -> RecordingInfo | None:
        query = select(recording).where(
            recording.c.pbx_id == tenant.id, recording.c.uniqueid == uniqueid
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return RecordingInfo(
            uniqueid=row.uniqueid,
            started_at=row.started_at.replace(tzinfo=UTC),
            src=row.src,
            dst=row.dst,
            format=row.format,
            path=row.path,
            size=row.size,
        )

    # -- transcriptions --------------------------------------------------------------------

    async def add_transcription(self, tenant: Tenant, record: TranscriptionRecord) -> None:
        """Store (or replace, when re-run) the transcription of a call."""
        values = {
            "pbx_id": tenant.id,
            "uniqueid": record.uniqueid,
            "started_at": _utc_naive(record.started_at),
            "calldate": local_timestamp(record.started_at, tenant.zone),
            "src": record.src,
            "dst": record.dst,
            "content": record.content,
            "summary": record.summary,
            "finished_at": utcnow(),
        }
        # One INSERT ... ON CONFLICT DO UPDATE: a select-then-insert would let two runs of
        # the same call race into a unique-constraint error.
        statement = self._insert(transcription).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["pbx_id", "uniqueid"],
            set_={key: statement.excluded[key] for key in values if key != "pbx_id"},
        )
        async with self._engine.begin() as conn:
            await conn.execute(statement)
            await revisions.bump(conn, "transcription", tenant.id)

    async def transcription_page(self, tenant: Tenant, period: DateRange, cap: int) -> JsonPage:
        return await self._page(self._transcription_list, tenant, period, cap)

    async def get_transcription(self, tenant: Tenant, uniqueid: str) -> dict[str, str] | None:
        query = select(
            transcription.c.uniqueid, transcription.c.content, transcription.c.summary
        ).where(transcription.c.pbx_id == tenant.id, transcription.c.uniqueid == uniqueid)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return {"uniqueid": row.uniqueid, "content": row.content, "summary": row.summary}

    # -- shared ----------------------------------------------------------------------------

    async def _page(
        self, reads: _ListReads, tenant: Tenant, period: DateRange, cap: int
    ) -> JsonPage:
        if self._readers is not None:
            return await self._list_page(self._readers, reads, tenant, period, cap)
        async with self._engine.connect() as conn:
            return await self._list_page(ConnectionReader(conn), reads, tenant, period, cap)

    async def _list_page(
        self,
        reader: SqliteReaders | ConnectionReader,
        reads: _ListReads,
        tenant: Tenant,
        period: DateRange,
        cap: int,
    ) -> JsonPage:
        """A page rendered before is served again while the PBX's revision of the list is
        the one it was rendered under (storage/revisions.py): one primary-key read instead
        of the list's query. Otherwise one statement reads the revision, the count and the
        page from one snapshot, and the page is cached under that revision."""
        low, high = period.utc_bounds()
        key = (reads.name, tenant.id, low, high, cap)
        params = {"pbx": tenant.id, "low": low, "high": high, "cap": cap}
        (revision,) = await reader.one(reads.revision, params)
        cached = self._pages.get(key, (int(revision),))
        if cached is not None:
            return cached
        revision, total, body = await reader.one(reads.page, params)
        page = JsonPage(body.encode("utf-8"), int(total), cap)
        self._pages.put(key, (int(revision),), page)
        return page

    def _list_reads(self, name: str, table: Table, revision: Any, *columns: Any) -> _ListReads:
        """The PBX's `revision` of the list, and (that revision, rows in the range, their
        first `cap` as a JSON array) in one statement built once: one round trip, and no
        statement building per request. A deleted PBX reads as revision -1 (its id is
        never reused, so nothing is ever served from that key). Under READ COMMITTED a
        statement sees one snapshot, so the revision names exactly the rows read with it."""
        current = func.coalesce(
            select(revision).where(pbx.c.id == bindparam("pbx")).scalar_subquery(), -1
        )
        where = (
            table.c.pbx_id == bindparam("pbx"),
            table.c.started_at >= bindparam("low", type_=table.c.started_at.type),
            table.c.started_at < bindparam("high", type_=table.c.started_at.type),
        )
        rows = (
            select(*columns, *ordered([table.c.started_at, table.c.id]))
            .where(*where)
            .order_by(table.c.started_at, table.c.id)
            .limit(bindparam("cap", type_=Integer))
        )
        count = select(func.count()).select_from(table).where(*where).scalar_subquery()
        body = json_array_of(self._dialect, rows).scalar_subquery()
        page = select(current.label("revision"), count.label("total"), body.label("body"))
        return _ListReads(
            name,
            Read(select(current.label("revision")), self._engine.dialect),
            Read(page, self._engine.dialect),
        )

    def _insert(self, table: Table) -> postgresql.Insert | sqlite.Insert:
        """The dialect's INSERT, which has ON CONFLICT (both SQLite and PostgreSQL do)."""
        if self._dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    async def count_cdrs(self, tenant: Tenant) -> int:
        query = select(func.count()).select_from(cdr).where(cdr.c.pbx_id == tenant.id)
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())
