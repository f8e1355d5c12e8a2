"""The sampler on its own: running totals become counter increments (also across a reset
of the component), and AMI event names cannot grow the series without bound."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from cloudpbx.metrics.registry import Metrics
from cloudpbx.metrics.sampler import (
    MAX_EVENT_NAMES,
    AmiReadings,
    Sampler,
    Sources,
    WebSocketReadings,
)
from cloudpbx.storage.sms import OutboxDepth
from tests.metrics_helpers import Scrape, parse


class Readings:
    """What the components would report now; the test changes it between samples."""

    def __init__(self) -> None:
        self.websockets = WebSocketReadings(0, 0, {4008: 0, 1011: 0})
        self.ami: list[AmiReadings] = []

    async def outbox(self) -> OutboxDepth:
        return OutboxDepth({"pending": 0, "unsure": 0}, None)

    async def jobs(self) -> Mapping[str, int]:
        return {"queued": 0, "running": 0}


def sampler_over(readings: Readings) -> Sampler:
    sources = Sources(
        ami=lambda: readings.ami,
        sms_gateways=lambda: ["ok", "held"],
        outbox=readings.outbox,
        jobs=readings.jobs,
        websockets=lambda: readings.websockets,
    )
    return Sampler(Metrics(), sources)


def exposed(sampler: Sampler) -> Scrape:
    sampler.sample()
    assert sampler.metrics.registry is not None
    return parse(generate_latest(sampler.metrics.registry).decode())


def ami(dropped: Mapping[str, int], connects: int = 1) -> AmiReadings:
    return AmiReadings("ast1", True, 0.002, connects, dropped)


def test_totals_become_increments_and_a_reset_counts_from_zero() -> None:
    readings = Readings()
    sampler = sampler_over(readings)
    readings.websockets = WebSocketReadings(3, 100, {4008: 2, 1011: 0})
    first = exposed(sampler)
    assert first.value("cloudpbx_websocket_deliveries_total") == 100
    assert first.value("cloudpbx_websocket_connections") == 3
    readings.websockets = WebSocketReadings(1, 150, {4008: 2, 1011: 1})
    second = exposed(sampler)
    assert second.value("cloudpbx_websocket_deliveries_total") == 150
    assert second.value("cloudpbx_websocket_cutoffs_total", code="4008") == 2
    assert second.value("cloudpbx_websocket_cutoffs_total", code="1011") == 1
    # The component started over (a new bus): its 20 are new deliveries, not -130.
    readings.websockets = WebSocketReadings(1, 20, {4008: 0, 1011: 0})
    assert exposed(sampler).value("cloudpbx_websocket_deliveries_total") == 170


def test_gateway_statuses_are_counted() -> None:
    found = exposed(sampler_over(Readings()))
    assert found.value("cloudpbx_sms_gateways", status="ok") == 1
    assert found.value("cloudpbx_sms_gateways", status="held") == 1
    assert found.value("cloudpbx_sms_gateways", status="alert") == 0


def test_event_names_are_capped_and_odd_ones_are_other() -> None:
    readings = Readings()
    sampler = sampler_over(readings)
    names = {f"Event{n}": 1 for n in range(MAX_EVENT_NAMES + 6)}
    readings.ami = [ami({**names, 'Bad"Name{}': 2})]
    found = exposed(sampler)
    events = found.label_values("cloudpbx_ami_dropped_events", "event")
    assert len(events) == MAX_EVENT_NAMES + 1 and "other" in events
    total = sum(
        found.number("cloudpbx_ami_dropped_events_total", server="ast1", event=event)
        for event in events
    )
    assert total == sum(names.values()) + 2
    assert found.value("cloudpbx_ami_dropped_events_total", server="ast1", event="other") == 8
    # A known name keeps its series; "other" grows with the names past the cap.
    readings.ami = [ami({**names, "Event0": 5, f"Event{MAX_EVENT_NAMES + 9}": 3, 'Bad"Name{}': 2})]
    again = exposed(sampler)
    assert again.value("cloudpbx_ami_dropped_events_total", server="ast1", event="Event0") == 5
    assert again.value("cloudpbx_ami_dropped_events_total", server="ast1", event="other") == 11
    assert again.value("cloudpbx_ami_up", server="ast1") == 1
    assert again.value("cloudpbx_ami_ping_rtt_seconds", server="ast1") == 0.002


async def test_a_database_that_does_not_answer_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    readings = Readings()

    async def unreachable() -> OutboxDepth:
        raise ConnectionRefusedError("the database is down")

    readings.outbox = unreachable  # type: ignore[method-assign]
    sampler = sampler_over(readings)
    with caplog.at_level(logging.WARNING, logger="cloudpbx.metrics.sampler"):
        for _ in range(3):
            await sampler._sample_queues_logged()
    warnings = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert warnings == [
        "metrics: the SMS and job queues cannot be read: "
        "ConnectionRefusedError: the database is down"
    ]


def test_a_multiprocess_folder_that_does_not_exist_is_refused_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"PROMETHEUS_MULTIPROC_DIR=.*missing is not a folder"):
        Metrics()
