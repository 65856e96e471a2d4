"""The MLflow UI over a small real study, driven in Debian's Chromium with Selenium.

Skipped, with the reason shown, where /usr/bin/chromium or /usr/bin/chromedriver is missing
(`.ci/run` installs both). Screenshots go to test-output/screenshots/ for a person to look at.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, project_env
from mlflow.tracking import MlflowClient

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
SCREENSHOTS = REPO / "test-output" / "screenshots"

pytestmark = [pytest.mark.skipif(
    not (CHROMIUM.exists() and DRIVER.exists()),
    reason="no Debian chromium + chromium-driver here (apt-get install chromium "
           "chromium-driver; .ci/run does)"),
    pytest.mark.xdist_group("small_study")]  # the worker that built it for test_pipeline


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def study_store(small_study) -> str:
    """The store of the small study that `dvc repro` made (tests/conftest.py)."""
    return f"sqlite:///{small_study[0] / 'mlflow.db'}"


@pytest.fixture(scope="module")
def ui(small_study):
    """`python -m initlab.ui` (what `make ui` runs) in the study's project: its own store."""
    root, _ = small_study
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "initlab.ui", "--port", str(port)],
                              cwd=root, env=project_env(root), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    banner = server.stdout.readline() + server.stdout.readline()
    deadline = time.monotonic() + 90
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "UI did not start"
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}", banner
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--window-size=1800,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait_for_text(driver, text: str, timeout: float = 60) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: text in d.find_element(By.TAG_NAME, "body").text)
    return driver.find_element(By.TAG_NAME, "body").text


def test_make_ui_binds_loopback_and_prints_the_url(ui):
    url, banner = ui
    assert url.startswith("http://127.0.0.1:") and f"Open {url}/#/experiments/" in banner


def test_runs_page_lists_the_runs_with_their_test_accuracy(ui, study_store, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, _ = ui
    client = MlflowClient(study_store)
    experiment = client.get_experiment_by_name("initlab-small")
    runs = client.search_runs([experiment.experiment_id], "tags.cell != ''")
    browser.get(f"{url}/#/experiments/{experiment.experiment_id}/runs"
                "?workflowType=machine_learning")
    wait_for_text(browser, "study-small")
    browser.find_element(By.CSS_SELECTOR,
                         "button[data-component-id*='runnamecellrenderer']").click()
    # Show the test accuracy column, as a person does: Columns, search, tick.
    browser.find_element(By.XPATH, "//button[contains(., 'Columns')]").click()
    browser.switch_to.active_element.send_keys("test_accuracy")
    time.sleep(1)
    browser.find_elements(By.XPATH, "//*[text()='test_accuracy']")[-1].click()
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    browser.execute_script("document.querySelectorAll('.ag-body-horizontal-scroll-viewport,"
                           " .ag-center-cols-viewport').forEach(e => e.scrollLeft = 1e5)")
    shown = wait_for_text(browser, runs[0].info.run_name)
    browser.save_screenshot(str(SCREENSHOTS / "runs_table.png"))
    headers = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "[role=columnheader]")]
    assert "test_accuracy" in headers
    for run in runs:
        assert run.info.run_name in shown
    values = {f"{r.data.metrics['test_accuracy']:.4g}"[:5] for r in runs}
    assert any(value in shown for value in values), values


def test_run_page_shows_its_learning_curve(ui, study_store, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = ui
    client = MlflowClient(study_store)
    experiment = client.get_experiment_by_name("initlab-small")
    run = client.search_runs([experiment.experiment_id], "tags.cell = 'relu-he'")[0]
    browser.get(f"{url}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
                "/artifacts?workflowType=machine_learning")
    wait_for_text(browser, "learning_curve.png")
    browser.find_element(By.XPATH, "//*[text()='learning_curve.png']").click()
    # The UI fetches the artifact and shows it as a blob: image once it has loaded.
    WebDriverWait(browser, 60).until(lambda d: any(
        (img.get_attribute("src") or "").startswith("blob:")
        and int(img.get_attribute("naturalWidth") or 0) > 100
        for img in d.find_elements(By.TAG_NAME, "img")))
    browser.save_screenshot(str(SCREENSHOTS / "run_learning_curve.png"))
