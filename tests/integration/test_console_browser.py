"""The live console in headless Chromium through a real call on the real Asterisk.

Debian's ``chromium`` and ``chromium-driver``; selenium is given the driver's path so it never
downloads one. ``ARI_AGENT_SCREENSHOTS=DIR`` (``make screenshots``) saves the pages for the docs.
"""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.integration.lab import AgentFactory, Lab

TOKEN = "browser-test-token-0123456789"
DRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    assert Path(DRIVER).exists(), "apt-get install chromium chromium-driver (make deps)"
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(arg)
    chromium = shutil.which("chromium")
    if chromium:
        options.binary_location = chromium
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, page: webdriver.Chrome | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + (f": {page.page_source[:500]}" if page else ""))


def post(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=b"", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_console_in_chromium_follows_a_real_call(
    lab: Lab, agent_factory: AgentFactory, browser: webdriver.Chrome
) -> None:
    shots = os.environ.get("ARI_AGENT_SCREENSHOTS")
    agent = agent_factory.start({"AGENT_HTTP__TOKEN": TOKEN})
    base = f"http://127.0.0.1:{agent.http_port}"
    browser.get(base + "/")
    assert "Calls in progress" not in browser.page_source
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "login").click()
    wait_for("the console", lambda: "Calls in progress" in browser.page_source, 10, browser)
    cookie = browser.get_cookie("aia_console")
    assert cookie is not None and cookie["httpOnly"]
    csrf = browser.find_element(By.CSS_SELECTOR, 'meta[name="csrf"]').get_attribute("content")
    assert csrf

    handle = lab.place_call(["what time do you open", "goodbye"], via="local")
    pages: list[str] = []

    # The page redraws its rows on every event: read a row in one script run, never an element
    # that the next redraw replaces.
    row_script = """
        const row = document.querySelector("tr.live-call");
        return row && {id: row.dataset.callId, text: row.innerText,
                       bars: row.querySelectorAll("span.bar.stt").length,
                       buttons: row.querySelectorAll("button.action-hangup").length};
    """
    row: dict[str, Any] = {}

    def row_with_timings() -> bool:
        nonlocal row
        pages.append(browser.page_source)
        row = browser.execute_script(row_script) or {}
        return "stt" in row.get("text", "") and "llm_first_token" in row.get("text", "")

    wait_for("the call with its turn timings", row_with_timings, 60)
    call_id = str(row["id"])
    assert call_id and "frontdesk" in row["text"] and "MOS" in row["text"]
    assert row["bars"] >= 1 and row["buttons"] == 1
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(shots) / "console-live.png"))

    # Actions: refused without the login; refused from a foreign Origin even with the cookie.
    action = f"{base}/console/calls/{call_id}/hangup"
    assert post(action, {"Origin": base, "X-CSRF-Token": csrf}) == 401
    with_cookie = {"Cookie": f"aia_console={cookie['value']}", "X-CSRF-Token": csrf}
    assert post(action, {**with_cookie, "Origin": "http://evil.example"}) == 403

    # The call runs to its goodbye, and leaves the live list.
    lab.wait_call_ended(handle, timeout=90)
    record = agent.record_for(handle.number)
    assert record["end_reason"] == "hangup_by_agent"

    def gone() -> bool:
        pages.append(browser.page_source)
        return not browser.execute_script(row_script)

    wait_for("the call to leave the live list", gone, 10)
    browser.get(base + "/")
    wait_for("recent calls", lambda: call_id[:12] in browser.page_source, 10)
    pages.append(browser.page_source)
    if shots:
        browser.save_screenshot(str(Path(shots) / "console-recent.png"))
    # No text opt-in: never a transcript or the caller's number on the page.
    words = [t["text"] for t in record["turns"] if t["text"]]
    assert words
    for page in pages:
        assert handle.number not in page
        for text in words:
            assert text not in page, text
