"""Reading VCFs: caller dialects, sample columns, scope, normalisation, and bad input."""

from __future__ import annotations

import dataclasses
import gzip
import re
import shutil
import tempfile
from pathlib import Path

import pysam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.errors import GenomeBuildError, InvalidInput, VcfError
from services.genomics.build import grch38_locus
from services.genomics.sniff import UTF8_BOM, InflatesTooFar, UploadCheck
from services.genomics.types import Locus, SampleType, VariantCall, VcfReadResult
from services.genomics.vcf import open_vcf, read_vcf

# Real caller outputs and malformed files from public test suites (PROVENANCE.md there).
PUBLIC = Path(__file__).resolve().parents[1] / "data" / "public"
VCF = PUBLIC / "vcf"
MALFORMED = PUBLIC / "malformed"
LOCAL = Path(__file__).resolve().parents[1] / "data" / "vcf"
PANEL = LOCAL / "panel_grch38.vcf"
_PANEL_BYTES = PANEL.read_bytes()


def read(path: Path, sample_type: SampleType = "plasma", **kwargs: object) -> VcfReadResult:
    return read_vcf(path, display_name=path.name, sample_type=sample_type, **kwargs)  # type: ignore[arg-type]


def by_key(result: VcfReadResult) -> dict[str, VariantCall]:
    return {f"{v.chrom}:{v.pos}:{v.ref}>{v.alt}": v for v in result.variants}


def essentials(result: VcfReadResult) -> list[VariantCall]:
    """The calls without their line numbers, which only a streamed text read can know."""
    return [dataclasses.replace(v, line=None) for v in result.variants]


# --- acceptance: real caller outputs ----------------------------------------------------------


def test_pcgr_plasma_yields_pik3ca_h1047r_from_adt_dpt() -> None:
    result = read(VCF / "pcgr_T001-BRCA.grch38.vcf.gz", genome_build="GRCh38")
    assert result.build == "GRCh38" and result.build_source == "given"
    [call] = result.variants
    assert (call.chrom, call.pos, call.ref, call.alt) == ("3", 179234297, "A", "G")
    assert (call.gene, call.protein_change, call.hotspot) == ("PIK3CA", "p.H1047R", True)
    assert (call.alt_reads, call.depth, call.counts_source) == (31, 74, "ADT/DPT")
    assert call.vaf == pytest.approx(31 / 74)
    assert call.locus is not None and call.locus.key == "chr3:179234297:A>G"
    assert call.passed and call.quantitative and call.in_monitored_gene
    # PCGR keeps the control's depth in the same column (DPC); its ADC is ".,.".
    assert (call.normal_alt_reads, call.normal_depth) == (None, 142)


def test_pcgr_tissue_adds_every_other_pass_variant() -> None:
    plasma = read(VCF / "pcgr_T001-BRCA.grch38.vcf.gz", genome_build="GRCh38")
    tissue = read(VCF / "pcgr_T001-BRCA.grch38.vcf.gz", "tissue", genome_build="GRCh38")
    assert tissue.records_read == 196 and len(tissue.variants) == 196
    assert all(v.passed and v.quantitative for v in tissue.variants)
    assert set(essentials(plasma)) < set(essentials(tissue))
    first = tissue.variants[0]  # 1 1968826 C>T ... ADT 112,32 DPT 144
    assert (first.pos, first.alt_reads, first.depth, first.in_monitored_gene) == (
        1968826,
        32,
        144,
        False,
    )


def test_mutect1_reads_tumor_column_by_name_and_ad_before_fa() -> None:
    # 1 2453125 C>G REJECT; NORMAL 0/1:160,31:13:192:0.162  TUMOR 0:175,30:.:206:0.146
    locus = grch38_locus("chr1", 2453125, "C", "G", "GRCh37")
    assert locus is not None
    result = read(VCF / "vcf2maf_test_mutect.vcf", tracked=frozenset({locus}))
    assert (result.build, result.build_source) == ("GRCh37", "contig_lengths")
    assert (result.tumor_sample, result.normal_sample) == ("TUMOR", "NORMAL")
    [call] = result.variants
    assert (call.alt_reads, call.depth, call.counts_source) == (30, 205, "AD")
    assert (call.normal_alt_reads, call.normal_depth) == (31, 191)
    assert (call.filter, call.passed, call.tracked, call.locus) == ("REJECT", False, True, locus)


def test_strelka_tier1_counts_for_snvs_and_indels() -> None:
    result = read(VCF / "vcf2maf_test_strelka.vcf", "tissue", genome_build="GRCh37")
    assert (result.tumor_sample, result.normal_sample) == ("TUMOR", "NORMAL")
    calls = by_key(result)
    # 1 12170228 C>T  NORMAL CU 76,77  TUMOR TU 57,57 (every other tier-1 count 0)
    snv = calls["1:12170228:C>T"]
    assert (snv.alt_reads, snv.depth, snv.counts_source) == (57, 57, "strelka_tier1")
    assert (snv.normal_alt_reads, snv.normal_depth) == (0, 76)
    # 1 35944648 G>A  TUMOR AU 56,57 GU 2,2
    assert (calls["1:35944648:G>A"].alt_reads, calls["1:35944648:G>A"].depth) == (56, 58)
    # 2 102626146 CG>C  NORMAL TAR 87,89 TIR 0,0  TUMOR TAR 19,19 TIR 57,58
    indel = calls["2:102626146:CG>C"]
    assert (indel.alt_reads, indel.depth, indel.counts_source) == (57, 76, "strelka_indel_tier1")
    assert (indel.normal_alt_reads, indel.normal_depth) == (0, 87)
    assert all(v.quantitative for v in result.variants)


def test_varscan_alt_only_ad_with_rd() -> None:
    result = read(VCF / "vcf2maf_test_varscan.vcf", "tissue", genome_build="GRCh37")
    assert (result.tumor_sample, result.normal_sample) == ("TUMOR", "NORMAL")
    # 1 1991014 A>G  NORMAL RD 59 AD 56 FREQ 48.7%  TUMOR RD 56 AD 35 FREQ 38.46%
    call = by_key(result)["1:1991014:A>G"]
    assert (call.alt_reads, call.depth, call.counts_source) == (35, 91, "AD+RD")
    assert call.vaf == pytest.approx(0.3846, abs=1e-4)
    assert (call.normal_alt_reads, call.normal_depth) == (56, 115)


def test_vardict_paired_tumor_is_the_first_column() -> None:
    result = read(VCF / "vardictjava_paired.cut100.vcf", "tissue", genome_build="GRCh37")
    assert (result.tumor_sample, result.normal_sample) == ("abc", "abc-match")
    # 20 76771 C>T StrongLOH: abc DP 582 VD 0 AD 582,0; abc-match DP 275 VD 136 AD 139,136
    call = by_key(result)["20:76771:C>T"]
    assert (call.alt_reads, call.depth, call.normal_alt_reads, call.normal_depth) == (
        0,
        582,
        136,
        275,
    )


# --- scope: genes, tracked loci, tissue PASS ---------------------------------------------------


def test_a_locus_outside_the_genes_is_kept_only_when_tracked() -> None:
    outside = Locus("chr12", 25245350, "C", "T")
    untracked = by_key(read(PANEL))
    assert "chr12:25245350:C>T" not in untracked
    assert set(untracked) == {"chr3:179218303:G>A", "chr3:179234297:A>G", "chr6:152098788:A>C"}
    assert untracked["chr3:179234297:A>G"].filter == "weak_evidence"  # any FILTER in a gene
    tracked = by_key(read(PANEL, tracked=frozenset({outside})))
    call = tracked["chr12:25245350:C>T"]
    assert call.tracked and not call.in_monitored_gene and call.gene is None
    assert (call.alt_reads, call.depth, call.normal_alt_reads, call.normal_depth) == (
        50,
        1200,
        0,
        600,
    )
    assert not any(v.tracked for k, v in tracked.items() if k != "chr12:25245350:C>T")


def test_tissue_keeps_pass_outside_genes_but_not_failed_calls() -> None:
    calls = by_key(read(PANEL, "tissue"))
    assert "chr12:25245350:C>T" in calls  # PASS, outside the genes
    assert "chr17:7674220:C>T" not in calls and "chr1:1000000:A>G" not in calls


def test_grch37_sample_keys_match_grch38_and_accessions_tell_the_build() -> None:
    result = read(LOCAL / "refseq_accessions_grch37.vcf")
    assert (result.build, result.build_source) == ("GRCh37", "contig_accessions")
    keys = {v.locus.key for v in result.variants if v.locus is not None}
    assert keys == {"chr3:179234297:A>G", "chr14:104780214:C>T"}
    assert {v.protein_change for v in result.variants} == {"p.H1047R", "p.E17K"}
    tracked = frozenset({Locus.parse("chr14:104780214:C>T")})
    assert [
        v.tracked for v in read(LOCAL / "refseq_accessions_grch37.vcf", tracked=tracked).variants
    ] == [False, True]


# --- one edge case per file ------------------------------------------------------------------


def test_multiallelic_split_and_star_and_symbolic_skipped() -> None:
    result = read(LOCAL / "multiallelic_star_symbolic.vcf")
    assert result.alleles_skipped == 2
    assert [(v.alt, v.alt_reads, v.depth, v.protein_change) for v in result.variants] == [
        ("G", 40, 958, "p.H1047R"),
        ("T", 10, 958, "p.H1047L"),
    ]


def test_shared_bases_are_trimmed_and_position_moves() -> None:
    calls = by_key(read(LOCAL / "shared_bases.vcf"))
    assert calls["chr6:152098788:A>C"].protein_change == "p.Y537S"  # written TAC>TCC at ...787
    assert "chr6:152000000:GA>G" in calls  # written GAAC>GAC


def test_indels_left_aligned_with_a_reference(tmp_path: Path) -> None:
    fasta = tmp_path / "ref.fa"
    shutil.copy(LOCAL / "tiny_reference.fa", fasta)  # pysam writes the .fai next to it
    source = LOCAL / "right_shifted_indels.vcf"
    without = read(source, "tissue", genome_build="GRCh38")
    assert [(v.pos, v.ref, v.alt) for v in without.variants] == [(10, "AA", "A"), (11, "A", "AA")]
    tracked = frozenset({Locus("chr1", 4, "CA", "C")})
    result = read(source, "tissue", genome_build="GRCh38", reference_fasta=fasta, tracked=tracked)
    assert [(v.pos, v.ref, v.alt, v.tracked) for v in result.variants] == [
        (4, "CA", "C", True),
        (4, "C", "CA", False),
    ]


def test_mutect2_header_names_the_columns() -> None:
    result = read(LOCAL / "mutect2_named_columns.vcf")
    assert (result.tumor_sample, result.normal_sample) == ("P01-cfDNA-T2", "P01-buffy")
    [call] = result.variants
    assert (call.alt_reads, call.depth, call.normal_alt_reads, call.normal_depth) == (
        30,
        3000,
        1,
        701,
    )
    assert call.protein_change == "p.E17K"


def test_explicit_columns_win_and_unknown_columns_fail() -> None:
    swapped = read(
        LOCAL / "mutect2_named_columns.vcf", tumor_sample="P01-buffy", normal_sample="P01-cfDNA-T2"
    )
    assert (swapped.variants[0].alt_reads, swapped.variants[0].normal_alt_reads) == (1, 30)
    with pytest.raises(VcfError, match="tumor_sample 'nope' is not a sample column"):
        read(LOCAL / "mutect2_named_columns.vcf", tumor_sample="nope")


def test_ambiguous_multi_sample_file_names_its_columns() -> None:
    with pytest.raises(VcfError, match=r"\(a, b\); pass tumor_sample") as caught:
        read(MALFORMED / "bcftools_stats.vaf.vcf")
    assert "bcftools_stats.vaf.vcf" in str(caught.value)
    result = read(
        MALFORMED / "bcftools_stats.vaf.vcf", "tissue", tumor_sample="a", genome_build="GRCh38"
    )
    # chr1 603697 C>A,T  a: 0/1:0,1,0
    calls = by_key(result)
    assert (calls["chr1:603697:C>A"].alt_reads, calls["chr1:603697:C>A"].depth) == (1, 1)
    assert (calls["chr1:603697:C>T"].alt_reads, calls["chr1:603697:C>T"].depth) == (0, 1)


def test_sites_only_and_genotype_only_are_kept_but_not_quantitative() -> None:
    sites = read(LOCAL / "sites_only_info_af.vcf")
    assert sites.tumor_sample is None
    [site] = sites.variants
    assert (site.quantitative, site.alt_reads, site.depth, site.vaf) == (False, None, None, 0.012)
    [genotyped] = read(LOCAL / "genotype_only.vcf").variants
    assert not genotyped.quantitative and genotyped.protein_change == "p.L755S"
    assert genotyped.filter == "." and genotyped.passed


def test_undeclared_format_field_is_still_read() -> None:
    [call] = read(LOCAL / "undeclared_format_ad.vcf").variants
    assert (call.alt_reads, call.depth) == (30, 1000)


def test_the_same_allele_twice_is_stored_once_preferring_pass() -> None:
    result = read(LOCAL / "duplicate_allele.vcf")
    assert [(v.alt, v.filter, v.alt_reads, v.depth) for v in result.variants] == [
        ("A", "PASS", 100, 2000),
        ("T", "PASS", 0, 2000),
    ]


def test_header_only_file_is_valid_and_empty() -> None:
    result = read(LOCAL / "header_only.vcf")
    assert result.variants == () and result.records_read == 0
    assert result.build_source == "undetermined" and result.tumor_sample is None
    empty = read(MALFORMED / "bcftools_empty.vcf")  # three samples, ##reference=..._v37
    assert (empty.variants, empty.build) == ((), "GRCh37")


# --- storage formats --------------------------------------------------------------------------


def _bgzip(source: Path, target: Path) -> Path:
    pysam.tabix_compress(str(source), str(target), force=True)
    return target


def test_bgzf_input_is_read_by_region_and_agrees_with_streaming(tmp_path: Path) -> None:
    compressed = _bgzip(PANEL, tmp_path / "panel.vcf.gz")
    tracked = frozenset({Locus("chr12", 25245350, "C", "T")})
    indexed = read(compressed, tracked=tracked)
    streamed = read(PANEL, tracked=tracked)
    assert indexed.scan == "indexed" and streamed.scan == "full"
    assert essentials(indexed) == essentials(streamed)
    assert list(tmp_path.iterdir()) == [compressed]  # the index went to a temporary directory


def test_bcf_input(tmp_path: Path) -> None:
    bcf = tmp_path / "panel.bcf"
    with (
        pysam.VariantFile(str(PANEL)) as source,
        pysam.VariantFile(str(bcf), "wb", header=source.header) as sink,
    ):
        for record in source:
            sink.write(record)
    sample_types: tuple[SampleType, ...] = ("plasma", "tissue")
    for sample_type in sample_types:
        assert essentials(read(bcf, sample_type)) == essentials(read(PANEL, sample_type))
    assert read(bcf).scan == "indexed"


def test_plain_gzip_is_inflated_and_read(tmp_path: Path) -> None:
    plain = tmp_path / "panel.vcf.gz"
    plain.write_bytes(gzip.compress(PANEL.read_bytes()))
    result = read(plain)
    assert essentials(result) == essentials(read(PANEL))
    assert [v.line for v in result.variants] == [v.line for v in read(PANEL).variants]


def test_htsjdk_plain_gzip_is_read() -> None:
    source = MALFORMED / "htsjdk_test_plain_gzip_not_bgzf.vcf.gz"
    # Its ##contig says chr20 is 62435964 bp long: NCBI36, neither supported build.
    with pytest.raises(GenomeBuildError, match="neither GRCh37 nor GRCh38"):
        read(source, "tissue", tumor_sample="NA00001")
    result = read(source, "tissue", tumor_sample="NA00001", genome_build="GRCh37")
    assert result.records_read > 0
    assert "20:14370:G>A" in by_key(result)


def test_truncated_bgzf_and_gzip_fail_cleanly(tmp_path: Path) -> None:
    data = _bgzip(PANEL, tmp_path / "whole.vcf.gz").read_bytes()
    for name, payload in [
        ("cut.vcf.gz", data[: len(data) // 2]),
        ("cut-plain.vcf.gz", gzip.compress(PANEL.read_bytes())[:300]),
    ]:
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(VcfError, match="trunc") as caught:
            read(tmp_path / name)
        assert name in str(caught.value)


# --- bad input --------------------------------------------------------------------------------


def test_zero_byte_file() -> None:
    with pytest.raises(VcfError, match="empty"):
        read(MALFORMED / "cyvcf2_empty.vcf")


def test_not_a_vcf() -> None:
    with pytest.raises(VcfError, match="not a VCF") as caught:
        read(MALFORMED / "htsjdk_corrupt_file_that_starts_with_H.vcf")
    assert caught.value.line == 1


def test_binary_blob(tmp_path: Path) -> None:
    blob = tmp_path / "blob.vcf"
    blob.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(VcfError, match="not a VCF"):
        read(blob)


def test_vcf_3_is_unsupported() -> None:
    with pytest.raises(VcfError, match="unsupported VCF version 3.3"):
        read(LOCAL / "vcf_version_3_3.vcf")


def test_invalid_header_names_the_line() -> None:
    with pytest.raises(VcfError, match="empty sample name") as caught:
        read(MALFORMED / "cyvcf2_test-invalid-header.vcf")
    assert caught.value.line == 2


def test_bad_record_reports_its_line() -> None:
    with pytest.raises(VcfError, match="POS is not a positive integer") as caught:
        read(LOCAL / "bad_pos_line.vcf", "tissue")
    assert caught.value.line == 7 and "bad_pos_line.vcf, line 7" in str(caught.value)


def test_bad_info_definition_is_not_read_so_does_not_fail() -> None:
    # bcftools_norm.vcf declares INFO fields Number=G; htslib fails only when such a field is
    # decoded, and the reader decodes only the annotation keys it knows.
    result = read(
        MALFORMED / "bcftools_norm.vcf", "tissue", tumor_sample="XY00002", genome_build="GRCh37"
    )
    assert result.records_read > 3 and all(v.line is not None for v in result.variants)


def test_missing_values_everywhere() -> None:
    result = read(MALFORMED / "bcftools_missing.vcf", "tissue", tumor_sample="A")
    assert result.build == "GRCh37" and result.variants
    assert not any(v.quantitative for v in result.variants)


def test_format_column_missing() -> None:
    result = read(
        MALFORMED / "htslib_formatmissing.vcf", "tissue", tumor_sample="S1", genome_build="GRCh38"
    )
    [call] = result.variants
    assert (call.pos, call.ref, call.alt, call.quantitative) == (100, "A", "T", False)


def test_undeclared_contigs() -> None:
    result = read(
        MALFORMED / "cyvcf2_no-seq-names.vcf",
        "tissue",
        tumor_sample="sample1",
        genome_build="GRCh37",
    )
    assert [(v.chrom, v.pos) for v in result.variants] == [("3", 81262)]


def test_spanning_deletions_and_symbolic_alleles_are_counted() -> None:
    merged = read(MALFORMED / "bcftools_merge.5.a.vcf", "tissue")
    assert merged.alleles_skipped == 2
    symbolic = read(MALFORMED / "bcftools_norm.symbolic.vcf", "tissue", genome_build="GRCh38")
    assert symbolic.alleles_skipped == sum(
        1
        for line in (MALFORMED / "bcftools_norm.symbolic.vcf").read_text().splitlines()
        if not line.startswith("#") and "<DEL>" in line
    )


def _outcome(path: Path, sample_type: SampleType, **kwargs: object) -> tuple[str, str]:
    """What the service does with a file: ("upload", detail) for a 4xx at upload,
    ("failed", detail) for a failed job, ("processed", "") when it is read."""
    check = UploadCheck(path.name, max_decompressed_bytes=64 * 1024**2)
    try:
        check.feed(path.read_bytes())
        check.finish()
    except InvalidInput as refused:
        assert path.name in refused.detail
        return "upload", refused.detail
    try:
        read(path, sample_type, **kwargs)
    except VcfError as error:
        assert path.name in error.detail
        return "failed", error.detail
    return "processed", ""


# Every file of tests/data/public/malformed, its outcome and the words that say why. A failed
# job's reason is one a lab can act on (pass tumor_sample / genome_build, fix the header).
MALFORMED_OUTCOMES: dict[str, tuple[str, str]] = {
    "bcftools_empty.vcf": ("processed", ""),
    "bcftools_fill-tags-VAF.vcf": ("processed", ""),
    "bcftools_merge.5.a.vcf": ("processed", ""),
    "bcftools_missing.vcf": ("failed", "(A, B, C); pass tumor_sample"),
    "bcftools_norm.symbolic.vcf": ("failed", "matches neither GRCh37 nor GRCh38"),
    "bcftools_norm.vcf": ("failed", "(XY00001, XY00002); pass tumor_sample"),
    "bcftools_stats.vaf.vcf": ("failed", "(a, b); pass tumor_sample"),
    "cyvcf2_empty.vcf": ("upload", "the file is empty"),
    "cyvcf2_no-seq-names.vcf": ("failed", "pass tumor_sample"),
    "cyvcf2_test-invalid-header.vcf": ("failed", "line 2: empty sample name"),
    "htsjdk_corrupt_file_that_starts_with_H.vcf": ("upload", "not a VCF or BCF file"),
    "htsjdk_test_plain_gzip_not_bgzf.vcf.gz": ("failed", "pass tumor_sample"),
    "htslib_formatmissing.vcf": ("failed", "pass tumor_sample"),
}


@pytest.mark.parametrize("path", sorted(MALFORMED.iterdir()), ids=lambda p: p.name)
@pytest.mark.parametrize("sample_type", ["plasma", "tissue"])
def test_every_malformed_file_gets_one_of_the_three_outcomes(
    path: Path, sample_type: SampleType
) -> None:
    kind, detail = _outcome(path, sample_type)
    assert kind in ("upload", "failed", "processed")
    expected = MALFORMED_OUTCOMES.get(path.name)
    if expected is not None:  # a file added to the folder still gets the generic check
        assert (kind, expected[1] in detail) == (expected[0], True), detail


def test_malformed_files_are_read_once_the_lab_says_what_is_missing() -> None:
    """The failed jobs above ask for a form field; with it, each file is processed."""
    given: dict[str, dict[str, object]] = {
        "bcftools_missing.vcf": {"tumor_sample": "A"},
        "bcftools_norm.symbolic.vcf": {"genome_build": "GRCh38"},
        "bcftools_norm.vcf": {"tumor_sample": "XY00002", "genome_build": "GRCh37"},
        "bcftools_stats.vaf.vcf": {"tumor_sample": "a", "genome_build": "GRCh38"},
        "cyvcf2_no-seq-names.vcf": {"tumor_sample": "sample1", "genome_build": "GRCh37"},
        "htsjdk_test_plain_gzip_not_bgzf.vcf.gz": {
            "tumor_sample": "NA00001",
            "genome_build": "GRCh37",
        },
        "htslib_formatmissing.vcf": {"tumor_sample": "S1", "genome_build": "GRCh38"},
    }
    for name, fields in given.items():
        assert _outcome(MALFORMED / name, "tissue", **fields) == ("processed", ""), name


# --- encodings, versions and numbers labs send ------------------------------------------------


@pytest.mark.parametrize("version", ["4.0", "4.1", "4.2", "4.3", "4.4", "4.5"])
def test_vcf_4_0_to_4_5_headers_read_alike(version: str, tmp_path: Path) -> None:
    path = tmp_path / f"panel_v{version}.vcf"
    path.write_bytes(_PANEL_BYTES.replace(b"VCFv4.2", f"VCFv{version}".encode(), 1))
    assert _outcome(path, "plasma") == ("processed", "")
    assert essentials(read(path)) == essentials(read(PANEL))


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda b: b.replace(b"\n", b"\r\n"), id="crlf"),
        pytest.param(lambda b: UTF8_BOM + b, id="bom"),
        pytest.param(lambda b: gzip.compress(UTF8_BOM + b), id="bom-plain-gzip"),
        pytest.param(lambda b: gzip.compress(b.replace(b"\n", b"\r\n")), id="crlf-plain-gzip"),
        pytest.param("bgzf-bom", id="bom-bgzf"),
    ],
)
def test_crlf_bom_and_compression_read_alike(encode: object, tmp_path: Path) -> None:
    path = tmp_path / "encoded.vcf.gz"
    if encode == "bgzf-bom":
        plain = tmp_path / "bom.vcf"
        plain.write_bytes(UTF8_BOM + _PANEL_BYTES)
        _bgzip(plain, path)
    else:
        assert callable(encode)
        path.write_bytes(encode(_PANEL_BYTES))
    assert _outcome(path, "tissue") == ("processed", "")
    for sample_type in ("plasma", "tissue"):
        assert essentials(read(path, sample_type)) == essentials(read(PANEL, sample_type))


def _panel_with_record(tmp_path: Path, name: str, record: str) -> Path:
    header = _PANEL_BYTES.decode().split("#CHROM")[0]
    columns = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tNORMAL\tTUMOR\n"
    path = tmp_path / name
    path.write_text(header + columns + record + "\n")
    return path


@pytest.mark.parametrize("value", ["NaN", "nan", "Inf", "-Inf", "infinity"])
def test_non_finite_allele_fraction_is_not_a_vaf(value: str, tmp_path: Path) -> None:
    record = (
        f"chr3\t179234297\t.\tA\tG\t{value}\tPASS\tDP=2400\tGT:AF:DP\t0/0:0:800\t0/1:{value}:1600"
    )
    [call] = read(_panel_with_record(tmp_path, "nan_af.vcf", record)).variants
    assert (call.alt_reads, call.depth, call.vaf, call.quantitative) == (None, 1600, None, False)


@pytest.mark.parametrize(("fields", "value"), [("1560,Inf:1600", "Inf"), ("1560,40:NaN", "NaN")])
def test_non_finite_count_fails_naming_line_and_value(
    fields: str, value: str, tmp_path: Path
) -> None:
    record = f"chr3\t179234297\t.\tA\tG\t.\tPASS\tDP=2400\tGT:AD:DP\t0/0:800,0:800\t0/1:{fields}"
    path = _panel_with_record(tmp_path, "nan_count.vcf", record)
    kind, detail = _outcome(path, "tissue")
    assert kind == "failed"
    assert (
        f"nan_count.vcf, line 17: cannot parse the record: it has a non-finite number ('{value}')"
        in detail
    )


def test_empty_and_truncated_uploads_are_refused_at_upload(tmp_path: Path) -> None:
    cases = {
        "empty.vcf": b"",
        "empty.vcf.gz": gzip.compress(b""),
        "cut.vcf.gz": gzip.compress(_PANEL_BYTES)[:300],
        "cut_bgzf.vcf.gz": _bgzip(PANEL, tmp_path / "whole.vcf.gz").read_bytes()[:400],
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        kind, detail = _outcome(tmp_path / name, "plasma")
        assert kind == "upload", (name, detail)
        assert ("empty" in detail) if name.startswith("empty") else ("truncated" in detail)


def test_header_only_and_truncated_text_are_processed_or_failed(tmp_path: Path) -> None:
    header_only = tmp_path / "header_only.vcf"
    header_only.write_bytes(_PANEL_BYTES.split(b"chr1\t")[0])
    assert _outcome(header_only, "plasma") == ("processed", "")
    cut = tmp_path / "cut_mid_record.vcf"
    cut.write_bytes(_PANEL_BYTES[: _PANEL_BYTES.index(b"chr3\t179218303") + 12])
    kind, detail = _outcome(cut, "tissue")
    assert kind == "failed", detail
    assert "cut_mid_record.vcf, line 18: the record has 2 tab-separated columns" in detail


# --- the upload check -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"%PDF-1.7\n", "a PDF document"),
        (b"<!DOCTYPE html>", "an HTML or XML document"),
        (b">chr1\nACGT\n", "a FASTA file"),
        (b"@read1\nACGT\n+\nIIII\n", "a FASTQ file"),
        (b"PK\x03\x04\x14\x00", "a ZIP archive"),
        (gzip.compress(b"BAM\x01" + bytes(100), mtime=0), "a BAM file"),
        (gzip.compress(b"%PDF-1.4", mtime=0), "a PDF document, gzip-compressed"),
        (bytes(range(256)), "binary data"),
        (b"CHROM\tPOS\tREF\n", "text"),
        (b"##fileformat=VCFv3.3\n", "unsupported VCF version 3.3"),
        (b"##fileformat=BCFv2\n", "unsupported file format"),
        (b"BCF\x04\x00", "unsupported BCF version"),
        (
            gzip.compress(gzip.compress(b"##fileformat=VCFv4.2\n", mtime=0), mtime=0),
            "gzip inside gzip",
        ),
    ],
)
def test_upload_check_names_what_was_sent(payload: bytes, words: str) -> None:
    check = UploadCheck("x.vcf", max_decompressed_bytes=1 << 20)
    with pytest.raises(VcfError, match=re.escape(words)):
        for i in range(0, len(payload), 3):  # in small pieces, as a stream arrives
            check.feed(payload[i : i + 3])
        check.finish()


def test_upload_check_stops_a_gzip_bomb_early_and_in_flat_memory() -> None:
    # 32 MiB of zeros after a VCF-looking first line, in about 32 KiB; the cap is 4 MiB.
    bomb = gzip.compress(b"##fileformat=VCFv4.2\n##" + bytes(32 * 1024**2), compresslevel=9)
    check = UploadCheck("bomb.vcf.gz", max_decompressed_bytes=4 * 1024**2)
    with pytest.raises(InflatesTooFar, match="inflates beyond 4,194,304 bytes"):
        for i in range(0, len(bomb), 1024):
            check.feed(bomb[i : i + 1024])
    assert check.inflated_bytes <= 4 * 1024**2 + (1 << 20)
    # A BGZF file is many gzip members: every one is counted.
    check = UploadCheck("many.vcf.gz", max_decompressed_bytes=100)
    with pytest.raises(InflatesTooFar):
        check.feed(gzip.compress(b"##fileformat=VCFv4.2\n" * 3) * 3)


def test_upload_check_accepts_vcf_bgzf_bcf_and_their_bom_and_padding(tmp_path: Path) -> None:
    bcf = tmp_path / "panel.bcf"
    with (
        pysam.VariantFile(str(PANEL)) as source,
        pysam.VariantFile(str(bcf), "wb", header=source.header) as sink,
    ):
        for record in source:
            sink.write(record)
    bgzf = _bgzip(PANEL, tmp_path / "panel.vcf.gz").read_bytes()
    for payload in (
        _PANEL_BYTES,
        UTF8_BOM + _PANEL_BYTES,
        gzip.compress(_PANEL_BYTES),
        bgzf,
        bgzf + bytes(64),  # zero padding after the last member
        bcf.read_bytes(),
        b"##fileformat=VCFv4.2\n",  # a header line alone: the reader judges the rest
    ):
        check = UploadCheck("ok.vcf", max_decompressed_bytes=1 << 20)
        check.feed(payload)
        check.finish()


def test_public_caller_files_give_a_result_or_a_vcf_error() -> None:
    for path in sorted(VCF.glob("*.vcf*")):
        if path.suffix == ".tbi":
            continue
        try:
            read(path, "tissue")
        except VcfError as error:
            assert path.name in str(error)


# --- property: nothing but VcfError escapes ---------------------------------------------------


def _read_bytes(payload: bytes, sample_type: SampleType, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"fuzz{suffix}"
        path.write_bytes(payload)
        try:
            read(path, sample_type)
        except VcfError as error:
            assert path.name in str(error)


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(max_size=2048), sample_type=st.sampled_from(["plasma", "tissue"]))
def test_random_bytes_raise_only_vcf_error(payload: bytes, sample_type: SampleType) -> None:
    _read_bytes(payload, sample_type, ".vcf")


@st.composite
def mutated_panel(draw: st.DrawFn) -> bytes:
    data = bytearray(_PANEL_BYTES)
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "line"]))
        at = draw(st.integers(min_value=0, max_value=max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(min_value=0, max_value=255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(min_value=1, max_value=32))]
        elif kind == "truncate":
            del data[at:]
        else:
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            j = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            lines[i] = lines[j]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=mutated_panel(),
    sample_type=st.sampled_from(["plasma", "tissue"]),
    compress=st.sampled_from(["none", "bgzf", "gzip"]),
)
def test_mutated_vcf_raises_only_vcf_error(
    payload: bytes, sample_type: SampleType, compress: str
) -> None:
    if compress == "gzip":
        payload = gzip.compress(payload)
    elif compress == "bgzf":
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "x").write_bytes(payload)
            pysam.tabix_compress(str(Path(tmp) / "x"), str(Path(tmp) / "x.gz"))
            payload = (Path(tmp) / "x.gz").read_bytes()
    _read_bytes(payload, sample_type, ".vcf.gz" if compress != "none" else ".vcf")


def test_unsorted_bgzf_falls_back_to_streaming(tmp_path: Path) -> None:
    lines = PANEL.read_text().splitlines(keepends=True)
    header = [line for line in lines if line.startswith("#")]
    records = [line for line in lines if not line.startswith("#")]
    unsorted = tmp_path / "unsorted.vcf"
    unsorted.write_text("".join(header + records[::-1]))
    result = read(_bgzip(unsorted, tmp_path / "unsorted.vcf.gz"))
    assert result.scan == "full"
    assert sorted(essentials(result), key=str) == sorted(essentials(read(PANEL)), key=str)


def test_stored_upload_without_extension_or_index_reads(tmp_path: Path) -> None:
    # The service keeps uploads under their sha256, with no suffix and no .tbi beside them;
    # the file has no ##contig lines, so the indexed read must declare contigs itself.
    stored = tmp_path / "3f9a0c"
    stored.write_bytes((VCF / "pcgr_T001-BRCA.grch38.vcf.gz").read_bytes())
    result = read_vcf(
        stored, display_name="upload.vcf.gz", sample_type="plasma", genome_build="GRCh38"
    )
    assert [(v.protein_change, v.alt_reads, v.depth) for v in result.variants] == [
        ("p.H1047R", 31, 74)
    ]


# --- site-level counts and DP4 ---------------------------------------------------------------

_GRCH38_HEADER = (
    "##fileformat=VCFv4.2\n"
    "##contig=<ID=chr3,length=198295559>\n"
    '##INFO=<ID=DP,Number=1,Type=Integer,Description="Raw read depth">\n'
    '##INFO=<ID=AF,Number=A,Type=Float,Description="Allele frequency">\n'
    '##INFO=<ID=AD,Number=R,Type=Integer,Description="Allelic depths">\n'
    '##INFO=<ID=DP4,Number=4,Type=Integer,Description="ref-fwd, ref-rev, alt-fwd, alt-rev">\n'
    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
    '##FORMAT=<ID=PL,Number=G,Type=Integer,Description="Phred-scaled likelihoods">\n'
    '##FORMAT=<ID=DP4,Number=4,Type=Integer,Description="ref-fwd, ref-rev, alt-fwd, alt-rev">\n'
)
_COLUMNS = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"


def _tiny_vcf(tmp_path: Path, name: str, samples: list[str], *records: str) -> Path:
    columns = _COLUMNS + ("\tFORMAT\t" + "\t".join(samples) if samples else "")
    path = tmp_path / name
    path.write_text(_GRCH38_HEADER + columns + "\n" + "".join(r + "\n" for r in records))
    return path


def test_bcftools_call_info_dp4_counts_a_single_sample(tmp_path: Path) -> None:
    path = _tiny_vcf(
        tmp_path,
        "bcftools_call.vcf",
        ["P01_plasma"],
        "chr3\t179234297\t.\tA\tG\t50\tPASS\tDP=1000;DP4=480,490,12,18\tGT:PL\t0/1:50,0,255",
    )
    [call] = read(path).variants
    assert (call.alt_reads, call.depth, call.counts_source) == (30, 1000, "INFO/DP4")
    assert call.quantitative and call.vaf == pytest.approx(0.03)


def test_format_dp4_for_tumour_and_normal_and_pooled_alts_give_depth_only(
    tmp_path: Path,
) -> None:
    path = _tiny_vcf(
        tmp_path,
        "mpileup_format_dp4.vcf",
        ["TUMOR", "NORMAL"],
        "chr3\t179234297\t.\tA\tG\t50\tPASS\tDP=1600;DP4=1,1,1,1\tGT:DP4\t0/1:600,590,4,6\t0/0:200,199,1,0",
        "chr3\t179234300\t.\tA\tG,T\t50\tPASS\t.\tGT:DP4\t0/1:300,300,5,5\t0/0:100,100,0,0",
    )
    first, *split = read(path).variants
    assert (first.alt_reads, first.depth, first.counts_source) == (10, 1200, "DP4")
    assert (first.normal_alt_reads, first.normal_depth) == (1, 400)
    # DP4's alternate reads pool G and T: each allele gets the depth, no count of its own.
    assert [(v.alt, v.alt_reads, v.depth, v.quantitative) for v in split] == [
        ("G", None, 610, False),
        ("T", None, 610, False),
    ]


def test_sites_only_info_counts_are_quantitative_but_info_af_alone_is_not(
    tmp_path: Path,
) -> None:
    path = _tiny_vcf(
        tmp_path,
        "lofreq_sites.vcf",
        [],
        "chr3\t179234297\t.\tA\tG\t50\tPASS\tDP=2000;AF=0.02;DP4=990,970,22,18",
        "chr3\t179234300\t.\tA\tC\t50\tPASS\tDP=1500;AD=1470,30",
        "chr3\t179234303\t.\tA\tT\t50\tPASS\tDP=900;AF=0.011",
    )
    calls = read(path).variants
    assert [(v.alt_reads, v.depth, v.quantitative, v.counts_source) for v in calls] == [
        (40, 2000, True, "INFO/DP4"),
        (30, 1500, True, "INFO/AD"),
        (None, 900, False, "DP"),
    ]
    assert calls[2].vaf == pytest.approx(0.011)


def test_info_counts_pool_columns_so_a_pair_does_not_use_them(tmp_path: Path) -> None:
    path = _tiny_vcf(
        tmp_path,
        "pair_gt_only.vcf",
        ["TUMOR", "NORMAL"],
        "chr3\t179234297\t.\tA\tG\t50\tPASS\tDP=1000;DP4=480,490,12,18\tGT\t0/1\t0/0",
    )
    [call] = read(path).variants
    assert (call.alt_reads, call.depth, call.quantitative) == (None, None, False)


def test_varscan_ad_rd_wins_over_its_dp4() -> None:
    # 1 1991014 TUMOR RD 56 AD 35 DP4 31,25,16,19: both say 35 of 91; AD+RD is first in the table.
    call = by_key(read(VCF / "vcf2maf_test_varscan.vcf", "tissue", genome_build="GRCh37"))[
        "1:1991014:A>G"
    ]
    assert (call.alt_reads, call.depth, call.counts_source) == (35, 91, "AD+RD")


# --- streaming --------------------------------------------------------------------------------


def _many_pass_records(tmp_path: Path, n: int) -> Path:
    header = _PANEL_BYTES.decode().split("#CHROM")[0]
    columns = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tNORMAL\tTUMOR\n"
    lines = [
        f"chr12\t{1_000_000 + 10 * i}\t.\tC\tT\t.\tPASS\t.\tGT:AD\t0/0:50,0\t0/1:40,{i % 7 + 1}\n"
        for i in range(n)
    ]
    path = tmp_path / "many_pass.vcf"
    path.write_text(header + columns + "".join(lines))
    return path


def test_open_vcf_yields_calls_before_reading_the_whole_file(tmp_path: Path) -> None:
    path = _many_pass_records(tmp_path, 5_000)
    with open_vcf(path, display_name=path.name, sample_type="tissue") as stream:
        assert (stream.build, stream.tumor_sample, stream.scan) == ("GRCh38", "TUMOR", "full")
        calls = stream.calls()
        first = next(calls)
        # Held back only until a later position is read: the stream is not a list in disguise.
        assert stream.records_read <= 2
        rest = list(calls)
        assert stream.records_read == 5_000
    assert [first, *rest] == list(read(path, "tissue").variants)
    assert (first.pos, first.alt_reads, first.depth) == (1_000_000, 1, 41)


def test_stream_keeps_the_preferred_copy_nearby_and_read_vcf_also_far_apart(
    tmp_path: Path,
) -> None:
    header = _PANEL_BYTES.decode().split("#CHROM")[0]
    columns = "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tNORMAL\tTUMOR\n"
    weak = "chr3\t179234297\t.\tA\tG\t.\tweak_evidence\t.\tGT:AD\t0/0:800,0\t0/1:1597,3"
    passed = "chr3\t179234297\t.\tA\tG\t.\tPASS\t.\tGT:AD\t0/0:800,0\t0/1:1560,40"
    other = "chr6\t152098788\t.\tA\tC\t.\tPASS\t.\tGT:AD\t0/0:1000,0\t0/1:1880,120"
    nearby = tmp_path / "nearby.vcf"
    nearby.write_text(header + columns + "\n".join([weak, passed, other]) + "\n")
    far = tmp_path / "far_apart_unsorted.vcf"
    far.write_text(header + columns + "\n".join([weak, other, passed]) + "\n")
    with open_vcf(nearby, display_name="nearby.vcf", sample_type="plasma") as stream:
        assert [(c.pos, c.filter) for c in stream.calls()] == [
            (179234297, "PASS"),
            (152098788, "PASS"),
        ]
    # An unsorted file repeats the allele after the window moved on: the stream yields both
    # copies (the ingest keeps the first), read_vcf, holding everything, the preferred one.
    with open_vcf(far, display_name="far.vcf", sample_type="plasma") as stream:
        assert [c.filter for c in stream.calls()] == ["weak_evidence", "PASS", "PASS"]
    assert [(c.pos, c.filter) for c in read(far).variants] == [
        (179234297, "PASS"),
        (152098788, "PASS"),
    ]


# --- UMI and flow-space callers ---------------------------------------------------------------


def test_umi_caller_molecule_counts_win_over_its_read_counts(tmp_path: Path) -> None:
    # smCounter2 (QIAseq): reads in DP/VDP, molecules (UMI families) in UMT/VMT.
    path = _tiny_vcf(
        tmp_path,
        "smcounter2.vcf",
        ["P01_plasma"],
        "chr3\t179234297\t.\tA\tG\t60\tPASS\tTYPE=SNP\t"
        "GT:DP:VDP:VAF:UMT:VMT:VMF\t0/1:12000:64:0.0053:2400:9:0.00375",
        "chr6\t152098788\t.\tA\tC,T\t60\tPASS\tTYPE=SNP\t"
        "GT:DP:VDP:VAF:UMT:VMT:VMF\t0/1:9000:30,12:0.003,0.001:1800:6,2:0.0033,0.0011",
    )
    first, second, third = read(path).variants
    assert (first.alt_reads, first.depth, first.counts_source) == (9, 2400, "VMT/UMT")
    assert (second.alt, second.alt_reads, second.depth) == ("C", 6, 1800)
    assert (third.alt, third.alt_reads, third.depth) == ("T", 2, 1800)
    assert first.quantitative and first.vaf == pytest.approx(9 / 2400)


def test_umi_counts_in_info_for_a_sites_only_file(tmp_path: Path) -> None:
    # smCounter (v1) writes the molecule counts in INFO.
    path = _tiny_vcf(
        tmp_path,
        "smcounter_sites.vcf",
        [],
        "chr3\t179234297\t.\tA\tG\t60\tPASS\tDP=9000;MT=2100;UMT=2000;VMT=7;VMF=0.0035",
    )
    [call] = read(path).variants
    assert (call.alt_reads, call.depth, call.counts_source) == (7, 2000, "VMT/UMT")
    assert call.quantitative


def test_ion_torrent_flow_counts(tmp_path: Path) -> None:
    path = _tiny_vcf(
        tmp_path,
        "tvc.vcf",
        ["IonXpress_001"],
        "chr3\t179234297\t.\tA\tG\t60\tPASS\tAF=0.01\tGT:AO:DP:FAO:FDP:FRO\t0/1:25:2600:20:2000:1980",
    )
    [call] = read(path).variants
    assert (call.alt_reads, call.depth, call.counts_source) == (20, 2000, "FAO/FDP")
