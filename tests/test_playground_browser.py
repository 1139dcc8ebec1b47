"""The web playground in a real headless Chromium: streamed PCM is received and played.

Needs Debian's ``chromium`` + ``chromium-driver`` and ``selenium`` (skipped otherwise).
The screenshot lands in ``test-output/playground.png`` (and ``playground-key.png``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from _liveserver import LiveServer, tiny_settings

OUT = Path(__file__).resolve().parent.parent / "test-output"
CHROMIUM = os.environ.get("KANITTS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = os.environ.get("KANITTS_CHROMEDRIVER") or shutil.which("chromedriver")


def _driver(user_dir: str):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    if not CHROMIUM or not CHROMEDRIVER:
        pytest.skip("chromium / chromedriver not found (apt-get install chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                 "--window-size=900,1000", f"--user-data-dir={user_dir}"):
        opts.add_argument(flag)
    try:
        return webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    except Exception as exc:  # noqa: BLE001 - a broken local browser is a skip, not a failure
        pytest.skip(f"chromium did not start: {exc}")


def _wait(driver, script: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    state = driver.execute_script("return JSON.stringify(window.kanitts || null)")
    raise AssertionError(f"timed out waiting for: {script}; page state: {state}")


@pytest.fixture(scope="module")
def browser():
    user_dir = tempfile.mkdtemp(prefix="kanitts-chromium-")
    driver = _driver(user_dir)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(user_dir, ignore_errors=True)


def test_playground_streams_and_plays(browser, tiny_model, tiny_codec):
    from kanitts.server.app import create_app

    OUT.mkdir(exist_ok=True)
    with LiveServer(create_app(tiny_settings(tiny_model, tiny_codec))) as srv:
        browser.get(srv.url + "/")
        _wait(browser, "return window.kanitts && window.kanitts.voicesLoaded")
        voices = browser.execute_script(
            "return Array.from(document.querySelectorAll('#voice option')).map(o => o.value)")
        assert "andrew" in voices and "katie" in voices
        assert browser.execute_script("return document.getElementById('language').value") == ""  # auto-detect
        browser.execute_script("document.getElementById('voice').value = 'katie';"
                               "document.getElementById('text').value = 'Hello there.';")
        browser.find_element("id", "play").click()
        _wait(browser, "return window.kanitts.state === 'done' || window.kanitts.state === 'error'", 120)
        k = browser.execute_script("return Object.assign({}, window.kanitts, {contextTime: window.kanitts.contextTime,"
                                   " contextState: window.kanitts.contextState})")
        assert k["state"] == "done", k
        assert k["samplesReceived"] > 0 and k["samplesScheduled"] == k["samplesReceived"]
        assert k["ttfaMs"] is not None and k["ttfaMs"] >= 0
        # Playback started while the body was still streaming, not after it ended.
        assert k["firstScheduledWhile"] == "streaming"
        assert k["firstScheduledAtMs"] < k["streamEndedAtMs"], k
        assert k["contextTime"] > 0, "the AudioContext clock never ran: nothing was played"
        assert browser.find_element("id", "ttfa").text.endswith("ms")
        assert browser.find_element("id", "used-voice").text.startswith("katie")
        link = browser.find_element("id", "download")
        assert link.is_displayed() and link.get_attribute("href").startswith("blob:")
        # The download link holds a WAV of exactly what was received.
        assert k["downloadBytes"] == 44 + 2 * k["samplesReceived"]
        browser.save_screenshot(str(OUT / "playground.png"))


def test_playground_asks_for_key(browser, tiny_model, tiny_codec):
    from kanitts.server.app import create_app

    OUT.mkdir(exist_ok=True)
    settings = tiny_settings(tiny_model, tiny_codec, api_keys=["sk-browser"])
    with LiveServer(create_app(settings)) as srv:
        browser.get(srv.url + "/")
        browser.execute_script("localStorage.clear()")
        browser.refresh()
        _wait(browser, "return window.kanitts && window.kanitts.authRequired")
        assert browser.find_element("id", "key-box").is_displayed()
        browser.execute_script("document.getElementById('text').value = 'Hi.';")
        browser.find_element("id", "api-key").send_keys("sk-browser")
        browser.find_element("id", "save-key").click()
        _wait(browser, "return window.kanitts.voicesLoaded")
        browser.find_element("id", "play").click()
        _wait(browser, "return ['done', 'error'].includes(window.kanitts.state)", 120)
        k = browser.execute_script("return Object.assign({}, window.kanitts)")
        assert k["state"] == "done" and k["samplesReceived"] > 0, k
        browser.save_screenshot(str(OUT / "playground-key.png"))
