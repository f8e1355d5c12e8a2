"""The Asterisk lab (`cloudpbx.lab`, `cloudpbx lab ...`) against the real thing.

Runs as root: builds the chroot the first time (~2 min), then brings the lab up once for
the session (~1-3 s). Nothing here is skipped.
"""

from __future__ import annotations

import array
import json
import os
import re
import signal
import time
import wave
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from cloudpbx.cli.lab import app
from cloudpbx.lab import Lab, host_mirror
from cloudpbx.lab.build import mounts_under
from cloudpbx.lab.proc import chrooted_in, sockets_of
from cloudpbx.lab.settings import PHONES, phone_ctrl_port, phone_sip_port
from cloudpbx.lab.templates import asterisk_files, phone_files
from tests.lab_fixtures import lab_programs_running

runner = CliRunner()


def extension_status(exten: int, status: int) -> Callable[[dict[str, str]], bool]:
    def match(message: dict[str, str]) -> bool:
        return (
            message.get("Event") == "ExtensionStatus"
            and message.get("Exten") == str(exten)
            and message.get("Status") == str(status)
        )

    return match


# -- without the lab ---------------------------------------------------------------------


def test_mirror_is_read_from_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("# nothing\n")
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    assert host_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://one.example/debian/ sid main\n")
    assert host_mirror(tmp_path) == "http://one.example/debian"
    assert host_mirror().startswith("http")  # this host's own


def test_config_templates() -> None:
    from cloudpbx.lab.settings import LabSettings

    files = asterisk_files(LabSettings(root=Path("/x"), ami_port=6038, ami_secret="s3"))
    assert "port=6038" in files["manager.conf"] and "bindaddr=127.0.0.1" in files["manager.conf"]
    assert "secret=s3" in files["manager.conf"]
    assert "bind=127.0.0.1:5160" in files["pjsip.conf"]
    assert files["pjsip.conf"].count("accountcode=MojaCentrala") == 5
    assert "device_state_busy_at=1" in files["pjsip.conf"]
    assert "exten => 105,hint,PJSIP/MojaCentrala-105" in files["extensions.conf"]
    assert "MixMonitor(${UNIQUEID}.wav)" in files["extensions.conf"]
    assert "Queue(Kolejka1,r,,,120)" in files["extensions.conf"]
    assert "ConfBridge(SesjaRady,lab_bridge,lab_user)" in files["extensions.conf"]
    assert "unanswered=yes" in files["cdr.conf"]
    assert "noload => chan_iax2.so" in files["modules.conf"]
    assert "noload => pbx_dundi.so" in files["modules.conf"]
    phone = phone_files(LabSettings(root=Path("/x")), 104)
    assert "answermode=manual" in phone["accounts"]
    assert "net_interface\t\t127.0.0.1" in phone["config"]
    assert f"127.0.0.1:{phone_ctrl_port(104)}" in phone["config"]


# -- with the lab ------------------------------------------------------------------------


def test_ami_login_and_fully_booted(lab: Lab) -> None:
    with lab.ami() as ami:
        assert ami.greeting.startswith("Asterisk Call Manager/")
        booted = ami.wait_event("FullyBooted", 5)
        assert booted["Status"] == "Fully Booted"
    with lab.ami(events=False) as ami:
        assert ami.action("Ping")["Response"] == "Success"


def test_phones_registered(lab: Lab) -> None:
    with lab.ami(events=False) as ami:
        states = ami.extension_states()
    for ext in (101, 102, 103, 104):
        assert (states[str(ext)]["Status"], states[str(ext)]["StatusText"]) == ("0", "Idle")
        assert states[str(ext)]["Context"] == "MojaCentrala"
    assert (states["105"]["Status"], states["105"]["StatusText"]) == ("4", "Unavailable")
    assert lab.phone(101).registered()
    assert lab.is_up()


def test_everything_listens_on_loopback(lab: Lab) -> None:
    sockets = sockets_of(chrooted_in(lab.root))
    listeners = {(s.proto, s.port): s.address for s in sockets if s.listening}
    assert listeners[("tcp", lab.ami_address[1])] == "127.0.0.1"
    assert listeners[("udp", lab.sip_address[1])] == "127.0.0.1"
    for ext in PHONES:
        assert listeners[("tcp", phone_ctrl_port(ext))] == "127.0.0.1"
        assert listeners[("udp", phone_sip_port(ext))] == "127.0.0.1"
    assert [s for s in sockets if s.proto.startswith("tcp") and s.listening] != []
    wide_tcp = [s for s in sockets if s.proto.startswith("tcp") and s.address != "127.0.0.1"]
    assert wide_tcp == []
    # UDP on 0.0.0.0/[::]: only the DNS clients' unconnected sockets, on ephemeral ports.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    wide_udp = [s for s in sockets if s.proto.startswith("udp") and s.address != "127.0.0.1"]
    assert all(s.port >= low for s in wide_udp), wide_udp


def test_call_between_phones_gives_cdr_and_recording(lab: Lab) -> None:
    caller, callee = lab.phone(101), lab.phone(102)
    caller.drain()
    callee.drain()
    with lab.ami(events="cdr") as ami:
        assert caller.dial(102)["ok"] is True
        assert caller.wait_event("CALL_ESTABLISHED", 15)["direction"] == "outgoing"
        incoming = callee.wait_event("CALL_ESTABLISHED", 15)
        assert incoming["direction"] == "incoming"
        assert incoming["peerdisplayname"] == "MojaCentrala 101"
        time.sleep(2)
        assert caller.hangup()["ok"] is True
        caller.wait_event("CALL_CLOSED", 10)
        callee.wait_event("CALL_CLOSED", 10)
        cdr = ami.wait_event("Cdr", 10)
    assert cdr["AccountCode"] == "MojaCentrala"
    assert (cdr["Source"], cdr["Destination"]) == ("101", "102")
    assert cdr["Disposition"] == "ANSWERED"
    assert cdr["DestinationContext"] == "MojaCentrala"
    assert cdr["UserField"] == "MojaCentrala"
    assert cdr["Channel"].startswith("PJSIP/MojaCentrala-101-")
    assert int(cdr["BillableSeconds"]) >= 1
    recording = lab.recordings_dir / f"{cdr['UniqueID']}.wav"
    deadline = time.monotonic() + 10  # MixMonitor may still be writing after the Cdr
    while recording.stat().st_size <= 44 + 8000 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert recording.stat().st_size > 44 + 8000  # more than a header: >0.5 s of audio
    with wave.open(str(recording)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        samples = array.array("h", wav.readframes(wav.getnframes()))
    assert max(abs(s) for s in samples) > 1000  # speech, not silence


def test_phone_104_rings_and_never_answers(lab: Lab) -> None:
    caller, callee = lab.phone(103), lab.phone(104)
    caller.drain()
    callee.drain()
    assert caller.dial(104)["ok"] is True
    assert caller.wait_event("CALL_RINGING", 10)["direction"] == "outgoing"
    assert callee.wait_event("CALL_INCOMING", 10)["direction"] == "incoming"
    time.sleep(1)
    assert [e["type"] for e in callee.drain()].count("CALL_ESTABLISHED") == 0
    caller.hangup()
    caller.wait_event("CALL_CLOSED", 10)
    callee.wait_event("CALL_CLOSED", 10)


def test_stop_and_start_phone(lab: Lab) -> None:
    with lab.ami(events="call") as ami:
        started = time.monotonic()
        lab.stop_phone(103)
        ami.wait_event(extension_status(103, 4), 10)
        assert lab.phone_pid(103) is None
        # A clean un-REGISTER is seen at once; a vanished phone only after qualify (~17 s).
        # 10 s tells the two apart even on a loaded machine.
        assert time.monotonic() - started < 10
        lab.start_phone(103)
        ami.wait_event(extension_status(103, 0), 10)
        assert lab.phone_pid(103) is not None
    assert lab.is_up()


def test_a_crashed_phone_is_restarted_and_reported(lab: Lab) -> None:
    before = lab.phone_pid(103)
    assert before is not None
    restarts = len(lab.phone_restarts(103))
    os.kill(before, signal.SIGSEGV)  # what baresip 1.1.0's aufile player race did
    deadline = time.monotonic() + 30
    while lab.phone_pid(103) in (None, before):
        assert time.monotonic() < deadline, "phone 103 was not restarted"
        time.sleep(0.1)
    assert lab.phone_restarts(103)[restarts:][0].endswith(" 139")  # 128 + SIGSEGV
    assert len(lab.phone_restarts(103)) == restarts + 1
    assert "baresip exited with status 139; restarting it" in lab.phone_log(103).read_text()
    while not lab.phone(103).registered():  # the new process registers on its own
        assert time.monotonic() < deadline, "phone 103 did not register again"
        time.sleep(0.2)
    assert lab.is_up()
    result = runner.invoke(app, ["status", "--json", "--root", str(lab.root)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["phone_restarts"]["103"] == restarts + 1
    # It takes calls again.
    caller = lab.phone(101)
    callee = lab.phone(103)
    caller.drain()
    callee.drain()
    assert caller.dial(103)["ok"] is True
    callee.wait_event("CALL_ESTABLISHED", 15)
    # Hang up only once the caller has the answer too: a hang-up while its INVITE is
    # still pending is a CANCEL that can cross Asterisk's 200 OK and leave 103 in the call.
    caller.wait_event("CALL_ESTABLISHED", 15)
    caller.hangup()
    callee.wait_event("CALL_CLOSED", 15)


def test_restart_asterisk(lab: Lab) -> None:
    before = lab.asterisk_pid()
    lab.restart_asterisk()
    assert lab.asterisk_pid() not in (None, before)
    with lab.ami(events=False) as ami:
        states = ami.extension_states()
    assert {e: states[str(e)]["Status"] for e in (101, 102, 103, 104, 105)} == {
        101: "0",
        102: "0",
        103: "0",
        104: "0",
        105: "4",
    }


def test_cli_status_down_up(lab: Lab) -> None:
    root = ["--root", str(lab.root)]
    result = runner.invoke(app, ["status", *root])
    assert result.exit_code == 0, result.output
    assert str(lab.recordings_dir) in result.output
    assert "4 Unavailable" in result.output

    result = runner.invoke(app, ["up", *root])
    assert result.exit_code == 0, result.output
    assert "already up" in result.output

    result = runner.invoke(app, ["down", *root])
    assert result.exit_code == 0, result.output
    assert "lab down" in result.output
    assert lab_programs_running(lab.root) == []
    assert mounts_under(lab.root) == []
    assert not lab.is_up()
    result = runner.invoke(app, ["status", *root])
    assert result.exit_code == 3, result.output
    result = runner.invoke(app, ["down", *root])
    assert "not running" in result.output

    result = runner.invoke(app, ["up", *root])
    assert result.exit_code == 0, result.output
    assert "lab up in" in result.output
    assert lab.is_up()
    result = runner.invoke(app, ["phone", "101", "reginfo", *root])
    assert result.exit_code == 0, result.output
    assert "MojaCentrala-101" in result.output


def test_record_a_transcript(lab: Lab, tmp_path: Path) -> None:
    result = runner.invoke(app, ["record", "busy", "--out", str(tmp_path), "--root", str(lab.root)])
    assert result.exit_code == 0, result.output
    assert "102: 2 Busy" in result.output  # ExtensionState asked while 102 talks to 700
    received = (tmp_path / "busy.txt").read_bytes()
    sent = (tmp_path / "busy.sent.txt").read_bytes()
    rows = [json.loads(line) for line in (tmp_path / "busy.jsonl").read_text().splitlines()]
    assert "".join(r["raw"] for r in rows if r["dir"] == "in").encode() == received
    assert "".join(r["raw"] for r in rows if r["dir"] == "out").encode() == sent
    assert [r["t"] for r in rows] == sorted(r["t"] for r in rows)
    assert received.startswith(b"Asterisk Call Manager/") and b"\r\n\r\n" in received
    assert b"DialStatus: BUSY\r\n" in received and b"Response: Goodbye\r\n" in received
    assert sent.startswith(b"Action: Login\r\nActionID: busy-1\r\n")
    assert b"Action: Originate\r\n" in sent and b"Variable: CDR(userfield)=MojaCentrala\r\n" in sent
    cdr = (tmp_path / "busy.cdr.csv").read_text()
    assert '"BUSY"' in cdr and '"Echo"' in cdr
    result = runner.invoke(app, ["record", "nope", "--out", str(tmp_path), "--root", str(lab.root)])
    assert result.exit_code == 1 and "no scenario nope" in result.output


def reinvite_directions(log: Path, offset: int) -> list[str]:
    """The SDP directions of the in-dialog re-INVITEs phone 101 sent, from what pjsip's
    logger wrote into Asterisk's log after `offset` (they are addressed to Asterisk's
    contact, `INVITE sip:127.0.0.1:5160`, not to a number)."""
    with log.open("rb") as file:
        file.seek(offset)
        text = file.read().decode(errors="replace")
    found = []
    for record in text.split("<--- Received SIP request")[1:]:
        request = re.split(r"\n\[\d{4}-", record)[0]  # up to the next log record
        lines = request.split("\n", 2)
        if len(lines) == 3 and re.match(r"INVITE sip:127\.0\.0\.1:\d+ ", lines[1]):
            assert "MojaCentrala-101" in lines[2]
            found += re.findall(r"^a=(sendonly|sendrecv|recvonly|inactive)", lines[2], re.M)
    return found


def test_hold_is_a_reinvite_with_sendonly_and_plays_music(lab: Lab) -> None:
    """Hold is real SIP: baresip re-INVITEs with a=sendonly, Asterisk raises Hold on the
    holder's channel and plays the `default` music-on-hold class to the other party."""
    log = lab.asterisk_log
    offset = log.stat().st_size
    caller, callee = lab.phone(101), lab.phone(102)
    caller.drain()
    callee.drain()
    with lab.ami(events="call") as ami:
        ami.action("Command", Command="pjsip set logger on")
        try:
            caller.dial(102)
            caller.wait_event("CALL_ESTABLISHED", 15)
            callee.wait_event("CALL_ESTABLISHED", 15)
            assert caller.hold()["ok"] is True
            held = ami.wait_event("Hold", 10)
            music = ami.wait_event("MusicOnHoldStart", 10)
            caller.resume()  # baresip 1.1.0 may answer ok=false: it resumes anyway
            ami.wait_event("Unhold", 10)
        finally:
            ami.action("Command", Command="pjsip set logger off")
            caller.hangup()
            callee.wait_event("CALL_CLOSED", 10)
    assert held["Channel"].startswith("PJSIP/MojaCentrala-101-")
    assert music["Channel"].startswith("PJSIP/MojaCentrala-102-")
    assert music["Class"] == "default"
    # Asterisk's logger writes from its own thread: wait for both re-INVITEs to be there.
    deadline = time.monotonic() + 10
    while len(directions := reinvite_directions(log, offset)) < 2:
        assert time.monotonic() < deadline, directions
        time.sleep(0.1)
    assert directions == ["sendonly", "sendrecv"]
    assert lab.phone_restarts(101) == lab.phone_restarts(102) == []
