"""The first hour, as the README tells it: `make run` in the checkout starts the service on
the embedded default (no PostgreSQL, no Redis), loads the demo cohort in the background and
prints where to sign in with which key. An upload made while the demo loads does not wait
behind it; the printed key signs in to a demo patient's page in a browser that reaches no host
but this machine; stopping `serve` stops what it started. `make -n` shows that `make run`
installs the service without the test extras."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, Process, free_port, panel_vcf, service_env, wait_job

VENV = ROOT / ".venv"


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-C", str(ROOT), *args], text=True, capture_output=True, timeout=60, check=False
    )


def test_make_run_installs_the_service_without_the_test_extras() -> None:
    # -n: print the commands, run none; -B: as on a fresh clone, where nothing is installed
    run = _make("-n", "-B", "run", "VENV=/nonexistent/venv")
    assert run.returncode == 0, run.stderr
    assert "pip install --quiet -e .\n" in run.stdout and "[test]" not in run.stdout
    assert "ctdna serve --demo --host 127.0.0.1 --port 8000" in run.stdout
    test = _make("-n", "-B", "test", "VENV=/nonexistent/venv")
    assert "pip install --quiet -e '.[test]'" in test.stdout, test.stdout


@dataclass
class FirstRun:
    process: Process
    data: Path
    url: str  # the sign-in address `make run` printed
    key: str  # the key it printed

    @property
    def base(self) -> str:
        return self.url.removesuffix("/ui/patients")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstRun]:
    if Path(sys.prefix).resolve() != VENV.resolve():
        pytest.skip(f"`make run` uses {VENV}; these tests run in {sys.prefix}")
    if _make("-q", ".venv/.installed").returncode != 0:
        pytest.skip("the .venv of `make run` is not up to date with pyproject.toml: make install")
    tmp = tmp_path_factory.mktemp("first-run")
    data = tmp / "data"
    port = free_port()
    process = Process(
        ["make", "-C", str(ROOT), "run", f"PORT={port}"], service_env(data), tmp / "make-run.log"
    )
    try:
        deadline = time.monotonic() + 180
        while not (found := _sign_in_lines(process.output())):
            assert process.popen.poll() is None, process.output()
            assert time.monotonic() < deadline, f"no sign-in lines:\n{process.output()}"
            time.sleep(0.1)
        yield FirstRun(process, data, *found)
    finally:
        process.stop()


def _sign_in_lines(output: str) -> tuple[str, str] | None:
    url = re.search(r"open (http://127\.0\.0\.1:\d+/ui/patients)", output)
    key = re.search(r"^\s+(ctd_\S+)$", output, flags=re.M)
    return (url.group(1), key.group(1)) if url and key else None


def _demo_samples(client: httpx.Client) -> int:
    items = client.get("/v1/patients", params={"limit": 500}).json()["items"]
    return sum(p["sample_count"] for p in items if p["patient_id"] != "REAL-001")


def test_an_upload_does_not_wait_behind_the_demo(first_run: FirstRun, tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {first_run.key}"}
    with httpx.Client(base_url=first_run.base, headers=headers, timeout=60) as client:
        assert client.post("/v1/patients", json={"patient_id": "REAL-001"}).status_code == 201
        path = panel_vcf(tmp_path, "real")
        with path.open("rb") as fh:
            response = client.post(
                "/v1/samples",
                data={
                    "patient_id": "REAL-001",
                    "sample_id": "REAL-001-P1",
                    "collection_date": "2025-02-01",
                    "sample_type": "plasma",
                    "genome_build": "GRCh38",
                },
                files={"file": (path.name, fh)},
            )
        assert response.status_code == 202, response.text
        job = wait_job(client, response.json()["job_id"], timeout=60)
        assert job["status"] == "succeeded", job
        loaded_then = _demo_samples(client)
        deadline = time.monotonic() + 300
        while not (first_run.data / "demo-loaded").exists():
            assert time.monotonic() < deadline, first_run.process.output()[-3000:]
            time.sleep(0.2)
        loaded = _demo_samples(client)
    # the upload was done while the demo was still loading: it did not queue behind it
    assert 0 <= loaded_then < loaded, (loaded_then, loaded)
    # and the demo's samples never went to the worker: it received the one real upload
    received = re.findall(r"Task samples\.ingest\[[^\]]+\] received", first_run.process.output())
    assert len(received) == 1, received


def test_the_printed_key_signs_in_to_a_demo_patient(first_run: FirstRun) -> None:
    from tests.service.test_ui_browser import CHROMEDRIVER, CHROMIUM

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Debian's chromium and chromedriver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # GET / leads to the web view, which asks for the key
    root = httpx.get(f"{first_run.base}/", follow_redirects=True)
    assert root.status_code == 200 and "/ui/login" in str(root.url)
    # an API call without a key says how to get one
    refused = httpx.get(f"{first_run.base}/v1/patients")
    assert refused.status_code == 401 and "ctdna keys create" in refused.json()["detail"]

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.get(first_run.url)
        WebDriverWait(driver, 30).until(lambda d: "/ui/login" in d.current_url)
        driver.find_element(By.NAME, "api_key").send_keys(first_run.key)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(driver, 60).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#patients tbody tr[data-patient^='SIM-']")
        )
        link = driver.find_element(
            By.CSS_SELECTOR, "#patients tbody tr[data-patient^='SIM-'] td.pid a"
        )
        patient_id = link.text
        link.click()
        WebDriverWait(driver, 60).until(
            lambda d: d.execute_script(
                "const e = document.getElementById('timeline');"
                "return e && e.getAttribute('data-ready') === '1';"
            )
        )
        assert driver.find_element(By.TAG_NAME, "h1").text == f"Patient {patient_id}"
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(r => r.name)"
        )
        assert resources and all(r.startswith(first_run.base) for r in resources), resources
    finally:
        driver.quit()


def test_stopping_serve_stops_its_worker_and_demo_loader(first_run: FirstRun) -> None:
    """SIGTERM to `ctdna serve` alone (as a service manager sends it): nothing it started is
    left running."""
    make = first_run.process.popen.pid
    (serve,) = _children(make)
    started = _children(serve)
    assert started, "serve started no worker"
    os.kill(serve, signal.SIGTERM)
    first_run.process.popen.wait(timeout=60)  # make ends when serve has
    deadline = time.monotonic() + 60
    while alive := [pid for pid in started if _running(pid)]:
        assert time.monotonic() < deadline, f"still running after serve stopped: {alive}"
        time.sleep(0.2)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
