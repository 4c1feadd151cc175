"""The portal in a real browser: headless Chromium (Debian's chromium and chromedriver)
driven by Selenium against the daemon under twistd, with the simulated Asterisk and its
embedded redis-server. Screenshots are kept under the test's tmp dir (the paths are
printed)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.web.portal_client import running_portal

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PASSWORD = "demo-password"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()) and not shutil.which("chromium"),
    reason="Debian's chromium and chromium-driver are not installed (scripts/bootstrap.sh)",
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    # real time: a leg rings for 2 s, long enough to be seen ringing on the page
    with running_portal(tmp_path_factory.mktemp("browser"), time_scale=1.0) as d:
        yield d


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=420,1200",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, condition, timeout: float = 20.0, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition, what)


def leg_seen(driver, leg: str) -> list[str]:
    """The statuses the page has shown for a leg, in order (its row's data-seen)."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, f'#legs tr[data-leg="{leg}"]')
    return rows[0].get_attribute("data-seen").split() if rows else []


def log_in(driver, base: str, username: str, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/portal/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login").click()
    wait(driver, lambda d: "/login" not in d.current_url, what="logged in")


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def test_connect_two_live_add_drop_hang_up_history_vietnamese(daemon, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    base = f"http://127.0.0.1:{daemon.web_port}"
    driver = browser
    log_in(driver, base, "alice", PASSWORD)
    balance_before = driver.find_element(By.ID, "balance").text
    assert balance_before == "10.00 EUR"
    # connect two: the source is alice's default number
    assert driver.find_element(By.ID, "source").get_attribute("value") == "+15550011111"
    driver.find_element(By.ID, "destination").send_keys("+15550012222")
    driver.find_element(By.ID, "connect").click()
    wait(driver, lambda d: re.search(r"/portal/call/\w+$", d.current_url), what="call page")
    driver.execute_script("window.portalTestMark = 'same page';")

    # the page follows the legs without a reload
    wait(driver, lambda d: leg_seen(d, "source")[-2:] == ["ringing", "connected"], 30, "source")
    wait(
        driver,
        lambda d: leg_seen(d, "destination")[-2:] == ["ringing", "connected"],
        30,
        "destination",
    )
    assert leg_seen(driver, "source").index("ringing") < leg_seen(driver, "source").index(
        "connected"
    )
    status = driver.find_element(By.CSS_SELECTOR, '#legs tr[data-leg="destination"] .status')
    assert status.text == "connected"
    assert driver.execute_script("return window.portalTestMark") == "same page"
    # the running cost counts by the second while the legs are up
    wait(driver, lambda d: d.find_element(By.ID, "cost").text != "0.00 EUR", 10, "cost counts")
    screenshot(driver, tmp_path, "portal-call-connected.png")

    # a third leg, added and dropped from the page
    driver.find_element(By.ID, "address").send_keys("+15550013333")
    driver.find_element(By.ID, "add").click()
    wait(driver, lambda d: leg_seen(d, "additional-1")[-1:] == ["connected"], 30, "third leg")
    driver.find_element(By.CSS_SELECTOR, '#legs tr[data-leg="additional-1"] button.drop').click()
    wait(driver, lambda d: leg_seen(d, "additional-1")[-1:] == ["ended"], 20, "third leg gone")
    assert leg_seen(driver, "destination")[-1] == "connected"
    cost = driver.find_element(By.ID, "cost").text
    assert cost.endswith("EUR")

    # hang up: the page says the call has ended
    driver.find_element(By.ID, "hangup").click()
    wait(driver, lambda d: d.find_element(By.ID, "ended").is_displayed(), 20, "ended")
    assert leg_seen(driver, "source")[-1] == "ended"
    assert driver.execute_script("return window.portalTestMark") == "same page"

    # the CDRs and the new balance
    driver.find_element(By.ID, "history-link").click()

    def three_cdrs(d):
        if len(d.find_elements(By.CSS_SELECTOR, "tr.cdr")) == 3:
            return True
        d.refresh()
        return False

    wait(driver, three_cdrs, 20, "three CDRs")
    text = driver.find_element(By.TAG_NAME, "main").text
    assert "+15550013333" in text and "+15550012222" in text
    balance_after = driver.find_element(By.ID, "balance").text
    assert balance_after != balance_before
    assert float(balance_after.split()[0]) < 10.0

    # the page in Vietnamese
    Select(driver.find_element(By.ID, "language")).select_by_value("vi")
    wait(driver, lambda d: d.find_element(By.TAG_NAME, "html").get_attribute("lang") == "vi")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Lịch sử cuộc gọi"
    assert "Số dư" in driver.find_element(By.TAG_NAME, "main").text
    shot = screenshot(driver, tmp_path, "portal-history-vi.png")
    assert shot.stat().st_size > 1000
    # no error in the browser's console (CSP violations would show there)
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []


def test_operator_generates_vouchers_that_a_user_redeems(daemon, browser, tmp_path):
    from selenium.webdriver.common.by import By

    base = f"http://127.0.0.1:{daemon.web_port}"
    driver = browser
    log_in(driver, base, "operator", PASSWORD)
    driver.get(base + "/portal/ops/vouchers")
    driver.find_element(By.ID, "batch").send_keys("browser-batch")
    driver.find_element(By.ID, "value").send_keys("3.00")
    driver.find_element(By.ID, "count").send_keys("2")
    driver.find_element(By.ID, "generate").click()
    codes = wait(
        driver,
        lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, "td.code")],
        what="voucher codes",
    )
    assert len(codes) == 2
    driver.find_element(By.ID, "logout").click()
    wait(driver, lambda d: d.current_url.endswith("/portal/login"))

    log_in(driver, base, "bob", PASSWORD)
    driver.get(base + "/portal/account")
    assert driver.find_element(By.ID, "balance").text == "5.00 EUR"
    driver.find_element(By.ID, "pin").send_keys(codes[1])
    driver.find_element(By.ID, "topup").click()
    wait(driver, lambda d: d.find_elements(By.ID, "done"), what="topped up")
    assert driver.find_element(By.ID, "balance").text == "8.00 EUR"
    screenshot(driver, tmp_path, "portal-topup.png")
