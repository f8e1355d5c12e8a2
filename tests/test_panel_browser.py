"""The operator panel in a real browser (Debian's chromium driven by Playwright) against a
real server running the demo PBX on the simulator.

One server and one browser for the module. The simulator makes no calls of its own
(`simulator_rate=0`), so every event comes from a `/dial` of a test and the state the
pages must show is known. Screenshots go to build/test-artifacts/panel/ (or
$CLOUDPBX_TEST_ARTIFACTS/panel/).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright, expect
from websockets.asyncio.client import connect

from cloudpbx.demo import DEMO_PBX, prepare_demo
from cloudpbx.runtime import Runtime, build_runtime
from cloudpbx.server import attach_backends, uvicorn_config
from cloudpbx.settings import Settings
from tests.live import LiveServer, make_settings

CHROMIUM = "/usr/bin/chromium"
KEY = "PanelTestKey1"
ARTIFACTS = Path(os.environ.get("CLOUDPBX_TEST_ARTIFACTS", "build/test-artifacts")) / "panel"
WAIT_MS = 20_000
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 1000}

# Every lamp change the page makes, with the page's clock: [{exten, status, party, at}].
WATCH_LAMPS = """() => {
  const last = {};
  for (const lamp of document.querySelectorAll('.lamp')) {
    last[lamp.dataset.exten] = lamp.dataset.status;
  }
  window.lampChanges = [];
  new MutationObserver(() => {
    for (const lamp of document.querySelectorAll('.lamp')) {
      if (last[lamp.dataset.exten] === lamp.dataset.status) continue;
      last[lamp.dataset.exten] = lamp.dataset.status;
      window.lampChanges.push({exten: lamp.dataset.exten, status: Number(lamp.dataset.status),
        party: lamp.querySelector('.party').textContent, at: Date.now()});
    }
  }).observe(document.getElementById('lamps'), {subtree: true, childList: true, attributes: true});
}"""

# What a page shows, minus the "since" times (they are when that page saw a change).
PAGE_STATE = """() => ({
  lastId: document.body.dataset.lastId,
  lamps: [...document.querySelectorAll('.lamp')].map(l =>
    [l.dataset.exten, l.dataset.status, l.querySelector('.party').textContent]),
  queues: [...document.querySelectorAll('#queue-rows tr')].map(r =>
    [r.dataset.queue, r.dataset.calls]),
  agents: [...document.querySelectorAll('#agent-rows tr')].map(r => r.textContent),
  conferences: [...document.querySelectorAll('.conference')].map(c => c.textContent),
  sms: [...document.querySelectorAll('#sms-feed li')].map(li => li.textContent),
  events: [...document.querySelectorAll('#event-log li')].map(li => li.textContent),
})"""


@dataclass
class Panel:
    """The server (replaced on restart), its settings and port, and the browser."""

    settings: Settings
    port: int
    server: LiveServer
    browser: Browser
    problems: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/pbx_{DEMO_PBX}?pbxkey={KEY}"

    async def open(self, key: str = KEY, pbx: str = DEMO_PBX, size: Any = DESKTOP) -> Page:
        """A fresh page (its own session storage) logged in with `key`."""
        context = await self.browser.new_context(locale="en-GB", viewport=size)
        page = await context.new_page()
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                self.problems.append(f"console: {message.text}")
                if message.type == "error" and not _expected_console_error(message.text)
                else None
            ),
        )
        await page.goto(f"{self.url}/panel/?pbx={pbx}")
        await page.fill("#login-pbx", pbx)
        await page.fill("#login-key", key)
        await page.click("#login-form button[type=submit]")
        return page


def _expected_console_error(text: str) -> bool:
    """Chromium logs refused requests that the wrong-key/PBX test provokes on purpose."""
    return "/ws/pbx_" in text or "status of 401" in text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _serve(settings: Settings, port: int) -> LiveServer:
    """Like tests.live.start_server, on a fixed port: a restart must keep the page's URL."""
    runtime: Runtime = build_runtime(settings)
    await runtime.migrate()
    await prepare_demo(runtime, KEY)
    await attach_backends(runtime)
    server = uvicorn.Server(uvicorn_config(runtime))
    server.config.port = port
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(20):
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("server stopped during start")
            await asyncio.sleep(0.02)
    return LiveServer(runtime, server, task, port)


async def _dial_and_wait(panel: Panel, cpa: str, cpb: str) -> list[tuple[str, int, float]]:
    """`/dial` through the REST API; the (extension, status, time) changes until both idle."""
    changes: list[tuple[str, int, float]] = []
    async with connect(panel.stream_url()) as ws, panel.server.client(KEY) as client:
        answer = await client.get("/dial", params={"cpa": cpa, "cpb": cpb})
        assert answer.status_code == 200 and answer.text == "OK"
        changes = await _watch_until_idle(ws, {cpa, cpb})
    return changes


async def _watch_until_idle(ws: Any, extensions: set[str]) -> list[tuple[str, int, float]]:
    changes: list[tuple[str, int, float]] = []
    last: dict[str, int] = {}
    async with asyncio.timeout(60):
        while not (extensions <= set(last) and all(last[e] == 0 for e in extensions)):
            message = json.loads(await ws.recv())
            received = time.time()
            event = message["text"].get("subscriber")
            if event is None:
                continue
            exten = event["peer"].removeprefix(f"{DEMO_PBX}-")
            if exten in extensions:
                last[exten] = event["statusValue"]
                changes.append((exten, event["statusValue"], received))
    return changes


async def _shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
async def panel(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Panel]:
    port = _free_port()
    settings = make_settings(
        tmp_path_factory.mktemp("panel"),
        backend="simulator",
        simulator_rate=0,
        simulator_speed=10,
        simulator_seed=5,
        port=port,
    )
    server = await _serve(settings, port)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox"]
            )
            state = Panel(settings, port, server, browser)
            # One call in the history, so a freshly loaded page has lamps to show and click.
            await _dial_and_wait(state, "101", "102")
            try:
                yield state
            finally:
                await browser.close()
    finally:
        await state.server.stop()
    assert state.problems == []


async def test_the_grid_follows_simulator_events_within_a_second(panel: Panel) -> None:
    page = await panel.open()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    await expect(page.locator('.lamp[data-exten="101"]')).to_have_attribute("data-status", "0")
    await page.evaluate(WATCH_LAMPS)

    changes = await _dial_and_wait(panel, "105", "106")

    await page.wait_for_function(
        """() => ['105', '106'].every(e => {
          const seen = window.lampChanges.filter(c => c.exten === e);
          return seen.length > 0 && seen[seen.length - 1].status === 0;
        })""",
        timeout=WAIT_MS,
    )
    shown: list[dict[str, Any]] = await page.evaluate("window.lampChanges")
    first_ring = changes[0]
    assert first_ring[:2] == ("105", 8)
    finals = [next(c for c in reversed(changes) if c[0] == exten) for exten in ("105", "106")]
    for exten, status, received in [first_ring, *finals]:
        seen = next(s for s in shown if s["exten"] == exten and s["status"] == status)
        assert seen["at"] / 1000 - received < 1.0, (exten, status)
    # While talking, 105's lamp names the other party.
    assert any(s["exten"] == "105" and s["status"] == 1 and "106" in s["party"] for s in shown)
    await _shoot(page, "desktop")
    await page.set_viewport_size(PHONE)
    await _shoot(page, "phone")
    await page.context.close()


async def test_a_dial_from_the_page_rings_the_right_extensions(panel: Panel) -> None:
    page = await panel.open(size=PHONE)
    lamp = page.locator('.lamp[data-exten="101"]')
    await expect(lamp).to_have_attribute("data-status", "0", timeout=WAIT_MS)
    async with connect(panel.stream_url()) as ws:
        await lamp.focus()
        await page.keyboard.press("Enter")  # the keyboard is enough
        await expect(page.locator("#dial-dialog")).to_be_visible()
        await page.fill("#dial-number", "103")
        await page.click("#dial-submit")
        await expect(page.locator("#notice")).to_contain_text("accepted the call")
        changes = await _watch_until_idle(ws, {"101", "103"})
    assert [c[:2] for c in changes if c[1] == 8][:2] == [("101", 8), ("103", 8)]
    # The keyboard user is still on 101: lamps change in place, focus is not lost.
    await expect(lamp).to_be_focused()
    await expect(page.locator('.lamp[data-exten="103"]')).to_have_attribute(
        "data-status", "0", timeout=WAIT_MS
    )

    # Any extension can call through "New call…" (the simulator announced all of them at
    # its start, so 107 has a lamp, idle).
    await expect(page.locator('.lamp[data-exten="107"]')).to_have_attribute("data-status", "0")
    async with connect(panel.stream_url()) as ws:
        await page.click("#dial-new")
        await page.fill("#dial-from", "107")
        await page.fill("#dial-number", "108")
        await page.click("#dial-submit")
        await expect(page.locator("#notice")).to_contain_text("107 rings, then 108")
        await _watch_until_idle(ws, {"107", "108"})
    await expect(page.locator('.lamp[data-exten="107"]')).to_have_attribute(
        "data-status", "0", timeout=WAIT_MS
    )

    # A test SMS from the page: the answer, then its delivery on the stream.
    await page.fill("#sms-to", "600100200")
    await page.fill("#sms-body", "Test z panelu")
    await page.click("#sms-form button[type=submit]")
    result = page.locator("#sms-result")
    await expect(result).to_contain_text("SMS accepted")
    response_id = await result.get_attribute("data-response-id")
    assert response_id
    delivered = page.locator(f'#sms-feed li[data-sms="{response_id}"]')
    await expect(delivered).to_have_attribute("data-status", "DELIVERED", timeout=WAIT_MS)
    await expect(delivered).to_contain_text("48600100200")
    await _shoot(page, "phone-after-dial-and-sms")
    await page.context.close()


async def test_reconnect_after_a_server_restart_ends_in_the_fresh_page_state(
    panel: Panel,
) -> None:
    page = await panel.open()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    await expect(page.locator('.lamp[data-exten="101"]')).to_be_visible()

    await panel.server.stop()
    await expect(page.locator("#connection")).to_have_attribute(
        "data-state", "reconnecting", timeout=WAIT_MS
    )
    await expect(page.locator("#notice")).to_contain_text("reconnecting")
    await _shoot(page, "reconnecting")
    panel.server = await _serve(panel.settings, panel.port)
    await expect(page.locator("#connection")).to_have_attribute(
        "data-state", "live", timeout=WAIT_MS
    )
    await expect(page.locator("#notice")).to_be_hidden()

    # Events after the restart reach the reconnected page.
    changes = await _dial_and_wait(panel, "102", "104")
    async with panel.server.client(KEY) as client:
        sms = await client.post("/sendSMS", data={"to": "600100000", "body": "x", "test": "true"})
    undelivered = f'#sms-feed li[data-sms="{sms.json()["responseId"]}"]'
    await expect(page.locator(undelivered)).to_have_attribute(
        "data-status", "UNDELIVERED", timeout=WAIT_MS
    )
    assert ("104", 0) in [c[:2] for c in changes]
    await expect(page.locator('.lamp[data-exten="104"]')).to_have_attribute("data-status", "0")

    fresh = await panel.open()
    await expect(fresh.locator("#connection")).to_have_attribute("data-state", "live")
    newest = await page.evaluate("document.body.dataset.lastId")
    await expect(fresh.locator("body")).to_have_attribute("data-last-id", newest)
    assert await page.evaluate(PAGE_STATE) == await fresh.evaluate(PAGE_STATE)
    for each in (page, fresh):
        await each.context.close()


async def test_a_wrong_key_or_pbx_shows_a_clear_error(panel: Panel) -> None:
    page = await panel.open(key="NotTheKey1")
    error = page.locator("#login-error")
    await expect(error).to_contain_text("Wrong API key (HTTP 401)")
    await expect(page.locator("#panel")).to_be_hidden()
    assert await page.evaluate("sessionStorage.length") == 0
    await _shoot(page, "wrong-key")
    await page.context.close()

    other = await panel.open(pbx="InnaCentrala")
    await expect(other.locator("#login-error")).to_contain_text(
        "Cannot open the event stream of PBX InnaCentrala"
    )
    await expect(other.locator("#panel")).to_be_hidden()
    await other.context.close()


# Folds crafted messages with the page's own state.js, as the stream would deliver them.
FOLD = """async (pbx) => {
  const { applyMessage, createState, sortedExtensions } = await import('/panel/state.js');
  const state = createState(pbx);
  const fold = (id, text, now) => applyMessage(state, {id, channel: 'pbx_' + pbx, text}, now);
  const applied = [
    fold(5, {subscriber: {peer: pbx + '-101', statusValue: 1, connectPeerNumber: '102',
                          connectPeerName: 'Jan'},
             extstatus: {exten: '101', status: 1},
             qmember: {peer: pbx + '-101', queue: 'Q', m_status: '2', m_ct: '3',
                       m_mbshp: 'static', m_paused: '1', m_reason: 'Lunch', m_name: 'Anna',
                       m_location: 'SIP/' + pbx + '-101'},
             queue: {peer: 'Q', calls: '2'},
             cmember: {channel: 'SIP/x-1', action: 'add', conference: 'R',
                       callerIDName: 'Ola', callerIDNum: '103'},
             smsSendResponse: {MsgId: '77', to: '48600100200', status: 'SENT'}}, 1000),
    fold(5, {extstatus: {exten: '101', status: 0}}, 2000),
    fold(6, {subscriber: {peer: 'Other-109', statusValue: 8}}, 3000),
    fold(7, {qmember: {peer: pbx + '-101', queue: 'Q', m_status: '1', m_ct: '4',
                       m_mbshp: 'static', m_paused: '1', m_name: 'Anna',
                       m_location: 'SIP/' + pbx + '-101'},
             queue: {peer: 'Q', calls: '1'}}, 4000),
    fold(8, {extstatus: {exten: '101', status: 1}, queue: {peer: 'Q', calls: '3'}}, 5000),
  ];
  const afterPause = {...state.agents.get('Q\\u0000' + pbx + '-101')};
  fold(9, {qmember: {peer: pbx + '-101', queue: 'Q', m_status: '1', m_ct: '4',
                     m_mbshp: 'static', m_paused: '0', m_name: 'Anna',
                     m_location: 'SIP/' + pbx + '-101'},
           cmember: {channel: 'SIP/x-1', action: 'remove', conference: 'R',
                     callerIDName: 'Ola', callerIDNum: '103'}}, 6000);
  return {applied, afterPause, lastId: state.lastId,
          extensions: sortedExtensions(state),
          queue: state.queues.get('Q'),
          agent: state.agents.get('Q\\u0000' + pbx + '-101'),
          room: [...state.conferences.get('R').values()],
          sms: [...state.sms.values()], events: state.events.map(e => e.id)};
}"""


async def test_the_page_folds_every_event_type_of_a_message(panel: Panel) -> None:
    context = await panel.browser.new_context()
    page = await context.new_page()
    await page.goto(f"{panel.url}/panel/")
    folded = await page.evaluate(FOLD, DEMO_PBX)
    await context.close()
    # One message with six event types: all applied; an old id is not applied again.
    assert folded["applied"] == [True, False, True, True, True]
    assert folded["lastId"] == 9 and folded["events"] == [9, 8, 7, 6, 5]
    # Another PBX's peer is ignored; the party stays while extstatus says in use.
    assert folded["extensions"] == [
        {"exten": "101", "status": 1, "party": {"number": "102", "name": "Jan"}, "since": 1000}
    ]
    # The pause reason survives a qmember without m_reason, and goes with the pause.
    assert folded["afterPause"]["reason"] == "Lunch" and folded["afterPause"]["paused"]
    assert folded["agent"]["reason"] == "" and not folded["agent"]["paused"]
    assert folded["agent"]["callsTaken"] == 4 and folded["agent"]["name"] == "Anna"
    # Callers leave in order: 2 came at 1000, one left, two more came at 5000.
    assert folded["queue"]["calls"] == 3 and folded["queue"]["arrivals"] == [1000, 5000, 5000]
    assert folded["room"] == []
    assert folded["sms"] == [{"id": "77", "to": "48600100200", "status": "SENT", "eventId": 5}]


CONNECTING = """async (pbx) => {
  const { applyMessage, createState, sortedExtensions } = await import('/panel/state.js');
  const state = createState(pbx);
  const fold = (id, text) => applyMessage(state, {id, channel: 'pbx_' + pbx, text}, id);
  const lamp = () => sortedExtensions(state)[0].status;
  fold(1, {subscriber: {peer: pbx + '-101', statusValue: 32, connectPeerNumber: '102'}});
  fold(2, {extstatus: {exten: '101', status: 1}});
  const calling = lamp();
  fold(3, {subscriber: {peer: pbx + '-101', statusValue: 1, connectPeerNumber: '102'}});
  const talking = lamp();
  fold(4, {extstatus: {exten: '101', status: 0}});
  return [calling, talking, lamp()];
}"""


async def test_a_calling_phone_stays_connecting_when_its_hint_says_in_use(panel: Panel) -> None:
    """Asterisk's hint of a phone placing a call reads In Use (1); Connecting (32) comes from
    `subscriber` only, and the `extstatus` that follows it must not hide it."""
    context = await panel.browser.new_context()
    page = await context.new_page()
    await page.goto(f"{panel.url}/panel/")
    lamps = await page.evaluate(CONNECTING, DEMO_PBX)
    await context.close()
    assert lamps == [32, 1, 0]


async def test_todays_calls_play_a_recording_beside_its_transcription(panel: Panel) -> None:
    page = await panel.open()
    async with panel.server.client(KEY) as client:
        rows = (await client.get("/cdr")).json()
    first = next(r for r in rows if (r["src"], r["dst"]) == ("101", "102"))
    row = page.locator(f'#call-rows tr[data-uniqueid="{first["uniqueid"]}"]')
    await expect(row).to_contain_text("ANSWERED")
    await row.get_by_role("button").click()
    # Fetched with the key, played from memory: the browser decodes the WAV's length.
    await page.wait_for_function(
        """() => { const a = document.getElementById('detail-audio');
                   return a.src.startsWith('blob:') && a.readyState >= 1 && a.duration > 0; }""",
        timeout=WAIT_MS,
    )
    await expect(page.locator("#detail-content")).not_to_be_empty()
    await expect(page.locator("#detail-summary")).not_to_be_empty()
    await expect(row).to_have_class("selected")
    await _shoot(page, "call-with-transcription")
    await page.context.close()


async def test_every_label_exists_in_polish_and_english(panel: Panel) -> None:
    context = await panel.browser.new_context(locale="pl-PL")
    page = await context.new_page()
    await page.goto(f"{panel.url}/panel/")
    labels = """() => [...document.querySelectorAll('[data-i18n]')]
        .map(n => [n.dataset.i18n, n.textContent])"""
    polish = dict(await page.evaluate(labels))
    assert polish["connect"] == "Połącz"  # the browser's language picks Polish
    await page.select_option("#lang", "en")
    english = dict(await page.evaluate(labels))
    await context.close()
    assert english["connect"] == "Connect"
    assert all(text and text != key for key, text in [*polish.items(), *english.items()])
    same = {key for key in polish if polish[key] == english[key]}
    assert same == {"sms", "agent"}  # the same words in both languages
