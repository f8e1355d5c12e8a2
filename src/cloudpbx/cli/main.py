"""`cloudpbx`: serve, demo, tenants and keys, migrations."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cloudpbx.cli.asterisk import app as asterisk_app
from cloudpbx.cli.client import app as client_app
from cloudpbx.cli.common import console, errors, run_on_database
from cloudpbx.cli.lab import app as lab_app
from cloudpbx.cli.worker import register as register_worker_commands
from cloudpbx.runtime import Runtime
from cloudpbx.settings import Settings, load_settings

app = typer.Typer(help="CloudPBX API server.", no_args_is_help=True, add_completion=False)
pbx_app = typer.Typer(help="PBXes (tenants).", no_args_is_help=True)
key_app = typer.Typer(help="API keys: printed once, stored hashed.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(pbx_app, name="pbx")
app.add_typer(key_app, name="key")
app.add_typer(db_app, name="db")
app.add_typer(client_app, name="client", help="Talk to a CloudPBX API server (any, not just ours).")
app.add_typer(asterisk_app, name="asterisk")
app.add_typer(lab_app, name="lab", help="A real Asterisk lab on 127.0.0.1 (root, Debian).")
register_worker_commands(app)  # worker, transcribe, jobs (cli/worker.py)


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file (also CLOUDPBX_CONFIG)", exists=True),
]
DataOption = Annotated[
    Path | None, typer.Option("--data", help="Data folder (SQLite file, recordings)")
]
DatabaseOption = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL (default: SQLite in --data)")
]


def _settings(
    config: Path | None, data: Path | None = None, database: str | None = None, **extra: object
) -> Settings:
    try:
        return load_settings(config, data_dir=data, database_url=database, **extra)
    except ValidationError as exc:  # a setting's value is never echoed (hide_input_in_errors)
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) + ': ' if error['loc'] else ''}"
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        errors.print(f"[red]invalid settings:[/red] {escape(problems)}")
        raise typer.Exit(2) from None


def _table(*columns: str, wrap: frozenset[str] | set[str] = frozenset()) -> Table:
    """A listing whose identifiers never wrap (a narrow terminal or a pipe is 80 columns):
    names, ids and key prefixes stay whole on one line, so they can be copied or grepped."""
    table = Table()
    for column in columns:
        table.add_column(column, no_wrap=column not in wrap)
    return table


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


@app.command()
def serve(
    config: ConfigOption = None,
    data: DataOption = None,
    database_url: DatabaseOption = None,
    host: Annotated[str | None, typer.Option(help="Listen address")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Server processes on the port (>1 needs PostgreSQL and event_engine_url)"
        ),
    ] = None,
) -> None:
    """Run the API server with the backends named in the configuration."""
    from cloudpbx.server import serve as serve_forever
    from cloudpbx.supervisor import WorkersRefused, run_workers

    settings = _settings(config, data, database_url, host=host, port=port, workers=workers)
    _logging(settings.log_level)
    if settings.workers == 1:
        asyncio.run(serve_forever(settings))
        return
    try:
        run_workers(settings)
    except WorkersRefused as exc:
        errors.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Listen address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Listen port")] = 8080,
    key: Annotated[str | None, typer.Option(help="Use this API key instead of a new one")] = None,
    data: Annotated[Path, typer.Option(help="Data folder")] = Path("cloudpbx-data"),
    seed: Annotated[int | None, typer.Option(help="Seed of the simulated PBX")] = None,
    rate: Annotated[float, typer.Option(help="New simulated calls per second")] = 0.15,
) -> None:
    """Server + simulated PBX `MojaCentrala` + simulated SMS gateway, ready to try."""
    from cloudpbx.demo import DEMO_PBX, prepare_demo
    from cloudpbx.server import serve as serve_forever

    settings = load_settings(
        None,
        data_dir=data,
        host=host,
        port=port,
        backend="simulator",
        sms_gateway="simulator",
        simulator_seed=seed,
        simulator_rate=rate,
        transcription_workers=1,  # one in-process transcription worker (docs/transcription.md)
    )
    _logging(settings.log_level)
    demo = run_on_database(settings, lambda runtime: prepare_demo(runtime, key))
    base = f"http://{host}:{port}"
    ws = f"ws://{host}:{port}"
    auth = f"-H 'Authorization: Bearer {demo.key}'"
    console.print(f"[bold]cloudpbx demo[/bold]: PBX [cyan]{DEMO_PBX}[/cyan], data in {data}")
    console.print(f"  API URL:   {base}")
    console.print(f"  API key:   [green]{demo.key}[/green]")
    console.print(f"  WebSocket: {ws}/ws/pbx_{DEMO_PBX}?pbxkey={demo.key}")
    console.print(f"  API docs:  {base}/docs")
    console.print(f"  Panel:     {base}/panel/?pbx={DEMO_PBX}  (log in with the API key)")
    console.print(f"  try:       curl {auth} {base}/cdr")
    console.print(
        f"             curl {auth} '{base}/dial?cpa=101&cpb=200'  (101 is kept for /dial)"
    )
    if demo.transcription_problems:
        # The simulated calls come with their transcripts; a worker is only for recordings
        # without one, so the demo goes on without it and says so calmly.
        console.print(
            "  transcripts: written by the simulated PBX with each recording; no "
            "transcription worker runs here "
            f"({escape('; '.join(demo.transcription_problems))})"
        )
        settings = settings.model_copy(update={"transcription_workers": 0})
    asyncio.run(serve_forever(settings))


@pbx_app.command("add")
def pbx_add(
    name: str,
    timezone: Annotated[str, typer.Option(help="IANA time zone of the PBX")] = "Europe/Warsaw",
    sms_gateway: Annotated[
        str | None, typer.Option(help="SMS gateway name, e.g. simulator")
    ] = None,
    config: ConfigOption = None,
    data: DataOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create a PBX (name: letters, digits, '_' and '-')."""
    tenant = run_on_database(
        _settings(config, data, database_url),
        lambda runtime: runtime.tenants.create(name, timezone, sms_gateway),
    )
    console.print(f"created PBX {escape(tenant.name)} ({escape(tenant.timezone)})")


@pbx_app.command("list")
def pbx_list(
    config: ConfigOption = None, data: DataOption = None, database_url: DatabaseOption = None
) -> None:
    """List PBXes."""
    tenants = run_on_database(
        _settings(config, data, database_url), lambda runtime: runtime.tenants.list()
    )
    table = _table("name", "time zone", "SMS gateway")
    for tenant in tenants:
        table.add_row(Text(tenant.name), Text(tenant.timezone), Text(tenant.sms_gateway or "-"))
    console.print(table)


@pbx_app.command("remove")
def pbx_remove(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask")] = False,
    config: ConfigOption = None,
    data: DataOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Delete a PBX with its keys, call records and history."""
    if not yes:
        typer.confirm(f"Delete PBX {name} and all its data?", abort=True)
    run_on_database(
        _settings(config, data, database_url), lambda runtime: runtime.tenants.remove(name)
    )
    console.print(f"removed PBX {escape(name)}")


@pbx_app.command("sms")
def pbx_sms(
    name: str,
    gateway: Annotated[
        str, typer.Argument(help="'simulator', an [smsapi.NAME] account of the config, or 'none'")
    ],
    config: ConfigOption = None,
    data: DataOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Set the SMS gateway of a PBX (docs/sms.md); shows its delivery-report URL."""
    settings = _settings(config, data, database_url)
    value = None if gateway == "none" else gateway
    if value is not None and not 1 <= len(value) <= 32:
        errors.print("[red]error:[/red] a gateway name is 1-32 characters")
        raise typer.Exit(1)
    if value not in (None, "simulator", *settings.smsapi):
        errors.print(
            f"[yellow]warning:[/yellow] no gateway {escape(gateway)} in this configuration: "
            "sendSMS answers 403 until the server has one"
        )

    async def action(runtime: Runtime) -> str | None:
        await runtime.tenants.set_sms_gateway(name, value)
        signer = runtime.sms_callbacks
        return signer.url(name) if signer is not None and value in settings.smsapi else None

    url = run_on_database(settings, action)
    console.print(f"PBX {escape(name)}: SMS gateway {escape(gateway)}")
    if url:
        console.print(f"delivery reports: {escape(url)}")


@key_app.command("create")
def key_create(
    pbx: str,
    label: Annotated[str, typer.Option(help="What the key is for")] = "",
    value: Annotated[str | None, typer.Option(help="Import an existing key")] = None,
    config: ConfigOption = None,
    data: DataOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Issue an API key for a PBX; it is printed once and stored only as a hash."""
    key = run_on_database(
        _settings(config, data, database_url),
        lambda runtime: runtime.tenants.create_key(pbx, label, value),
    )
    errors.print(f"API key for {escape(pbx)} (shown once, store it now):")
    print(key)


@key_app.command("list")
def key_list(
    pbx: Annotated[str | None, typer.Argument(help="Only this PBX's keys")] = None,
    config: ConfigOption = None,
    data: DataOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """List keys (their first characters only)."""
    keys = run_on_database(
        _settings(config, data, database_url), lambda runtime: runtime.tenants.list_keys(pbx)
    )
    table = _table("id", "pbx", "starts with", "label", "created", "revoked", wrap={"label"})
    for item in keys:
        table.add_row(
            str(item.id),
            Text(item.pbx),
            Text(item.prefix + "…"),
            Text(item.label),
            f"{item.created_at:%Y-%m-%d %H:%M}",
            f"{item.revoked_at:%Y-%m-%d %H:%M}" if item.revoked_at else "-",
        )
    console.print(table)


@key_app.command("revoke")
def key_revoke(
    key_id: int,
    config: ConfigOption = None,
    data: DataOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Revoke a key by id (see `key list`); it stops working at once."""
    run_on_database(
        _settings(config, data, database_url), lambda runtime: runtime.tenants.revoke_key(key_id)
    )
    console.print(f"revoked key {key_id}")


@db_app.command("upgrade")
def db_upgrade(
    config: ConfigOption = None, data: DataOption = None, database_url: DatabaseOption = None
) -> None:
    """Apply schema migrations (the server also does this when it starts)."""

    async def noop(_runtime: object) -> None:
        return None

    run_on_database(_settings(config, data, database_url), noop)
    console.print("database is up to date")
