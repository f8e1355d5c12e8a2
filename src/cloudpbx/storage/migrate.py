"""Schema migrations (Alembic), run by `cloudpbx db upgrade` and at server start."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Column, MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from cloudpbx.storage.tables import metadata

_SCRIPTS = Path(__file__).parent / "migrations"
_QUOTED = re.compile(r"'(.*)'", re.DOTALL)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database behind `engine` to `revision`, in one transaction."""

    def _upgrade(connection: Connection) -> None:
        config = alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    """Take the schema back to `revision` (tests and disaster recovery only)."""

    def _downgrade(connection: Connection) -> None:
        config = alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(_downgrade)


def compare_server_default(
    context: MigrationContext,
    inspected_column: Column[Any],
    metadata_column: Column[Any],
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """Alembic hook: settle the one case its SQLite comparison gets wrong.

    SQLite reflects `server_default=""` as `('')`, and Alembic strips quotes with
    `'(.+)'`, which needs at least one character: an empty-string default would always
    look changed. On SQLite, plain string defaults are compared here by their text;
    everything else is left to Alembic (None).
    """
    if context.dialect.name != "sqlite" or inspected_default is None:
        return None
    wanted = getattr(metadata_default, "arg", None)
    if not isinstance(wanted, str):
        return None
    text = inspected_default
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    literal = _QUOTED.fullmatch(text)
    if literal is None:
        return None
    return literal.group(1).replace("''", "'") != wanted


COMPARE_OPTIONS: dict[str, Any] = {
    "compare_type": True,
    "compare_server_default": compare_server_default,
}


async def schema_differences(engine: AsyncEngine, target: MetaData = metadata) -> list[Any]:
    """What `alembic revision --autogenerate` would emit against this database: [] when the
    migrated schema is exactly `target` (types and server defaults included)."""

    def _compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts=COMPARE_OPTIONS)
        return list(compare_metadata(context, target))

    async with engine.connect() as connection:
        return await connection.run_sync(_compare)
