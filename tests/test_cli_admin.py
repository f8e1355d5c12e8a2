"""`cloudpbx pbx|key|db` against a real database (SQLite in --data, and PostgreSQL).

Most runs go through typer's CliRunner on `cloudpbx.cli.main:app` (in process, fast);
one runs the installed console script itself, to see what an operator sees.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cloudpbx.cli.main import app
from cloudpbx.storage.database import create_engine
from cloudpbx.storage.tenants import Tenant, TenantStore

runner = CliRunner()


class Cli:
    """Runs `cloudpbx` against one database: `--data` (SQLite) or `--database-url`."""

    def __init__(self, data: Path, database_url: str | None) -> None:
        self.data = data
        self.database_url = database_url
        self.created: list[str] = []

    @property
    def location(self) -> list[str]:
        args = ["--data", str(self.data)]
        if self.database_url is not None:
            args += ["--database-url", self.database_url]
        return args

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data / 'cloudpbx.db').resolve()}"

    def __call__(self, *args: str, input: str | None = None) -> Result:
        result = runner.invoke(app, [*args, *self.location], input=input)
        # Nothing may escape as an exception: errors are messages and exit codes.
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def add_pbx(self, *extra: str) -> str:
        name = f"Cli_{secrets.token_hex(4)}"
        result = self("pbx", "add", name, *extra)
        assert result.exit_code == 0, result.output
        self.created.append(name)
        return name

    def authenticate(self, key: str) -> Tenant | None:
        async def check() -> Tenant | None:
            engine = create_engine(self.url)
            try:
                return await TenantStore(engine).authenticate(key)
            finally:
                await engine.dispose()

        return asyncio.run(check())


def assert_error(result: Result, *phrases: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in result.stderr, (phrase, result.stderr)


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    for name in list(os.environ):
        if name.startswith("CLOUDPBX_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")  # rich reads it when printing; tables stay unwrapped
    cli = Cli(tmp_path / "data", None if database_url.startswith("sqlite") else database_url)
    yield cli
    for name in cli.created:
        cli("pbx", "remove", name, "--yes")


def test_db_upgrade(cli: Cli) -> None:
    result = cli("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "database is up to date" in result.stdout
    if cli.database_url is None:
        assert (cli.data / "cloudpbx.db").is_file()
    assert cli("db", "upgrade").exit_code == 0  # idempotent


def test_pbx_add_list_remove(cli: Cli) -> None:
    warsaw = cli.add_pbx()
    new_york = cli.add_pbx("--timezone", "America/New_York", "--sms-gateway", "simulator")

    listed = cli("pbx", "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert any(warsaw in line and "Europe/Warsaw" in line for line in lines), listed.stdout
    assert any(
        new_york in line and "America/New_York" in line and "simulator" in line for line in lines
    ), listed.stdout

    # Without --yes it asks; a "no" keeps the PBX.
    kept = cli("pbx", "remove", warsaw, input="n\n")
    assert kept.exit_code == 1 and warsaw in cli("pbx", "list").stdout

    removed = cli("pbx", "remove", warsaw, "--yes")
    assert removed.exit_code == 0, removed.output
    assert f"removed PBX {warsaw}" in removed.stdout
    assert warsaw not in cli("pbx", "list").stdout
    assert_error(cli("pbx", "remove", warsaw, "--yes"), "no PBX named", warsaw)


def test_key_create_list_revoke(cli: Cli) -> None:
    name = cli.add_pbx()
    created = cli("key", "create", name, "--label", "wallboard")
    assert created.exit_code == 0, created.output
    # stdout is the key and nothing else (scripts capture it); the notice goes to stderr.
    key = created.stdout.strip()
    assert created.stdout == f"{key}\n" and key.startswith("cpbx_")
    assert "shown once" in created.stderr and key not in created.stderr
    tenant = cli.authenticate(key)
    assert tenant is not None and tenant.name == name

    listed = cli("key", "list", name)
    assert listed.exit_code == 0, listed.output
    assert key[:9] in listed.stdout  # the prefix an operator recognises
    assert key[:12] not in listed.stdout and key not in listed.stdout
    (row,) = [line for line in listed.stdout.splitlines() if "wallboard" in line]
    key_id = row.split()[1]  # "│ 7 │ name │ ..."
    assert key_id.isdigit() and "-" in row  # not revoked

    everything = cli("key", "list")
    assert everything.exit_code == 0 and key[:9] in everything.stdout

    revoked = cli("key", "revoke", key_id)
    assert revoked.exit_code == 0, revoked.output
    assert f"revoked key {key_id}" in revoked.stdout
    assert cli.authenticate(key) is None
    assert_error(cli("key", "revoke", key_id), "no active key")


def test_key_import(cli: Cli) -> None:
    name = cli.add_pbx()
    value = f"legacy-{secrets.token_hex(8)}"
    created = cli("key", "create", name, "--value", value)
    assert created.exit_code == 0 and created.stdout == f"{value}\n"
    tenant = cli.authenticate(value)
    assert tenant is not None and tenant.name == name
    listed = cli("key", "list", name).stdout
    assert value[:5] in listed and value[:6] not in listed  # a quarter of 23 characters
    assert_error(cli("key", "create", name, "--value", value), "already in use")
    assert_error(cli("key", "create", name, "--value", "short"), "12-256 visible ASCII")


def test_errors_are_messages_not_tracebacks(cli: Cli) -> None:
    name = cli.add_pbx()
    assert_error(cli("pbx", "add", name), "already exists", name)
    assert_error(cli("pbx", "add", "Moja Centrala"), "PBX name must be")
    # What the user typed is quoted back literally, never read as rich markup.
    assert_error(cli("pbx", "add", "[/x]"), "got '[/x]'")
    assert_error(cli("pbx", "add", "[bold]x"), "got '[bold]x'")
    assert_error(cli("pbx", "add", "Ok_name", "--timezone", "Mars/Olympus"), "Mars/Olympus")
    assert_error(cli("key", "create", "NoSuchPbx_x"), "no PBX named 'NoSuchPbx_x'")
    assert_error(cli("key", "list", "NoSuchPbx_x"), "no PBX named")
    assert_error(cli("key", "revoke", "999999999"), "no active key")


def test_labels_are_shown_literally(cli: Cli) -> None:
    name = cli.add_pbx()
    assert cli("key", "create", name, "--label", "[red]alarm[/red] [/x]").exit_code == 0
    listed = cli("key", "list", name)
    assert listed.exit_code == 0, listed.output
    assert "[red]alarm[/red] [/x]" in listed.stdout


def test_unreachable_database_is_a_message(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["pbx", "list", "--database-url", "postgresql://nobody:secret@127.0.0.1:1/none"]
    )
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: database postgresql://nobody:***@127.0.0.1:1/none")
    assert "secret" not in result.output


def test_console_script(tmp_path: Path) -> None:
    """The installed `cloudpbx` entry point, as an operator runs it (SQLite in --data)."""
    script = Path(sys.executable).with_name("cloudpbx")
    executable = str(script) if script.exists() else shutil.which("cloudpbx")
    assert executable, "the cloudpbx console script is not installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPBX_")}
    data = ["--data", str(tmp_path)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [executable, *args, *data], capture_output=True, text=True, env=env, timeout=60
        )

    assert run("pbx", "add", "MojaCentrala").returncode == 0
    created = run("key", "create", "MojaCentrala")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == f"{key}\n" and key.startswith("cpbx_")

    async def check() -> Tenant | None:
        engine = create_engine(f"sqlite:///{tmp_path / 'cloudpbx.db'}")
        try:
            return await TenantStore(engine).authenticate(key)
        finally:
            await engine.dispose()

    tenant = asyncio.run(check())
    assert tenant is not None and tenant.name == "MojaCentrala"

    duplicate = run("pbx", "add", "MojaCentrala")
    assert duplicate.returncode == 1
    assert duplicate.stderr == "error: PBX 'MojaCentrala' already exists\n"
    assert duplicate.stdout == ""
    unknown = run("key", "create", "Nope")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
    assert unknown.stderr == "error: no PBX named 'Nope'\n"
