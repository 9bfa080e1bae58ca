"""A BAM posted with a plasma sample (or attached later) is the evidence at the tracked loci,
through the real path: PostgreSQL, Redis, a `ctdna worker` process and the API over HTTP.

The BAMs are built here with pysam: reads carrying the ALT or the REF base at each locus, plus
reads the pileup must not count (duplicate, secondary, low mapping quality) and a mate pair
overlapping the locus (one fragment)."""

from __future__ import annotations

import gzip
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pysam
import pytest

from tests.conftest import (
    Running,
    create_keys,
    panel_vcf,
    service_env,
    wait_job,
)

pytestmark = [pytest.mark.queue, pytest.mark.postgres]

CONTIGS = {"chr3": 198_295_559, "chr6": 170_805_979, "chr14": 107_043_718}
GRCH37_CONTIGS = {"chr3": 198_022_430, "chr6": 171_115_067, "chr14": 107_349_540}
E545K = "chr3:179218303:G>A"  # PIK3CA, PASS in panel_grch38.vcf (TUMOR 40/1600)
Y537S = "chr6:152098788:A>C"  # ESR1, PASS in panel_grch38.vcf (TUMOR 120/2000)
E17K = "chr14:104780214:C>T"  # AKT1, absent from panel_grch38.vcf
H1047R = "chr3:179234297:A>G"  # PIK3CA, weak_evidence in the VCF, not tracked
TRACKED = [E545K, Y537S, E17K]

PAIRED, PROPER, REVERSE, MATE_REVERSE, READ1, READ2 = 0x1, 0x2, 0x10, 0x20, 0x40, 0x80
SECONDARY, DUPLICATE = 0x100, 0x400
READ_LENGTH = 50


@dataclass(frozen=True)
class Read:
    locus: str
    allele: str  # "ref" | "alt"
    offset: int = 20  # where the locus falls in the read
    flag: int = 0
    mapq: int = 60
    name: str | None = None


def fragments(locus: str, *, alt: int, ref: int) -> list[Read]:
    return [Read(locus, "alt", offset=5 + i) for i in range(alt)] + [
        Read(locus, "ref", offset=5 + i) for i in range(ref)
    ]


def overlapping_pair(locus: str, allele: str, name: str) -> list[Read]:
    """Two mates that both cover the locus: one molecule."""
    first = PAIRED | PROPER | READ1 | MATE_REVERSE
    second = PAIRED | PROPER | READ2 | REVERSE
    return [
        Read(locus, allele, offset=30, flag=first, name=name),
        Read(locus, allele, offset=12, flag=second, name=name),
    ]


# Expected fragments: E545K 4 ALT of 11, Y537S 2 ALT of 12, E17K 1 ALT of 9.
READS = [
    *fragments(E545K, alt=3, ref=7),
    Read(E545K, "alt", flag=DUPLICATE),
    Read(E545K, "alt", mapq=5),
    *overlapping_pair(E545K, "alt", "pair-e545k"),
    *fragments(Y537S, alt=2, ref=10),
    Read(Y537S, "ref", flag=DUPLICATE),
    Read(Y537S, "alt", flag=SECONDARY),
    *fragments(E17K, alt=1, ref=8),
]
EXPECTED = {E545K: (4, 11), Y537S: (2, 12), E17K: (1, 9)}


def write_bam(
    folder: Path, name: str, reads: list[Read] = READS, lengths: dict[str, int] = CONTIGS
) -> tuple[Path, Path]:
    """A coordinate-sorted BAM of the reads (on GRCh38 contigs unless other `lengths` are
    given), and its BAI."""
    folder.mkdir(parents=True, exist_ok=True)
    contigs = list(lengths)
    header = pysam.AlignmentHeader.from_dict(
        {
            "HD": {"VN": "1.6", "SO": "unsorted"},
            "SQ": [{"SN": c, "LN": n} for c, n in lengths.items()],
        }
    )
    bases = random.Random(name)
    unsorted = folder / f"{name}.unsorted.bam"
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as out:
        for n, read in enumerate(reads):
            chrom, pos, change = read.locus.split(":")
            ref, alt = change.split(">")
            sequence = [bases.choice("ACGT") for _ in range(READ_LENGTH)]
            sequence[read.offset] = alt if read.allele == "alt" else ref
            segment = pysam.AlignedSegment(header)
            segment.query_name = read.name or f"read-{n}"
            segment.query_sequence = "".join(sequence)
            segment.flag = read.flag
            segment.reference_id = contigs.index(chrom)
            segment.reference_start = int(pos) - 1 - read.offset
            segment.mapping_quality = read.mapq
            segment.cigartuples = [(0, READ_LENGTH)]
            segment.query_qualities = pysam.qualitystring_to_array("I" * READ_LENGTH)
            if read.flag & PAIRED:
                segment.next_reference_id = segment.reference_id
                segment.next_reference_start = segment.reference_start
            out.write(segment)
    bam = folder / f"{name}.bam"
    pysam.sort("-o", str(bam), str(unsorted))
    pysam.index(str(bam))
    return bam, Path(f"{bam}.bai")


def write_cram(folder: Path, name: str) -> tuple[Path, Path]:
    """The same reads as a CRAM (sequences stored verbatim, so no reference is needed to
    read them back) and its CRAI."""
    bam, _ = write_bam(folder, f"{name}-source")
    cram = folder / f"{name}.cram"
    pysam.view(
        "-C", "--output-fmt-option", "no_ref=1", "-o", str(cram), str(bam), catch_stdout=False
    )
    pysam.index(str(cram))
    return cram, Path(f"{cram}.crai")


@dataclass
class Stack:
    client: httpx.Client
    other_site: httpx.Client
    data_dir: Path


@pytest.fixture(scope="module")
def stack(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("alignment")
    env = service_env(tmp, CTDNA_DATABASE_URL=pg_url, CTDNA_BROKER_URL=redis_url)
    with Running() as running:
        running.worker(env, tmp, "--concurrency", "2")
        key, other = create_keys(
            env, ("site-bam", "ingest,read,admin"), ("site-elsewhere", "ingest,read")
        )
        (base,) = running.apis(tmp, env)
        with (
            httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
            ) as client,
            httpx.Client(
                base_url=base, headers={"Authorization": f"Bearer {other}"}, timeout=60
            ) as elsewhere,
        ):
            yield Stack(client, elsewhere, tmp)


def new_patient(client: httpx.Client, patient_id: str) -> None:
    """A patient operated on 2025-01-10 who tracks the three loci."""
    assert client.post("/v1/patients", json={"patient_id": patient_id}).status_code == 201
    surgery = {"type": "surgery", "date": "2025-01-10"}
    assert client.post(f"/v1/patients/{patient_id}/events", json=surgery).status_code == 201
    body = {"variants": [{"locus_key": key} for key in TRACKED]}
    response = client.put(f"/v1/patients/{patient_id}/tracked-variants", json=body)
    assert response.status_code == 200, response.text


def post_sample(
    client: httpx.Client,
    vcf: Path,
    patient_id: str,
    sample_id: str,
    alignment: Path | None = None,
    index: Path | None = None,
) -> httpx.Response:
    data = {
        "patient_id": patient_id,
        "sample_id": sample_id,
        "collection_date": "2025-02-01",
        "sample_type": "plasma",
        "genome_build": "GRCh38",
        "create_patient": "true",
    }
    files = {"file": (vcf.name, vcf.read_bytes())}
    if alignment is not None:
        files["alignment"] = (alignment.name, alignment.read_bytes())
    if index is not None:
        files["alignment_index"] = (index.name, index.read_bytes())
    return client.post("/v1/samples", data=data, files=files)


def put_alignment(
    client: httpx.Client, sample_id: str, alignment: Path, index: Path | None
) -> httpx.Response:
    files = {"alignment": (alignment.name, alignment.read_bytes())}
    if index is not None:
        files["alignment_index"] = (index.name, index.read_bytes())
    return client.put(f"/v1/samples/{sample_id}/alignment", files=files)


def rows(client: httpx.Client, sample_id: str) -> dict[str, dict[str, object]]:
    response = client.get(f"/v1/samples/{sample_id}/variants")
    assert response.status_code == 200, response.text
    return {row["locus_key"]: row for row in response.json()["items"]}


def assert_counted(found: dict[str, dict[str, object]]) -> None:
    for key, (alt_reads, depth) in EXPECTED.items():
        row = found[key]
        assert (row["alt_reads"], row["depth"], row["evidence"]) == (alt_reads, depth, "alignment")
        assert row["vaf"] == pytest.approx(alt_reads / depth)
        assert row["detected"] is True and row["quantitative"] is True


def mrd_call(client: httpx.Client, patient_id: str, sample_id: str) -> dict[str, object]:
    body = client.get(f"/v1/patients/{patient_id}/mrd").json()
    return next(c for c in body["calls"] if c["sample_id"] == sample_id)


def uploads(data_dir: Path) -> set[str]:
    folder = data_dir / "uploads"
    return {p.name for p in folder.rglob("*") if p.is_file() and "tmp" not in p.parts}


def test_bam_counts_are_the_evidence_at_tracked_loci(stack: Stack, tmp_path: Path) -> None:
    client = stack.client
    new_patient(client, "P-BAM-1")
    bam, bai = write_bam(tmp_path, "plasma-1")
    vcf = panel_vcf(tmp_path, "bam-1")
    response = post_sample(client, vcf, "P-BAM-1", "S-BAM-1", bam, bai)
    assert response.status_code == 202, response.text
    assert wait_job(client, response.json()["job_id"])["status"] == "succeeded"

    sample = client.get("/v1/samples/S-BAM-1").json()
    assert (sample["alignment_name"], sample["alignment_format"]) == ("plasma-1.bam", "bam")
    found = rows(client, "S-BAM-1")
    assert_counted(found)
    # the VCF's row keeps its caller's filter and matched-normal counts
    assert (found[E545K]["filter"], found[E545K]["normal_depth"]) == ("PASS", 800)
    # a tracked locus the VCF did not report gets its row from the reads alone
    e17k = found[E17K]
    assert (e17k["chrom"], e17k["pos"], e17k["ref"], e17k["alt"]) == ("chr14", 104780214, "C", "T")
    assert (e17k["build"], e17k["filter"], e17k["gene"]) == ("GRCh38", "PASS", "AKT1")
    assert e17k["protein_change"] == "p.E17K" and e17k["tracked"] is True
    # an untracked row stays the caller's
    assert (found[H1047R]["alt_reads"], found[H1047R]["evidence"]) == (3, "vcf")

    call = mrd_call(client, "P-BAM-1", "S-BAM-1")
    assert call["informative_reads"] == sum(depth for _, depth in EXPECTED.values())
    assert call["loci_reported"] == len(TRACKED)


def test_cram_with_its_crai_is_counted_alike(stack: Stack, tmp_path: Path) -> None:
    client = stack.client
    new_patient(client, "P-CRAM-1")
    cram, crai = write_cram(tmp_path, "plasma-cram")
    vcf = panel_vcf(tmp_path, "cram-1")
    response = post_sample(client, vcf, "P-CRAM-1", "S-CRAM-1", cram, crai)
    assert response.status_code == 202, response.text
    assert wait_job(client, response.json()["job_id"])["status"] == "succeeded"
    sample = client.get("/v1/samples/S-CRAM-1").json()
    assert (sample["alignment_name"], sample["alignment_format"]) == ("plasma-cram.cram", "cram")
    assert_counted(rows(client, "S-CRAM-1"))


def test_put_alignment_re_extracts_a_posted_sample(stack: Stack, tmp_path: Path) -> None:
    client = stack.client
    new_patient(client, "P-BAM-2")
    vcf = panel_vcf(tmp_path, "bam-2")
    first = post_sample(client, vcf, "P-BAM-2", "S-BAM-2")
    assert first.status_code == 202, first.text
    assert wait_job(client, first.json()["job_id"])["status"] == "succeeded"
    before = rows(client, "S-BAM-2")
    assert (before[E545K]["alt_reads"], before[E545K]["depth"]) == (40, 1600)
    assert before[E545K]["evidence"] == "vcf" and E17K not in before
    issued = mrd_call(client, "P-BAM-2", "S-BAM-2")

    bam, bai = write_bam(tmp_path, "plasma-2")
    attached = put_alignment(client, "S-BAM-2", bam, bai)
    assert attached.status_code == 202, attached.text
    job_id = attached.json()["job_id"]
    assert attached.json()["sample_id"] == "S-BAM-2" and job_id != first.json()["job_id"]
    assert wait_job(client, job_id)["status"] == "succeeded"
    assert_counted(rows(client, "S-BAM-2"))
    # The call had been issued (indeterminate: a site this small has too little background to
    # call on) and its value does not change with the counted reads: it stands as issued,
    # numbers included, not amended (services/analysis/amendments.py). The draw's tumour
    # fraction on /trends is the one the call issued (one figure per draw); its variant
    # points follow the counted reads.
    call = mrd_call(client, "P-BAM-2", "S-BAM-2")
    assert call["call"] == issued["call"] == "INDETERMINATE"
    assert (call["informative_reads"], call["amendments"]) == (issued["informative_reads"], [])
    trends = client.get("/v1/patients/P-BAM-2/trends").json()
    (point,) = [s for s in trends["samples"] if s["sample_id"] == "S-BAM-2"]
    assert point["informative_reads"] == issued["informative_reads"]
    assert point["tumor_fraction"] == issued["tumor_fraction"]
    counted = {
        (variant["locus_key"], p["alt_reads"], p["depth"])
        for variant in trends["variants"]
        for p in variant["points"]
        if p["sample_id"] == "S-BAM-2"
    }
    assert {(key, *reads) for key, reads in EXPECTED.items()} <= counted

    again = put_alignment(client, "S-BAM-2", bam, bai)  # a retry queues nothing
    assert (again.status_code, again.json()["job_id"]) == (200, job_id)


def test_same_vcf_with_a_new_alignment_attaches_it(stack: Stack, tmp_path: Path) -> None:
    client = stack.client
    new_patient(client, "P-BAM-3")
    vcf = panel_vcf(tmp_path, "bam-3")
    first = post_sample(client, vcf, "P-BAM-3", "S-BAM-3")
    assert first.status_code == 202
    job_id = first.json()["job_id"]
    assert wait_job(client, job_id)["status"] == "succeeded"
    retry = post_sample(client, vcf, "P-BAM-3", "S-BAM-3")
    assert (retry.status_code, retry.json()["job_id"]) == (200, job_id)

    bam, bai = write_bam(tmp_path, "plasma-3")
    with_bam = post_sample(client, vcf, "P-BAM-3", "S-BAM-3", bam, bai)
    assert with_bam.status_code == 202, with_bam.text
    assert with_bam.json()["sample_id"] == "S-BAM-3" and with_bam.json()["job_id"] != job_id
    assert wait_job(client, with_bam.json()["job_id"])["status"] == "succeeded"
    assert_counted(rows(client, "S-BAM-3"))
    retry = post_sample(client, vcf, "P-BAM-3", "S-BAM-3", bam, bai)
    assert (retry.status_code, retry.json()) == (200, with_bam.json())


def test_refused_alignments_keep_nothing(stack: Stack, tmp_path: Path) -> None:
    client = stack.client
    new_patient(client, "P-BAM-4")
    bam, bai = write_bam(tmp_path, "plasma-4")
    vcf = panel_vcf(tmp_path, "bam-4")
    pdf = tmp_path / "report.bam"
    pdf.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8)
    crai = tmp_path / "plasma-4.bam.crai"
    crai.write_bytes(gzip.compress(b"0\t1\t50\t100\t0\t200\n"))  # a CRAM's index
    grch37, grch37_bai = write_bam(tmp_path, "plasma-4-grch37", lengths=GRCH37_CONTIGS)
    stored = uploads(stack.data_dir)
    refused = [
        (post_sample(client, vcf, "P-BAM-4", "S-BAM-4", pdf, bai), "report.bam", "a PDF"),
        (post_sample(client, vcf, "P-BAM-4", "S-BAM-4", vcf, bai), vcf.name, "variant calls"),
        (post_sample(client, vcf, "P-BAM-4", "S-BAM-4", bam, bam), "plasma-4.bam", "a BAM"),
        (post_sample(client, vcf, "P-BAM-4", "S-BAM-4", bam), "alignment_index", "required"),
        (post_sample(client, vcf, "P-BAM-4", "S-BAM-4", bam, crai), "crai", "does not fit"),
        (post_sample(client, vcf, "P-BAM-4", "S-BAM-4", grch37, grch37_bai), "grch37", "GRCh37"),
    ]
    for response, named, reason in refused:
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert named in response.json()["detail"] and reason in response.json()["detail"]
    assert uploads(stack.data_dir) == stored  # neither the VCF nor the alignment was kept
    assert client.get("/v1/samples/S-BAM-4").status_code == 404

    accepted = post_sample(client, vcf, "P-BAM-4", "S-BAM-4")
    assert wait_job(client, accepted.json()["job_id"])["status"] == "succeeded"
    stored = uploads(stack.data_dir)
    for response in (
        put_alignment(client, "S-BAM-4", pdf, bai),
        put_alignment(client, "S-BAM-4", bam, None),
    ):
        assert response.status_code == 422, response.text
    assert uploads(stack.data_dir) == stored
    assert client.get("/v1/samples/S-BAM-4").json()["alignment_name"] is None


def corrupt(bam: Path) -> Path:
    """The same BAM with its first block of reads scrambled: the header (its own BGZF block)
    still says BAM, so only reading the reads finds out."""
    data = bytearray(bam.read_bytes())
    header_block = struct.unpack("<H", data[16:18])[0] + 1
    for i in range(header_block + 30, header_block + 200):
        data[i] ^= 0x5A
    path = bam.with_name(f"corrupt-{bam.name}")
    path.write_bytes(bytes(data))
    return path


def test_unreadable_alignment_fails_the_job_naming_it(stack: Stack, tmp_path: Path) -> None:
    client = stack.client
    new_patient(client, "P-BAM-5")
    bam, bai = write_bam(tmp_path, "plasma-5")
    not_an_index = tmp_path / "junk.bam.bai"
    not_an_index.write_bytes(b"BAI\x01" + bytes(range(256)) * 4)  # the magic, then junk
    unindexed = post_sample(
        client, panel_vcf(tmp_path, "bam-5a"), "P-BAM-5", "S-BAM-5A", bam, not_an_index
    )
    assert unindexed.status_code == 202, unindexed.text
    job = wait_job(client, unindexed.json()["job_id"])
    assert job["status"] == "failed" and "plasma-5.bam" in str(job["error"]), job
    assert "index" in str(job["error"]), job

    broken = corrupt(bam)
    corrupted = post_sample(
        client, panel_vcf(tmp_path, "bam-5b"), "P-BAM-5", "S-BAM-5B", broken, bai
    )
    job = wait_job(client, corrupted.json()["job_id"])
    assert job["status"] == "failed" and "corrupt-plasma-5.bam" in str(job["error"]), job
    assert client.get("/v1/samples/S-BAM-5B").json()["status"] == "failed"

    # the sample is not lost: a readable alignment re-extracts it
    fixed = put_alignment(client, "S-BAM-5B", bam, bai)
    assert fixed.status_code == 202, fixed.text
    job = wait_job(client, fixed.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert client.get("/v1/samples/S-BAM-5B").json()["status"] == "processed"
    assert_counted(rows(client, "S-BAM-5B"))


def test_another_sites_sample_is_not_found(stack: Stack, tmp_path: Path) -> None:
    client = stack.client
    new_patient(client, "P-BAM-6")
    accepted = post_sample(client, panel_vcf(tmp_path, "bam-6"), "P-BAM-6", "S-BAM-6")
    assert wait_job(client, accepted.json()["job_id"])["status"] == "succeeded"
    bam, bai = write_bam(tmp_path, "plasma-6")
    response = put_alignment(stack.other_site, "S-BAM-6", bam, bai)
    assert response.status_code == 404, response.text
    assert stack.other_site.get("/v1/samples/S-BAM-6").status_code == 404
    assert client.get("/v1/samples/S-BAM-6").json()["alignment_name"] is None


def test_a_newly_tracked_locus_is_counted_in_the_kept_alignment(
    stack: Stack, tmp_path: Path
) -> None:
    client = stack.client
    assert client.post("/v1/patients", json={"patient_id": "P-BAM-8"}).status_code == 201
    track = {"variants": [{"locus_key": E545K}]}
    assert client.put("/v1/patients/P-BAM-8/tracked-variants", json=track).status_code == 200
    bam, bai = write_bam(tmp_path, "plasma-8")
    response = post_sample(client, panel_vcf(tmp_path, "bam-8"), "P-BAM-8", "S-BAM-8", bam, bai)
    assert wait_job(client, response.json()["job_id"])["status"] == "succeeded"
    found = rows(client, "S-BAM-8")
    assert (found[E545K]["alt_reads"], found[E545K]["evidence"]) == (4, "alignment")
    # untracked: the monitored-gene row stays the caller's, and nothing is made up for E17K
    assert (found[Y537S]["alt_reads"], found[Y537S]["evidence"]) == (120, "vcf")
    assert E17K not in found

    track = {"variants": [{"locus_key": key} for key in TRACKED]}
    assert client.put("/v1/patients/P-BAM-8/tracked-variants", json=track).status_code == 200
    job_id = client.get("/v1/samples/S-BAM-8").json()["job_id"]
    assert job_id != response.json()["job_id"]
    assert wait_job(client, job_id)["status"] == "succeeded"
    assert_counted(rows(client, "S-BAM-8"))


def test_alignment_uploads_get_the_upload_size_cap_and_bucket() -> None:
    # A BAM is far larger than the 1 MiB allowed to other request bodies.
    from services.api.middleware import is_upload

    assert is_upload("POST", "/v1/samples") and is_upload("PUT", "/v1/samples/S-1/alignment")
    assert not is_upload("PUT", "/v1/samples/S-1") and not is_upload("GET", "/v1/samples/S-1")
    assert not is_upload("POST", "/v1/patients/P/events")
