"""`replaystore ui`: started as users start it, over a store filled with real data, driven by a real
headless Chromium (Debian's `chromium` and `chromium-driver`, through Selenium, offline).

Each page is checked on what the browser rendered (table rows, SVG marks, decoded thumbnails), and
one full-page screenshot per page is saved under $REPLAYSTORE_ARTIFACTS/ui (default
tests/artifacts/ui). No method on any route changes a version or a tag; the server without
`--host` answers on the loopback address only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from s3_server import S3Server, s3_server  # noqa: F401 - fixture

import replaystore
from tests.conftest import ROOT
from tests.ui_data import BUFFER, fill

ARTIFACTS = Path(os.environ.get("REPLAYSTORE_ARTIFACTS") or ROOT / "tests" / "artifacts") / "ui"
CHROME_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,1000",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_ui(uri: str, *args: str) -> tuple[subprocess.Popen[str], str]:
    """`replaystore --uri URI ui --port P …` in a subprocess; returns it once it answers, and its base URL."""
    port = free_port()
    env = {**os.environ, "LANCE_LOG": "error"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "replaystore.cli", "--uri", uri, "ui", "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise AssertionError(f"replaystore ui exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, base
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("replaystore ui did not start listening")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def snapshot(store: replaystore.Store) -> dict[str, Any]:
    """Every table's versions (number, rows) and tags: what a write would change."""
    return {name: ([(v.version, v.rows) for v in store.versions(name)], store.tags(name)) for name in store.table_names()}


def fetch(method: str, url: str) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, data=b"q=DELETE+FROM+priorities" if method != "GET" else None)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def filled() -> Iterator[replaystore.Store]:
    with tempfile.TemporaryDirectory() as folder:
        yield fill(str(Path(folder) / "store"))


@pytest.fixture(scope="module")
def served(filled: replaystore.Store) -> Iterator[str]:
    proc, base = start_ui(filled.uri)
    yield base
    stop(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    with tempfile.TemporaryDirectory() as profile:
        for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
        chrome.set_page_load_timeout(120)
        yield chrome
        chrome.quit()


def visit(browser: Any, url: str, shot: str) -> Any:
    """Load `url`, save a full-page screenshot as `shot`.png, and return the driver for assertions."""
    from selenium.webdriver.common.by import By

    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.get(url)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1400, "height": min(max(height, 600), 8000), "deviceScaleFactor": 1, "mobile": False}
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{shot}.png"))
    assert browser.find_elements(By.CSS_SELECTOR, "header nav a"), "the page did not render its navigation"
    return browser


def count(browser: Any, css: str) -> int:
    from selenium.webdriver.common.by import By

    return len(browser.find_elements(By.CSS_SELECTOR, css))


def loaded_images(browser: Any) -> int:
    """Thumbnails the browser decoded (an image that failed to decode has naturalWidth 0)."""
    return int(browser.execute_script("return [...document.querySelectorAll('img.thumb')].filter(i => i.complete && i.naturalWidth > 0).length"))


@pytest.mark.slow
def test_every_page_renders_its_tables_and_charts_in_a_real_browser(filled: replaystore.Store, served: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    names = filled.table_names()
    visit(browser, f"{served}/", "store")
    assert count(browser, "#tables tbody tr") == len(names)
    assert [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#tables tbody td:first-child a")] == names
    tags_shown = browser.find_element(By.XPATH, f"//table[@id='tables']//tr[td/a[text()='{BUFFER}']]").text
    assert all(tag in tags_shown for tag in filled.tags(BUFFER))

    visit(browser, f"{served}/table/{BUFFER}", "table")
    rows = filled.count(BUFFER)
    assert count(browser, "#rows tbody tr") == min(rows, 50)
    assert loaded_images(browser) == min(rows, 50), "every exemplar row shows its image"
    assert count(browser, "#history tbody tr") == len(filled.versions(BUFFER))
    assert count(browser, "#contract tbody tr") == len(filled.schema(BUFFER))
    assert "Class label of the sample." in browser.find_element(By.ID, "contract").text

    visit(browser, f"{served}/table/experiences", "table-experiences")
    assert count(browser, "#rows tbody tr") == filled.count("experiences")
    assert "384-d" in browser.find_element(By.ID, "rows").text, "embeddings are summarised, not printed"

    visit(browser, f"{served}/exemplars/{BUFFER}", "exemplars")
    classes = filled.sql(f'SELECT class_id, COUNT(*) AS n FROM "{BUFFER}" GROUP BY class_id ORDER BY class_id').rows()
    assert count(browser, "#exemplar-grid tbody tr") == len(classes)
    assert loaded_images(browser) == sum(min(n, 24) for _, n in classes)
    assert count(browser, "svg.chart") == 2 and count(browser, "svg.chart rect.mark") > 0

    visit(browser, f"{served}/experiences?freq=2&utility=0.5", "experiences")
    workspaces = filled.sql("SELECT DISTINCT workspace FROM experiences").height
    assert count(browser, "section.workspace") == workspaces
    assert count(browser, "section.workspace svg.chart") == 2 * workspaces
    assert count(browser, "table[id^='most-'] tbody tr") > 0
    archivable = filled.count("experiences", filter="status = 'active' AND freq >= 2 AND CAST(utility AS DOUBLE) / CAST(freq AS DOUBLE) < 0.5")
    shown = [int(e.text.split()[0]) for e in browser.find_elements(By.CSS_SELECTOR, "h3 .refine-count")]
    assert sum(shown) == archivable > 0, "the refine preview counts what refine(2, 0.5) would archive"

    visit(browser, f"{served}/curriculum?ordering=digits-task0-ink", "curriculum")
    assert count(browser, "#orderings tbody tr") == 4
    assert count(browser, "svg.chart polyline") == 3, "c(t), and the admitted count beside c(t)·n"
    assert count(browser, "svg.chart") == 4, "pacing, admitted count, and the loss and ink histograms of the source"
    groups = filled.sql("SELECT COUNT(DISTINCT value) AS n FROM curriculum_scores WHERE source = 'digits-task0' AND metric = 'ink'").item()
    assert f"fall into {groups} difficulty groups" in browser.find_element(By.ID, "ties").text

    visit(browser, f"{served}/gere", "gere")
    fingerprint = filled.read("activation_states", columns=["model_fingerprint"])["model_fingerprint"][0].as_py()
    assert fingerprint in browser.find_element(By.CSS_SELECTOR, "section.model h2").text
    assert count(browser, "section.model svg.chart") == 2
    assert "between:" in browser.find_element(By.CSS_SELECTOR, "section.model").text

    visit(browser, f"{served}/priorities", "priorities")
    assert count(browser, "section.source") == 3
    assert count(browser, "section.source svg.chart rect.mark") > 0
    top = filled.sql("SELECT sample_id FROM priorities WHERE source = 'digits-task0' ORDER BY priority DESC LIMIT 1").item()
    assert browser.find_element(By.CSS_SELECTOR, "#most-1 tbody tr td").text == top

    visit(browser, f"{served}/sql", "sql-empty")
    query = f'SELECT class_id, COUNT(*) AS n FROM "{BUFFER}" GROUP BY class_id ORDER BY class_id'
    browser.find_element(By.ID, "query").send_keys(query)
    browser.find_element(By.ID, "versions").send_keys(f"{BUFFER}=after-task-0")
    browser.find_element(By.ID, "run").click()
    WebDriverWait(browser, 300).until(lambda driver: "q=" in driver.current_url)  # the submitted form's page, not the empty one
    visit(browser, browser.current_url, "sql")
    expected = filled.sql(query, versions={BUFFER: "after-task-0"}).rows()
    shown = [tuple(int(td.text) for td in tr.find_elements(By.TAG_NAME, "td")) for tr in browser.find_elements(By.CSS_SELECTOR, "#result tbody tr")]
    assert shown == expected and len(expected) == 2, "time travel to the first task's tag shows its two classes"


@pytest.mark.slow
def test_no_method_on_any_route_changes_the_store_and_sql_stays_confined(filled: replaystore.Store, served: str) -> None:
    before = snapshot(filled)
    routes = [
        "/", f"/table/{BUFFER}", f"/table/{BUFFER}?version=after-task-0&page=1", "/exemplars", f"/exemplars/{BUFFER}", "/experiences?freq=1&utility=0.9",
        "/curriculum", "/curriculum?ordering=digits-task1-easy-first", "/gere", "/priorities", "/sql", "/sql?q=SELECT+1", "/no-such-page",
    ]  # fmt: skip
    for route in routes:
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
            status, _ = fetch(method, served + route)
            if method in ("GET", "HEAD"):
                assert status == (404 if route == "/no-such-page" else 200), (method, route, status)
            else:
                assert status == 405, (method, route, status)
    writes = [
        "DELETE FROM priorities", "DROP TABLE priorities", "CREATE TABLE t AS SELECT 1", "UPDATE experiences SET freq = 0",
        "SELECT * FROM read_csv('/etc/passwd')", "SELECT 1; DROP TABLE priorities", "INSERT INTO priorities VALUES (1)",
    ]  # fmt: skip
    for statement in writes:
        status, body = fetch("GET", f"{served}/sql?q={urllib.request.quote(statement)}")
        assert status == 400 and 'id="error"' in body and ("refused" in body or "not a query" in body), statement
    assert snapshot(filled) == before


@pytest.mark.slow
def test_without_host_the_ui_answers_on_loopback_only(filled: replaystore.Store, served: str) -> None:
    port = int(served.rsplit(":", 1)[1])
    outward = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # the address of the default route, no packet sent
        try:
            probe.connect(("10.255.255.255", 1))
            outward.add(probe.getsockname()[0])
        except OSError:
            pass
    outward = {a for a in outward if not a.startswith("127.")}
    assert outward, "this machine has no non-loopback IPv4 address to try"
    assert fetch("GET", served + "/")[0] == 200
    for address in outward:
        with pytest.raises(OSError), socket.create_connection((address, port), timeout=5):
            pass


@pytest.mark.slow
def test_a_token_is_required_once_then_kept_in_a_cookie(filled: replaystore.Store) -> None:
    proc, base = start_ui(filled.uri, "--token", "s3cret-token")
    try:
        assert fetch("GET", base + "/")[0] == 401
        assert fetch("GET", base + "/?token=wrong")[0] == 401
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(base + "/?token=s3cret-token", timeout=60) as response:
            assert response.status == 200
        with opener.open(base + "/gere", timeout=60) as response:
            assert response.status == 200 and "GeRe" in response.read().decode()
    finally:
        stop(proc)


def test_pages_over_an_object_store_read_and_write_no_object(s3_server: S3Server) -> None:  # noqa: F811 - fixture
    """The same app over s3:// (moto on 127.0.0.1): every page answers and the bucket's objects are the same after."""
    from starlette.testclient import TestClient

    from replaystore.ui import create_app

    bucket = s3_server.new_bucket()
    store = replaystore.open(f"s3://{bucket}/store", s3_server.storage_options)
    buffer = store.exemplars("digits", budget=8 * 64, selector="random")
    buffer.add(1, np.arange(6 * 64, dtype=np.uint8).reshape(6, 8, 8), sample_ids=np.arange(6))
    store.append("priorities", {"source": ["digits"] * 3, "sample_id": ["0", "1", "2"], "priority": [0.5, 2.0, 1.0]}, kind="priorities")
    objects = sorted(s3_server.objects(bucket))
    client = TestClient(create_app(store))
    for path in ["/", "/table/digits", "/exemplars/digits", "/priorities", "/experiences", "/curriculum", "/gere", '/sql?q=SELECT+COUNT(*)+FROM+"digits"']:
        assert client.get(path).status_code == 200, path
    assert client.get("/table/digits").text.count('class="thumb"') == 6
    assert sorted(s3_server.objects(bucket)) == objects
