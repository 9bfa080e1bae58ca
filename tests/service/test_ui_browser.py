"""The oncologist's web view in a real browser: Debian's Chromium driven by Selenium against a
running `ctdna serve` with the demo cohort loaded by `ctdna demo` (embedded SQLite, real
ingest). What a clinician sees is checked against what the API says: the list's badges, the
plotted points (read back from the Plotly figure in the page), the clone plot, the tables
without JavaScript, the report PDF and the static PNGs, and another site's key sees nothing;
a patient with one draw, the numbers of negative draws, the print stylesheet, and the API
documentation. The browser resolves no host but 127.0.0.1: a page that needed the internet
would show it.

Screenshots go to $CTDNA_TEST_ARTIFACTS (default tests/artifacts/ui, git-ignored)."""

from __future__ import annotations

import base64
import io
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from services.reports.numbers import percent
from tests.conftest import (
    ROOT,
    Process,
    create_key,
    ctdna,
    service_env,
    start_api,
    upload_panel,
    wait_job,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(
        "Debian's chromium and chromedriver are not installed (/usr/bin/chromium, "
        "/usr/bin/chromedriver): apt-get install chromium chromium-driver",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.print_page_options import PrintOptions  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SITE = "site-ui"
ARTIFACTS = Path(os.environ.get("CTDNA_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts") / "ui"


@dataclass
class Demo:
    base: str
    key: str  # read, ingest, admin on SITE (printed by `ctdna demo`)
    other_key: str  # read on another site
    api: Process
    env: dict[str, str]
    tmp: Path

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base,
            headers={"Authorization": f"Bearer {key or self.key}"},
            timeout=60,
        )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    tmp = tmp_path_factory.mktemp("ui")
    env = service_env(tmp / "data")
    loaded = ctdna(env, "demo", "--site", SITE, "--patients", "8", "--draws", "5")
    key = loaded.stdout.strip().splitlines()[-1]
    other = create_key(env, "site-ui-other", "read")
    # with the worker `serve` starts beside it on the embedded default, for uploads of tests
    api, base = start_api(env, tmp)
    try:
        yield Demo(base=base, key=key, other_key=other, api=api, env=env, tmp=tmp)
    finally:
        api.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        # no network: every host but this machine fails to resolve
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: WebDriver, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    if full_page:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(int(height) + 40, 6000))
    try:
        assert driver.save_screenshot(str(path)), path
    finally:
        driver.set_window_size(1400, 1000)
    return path


def sign_in(driver: WebDriver, demo: Demo, key: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{demo.base}/ui/patients")
    # not signed in: the page sends the browser to the login form, which comes back here
    WebDriverWait(driver, 30).until(lambda d: "/ui/login" in d.current_url)
    driver.find_element(By.NAME, "api_key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, 30).until(
        lambda d: (
            d.current_url.rstrip("/").endswith("/ui/patients")
            and d.find_elements(By.ID, "patients")
        )
    )


def mrd_statuses(demo: Demo) -> dict[str, tuple[str, bool]]:
    """(MRD status, emerging resistance) per patient, as the API says."""
    with demo.client() as client:
        patients = client.get("/v1/patients", params={"limit": 100}).json()["items"]
        out = {}
        for p in patients:
            pid = p["patient_id"]
            mrd = client.get(f"/v1/patients/{quote(pid)}/mrd").json()
            resistance = client.get(f"/v1/patients/{quote(pid)}/resistance").json()
            out[pid] = (mrd["status"], bool(resistance["events"]))
    return out


def test_sign_in_and_the_list_shows_each_patients_badges(browser: WebDriver, demo: Demo) -> None:
    truth = mrd_statuses(demo)
    statuses = {status for status, _ in truth.values()}
    assert {"positive", "negative"} <= statuses, truth  # the demo has both
    assert any(resisting for _, resisting in truth.values()), truth

    sign_in(browser, demo, demo.key)
    rows = browser.find_elements(By.CSS_SELECTOR, "#patients tbody tr[data-patient]")
    shown = {
        row.get_attribute("data-patient"): (
            row.find_element(By.CSS_SELECTOR, "[data-status]").get_attribute("data-status"),
            bool(row.find_elements(By.CSS_SELECTOR, "[data-resistance=emerging]")),
        )
        for row in rows
    }
    assert shown == truth
    badge_text = {
        row.get_attribute("data-patient"): row.find_element(By.CSS_SELECTOR, ".badge").text
        for row in rows
    }
    positive = next(p for p, (s, _) in truth.items() if s == "positive")
    negative = next(p for p, (s, _) in truth.items() if s == "negative")
    assert badge_text[positive] == "ctDNA positive" and badge_text[negative] == "ctDNA negative"
    # patients needing attention (positive, or emerging resistance) come first
    order = [row.get_attribute("data-patient") for row in rows]
    urgent = [
        p for p in order if truth[p][0] in ("positive", "positive_unconfirmed") or truth[p][1]
    ]
    assert order[: len(urgent)] == urgent
    screenshot(browser, "patients")

    # filter and search are plain links and forms: the server answers them
    browser.get(f"{demo.base}/ui/patients?status=positive")
    filtered = browser.find_elements(By.CSS_SELECTOR, "#patients tbody tr[data-patient]")
    assert {r.get_attribute("data-patient") for r in filtered} == {
        p for p, (s, _) in truth.items() if s == "positive"
    }
    browser.get(f"{demo.base}/ui/patients?q=MET&sort=patient")
    found = [
        r.get_attribute("data-patient")
        for r in browser.find_elements(By.CSS_SELECTOR, "#patients tbody tr[data-patient]")
    ]
    assert found == sorted(p for p in truth if "MET" in p) and found


def _figure(driver: WebDriver, element_id: str) -> list[dict[str, Any]]:
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script(
            "const e = document.getElementById(arguments[0]);"
            "return e && e.getAttribute('data-ready') === '1';",
            element_id,
        )
    )
    return driver.execute_script(
        "return document.getElementById(arguments[0]).data.map(t => ({"
        " name: t.name, x: t.x, y: t.y, meta: t.meta || {}, stackgroup: t.stackgroup || null,"
        " yaxis: t.yaxis || 'y'}));",
        element_id,
    )


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 1e-12 + 1e-9 * abs(b)


def test_the_patient_page_plots_the_apis_numbers(browser: WebDriver, demo: Demo) -> None:
    truth = mrd_statuses(demo)
    positive = next(p for p, (s, _) in truth.items() if s == "positive")
    with demo.client() as client:
        trends = client.get(f"/v1/patients/{positive}/trends").json()
        mrd = client.get(f"/v1/patients/{positive}/mrd").json()
        clones = client.get(f"/v1/patients/{positive}/clones").json()
    sign_in(browser, demo, demo.key)
    browser.get(f"{demo.base}/ui/patients/{positive}")
    traces = _figure(browser, "timeline")

    variants = {t["meta"]["locus_key"]: t for t in traces if t["meta"].get("role") == "variant"}
    assert set(variants) == {v["locus_key"] for v in trends["variants"]}
    for variant in trends["variants"]:
        trace = variants[variant["locus_key"]]
        assert trace["x"] == [p["collection_date"] for p in variant["points"]]
        expected = [p["vaf"] if p["vaf"] > 0 else None for p in variant["points"]]
        assert all(_close(a, b) for a, b in zip(trace["y"], expected, strict=True)), (
            variant["locus_key"],
            trace["y"],
            expected,
        )
    (tf,) = [t for t in traces if t["meta"].get("role") == "tumour_fraction"]
    samples = [s for s in trends["samples"] if s["tumor_fraction"] is not None]
    assert tf["x"] == [s["collection_date"] for s in samples]
    assert all(
        _close(a, s["tumor_fraction"] if s["tumor_fraction"] > 0 else None)
        for a, s in zip(tf["y"], samples, strict=True)
    )
    assert [t for t in traces if t["meta"].get("role") == "band"]
    (calls,) = [t for t in traces if t["meta"].get("role") == "mrd_call"]
    assert calls["meta"]["calls"] == [c["call"] for c in mrd["calls"]]
    (lods,) = [t for t in traces if t["meta"].get("role") == "lod95"]
    negatives = [c for c in mrd["calls"] if c["call"] == "NEGATIVE"]
    assert negatives, mrd  # the positive demo patients were negative first
    for call in negatives:
        i = lods["x"].index(call["collection_date"])
        assert _close(lods["y"][i], call["lod95"])
    (events,) = [t for t in traces if t["meta"].get("role") == "event"]
    assert "surgery" in events["meta"]["kinds"]
    # drawn, not only described: Plotly rendered the points as SVG paths
    points = browser.execute_script(
        "return document.querySelectorAll('#timeline .scatterlayer .trace .points path').length"
    )
    assert points >= len(samples)

    clone_traces = _figure(browser, "clones")
    detected = [c for c in clones["clones"] if any(s["detected"] for s in c["ccf_series"])]
    assert detected, clones
    assert [t["meta"]["clone_id"] for t in clone_traces] == [c["clone_id"] for c in detected]
    assert all(t["stackgroup"] == "clones" for t in clone_traces)
    for trace, clone in zip(clone_traces, detected, strict=True):
        assert all(
            _close(a, s["vaf"]) for a, s in zip(trace["y"], clone["ccf_series"], strict=True)
        )

    # plotly.js came from the app itself, and nothing was fetched from another origin
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(r => r.name)"
    )
    assert any("/ui/static/plotly.min.js" in r for r in resources), resources
    assert all(r.startswith(demo.base) for r in resources), resources
    screenshot(browser, f"patient-{positive}")

    # a metastatic patient: the resistance events are starred at their VAF on the timeline
    resisting = next(p for p, (_, r) in truth.items() if r)
    with demo.client() as client:
        events = client.get(f"/v1/patients/{resisting}/resistance").json()["events"]
    browser.get(f"{demo.base}/ui/patients/{resisting}")
    (stars,) = [t for t in _figure(browser, "timeline") if t["meta"].get("role") == "resistance"]
    assert stars["x"] == [e["event_date"] for e in events]
    assert all(_close(a, e["vaf"]) for a, e in zip(stars["y"], events, strict=True))
    screenshot(browser, f"patient-{resisting}")


class _Tables(HTMLParser):
    """Rows of each table with an id, as text cells: what a browser without JavaScript shows."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and dict(attrs).get("id"):
            self._table = dict(attrs)["id"]
            self.tables[self._table] = []
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._table and self._in_body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_tables_need_no_javascript_and_show_reasons_and_citations(demo: Demo) -> None:
    truth = mrd_statuses(demo)
    positive = next(p for p, (s, _) in truth.items() if s == "positive")
    resisting = next(p for p, (_, r) in truth.items() if r)
    with demo.client() as client:
        page = client.get(f"/ui/patients/{positive}")
        assert page.status_code == 200
        mrd = client.get(f"/v1/patients/{positive}/mrd").json()
        tables = _Tables()
        tables.feed(page.text)
        rows = tables.tables["mrd-calls"]
        assert [r[0] for r in rows] == [c["sample_id"] for c in mrd["calls"]]
        assert [r[3] for r in rows] == [c["call"].lower() for c in mrd["calls"]]
        assert all(r[4] for r in rows)  # every call has its reason
        negative = next(c for c in mrd["calls"] if c["call"] == "NEGATIVE")
        row = next(r for r in rows if r[0] == negative["sample_id"])
        assert row[8] == percent(negative["lod95"])
        assert row[7] == "< LoD95"  # a negative draw's tumour fraction is never written "0"

        resistance = client.get(f"/v1/patients/{resisting}/resistance").json()
        tables = _Tables()
        tables.feed(client.get(f"/ui/patients/{resisting}").text)
        events = tables.tables["resistance-events"]
        assert len(events) == len(resistance["events"])
        for row, event in zip(events, resistance["events"], strict=True):
            assert row[0] == f"{event['gene']} {event['protein_change']}"
            assert " ".join(event["implication"].split()) in row[5]
            assert all(" ".join(c.split()) in row[5] for c in event["citations"])


def test_report_pdf_and_static_plots(browser: WebDriver, demo: Demo) -> None:
    from PIL import Image

    truth = mrd_statuses(demo)
    positive = next(p for p, (s, _) in truth.items() if s == "positive")
    resisting = next(p for p, (_, r) in truth.items() if r)
    with demo.client() as client:
        for pid in (positive, resisting):
            pdf = client.get(f"/v1/patients/{pid}/report.pdf")
            assert pdf.status_code == 200, pdf.text
            assert pdf.headers["content-type"] == "application/pdf"
            assert pdf.content.startswith(b"%PDF") and pdf.content.rstrip().endswith(b"%%EOF")
            assert len(re.findall(rb"/Type\s*/Page\b", pdf.content)) >= 2
            assert f"/Title (ctDNA monitoring report: patient {pid})".encode() in pdf.content
            assert f"/Subject (site {SITE})".encode() in pdf.content
            for plot in ("timeline", "clones"):
                png = client.get(f"/v1/patients/{pid}/plots/{plot}.png")
                assert png.status_code == 200 and png.headers["content-type"] == "image/png"
                image = Image.open(io.BytesIO(png.content)).convert("L")
                assert image.width > 400 and image.height > 200
                variance = float(np.asarray(image, dtype=float).var())
                assert variance > 100, (pid, plot, variance)  # not a blank canvas
                (ARTIFACTS / f"{plot}-{pid}.png").parent.mkdir(parents=True, exist_ok=True)
                (ARTIFACTS / f"{plot}-{pid}.png").write_bytes(png.content)
            svg = client.get(f"/v1/patients/{pid}/plots/timeline.svg")
            assert svg.status_code == 200 and b"<svg" in svg.content[:2000]
        # the report reads are audited like every other read of patient data
        rows = client.get(
            "/v1/audit",
            params={"patient_id": positive, "route": "/v1/patients/{patient_id}/report.pdf"},
        ).json()["items"]
        assert rows and all(r["patient_id"] == positive for r in rows)

    sign_in(browser, demo, demo.key)
    browser.get(f"{demo.base}/ui/patients/{resisting}/report")
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#resistance-events tbody tr.event")
    assert "Methods, versions and parameters" in browser.page_source
    screenshot(browser, f"report-{resisting}")
    # the print stylesheet gives a paper report (navigation hidden): Chromium prints it
    printed = base64.b64decode(browser.print_page(PrintOptions()))
    assert printed.startswith(b"%PDF")
    (ARTIFACTS / f"report-{resisting}.print.pdf").write_bytes(printed)
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        hidden = browser.execute_script(
            "return [...document.querySelectorAll('header.top, .no-print')]"
            ".map(e => getComputedStyle(e).display)"
        )
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    assert hidden and set(hidden) == {"none"}, hidden


def test_another_sites_key_sees_nothing(browser: WebDriver, demo: Demo) -> None:
    truth = mrd_statuses(demo)
    patient = next(iter(truth))
    with demo.client(demo.other_key) as other:
        for url in (
            f"/ui/patients/{patient}",
            f"/ui/patients/{patient}/report",
            f"/ui/patients/{patient}/report.pdf",
            f"/ui/patients/{patient}/timeline.png",
            f"/v1/patients/{patient}/report.pdf",
            f"/v1/patients/{patient}/plots/timeline.png",
            f"/v1/patients/{patient}/plots/clones.svg",
        ):
            assert other.get(url).status_code == 404, url
    sign_in(browser, demo, demo.other_key)
    assert not browser.find_elements(By.CSS_SELECTOR, "#patients tbody tr[data-patient]")
    browser.get(f"{demo.base}/ui/patients/{patient}")
    assert browser.find_elements(By.ID, "not-found")
    assert not browser.find_elements(By.ID, "timeline")
    assert not browser.find_elements(By.ID, "mrd-calls")
    # a wrong key is refused at the login form
    browser.delete_all_cookies()
    browser.get(f"{demo.base}/ui/login")
    browser.find_element(By.NAME, "api_key").send_keys("ctd_not_a_key")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".error"))
    assert "/ui/login" in browser.current_url


def test_the_list_pages_through_a_larger_site(browser: WebDriver, demo: Demo) -> None:
    key = create_key(demo.env, "site-ui-many", "ingest,read")
    ids = [f"PG-{i:03d}" for i in range(1, 58)]
    with demo.client(key) as client:
        for pid in ids:
            assert client.post("/v1/patients", json={"patient_id": pid}).status_code == 201
    sign_in(browser, demo, key)
    browser.get(f"{demo.base}/ui/patients?sort=patient")
    seen: list[str] = []
    while True:
        rows = browser.find_elements(By.CSS_SELECTOR, "#patients tbody tr[data-patient]")
        assert 0 < len(rows) <= 50
        seen += [r.get_attribute("data-patient") or "" for r in rows]
        following = browser.find_elements(By.CSS_SELECTOR, "a[rel=next]")
        if not following:
            break
        following[0].click()
        WebDriverWait(browser, 30).until(lambda d: "page=" in d.current_url)
    assert seen == ids  # every patient once, in order, over two pages
    assert "page=2" in browser.current_url
    # a search narrows the list; a search that is a LIKE wildcard matches nothing
    browser.get(f"{demo.base}/ui/patients?q=PG-05")
    rows = browser.find_elements(By.CSS_SELECTOR, "#patients tbody tr[data-patient]")
    assert [r.get_attribute("data-patient") for r in rows] == [f"PG-{i:03d}" for i in range(50, 58)]
    browser.get(f"{demo.base}/ui/patients?q=%25")
    assert not browser.find_elements(By.CSS_SELECTOR, "#patients tbody tr[data-patient]")


def _tick_texts(driver: WebDriver, element_id: str, axis: str) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#' + arguments[0] + ' .' + arguments[1] +"
        " 'tick text')].map(t => t.textContent)",
        element_id,
        axis,
    )


def test_a_patient_with_one_draw(browser: WebDriver, demo: Demo) -> None:
    """One plasma draw: dated ticks around it (not the milliseconds of one instant), its
    points and its clones drawn, on the page and in the static images."""
    from PIL import Image

    with demo.client() as client:
        response = upload_panel(client, demo.tmp, "ONE-DRAW", "ONE-DRAW-1")
        assert response.status_code == 202, response.text
        assert wait_job(client, response.json()["job_id"], timeout=90)["status"] == "succeeded"
        # the clone fit is a job of its own, after the ingest
        deadline = time.monotonic() + 90
        while not (clones := client.get("/v1/patients/ONE-DRAW/clones").json())["clones"]:
            assert time.monotonic() < deadline, "no clone fit within 90 s"
            time.sleep(0.2)
        images = {
            plot: client.get(f"/v1/patients/ONE-DRAW/plots/{plot}.png").content
            for plot in ("timeline", "clones")
        }
    sign_in(browser, demo, demo.key)
    browser.get(f"{demo.base}/ui/patients/ONE-DRAW")
    traces = _figure(browser, "timeline")
    (tf,) = [t for t in traces if t["meta"].get("role") == "tumour_fraction"]
    assert tf["x"] == ["2025-02-01"]
    ticks = _tick_texts(browser, "timeline", "x")
    assert ticks and all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", tick) for tick in ticks), ticks
    assert len(ticks) >= 3  # weeks either side of the draw, not one instant
    drawn = browser.execute_script(
        "return document.querySelectorAll('#timeline .scatterlayer .trace .points path').length"
    )
    assert drawn >= 2  # the tumour fraction and the detected variants

    detected = [c for c in clones["clones"] if any(s["detected"] for s in c["ccf_series"])]
    assert detected, clones
    clone_traces = _figure(browser, "clones")
    assert [t["meta"]["clone_id"] for t in clone_traces] == [c["clone_id"] for c in detected]
    points = browser.execute_script(
        "return document.querySelectorAll('#clones .scatterlayer .trace .points path').length"
    )
    assert points == len(detected)  # a point per clone: an area over one date would be empty
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", t) for t in _tick_texts(browser, "clones", "x"))
    screenshot(browser, "patient-one-draw")
    for plot, content in images.items():
        image = Image.open(io.BytesIO(content)).convert("L")
        assert float(np.asarray(image, dtype=float).var()) > 100, plot
        (ARTIFACTS / f"{plot}-one-draw.png").write_bytes(content)


def test_negative_draws_read_below_lod95_in_one_number_format(
    browser: WebDriver, demo: Demo
) -> None:
    """A negative draw's tumour fraction reads "< LoD95" (never 0), and every number on the
    page is a percentage with two significant figures: no scientific notation anywhere."""
    truth = mrd_statuses(demo)
    negative_patient = next(p for p, (s, _) in truth.items() if s == "negative")
    with demo.client() as client:
        mrd = client.get(f"/v1/patients/{negative_patient}/mrd").json()
    sign_in(browser, demo, demo.key)
    browser.get(f"{demo.base}/ui/patients/{negative_patient}")
    rows = browser.find_elements(By.CSS_SELECTOR, "#mrd-calls tbody tr[data-call]")
    by_sample = {r.find_element(By.CSS_SELECTOR, "td").text: r for r in rows}
    assert set(by_sample) == {c["sample_id"] for c in mrd["calls"]}
    for call in mrd["calls"]:
        cells = [c.text for c in by_sample[call["sample_id"]].find_elements(By.TAG_NAME, "td")]
        if call["call"] == "NEGATIVE":
            assert cells[7] == "< LoD95", cells
        elif call["call"] == "POSITIVE":
            assert cells[7].startswith(percent(call["tumor_fraction"])), cells
        assert cells[8] == percent(call["lod95"]), cells
    summary = browser.find_element(By.ID, "latest-tf").text
    assert mrd["status"] == "negative" and "tumour fraction < LoD95" in summary, summary
    text = browser.find_element(By.TAG_NAME, "main").text
    assert not re.search(r"\d\.?\d*e[-+]\d", text), re.findall(r"\S*\d\.?\d*e[-+]\d\S*", text)
    # the technical term behind a plain heading is one hover away, and in the Terms list
    lod = browser.find_element(By.CSS_SELECTOR, "#mrd-calls th abbr[title^='LoD95:']")
    assert lod.get_attribute("textContent") == "LoD95"
    terms = browser.find_element(By.ID, "terms").text
    assert "INVAR" in terms and "MATH score" in terms
    # drug classes and event types in words, never their codes
    page = browser.page_source
    assert "aromatase_inhibitor" not in page and "clinical_relapse" not in page
    screenshot(browser, f"patient-{negative_patient}-negative")


def test_print_keeps_colour_and_whole_tables(browser: WebDriver, demo: Demo) -> None:
    """The printable report, on screen and in print: every table as wide as the page at most
    (nothing scrolled away), status badges in their colours (print-color-adjust: exact), the
    navigation hidden. Chromium's own print of it is kept beside the screenshots."""
    truth = mrd_statuses(demo)
    positive = next(p for p, (s, _) in truth.items() if s == "positive")
    sign_in(browser, demo, demo.key)
    browser.get(f"{demo.base}/ui/patients/{positive}/report")
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        )
    )
    measure = (
        "return [...document.querySelectorAll('table')].map(t => ({id: t.id,"
        " table: t.scrollWidth, box: t.parentElement.clientWidth}))"
    )
    for media in ("", "print"):
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": media})
        try:
            widths = browser.execute_script(measure)
            badge = browser.execute_script(
                "const b = document.querySelector('#mrd-calls .badge.POSITIVE');"
                "const s = getComputedStyle(b);"
                "return [s.backgroundColor, s.printColorAdjust || s.webkitPrintColorAdjust];"
            )
            hidden = browser.execute_script(
                "return [...document.querySelectorAll('header.top, .no-print')]"
                ".map(e => getComputedStyle(e).display)"
            )
        finally:
            browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
        assert widths and all(w["table"] <= w["box"] + 1 for w in widths), (media, widths)
        assert badge[0] == "rgb(192, 57, 43)", (media, badge)  # --pos
        if media == "print":
            assert badge[1] == "exact", badge
            assert hidden and set(hidden) == {"none"}, hidden
    printed = base64.b64decode(browser.print_page(PrintOptions()))
    (ARTIFACTS / f"report-{positive}.print.pdf").write_bytes(printed)
    assert printed.startswith(b"%PDF")


def test_the_api_documentation_works_offline(browser: WebDriver, demo: Demo) -> None:
    """/docs and /redoc draw the API from the package's own Swagger UI and ReDoc, with no
    other host reachable; GET / leads to the web view."""
    for path, ready in (("/docs", ".swagger-ui .info .title"), ("/redoc", ".api-content h1")):
        browser.get(f"{demo.base}{path}")
        WebDriverWait(browser, 60).until(lambda d, r=ready: d.find_elements(By.CSS_SELECTOR, r))
        title = browser.find_element(By.CSS_SELECTOR, ready).text
        assert "ctDNA monitoring service" in title, (path, title)
        resources = browser.execute_script(
            "return performance.getEntriesByType('resource').map(r => r.name)"
        )
        assert resources and all(r.startswith(demo.base) for r in resources), resources
        screenshot(browser, f"docs{path.replace('/', '-')}", full_page=False)
    root = httpx.get(f"{demo.base}/", follow_redirects=False)
    assert root.status_code == 303 and root.headers["location"] == "/ui/patients"


def test_without_javascript_the_static_images_stand_in_for_the_figures(
    browser: WebDriver, demo: Demo
) -> None:
    """No script: the figures' places take no room (no blank band above the images) and the
    static timeline and clone images are shown in them."""
    truth = mrd_statuses(demo)
    patient = next(p for p, (s, _) in truth.items() if s == "positive")
    sign_in(browser, demo, demo.key)
    browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        browser.get(f"{demo.base}/ui/patients/{patient}")
        WebDriverWait(browser, 30).until(
            lambda d: d.execute_script(
                "return [...document.images].length >= 2 &&"
                " [...document.images].every(i => i.complete && i.naturalWidth > 0)"
            )
        )
        heights = [
            browser.find_element(By.ID, name).size["height"] for name in ("timeline", "clones")
        ]
        images = browser.find_elements(By.CSS_SELECTOR, "img.static-plot")
        shown = [i.get_attribute("src") for i in images if i.size["height"] > 100]
        screenshot(browser, f"patient-{patient}-no-js")
    finally:
        browser.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
    assert heights == [0, 0], heights
    assert any(s.endswith("/timeline.png") for s in shown) and any(
        s.endswith("/clones.png") for s in shown
    ), shown
