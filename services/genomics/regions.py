"""The monitored genes and where they lie on each build.

Spans are the Ensembl GRCh38 gene records (ESR1 ENSG00000091831, PIK3CA ENSG00000121879,
ERBB2 ENSG00000141736, AKT1 ENSG00000142208). The GRCh37 spans are the GRCh38
ends carried through the UCSC hg38ToHg19 chain; tests/genomics/test_build.py re-derives them and
checks that every row of hotspots.tsv falls inside its gene on both builds.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.genomics.types import Build


@dataclass(frozen=True, slots=True, order=True)
class GeneRegion:
    """A gene span, 1-based inclusive on both ends (the way Ensembl and VCF count)."""

    chrom: str  # UCSC style, "chr3"
    start: int
    end: int
    gene: str

    def contains(self, chrom: str, pos: int) -> bool:
        return chrom == self.chrom and self.start <= pos <= self.end


MONITORED_GENES: tuple[str, ...] = ("ESR1", "PIK3CA", "ERBB2", "AKT1")

GENE_REGIONS: Mapping[Build, tuple[GeneRegion, ...]] = {
    "GRCh38": (
        GeneRegion("chr3", 179148114, 179240093, "PIK3CA"),
        GeneRegion("chr6", 151656691, 152129619, "ESR1"),
        GeneRegion("chr14", 104769349, 104795751, "AKT1"),
        GeneRegion("chr17", 39687914, 39730426, "ERBB2"),
    ),
    "GRCh37": (
        GeneRegion("chr3", 178865902, 178957881, "PIK3CA"),
        GeneRegion("chr6", 151977826, 152450754, "ESR1"),
        GeneRegion("chr14", 105235686, 105262088, "AKT1"),
        GeneRegion("chr17", 37844167, 37886679, "ERBB2"),
    ),
}


def gene_at(build: Build, chrom: str, pos: int) -> str | None:
    """The monitored gene covering `chrom:pos` (UCSC-style chrom, 1-based), if any."""
    for region in GENE_REGIONS[build]:
        if region.contains(chrom, pos):
            return region.gene
    return None


class IntervalSet:
    """Merged 1-based inclusive intervals per chromosome, for a cheap "might this record matter"
    test on every record of a large file (bisect on sorted starts)."""

    __slots__ = ("_starts", "_ends")

    def __init__(self, intervals: Iterable[tuple[str, int, int]]) -> None:
        by_chrom: dict[str, list[tuple[int, int]]] = {}
        for chrom, start, end in intervals:
            by_chrom.setdefault(chrom, []).append((max(1, start), end))
        self._starts: dict[str, list[int]] = {}
        self._ends: dict[str, list[int]] = {}
        for chrom, spans in by_chrom.items():
            merged: list[list[int]] = []
            for start, end in sorted(spans):
                if merged and start <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            self._starts[chrom] = [s for s, _ in merged]
            self._ends[chrom] = [e for _, e in merged]

    def overlaps(self, chrom: str, start: int, end: int) -> bool:
        """True when [start, end] (1-based inclusive) touches any interval on `chrom`."""
        starts = self._starts.get(chrom)
        if starts is None:
            return False
        i = bisect.bisect_right(starts, end) - 1
        return i >= 0 and self._ends[chrom][i] >= start

    def spans(self) -> list[tuple[str, int, int]]:
        """The merged intervals, sorted, 1-based inclusive."""
        return [(chrom, s, e) for chrom in sorted(self._starts) for s, e in self.spans_on(chrom)]

    def spans_on(self, chrom: str) -> list[tuple[int, int]]:
        """The merged intervals of one chromosome, sorted, 1-based inclusive."""
        return list(zip(self._starts.get(chrom, ()), self._ends.get(chrom, ()), strict=True))

    def __bool__(self) -> bool:
        return bool(self._starts)
