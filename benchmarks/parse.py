"""(1) Parse speed: read_vcf of a large VCF.gz as plasma (the production path of serial
samples) against `bcftools view -T targets.bed` streaming the same file, in the same run."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pysam

from benchmarks import vcfgen
from services.genomics.types import Locus
from services.genomics.vcf import read_vcf

# A tumour-informed patient tracks about 16 loci; their windows are fetched too.
TRACKED = frozenset(
    Locus.parse(k)
    for k in (
        "chr1:12345678:C>T", "chr2:45678901:G>A", "chr4:98765432:A>G", "chr5:1234567:T>C",
        "chr7:55191822:T>G", "chr8:38411148:C>A", "chr9:21971120:G>T", "chr10:87957915:C>T",
        "chr11:69641156:A>C", "chr12:25245350:C>T", "chr13:32338112:T>A", "chr16:68737292:G>A",
        "chr17:7675088:C>T", "chr18:51065500:G>C", "chr19:1220411:A>G", "chr20:53569342:C>G",
    )
)  # fmt: skip


def large_vcf(cache_dir: Path, records: int) -> Path:
    """The benchmark's large file, written once per size into the cache directory."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"bench-{records}.vcf.gz"
    if not path.exists():
        vcfgen.write_large_vcf(path, records)
    return path


def _bcftools(path: Path, bed: Path) -> tuple[float, int, str]:
    binary = shutil.which("bcftools")
    start = time.perf_counter()
    if binary:
        out = subprocess.run(
            [binary, "view", "-H", "-T", str(bed), str(path)],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        how = "bcftools binary"
    else:
        out = str(pysam.bcftools.view("-H", "-T", str(bed), str(path))).encode()
        how = "pysam.bcftools (in-process)"
    return time.perf_counter() - start, out.count(b"\n"), how


def _read(path: Path) -> tuple[float, int, int]:
    start = time.perf_counter()
    result = read_vcf(path, display_name=path.name, sample_type="plasma", tracked=TRACKED)
    return time.perf_counter() - start, len(result.variants), result.records_read


def _index_only(path: Path) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        pysam.tabix_index(str(path), preset="vcf", index=f"{tmp}/x.tbi", force=True)
        return time.perf_counter() - start


def run(cache_dir: Path, records: int, repeats: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    path = large_vcf(cache_dir, records)
    generated_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        bed = vcfgen.targets_bed(Path(tmp) / "targets.bed")
        bcf_times, read_times, index_times = [], [], []
        bcf_records = variants = records_read = 0
        how = ""
        # Interleaved, so that a noisy neighbour or a cold page cache hurts both alike.
        for _ in range(repeats):
            seconds, bcf_records, how = _bcftools(path, bed)
            bcf_times.append(seconds)
            seconds, variants, records_read = _read(path)
            read_times.append(seconds)
            index_times.append(_index_only(path))
    bcf = statistics.median(bcf_times)
    ours = statistics.median(read_times)
    return {
        "file": str(path),
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "records": records,
        "generated_s": round(generated_s, 2),
        "repeats": repeats,
        "bcftools": how,
        "bcftools_s": round(bcf, 3),
        "bcftools_records_out": bcf_records,
        "read_vcf_plasma_s": round(ours, 3),
        "read_vcf_variants": variants,
        "read_vcf_records_read": records_read,
        "tabix_index_s": round(statistics.median(index_times), 3),
        "ratio": round(ours / bcf, 2),
        "all_bcftools_s": [round(t, 3) for t in bcf_times],
        "all_read_vcf_s": [round(t, 3) for t in read_times],
    }
