"""`cloudpbx asterisk check|import-cdr` (cloudpbx.cli.asterisk), in process."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudpbx.cli.asterisk import app
from cloudpbx.runtime import build_runtime
from tests.fakes.ami_server import DATA
from tests.live import make_settings

runner = CliRunner()

TOML = """
[[servers]]
name = "lab"
username = "api"
secret = "apisecret"

[[servers.pbx]]
name = "MojaCentrala"

[rating.prefixes]
"48" = { zone = "Polska", per_minute = 20 }
"""


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CLOUDPBX_"):
            monkeypatch.delenv(name)


def count_cdrs(data: Path) -> int:
    async def count() -> int:
        runtime = build_runtime(make_settings(data))
        try:
            return await runtime.calls.count_cdrs(await runtime.tenants.require("MojaCentrala"))
        finally:
            await runtime.engine.dispose()

    return asyncio.run(count())


def test_check_and_import(tmp_path: Path) -> None:
    toml = tmp_path / "asterisk.toml"
    toml.write_text(TOML)
    data = tmp_path / "data"
    master = tmp_path / "Master.csv"
    master.write_text(
        (DATA / "originate.cdr.csv").read_text()
        + (DATA / "failed.cdr.csv").read_text()
        + '"InnaCentrala","201","202","InnaCentrala","","PJSIP/InnaCentrala-201-00000001",'
        '"","Dial","","2026-11-28 04:00:00","","2026-11-28 04:00:01",1,0,"NO ANSWER",'
        '"DOCUMENTATION","1795839999.1",""\n'
    )
    checked = runner.invoke(app, ["check", "--asterisk-config", str(toml)])
    assert checked.exit_code == 0, checked.output
    assert "lab  127.0.0.1:5038  user api: MojaCentrala" in checked.output

    args = ["import-cdr", str(master), "--asterisk-config", str(toml), "--data", str(data)]
    missing = runner.invoke(app, args)
    assert missing.exit_code == 1 and "MojaCentrala" in missing.stderr  # no such PBX yet

    async def create() -> None:
        runtime = build_runtime(make_settings(data))
        try:
            await runtime.migrate()
            await runtime.tenants.create("MojaCentrala", "Europe/Warsaw")
        finally:
            await runtime.engine.dispose()

    asyncio.run(create())
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "5 rows imported, 0 already stored, 1 of no PBX of lab" in first.output
    again = runner.invoke(app, args)
    assert "0 rows imported, 5 already stored" in again.output
    assert count_cdrs(data) == 5


def test_bad_configuration_is_a_message(tmp_path: Path) -> None:
    toml = tmp_path / "asterisk.toml"
    toml.write_text("[[servers]]\nname = 'x'\n")
    result = runner.invoke(app, ["check", "--asterisk-config", str(toml)])
    assert result.exit_code == 2
    assert "servers.0.username" in result.stderr and "Traceback" not in result.output
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 2 and "no asterisk_config" in result.stderr
