"""The operator panel on the Asterisk backend: Debian's chromium against a server on the lab.

The same page as on the demo (tests/test_panel_browser.py), fed only by what the real
Asterisk reported: the state at load comes from the backend's resync in the history, a
dial from the page rings real phones, a hang-up on the phone shows in the page.
"""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import async_playwright, expect

from cloudpbx.lab import Lab
from tests.conftest import Tenants
from tests.test_asterisk_e2e import PBX, api, clean, phone
from tests.test_panel_browser import ARTIFACTS, CHROMIUM, DESKTOP, WAIT_MS


async def test_the_panel_shows_the_lab_pbx_and_dials_from_it(lab: Lab, tmp_path: Path) -> None:
    tenants = Tenants()
    async with (
        clean(lab),
        api(lab, tmp_path / "data", tenants) as a,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(locale="en-GB", viewport=DESKTOP)
            await page.goto(f"{a.server.url}/panel/?pbx={PBX}")
            await page.fill("#login-pbx", PBX)
            await page.fill("#login-key", tenants.a_key)
            await page.click("#login-form button[type=submit]")
            await expect(page.locator("#connection")).to_have_attribute("data-state", "live")

            # At load: what Asterisk said at the resync (phones 101-104 registered, 105 never).
            for exten, status in (("101", "0"), ("102", "0"), ("103", "0"), ("105", "4")):
                lamp = page.locator(f'.lamp[data-exten="{exten}"]')
                await expect(lamp).to_have_attribute("data-status", status, timeout=WAIT_MS)

            # A dial from the page: 101 rings and answers, then 102 (busy_at=1: Busy).
            caller = page.locator('.lamp[data-exten="101"]')
            await caller.click()
            await page.fill("#dial-number", "102")
            await page.click("#dial-submit")
            await expect(page.locator("#notice")).to_contain_text("accepted the call")
            callee = page.locator('.lamp[data-exten="102"]')
            await expect(callee).to_have_attribute("data-status", "2", timeout=WAIT_MS)
            await expect(caller).to_have_attribute("data-status", "1", timeout=WAIT_MS)
            await expect(caller.locator(".party")).to_contain_text("102")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "lab-in-call.png"), full_page=True)

            await phone(lab, 102, "hangup")
            for lamp in (caller, callee):
                await expect(lamp).to_have_attribute("data-status", "0", timeout=WAIT_MS)
        finally:
            await browser.close()
