"""Shared by the test_ami_* modules (no tests here): the lab's AMI transcripts.

`<scenario>.txt` is every byte Asterisk sent, `<scenario>.jsonl` the same split into
messages with receive times (`t`, seconds, millisecond resolution), `<scenario>.sent.txt`
the actions sent, `<scenario>.cdr.csv` the rows cdr_csv wrote.
"""

from __future__ import annotations

import csv
import json
from itertools import groupby
from pathlib import Path

DATA = Path(__file__).parent / "data" / "ami"
SCENARIOS = (
    "initial_state",
    "register",
    "originate",
    "originate_filtered",
    "queue",
    "conference",
    "failed",
)
LAB_SCENARIOS = (
    "hold_holder",
    "hold_held",
    "busy",
    "register_lost",
)
"""Recorded later with `cloudpbx lab record` (same format; uniqueids start 17964...): hold
from either side, a busy callee, a registration lost without un-REGISTER. The translator's
hand-written expectations and the generic checks cover both lists (`ALL_SCENARIOS`)."""
ALL_SCENARIOS = SCENARIOS + LAB_SCENARIOS


def received(scenario: str) -> bytes:
    return (DATA / f"{scenario}.txt").read_bytes()


def sent(scenario: str) -> bytes:
    return (DATA / f"{scenario}.sent.txt").read_bytes()


def rows(scenario: str) -> list[dict[str, object]]:
    with (DATA / f"{scenario}.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def bursts(scenario: str) -> list[bytes]:
    """What Asterisk sent, cut where the receive time changes (one chunk per millisecond).

    This is how the translator tests flush: everything that arrived in the same
    millisecond is one read from the socket.
    """
    incoming = [row for row in rows(scenario) if row["dir"] == "in"]
    return [
        "".join(str(row["raw"]) for row in group).encode("utf-8")
        for _, group in groupby(incoming, key=lambda row: row["t"])
    ]


def cdr_rows(scenario: str) -> list[list[str]]:
    """Master.csv rows: accountcode, src, dst, dcontext, clid, channel, dstchannel, lastapp,
    lastdata, start, answer, end, duration, billsec, disposition, amaflags, uniqueid,
    userfield."""
    with (DATA / f"{scenario}.cdr.csv").open(encoding="utf-8", newline="") as file:
        return list(csv.reader(file))
