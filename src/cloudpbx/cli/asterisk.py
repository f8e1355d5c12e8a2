"""`cloudpbx asterisk`: the Asterisk backend's tools (configuration check, CDR import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cloudpbx.adapters.asterisk.cdr import CdrConverter
from cloudpbx.adapters.asterisk.cdr_import import CdrDelivery, csv_records
from cloudpbx.adapters.asterisk.config import AsteriskConfig, ConfigError, load_config
from cloudpbx.adapters.asterisk.ledger import StoreLedger
from cloudpbx.runtime import Runtime
from cloudpbx.settings import Settings, load_settings

app = typer.Typer(
    help="The Asterisk backend: check its configuration, import CDR files.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(soft_wrap=True, highlight=False)
errors = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (also CLOUDPBX_CONFIG)", exists=True),
]
AsteriskOption = Annotated[
    Path | None,
    typer.Option("--asterisk-config", help="Asterisk TOML (default: asterisk_config setting)"),
]


def _settings(config: Path | None, asterisk: Path | None, **extra: object) -> Settings:
    return load_settings(config, asterisk_config=asterisk, **extra)


def _asterisk(settings: Settings) -> AsteriskConfig:
    if settings.asterisk_config is None:
        errors.print("[red]error:[/red] no asterisk_config (CLOUDPBX_ASTERISK_CONFIG) given")
        raise typer.Exit(2)
    try:
        return load_config(settings.asterisk_config)
    except ConfigError as exc:
        errors.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


@app.command("check")
def check(config: ConfigOption = None, asterisk_config: AsteriskOption = None) -> None:
    """Validate the Asterisk configuration and show what it serves."""
    loaded = _asterisk(_settings(config, asterisk_config))
    for server in loaded.servers:
        pbxes = ", ".join(p.name for p in server.pbx)
        console.print(
            f"{server.name}  {server.host}:{server.port}  user {server.username}: {pbxes}"
        )


@app.command("import-cdr")
def import_cdr(
    file: Annotated[Path, typer.Argument(help="A cdr_csv file (Master.csv)", exists=True)],
    server: Annotated[
        str | None, typer.Option(help="Which server's PBXes (default: the only one)")
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(help="Zone of the file's times (default: the server's cdr_csv, else UTC)"),
    ] = None,
    config: ConfigOption = None,
    asterisk_config: AsteriskOption = None,
    data: Annotated[Path | None, typer.Option("--data", help="Data folder")] = None,
    database_url: Annotated[str | None, typer.Option("--database-url")] = None,
) -> None:
    """Import the rows of a Master.csv the database lacks (each row once, ever)."""
    import asyncio
    from zoneinfo import ZoneInfo

    from cloudpbx.runtime import build_runtime

    settings = _settings(config, asterisk_config, data_dir=data, database_url=database_url)
    loaded = _asterisk(settings)
    chosen = [s for s in loaded.servers if server in (None, s.name)]
    if len(chosen) != 1:
        names = ", ".join(s.name for s in loaded.servers)
        errors.print(f"[red]error:[/red] name one server with --server ({escape(names)})")
        raise typer.Exit(2)
    target = chosen[0]
    zone_name = timezone or (target.cdr_csv.timezone if target.cdr_csv else "UTC")
    try:
        zone = ZoneInfo(zone_name)
    except Exception:
        errors.print(f"[red]error:[/red] unknown time zone {escape(zone_name)!r}")
        raise typer.Exit(2) from None
    converter = CdrConverter(target.tenants(), asterisk_tz=zone)
    ratings = {p.name: (p.rating or loaded.rating).table() for p in target.pbx}
    rows, skipped = csv_records(
        file.read_text(encoding="utf-8", errors="replace"), converter, ratings
    )

    async def run(runtime: Runtime) -> int:
        for pbx in sorted({pbx for pbx, _ in rows}):
            await runtime.tenants.require(pbx)  # a PBX not in the database is an error here
        delivery = CdrDelivery(runtime.ingest, StoreLedger(runtime.engine, runtime.tenants))
        return len(await delivery.catch_up(rows))

    async def main() -> int:
        runtime = build_runtime(settings)
        try:
            await runtime.migrate()
            return await run(runtime)
        finally:
            await runtime.engine.dispose()

    try:
        imported = asyncio.run(main())
    except Exception as exc:
        errors.print(f"[red]error:[/red] {escape(str(exc) or type(exc).__name__)}")
        raise typer.Exit(1) from None
    console.print(
        f"{imported} rows imported, {len(rows) - imported} already stored, "
        f"{skipped} of no PBX of {target.name} or unreadable"
    )
