"""The HTTP client commands (`ctdna patients`, `patient`, `submit`, `event`, `export`) run as
subprocesses against a running API on the embedded default (SQLite, filesystem broker, the
worker `ctdna serve` starts beside it), with a cohort loaded by `ctdna demo`. Their output is
read as a person reads it (the table, at 200 and at 80 columns) and as a pipeline does (TSV
by default when piped, JSON)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

from schemas.analyses import MRD_PATIENT_STATUSES
from services.cli_output import BADGES
from tests.conftest import ROOT, Running, ctdna, free_port, panel_vcf, service_env

CLI = ROOT / ".venv" / "bin" / "ctdna"
SITE = "site-cli"


@dataclass
class Api:
    base: str
    key: str
    tmp: Path


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("client-cli")
    # a small upload budget: a folder of more files than the burst meets 429s, which `submit`
    # waits out
    env = service_env(
        tmp / "data",
        CTDNA_RATE_LIMIT_UPLOADS_BURST="4",
        CTDNA_RATE_LIMIT_UPLOADS_PER_SECOND="4",
    )
    ctdna(env, "migrate")
    with Running() as running, ThreadPoolExecutor(max_workers=1) as pool:
        # The demo loads in its own process while the API starts; the worker starts after
        # it, so that it cannot take the demo's jobs half-way through its load.
        demo = pool.submit(ctdna, env, "demo", "--site", SITE, "--patients", "2", "--draws", "3")
        (base,) = running.apis(tmp, env)
        key = demo.result().stdout.strip().splitlines()[-1]
        running.worker(env, tmp, "--no-beat")
        yield Api(base, key, tmp)


def run(
    api: Api, *args: str, key: str | None = None, url: str | None = None, columns: int = 200
) -> subprocess.CompletedProcess[str]:
    """`ctdna ARGS` with the URL and key from the environment, as a user would set them; its
    output piped (not a terminal), `columns` wide."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTDNA_")}
    env.update(CTDNA_URL=url or api.base, CTDNA_API_KEY=key or api.key, COLUMNS=str(columns))
    return subprocess.run(
        [str(CLI), *args], env=env, text=True, capture_output=True, timeout=120, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_patients_lists_the_site_with_status_badges(api: Api) -> None:
    result = run(api, "patients", "--format", "table")
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0]:
            rows[cells[0]] = line
    mrd = next(p for p in rows if p.startswith("SIM-"))
    metastatic = next(p for p in rows if p.startswith("MET-"))
    status = _status(api, mrd)
    assert BADGES[status][0] in rows[mrd]  # the status badge, e.g. NEGATIVE
    assert status in MRD_PATIENT_STATUSES
    assert "letrozole, palbociclib" in rows[metastatic]
    assert "ESR1 p.D538G" in rows[metastatic]  # the emerging clone of the demo
    assert "3 patients" in result.stdout  # and the panel of normals, filed as a patient

    found = run(api, "patients", "--search", "met-", "--format", "table")
    assert found.returncode == 0, found.stderr
    assert "1 patient\n" in found.stdout or "1 patient " in found.stdout
    assert metastatic in found.stdout and mrd not in found.stdout


def _status(api: Api, patient_id: str) -> str:
    import httpx

    response = httpx.get(
        f"{api.base}/v1/patients/{patient_id}/mrd", headers={"Authorization": f"Bearer {api.key}"}
    )
    return str(response.json()["status"])


def test_patient_shows_samples_calls_and_a_sparkline(api: Api) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {api.key}"}
    patients = httpx.get(f"{api.base}/v1/patients", headers=headers).json()["items"]
    metastatic = next(p["patient_id"] for p in patients if p["patient_id"].startswith("MET-"))
    trends = httpx.get(f"{api.base}/v1/patients/{metastatic}/trends", headers=headers).json()

    result = run(api, "patient", metastatic, "--format", "table")
    assert result.returncode == 0, result.stderr
    for sample in trends["samples"]:
        assert sample["sample_id"] in result.stdout
    spark = next(line for line in result.stdout.splitlines() if line.startswith("tumour fraction "))
    bars = spark.split()[2]
    assert len(bars) == len(trends["samples"]) and set(bars) <= set("▁▂▃▄▅▆▇█·")
    # the draw with the highest tumour fraction has the highest bar
    fractions = [s["tumor_fraction"] for s in trends["samples"]]
    assert bars[fractions.index(max(fractions))] == "█"
    assert "emerging resistance" in result.stdout and "p.D538G" in result.stdout

    mrd_patient = next(p["patient_id"] for p in patients if p["patient_id"].startswith("SIM-"))
    mrd = httpx.get(f"{api.base}/v1/patients/{mrd_patient}/mrd", headers=headers).json()
    result = run(api, "patient", mrd_patient, "--format", "table")
    assert result.returncode == 0, result.stderr
    for call in mrd["calls"]:
        line = next(line for line in result.stdout.splitlines() if call["sample_id"] in line)
        assert call["call"] in line
        assert f"{call['loci_detected']}/{call['loci_tracked']}" in line


def test_errors_are_one_readable_line(api: Api) -> None:
    assert_one_line_error(run(api, "patient", "NO-SUCH"), "404", "NO-SUCH", "not found")
    assert_one_line_error(run(api, "patients", key="ctd_not_a_key"), "401")
    closed = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(run(api, "patients", url=closed), "cannot connect", "refused")


def test_submit_a_folder_with_a_manifest(api: Api) -> None:
    folder = api.tmp / "run-1"
    folder.mkdir()
    for tag in ("F1", "F2"):
        panel_vcf(folder, tag)
    (folder / "manifest.tsv").write_text(
        "file\tpatient_id\tsample_id\tsample_type\tcollected_at\n"
        "panel-F2.vcf\tP-folder\tS-F2\tplasma\t2025-03-01\n"
        "panel-F1.vcf\tP-folder\tS-F1\tplasma\t2025-02-01\n"
    )
    result = run(api, "submit", str(folder), "--create-patient")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _summary(result.stdout)
    assert rows == {
        "S-F1": ("accepted", "succeeded"),
        "S-F2": ("accepted", "succeeded"),
    }
    # in date order, whatever the manifest's order
    assert result.stdout.index("S-F1") < result.stdout.index("S-F2")
    # piped, stdout is the TSV alone; the counts go to stderr
    assert "accepted 2, duplicate 0, failed 0" in result.stderr

    again = run(api, "submit", str(folder))
    assert again.returncode == 0, again.stdout + again.stderr
    assert {s: o for s, (o, _) in _summary(again.stdout).items()} == {
        "S-F1": "duplicate",
        "S-F2": "duplicate",
    }

    # a file the API refuses is one failed row with its reason; the others go through
    (folder / "broken.vcf").write_text("this is not a VCF\n")
    (folder / "more.csv").write_text(
        "file,patient_id,sample_id,collection_date\n"
        "broken.vcf,P-folder,S-broken,2025-04-01\n"
        "panel-F1.vcf,P-folder,S-F1,2025-02-01\n"
    )
    mixed = run(api, "submit", str(folder), "--manifest", str(folder / "more.csv"))
    assert mixed.returncode == 1
    summary = _summary(mixed.stdout)
    assert summary["S-F1"][0] == "duplicate"
    assert summary["S-broken"][0] in ("failed", "accepted")
    if summary["S-broken"][0] == "accepted":  # refused by the ingest job rather than at upload
        assert summary["S-broken"][1] == "failed"
    assert "broken.vcf" in mixed.stdout


def _summary(stdout: str) -> dict[str, tuple[str, str]]:
    """sample -> (outcome, job status) from the summary (TSV when piped)."""
    rows = csv.DictReader(io.StringIO(stdout), delimiter="\t")
    return {r["sample_id"]: (r["outcome"], r["job_status"]) for r in rows}


def test_a_bad_manifest_row_is_named_and_nothing_is_sent(api: Api) -> None:
    folder = api.tmp / "run-bad"
    folder.mkdir()
    panel_vcf(folder, "B1")
    (folder / "manifest.csv").write_text(
        "file,patient_id,sample_id,sample_type,collection_date\n"
        "panel-B1.vcf,P-bad,S-B1,plasma,2025-02-01\n"
        "missing.vcf,P-bad,S-B2,blood,01/02/2025\n"
    )
    result = run(api, "submit", str(folder))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "manifest.csv line 3 (sample S-B2)" in result.stderr
    for reason in ("'missing.vcf' not found", "'01/02/2025' is not YYYY-MM-DD", "'blood'"):
        assert reason in result.stderr
    assert "line 2" not in result.stderr
    # nothing was uploaded, not even the good row
    assert_one_line_error(run(api, "patient", "P-bad"), "404")


def test_single_file_submit_still_works(api: Api) -> None:
    path = panel_vcf(api.tmp, "single")
    # a patient the site does not have is not created by accident
    refused = run(
        api, "submit", str(path), "--patient", "P-single", "--sample-id", "S-single",
        "--collection-date", "2025-05-01", "--genome-build", "GRCh38",
    )  # fmt: skip
    assert_one_line_error(refused, "404", "'P-single'", "--create-patient")
    assert_one_line_error(run(api, "patient", "P-single"), "404")
    result = run(
        api, "submit", str(path), "--patient", "P-single", "--sample-id", "S-single",
        "--collection-date", "2025-05-01", "--genome-build", "GRCh38", "--create-patient",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("sample_id=S-single job_id=")
    assert lines[-1] == "status=succeeded"
    # the old option names keep working
    legacy = run(
        api, "submit", str(path), "--patient", "P-single", "--sample-id", "S-single",
        "--collection-date", "2025-05-01", "--key", api.key, "--no-wait",
    )  # fmt: skip
    assert legacy.returncode == 0, legacy.stderr


def test_single_file_submit_needs_the_collection_date(api: Api) -> None:
    """A draw without its date would be filed under today's: refused before anything is sent."""
    path = panel_vcf(api.tmp, "undated")
    result = run(api, "submit", str(path), "--patient", "P-undated", "--sample-id", "S-undated")
    assert result.returncode == 2
    assert "--collection-date YYYY-MM-DD" in result.stderr and "required" in result.stderr
    bad = run(api, "submit", str(path), "--patient", "P-undated", "--collection-date", "01/05/2025")
    assert bad.returncode == 2 and "'01/05/2025' is not YYYY-MM-DD" in bad.stderr
    assert_one_line_error(run(api, "patient", "P-undated"), "404")


def test_export_cbioportal_writes_the_study_folder(api: Api) -> None:
    folder = api.tmp / "study"
    result = run(api, "export", "cbioportal", str(folder), "--study-id", "cli_study")
    assert result.returncode == 0, result.stderr
    assert (folder / "meta_study.txt").read_text().startswith("type_of_cancer: brca\n")
    assert (folder / "case_lists" / "cases_sequenced.txt").is_file()
    maf = pd.read_csv(folder / "data_mutations.txt", sep="\t", comment="#")
    assert {"Hugo_Symbol", "HGVSp_Short", "t_alt_count", "Tumor_Sample_Barcode"} <= set(maf.columns)
    assert "p.D538G" in set(maf["HGVSp_Short"])
    metastatic = next(b for b in maf["Tumor_Sample_Barcode"] if b.startswith("MET-"))
    bundle = folder / "bundle.json"
    fhir = run(api, "export", "fhir", metastatic.rsplit("-", 1)[0], "-o", str(bundle))
    assert fhir.returncode == 0, fhir.stderr
    assert json.loads(bundle.read_text())["resourceType"] == "Bundle"
    assert_one_line_error(run(api, "export", "calls", "NO-SUCH"), "404")


def test_submit_sends_a_samples_alignment_with_it(api: Api) -> None:
    from tests.service.test_alignment_evidence import write_bam

    folder = api.tmp / "run-bam"
    folder.mkdir()
    panel_vcf(folder, "BAM1")
    bam, bai = write_bam(folder, "bam1")
    (folder / "manifest.csv").write_text(
        "file,patient_id,sample_id,collection_date,bam,bai\n"
        f"panel-BAM1.vcf,P-bam,S-BAM1,2025-02-01,{bam.name},{bai.name}\n"
    )
    result = run(api, "submit", str(folder), "--create-patient")
    assert result.returncode == 0, result.stdout + result.stderr
    sample = httpx.get(
        f"{api.base}/v1/samples/S-BAM1", headers={"Authorization": f"Bearer {api.key}"}
    ).json()
    assert (sample["alignment_name"], sample["alignment_format"]) == (bam.name, "bam")

    # an alignment without its index is named before anything is sent
    (folder / "half.csv").write_text(
        "file,patient_id,sample_id,collection_date,alignment\n"
        f"panel-BAM1.vcf,P-bam,S-BAM2,2025-03-01,{bam.name}\n"
    )
    half = run(api, "submit", str(folder), "--manifest", str(folder / "half.csv"))
    assert half.returncode == 2
    assert "half.csv line 2" in half.stderr and "go together" in half.stderr


def test_corrections_from_the_command_line(api: Api) -> None:
    headers = {"Authorization": f"Bearer {api.key}"}
    for tag, date in (("C1", "2025-03-01"), ("C2", "2025-04-01")):
        path = panel_vcf(api.tmp, tag)
        result = run(
            api, "submit", str(path), "--patient", "P-corr", "--sample-id", f"S-{tag}",
            "--collection-date", date, "--genome-build", "GRCh38", "--create-patient",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
    event = httpx.post(
        f"{api.base}/v1/patients/P-corr/events",
        json={"type": "surgery", "date": "2025-01-10"},
        headers=headers,
    ).json()

    fixed = run(
        api, "sample", "correct", "S-C2", "--collection-date", "2025-02-15",
        "--reason", "day and month swapped",
    )  # fmt: skip
    assert fixed.returncode == 0, fixed.stderr
    assert "collection_date 2025-04-01 → 2025-02-15" in fixed.stdout
    assert_one_line_error(run(api, "sample", "correct", "S-C2", "--reason", "x"), "nothing")
    future = run(
        api, "sample", "correct", "S-C2", "--collection-date", "2031-01-01", "--reason", "x"
    )
    assert_one_line_error(future, "422", "2031-01-01")

    therapy = {
        "type": "therapy_start",
        "date": "2025-01-20",
        "drug": "[bold]x[/]",
        "drug_class": "other",
    }
    assert (
        httpx.post(
            f"{api.base}/v1/patients/P-corr/events", json=therapy, headers=headers
        ).status_code
        == 201
    )
    retracted = run(api, "sample", "retract", "S-C1", "--reason", "failed QC")
    assert retracted.returncode == 0, retracted.stderr
    assert "retracted (failed QC)" in retracted.stdout
    shown = run(api, "patient", "P-corr", "--format", "table")
    assert shown.returncode == 0, shown.stderr
    assert "1 plasma draw (1 retracted not counted)" in shown.stdout
    assert f"#{event['id']} surgery 2025-01-10" in shown.stdout
    assert "[bold]x[/]" in shown.stdout  # a name is printed as given, never read as markup

    moved = run(api, "event", "correct", "P-corr", str(event["id"]), "--date", "2025-01-12",
                "--reason", "operation note")  # fmt: skip
    assert moved.returncode == 0, moved.stderr
    assert "date 2025-01-10 → 2025-01-12" in moved.stdout
    deleted = run(api, "event", "delete", "P-corr", str(event["id"]), "--reason", "wrong patient")
    assert deleted.returncode == 0, deleted.stderr
    events = httpx.get(f"{api.base}/v1/patients/P-corr", headers=headers).json()["events"]
    assert [e["type"] for e in events] == ["therapy_start"]
    assert_one_line_error(
        run(api, "event", "delete", "P-corr", str(event["id"]), "--reason", "again"), "404"
    )
    site = run(api, "site", "show")
    assert site.returncode == 0 and f"site={SITE}" in site.stdout, site.stderr


def _api_json(api: Api, path: str) -> object:
    response = httpx.get(f"{api.base}{path}", headers={"Authorization": f"Bearer {api.key}"})
    assert response.status_code == 200, response.text
    return response.json()


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_at_80_columns_nothing_is_cut(api: Api) -> None:
    """A table too wide for 80 columns becomes one block per row: every identifier, date and
    reason whole (none shortened to "…"), no line past 80 characters."""
    patients = _api_json(api, "/v1/patients")["items"]  # type: ignore[index]
    outputs = [run(api, "patients", "--format", "table", columns=80)]
    for p in patients:
        outputs.append(run(api, "patient", p["patient_id"], "--format", "table", columns=80))
    for result in outputs:
        assert result.returncode == 0, result.stderr
        assert "…" not in result.stdout, result.stdout
        assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout
    flat = _flat(outputs[0].stdout)
    for p in patients:
        assert f"patient: {p['patient_id']}" in flat
    for p, result in zip(patients, outputs[1:], strict=True):
        pid = p["patient_id"]
        flat = _flat(result.stdout)
        detail = _api_json(api, f"/v1/patients/{pid}")
        for sample in detail["samples"]:  # type: ignore[index]
            assert f"sample: {sample['sample_id']}" in flat
            assert f"date: {sample['collection_date']}" in flat
        resistance = _api_json(api, f"/v1/patients/{pid}/resistance")
        for event in resistance["events"]:  # type: ignore[index]
            # the whole implication, wrapped under itself
            assert f"implication: {_flat(event['implication'])}" in flat
        mrd = _api_json(api, f"/v1/patients/{pid}/mrd")
        for call in mrd["calls"]:  # type: ignore[index]
            block = flat[flat.index(f"sample: {call['sample_id']}") :]
            assert block.startswith(f"sample: {call['sample_id']}")
            # a negative draw reads "< LoD95", never a tumour fraction of 0
            if call["call"] == "NEGATIVE":
                assert "tumour fraction (95% CI): < LoD95" in block.split("sample:")[1]


def test_piped_output_is_tsv_and_json_on_request(api: Api) -> None:
    listed = run(api, "patients")  # piped: TSV without being asked
    assert listed.returncode == 0, listed.stderr
    assert "│" not in listed.stdout and "\x1b[" not in listed.stdout
    rows = list(csv.DictReader(io.StringIO(listed.stdout), delimiter="\t"))
    exported = run(api, "export", "patients")
    assert exported.returncode == 0, exported.stderr
    expected = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [r["patient_id"] for r in rows] == [r["patient_id"] for r in expected]
    for row, full in zip(rows, expected, strict=True):
        # the raw numbers and codes, not the table's rounded percentages
        assert row["latest_tumor_fraction"] == full["latest_tumor_fraction"]
        assert (row["mrd_status"], row["current_therapy"]) == (
            full["mrd_status"],
            full["current_therapy"],
        )
    as_json = json.loads(run(api, "patients", "--format", "json").stdout)
    assert [r["patient_id"] for r in as_json] == [r["patient_id"] for r in rows]

    pid = next(r["patient_id"] for r in rows if r["mrd_status"] != "NOT_APPLICABLE")
    piped = run(api, "patient", pid)
    sections = dict(
        (part.split("\n", 1)[0], part.split("\n", 1)[1])
        for part in re.split(r"^# ", piped.stdout, flags=re.M)
        if part
    )
    assert set(sections) == {"patient", "samples", "resistance", "amendments"}
    samples = list(csv.DictReader(io.StringIO(sections["samples"]), delimiter="\t"))
    mrd = _api_json(api, f"/v1/patients/{pid}/mrd")
    calls = {c["sample_id"]: c for c in mrd["calls"]}  # type: ignore[index]
    for sample in samples:
        call = calls.get(sample["sample_id"])
        if call:
            assert sample["call"] == call["call"]
            assert float(sample["tumor_fraction"]) == call["tumor_fraction"]
    detail = json.loads(run(api, "patient", pid, "--format", "json").stdout)
    assert detail["patient"]["mrd_status"] == mrd["status"]  # type: ignore[index]
    assert [s["sample_id"] for s in detail["samples"]] == [s["sample_id"] for s in samples]
    wrong = run(api, "patients", "--format", "xml")
    assert wrong.returncode == 2 and "table, tsv, json" in wrong.stderr


def test_a_simulated_folder_carries_its_clinical_events(api: Api) -> None:
    """`ctdna simulate` writes events.csv beside the manifest; `ctdna submit` posts the events
    before the samples (once, however often the folder is sent), so the MRD calls are made."""
    folder = api.tmp / "simulated"
    made = run(
        api, "simulate", str(folder), "--patients", "2", "--draws", "2", "--seed", "7",
        "--prefix", "EV-",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    events = list(csv.DictReader((folder / "events.csv").open()))
    assert {e["type"] for e in events} >= {"surgery", "therapy_start"}
    files = len(list(csv.DictReader((folder / "manifest.csv").open())))
    assert files > 4  # more than the upload burst: the site's rate limit is waited out
    # without --create-patient, new patients are refused: events and samples alike
    refused = run(api, "submit", str(folder))
    assert refused.returncode == 1
    assert "events: 0 posted, 0 already recorded" in refused.stderr
    assert "no patient 'EV-SIM-0001' at this site (--create-patient)" in refused.stderr
    result = run(api, "submit", str(folder), "--create-patient")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"accepted {files}, duplicate 0, failed 0" in result.stderr
    assert f"events: {len(events)} posted, 0 already recorded" in result.stderr
    surgical = next(e["patient_id"] for e in events if e["type"] == "surgery")
    mrd = _api_json(api, f"/v1/patients/{surgical}/mrd")
    assert mrd["status"] != "not_applicable" and mrd["calls"], mrd  # type: ignore[index]
    again = run(api, "submit", str(folder))
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"events: 0 posted, {len(events)} already recorded" in again.stderr
    detail = _api_json(api, f"/v1/patients/{surgical}")
    assert len(detail["events"]) == sum(  # type: ignore[index]
        1 for e in events if e["patient_id"] == surgical
    )

    # one event from the command line; a bad one is refused before anything is sent
    recorded = run(
        api, "event", "add", surgical, "--type", "therapy_start", "--date", "2024-01-02",
        "--drug", "letrozole",
    )  # fmt: skip
    assert recorded.returncode == 0, recorded.stderr
    assert "therapy started 2024-01-02 letrozole (aromatase inhibitor)" in recorded.stdout
    refused = run(api, "event", "add", surgical, "--type", "therapy_start", "--date", "2024-01")
    assert refused.returncode == 2 and "needs a drug or a drug_class" in refused.stderr
    assert "'2024-01' is not YYYY-MM-DD" in refused.stderr
    (folder / "bad-events.csv").write_text(
        "patient_id,type,date,drug\nEV-X,surgery,2024-13-01,\nEV-X,chemo,2024-01-01,\n"
    )
    bad = run(api, "submit", str(folder), "--events", str(folder / "bad-events.csv"))
    assert bad.returncode == 2
    assert "bad-events.csv line 2: date '2024-13-01' is not YYYY-MM-DD" in bad.stderr
    assert "bad-events.csv line 3: type 'chemo' is not one of" in bad.stderr
    assert_one_line_error(run(api, "patient", "EV-X"), "404")
