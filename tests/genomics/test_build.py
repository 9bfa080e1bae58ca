"""Genome builds: detection, chromosome names, allele normalisation, liftover, gene spans."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.errors import GenomeBuildError
from services.genomics.annotate import load_hotspots
from services.genomics.build import (
    CHROM_LENGTHS,
    accession_build,
    canonical_chrom,
    grch38_locus,
    left_align,
    lift_allele,
    lift_position,
    resolve_build,
    right_align,
    trim_alleles,
)
from services.genomics.regions import GENE_REGIONS, MONITORED_GENES, IntervalSet, gene_at
from services.genomics.types import Build, Locus

GRCH38_CONTIGS = [("chr1", 248956422), ("chr3", 198295559)]
GRCH37_CONTIGS = [("1", 249250621), ("3", 198022430)]


def _no_hotspot_scan() -> Build | None:
    raise AssertionError("the hotspot scan should not run when the header decides")


def _chain_headers(name: str) -> list[list[str]]:
    chain = resources.files("services.genomics") / "data" / name
    with resources.as_file(chain) as path, gzip.open(path, "rt") as handle:
        return [line.split() for line in handle if line.startswith("chain")]


# --- liftover: the acceptance check of the hotspot table ------------------------------------


def test_every_hotspot_lifts_grch37_to_grch38_exactly_and_back() -> None:
    for spot in load_hotspots():
        forward = lift_allele(
            spot.grch37_chrom, spot.grch37_pos, spot.ref, spot.alt, "GRCh37", "GRCh38"
        )
        assert forward == (spot.locus.chrom, spot.locus.pos, spot.ref, spot.alt), spot
        back = lift_allele(*forward, "GRCh38", "GRCh37")
        assert back == (spot.grch37_chrom, spot.grch37_pos, spot.ref, spot.alt), spot


def _minus_strand_stretch(length: int) -> tuple[str, int, str, int]:
    """A GRCh37 stretch of `length` bases that maps base by base onto the GRCh38 minus strand:
    (GRCh37 chrom, first 1-based pos, GRCh38 chrom, GRCh38 pos of the stretch's last base)."""
    for header in _chain_headers("hg19ToHg38.over.chain.gz"):
        if header[9] != "-":
            continue
        chrom, start = header[2], int(header[5])
        for offset in range(1, 5000, 7):
            hits = [
                lift_position(chrom, start + offset + k, "GRCh37", "GRCh38") for k in range(length)
            ]
            if all(h is not None and h[2] == "-" for h in hits):
                ends = [h[1] for h in hits if h is not None]
                if ends == list(range(ends[0], ends[0] - length, -1)):
                    last = hits[-1]
                    assert last is not None
                    return chrom, start + offset, last[0], last[1]
    raise AssertionError("no minus-strand stretch found in the chain file")


class _Window:
    """`seq` laid at 1-based `start` of `chrom` on `build`; nothing elsewhere."""

    def __init__(self, build: Build, chrom: str, start: int, seq: str) -> None:
        self._build, self._chrom, self._start, self._seq = build, chrom, start, seq

    @property
    def build(self) -> Build | None:
        return self._build

    def fetch(self, chrom: str, start: int, end: int) -> str:
        if (
            chrom != self._chrom
            or start < self._start - 1
            or end > self._start - 1 + len(self._seq)
        ):
            return ""
        return self._seq[start - self._start + 1 : end - self._start + 1]


_COMPLEMENT = str.maketrans("ACGT", "TGCA")


def _revcomp(seq: str) -> str:
    return seq.translate(_COMPLEMENT)[::-1]


def test_minus_strand_snv_is_reverse_complemented_and_indel_needs_a_reference() -> None:
    chrom, pos, chrom38, _ = _minus_strand_stretch(1)
    hit = lift_position(chrom, pos, "GRCh37", "GRCh38")
    assert hit is not None and hit[2] == "-"
    lifted = lift_allele(chrom, pos, "A", "G", "GRCh37", "GRCh38")
    assert lifted == (chrom38, hit[1], "T", "C")
    # Without a reference the left anchor base of the target is unknown: no key, not a wrong one.
    assert lift_allele(chrom, pos, "AC", "A", "GRCh37", "GRCh38") is None


# GRCh37 bases of the stretch: the indels below sit in the CCC run, anchored on the A.
_SOURCE = "TTAGACCCGTTGA"
_ANCHOR = 4  # index of the A before CCC


@pytest.mark.parametrize(
    ("ref", "alt", "expected"),
    [
        # One C of CCC deleted: on GRCh38 (reverse complement ...C GGG T...) one G of GGG,
        # anchored on the C to its left, at the leftmost place.
        ("AC", "A", (0, "CG", "C")),
        ("ACC", "A", (0, "CGG", "C")),
        ("A", "AC", (0, "C", "CG")),
        # Not in a repeat: the inserted T is an A right after GGG on GRCh38, anchored on G.
        ("A", "AT", (3, "G", "GA")),
    ],
)
def test_minus_strand_indel_is_reanchored_and_left_aligned(
    ref: str, alt: str, expected: tuple[int, str, str]
) -> None:
    length = len(_SOURCE)
    chrom, first, chrom38, left38 = _minus_strand_stretch(length)
    source = _Window("GRCh37", chrom, first, _SOURCE)
    target = _Window("GRCh38", chrom38, left38, _revcomp(_SOURCE))
    pos = first + _ANCHOR
    assert source.fetch(chrom, pos - 1, pos - 1 + len(ref)) == ref
    # GRCh38 index 0 is the reverse complement of GRCh37's last base, and so on.
    c_before_ggg = length - 1 - (_ANCHOR + 4)  # GRCh38 index of the C left of GGG
    offset, want_ref, want_alt = expected
    want = (chrom38, left38 + c_before_ggg + offset, want_ref, want_alt)
    by_source = lift_allele(chrom, pos, ref, alt, "GRCh37", "GRCh38", source)
    by_target = lift_allele(chrom, pos, ref, alt, "GRCh37", "GRCh38", target)
    assert by_source == want
    assert by_target == want
    # The key is a real allele of the target: REF matches the GRCh38 bases there.
    assert target.fetch(chrom38, want[1] - 1, want[1] - 1 + len(want_ref)) == want_ref
    # and grch38_locus takes the reference through
    locus = grch38_locus(chrom, pos, ref, alt, "GRCh37", source)
    assert locus is not None and (locus.pos, locus.ref, locus.alt) == want[1:]


def test_minus_strand_indel_with_a_disagreeing_reference_is_not_lifted() -> None:
    chrom, first, chrom38, left38 = _minus_strand_stretch(len(_SOURCE))
    wrong = _Window("GRCh38", chrom38, left38, "A" * len(_SOURCE))
    assert lift_allele(chrom, first + _ANCHOR, "AC", "A", "GRCh37", "GRCh38", wrong) is None
    other = _Window("GRCh37", chrom, first, "G" * len(_SOURCE))
    assert lift_allele(chrom, first + _ANCHOR, "AC", "A", "GRCh37", "GRCh38", other) is None


@pytest.mark.parametrize(
    ("allele", "aligned"),
    [
        ((10, "AA", "A"), (10, "AA", "A")),  # A x7 ends at 11: already rightmost
        ((4, "CA", "C"), (10, "AA", "A")),
        ((4, "C", "CA"), (11, "A", "AA")),
        ((10, "A", "G"), (10, "A", "G")),
        ((4, "CT", "C"), (4, "CT", "C")),  # REF disagrees with the reference
    ],
)
def test_right_align(allele: tuple[int, str, str], aligned: tuple[int, str, str]) -> None:
    assert right_align(REPEAT, "chr1", *allele) == aligned


def test_unmapped_chromosome_gives_none() -> None:
    assert lift_allele("chrNotAChrom", 100, "A", "G", "GRCh37", "GRCh38") is None


# --- gene spans -------------------------------------------------------------------------------


def test_grch37_gene_spans_are_the_grch38_ends_through_the_chain() -> None:
    by_gene = {r.gene: r for r in GENE_REGIONS["GRCh37"]}
    for region in GENE_REGIONS["GRCh38"]:
        start = lift_position(region.chrom, region.start, "GRCh38", "GRCh37")
        end = lift_position(region.chrom, region.end, "GRCh38", "GRCh37")
        expected = by_gene[region.gene]
        assert start == (expected.chrom, expected.start, "+")
        assert end == (expected.chrom, expected.end, "+")


def test_every_hotspot_lies_inside_its_gene_on_both_builds() -> None:
    assert {r.gene for r in GENE_REGIONS["GRCh38"]} == set(MONITORED_GENES)
    for spot in load_hotspots():
        assert gene_at("GRCh38", spot.locus.chrom, spot.locus.pos) == spot.gene
        assert gene_at("GRCh37", spot.grch37_chrom, spot.grch37_pos) == spot.gene


def test_interval_set_merges_and_answers_overlap() -> None:
    spans = IntervalSet([("chr1", 10, 20), ("chr1", 15, 30), ("chr1", 40, 50), ("chr2", 5, 5)])
    assert spans.spans() == [("chr1", 10, 30), ("chr1", 40, 50), ("chr2", 5, 5)]
    assert spans.overlaps("chr1", 30, 35)
    assert not spans.overlaps("chr1", 31, 39)
    assert spans.overlaps("chr1", 1, 100)
    assert not spans.overlaps("chr3", 1, 100)


# --- chromosome names and build evidence ------------------------------------------------------


def test_chrom_lengths_are_the_chain_file_lengths() -> None:
    seen: dict[str, tuple[int, int]] = {}
    for header in _chain_headers("hg19ToHg38.over.chain.gz"):
        if header[2] == header[7] and header[2] in CHROM_LENGTHS:
            seen[header[2]] = (int(header[3]), int(header[8]))
    assert seen == CHROM_LENGTHS


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("3", "chr3"),
        ("chr3", "chr3"),
        ("NC_000003.11", "chr3"),
        ("NC_000003.12", "chr3"),
        ("NC_000023.11", "chrX"),
        ("x", "chrX"),
        ("MT", "chrM"),
        ("chrM", "chrM"),
        ("NC_012920.1", "chrM"),
        ("GL000192.1", "chrGL000192.1"),
    ],
)
def test_canonical_chrom(name: str, canonical: str) -> None:
    assert canonical_chrom(name) == canonical


@pytest.mark.parametrize(
    ("name", "build"),
    [
        ("NC_000001.10", "GRCh37"),
        ("NC_000001.11", "GRCh38"),
        ("NC_000014.8", "GRCh37"),
        ("NC_000014.9", "GRCh38"),
        ("NC_000024.10", "GRCh38"),
        ("NC_000001.9", None),
        ("chr1", None),
    ],
)
def test_accession_build(name: str, build: Build | None) -> None:
    assert accession_build(name) == build


@dataclass
class _Case:
    given: Build | None
    contigs: list[tuple[str, int | None]]
    reference: list[str]
    expected: tuple[Build, str]


@pytest.mark.parametrize(
    "case",
    [
        _Case(None, list(GRCH38_CONTIGS), [], ("GRCh38", "contig_lengths")),
        _Case(None, list(GRCH37_CONTIGS), [], ("GRCh37", "contig_lengths")),
        _Case("GRCh38", list(GRCH38_CONTIGS), [], ("GRCh38", "given")),
        _Case(None, [("NC_000017.10", None)], [], ("GRCh37", "contig_accessions")),
        _Case(None, [("chr1", None)], ["file:///ref/hs37d5.fa"], ("GRCh37", "reference_header")),
        _Case(None, [], ["/data/Homo_sapiens_assembly38.fasta"], ("GRCh38", "reference_header")),
        _Case(None, [], ["/data/human_g1k_v37.fasta"], ("GRCh37", "reference_header")),
        # a stated build beats a ##reference line, and made-up lengths do not contradict it
        _Case("GRCh37", [("20", 2147483647)], ["hg38.fa"], ("GRCh37", "given")),
    ],
)
def test_resolve_build(case: _Case) -> None:
    found = resolve_build(
        "x.vcf",
        given=case.given,
        contigs=case.contigs,
        reference_texts=case.reference,
        hotspot_build=_no_hotspot_scan,
    )
    assert found == case.expected


@pytest.mark.parametrize(
    ("given", "contigs", "reference", "message"),
    [
        ("GRCh37", GRCH38_CONTIGS, [], "contig chr1 length 248956422 is GRCh38"),
        (None, [GRCH38_CONTIGS[0], GRCH37_CONTIGS[1]], [], "contigs disagree"),
        (None, [("20", 62435964)], [], "matches neither GRCh37 nor GRCh38"),
        (None, [], ["NCBI36.fasta"], "only GRCh37 and GRCh38"),
        (None, [], [], "pass genome_build"),
    ],
)
def test_resolve_build_errors(
    given: Build | None, contigs: list[tuple[str, int]], reference: list[str], message: str
) -> None:
    with pytest.raises(GenomeBuildError, match=message) as caught:
        resolve_build(
            "sample.vcf",
            given=given,
            contigs=contigs,
            reference_texts=reference,
            hotspot_build=lambda: None,
        )
    assert "sample.vcf" in str(caught.value)


def test_hotspot_scan_is_the_last_resort() -> None:
    found = resolve_build(
        "x.vcf", given=None, contigs=[], reference_texts=[], hotspot_build=lambda: "GRCh37"
    )
    assert found == ("GRCh37", "hotspot_match")


# --- allele normalisation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allele", "trimmed"),
    [
        ((100, "A", "G"), (100, "A", "G")),
        ((100, "TAC", "TCC"), (101, "A", "C")),
        ((100, "CTT", "CT"), (100, "CT", "C")),
        ((100, "GAAC", "GAC"), (100, "GA", "G")),
        ((100, "A", "AT"), (100, "A", "AT")),
        ((100, "ACGT", "ACGA"), (103, "T", "A")),
    ],
)
def test_trim_alleles(allele: tuple[int, str, str], trimmed: tuple[int, str, str]) -> None:
    assert trim_alleles(*allele) == trimmed


class _Sequence:
    """A one-chromosome reference for left-alignment tests."""

    def __init__(self, seq: str, build: Build | None = None) -> None:
        self._seq = seq
        self._build = build

    @property
    def build(self) -> Build | None:
        return self._build

    def fetch(self, chrom: str, start: int, end: int) -> str:
        return self._seq[start:end] if chrom == "chr1" and start >= 0 else ""


REPEAT = _Sequence("GGGCAAAAAAATGCGTACGTTGCA")  # A x7 at 1-based 5..11
DINUC = _Sequence("TTTGCACACACAGTT")  # G at 4, then CA x4 at 1-based 5..12


@pytest.mark.parametrize(
    ("reference", "allele", "aligned"),
    [
        (REPEAT, (10, "AA", "A"), (4, "CA", "C")),
        (REPEAT, (11, "A", "AA"), (4, "C", "CA")),
        (REPEAT, (4, "CA", "C"), (4, "CA", "C")),
        (DINUC, (10, "ACA", "A"), (4, "GCA", "G")),
        (REPEAT, (10, "A", "G"), (10, "A", "G")),
        (REPEAT, (10, "TT", "T"), (10, "TT", "T")),  # REF disagrees with the reference
    ],
)
def test_left_align(
    reference: _Sequence, allele: tuple[int, str, str], aligned: tuple[int, str, str]
) -> None:
    assert left_align(reference, "chr1", *allele) == aligned


# --- Locus ------------------------------------------------------------------------------------


@given(st.data())
def test_locus_key_round_trips(data: st.DataObject) -> None:
    ref = data.draw(st.text("ACGTN", min_size=1, max_size=12))
    alt = data.draw(st.text("ACGT", min_size=1, max_size=12).filter(lambda a: a != ref))
    locus = Locus(
        data.draw(st.sampled_from(["chr1", "chr3", "chrX", "chrM", "chr1_KI270706v1_random"])),
        data.draw(st.integers(min_value=1, max_value=250_000_000)),
        ref,
        alt,
    )
    assert Locus.parse(locus.key) == locus


def test_locus_key_format() -> None:
    assert Locus("chr3", 179234297, "A", "G").key == "chr3:179234297:A>G"


@pytest.mark.parametrize(
    "junk",
    ["", "chr3:179234297:A>", "3:179234297:A>G", "chr3:0:A>G", "chr3:12:a>g", "chr3:1:A>A", "x"],
)
def test_locus_parse_rejects_junk(junk: str) -> None:
    with pytest.raises(ValueError):
        Locus.parse(junk)


def test_grch38_locus_accepts_any_chromosome_spelling_and_padded_alleles() -> None:
    expected = Locus("chr3", 179234297, "A", "G")
    assert grch38_locus("3", 179234297, "a", "g", "GRCh38") == expected
    assert grch38_locus("NC_000003.11", 178952084, "CA", "CG", "GRCh37") == expected
    assert grch38_locus("chr3", 179234297, "A", "A", "GRCh38") is None
