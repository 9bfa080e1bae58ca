"""Fragment counts at tracked loci from real BAM/CRAM files built here with pysam
(services/genomics/pileup.py): every read filter, mate overlap, base quality and indels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pysam
import pytest

from services.errors import InvalidInput
from services.genomics.background import (
    BackgroundCounts,
    BackgroundParams,
    fit_background,
    panel_of_normals,
)
from services.genomics.pileup import PileupParams, background_table, count_alleles
from services.genomics.types import Locus

rng = np.random.default_rng(20261130)
REFERENCE = "".join("ACGT"[i] for i in rng.integers(0, 4, 3000))
# a non-repetitive context around the indels, so the loci are already left-normalised
REFERENCE = REFERENCE[:1499] + "CAGTCAGT" + REFERENCE[1507:1799] + "GCATG" + REFERENCE[1804:]
CONTIG = "chr3"

SNV_POS = 1001  # 1-based
SNV = Locus(CONTIG, SNV_POS, REFERENCE[SNV_POS - 1], "T" if REFERENCE[SNV_POS - 1] != "T" else "G")
THIRD = next(b for b in "ACGT" if b not in (SNV.ref, SNV.alt))
DEL_POS = 1501  # anchor; deletes the two bases after it
DELETION = Locus(CONTIG, DEL_POS, REFERENCE[DEL_POS - 1 : DEL_POS + 2], REFERENCE[DEL_POS - 1])
INS_POS = 1801
INSERTION = Locus(CONTIG, INS_POS, REFERENCE[INS_POS - 1], REFERENCE[INS_POS - 1] + "TT")

PAIRED, PROPER, REVERSE, MATE_REVERSE, READ1, READ2 = 0x1, 0x2, 0x10, 0x20, 0x40, 0x80
SECONDARY, QCFAIL, DUPLICATE, SUPPLEMENTARY = 0x100, 0x200, 0x400, 0x800


@dataclass
class Read:
    name: str
    start: int  # 0-based
    length: int = 100
    subs: dict[int, str] = field(default_factory=dict)  # 0-based ref pos -> base
    low_quality: dict[int, int] = field(default_factory=dict)  # 0-based ref pos -> quality
    deletion: tuple[int, int] | None = None  # (0-based anchor, length)
    insertion: tuple[int, str] | None = None  # (0-based anchor, inserted bases)
    flag: int = 0
    mapq: int = 60
    mate_start: int | None = None


def build(read: Read, header: pysam.AlignmentHeader) -> pysam.AlignedSegment:
    if read.deletion is not None:
        anchor, n = read.deletion
        left = anchor + 1 - read.start
        seq = (
            REFERENCE[read.start : anchor + 1]
            + REFERENCE[anchor + 1 + n : read.start + read.length + n]
        )
        cigar = [(0, left), (2, n), (0, read.length - left)]
        ref_of_query = list(range(read.start, anchor + 1)) + list(
            range(anchor + 1 + n, read.start + read.length + n)
        )
    elif read.insertion is not None:
        anchor, bases = read.insertion
        left = anchor + 1 - read.start
        right = read.length - left - len(bases)
        seq = (
            REFERENCE[read.start : anchor + 1] + bases + REFERENCE[anchor + 1 : anchor + 1 + right]
        )
        cigar = [(0, left), (1, len(bases)), (0, right)]
        ref_of_query = (
            list(range(read.start, anchor + 1))
            + [-1] * len(bases)
            + list(range(anchor + 1, anchor + 1 + right))
        )
    else:
        seq = REFERENCE[read.start : read.start + read.length]
        cigar = [(0, read.length)]
        ref_of_query = list(range(read.start, read.start + read.length))
    bases = list(seq)
    quals = [30] * len(bases)
    for i, ref_pos in enumerate(ref_of_query):
        if ref_pos in read.subs:
            bases[i] = read.subs[ref_pos]
        if ref_pos in read.low_quality:
            quals[i] = read.low_quality[ref_pos]
    segment = pysam.AlignedSegment(header)
    segment.query_name = read.name
    segment.query_sequence = "".join(bases)
    segment.flag = read.flag
    segment.reference_id = 0
    segment.reference_start = read.start
    segment.mapping_quality = read.mapq
    segment.cigartuples = cigar
    segment.query_qualities = pysam.qualitystring_to_array("".join(chr(q + 33) for q in quals))
    if read.mate_start is not None:
        segment.next_reference_id = 0
        segment.next_reference_start = read.mate_start
    return segment


def write_alignments(
    folder: Path, reads: list[Read], *, contig: str = CONTIG, cram: bool = False
) -> tuple[Path, Path]:
    """A sorted, indexed BAM (or CRAM) of the reads, and the FASTA it was aligned to."""
    fasta = folder / "ref.fa"
    fasta.write_text(
        f">{contig}\n"
        + "\n".join(REFERENCE[i : i + 60] for i in range(0, len(REFERENCE), 60))
        + "\n"
    )
    pysam.faidx(str(fasta))
    header = pysam.AlignmentHeader.from_dict(
        {"HD": {"VN": "1.6", "SO": "unsorted"}, "SQ": [{"SN": contig, "LN": len(REFERENCE)}]}
    )
    unsorted = folder / "unsorted.bam"
    with pysam.AlignmentFile(str(unsorted), "wb", header=header) as out:
        for read in reads:
            out.write(build(read, header))
    bam = folder / "sample.bam"
    pysam.sort("-o", str(bam), str(unsorted))
    if not cram:
        pysam.index(str(bam))
        return bam, fasta
    path = folder / "sample.cram"
    pysam.view("-C", "-T", str(fasta), "-o", str(path), str(bam), catch_stdout=False)
    pysam.index(str(path))
    return path, fasta


def pair(name: str, start1: int, start2: int, **mates: Read | dict[str, object]) -> list[Read]:
    """Two mates (read1 forward at start1, read2 reverse at start2), with per-mate edits."""
    first = dict(mates.get("first", {}))  # type: ignore[call-overload]
    second = dict(mates.get("second", {}))  # type: ignore[call-overload]
    return [
        Read(name, start1, flag=PAIRED | PROPER | READ1 | MATE_REVERSE, mate_start=start2, **first),
        Read(name, start2, flag=PAIRED | PROPER | READ2 | REVERSE, mate_start=start1, **second),
    ]


def snv_reads() -> list[Read]:
    p = SNV_POS - 1
    alt, ref, third = {p: SNV.alt}, {}, {p: THIRD}
    reads: list[Read] = []
    reads += [Read(f"alt{i}", p - 40 - i, subs=alt) for i in range(5)]  # 5 alt
    reads += [Read(f"ref{i}", p - 60 + i, subs=ref) for i in range(7)]  # 7 ref
    reads += [Read(f"dup{i}", p - 30, subs=alt, flag=DUPLICATE) for i in range(3)]
    reads += [Read(f"sec{i}", p - 30, subs=alt, flag=SECONDARY) for i in range(2)]
    reads += [Read("supp", p - 30, subs=alt, flag=SUPPLEMENTARY)]
    reads += [Read("qcfail", p - 30, subs=alt, flag=QCFAIL)]
    reads += [Read(f"lowmapq{i}", p - 30, subs=alt, mapq=10) for i in range(2)]
    reads += [Read(f"lowbq{i}", p - 30, subs=alt, low_quality={p: 10}) for i in range(2)]
    for i in range(4):  # overlapping mates, both alt: one molecule each
        reads += pair(f"olap{i}", p - 70, p - 20, first={"subs": alt}, second={"subs": alt})
    reads += pair("discordant", p - 70, p - 20, first={"subs": alt}, second={"subs": ref})
    reads += pair(  # one mate's base is low quality: the other mate decides
        "onegood", p - 70, p - 20, first={"subs": alt}, second={"subs": alt, "low_quality": {p: 5}}
    )
    reads += [Read("third", p - 50, subs=third)]
    reads += [Read("deleted", p - 50, deletion=(p - 3, 6))]
    for i in range(2):  # only one mate covers the locus
        reads += pair(f"far{i}", p - 50, p + 200)
    return reads


EXPECTED_SNV = {"alt": 10, "ref": 9, "other": 3, "depth": 22, "filtered": 9, "overlap": 6}


def test_snv_counts_every_filter_and_each_pair_once(tmp_path: Path) -> None:
    bam, _ = write_alignments(tmp_path, snv_reads())
    counts = count_alleles(bam, [SNV])[SNV.key]
    assert counts.alt_reads == EXPECTED_SNV["alt"]
    assert counts.ref_reads == EXPECTED_SNV["ref"]
    assert counts.other_reads == EXPECTED_SNV["other"]
    assert counts.depth == EXPECTED_SNV["depth"]
    assert counts.reads_filtered == EXPECTED_SNV["filtered"]
    assert counts.overlapping_pairs == EXPECTED_SNV["overlap"]
    assert counts.discordant_pairs == 1


def test_filters_are_parameters(tmp_path: Path) -> None:
    bam, _ = write_alignments(tmp_path, snv_reads())
    lenient = count_alleles(
        bam, [SNV], params=PileupParams(min_mapping_quality=0, min_base_quality=0)
    )[SNV.key]
    # + 2 low-MAPQ reads, + 2 low-BQ reads; the low-BQ mate of "onegood" agrees anyway
    assert lenient.alt_reads == EXPECTED_SNV["alt"] + 4
    assert lenient.reads_filtered == EXPECTED_SNV["filtered"] - 2


def indel_reads() -> list[Read]:
    d, i = DEL_POS - 1, INS_POS - 1
    reads: list[Read] = []
    reads += [Read(f"del{k}", d - 40 - k, deletion=(d, 2)) for k in range(3)]
    reads += [Read(f"del1_{k}", d - 40, deletion=(d, 1)) for k in range(2)]  # another allele
    reads += [Read(f"dref{k}", d - 50 + k) for k in range(4)]
    reads += [Read("dshort", d - 99)]  # ends on the anchor: does not span the event
    reads += pair("dpair", d - 60, d - 30, first={"deletion": (d, 2)}, second={"deletion": (d, 2)})
    reads += [Read("ddup", d - 40, deletion=(d, 2), flag=DUPLICATE)]
    reads += [Read(f"ins{k}", i - 40 - k, insertion=(i, "TT")) for k in range(2)]
    reads += [Read("insother", i - 40, insertion=(i, "TA"))]
    reads += [Read("inslowq", i - 40, insertion=(i, "TT"), low_quality={i: 8})]
    reads += [Read(f"iref{k}", i - 30 - k) for k in range(5)]
    return reads


def test_indels_count_reads_with_the_exact_event(tmp_path: Path) -> None:
    bam, _ = write_alignments(tmp_path, indel_reads())
    counts = count_alleles(bam, [DELETION, INSERTION])
    deletion = counts[DELETION.key]
    assert (deletion.alt_reads, deletion.ref_reads, deletion.other_reads) == (4, 4, 2)
    assert deletion.depth == 10 and deletion.overlapping_pairs == 1
    assert deletion.reads_filtered == 1
    insertion = counts[INSERTION.key]
    assert (insertion.alt_reads, insertion.ref_reads, insertion.other_reads) == (2, 5, 1)
    assert insertion.depth == 8


def test_cram_and_unprefixed_contigs_give_the_same_counts(tmp_path: Path) -> None:
    reads = snv_reads() + indel_reads()
    bam_dir, cram_dir, plain_dir = (tmp_path / n for n in ("bam", "cram", "plain"))
    for folder in (bam_dir, cram_dir, plain_dir):
        folder.mkdir()
    bam, _ = write_alignments(bam_dir, reads)
    cram, fasta = write_alignments(cram_dir, reads, cram=True)
    plain, _ = write_alignments(plain_dir, reads, contig="3")
    loci = [SNV, DELETION, INSERTION]
    expected = count_alleles(bam, loci)
    assert count_alleles(cram, loci, reference_fasta=fasta) == expected
    assert count_alleles(plain, loci) == expected
    assert expected[SNV.key].alt_reads == EXPECTED_SNV["alt"]


def test_absent_contig_and_bad_files(tmp_path: Path) -> None:
    bam, _ = write_alignments(tmp_path, snv_reads())
    elsewhere = Locus("chr7", 100, "A", "C")
    assert count_alleles(bam, [elsewhere])[elsewhere.key].depth == 0
    Path(f"{bam}.bai").unlink()
    with pytest.raises(InvalidInput, match="no index"):
        count_alleles(bam, [SNV])
    truncated = tmp_path / "truncated.bam"
    truncated.write_bytes(bam.read_bytes()[: bam.stat().st_size // 2])
    pysam.index(str(bam))
    Path(f"{bam}.bai").rename(f"{truncated}.bai")
    with pytest.raises(InvalidInput):
        count_alleles(truncated, [SNV])
    junk = tmp_path / "junk.bam"
    junk.write_bytes(b"not a bam at all")
    with pytest.raises(InvalidInput):
        count_alleles(junk, [SNV])


def test_panel_of_normals_from_pileups_is_the_cross_patient_background(tmp_path: Path) -> None:
    """Several normal-plasma BAMs, pileup per locus, pooled exactly as fit_background pools
    cross-patient controls; a locus without reads in a normal is missing, not zero."""
    tables = []
    p = SNV_POS - 1
    for n_alt in (0, 1, 2):
        folder = tmp_path / f"normal{n_alt}"
        folder.mkdir()
        reads = [Read(f"r{k}", p - 40 - k % 30) for k in range(60)]
        reads += [Read(f"a{k}", p - 20, subs={p: SNV.alt}) for k in range(n_alt)]
        bam, _ = write_alignments(folder, reads)
        tables.append(background_table(count_alleles(bam, [SNV, DELETION])))
    assert all(DELETION.key not in t for t in tables)  # no reads there
    pon = panel_of_normals(tables, BackgroundParams(), loci=[DELETION.key])
    direct = fit_background(
        {
            SNV.key: [BackgroundCounts(0, 60), BackgroundCounts(1, 61), BackgroundCounts(2, 62)],
            DELETION.key: [],
        },
        BackgroundParams(),
    )
    assert {k: b.fingerprint() for k, b in pon.items()} == {
        k: b.fingerprint() for k, b in direct.items()
    }
    assert pon[SNV.key].n_controls == 3 and pon[SNV.key].alt_reads == 3
    assert pon[DELETION.key].n_controls == 0


def test_a_read_carrying_an_mnv_is_not_counted_for_the_snvs_inside_it(tmp_path: Path) -> None:
    """ESR1 Y537S as the MNV TA>AG (domain-anchors §3.2) shares a base with Y537N (T>A) and
    Y537C (A>G): its reads are the MNV's, not evidence of either neighbour."""
    p = SNV_POS - 1
    first, second = REFERENCE[p], REFERENCE[p + 1]
    mnv_alt = SNV.alt + ("T" if second != "T" else "G")
    mnv = Locus(CONTIG, SNV_POS, first + second, mnv_alt)
    second_snv = Locus(CONTIG, SNV_POS + 1, second, mnv_alt[1])
    reads = [Read(f"mnv{i}", p - 40 - i, subs={p: mnv_alt[0], p + 1: mnv_alt[1]}) for i in range(6)]
    reads += [Read(f"snv{i}", p - 30 - i, subs={p: SNV.alt}) for i in range(3)]
    reads += [Read(f"ref{i}", p - 20 - i) for i in range(4)]
    bam, _ = write_alignments(tmp_path, reads)
    counts = count_alleles(bam, [SNV, mnv, second_snv])
    assert (counts[mnv.key].alt_reads, counts[mnv.key].depth) == (6, 13)
    assert (counts[SNV.key].alt_reads, counts[SNV.key].other_reads) == (3, 6)
    assert (counts[second_snv.key].alt_reads, counts[second_snv.key].other_reads) == (0, 6)
    # Counted alone (no MNV in the set), the SNV sees every read with its base.
    assert count_alleles(bam, [SNV])[SNV.key].alt_reads == 9
