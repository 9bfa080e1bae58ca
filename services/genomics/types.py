"""Plain values that leave the VCF boundary: variant identity (`Locus`), one ALT allele of one
sample (`VariantCall`) and the outcome of reading one file (`VcfReadResult`).

One coordinate convention: `pos` is 1-based, as written in a VCF, everywhere in this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Build = Literal["GRCh37", "GRCh38"]
SampleType = Literal["plasma", "tissue", "normal"]
ScanMode = Literal["indexed", "full"]

BUILDS: tuple[Build, ...] = ("GRCh37", "GRCh38")

# A normalised allele is spelled with the four bases (and N, which references contain).
_BASES = re.compile(r"[ACGTN]+")
# Anything UCSC-style: chr1, chrX, chrM, chr1_KI270706v1_random, chrUn_GL000220v1.
_CHROM = re.compile(r"chr[A-Za-z0-9_.\-]+")
_KEY = re.compile(r"(chr[A-Za-z0-9_.\-]+):([1-9][0-9]*):([ACGTN]+)>([ACGTN]+)")


@dataclass(frozen=True, slots=True, order=True)
class Locus:
    """Build-independent identity of a variant: normalised GRCh38 coordinates.

    "Normalised" means split to one ALT, shared suffix then prefix trimmed, and left-aligned
    when a reference FASTA was available (Tan, Abecasis & Kang 2015, "Unified representation of
    genetic variants"). A GRCh37 sample and a GRCh38 sample of the same patient give equal keys.
    """

    chrom: str
    pos: int
    ref: str
    alt: str

    def __post_init__(self) -> None:
        # Validate here so that a malformed key can never be stored and then fail to match.
        if not _CHROM.fullmatch(self.chrom):
            raise ValueError(f"locus chromosome must be UCSC-style (chr3), got {self.chrom!r}")
        if self.pos < 1:
            raise ValueError(f"locus position is 1-based, got {self.pos}")
        if not _BASES.fullmatch(self.ref) or not _BASES.fullmatch(self.alt):
            raise ValueError(f"locus alleles must be A/C/G/T/N, got {self.ref!r}>{self.alt!r}")
        if self.ref == self.alt:
            raise ValueError(f"locus REF equals ALT ({self.ref!r})")

    @property
    def key(self) -> str:
        """The stable text form, e.g. "chr3:179234297:A>G"."""
        return f"{self.chrom}:{self.pos}:{self.ref}>{self.alt}"

    @classmethod
    def parse(cls, key: str) -> Locus:
        """Inverse of `key`; raises ValueError on anything else."""
        match = _KEY.fullmatch(key.strip())
        if match is None:
            raise ValueError(f"not a locus key (expected chr3:179234297:A>G): {key!r}")
        chrom, pos, ref, alt = match.groups()
        return cls(chrom, int(pos), ref, alt)


@dataclass(frozen=True, slots=True)
class VariantCall:
    """One ALT allele of one record, copied out of the file with the sample's read counts."""

    chrom: str  # as written in the file
    pos: int  # 1-based, in the sample's build, after trimming (and left-alignment)
    ref: str
    alt: str
    build: Build
    locus: Locus | None  # None when the GRCh37 -> GRCh38 liftover fails
    filter: str  # "PASS", "." (no filter applied) or the ;-joined filter names
    passed: bool  # PASS or no filter applied
    alt_reads: int | None
    depth: int | None
    vaf: float | None  # alt_reads/depth when both are known, else the caller's AF/FREQ
    quantitative: bool  # alt_reads and depth both known
    normal_alt_reads: int | None
    normal_depth: int | None
    gene: str | None
    protein_change: str | None  # HGVS p. one-letter short form, "p.H1047R"
    hotspot: bool  # the GRCh38 locus is a row of hotspots.tsv
    in_monitored_gene: bool  # inside the ESR1/PIK3CA/ERBB2/AKT1 gene span
    tracked: bool  # the locus is in the caller-supplied tracked set
    counts_source: str | None = None  # dialect the counts came from ("AD", "strelka_tier1", ...)
    annotation_source: str | None = None  # "CSQ", "ANN", "EFF", "FUNCOTATION", "hotspots", ...
    line: int | None = None  # 1-based line of the record in a text VCF, when known


@dataclass(frozen=True, slots=True)
class VcfReadResult:
    """What one VCF yielded for one sample.

    `build_source` says how the build was decided: "given", "contig_lengths",
    "contig_accessions", "reference_header", "hotspot_match", or "undetermined" (only for a
    file without records, where nothing depends on it).
    """

    build: Build
    build_source: str
    tumor_sample: str | None  # sample column analysed (None for a sites-only file)
    normal_sample: str | None
    records_read: int  # records decoded; with scan == "indexed" only those in the regions
    alleles_skipped: int  # '*' and symbolic ALT alleles
    variants: tuple[VariantCall, ...]
    scan: ScanMode = "full"
