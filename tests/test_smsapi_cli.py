"""`cloudpbx pbx sms NAME GATEWAY`: switching a PBX to an SMSAPI account (SQLite)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cloudpbx.cli.main import app

runner = CliRunner()


def test_set_the_gateway_and_see_the_callback_url(tmp_path: Path) -> None:
    config = tmp_path / "cloudpbx.toml"
    config.write_text(
        'sms_callback_base_url = "https://pbx.example.com"\n'
        "[smsapi.acme]\n"
        'token_env = "ACME_SMSAPI_TOKEN_NOT_NEEDED_HERE"\n'
    )
    where = ["--config", str(config), "--data", str(tmp_path)]
    assert runner.invoke(app, ["pbx", "add", "Acme", *where]).exit_code == 0

    result = runner.invoke(app, ["pbx", "sms", "Acme", "acme", *where])
    assert result.exit_code == 0, result.output
    assert "SMS gateway acme" in result.output
    assert "https://pbx.example.com/callbacks/smsapi/Acme/" in result.output
    assert (tmp_path / "sms-callback.key").stat().st_mode & 0o077 == 0
    listing = runner.invoke(app, ["pbx", "list", *where]).output
    assert "acme" in listing

    unknown = runner.invoke(app, ["pbx", "sms", "Acme", "nosuch", *where])
    assert unknown.exit_code == 0 and "no gateway nosuch" in unknown.output
    off = runner.invoke(app, ["pbx", "sms", "Acme", "none", *where])
    assert off.exit_code == 0 and "delivery reports" not in off.output
    missing = runner.invoke(app, ["pbx", "sms", "Nope", "acme", *where])
    assert missing.exit_code == 1 and "no PBX named 'Nope'" in missing.output
