"""The spine end to end on the real components: PostgreSQL (Alembic-migrated), Redis, a real
`ctdna worker` (Celery) process and the real API over HTTP."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pysam
import pytest

from tests.conftest import (
    PANEL_VCF,
    Process,
    create_key,
    service_env,
    start_api,
    start_worker,
    wait_job,
)

LOCAL = Path(__file__).resolve().parents[1] / "data" / "vcf"

pytestmark = [pytest.mark.queue, pytest.mark.postgres]


@dataclass
class Stack:
    base: str
    key_a: str
    key_b: str
    key_read_only: str
    worker: Process
    api: Process
    data_dir: Path

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key_a}"}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def stack(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    env = service_env(
        tmp,
        CTDNA_DATABASE_URL=pg_url,
        CTDNA_BROKER_URL=redis_url,
        CTDNA_SWEEP_INTERVAL_SECONDS="2",
        CTDNA_JOB_RESEND_AFTER_SECONDS="3",
        CTDNA_MAX_DECOMPRESSED_BYTES=str(32 * 1024**2),
    )
    worker = start_worker(env, tmp, "--concurrency", "2", "--beat")
    api, base = start_api(env, tmp, "--no-worker")
    stack = Stack(
        base=base,
        key_a=create_key(env, "site-a"),
        key_b=create_key(env, "site-b"),
        key_read_only=create_key(env, "site-a", "read"),
        worker=worker,
        api=api,
        data_dir=tmp,
    )
    yield stack
    api.stop()
    worker.stop()


def upload(client: httpx.Client, path: Path, **form: str) -> httpx.Response:
    data = {
        "collection_date": "2025-01-15",
        "sample_type": "plasma",
        "create_patient": "true",
        **form,
    }
    with path.open("rb") as fh:
        return client.post("/v1/samples", data=data, files={"file": (path.name, fh)})


def test_pcgr_upload_gives_pik3ca_h1047r(stack: Stack, public_data: Path) -> None:
    path = public_data / "vcf" / "pcgr_T001-BRCA.grch38.vcf.gz"
    with stack.client() as client:
        response = upload(
            client, path, patient_id="P-pcgr", sample_id="S-pcgr-1", genome_build="GRCh38"
        )
        assert response.status_code == 202, response.text
        ids = response.json()
        job = wait_job(client, ids["job_id"])
        assert job["status"] == "succeeded", job
        variants = client.get(f"/v1/samples/{ids['sample_id']}/variants").json()["items"]
    h1047r = [v for v in variants if v["protein_change"] == "p.H1047R"]
    assert len(h1047r) == 1, variants
    v = h1047r[0]
    assert (v["gene"], v["chrom"], v["pos"], v["ref"], v["alt"]) == (
        "PIK3CA",
        "3",
        179234297,
        "A",
        "G",
    )
    assert (v["alt_reads"], v["depth"], v["build"]) == (31, 74, "GRCh38")
    assert v["vaf"] == pytest.approx(31 / 74)
    assert v["detected"] is True and v["hotspot"] is True and v["filter"] == "PASS"
    # a plasma sample keeps only the monitored genes (and tracked loci): nothing else here
    assert {x["gene"] for x in variants} <= {"ESR1", "PIK3CA", "ERBB2", "AKT1"}


def test_same_bytes_twice_returns_same_ids_and_stores_once(stack: Stack, public_data: Path) -> None:
    path = public_data / "vcf" / "pcgr_T001-BRCA.grch38.vcf.gz"
    with stack.client() as client:
        first = upload(client, path, patient_id="P-dup", sample_id="S-dup-1", genome_build="GRCh38")
        assert first.status_code == 202
        wait_job(client, first.json()["job_id"])
        again = upload(client, path, patient_id="P-dup", sample_id="S-dup-1", genome_build="GRCh38")
        assert again.status_code == 200
        assert again.json() == first.json()
        patient = client.get("/v1/patients/P-dup").json()
        assert [s["sample_id"] for s in patient["samples"]] == ["S-dup-1"]
        # the same sample_id with other bytes is a conflict, not an overwrite
        other = public_data / "vcf" / "vcf2maf_test_b38.vcf"
        clash = upload(
            client, other, patient_id="P-dup", sample_id="S-dup-1", genome_build="GRCh38"
        )
        assert clash.status_code == 409
        assert clash.headers["content-type"].startswith("application/problem+json")


def test_tissue_keeps_every_passing_variant(stack: Stack, public_data: Path) -> None:
    path = public_data / "vcf" / "pcgr_T001-BRCA.grch38.vcf.gz"
    with stack.client() as client:
        plasma = upload(
            client, path, patient_id="P-tis", sample_id="S-tis-plasma", genome_build="GRCh38"
        ).json()
        tissue = upload(
            client,
            path,
            patient_id="P-tis-2",
            sample_id="S-tis-tissue",
            genome_build="GRCh38",
            sample_type="tissue",
        ).json()
        assert wait_job(client, plasma["job_id"])["status"] == "succeeded"
        assert wait_job(client, tissue["job_id"])["status"] == "succeeded"
        n_plasma = len(client.get("/v1/samples/S-tis-plasma/variants").json()["items"])
        tissue_rows = client.get("/v1/samples/S-tis-tissue/variants").json()["items"]
    assert len(tissue_rows) > n_plasma
    assert all(
        r["filter"] in ("PASS", ".") or r["gene"] in {"ESR1", "PIK3CA", "ERBB2", "AKT1"}
        for r in tissue_rows
    )


def test_other_site_sees_404_and_missing_key_401(stack: Stack, public_data: Path) -> None:
    path = public_data / "vcf" / "pcgr_T001-BRCA.grch38.vcf.gz"
    with stack.client() as client:
        ids = upload(
            client, path, patient_id="P-priv", sample_id="S-priv-1", genome_build="GRCh38"
        ).json()
        wait_job(client, ids["job_id"])
    with stack.client(stack.key_b) as other:
        for url in (
            "/v1/patients/P-priv",
            "/v1/samples/S-priv-1",
            "/v1/samples/S-priv-1/variants",
            f"/v1/jobs/{ids['job_id']}",
            "/v1/patients/P-priv/tracked-variants",
        ):
            response = other.get(url)
            assert response.status_code == 404, url
            assert response.json()["status"] == 404
        assert "P-priv" not in {p["patient_id"] for p in other.get("/v1/patients").json()["items"]}
    anonymous = httpx.get(f"{stack.base}/v1/patients/P-priv")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"].startswith("application/problem+json")
    wrong = httpx.get(f"{stack.base}/v1/patients", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_bad_files_fail_the_job_with_file_and_reason(stack: Stack, tmp_path: Path) -> None:
    # VCFs by their first line, wrong further in: the upload is taken, the job fails.
    bad_pos = tmp_path / "bad_pos.vcf"
    bad_pos.write_bytes((LOCAL / "bad_pos_line.vcf").read_bytes())
    no_chrom = tmp_path / "no_chrom_line.vcf.gz"
    no_chrom.write_bytes(gzip.compress(b"##fileformat=VCFv4.2\n" * 5000))
    expected = {bad_pos: "line 7: POS is not a positive integer", no_chrom: "#CHROM"}
    with stack.client() as client:
        for i, path in enumerate((bad_pos, no_chrom)):
            response = upload(
                client, path, patient_id="P-bad", sample_id=f"S-bad-{i}", genome_build="GRCh38"
            )
            assert response.status_code == 202, response.text
            job = wait_job(client, response.json()["job_id"])
            assert job["status"] == "failed"
            assert path.name in str(job["error"]) and expected[path] in str(job["error"])
            assert client.get(f"/v1/samples/S-bad-{i}").json()["status"] == "failed"
    assert stack.worker.popen.poll() is None, "the worker must survive bad input"


def _uploads(stack: Stack) -> list[Path]:
    uploads = stack.data_dir / "uploads"
    return sorted(p for p in uploads.rglob("*") if p.is_file()) if uploads.exists() else []


def _bgzf(payload: bytes, tmp_path: Path) -> bytes:
    plain = tmp_path / "payload"
    plain.write_bytes(payload)
    pysam.tabix_compress(str(plain), str(tmp_path / "payload.gz"), force=True)
    return (tmp_path / "payload.gz").read_bytes()


def _rejected_uploads(tmp_path: Path, public_data: Path) -> dict[str, tuple[bytes, int, str]]:
    """name -> (bytes, status, words the problem's detail must contain)."""
    vcf = PANEL_VCF.read_bytes()
    bam_like = _bgzf(b"BAM\x01" + bytes(range(256)) * 8, tmp_path)
    # 64 MiB of VCF-looking header lines inflate past the stack's 32 MiB cap from 65 KiB
    # (short lines: one 64 MiB line would meet the line-length cap first, also a 413).
    bomb = gzip.compress(
        b"##fileformat=VCFv4.2\n" + (b"##" + b"A" * 1021 + b"\n") * 65536, compresslevel=9
    )
    return {
        "report.pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", 422, "PDF document"),
        "reads.bam": (bam_like, 422, "BAM file"),
        "genome.fa": (b">chr1\nACGTACGTNNNN\n" * 20, 422, "FASTA file"),
        "blob.vcf": (bytes(range(256)) * 40, 422, "binary data"),
        "page.vcf": (b"<!DOCTYPE html><html><body>Login</body></html>", 422, "HTML"),
        "empty.vcf": (b"", 422, "empty"),
        "corrupt_H.vcf": (
            (public_data / "malformed" / "htsjdk_corrupt_file_that_starts_with_H.vcf").read_bytes(),
            422,
            "not a VCF or BCF file",
        ),
        "old.vcf": (
            (LOCAL / "vcf_version_3_3.vcf").read_bytes(),
            422,
            "unsupported VCF version 3.3",
        ),
        "twice.vcf.gz": (gzip.compress(gzip.compress(vcf)), 422, "gzip inside gzip"),
        "cut.vcf.gz": (gzip.compress(vcf)[: len(gzip.compress(vcf)) // 2], 422, "truncated"),
        "bomb.vcf.gz": (bomb, 413, "inflates beyond"),
    }


def test_non_vcf_uploads_are_refused_with_problem_json_and_nothing_kept(
    stack: Stack, tmp_path: Path, public_data: Path
) -> None:
    before = _uploads(stack)
    with stack.client() as client:
        for i, (name, (payload, status, words)) in enumerate(
            _rejected_uploads(tmp_path, public_data).items()
        ):
            path = tmp_path / name
            path.write_bytes(payload)
            response = upload(
                client, path, patient_id="P-refused", sample_id=f"S-refused-{i}",
                genome_build="GRCh38",
            )  # fmt: skip
            assert response.status_code == status, (name, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            problem = response.json()
            assert problem["status"] == status
            assert name in problem["detail"] and words in problem["detail"], (name, problem)
            assert client.get(f"/v1/samples/S-refused-{i}").status_code == 404, name
        assert client.get("/v1/patients/P-refused").status_code == 404
    assert _uploads(stack) == before, "a refused upload must leave no file behind"


def test_vcf_variants_of_encoding_are_accepted_and_read(stack: Stack, tmp_path: Path) -> None:
    """A BOM, CRLF line ends, plain gzip and BGZF, and every VCF 4.x header, all read alike."""
    vcf = PANEL_VCF.read_bytes()
    variants: dict[str, bytes] = {
        "bom.vcf": b"\xef\xbb\xbf" + vcf,
        "crlf.vcf": vcf.replace(b"\n", b"\r\n"),
        "plain.vcf.gz": gzip.compress(b"\xef\xbb\xbf" + vcf),
        "bgzf.vcf.gz": _bgzf(vcf, tmp_path),
    }
    for minor in range(6):
        variants[f"v4{minor}.vcf"] = vcf.replace(b"VCFv4.2", f"VCFv4.{minor}".encode(), 1)
    with stack.client() as client:
        jobs = {}
        for i, (name, payload) in enumerate(variants.items()):
            path = tmp_path / name
            path.write_bytes(payload)
            response = upload(
                client, path, patient_id="P-enc", sample_id=f"S-enc-{i}", genome_build="GRCh38"
            )
            assert response.status_code == 202, (name, response.text)
            jobs[f"S-enc-{i}"] = (name, response.json()["job_id"])
        for sample_id, (name, job_id) in jobs.items():
            assert wait_job(client, job_id)["status"] == "succeeded", name
            rows = client.get(f"/v1/samples/{sample_id}/variants").json()["items"]
            assert sorted((r["pos"], r["alt_reads"], r["depth"]) for r in rows) == [
                (152098788, 120, 2000),
                (179218303, 40, 1600),
                (179234297, 3, 1600),
            ], name


def test_upload_validation_is_problem_json(stack: Stack, public_data: Path) -> None:
    path = public_data / "vcf" / "pcgr_T001-BRCA.grch38.vcf.gz"
    with stack.client() as client:
        bad_type = upload(client, path, patient_id="P-val", sample_id="S-val", sample_type="urine")
        assert bad_type.status_code == 422
        assert bad_type.headers["content-type"].startswith("application/problem+json")
        bad_build = upload(client, path, patient_id="P-val", sample_id="S-val", genome_build="hg18")
        assert bad_build.status_code == 422
        no_file = client.post("/v1/samples", data={"patient_id": "P-val"})
        assert no_file.status_code == 422
    with stack.client(stack.key_read_only) as reader:
        assert upload(reader, path, patient_id="P-val", sample_id="S-ro").status_code == 403
        assert reader.get("/v1/jobs/does-not-exist").status_code == 404


def test_tissue_proposes_tracked_set_and_put_replaces_it(
    stack: Stack, public_data: Path, tmp_path: Path
) -> None:
    path = public_data / "vcf" / "pcgr_T001-BRCA.grch38.vcf.gz"
    # the plasma file: the same calls, other bytes (plain text), so it is a second sample
    plain = tmp_path / "pcgr_plasma.vcf"
    plain.write_bytes(gzip.decompress(path.read_bytes()))
    monitored = {"ESR1", "PIK3CA", "ERBB2", "AKT1"}
    with stack.client() as client:
        tissue = upload(
            client,
            path,
            patient_id="P-trk",
            sample_id="S-trk-tissue",
            genome_build="GRCh38",
            sample_type="tissue",
        ).json()
        assert wait_job(client, tissue["job_id"])["status"] == "succeeded"
        proposed = client.get("/v1/patients/P-trk/tracked-variants").json()["items"]
        kept = [t for t in proposed if t["kept"]]
        dropped = [t for t in proposed if not t["kept"]]
        assert 0 < len(kept) <= 16 and dropped
        assert all(t["source"] == "tissue" and t["reason"] for t in proposed)

        plasma = upload(
            client, plain, patient_id="P-trk", sample_id="S-trk-plasma", genome_build="GRCh38"
        ).json()
        assert wait_job(client, plasma["job_id"])["status"] == "succeeded"
        rows = client.get("/v1/samples/S-trk-plasma/variants").json()["items"]
        assert {t["locus_key"] for t in kept} <= {r["locus_key"] for r in rows if r["tracked"]}

        # an explicit list replaces the proposal and re-extracts the plasma sample from its file
        chosen = next(t for t in dropped if t["gene"] not in monitored)
        put = client.put(
            "/v1/patients/P-trk/tracked-variants",
            json={"variants": [{"locus_key": chosen["locus_key"], "tumor_af": 0.3}]},
        )
        assert put.status_code == 200, put.text
        assert [(t["locus_key"], t["source"]) for t in put.json()["items"]] == [
            (chosen["locus_key"], "manual")
        ]
        job_id = client.get("/v1/samples/S-trk-plasma").json()["job_id"]
        assert job_id != plasma["job_id"]
        assert wait_job(client, job_id)["status"] == "succeeded"
        after = client.get("/v1/samples/S-trk-plasma/variants").json()["items"]
    outside = {r["locus_key"] for r in after if r["gene"] not in monitored}
    assert outside == {chosen["locus_key"]}
    assert [r["tracked"] for r in after if r["locus_key"] == chosen["locus_key"]] == [True]


def test_unsorted_file_repeating_an_allele_far_apart_stores_it_once(
    stack: Stack, tmp_path: Path
) -> None:
    lines = PANEL_VCF.read_text().splitlines(keepends=True)
    header = [line for line in lines if line.startswith("#")]
    records = [line for line in lines if not line.startswith("#")]
    h1047r = next(r for r in records if "\t179234297\t" in r)  # weak_evidence, 3 of 1600 reads
    path = tmp_path / "unsorted_repeat.vcf"
    # The repeat comes after other chromosomes: past the reader's window, so the database's
    # unique allele per sample keeps the first copy, in the same transaction as the rest.
    path.write_text("".join(header + records + [h1047r.replace("weak_evidence", "PASS")]))
    with stack.client() as client:
        response = upload(
            client, path, patient_id="P-unsorted", sample_id="S-unsorted", genome_build="GRCh38"
        )
        assert response.status_code == 202, response.text
        assert wait_job(client, response.json()["job_id"])["status"] == "succeeded"
        sample = client.get("/v1/samples/S-unsorted").json()
        rows = client.get("/v1/samples/S-unsorted/variants").json()["items"]
    assert [(r["filter"], r["alt_reads"]) for r in rows if r["pos"] == 179234297] == [
        ("weak_evidence", 3)
    ]
    assert sample["variant_count"] == len(rows) == 3
