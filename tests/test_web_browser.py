"""The dashboard in a real browser: Debian's headless Chromium, driven by selenium
through chromedriver, against the real `queuectl web` process.

It loads the overview and watches it refresh itself, filters the jobs page through
its form, retries a dead job from the DLQ page and sees the result, and saves
screenshots of each step under $QUEUECTL_TEST_ARTIFACTS (default: test-artifacts/ in
the repository). Skipped where Chromium or chromedriver is missing, except in CI
(`.ci/run` installs them), where their absence fails the test.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_web import free_port

from conftest import REPO, env_for, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(os.environ.get("QUEUECTL_TEST_ARTIFACTS") or REPO / "test-artifacts")

if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        raise RuntimeError("the browser test needs Debian's chromium and chromium-driver (.ci/run installs them)")
    pytest.skip("chromium or chromedriver is not installed", allow_module_level=True)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    # The path given: selenium would otherwise look for a driver on the network.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def dashboard(cli, tmp_path):
    """A queue with history (completed jobs in two queues, one dead job) and the real
    `queuectl web` serving it, refreshing its overview every second."""
    for n in range(5):
        cli.ok("enqueue", f"echo job {n}")
    cli.ok("enqueue", "--queue", "emails", "echo mail")
    dead = cli.json("enqueue", "--max-retries", "0", "--queue", "emails", "--json", "echo '<b>not bold</b>'; exit 3")
    dead_id = dead[0]["id"] if isinstance(dead, list) else dead["id"]
    cli.ok("worker", "start", "--burst", "-c", "1", timeout=120)
    port = free_port()
    env = env_for(cli.db_url)
    env.pop("QUEUECTL_WEB_TOKEN", None)
    server = subprocess.Popen([sys.executable, "-m", "queuectl", "web", "--port", str(port), "--refresh", "1s"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert server.stdout.readline().startswith(f"queuectl web: http://127.0.0.1:{port}/")
        yield f"http://127.0.0.1:{port}", dead_id
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert "Traceback" not in server.stderr.read()


def shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a rendered page, not an empty canvas
    return path


def text_of(driver, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def tile(driver, label: str) -> str:
    """The value of the overview's tile labelled `label` (as the page spells it), read
    in one script: the live refresh may replace the tiles between two selenium calls."""
    value = driver.execute_script(
        "for (const box of document.querySelectorAll('.tile')) {"
        "  if (box.querySelector('.label').textContent.trim().toLowerCase() === arguments[0])"
        "    return box.querySelector('.value').textContent.trim(); }"
        "return null;", label)
    assert value is not None, f"no tile {label!r}"
    return value


def test_overview_refresh_filter_and_retry_from_the_dlq_in_a_real_browser(browser, dashboard, cli, request):
    from selenium.webdriver.common.by import By

    base, dead_id = dashboard
    backend = request.node.callspec.params["db_url"]

    # The overview: counts, a chart of the last hour, and it refreshes itself.
    browser.get(base + "/")
    assert browser.title.startswith("Overview")
    assert tile(browser, "dead (dlq)") == "1"
    assert tile(browser, "ready") == "0"
    assert browser.find_elements(By.CSS_SELECTOR, "#live svg"), "the throughput chart"
    shot(browser, f"overview-{backend}")
    cli.ok("enqueue", "--queue", "later", "echo later")
    wait_until(lambda: tile(browser, "ready") == "1", timeout=30, message="the overview refreshed itself")
    assert re.fullmatch(r"updated \d\d:\d\d:\d\d UTC, every [\d.]+s", text_of(browser, "#live-status"))  # UTC, as every time shown

    # The jobs page, filtered through its form to dead jobs: only the dead one.
    browser.get(base + "/jobs")
    browser.find_element(By.CSS_SELECTOR, "form#filters input[name=state][value=dead]").click()
    browser.find_element(By.CSS_SELECTOR, "form#filters button.primary").click()
    wait_until(lambda: "state=dead" in browser.current_url, timeout=30, message="the filter applied")
    ids = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "table a[href^='/jobs/']")]
    assert ids == [dead_id]
    assert "<b>not bold</b>" in browser.page_source.replace("&lt;", "<").replace("&gt;", ">")
    assert not browser.find_elements(By.CSS_SELECTOR, "table b"), "command text is escaped, never rendered"
    shot(browser, f"jobs-dead-{backend}")

    # The DLQ: retry the dead job with its row's button, and see the result.
    browser.get(base + "/dlq")
    browser.find_element(By.CSS_SELECTOR, f"button[name=one][value='retry:{dead_id}']").click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "div.flash.ok"), timeout=30, message="the action's message")
    assert dead_id in text_of(browser, "div.flash.ok") and "retried" in text_of(browser, "div.flash.ok")
    assert not browser.find_elements(By.CSS_SELECTOR, f"button[value='retry:{dead_id}']"), "it left the DLQ"
    shot(browser, f"dlq-retried-{backend}")
    browser.get(f"{base}/jobs/{dead_id}")
    assert text_of(browser, ".heading .badge") == "pending"
    assert cli.json("show", dead_id, "--json")["state"] == "pending"

    # At 1280 px no page scrolls sideways, even with a long command: a wide table
    # scrolls inside its panel, and the schedule's command wraps beside its buttons.
    cli.ok("schedule", "add", "hostile", "--cron", "0 0 1 1 *", "--", 'echo "<script>alert(2)</script>" && echo and some more words')
    browser.set_window_size(1280, 900)
    for page in ("/", "/workers", "/queues", "/schedules"):
        browser.get(base + page)
        overflow = browser.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
        assert overflow <= 0, f"{page} is {overflow}px wider than the window"
    run_now = browser.find_element(By.XPATH, "//button[normalize-space()='run now']")
    assert run_now.rect["x"] + run_now.rect["width"] <= browser.execute_script("return document.documentElement.clientWidth;")
    shot(browser, f"schedules-{backend}")
