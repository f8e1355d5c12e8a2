"""Alembic migrations on SQLite and PostgreSQL: the migrated schema is exactly tables.py.

Each test gets an empty database of its own (a new SQLite file; a new PostgreSQL
database next to the session's), since downgrades would wreck the shared one.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import orjson
import pytest
from alembic import command
from sqlalchemy import Column, DefaultClause, MetaData, String, Table, insert, inspect, select
from sqlalchemy.engine import Connection, make_url

from cloudpbx.domain.records import CdrRecord
from cloudpbx.domain.states import Disposition
from cloudpbx.storage.calls import cdr_row_values
from cloudpbx.storage.database import create_engine
from cloudpbx.storage.migrate import alembic_config, downgrade, schema_differences, upgrade
from cloudpbx.storage.tables import cdr, metadata
from cloudpbx.storage.tenants import Tenant

HEAD = "0007_event_log"


@pytest.fixture
def fresh_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database on the same engine as `database_url`."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    url = make_url(database_url)
    name = f"{url.database}_mig_{secrets.token_hex(3)}"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _read_schema(sync_conn: Connection) -> tuple[set[str], dict[str, set[str]]]:
    inspector = inspect(sync_conn)
    tables = set(inspector.get_table_names())
    return tables, {t: {i["name"] or "" for i in inspector.get_indexes(t)} for t in tables}


async def schema(url: str) -> tuple[set[str], dict[str, set[str]], str | None]:
    """Tables, index names per table, and the Alembic revision of the database at `url`."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            tables, indexes = await conn.run_sync(_read_schema)
            revision = None
            if "alembic_version" in tables:
                result = await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
                revision = result.scalar()
        return tables, indexes, revision
    finally:
        await engine.dispose()


async def test_migrated_schema_equals_metadata(fresh_url: str) -> None:
    engine = create_engine(fresh_url)
    try:
        await upgrade(engine)
        # What `alembic revision --autogenerate` would write: nothing (types and server
        # defaults compared too).
        assert await schema_differences(engine) == []
    finally:
        await engine.dispose()

    tables, indexes, revision = await schema(fresh_url)
    assert tables == set(metadata.tables) | {"alembic_version"}
    assert revision == HEAD
    assert {"ix_cdr_pbx_started", "ix_cdr_pbx_uniqueid"} <= indexes["cdr"]
    assert "ix_recording_pbx_started" in indexes["recording"]
    assert "ix_transcription_pbx_started" in indexes["transcription"]


async def test_upgrade_is_idempotent_and_downgrade_reverses_it(fresh_url: str) -> None:
    engine = create_engine(fresh_url)
    try:
        await upgrade(engine)
        await upgrade(engine)  # a second start of the server changes nothing
        assert await schema_differences(engine) == []
        await downgrade(engine, "base")
        tables, _, revision = await schema(fresh_url)
        assert tables == {"alembic_version"} and revision is None
        await upgrade(engine)
        assert await schema_differences(engine) == []
    finally:
        await engine.dispose()


async def test_the_comparison_does_see_differences(fresh_url: str) -> None:
    """Guard against a vacuous check: a dropped index must show up as a difference."""
    engine = create_engine(fresh_url)
    try:
        await upgrade(engine)
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DROP INDEX ix_cdr_pbx_uniqueid")
        differences = await schema_differences(engine)
        assert [d[0] for d in differences] == ["add_index"]
        assert differences[0][1].name == "ix_cdr_pbx_uniqueid"
    finally:
        await engine.dispose()


async def test_the_comparison_sees_types_and_server_defaults(fresh_url: str) -> None:
    changed = MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["cdr"].c.zone.server_default = DefaultClause("PL")
    changed.tables["api_key"].c.label.server_default = None
    changed.tables["cdr"].c.clid.type = String(200)
    engine = create_engine(fresh_url)
    try:
        await upgrade(engine)
        differences = [d for group in await schema_differences(engine, changed) for d in group]
    finally:
        await engine.dispose()
    found = {(d[0], d[2], d[3]) for d in differences}
    assert found == {
        ("modify_default", "cdr", "zone"),
        ("modify_default", "api_key", "label"),
        ("modify_type", "cdr", "clid"),
    }


def test_alembic_command_line_path(fresh_url: str) -> None:
    """`alembic upgrade head` with only a URL (no connection handed in) works too."""
    config = alembic_config(fresh_url)
    command.upgrade(config, "head")
    tables, _, revision = asyncio.run(schema(fresh_url))
    assert revision == HEAD and tables == set(metadata.tables) | {"alembic_version"}
    command.downgrade(config, "base")
    assert asyncio.run(schema(fresh_url))[0] == {"alembic_version"}


# Strings whose JSON escaping could differ between orjson and the database's own
# (control characters, quotes, backslash, slash, non-ASCII, outside the BMP, U+2028).
AWKWARD = [
    '"Zażółć gęślą" <101>',
    "tab\there, nl\nx, cr\r",
    "ctl \x01 \x08 \x0c \x1f del \x7f",
    'back\\slash /slash "quoted"',
    "emoji \U0001f600 sep \u2028 \u2029",
]


async def test_rows_stored_before_0004_are_rendered_as_the_application_renders(
    fresh_url: str,
) -> None:
    """Migration 0004 renders old rows in SQL; new rows are rendered by orjson. Both must
    be the same bytes, or one page would mix two spellings of the same JSON."""
    engine = create_engine(fresh_url)
    try:
        await upgrade(engine, "0003_jobs")
        tenant = Tenant(1, "Old", ZoneInfo("Europe/Warsaw"), None)
        records = [
            CdrRecord(
                datetime(2025, 3, 30, 0, 59, i, tzinfo=UTC),  # the night Warsaw moves to CEST
                clid=text,
                src=text,
                dst="105",
                channel=f"SIP/{text}",
                dstchannel="",
                lastapp="Dial",
                duration=i * 1000,
                billsec=i,
                disposition=Disposition.ANSWERED,
                uniqueid=f"17000.{i}",
                cost=None if i % 2 else i * 7,
                zone=text,
            )
            for i, text in enumerate(AWKWARD)
        ]
        expected = [cdr_row_values(tenant, record) for record in records]
        old_rows = [{k: v for k, v in row.items() if k != "rendered"} for row in expected]
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO pbx (id, name, timezone, created_at) "
                "VALUES (1, 'Old', 'Europe/Warsaw', '2025-01-01 00:00:00')"
            )
            old_cdr = Table("cdr", MetaData(), *(Column(name) for name in old_rows[0]))
            await conn.execute(insert(old_cdr), old_rows)
        await upgrade(engine)
        async with engine.connect() as conn:
            stored = (await conn.execute(select(cdr.c.rendered).order_by(cdr.c.id))).scalars()
            rendered = list(stored)
    finally:
        await engine.dispose()
    assert rendered == [row["rendered"] for row in expected]
    assert [orjson.loads(text)["clid"] for text in rendered] == AWKWARD
