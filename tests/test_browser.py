"""The report as a person sees it: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by ``.ci/run``) loads every page of a generated report,
served over HTTP on 127.0.0.1, with no console error and no failed request, follows every
link within the report, and takes a screenshot of each page (kept in
``$PNFSMON_TEST_SCREENSHOTS`` if set, to be looked at)."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
import urllib.parse
from pathlib import Path

import pytest

from pnfsmon.web import report
from pnfsmon.web.report import write_report
from tests.test_report import corrupted_tree

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"not installed: {missing} (.ci/run installs chromium, chromium-driver)")
        pytest.skip(f"not installed: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1300,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def served_report(sqlite_engine, tree, tmp_path, monkeypatch):
    engine = sqlite_engine
    corrupted_tree(engine, tree)
    monkeypatch.setattr(report, "PAGE_ROWS", 2)  # several pages to walk through
    out = tmp_path / "report"
    write_report(engine, out)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))

    class Quiet(handler.func):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield out, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_every_page_loads_cleanly_in_chromium(browser, served_report, tmp_path):
    from selenium.webdriver.common.by import By

    out, base = served_report
    shots = Path(os.environ.get("PNFSMON_TEST_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    pages = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.html"))
    assert "index.html" in pages and "calibration.html" in pages
    assert any(p.startswith("history/") for p in pages)
    linked: set[str] = set()
    for page in pages:
        browser.get(base + page)
        assert browser.find_element(By.TAG_NAME, "h1").text, page
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, f"{page}: {errors}"
        for a in browser.find_elements(By.TAG_NAME, "a"):
            href = a.get_attribute("href")
            if href and href.startswith(base):
                linked.add(urllib.parse.urlsplit(href).path.lstrip("/"))
        # The whole page, not just the window: resize to its height first.
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1300, min(max(height + 150, 400), 8000))
        assert browser.save_screenshot(str(shots / (page.replace("/", "_") + ".png")))
    # Every link within the report leads to a file of the report.
    broken = sorted(p for p in linked if not (out / urllib.parse.unquote(p)).is_file())
    assert not broken, broken
    assert {"corrupted.txt", "corrupted.csv", "corrupted.jsonl", "summary.json",
            "pnfsmon.prom"} <= linked


def test_the_sites_table_fits_a_1300_px_window(browser, sqlite_engine, tree, tmp_path):
    """The widest a site's row gets: a long name, ten-million-file counts, sizes in TB, a
    published catalog compare, an incomplete crawl."""
    import time

    import sqlalchemy as sa
    from selenium.webdriver.common.by import By

    from pnfsmon.schema.discrepancies import CompareState
    from pnfsmon.schema.status import Status
    from pnfsmon.schema.tables import compares, crawls, status_counts

    engine = sqlite_engine
    corrupted_tree(engine, tree)
    big = 12_345_678
    now = time.time()
    with engine.begin() as conn:
        conn.execute(sa.update(crawls).values(
            files=big, directories=1_234_567, empty_directories=123_456,
            unreadable_directories=12_345, complete=False, started=now - 86_000,
            finished=now))
        site = conn.execute(sa.select(crawls.c.site)).scalar()
        conn.execute(sa.insert(status_counts), [
            {"site": site, "status": int(s), "reference": 1, "files": big,
             "bytes": 987 * 10**12} for s in Status])
        conn.execute(sa.insert(compares).values(
            site=site, started=now, finished=now, state=CompareState.PUBLISHED.value,
            missing=big,
            missing_bytes=987 * 10**12, orphan=big, orphan_bytes=987 * 10**12))
    out = tmp_path / "report"
    write_report(engine, out)
    browser.set_window_size(1300, 1000)
    browser.get((out / "index.html").as_uri())
    table = browser.find_element(By.CSS_SELECTOR, "table.sites")
    assert "12,345,678" in table.text and "(incomplete)" in table.text
    right = browser.execute_script("return arguments[0].getBoundingClientRect().right", table)
    width = browser.execute_script("return document.documentElement.clientWidth")
    assert right <= width, f"the sites table is {right:.0f} px wide in a {width} px window"
    assert browser.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth")
