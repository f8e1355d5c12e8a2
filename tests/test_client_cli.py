"""`cloudpbx client ...` against the real server: every command, formats, exit codes."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from cloudpbx.cli.client import app
from cloudpbx.domain import events as domain
from cloudpbx.domain.states import DeviceState, MemberStatus
from tests.conftest import Tenants, create_tenants
from tests.live import LiveServer, make_settings, running
from tests.test_client_helpers import (
    DialBackend,
    add_cdrs,
    add_recording,
    add_transcription,
    at,
    audio,
    cdr_record,
)

Live = tuple[LiveServer, Tenants]


async def cli(
    server: LiveServer | None, key: str, *args: str, env: dict[str, str] | None = None
) -> Result:
    """Run the CLI in a thread (the server runs in this loop), configured by environment."""
    variables = {"COLUMNS": "200", "XDG_CONFIG_HOME": "/nonexistent"}
    if server is not None:
        variables |= {"CLOUDPBX_URL": server.url, "CLOUDPBX_KEY": key}
    variables |= {"CLOUDPBX_PBX": "MojaCentrala", **(env or {})}
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, app, list(args), env=variables)


async def seed_calls(server: LiveServer, pbx: str) -> None:
    await add_cdrs(
        server,
        pbx,
        [
            cdr_record("1772539200.1", at("2026-03-03")),
            cdr_record("1772539200.2", at("2026-03-04"), cost=None, clid='"Zoë, \\"x\\"" <102>'),
        ],
    )


async def test_cdr_formats(live: Live) -> None:
    server, tenants = live
    await seed_calls(server, tenants.a_name)
    args = ("cdr", "--from", "2026-03-01", "--to", "2026-03-31")
    as_json = await cli(server, tenants.a_key, *args, "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)
    assert [row["uniqueid"] for row in rows] == ["1772539200.1", "1772539200.2"]
    assert rows[1]["cost"] == "" and rows[0]["duration"] == 30  # the server's own objects
    ndjson = await cli(server, tenants.a_key, *args, "-F", "ndjson")
    assert [json.loads(line) for line in ndjson.stdout.splitlines()] == rows
    as_csv = await cli(server, tenants.a_key, *args, "-F", "csv")
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert parsed[1]["clid"] == rows[1]["clid"] and list(parsed[0])[:3] == [
        "calldate",
        "clid",
        "src",
    ]
    table = await cli(server, tenants.a_key, *args)
    assert table.exit_code == 0 and "1772539200.2" in table.stdout and "ANSWERED" in table.stdout
    empty = await cli(
        server, tenants.a_key, "cdr", "--from", "2020-01-01", "--to", "2020-01-01", "-F", "json"
    )
    assert json.loads(empty.stdout) == []


async def test_recordings_transcriptions_and_downloads(live: Live, tmp_path: Path) -> None:
    server, tenants = live
    data = {f"1772539200.{n}": audio(50_000 + n) for n in range(1, 6)}
    for uid, body in data.items():
        await add_recording(server, tenants.a_name, uid, body, at("2026-03-05"))
    await add_transcription(
        server, tenants.a_name, "1772539200.1", at("2026-03-05"), "Treść", "Streszczenie"
    )
    key = tenants.a_key
    listed = await cli(
        server, key, "recordings", "-f", "2026-03-05", "-t", "2026-03-05", "-F", "json"
    )
    assert [r["uniqueid"] for r in json.loads(listed.stdout)] == list(data)
    items = await cli(
        server, key, "transcriptions", "-f", "2026-03-05", "-t", "2026-03-05", "-F", "ndjson"
    )
    assert json.loads(items.stdout)["uniqueid"] == "1772539200.1"
    text = await cli(server, key, "transcription", "1772539200.1")
    assert "Streszczenie" in text.stdout and "Treść" in text.stdout
    raw = await cli(server, key, "transcription", "1772539200.1", "--json")
    assert json.loads(raw.stdout) == {
        "uniqueid": "1772539200.1",
        "content": "Treść",
        "summary": "Streszczenie",
    }
    # one recording, to a file, then resumed from a .part
    got = await cli(server, key, "record", "get", "1772539200.1", "-o", str(tmp_path / "one.wav"))
    assert got.exit_code == 0, got.output
    assert (tmp_path / "one.wav").read_bytes() == data["1772539200.1"]
    (tmp_path / "two.wav.part").write_bytes(data["1772539200.2"][:1000])
    resumed = await cli(
        server, key, "record", "get", "1772539200.2", "-o", str(tmp_path / "two.wav")
    )
    assert "resumed at 1000" in resumed.stdout
    assert (tmp_path / "two.wav").read_bytes() == data["1772539200.2"]
    # sync: every missing file, in parallel; a half-done one is continued; then nothing to do
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / "1772539200.3.wav").write_bytes(data["1772539200.3"])
    (folder / "1772539200.4.wav.part").write_bytes(data["1772539200.4"][:777])
    synced = await cli(
        server,
        key,
        "record",
        "sync",
        str(folder),
        "-f",
        "2026-03-05",
        "-t",
        "2026-03-05",
        "-j",
        "3",
    )
    assert synced.exit_code == 0, synced.output
    assert "5 recordings: 4 downloaded, 1 already present, 0 failed" in synced.stdout
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {
        f"{u}.wav": b for u, b in data.items()
    }
    again = await cli(
        server, key, "record", "sync", str(folder), "-f", "2026-03-05", "-t", "2026-03-05"
    )
    assert "0 downloaded, 5 already present" in again.stdout


async def test_dial_and_sms(live: Live) -> None:
    server, tenants = live
    server.runtime.backends.append(DialBackend(tenants.a_name))
    ok = await cli(server, tenants.a_key, "dial", "101", "600100200")
    assert (ok.exit_code, ok.stdout) == (0, "OK\torig-1\n")
    refused = await cli(server, tenants.a_key, "dial", "101", "666")
    assert refused.exit_code == 6 and "Action Error" in refused.stderr
    sent = await cli(server, tenants.a_key, "sms", "send", "600100200", "Cześć", "--test")
    assert sent.exit_code == 0 and sent.stdout.strip().endswith("\tQUEUE")
    as_json = await cli(server, tenants.a_key, "sms", "send", "48600100200", "Hi", "--json")
    assert json.loads(as_json.stdout)["responseStatus"] == "QUEUE"
    missing = await cli(server, tenants.a_key, "sms", "send", "12", "Hi")
    assert missing.exit_code == 5 and "Parameter is missing" in missing.stderr


async def publish_sample(server: LiveServer, pbx: str) -> None:
    tenant = await server.runtime.tenants.require(pbx)
    await server.runtime.hub.publish(
        tenant,
        [
            domain.Subscriber(f"{pbx}-101", DeviceState.RINGING, "600100200", "Jan"),
            domain.QueueCalls("Kolejka1", 2),
            domain.QueueMember(
                f"{pbx}-102",
                "Kolejka1",
                MemberStatus.IN_USE,
                4,
                True,
                False,
                "Ola",
                f"SIP/{pbx}-102",
            ),
            domain.ConferenceMember(f"SIP/{pbx}-104-0005f005", "add", "SesjaRady", "Ewa", "104"),
        ],
    )
    await server.runtime.hub.publish(tenant, [domain.ExtStatus("130", DeviceState.UNAVAILABLE)])


async def test_events_views(live: Live) -> None:
    server, tenants = live
    await publish_sample(server, tenants.a_name)
    key = tenants.a_key
    as_json = await cli(server, key, "events", "--json", "--since", "0", "--count", "5")
    assert as_json.exit_code == 0, as_json.output
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [r["type"] for r in records] == [
        "subscriber",
        "queue",
        "qmember",
        "cmember",
        "extstatus",
    ]
    assert records[0]["event"]["connectPeerNumber"] == "600100200"
    first = records[0]["id"]
    assert [r["id"] for r in records] == list(range(first, first + 5))  # one event each
    english = await cli(server, key, "events", "--since", "0", "--count", "5")
    assert "101: Ringing ↔ 600100200 (Jan)" in english.stdout
    assert "phone 130: Unavailable" in english.stdout
    assert "agent 102 (Ola) in Kolejka1: In use, 4 calls taken" in english.stdout
    assert "Ewa <104> joined conference SesjaRady" in english.stdout
    polish = await cli(server, key, "events", "--since", "0", "--count", "5", "--lang", "pl")
    assert "101: Dzwoni" in polish.stdout and "aparat 130: Niedostępny" in polish.stdout
    watch = await cli(server, key, "events", "--watch", "--since", "0", "--count", "5")
    assert watch.exit_code == 0, watch.output
    for text in (
        "Extensions",
        "Ringing",
        "600100200 (Jan)",
        "Kolejka1",
        "Ola",
        "SesjaRady",
        "Ewa <104>",
    ):
        assert text in watch.stdout, text
    assert "Unavailable" in watch.stdout  # extension 130 from extstatus
    # Without a terminal (here, a pipe), the events come as lines, then the table once.
    assert "101: Ringing ↔ 600100200 (Jan)" in watch.stdout
    assert watch.stdout.index("phone 130: Unavailable") < watch.stdout.index("Extensions")
    assert "not a terminal" in watch.stderr


async def test_tables_keep_values_whole_in_a_narrow_terminal(live: Live) -> None:
    server, tenants = live
    await seed_calls(server, tenants.a_name)
    args = ("cdr", "--from", "2026-03-01", "--to", "2026-03-31")
    table = await cli(server, tenants.a_key, *args, env={"COLUMNS": "60"})
    assert table.exit_code == 0, table.output
    (row,) = [line for line in table.stdout.splitlines() if "1772539200.2" in line]
    assert "2026-03-04" in row and "ANSWERED" in row


async def test_configuration_sources(live: Live, tmp_path: Path) -> None:
    server, tenants = live
    config = tmp_path / "client.toml"
    config.write_text(f'url = "{server.url}"\nkey = "{tenants.a_key}"\npbx = "MojaCentrala"\n')
    by_file = await cli(None, "", "--config", str(config), "cdr", "-F", "json")
    assert by_file.exit_code == 0 and json.loads(by_file.stdout) == []
    default = tmp_path / "xdg" / "cloudpbx" / "client.toml"
    default.parent.mkdir(parents=True)
    default.write_text(config.read_text())
    by_default = await cli(
        None, "", "cdr", "-F", "json", env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    )
    assert by_default.exit_code == 0
    flag_wins = await cli(None, "", "--config", str(config), "--key", "wrong", "cdr")
    assert flag_wins.exit_code == 3 and "invalid or revoked API key" in flag_wins.stderr
    env_wins = await cli(None, "", "--config", str(config), "cdr", env={"CLOUDPBX_KEY": "wrong"})
    assert env_wins.exit_code == 3
    bad = tmp_path / "bad.toml"
    bad.write_text('uri = "x"\n')
    assert (await cli(None, "", "--config", str(bad), "cdr")).exit_code == 2


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("cdr",), 2, "no API URL"),
        (("cdr", "--from", "soon"), 2, "not a day"),
        (("transcription", "1772539200.404"), 4, "no transcription"),
        (("cdr", "--from", "2026-03-05", "--to", "2026-03-01"), 5, "datestart"),
        (("record", "get", "1772539200.404"), 4, "no recording"),
    ],
)
async def test_exit_codes(live: Live, args: tuple[str, ...], code: int, message: str) -> None:
    server, tenants = live
    result = await cli(None if code == 2 and "--from" not in args else server, tenants.a_key, *args)
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("error:") and message in result.stderr


async def test_exit_codes_auth_unavailable_incomplete(tmp_path: Path) -> None:
    tenants = Tenants()
    settings = make_settings(tmp_path, cdr_cap=2)
    async with running(settings, prepare=lambda rt: create_tenants(rt, tenants)) as server:
        await add_cdrs(
            server, tenants.a_name, [cdr_record(f"1.{n}", at("2026-03-03")) for n in range(3)]
        )
        capped = await cli(
            server, tenants.a_key, "cdr", "-f", "2026-03-03", "-t", "2026-03-03", "-F", "ndjson"
        )
        assert capped.exit_code == 8 and "2026-03-03 alone has more rows" in capped.stderr
        unsplit = await cli(
            server,
            tenants.a_key,
            "cdr",
            "-f",
            "2026-03-03",
            "-t",
            "2026-03-03",
            "--no-split",
            "-F",
            "ndjson",
        )
        assert unsplit.exit_code == 8 and len(unsplit.stdout.splitlines()) == 2
        assert (await cli(server, tenants.revoked_key, "cdr")).exit_code == 3
        assert (await cli(server, tenants.b_key, "sms", "send", "600100200", "x")).exit_code == 3
        other = await cli(server, tenants.b_key, "events", "--count", "1")
        assert other.exit_code == 3 and "403" in other.stderr
    down = await cli(server, tenants.a_key, "--retries", "0", "cdr")
    assert down.exit_code == 7 and "ConnectError" in down.stderr
