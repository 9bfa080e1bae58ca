"""The HTTP client commands (`ctdna patients`, `patient`, `submit`, `export`) run as
subprocesses against a running API on the embedded default (SQLite, filesystem broker, the
worker `ctdna serve` starts beside it), with a cohort loaded by `ctdna demo`."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest

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
    env = service_env(tmp / "data")
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
    api: Api, *args: str, key: str | None = None, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`ctdna ARGS` with the URL and key from the environment, as a user would set them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTDNA_")}
    env.update(CTDNA_URL=url or api.base, CTDNA_API_KEY=key or api.key, COLUMNS="200")
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
    result = run(api, "patients")
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0]:
            rows[cells[0]] = line
    mrd = next(p for p in rows if p.startswith("SIM-"))
    metastatic = next(p for p in rows if p.startswith("MET-"))
    status = _status(api, mrd)
    assert status in rows[mrd]  # NEGATIVE / POSITIVE / INDETERMINATE badge
    assert "letrozole, palbociclib" in rows[metastatic]
    assert "ESR1 p.D538G" in rows[metastatic]  # the emerging clone of the demo
    assert "2 patients" in result.stdout

    found = run(api, "patients", "--search", "met-")
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

    result = run(api, "patient", metastatic)
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
    result = run(api, "patient", mrd_patient)
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
    assert "accepted 2, duplicate 0, failed 0" in result.stdout

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
    """sample -> (outcome, job status) from the summary table."""
    out = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 7 and cells[2].startswith("S-"):
            out[cells[2]] = (cells[3], cells[5])
    return out


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
        "--key", api.key, "--no-wait",
    )  # fmt: skip
    assert legacy.returncode == 0, legacy.stderr


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
    shown = run(api, "patient", "P-corr")
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
