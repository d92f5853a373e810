"""A person reading a task's log in Airflow's UI, played by headless Chromium: Debian's chromium
and chromium-driver, driven by Selenium. The driver's path is given, so Selenium Manager never
looks for (or downloads) a driver of its own; SE_OFFLINE keeps it off the network as well.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Click the first collapsed group of log lines ("▶ Pre Execute"): its lines are not in the page
# until it opens, and each click re-renders the list, so one click per call.
OPEN_ONE_GROUP = """
const header = document.evaluate("//*[starts-with(normalize-space(text()), '\u25b6')]", document,
    null, XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue;
if (header) { header.click(); return true; }
return false;
"""
# The log view renders only the lines in sight: scroll every scrollable box a screen further.
SCROLL_DOWN = """
let moved = false;
for (const box of document.querySelectorAll('*')) {
    if (box.scrollHeight > box.clientHeight + 4 && getComputedStyle(box).overflowY !== 'visible'
            && box.scrollTop + box.clientHeight < box.scrollHeight - 1) {
        box.scrollTop += box.clientHeight * 0.8; moved = true;
    }
}
return moved;
"""


def read_task_log_page(url: str, password: str, expected: str, screenshot: Path,
                       timeout: float = 180) -> str:
    """Open a task instance's page (its Logs tab is the default), log in as admin on the way,
    wait until `expected` is on the page, save a screenshot; the page's text (all it showed)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="slimline-chromium-")
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--no-first-run", "--disable-background-networking", "--disable-sync",
                     "--disable-component-update", "--window-size=1600,1200",
                     f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    seen: list[str] = []
    try:
        wait = WebDriverWait(driver, timeout)
        driver.get(url)
        # No session yet: the UI sends the browser to the login form, then back to the page.
        user = wait.until(expected_conditions.visibility_of_element_located(
            (By.CSS_SELECTOR, "input[name=username]")))
        user.send_keys("admin")
        driver.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda page: "/auth/login" not in page.current_url)
        if "/tasks/" not in driver.current_url:
            driver.get(url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = driver.execute_script("return document.body.innerText")
            seen.append(text)
            if expected in text:
                line = driver.find_element(By.XPATH, f"//*[contains(text(), {expected!r})]")
                driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", line)
                driver.save_screenshot(str(screenshot))
                return "\n".join(seen)
            if not driver.execute_script(OPEN_ONE_GROUP):
                driver.execute_script(SCROLL_DOWN)
            time.sleep(0.5)
        raise AssertionError(f"{expected!r} not on {driver.current_url} after {timeout} s; "
                             f"it showed:\n{seen[-1][-3000:] if seen else '(nothing)'}")
    finally:
        if not screenshot.exists():
            driver.save_screenshot(str(screenshot.with_name(screenshot.stem + "-failed.png")))
        driver.quit()
