"""A real browser on the served app: ``face-pipeline serve`` (a real subprocess, uvicorn) on the sample library,
headless Chromium driven by selenium. The browser signs in with the token, names a cluster by typing and clicking,
then names a second cluster with the same name and answers the "already exists — add to them?" question, then
fixes a mistake on the person's page ("not this person") and answers the review queue with y / s / n; the name must show in the page, in the API and in
``face-pipeline persons`` (another real subprocess), and the API docs must render without the network.

Skips, saying why, when Chromium or its driver is not installed (``apt-get install chromium chromium-driver``;
``.ci/run`` installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CLI = Path(sys.executable).parent / "face-pipeline"
TOKEN = "browser-test-token-0001"
ADMIN = "browser-test-admin-0001"
NAME = "Browser Named"


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FACE_", "DAGSTER_")) and k not in ("DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY")}
    env.update(FACE_PIPELINE_HOME=str(home), FACE_WEB_TOKEN=TOKEN, FACE_WEB_ADMIN_TOKEN=ADMIN, ORT_DISABLE_TELEMETRY="1",
               DAGSTER_DISABLE_TELEMETRY="1", COLUMNS="200")
    return env


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


@pytest.fixture
def served(web_library, tmp_path):
    """``face-pipeline serve`` on a private copy of the library; its base URL."""
    from face_pipeline_tests.web.conftest import copy_home

    home = copy_home(web_library, tmp_path)
    port = _free_port()
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([str(CLI), "serve", "--port", str(port)], env=_env(home), cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                _get_json(base + "/api/v1/health")
                break
            except OSError:
                time.sleep(0.5)
        else:
            log.seek(0)
            pytest.fail(f"serve did not start: {log.read()[-3000:]}")
        yield base, home
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def browser():
    found = _chromium()
    if found is None:
        msg = "headless Chromium not available (apt-get install -y chromium chromium-driver) — browser test skipped"
        print(msg)
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=opts)
    except Exception as exc:  # e.g. a driver that does not match the browser's version
        msg = f"headless Chromium could not be started ({type(exc).__name__}: {str(exc).splitlines()[0]}) — browser test skipped"
        print(msg)
        pytest.skip(msg)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _queue_ids(driver) -> list[str]:
    """The review queue's suggestion ids, read in one script call.

    The queue re-renders after each answer; reading elements one WebDriver call at a time can hold an element the
    page just replaced (a stale reference), so the ids are read inside the page in one step.
    """
    return driver.execute_script(
        "return [...document.querySelectorAll('#review-queue .suggestion')]"
        ".map(c => c.getAttribute('data-suggestion-id'));")


def test_name_a_cluster_in_the_browser(served, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from selenium.common.exceptions import StaleElementReferenceException

    base, home = served
    # the page replaces elements as answers land; a poll that caught one mid-replacement simply polls again
    wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(base + "/")
    clusters = browser.find_elements(By.CSS_SELECTOR, ".cluster")
    assert len(clusters) >= 2, "the sample library shows unknown clusters"
    first, second = clusters[0].get_attribute("data-cluster-id"), clusters[1].get_attribute("data-cluster-id")
    strip = clusters[0].find_elements(By.CSS_SELECTOR, ".strip img.face")
    assert strip, "each cluster shows its faces"
    # thumbnails really load (naturalWidth > 0 once the JPEG decoded)
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", strip[0]))

    # sign in once: the token goes into an HttpOnly cookie page scripts cannot read
    browser.find_element(By.ID, "login-token").send_keys(TOKEN)
    browser.find_element(By.ID, "login-button").click()
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "meta[name=csrf-token]")))
    assert browser.find_element(By.CSS_SELECTOR, "meta[name=csrf-token]").get_attribute("content")
    assert browser.execute_script("return document.cookie") == "", "the token cookie is HttpOnly"

    card = browser.find_element(By.CSS_SELECTOR, f'.cluster[data-cluster-id="{first}"]')
    box = card.find_element(By.CSS_SELECTOR, ".name-input")
    box.send_keys(NAME)
    card.find_element(By.CSS_SELECTOR, ".name-button").click()
    wait.until(lambda d: NAME in [e.text for e in d.find_elements(By.CSS_SELECTOR, "#people .person .name")])

    persons = _get_json(base + "/api/v1/persons")["items"]
    named = [p for p in persons if p["name"] == NAME]
    assert len(named) == 1 and named[0]["faces"] >= 2
    first_faces = named[0]["faces"]

    # the same name on another cluster asks first; answering "yes" adds the faces to that person
    card = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, f'.cluster[data-cluster-id="{second}"]')))
    card.find_element(By.CSS_SELECTOR, ".name-input").send_keys(NAME)
    card.find_element(By.CSS_SELECTOR, ".name-button").click()
    alert = wait.until(EC.alert_is_present())
    assert "already exists" in alert.text
    alert.accept()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, f'.cluster[data-cluster-id="{second}"]'))
    persons = _get_json(base + "/api/v1/persons")["items"]
    assert [p["faces"] > first_faces for p in persons if p["name"] == NAME] == [True]

    events = _get_json(base + "/api/v1/events?limit=200")["items"]
    assert {e["actor"] for e in events} == {f"web:user:{__import__('hashlib').sha256(TOKEN.encode()).hexdigest()[:8]}"}

    out = subprocess.run([str(CLI), "persons"], env=_env(home), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert NAME in out.stdout

    # fix a mistake on the person's page: select one face, "Not <name>" — it leaves the person and stays rejected
    pid = next(p["person_id"] for p in persons if p["name"] == NAME)
    before = _get_json(f"{base}/api/v1/persons/{pid}?limit=1000")
    browser.get(f"{base}/person/{pid}")
    face = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#person img.selectable")))
    wrong = face.get_attribute("data-face-id")
    face.click()
    assert "selected" in face.get_attribute("class")
    browser.find_element(By.ID, "reject").click()
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, f'#person img[data-face-id="{wrong}"]'))
    after = _get_json(f"{base}/api/v1/persons/{pid}?limit=1000")
    assert after["faces"] == before["faces"] - 1 and wrong not in {f["face_id"] for f in after["items"]}
    assert _get_json(f"{base}/api/v1/events?limit=1")["items"][0]["action"] == "reject_face"

    # the review queue: three "is this NAME?" questions as organise stores them, answered with the keyboard
    from face_pipeline.core.db import session_scope
    from face_pipeline.core.suggestions import Suggestion, replace_pipeline_suggestions
    from face_pipeline.settings import Settings

    unknown = [c["face_ids"][0] for c in _get_json(base + "/api/v1/faces/clusters?min_size=1&limit=10")["items"]][:3]
    assert len(unknown) == 3
    with session_scope(Settings(home=home).sql_url) as s:
        replace_pipeline_suggestions(s, [Suggestion("face_is_person", (f,), person_id=pid, score=0.39 - i / 100, bar=0.40)
                                         for i, f in enumerate(unknown)])
    browser.get(base + "/")
    cards = browser.find_elements(By.CSS_SELECTOR, "#review-queue .suggestion")
    order = [c.get_attribute("data-suggestion-id") for c in cards]
    assert len(order) == 3 and "current" in cards[0].get_attribute("class")
    assert NAME in cards[0].text
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("y")  # yes to the first
    wait.until(lambda d: order[0] not in _queue_ids(d))
    body.send_keys("s")  # skip the second: the third becomes current
    wait.until(lambda d: d.execute_script(
        "const c = document.querySelector('#review-queue .suggestion.current');"
        " return c && c.getAttribute('data-suggestion-id');") == order[2])
    body.send_keys("n")  # no to the third
    wait.until(lambda d: order[2] not in _queue_ids(d))
    status = {str(x["id"]): x["status"] for x in _get_json(base + "/api/v1/suggestions?status=all")}
    assert [status[i] for i in order] == ["accepted", "open", "rejected"], status

    # the API docs render from local files (this browser has no network): Swagger UI lists the operations
    browser.get(base + "/docs")
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 20)
    assert "/api/v1/faces/clusters/{cluster_id}/label" in browser.page_source
