"""What the `cloudpbx` commands share: consoles, and running one action on the database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from cloudpbx.domain.errors import ApiError
from cloudpbx.runtime import Runtime, build_runtime
from cloudpbx.settings import Settings

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)  # one line per message, easy to grep
T = TypeVar("T")


def run_on_database(settings: Settings, action: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run one store action against a migrated database; client errors exit 1 with a message.

    Messages are escaped before printing: they quote what the user typed (a PBX name, a
    label), and rich would read `[...]` in it as markup, or crash on `[/x]`.
    """

    async def main() -> T:
        runtime = build_runtime(settings)
        try:
            await runtime.migrate()
            return await action(runtime)
        finally:
            await runtime.engine.dispose()

    try:
        return asyncio.run(main())
    except ApiError as exc:
        errors.print(f"[red]error:[/red] {escape(exc.message)}")
        raise typer.Exit(1) from None
    except (SQLAlchemyError, OSError) as exc:
        # An unreachable or unusable database is an operator error, not a crash.
        url = escape(safe_url(settings.effective_database_url))
        errors.print(f"[red]error:[/red] database {url}: {escape(str(exc).splitlines()[0])}")
        raise typer.Exit(1) from None


def safe_url(url: str) -> str:
    """The database URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"
