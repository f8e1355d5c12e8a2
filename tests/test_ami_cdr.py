"""`Event: Cdr` → CdrRecord, checked against the rows cdr_csv wrote in the same lab run."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from cloudpbx.adapters.asterisk.cdr import (
    CdrConverter,
    CdrError,
    Rate,
    RatingTable,
    Tariff,
    cdr_record,
)
from cloudpbx.adapters.asterisk.framing import AmiMessage, AmiParser
from cloudpbx.adapters.asterisk.tenancy import TenantMap, TenantRule
from cloudpbx.domain.states import Disposition
from tests.ami_data import ALL_SCENARIOS, cdr_rows, received

TENANTS = TenantMap([TenantRule("MojaCentrala"), TenantRule("InnaCentrala")])


def cdr_events(scenario: str) -> list[AmiMessage]:
    return [m for m in AmiParser().feed(received(scenario)) if m.event == "Cdr"]


@pytest.mark.parametrize("scenario", ALL_SCENARIOS)
def test_cdr_events_match_the_csv_rows(scenario: str) -> None:
    """Same rows, same order; cdr_csv wrote times in UTC (usegmtime), Asterisk ran in UTC."""
    converter = CdrConverter(TENANTS, asterisk_tz=UTC)
    converted = [converter.convert(m) for m in cdr_events(scenario)]
    rows = cdr_rows(scenario)
    assert len(converted) == len(rows)
    for result, row in zip(converted, rows, strict=True):
        assert result is not None
        pbx, record = result
        assert pbx == row[0] == "MojaCentrala"  # accountcode
        assert record.src == row[1]
        assert record.dst == row[2]
        assert record.clid == row[4]
        assert record.channel == row[5]
        assert record.dstchannel == row[6]
        assert record.lastapp == row[7]
        assert record.started_at == datetime.strptime(row[9], "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=UTC
        )
        assert record.duration == int(row[12])
        assert record.billsec == int(row[13])
        assert record.disposition.value == row[14]
        assert record.uniqueid == row[16]
        assert record.cost is None and record.zone == ""  # internal calls


def test_the_lab_rows_written_out() -> None:
    """The quirks, spelled out: two rows for one uniqueid, an unanswered originate."""
    converter = CdrConverter(TENANTS, asterisk_tz=UTC)
    records = [converter.convert(m) for m in cdr_events("failed")]
    summary = [
        (r[1].uniqueid, r[1].src, r[1].dst, r[1].lastapp, r[1].disposition, r[1].billsec)
        for r in records
        if r is not None
    ]
    assert summary == [
        ("1795838310.8", "105", "105", "Dial", Disposition.ANSWERED, 0),
        ("1795838312.9", "104", "104", "Dial", Disposition.NO_ANSWER, 8),
        ("1795838312.9", "104", "104", "Hangup", Disposition.ANSWERED, 0),
        ("1795838324.11", "104", "s", "AppDial2", Disposition.NO_ANSWER, 0),
    ]
    (originate,) = [converter.convert(m) for m in cdr_events("originate")]
    assert originate is not None
    assert originate[1].clid == '"Dial 102" <102>'
    assert originate[1].dstchannel == "PJSIP/MojaCentrala-102-00000001"


def test_start_time_is_read_in_the_asterisk_zone() -> None:
    (event,) = cdr_events("queue")
    record = cdr_record(event, asterisk_tz=ZoneInfo("Europe/Warsaw"))
    assert record.started_at.utcoffset() is not None
    assert record.started_at.astimezone(UTC) == datetime(2026, 11, 28, 2, 58, 5, tzinfo=UTC)


TABLE = RatingTable(
    {
        "48": Tariff("Stacjonarne krajowe", 8),
        "4822": Tariff("Stacjonarne lokalne", 6),
        "4860": Tariff("Komórkowe", 12),
        "00": Tariff("Międzynarodowe", 49),
    }
)


def outside_call(dst: str, billsec: str, disposition: str = "ANSWERED") -> AmiMessage:
    return AmiMessage(
        [
            ("Event", "Cdr"),
            ("AccountCode", "MojaCentrala"),
            ("Source", "101"),
            ("Destination", dst),
            ("CallerID", '"Anna" <101>'),
            ("Channel", "PJSIP/MojaCentrala-101-00000010"),
            ("DestinationChannel", "PJSIP/MojaCentrala-trunk-00000011"),
            ("LastApplication", "Dial"),
            ("StartTime", "2026-11-28 10:00:00"),
            ("AnswerTime", "2026-11-28 10:00:05" if billsec != "0" else ""),
            ("EndTime", "2026-11-28 10:02:06"),
            ("Duration", "126"),
            ("BillableSeconds", billsec),
            ("Disposition", disposition),
            ("UniqueID", "1795900000.16"),
        ]
    )


def test_outside_calls_are_rated_per_started_minute() -> None:
    converter = CdrConverter(TENANTS, asterisk_tz=UTC, rating=TABLE)
    cases = {
        ("48600123456", "121"): ("Komórkowe", 36),  # 3 started minutes x 12
        ("+48221234567", "60"): ("Stacjonarne lokalne", 6),
        ("48581234567", "61"): ("Stacjonarne krajowe", 16),
        ("0044201234567", "1"): ("Międzynarodowe", 49),
        ("48600123456", "0"): ("Komórkowe", 0),  # unanswered: zone kept, no cost
    }
    for (dst, billsec), (zone, cost) in cases.items():
        result = converter.convert(outside_call(dst, billsec))
        assert result is not None
        assert (result[1].zone, result[1].cost) == (zone, cost), dst
    for internal in ("102", "500", "s", "12345"):
        result = converter.convert(outside_call(internal, "30"))
        assert result is not None and result[1].cost is None and result[1].zone == ""
    assert TABLE("7123456789", 60) is None  # no prefix matches
    assert TABLE("48600123456", 60) == Rate("Komórkowe", 12)


def test_any_callable_rates() -> None:
    def flat(number: str, billsec: int) -> Rate | None:
        return Rate("Ryczałt", 1) if number.startswith("9") else None

    record = cdr_record(outside_call("987654321", "5"), asterisk_tz=UTC, rating=flat)
    assert (record.zone, record.cost) == ("Ryczałt", 1)


def test_dispositions() -> None:
    for text, expected in {
        "ANSWERED": Disposition.ANSWERED,
        "NO ANSWER": Disposition.NO_ANSWER,
        "BUSY": Disposition.BUSY,
        "FAILED": Disposition.FAILED,
        "CONGESTION": Disposition.FAILED,
    }.items():
        assert cdr_record(outside_call("102", "0", text), asterisk_tz=UTC).disposition is expected


def test_tenancy_of_records() -> None:
    converter = CdrConverter(TENANTS, asterisk_tz=UTC)
    base = outside_call("102", "5").headers

    def convert(**changes: str) -> str | None:
        headers = [(k, changes.get(k, v)) for k, v in base]
        result = converter.convert(AmiMessage(headers))
        return None if result is None else result[0]

    assert convert() == "MojaCentrala"
    assert convert(AccountCode="") == "MojaCentrala"  # from the channel
    assert convert(AccountCode="billing-7") == "MojaCentrala"
    assert convert(AccountCode="InnaCentrala") is None  # account and channel disagree
    assert convert(AccountCode="", Channel="PJSIP/ObcaCentrala-1-00000001") is None
    assert convert(AccountCode="", Channel="Local/1@x-00000001;1") is None
    assert converter.convert(AmiMessage([("Event", "Hangup")])) is None


def test_malformed_records_raise() -> None:
    good = outside_call("102", "5").headers
    for name, value in {
        "StartTime": "",
        "Duration": "x",
        "BillableSeconds": "",
        "UniqueID": "",
    }.items():
        headers = [(k, value if k == name else v) for k, v in good]
        with pytest.raises(CdrError):
            cdr_record(AmiMessage(headers), asterisk_tz=UTC)
    longer = [(k, "500" if k == "BillableSeconds" else v) for k, v in good]
    with pytest.raises(CdrError):
        cdr_record(AmiMessage(longer), asterisk_tz=UTC)  # billsec > duration
    with pytest.raises(ValueError):
        RatingTable({"+48": Tariff("x", 1)})
