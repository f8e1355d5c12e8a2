"""AMI framing on the lab's real byte streams: any chunking, CRLF or LF, and actions."""

from __future__ import annotations

import random
import time

import pytest

from cloudpbx.adapters.asterisk.framing import (
    AmiMessage,
    AmiParser,
    AmiProtocolError,
    serialize_action,
)
from tests.ami_data import ALL_SCENARIOS, received, rows, sent


def expected_messages(scenario: str) -> tuple[str, list[list[tuple[str, str]]]]:
    """The banner and the messages, read from the .jsonl lines the lab recorded.

    Each recorded line is one message (some begin with the empty line that follows a
    `TestEvent`); split here naively, independently of the parser.
    """
    banner = ""
    messages = []
    for row in rows(scenario):
        if row["dir"] != "in":
            continue
        raw = str(row["raw"]).strip("\r\n")
        if raw.startswith("Asterisk Call Manager/"):
            banner = raw
            continue
        headers = []
        for line in raw.split("\r\n"):
            name, sep, value = line.partition(": ")
            assert sep or line.endswith(":"), line
            headers.append((name.rstrip(":"), value))
        messages.append(headers)
    return banner, messages


def parse_in_chunks(data: bytes, sizes: random.Random | int) -> tuple[AmiParser, list[AmiMessage]]:
    parser = AmiParser()
    out: list[AmiMessage] = []
    pos = 0
    while pos < len(data):
        size = sizes if isinstance(sizes, int) else sizes.randint(1, 700)
        out.extend(parser.feed(data[pos : pos + size]))
        pos += size
    return parser, out


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_every_transcript_in_random_chunks_gives_the_recorded_messages(scenario: str) -> None:
    banner, expected = expected_messages(scenario)
    data = received(scenario)
    for seed in range(5):
        parser, messages = parse_in_chunks(data, random.Random(seed))
        assert parser.banner == banner == "Asterisk Call Manager/11.0.0"
        assert parser.version == "11.0.0"
        assert [m.headers for m in messages] == expected


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_byte_by_byte_and_whole(scenario: str) -> None:
    _, expected = expected_messages(scenario)
    data = received(scenario)
    whole = AmiParser().feed(data)
    assert [m.headers for m in whole] == expected
    _, single = parse_in_chunks(data, 1)
    assert single == whole


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_bare_lf_and_mixed_line_ends(scenario: str) -> None:
    data = received(scenario)
    crlf = AmiParser().feed(data)
    assert AmiParser().feed(data.replace(b"\r\n", b"\n")) == crlf
    mixed = data.replace(b"\r\n", b"\n", data.count(b"\r\n") // 2)
    assert AmiParser().feed(mixed) == crlf


def test_the_transcripts_contain_what_the_parser_must_survive() -> None:
    """TestEvent's extra empty line and repeated headers are real, not invented."""
    assert b"\r\n\r\n\r\nEvent: DeviceStateChange" in received("conference")
    originate = AmiParser().feed(sent("originate"))
    assert originate[1].get_all("Variable") == [
        "CDR(userfield)=MojaCentrala",
        "API_REQUEST=dial-cpa101-cpb102",
    ]


def test_message_lookup_is_case_insensitive_and_keeps_repeats() -> None:
    (cdr,) = [m for m in AmiParser().feed(received("originate")) if m.event == "Cdr"]
    assert cdr["UniqueID"] == cdr["uniqueid"] == cdr.value("UNIQUEID") == "1795838273.0"
    assert "destinationchannel" in cdr
    assert cdr.get("Nope") is None
    assert cdr.value("Nope") == ""
    with pytest.raises(KeyError):
        cdr["Nope"]
    msg = AmiMessage([("Event", "X"), ("ChanVariable", "a=1"), ("chanvariable", "b=2")])
    assert msg.get("ChanVariable") == "a=1"
    assert msg.get_all("CHANVARIABLE") == ["a=1", "b=2"]
    assert msg.event == "X" and msg.response is None
    reply = AmiMessage([("ActionID", "7"), ("Response", "Success")])
    assert reply.response == "Success" and reply.event is None and reply.action_id == "7"


def test_utf8_split_between_chunks() -> None:
    data = "Event: Newchannel\r\nCallerIDName: Michał Zieliński\r\n\r\n".encode()
    cut = data.index("ł".encode()) + 1
    parser = AmiParser()
    assert parser.feed(data[:cut]) == []
    (msg,) = parser.feed(data[cut:])
    assert msg["CallerIDName"] == "Michał Zieliński"
    assert parser.banner is None


def test_values_keep_colons_and_empty_values() -> None:
    (msg,) = AmiParser().feed(b"Event: DeviceStateChange\r\nDevice: MWI:1234@default\r\nX:\r\n\r\n")
    assert msg.headers == [
        ("Event", "DeviceStateChange"),
        ("Device", "MWI:1234@default"),
        ("X", ""),
    ]


def test_command_output_with_response_follows() -> None:
    """Old-style `Action: Command` output: raw lines, even empty ones, up to END COMMAND."""
    data = (
        b"Asterisk Call Manager/1.1\r\n"
        b"Response: Follows\r\nPrivilege: Command\r\nActionID: c1\r\n"
        b"Name/username    Host\r\n\r\n101: sip peer\r\n--END COMMAND--\r\n\r\n"
        b"Response: Follows\r\nActionID: c2\r\nlast line--END COMMAND--\r\n\r\n"
        b"Event: FullyBooted\r\n\r\n"
    )
    parser, messages = parse_in_chunks(data, 3)
    assert parser.version == "1.1"
    assert [m.headers for m in messages] == [
        [
            ("Response", "Follows"),
            ("Privilege", "Command"),
            ("ActionID", "c1"),
            ("Output", "Name/username    Host"),
            ("Output", ""),
            ("Output", "101: sip peer"),
        ],
        [("Response", "Follows"), ("ActionID", "c2"), ("Output", "last line")],
        [("Event", "FullyBooted")],
    ]


def test_oversized_lines_and_messages_are_refused() -> None:
    parser = AmiParser(max_message_size=100)
    with pytest.raises(AmiProtocolError):
        for _ in range(20):
            parser.feed(b"x" * 10)
    parser = AmiParser(max_message_size=100)
    with pytest.raises(AmiProtocolError):
        parser.feed(b"Event: X\r\n" + b"A: 123456789\r\n" * 20)


def test_parsing_is_linear_in_the_input() -> None:
    """A long message fed one byte at a time: quadratic buffering would take seconds."""
    data = b"Event: X\r\nA: " + b"y" * 300_000 + b"\r\n\r\n"
    parser = AmiParser()
    started = time.perf_counter()
    out = []
    for i in range(len(data)):
        out.extend(parser.feed(data[i : i + 1]))
    assert time.perf_counter() - started < 3
    assert len(out) == 1 and len(out[0]["A"]) == 300_000


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_serializing_the_sent_actions_gives_the_sent_bytes(scenario: str) -> None:
    data = sent(scenario)
    out = b""
    for action in AmiParser().feed(data):
        headers = action.headers
        assert headers[0][0] == "Action" and headers[1][0] == "ActionID"
        out += serialize_action(headers[0][1], headers[2:], action_id=headers[1][1])
    assert out == data


def test_serialize_action_forms_and_injection() -> None:
    assert serialize_action("Ping") == b"Action: Ping\r\n\r\n"
    assert (
        serialize_action(
            "ExtensionState", {"Exten": "101", "Context": "MojaCentrala"}, action_id="9"
        )
        == b"Action: ExtensionState\r\nActionID: 9\r\nExten: 101\r\nContext: MojaCentrala\r\n\r\n"
    )
    with pytest.raises(ValueError):
        serialize_action("Originate", {"Exten": "102\r\n\r\nAction: Logoff"})
    with pytest.raises(ValueError):
        serialize_action("Originate", [("Bad: name", "x")])
    with pytest.raises(ValueError):
        serialize_action("Originate", [("", "x")])
