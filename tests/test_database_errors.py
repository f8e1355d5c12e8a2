"""Which errors mean "the database is unreachable now" (503 with Retry-After) rather than
a bug (500): real errors from SQLAlchemy and asyncpg against real PostgreSQL servers."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from cloudpbx.api.database_errors import database_unavailable
from cloudpbx.storage.database import create_engine
from tests.conftest import PG_ADMIN_DSN
from tests.processes import free_port


async def error_of(url: str, sql: str) -> BaseException:
    engine = create_engine(url)
    try:
        with pytest.raises(Exception) as caught:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        return caught.value
    finally:
        await engine.dispose()


async def test_nothing_listening_is_unavailable() -> None:
    exc = await error_of(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", "SELECT 1")
    assert database_unavailable(exc), repr(exc)


async def test_a_connection_ended_by_the_server_is_unavailable() -> None:
    """What a restart does to open connections (57P01, then a dropped connection)."""
    engine = create_engine(PG_ADMIN_DSN)
    try:
        with pytest.raises(Exception) as caught:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        assert database_unavailable(caught.value), repr(caught.value)
    finally:
        await engine.dispose()


async def test_a_wrong_query_is_not() -> None:
    exc = await error_of(PG_ADMIN_DSN, "SELECT * FROM no_such_table_here")
    assert not database_unavailable(exc), repr(exc)


def test_a_refused_connection_elsewhere_is_not() -> None:
    """An OSError that did not come from the database's driver (an AMI, a gateway)."""
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError as exc:
        assert not database_unavailable(exc)
