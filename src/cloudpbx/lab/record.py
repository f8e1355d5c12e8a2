"""Recording AMI transcripts from the lab (what tests/data/ami/ holds).

One scenario = one AMI session (`Events: on`) kept byte for byte, while the scenario drives
phones (ctrl_tcp) and sends its actions on that same session. Written per scenario:

* `<scenario>.txt`: every byte Asterisk sent (greeting, responses, events), CRLF kept;
* `<scenario>.sent.txt`: every byte sent to Asterisk;
* `<scenario>.jsonl`: both directions, one message a line, `{"t": seconds since connect
  (millisecond resolution, the time of the read that completed the message), "dir": "in" |
  "out", "raw": ...}`;
* `<scenario>.cdr.csv`: the rows cdr_csv appended to Master.csv meanwhile.

Run as root with the lab up: `cloudpbx lab record hold_holder busy --out tests/data/ami`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cloudpbx.lab.ami import AmiClient, AmiError, Message
from cloudpbx.lab.errors import LabError
from cloudpbx.lab.lab import Lab
from cloudpbx.lab.settings import TENANT, endpoint


@dataclass
class Row:
    t: float
    dir: str
    raw: str


class RecordingAmiClient(AmiClient):
    """An `AmiClient` that keeps every byte in and out, with its time."""

    def __init__(self, host: str, port: int, username: str, secret: str, scenario: str) -> None:
        super().__init__(host, port, username, secret, id_prefix=scenario)
        self.rows: list[Row] = []
        self.seen: list[Message] = []
        """Every event received, in order (`wait_event` takes from `events`; this keeps)."""
        self._started = time.monotonic()
        self._pending = b""
        self._greeted = False

    def _now(self) -> float:
        return round(time.monotonic() - self._started, 3)

    def _transmit(self, data: bytes) -> None:
        self.rows.append(Row(self._now(), "out", data.decode()))
        super()._transmit(data)

    def _received(self, chunk: bytes) -> None:
        now = self._now()
        self._pending += chunk
        if not self._greeted and b"\r\n" in self._pending:
            line, self._pending = self._pending.split(b"\r\n", 1)
            self.rows.append(Row(now, "in", (line + b"\r\n").decode()))
            self._greeted = True
        while self._greeted and b"\r\n\r\n" in self._pending:
            raw, self._pending = self._pending.split(b"\r\n\r\n", 1)
            self.rows.append(Row(now, "in", (raw + b"\r\n\r\n").decode()))
            message = _parse(raw.decode())
            if "Event" in message:
                self.seen.append(message)

    def until(
        self, match: Callable[[list[Message]], bool], timeout: float, what: str
    ) -> list[Message]:
        """Read until `match(every event so far)` holds; AmiError naming `what` if not."""
        deadline = time.monotonic() + timeout
        while not match(self.seen):
            if time.monotonic() >= deadline:
                raise AmiError(f"not within {timeout:.0f} s: {what}")
            self.drain(0.1)
        return self.seen

    def save(self, out: Path, scenario: str, cdr: str) -> None:
        out.mkdir(parents=True, exist_ok=True)
        incoming = "".join(r.raw for r in self.rows if r.dir == "in")
        outgoing = "".join(r.raw for r in self.rows if r.dir == "out")
        (out / f"{scenario}.txt").write_bytes(incoming.encode())
        (out / f"{scenario}.sent.txt").write_bytes(outgoing.encode())
        lines = [json.dumps({"t": r.t, "dir": r.dir, "raw": r.raw}) + "\n" for r in self.rows]
        (out / f"{scenario}.jsonl").write_text("".join(lines), encoding="utf-8")
        (out / f"{scenario}.cdr.csv").write_bytes(cdr.encode())


def _parse(raw: str) -> Message:
    message: Message = {}
    for line in raw.split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            message[key.strip()] = value.strip()
    return message


def event(name: str, **fields: str) -> Callable[[Message], bool]:
    """A predicate: an event of that name whose fields start with the given values."""

    def match(message: Message) -> bool:
        return message.get("Event") == name and all(
            message.get(key, "").startswith(value) for key, value in fields.items()
        )

    return match


def seen(*predicates: Callable[[Message], bool]) -> Callable[[list[Message]], bool]:
    """All predicates matched by some event (in any order: Asterisk's order varies)."""
    return lambda events: all(any(p(e) for e in events) for p in predicates)


@dataclass
class Scenario:
    """What a scenario needs: the lab, its recording session, the phones it watches."""

    lab: Lab
    ami: RecordingAmiClient
    notes: list[str] = field(default_factory=list)

    def originate(self, caller: int, callee: int) -> None:
        """What the API's `/dial` sends: the caller's phone rings first, then `callee`."""
        self.ami.action(
            "Originate",
            Channel=f"PJSIP/{endpoint(caller)}",
            Context=TENANT,
            Exten=str(callee),
            Priority=1,
            CallerID=f"{TENANT} {caller} <{caller}>",
            Timeout=30000,
            Async="true",
            Variable=[f"CDR(userfield)={TENANT}", f"API_REQUEST=dial-cpa{caller}-cpb{callee}"],
            Account=TENANT,
        )

    def states(self, *exts: int) -> None:
        """ExtensionState of each: what Asterisk says at this moment (kept in the transcript)."""
        for ext in exts:
            reply = self.ami.action("ExtensionState", Exten=str(ext), Context=TENANT)
            self.notes.append(f"{ext}: {reply.get('Status')} {reply.get('StatusText')}")

    def wait(self, what: str, *predicates: Callable[[Message], bool], timeout: float = 20) -> None:
        self.ami.until(seen(*predicates), timeout, what)

    def settle(self, seconds: float) -> None:
        self.ami.drain(seconds)


def _hold(s: Scenario, holder: int) -> None:
    """101 calls 102 (Originate), `holder` puts the call on hold and resumes, 102 hangs up."""
    s.originate(101, 102)
    s.wait(
        "the call is bridged",
        event("BridgeEnter", Channel=f"PJSIP/{endpoint(101)}-"),
        event("BridgeEnter", Channel=f"PJSIP/{endpoint(102)}-"),
    )
    s.settle(2.0)
    s.lab.phone(holder).hold()
    s.wait("Hold", event("Hold", Channel=f"PJSIP/{endpoint(holder)}-"))
    s.settle(1.0)
    s.states(101, 102)
    s.settle(2.0)
    s.lab.phone(holder).resume()  # baresip 1.1.0 may answer "Invalid argument": it resumes
    s.wait("Unhold", event("Unhold", Channel=f"PJSIP/{endpoint(holder)}-"))
    s.settle(1.0)
    s.states(101, 102)
    s.settle(1.0)
    s.lab.phone(102).hangup()
    s.wait(
        "hangup and CDR",
        event("Hangup", Channel=f"PJSIP/{endpoint(101)}-"),
        event("Hangup", Channel=f"PJSIP/{endpoint(102)}-"),
        event("Cdr", Destination="102"),
    )


def hold_holder(s: Scenario) -> None:
    """101↔102; phone 101 (the caller) holds (re-INVITE a=sendonly) and resumes."""
    _hold(s, 101)


def hold_held(s: Scenario) -> None:
    """101↔102; phone 102 (the callee) holds, so 101 is the held party."""
    _hold(s, 102)


def busy(s: Scenario) -> None:
    """102 talks to the echo test (700); Originate 101→102 gets 486 Busy Here."""
    s.lab.phone(102).dial(700)
    s.wait("102 in the echo call", event("ExtensionStatus", Exten="102", Status="2"))
    s.settle(1.0)
    s.originate(101, 102)
    s.wait(
        "Dial to 102 busy, 101 hung up",
        event("DialEnd", DestChannel=f"PJSIP/{endpoint(102)}-", DialStatus="BUSY"),
        event("Hangup", Channel=f"PJSIP/{endpoint(101)}-"),
        event("Cdr", Destination="102", Disposition="BUSY"),
    )
    s.settle(1.0)
    s.states(101, 102)
    s.lab.phone(102).hangup()
    s.wait(
        "echo call over",
        event("Cdr", Destination="700"),
        event("ExtensionStatus", Exten="102", Status="0"),
    )


def register_lost(s: Scenario) -> None:
    """Phone 103 is SIGKILLed (no un-REGISTER); qualify notices (~17 s); it starts again."""
    s.lab.kill_phone(103)
    s.wait(
        "qualify finds 103 unreachable",
        event("ContactStatus", AOR=endpoint(103), ContactStatus="Unreachable"),
        event("ExtensionStatus", Exten="103", Status="4"),
        timeout=60,
    )
    s.states(103)
    s.lab.start_phone(103, wait=False)
    s.wait(
        "103 registered and reachable again",
        event("ContactStatus", AOR=endpoint(103), ContactStatus="Reachable"),
        event("ExtensionStatus", Exten="103", Status="0"),
        timeout=60,
    )
    s.settle(1.0)


SCENARIOS: dict[str, Callable[[Scenario], None]] = {
    "hold_holder": hold_holder,
    "hold_held": hold_held,
    "busy": busy,
    "register_lost": register_lost,
}


def record(lab: Lab, scenario: str, out: Path) -> list[str]:
    """Run one scenario on the (up, idle) lab and write its transcript files into `out`.

    Returns notes (ExtensionState answers met on the way).
    """
    if scenario not in SCENARIOS:
        raise LabError(f"no scenario {scenario!r} (scenarios: {', '.join(SCENARIOS)})")
    master = lab.cdr_csv_dir / "Master.csv"
    offset = master.stat().st_size if master.exists() else 0
    for ext in (101, 102, 103):
        lab.phone(ext).drain()
    host, port = lab.ami_address
    s = lab.settings
    ami = RecordingAmiClient(host, port, s.ami_user, s.ami_secret, scenario)
    ami.connect(events=True)
    try:
        ami.until(seen(event("FullyBooted")), 10, "FullyBooted")
        steps = Scenario(lab, ami)
        SCENARIOS[scenario](steps)
        ami.drain(1.0)
        ami.action("Logoff", timeout=5)
    finally:
        ami.close()
    cdr = master.read_bytes()[offset:].decode() if master.exists() else ""
    ami.save(out, scenario, cdr)
    return steps.notes
