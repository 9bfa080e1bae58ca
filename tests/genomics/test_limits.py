"""Caps on what one file may ask of the service (issue 18, item 1): sample columns, line
length and record count are refused at upload, in seconds and flat memory, and again by the
reader for a file that got past the upload (a BCF, a file stored before the caps); the check
for duplicate sample names is linear."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import pysam
import pytest

from services.errors import PayloadTooLarge, VcfError
from services.genomics.sniff import UploadCheck
from services.genomics.vcf import read_vcf

HEADER = (
    "##fileformat=VCFv4.2\n"
    "##contig=<ID=chr3,length=198295559>\n"
    '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">\n'
)
FIXED = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"


def chrom_line(samples: int) -> str:
    names = "\t".join(f"S{i:07d}" for i in range(samples))
    return f"{FIXED}\tFORMAT\t{names}\n"


def feed_all(check: UploadCheck, payload: bytes, piece: int = 1 << 16) -> None:
    for i in range(0, len(payload), piece):
        check.feed(payload[i : i + piece])
    check.finish()


def test_a_million_sample_columns_are_refused_at_upload_in_seconds() -> None:
    payload = gzip.compress((HEADER + chrom_line(1_000_000)).encode(), compresslevel=6)
    check = UploadCheck("wide.vcf.gz", max_decompressed_bytes=1 << 30)
    started = time.monotonic()
    with pytest.raises(VcfError, match=r"1,000,000 sample columns.*at most 1,000") as refused:
        feed_all(check, payload)
    assert time.monotonic() - started < 5
    assert refused.value.line == 4


def test_sample_columns_up_to_the_cap_are_accepted_at_upload() -> None:
    check = UploadCheck("ok.vcf", max_decompressed_bytes=1 << 30)
    feed_all(check, (HEADER + chrom_line(1_000)).encode(), piece=997)


def test_bcf_header_columns_are_counted_at_upload(tmp_path: Path) -> None:
    header = pysam.VariantHeader()
    header.add_line("##contig=<ID=chr3,length=198295559>")
    for i in range(1_001):
        header.add_sample(f"S{i:05d}")
    path = tmp_path / "wide.bcf"
    with pysam.VariantFile(str(path), "wb", header=header):
        pass
    check = UploadCheck("wide.bcf", max_decompressed_bytes=1 << 30)
    with pytest.raises(VcfError, match="1,001 sample columns"):
        feed_all(check, path.read_bytes())


def test_duplicate_sample_names_are_found_in_linear_time(tmp_path: Path) -> None:
    # 40,000 columns took 17.6 s in the quadratic check; with a cap this wide it is the
    # duplicate that is refused, at once.
    path = tmp_path / "dup.vcf"
    line = chrom_line(40_000).rstrip("\n") + "\tS0000007\n"
    path.write_text(HEADER + line)
    started = time.monotonic()
    with pytest.raises(VcfError, match=r"duplicate sample names \['S0000007'\]"):
        read_vcf(path, display_name=path.name, sample_type="plasma", max_sample_columns=50_000)
    assert time.monotonic() - started < 2


def test_the_reader_refuses_too_many_columns_of_a_stored_file(tmp_path: Path) -> None:
    path = tmp_path / "wide.vcf"
    path.write_text(HEADER + chrom_line(1_001))
    started = time.monotonic()
    with pytest.raises(VcfError, match="1,001 sample columns") as refused:
        read_vcf(path, display_name=path.name, sample_type="plasma")
    assert time.monotonic() - started < 2
    assert refused.value.line == 4


def test_a_line_longer_than_the_cap_is_refused_at_upload() -> None:
    record = "chr3\t100\t.\tA\tC\t.\tPASS\t" + "X" * (17 * 1024**2) + "\n"
    payload = gzip.compress((HEADER + FIXED + "\n" + record).encode(), compresslevel=1)
    check = UploadCheck("long.vcf.gz", max_decompressed_bytes=1 << 30)
    with pytest.raises(VcfError, match=r"line 5 is longer than 16,777,216 bytes") as refused:
        feed_all(check, payload)
    assert refused.value.line == 5
    assert isinstance(refused.value, PayloadTooLarge)  # a 413, like the other size caps


def test_records_beyond_the_cap_are_refused_at_upload_and_by_the_reader(tmp_path: Path) -> None:
    records = "".join(f"chr3\t{100 + i}\t.\tA\tC\t.\tPASS\t.\n" for i in range(20))
    text = HEADER + FIXED + "\n" + records
    check = UploadCheck("many.vcf", max_decompressed_bytes=1 << 30, max_records=10)
    with pytest.raises(VcfError, match="more than 10 records"):
        feed_all(check, text.encode(), piece=50)
    path = tmp_path / "many.vcf"
    path.write_text(text)
    with pytest.raises(VcfError, match="more than 10 records"):
        read_vcf(path, display_name=path.name, sample_type="tissue", max_records=10)
    under = UploadCheck("many.vcf", max_decompressed_bytes=1 << 30, max_records=20)
    feed_all(under, text.encode())
