"""MRD evidence from aligned reads: mutant and total fragments at tracked loci of a BAM/CRAM.

A plasma VCF says nothing about a tracked locus it does not report; an alignment file does
(issue 5: "or from a BAM/CRAM posted with the sample"). For each tracked ``Locus`` (GRCh38,
normalised, 1-based ``pos`` as in a VCF) this module counts the *fragments* (read pairs) that
cover it and those that carry exactly its ALT allele:

* reads are skipped when unmapped, secondary, supplementary, QC-failed, marked duplicate, or
  below ``min_mapping_quality`` (the samtools/GATK defaults for somatic pileups);
* an observation is skipped when its base quality is below ``min_base_quality`` (for an MNV
  the lowest base; for an indel the anchor base and any inserted base);
* the two mates of a pair that overlap the locus are one molecule, counted once: concordant
  mates give their allele, discordant ones (one mate must be a sequencing error) count in
  the depth as neither REF nor ALT, which is the conservative choice for MRD;
* SNVs/MNVs: the read's bases at the locus must equal ALT (mutant) or REF (reference), else
  "other"; a deletion or splice gap over the locus counts as "other";
* indels (left-normalised, anchor base first): a read is informative when it spans the
  anchor and the reference base after the event; it is mutant when its CIGAR has exactly this
  event right after the anchor (a deletion of ``len(ref) - 1`` bases, or an insertion of the
  sequence ``alt[1:]``), reference when it has no indel there, else "other".

Only read/pair identity and the CIGAR are used, never the caller's FORMAT fields. Reads come
from ``AlignmentFile.fetch`` over each locus (the index is required), so the cost is the
reads at the tracked loci, not the file size. pysam objects never leave this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pysam

from services.errors import InvalidInput
from services.genomics.background import BackgroundCounts
from services.genomics.types import Locus

# pysam CIGAR operations
_MATCH, _INS, _DEL, _SKIP, _SOFT, _HARD, _PAD, _EQUAL, _DIFF = range(9)
_REF_CONSUMING = frozenset({_MATCH, _DEL, _SKIP, _EQUAL, _DIFF})
_QUERY_CONSUMING = frozenset({_MATCH, _INS, _SOFT, _EQUAL, _DIFF})
_ALIGNED = frozenset({_MATCH, _EQUAL, _DIFF})

REF, ALT, OTHER = "ref", "alt", "other"


@dataclass(frozen=True, slots=True)
class PileupParams:
    """Read and base filters; ``version`` is stored with the counts it produced."""

    version: str = "pileup-1"
    min_mapping_quality: int = 20
    min_base_quality: int = 20
    max_reads_per_locus: int = 1_000_000

    def __post_init__(self) -> None:
        if self.min_mapping_quality < 0 or self.min_base_quality < 0:
            raise InvalidInput("pileup quality thresholds must be >= 0")
        if self.max_reads_per_locus < 1:
            raise InvalidInput("max_reads_per_locus must be >= 1")


@dataclass(frozen=True, slots=True)
class PileupCounts:
    """Fragments at one locus: ``depth`` = ``ref_reads`` + ``alt_reads`` + ``other_reads``.

    ``reads_filtered`` counts reads skipped by the read filters (duplicate, secondary,
    supplementary, QC-fail, low mapping quality); ``overlapping_pairs`` the fragments seen by
    both mates (counted once); ``discordant_pairs`` those whose mates disagreed.
    """

    key: str
    alt_reads: int
    depth: int
    ref_reads: int
    other_reads: int
    reads_filtered: int
    overlapping_pairs: int
    discordant_pairs: int
    params_version: str

    def as_background(self) -> BackgroundCounts:
        """These counts as one control sample of a panel of normals
        (``background.panel_of_normals``)."""
        return BackgroundCounts(self.alt_reads, self.depth)


@contextmanager
def _open(
    path: Path, reference_fasta: Path | None, index_path: Path | None
) -> Iterator[pysam.AlignmentFile]:
    name = path.name
    try:
        handle = pysam.AlignmentFile(
            str(path),
            "rc" if name.endswith(".cram") else "rb",
            reference_filename=str(reference_fasta) if reference_fasta else None,
            index_filename=str(index_path) if index_path else None,
        )
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{name}: not a readable indexed BAM/CRAM ({exc})") from exc
    try:
        if not handle.has_index():
            raise InvalidInput(f"{name}: the alignment file has no index (.bai/.csi/.crai)")
        yield handle
    finally:
        # htslib reports a corrupt block again when closing ("Closing failed"): the error that
        # matters, the InvalidInput naming the file, is already on its way.
        with suppress(OSError):
            handle.close()


def _contig_names(handle: pysam.AlignmentFile) -> dict[str, str]:
    """UCSC locus chromosome -> the file's contig name ('chr3' or '3'; 'chrM' or 'MT')."""
    names: dict[str, str] = {}
    for contig in handle.references:
        ucsc = contig if contig.startswith("chr") else f"chr{contig}"
        names[ucsc] = contig
        if contig == "MT":
            names["chrM"] = contig
    return names


def _passes_read_filters(read: pysam.AlignedSegment, params: PileupParams) -> bool:
    return not (
        read.is_unmapped
        or read.is_secondary
        or read.is_supplementary
        or read.is_qcfail
        or read.is_duplicate
        or read.mapping_quality < params.min_mapping_quality
    )


def _aligned_bases(
    read: pysam.AlignedSegment, start: int, length: int
) -> list[tuple[int, int] | None] | None:
    """For reference positions start..start+length-1 (0-based), the (query index, quality
    index) aligned to each, None where deleted/skipped; None when the read does not cover all
    of them."""
    cigar = read.cigartuples
    if cigar is None or read.reference_start > start or read.reference_end is None:
        return None
    if read.reference_end < start + length:
        return None
    out: list[tuple[int, int] | None] = []
    ref, query = read.reference_start, 0
    for op, n in cigar:
        if op in _ALIGNED:
            for offset in range(n):
                if start <= ref + offset < start + length:
                    out.append((query + offset, query + offset))
        elif op in (_DEL, _SKIP):
            out.extend(None for p in range(ref, ref + n) if start <= p < start + length)
        if op in _REF_CONSUMING:
            ref += n
        if op in _QUERY_CONSUMING:
            query += n
        if ref >= start + length:
            break
    return out if len(out) == length else None


def _substitution(
    read: pysam.AlignedSegment, locus: Locus, params: PileupParams
) -> tuple[str, bool] | None:
    """(allele, base quality passed) of a read at an SNV/MNV locus; None if not covering."""
    start = locus.pos - 1
    aligned = _aligned_bases(read, start, len(locus.ref))
    if aligned is None:
        return None
    if any(a is None for a in aligned):
        return OTHER, True
    sequence = read.query_sequence
    qualities = read.query_qualities
    if sequence is None:
        return None
    bases = "".join(sequence[a[0]] for a in aligned if a is not None).upper()
    quality_ok = qualities is None or all(
        qualities[a[1]] >= params.min_base_quality for a in aligned if a is not None
    )
    allele = ALT if bases == locus.alt else REF if bases == locus.ref else OTHER
    return allele, quality_ok


def _indel(
    read: pysam.AlignedSegment, locus: Locus, params: PileupParams
) -> tuple[str, bool] | None:
    """(allele, quality passed) of a read at a left-normalised indel (anchor base first)."""
    anchor = locus.pos - 1
    deletion = len(locus.ref) - 1
    insertion = locus.alt[1:] if len(locus.alt) > 1 else ""
    # informative: the anchor and the reference base after the event are both in the read
    after = anchor + 1 + deletion
    cigar = read.cigartuples
    sequence = read.query_sequence
    if cigar is None or sequence is None or read.reference_end is None:
        return None
    if read.reference_start > anchor or read.reference_end <= after:
        return None
    qualities = read.query_qualities
    ref, query = read.reference_start, 0
    anchor_query: int | None = None
    event: tuple[int, int, int] | None = None  # (op, length, query index) right after anchor
    other = False
    for op, n in cigar:
        if op in _ALIGNED and ref <= anchor < ref + n:
            anchor_query = query + (anchor - ref)
        elif op in (_INS, _DEL, _SKIP) and ref == anchor + 1 and anchor_query is not None:
            if event is None:
                event = (op, n, query)
            else:
                other = True  # two events after the anchor: not this allele
        elif op in (_DEL, _SKIP) and anchor < ref + n and ref <= after:
            other = True  # a gap overlapping the locus that does not start at the anchor
        elif op == _INS and anchor < ref <= after:
            other = True
        if op in _REF_CONSUMING:
            ref += n
        if op in _QUERY_CONSUMING:
            query += n
        if ref > after:
            break
    if anchor_query is None:
        return OTHER, True
    checked = [anchor_query]
    if event is not None and not other:
        op, n, at = event
        if deletion and not insertion and op == _DEL and n == deletion:
            allele = ALT
        elif (
            insertion and not deletion and op == _INS and sequence[at : at + n].upper() == insertion
        ):
            allele = ALT
            checked.extend(range(at, at + n))
        else:
            allele = OTHER
    elif other:
        allele = OTHER
    else:
        allele = REF
    quality_ok = qualities is None or all(qualities[i] >= params.min_base_quality for i in checked)
    return allele, quality_ok


def _observe(
    read: pysam.AlignedSegment, locus: Locus, params: PileupParams
) -> tuple[str, bool] | None:
    is_indel = len(locus.ref) != len(locus.alt)
    return _indel(read, locus, params) if is_indel else _substitution(read, locus, params)


def _count_locus(
    handle: pysam.AlignmentFile,
    contig: str,
    locus: Locus,
    params: PileupParams,
    wider: Sequence[Locus] = (),
) -> PileupCounts:
    """Fragments at one locus. ``wider``: the substitution loci of the set that contain this
    one (an MNV over an SNV's base): a read carrying one of their alleles carries that
    variant, not this one, and is counted as another allele here (ESR1 Y537S as the MNV
    TA>AG is neither Y537N T>A nor Y537C A>G)."""
    start = locus.pos - 1
    end = start + max(len(locus.ref), 2)
    filtered = 0
    fragments: dict[str, list[str]] = {}
    mates: dict[str, int] = {}
    for n, read in enumerate(handle.fetch(contig, start, end)):
        if n >= params.max_reads_per_locus:
            raise InvalidInput(
                f"{locus.key}: more than {params.max_reads_per_locus} reads at one locus"
            )
        if not _passes_read_filters(read, params):
            filtered += 1
            continue
        observed = _observe(read, locus, params)
        if observed is None:
            continue
        if observed[0] == ALT and any(
            (seen := _substitution(read, other, params)) is not None and seen[0] == ALT
            for other in wider
        ):
            observed = (OTHER, observed[1])
        name = read.query_name or f"#{n}"
        mates[name] = mates.get(name, 0) + 1
        allele, quality_ok = observed
        if quality_ok:
            fragments.setdefault(name, []).append(allele)
    counts = {REF: 0, ALT: 0, OTHER: 0}
    discordant = 0
    for alleles in fragments.values():
        if len(set(alleles)) == 1:
            counts[alleles[0]] += 1
        else:
            discordant += 1
            counts[OTHER] += 1
    return PileupCounts(
        key=locus.key,
        alt_reads=counts[ALT],
        depth=sum(counts.values()),
        ref_reads=counts[REF],
        other_reads=counts[OTHER],
        reads_filtered=filtered,
        overlapping_pairs=sum(1 for seen in mates.values() if seen > 1),
        discordant_pairs=discordant,
        params_version=params.version,
    )


def count_alleles(
    alignment_path: str | Path,
    loci: Iterable[Locus],
    *,
    reference_fasta: str | Path | None = None,
    index_path: str | Path | None = None,
    params: PileupParams | None = None,
) -> dict[str, PileupCounts]:
    """Fragments carrying each locus' ALT, and fragments covering it, from a BAM or CRAM.

    ``alignment_path``: coordinate-sorted, indexed BAM (``.bam`` + ``.bai``/``.csi``) or CRAM
    (``.cram`` + ``.crai``; ``reference_fasta`` is needed unless the reference is reachable
    through the CRAM's own UR/M5 tags). ``index_path`` when the index is not beside the file.
    Reads must be aligned to GRCh38 (the loci's build); contigs may be named "chr3" or "3".
    Returns ``{locus.key: PileupCounts}``; a locus on a contig absent from the file gets depth 0
    (no reads there is evidence of nothing, and the caller skips depth-0 loci).
    Raises InvalidInput for an unreadable or unindexed file.
    """
    settings = params or PileupParams()
    path = Path(alignment_path)
    fasta = Path(reference_fasta) if reference_fasta is not None else None
    index = Path(index_path) if index_path is not None else None
    result: dict[str, PileupCounts] = {}
    unique = sorted(set(loci))
    with _open(path, fasta, index) as handle:
        contigs = _contig_names(handle)
        for locus in unique:
            contig = contigs.get(locus.chrom)
            if contig is None:
                result[locus.key] = PileupCounts(locus.key, 0, 0, 0, 0, 0, 0, 0, settings.version)
                continue
            try:
                result[locus.key] = _count_locus(
                    handle, contig, locus, settings, _wider_substitutions(locus, unique)
                )
            except (OSError, ValueError) as exc:
                # a truncated file, or a CRAM whose reference cannot be found
                raise InvalidInput(
                    f"{path.name}: cannot read the reads at {locus.key} ({exc})"
                ) from exc
    return result


def _wider_substitutions(locus: Locus, loci: Sequence[Locus]) -> list[Locus]:
    """The substitution loci of ``loci`` longer than ``locus`` (itself a substitution) that
    contain it and agree with its alt allele on its bases."""
    if len(locus.ref) != len(locus.alt):
        return []
    end = locus.pos + len(locus.ref)
    return [
        other
        for other in loci
        if other.chrom == locus.chrom
        and len(other.ref) == len(other.alt) > len(locus.ref)
        and other.pos <= locus.pos
        and end <= other.pos + len(other.ref)
        and other.alt[locus.pos - other.pos : end - other.pos] == locus.alt
    ]


def background_table(counts: Mapping[str, PileupCounts]) -> dict[str, BackgroundCounts]:
    """One normal plasma's pileup as an evidence table for ``background.panel_of_normals``
    (loci without reads are left out: missing evidence, not zero reads)."""
    return {key: c.as_background() for key, c in counts.items() if c.depth > 0}
