"""One story per patient, over HTTP on the real stack: a draw's tumour fraction is one number
in /mrd, /trends, the patient page and the calls CSV; a germline polymorphism at VAF 0.5 in
plasma is flagged and kept out of the tumour fraction, the clones and the heterogeneity index."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.reports.numbers import fraction_or_lod, percent
from tests.conftest import PANEL_VCF, Running, ctdna, service_env, wait_idle, wait_job

pytestmark = [pytest.mark.queue, pytest.mark.postgres]

SITE = "site-story"
I655V = ("chr17", 39727784, "A", "G")  # ERBB2 p.I655V, rs1136201: a common germline allele
H1047R = ("chr3", 179234297, "A", "G")  # PIK3CA p.H1047R
E545K = ("chr3", 179218303, "G", "A")  # PIK3CA p.E545K, at background here


@dataclass
class Story:
    client: httpx.Client
    tmp: Path


@pytest.fixture(scope="module")
def story(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    tmp = tmp_path_factory.mktemp("story")
    env = service_env(tmp, CTDNA_DATABASE_URL=pg_url, CTDNA_BROKER_URL=redis_url)
    with Running() as running, ThreadPoolExecutor(max_workers=1) as pool:
        demo = pool.submit(ctdna, env, "demo", "--site", SITE, "--patients", "3", "--draws", "4")
        (base,) = running.apis(tmp, env)
        key = demo.result().stdout.strip().splitlines()[-1]
        running.worker(env, tmp, "--concurrency", "2")
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as client:
            wait_idle(pg_url)
            yield Story(client, tmp)


def test_a_draw_has_one_tumour_fraction_everywhere(story: Story) -> None:
    client = story.client
    patients = [p["patient_id"] for p in client.get("/v1/patients").json()["items"]]
    patient_id = next(p for p in patients if p.startswith("SIM-"))
    mrd = client.get(f"/v1/patients/{patient_id}/mrd").json()
    calls = [c for c in mrd["calls"] if c["informative_reads"]]
    assert calls, mrd
    trends = {
        s["sample_id"]: s for s in client.get(f"/v1/patients/{patient_id}/trends").json()["samples"]
    }
    rows = {
        r["sample_id"]: r
        for r in csv.DictReader(
            io.StringIO(client.get(f"/v1/patients/{patient_id}/export/calls.csv").text)
        )
    }
    page = client.get(f"/ui/patients/{patient_id}").text
    for call in calls:
        sample = trends[call["sample_id"]]
        assert sample["tumor_fraction"] == call["tumor_fraction"]
        assert sample["tumor_fraction_ci"] == [call["ci_low"], call["ci_high"]]
        assert sample["lod95"] == call["lod95"]
        assert sample["tumor_fraction_method"] == "tumour_informed"
        assert sample["tumor_fraction_source"] == "mrd_call"
        assert float(rows[call["sample_id"]]["tumor_fraction"]) == pytest.approx(
            call["tumor_fraction"]
        )
        shown = fraction_or_lod(
            call["tumor_fraction"], detected=call["call"] == "POSITIVE", lod95=call["lod95"]
        )
        assert html.escape(shown) in page, (call["sample_id"], shown)
        if call["lod95"] is not None:
            assert html.escape(percent(call["lod95"])) in page, call["sample_id"]


def _vcf(
    directory: Path, name: str, records: list[tuple[tuple[str, int, str, str], int, int]]
) -> Path:
    """A plasma VCF in the panel file's dialect: (locus, alt reads, depth) per record, in the
    TUMOR column, none in the NORMAL column."""
    header = [line for line in PANEL_VCF.read_text().splitlines() if line.startswith("#")]
    if not any(line.startswith("##contig=<ID=chr17") for line in header):
        header.insert(1, "##contig=<ID=chr17,length=83257441>")
    lines = []
    for (chrom, pos, ref, alt), mutant, depth in records:
        lines.append(
            f"{chrom}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\tDP={2 * depth}\tGT:AD:AF:DP"
            f"\t0/0:{depth},0:0.0:{depth}"
            f"\t0/1:{depth - mutant},{mutant}:{mutant / depth:.5f}:{depth}"
        )
    path = directory / f"{name}.vcf"
    path.write_text("\n".join([header[0], f"##ctdna_test={name}", *header[1:], *lines]) + "\n")
    return path


def test_a_germline_polymorphism_is_kept_out_of_the_tumour_fraction(story: Story) -> None:
    client = story.client
    path = _vcf(
        story.tmp,
        "GERM-P1",
        [(I655V, 2500, 5000), (H1047R, 50, 5000), (E545K, 0, 5000)],
    )
    with path.open("rb") as fh:
        response = client.post(
            "/v1/samples",
            data={
                "patient_id": "GERM-1",
                "sample_id": "GERM-P1",
                "collection_date": "2025-03-01",
                "sample_type": "plasma",
                "genome_build": "GRCh38",
                "tumor_sample": "TUMOR",
                "normal_sample": "NORMAL",
                "create_patient": "true",
            },
            files={"file": (path.name, fh)},
        )
    assert response.status_code == 202, response.text
    assert wait_job(client, response.json()["job_id"])["status"] == "succeeded"
    trends = client.get("/v1/patients/GERM-1/trends").json()
    (sample,) = trends["samples"]
    assert sample["tumor_fraction_method"] == "panel_vaf"
    assert sample["tumor_fraction"] == pytest.approx(0.02, rel=0.3)  # 2 x the H1047R VAF
    variants = {v["locus_key"]: v for v in trends["variants"]}
    germline = variants["chr17:39727784:A>G"]
    assert germline["germline_suspected"] and not germline["truncal"]
    assert variants["chr3:179234297:A>G"]["truncal"]
    assert not variants["chr3:179234297:A>G"]["germline_suspected"]
    # no heterogeneity index from one measurable variant, and no germline clone
    assert sample["math_score"] is None
    clones_job = client.post("/v1/patients/GERM-1/recompute").json()
    assert wait_job(client, clones_job["job_id"])["status"] == "succeeded"
    clones = client.get("/v1/patients/GERM-1/clones").json()
    members = {m["locus_key"] for c in clones.get("clones", []) for m in c["members"]}
    assert "chr17:39727784:A>G" not in members
    assert "chr3:179218303:G>A" not in members  # never detected: part of no clone
