"""Exports through the real service: a demo cohort (tumour-informed MRD patient and a metastatic
patient with an emerging ESR1 clone) loaded by `ctdna demo` into PostgreSQL, a panel VCF
posted over HTTP and ingested by a real Celery worker over Redis; then the CSVs, the FHIR
bundle (validated with fhir.resources R4B) and the cBioPortal study (parsed with pandas) are
checked against the API's own answers and the panel file's known values."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pandas as pd
import pytest
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import event
from sqlalchemy.orm import Session

from tests.conftest import Running, create_key, ctdna, service_env, upload_panel, wait_job

pytestmark = [pytest.mark.queue, pytest.mark.postgres]

SITE = "site-exports"
LOCAL = "urn:ctdna-monitor:codes"
MAF_REQUIRED = (
    "Hugo_Symbol", "Entrez_Gene_Id", "NCBI_Build", "Chromosome", "Start_Position",
    "End_Position", "Variant_Classification", "Variant_Type", "Reference_Allele",
    "Tumor_Seq_Allele1", "Tumor_Seq_Allele2", "Tumor_Sample_Barcode", "HGVSp_Short",
    "t_alt_count", "t_ref_count",
)  # fmt: skip


@dataclass
class Loaded:
    client: httpx.Client  # site SITE, scopes read, ingest, admin (the demo's key)
    other: httpx.Client  # another site
    pg_url: str


@pytest.fixture(scope="module")
def loaded(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Loaded]:
    tmp = tmp_path_factory.mktemp("exports")
    env = service_env(tmp, CTDNA_DATABASE_URL=pg_url, CTDNA_BROKER_URL=redis_url)
    with Running() as running, ThreadPoolExecutor(max_workers=2) as pool:
        # The demo loads in its own process while the API starts; the worker starts after
        # it, so that it cannot take the demo's jobs half-way through its load.
        demo = pool.submit(ctdna, env, "demo", "--site", SITE, "--patients", "2", "--draws", "3")
        other_key = pool.submit(create_key, env, "site-exports-other", "read")
        (base,) = running.apis(tmp, env)
        key = demo.result().stdout.strip().splitlines()[-1]
        running.worker(env, tmp, "--concurrency", "1")
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        other = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {other_key.result()}"}, timeout=60
        )
        try:
            assert client.post("/v1/patients", json={"patient_id": "P-panel"}).status_code == 201
            therapy = {"type": "therapy_start", "date": "2025-01-15", "drug": "letrozole"}
            assert client.post("/v1/patients/P-panel/events", json=therapy).status_code == 201
            response = upload_panel(client, tmp, "P-panel", "S-panel")
            assert response.status_code == 202, response.text
            assert wait_job(client, response.json()["job_id"])["status"] == "succeeded"
            yield Loaded(client, other, pg_url)
        finally:
            client.close()
            other.close()


def _mrd_patient(client: httpx.Client) -> str:
    ids = [p["patient_id"] for p in client.get("/v1/patients").json()["items"]]
    return next(i for i in ids if i.startswith("SIM-"))


def _code(concept: dict[str, Any]) -> str:
    return concept["coding"][0]["code"]


def _components(observation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {_code(c["code"]): c for c in observation.get("component", [])}


def _bundle(client: httpx.Client, patient_id: str) -> dict[str, dict[str, Any]]:
    """The bundle's resources by fullUrl, after fhir.resources R4B validated it."""
    response = client.get(f"/v1/patients/{patient_id}/export/fhir")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate_json(response.text)
    assert bundle.type == "collection"
    return {e["fullUrl"]: e["resource"] for e in response.json()["entry"]}


def test_fhir_bundle_validates_and_carries_the_variant_values(loaded: Loaded) -> None:
    resources = _bundle(loaded.client, "P-panel")
    variants = [
        r for r in resources.values()
        if r["resourceType"] == "Observation" and _code(r["code"]) == "69548-6"
    ]  # fmt: skip
    by_change = {
        _components(v)["48005-3"]["valueCodeableConcept"]["coding"][0]["code"]: v for v in variants
    }
    # The panel file: ESR1 Y537S AD 1880,120 (PASS); PIK3CA E545K 1560,40 (PASS); PIK3CA
    # H1047R is weak_evidence, so stored but not detected, and not reported as Present.
    assert set(by_change) == {"p.Y537S", "p.E545K"}
    esr1 = by_change["p.Y537S"]
    assert esr1["meta"]["profile"] == [
        "http://hl7.org/fhir/uv/genomics-reporting/StructureDefinition/variant"
    ]
    assert esr1["valueCodeableConcept"]["coding"][0]["code"] == "LA9633-4"
    assert esr1["subject"]["identifier"]["value"] == "P-panel"
    parts = _components(esr1)
    gene = parts["48018-6"]["valueCodeableConcept"]["coding"][0]
    assert (gene["system"], gene["code"], gene["display"]) == (
        "http://www.genenames.org/geneId", "HGNC:3467", "ESR1",
    )  # fmt: skip
    assert _code(parts["48004-6"]["valueCodeableConcept"]) == "c.1610A>C"
    assert parts["81258-6"]["valueQuantity"] == {
        "value": 0.06, "system": "http://unitsofmeasure.org", "code": "1",
    }  # fmt: skip
    assert parts["82121-5"]["valueQuantity"]["value"] == 120
    assert _code(parts["48013-7"]["valueCodeableConcept"]) == "NC_000006.12"
    assert _code(parts["62374-4"]["valueCodeableConcept"]) == "LA26806-2"  # GRCh38
    assert parts["81254-5"]["valueRange"] == {
        "low": {"value": 152098787}, "high": {"value": 152098788},
    }  # fmt: skip
    assert (parts["69547-8"]["valueString"], parts["69551-0"]["valueString"]) == ("A", "C")
    assert by_change["p.E545K"]["component"][0]["valueCodeableConcept"]["text"] == "PIK3CA"
    assert _components(by_change["p.E545K"])["81258-6"]["valueQuantity"]["value"] == 0.025

    (report,) = [r for r in resources.values() if r["resourceType"] == "DiagnosticReport"]
    assert _code(report["code"]) == "51969-4"
    assert _code(report["category"][0]) == "GE"
    assert report["meta"]["profile"][0].endswith("/genomics-report")
    # every reference resolves inside the bundle
    results = [resources[r["reference"]] for r in report["result"]]
    assert {id(r) for r in variants} <= {id(r) for r in results}
    specimen = resources[report["specimen"][0]["reference"]]
    assert specimen["resourceType"] == "Specimen"
    assert specimen["collection"]["collectedDateTime"] == "2025-02-01"
    assert _code(specimen["type"]) == "119361006"  # plasma


def test_fhir_bundle_carries_each_mrd_call(loaded: Loaded) -> None:
    patient_id = _mrd_patient(loaded.client)
    mrd = loaded.client.get(f"/v1/patients/{patient_id}/mrd").json()
    assert mrd["calls"], mrd
    resources = _bundle(loaded.client, patient_id)
    sample_of = {
        url: r["identifier"][0]["value"]
        for url, r in resources.items()
        if r["resourceType"] == "Specimen"
    }
    statuses = {
        sample_of[r["specimen"]["reference"]]: r
        for r in resources.values()
        if r["resourceType"] == "Observation" and r["code"]["coding"][0]["system"] == LOCAL
    }
    reports = {
        sample_of[r["specimen"][0]["reference"]]: r
        for r in resources.values()
        if r["resourceType"] == "DiagnosticReport"
    }
    answer = {"POSITIVE": "LA6576-8", "NEGATIVE": "LA6577-6"}
    for call in mrd["calls"]:
        status = statuses[call["sample_id"]]
        parts = _components(status)
        assert parts["tumor-fraction"]["valueQuantity"]["value"] == pytest.approx(
            call["tumor_fraction"]
        )
        assert parts["lod95"]["valueQuantity"]["value"] == pytest.approx(call["lod95"])
        assert parts["loci-tracked"]["valueInteger"] == call["loci_tracked"]
        assert parts["informative-reads"]["valueInteger"] == call["informative_reads"]
        report = reports[call["sample_id"]]
        assert {"reference": f"urn:uuid:{status['id']}"} in report["result"]
        if call["call"] in answer:
            assert _code(status["valueCodeableConcept"]) == answer[call["call"]]
            assert _code(report["conclusionCode"][0]) == answer[call["call"]]
        assert call["call"] in report["conclusion"]
    # the tissue sample has its own report (its PASS variants), without a ctDNA status
    tissue = [s for s in reports if s.endswith("TISSUE")]
    assert tissue and tissue[0] not in statuses


def test_fhir_resistance_events_are_therapeutic_implications(loaded: Loaded) -> None:
    ids = [p["patient_id"] for p in loaded.client.get("/v1/patients").json()["items"]]
    metastatic = next(i for i in ids if i.startswith("MET-"))
    events = loaded.client.get(f"/v1/patients/{metastatic}/resistance").json()["events"]
    assert events
    resources = _bundle(loaded.client, metastatic)
    implications = [
        r for r in resources.values()
        if r.get("meta", {}).get("profile", [""])[0].endswith("/therapeutic-implication")
    ]  # fmt: skip
    assert len(implications) == len(events)
    for implication in implications:
        variant = resources[implication["derivedFrom"][0]["reference"]]
        change = _components(variant)["48005-3"]["valueCodeableConcept"]["coding"][0]["code"]
        assert (_components(variant)["48018-6"]["valueCodeableConcept"]["text"], change) == (
            "ESR1", "p.D538G",
        )  # fmt: skip
        parts = _components(implication)
        assert parts["51963-7"]["valueCodeableConcept"]["text"] == "aromatase_inhibitor"
        assert parts["51961-1"]["valueCodeableConcept"]["text"] == "Resistant"
        assert any("PADA-1" in n["text"] for n in implication["note"])
        # listed in the report of the draw where it fired
        report = next(
            r for r in resources.values()
            if r["resourceType"] == "DiagnosticReport"
            and r["specimen"] == [implication["specimen"]]
        )  # fmt: skip
        assert {"reference": f"urn:uuid:{implication['id']}"} in report["result"]


def test_maf_alleles_and_classification_follow_the_maf_conventions() -> None:
    from services.exports.cbioportal import maf_alleles, variant_classification

    assert maf_alleles(100, "A", "G") == (100, 100, "A", "G", "SNP")
    assert maf_alleles(100, "AC", "GT") == (100, 101, "AC", "GT", "DNP")
    # a deletion loses its VCF anchor base and starts after it
    assert maf_alleles(100, "ACG", "A") == (101, 102, "CG", "-", "DEL")
    # an insertion spans the two reference bases around it
    assert maf_alleles(100, "A", "ATT") == (100, 101, "-", "TT", "INS")
    assert maf_alleles(100, "ATG", "C") == (100, 102, "ATG", "C", "DEL")
    assert variant_classification("p.H1047R", "SNP") == "Missense_Mutation"
    assert variant_classification("p.R88*", "SNP") == "Nonsense_Mutation"
    assert variant_classification("p.K111fs", "DEL") == "Frame_Shift_Del"
    assert variant_classification("p.K111fs", "INS") == "Frame_Shift_Ins"
    assert variant_classification("p.E545=", "SNP") == "Silent"
    assert variant_classification("p.L536_D538del", "DEL") == "In_Frame_Del"
    assert variant_classification("p.M1?", "SNP") == "Translation_Start_Site"
    assert variant_classification(None, "SNP") == "Unknown"


def test_calls_and_variants_csv_match_the_api(loaded: Loaded) -> None:
    client = loaded.client
    patient_id = _mrd_patient(client)
    calls = client.get(f"/v1/patients/{patient_id}/export/calls.csv")
    assert calls.status_code == 200
    assert calls.headers["content-type"].startswith("text/csv")
    assert f'filename="{patient_id}-calls.csv"' in calls.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(calls.text)))
    mrd = client.get(f"/v1/patients/{patient_id}/mrd").json()
    assert [r["sample_id"] for r in rows] == [c["sample_id"] for c in mrd["calls"]]
    for row, call in zip(rows, mrd["calls"], strict=True):
        assert row["call"] == call["call"]
        assert (float(row["lod95"]) if row["lod95"] else None) == pytest.approx(call["lod95"])
        assert int(row["informative_reads"]) == call["informative_reads"]
        assert row["rule_version"] == mrd["rule_version"]

    exported = list(
        csv.DictReader(
            io.StringIO(client.get(f"/v1/patients/{patient_id}/export/variants.csv").text)
        )
    )
    samples = client.get(f"/v1/patients/{patient_id}").json()["samples"]
    for sample in samples:
        api_rows = client.get(f"/v1/samples/{sample['sample_id']}/variants").json()["items"]
        mine = [r for r in exported if r["sample_id"] == sample["sample_id"]]
        assert len(mine) == len(api_rows) > 0
        assert {r["collection_date"] for r in mine} == {sample["collection_date"]}

        def key(row: dict[str, Any]) -> tuple[str, ...]:
            values = [row[k] for k in ("chrom", "pos", "ref", "alt", "alt_reads", "depth")]
            return (*("" if v is None else str(v) for v in values), str(row["detected"]).lower())

        assert sorted(map(key, mine)) == sorted(map(key, api_rows))

    panel = list(
        csv.DictReader(io.StringIO(client.get("/v1/patients/P-panel/export/variants.csv").text))
    )
    esr1 = next(r for r in panel if r["protein_change"] == "p.Y537S")
    assert (esr1["gene"], esr1["alt_reads"], esr1["depth"], float(esr1["vaf"])) == (
        "ESR1", "120", "2000", 0.06,
    )  # fmt: skip
    assert (esr1["hotspot"], esr1["hgvs_c"], esr1["sample_type"]) == ("true", "c.1610A>C", "plasma")


def test_cbioportal_study_parses_with_pandas(loaded: Loaded) -> None:
    client = loaded.client
    response = client.get("/v1/exports/cbioportal", params={"study_id": "brca_ctdna_test"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    files = {
        n.removeprefix("brca_ctdna_test/"): archive.read(n).decode() for n in archive.namelist()
    }
    for name in (
        "meta_study.txt", "data_mutations.txt", "meta_mutations.txt", "data_clinical_sample.txt",
        "data_clinical_patient.txt", "data_timeline_treatment.txt", "data_timeline_specimen.txt",
        "case_lists/cases_sequenced.txt",
    ):  # fmt: skip
        assert name in files, sorted(files)
    assert "cancer_study_identifier: brca_ctdna_test\n" in files["meta_study.txt"]
    assert "reference_genome: hg38\n" in files["meta_study.txt"]
    for name, text in files.items():
        if name.startswith("meta_"):
            meta = dict(line.split(": ", 1) for line in text.splitlines())
            assert meta["cancer_study_identifier"] == "brca_ctdna_test"
            if "data_filename" in meta:
                assert meta["data_filename"] in files

    def table(name: str) -> pd.DataFrame:
        return pd.read_csv(io.StringIO(files[name]), sep="\t", comment="#")

    maf = table("data_mutations.txt")
    assert set(MAF_REQUIRED) <= set(maf.columns)
    assert set(maf["NCBI_Build"]) == {"GRCh38"}
    panel = maf[maf["Tumor_Sample_Barcode"] == "S-panel"]
    assert set(panel["HGVSp_Short"]) == {"p.Y537S", "p.E545K"}  # H1047R is weak_evidence
    esr1 = panel[panel["HGVSp_Short"] == "p.Y537S"].iloc[0]
    assert (esr1["Hugo_Symbol"], int(esr1["Entrez_Gene_Id"]), str(esr1["Chromosome"])) == (
        "ESR1", 2099, "6",
    )  # fmt: skip
    assert (int(esr1["Start_Position"]), int(esr1["End_Position"])) == (152098788, 152098788)
    assert (esr1["Reference_Allele"], esr1["Tumor_Seq_Allele2"]) == ("A", "C")
    assert (int(esr1["t_alt_count"]), int(esr1["t_ref_count"])) == (120, 1880)
    assert esr1["Variant_Classification"] == "Missense_Mutation"

    samples = table("data_clinical_sample.txt")
    assert files["data_clinical_sample.txt"].splitlines()[2].startswith("#STRING\tSTRING")
    assert set(maf["Tumor_Sample_Barcode"]) <= set(samples["SAMPLE_ID"])
    row = samples[samples["SAMPLE_ID"] == "S-panel"].iloc[0]
    assert row["PATIENT_ID"] == "P-panel"
    assert int(row["COLLECTION_DAY"]) == 17  # drawn 2025-02-01, anchor: letrozole 2025-01-15
    assert row["SAMPLE_CLASS"] == "cfDNA"

    patients = table("data_clinical_patient.txt").set_index("PATIENT_ID")
    mrd_patient = _mrd_patient(client)
    mrd = client.get(f"/v1/patients/{mrd_patient}/mrd").json()
    assert patients.loc[mrd_patient, "MRD_STATUS"] == mrd["status"]
    assert patients.loc[mrd_patient, "TIMELINE_ANCHOR"] == "surgery"
    assert patients.loc["P-panel", "CURRENT_THERAPY"] == "letrozole"
    metastatic = next(p for p in patients.index if p.startswith("MET-"))
    assert patients.loc[metastatic, "RESISTANCE_STATUS"] == "emerging"
    assert "ESR1" in patients.loc[metastatic, "RESISTANCE_EVENTS"]

    treatment = table("data_timeline_treatment.txt")
    assert list(treatment.columns[:4]) == ["PATIENT_ID", "START_DATE", "STOP_DATE", "EVENT_TYPE"]
    letrozole = treatment[treatment["PATIENT_ID"] == "P-panel"].iloc[0]
    assert (letrozole["AGENT"], int(letrozole["START_DATE"])) == ("letrozole", 0)
    assert letrozole["SUBTYPE"] == "aromatase_inhibitor"
    specimens = table("data_timeline_specimen.txt")
    assert set(specimens["SAMPLE_ID"]) == set(samples["SAMPLE_ID"])
    assert (specimens["EVENT_TYPE"] == "SPECIMEN").all()

    bad = client.get("/v1/exports/cbioportal", params={"study_id": "no spaces!"})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")


def test_another_site_gets_404_and_an_empty_study(loaded: Loaded) -> None:
    for route in ("export/calls.csv", "export/variants.csv", "export/fhir"):
        response = loaded.other.get(f"/v1/patients/P-panel/{route}")
        assert response.status_code == 404, route
        assert response.headers["content-type"].startswith("application/problem+json")
    archive = zipfile.ZipFile(io.BytesIO(loaded.other.get("/v1/exports/cbioportal").content))
    maf = next(n for n in archive.namelist() if n.endswith("/data_mutations.txt"))
    assert archive.read(maf).decode().count("\n") == 1  # the header alone
    summary = loaded.other.get("/v1/exports/patients.csv").text
    assert summary.count("\n") == 1


def test_every_export_read_is_audited(loaded: Loaded) -> None:
    client = loaded.client
    assert client.get("/v1/patients/P-panel/export/fhir").status_code == 200
    assert client.get("/v1/exports/patients.csv").status_code == 200
    entries = client.get("/v1/audit", params={"patient_id": "P-panel", "limit": 200}).json()
    routes = {e["route"] for e in entries["items"]}
    assert "/v1/patients/{patient_id}/export/fhir" in routes
    assert "/v1/exports/patients.csv" in routes


def test_study_export_queries_do_not_grow_with_patients(loaded: Loaded) -> None:
    """Thousands of patients must cost a few queries per chunk, not per patient: the study of
    a site with 120 patients runs the same statements as that of a site with one."""
    import services.models  # noqa: F401  (mapper registry)
    from services.db import make_engine, utcnow
    from services.exports.cbioportal import study_files
    from services.exports.repository import iter_site
    from services.patients.models import Patient
    from services.samples.models import Sample

    engine = make_engine(loaded.pg_url, pooled=False)
    statements: list[str] = []
    try:
        with Session(engine) as session:
            for site, n in (("site-bulk-1", 1), ("site-bulk-120", 120)):
                for i in range(n):
                    patient = Patient(site=site, patient_id=f"B{i:04d}", created_at=utcnow())
                    session.add(patient)
                    session.flush()
                    session.add(
                        Sample(
                            site=site, sample_id=f"{site}-S{i:04d}", patient_pk=patient.id,
                            collection_date=utcnow().date(), sample_type="plasma",
                            file_name="x.vcf", file_sha256="0" * 64, file_size=1,
                            status="processed", created_at=utcnow(),
                        )
                    )  # fmt: skip
            session.flush()

            def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                statements.append(statement)

            event.listen(engine, "before_cursor_execute", count)
            counts = {}
            for site in ("site-bulk-1", "site-bulk-120"):
                statements.clear()
                files, patient_ids = study_files(session, site, "bulk")
                counts[site] = len(statements)
                assert len(patient_ids) == int(site.rsplit("-", 1)[1])
                assert files["data_clinical_sample.txt"].count("\n") == 5 + len(patient_ids)
            event.remove(engine, "before_cursor_execute", count)
            # chunk boundaries lose and repeat no one
            chunked = [e.patient_id for e in iter_site(session, "site-bulk-120", chunk=50)]
            assert chunked == [f"B{i:04d}" for i in range(120)]
            session.rollback()  # the bulk rows were only for this count
    finally:
        engine.dispose()
    assert counts["site-bulk-1"] == counts["site-bulk-120"] <= 8, counts
