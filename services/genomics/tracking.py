"""Choice of the tumour-informed tracked set from a tumour tissue sample.

MRD calling (``services.genomics.mrd``) integrates mutant reads over loci that every tumour
cell carries, so the tracked set must be (domain-anchors §4.2, §6.1; Wan et al. 2020 INVAR;
Reinert et al. 2019 Signatera):

* PASS single-nucleotide variants with enough tissue support (depth, alt reads);
* not germline: VAF >= ``germline_normal_vaf`` in the matched normal, or, with no informative
  normal, a tumour VAF in the heterozygous band (default 0.45-0.55) or >= 0.95;
* not clonal haematopoiesis (CH), the main source of non-tumour mutations in plasma (Razavi
  et al., Nat Med 2019): not in a CH gene, and not seen in the (blood) matched normal at all;
  the CH gene list is configurable: TP53 is in it by default because it is among the commonest
  CH genes, although in breast cancer (triple-negative especially) it is often a truncal tumour
  driver; drop it from ``ch_genes`` when a white-blood-cell normal has been sequenced deeply;
* clonal: VAF >= ``clonal_fraction`` x the median VAF of the ``top_vaf_count`` highest-VAF
  eligible variants. The top of the VAF distribution is the clonal cluster (purity / 2 for a
  heterozygous diploid SNV); its median, rather than the maximum, is not pulled up by one
  amplified locus. With the default 0.5, a variant present in half of the tumour cells or
  fewer is called subclonal;

then ranked by tissue VAF (a higher AF means more mutant molecules per tumour genome: INVAR
weights each locus by it), ties by depth then key, and cut to ``max_loci``. Every candidate gets
a decision with a reason code and a human-readable detail.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from services.errors import InvalidInput

DEFAULT_CH_GENES = (
    "DNMT3A",
    "TET2",
    "ASXL1",
    "PPM1D",
    "JAK2",
    "TP53",
    "SF3B1",
    "SRSF2",
    "CBL",
    "GNB1",
    "GNAS",
    "CHEK2",
    "IDH2",
    "U2AF1",
    "STAG2",
)
_BASES = frozenset("ACGT")


@dataclass(frozen=True, slots=True)
class TissueCandidate:
    """A variant of the tumour tissue sample (and its matched-normal support, when known)."""

    key: str
    gene: str
    chrom: str
    pos: int
    ref: str
    alt: str
    vaf: float
    alt_reads: int
    depth: int
    passed: bool
    normal_vaf: float | None = None
    normal_depth: int | None = None


@dataclass(frozen=True, slots=True)
class TrackingParams:
    """Parameters of the tracked-set choice; ``version`` is stored with the decisions."""

    version: str = "tracking-1"
    max_loci: int = 16
    min_depth: int = 50
    min_alt_reads: int = 5
    min_vaf: float = 0.02
    clonal_fraction: float = 0.5
    top_vaf_count: int = 5
    germline_normal_vaf: float = 0.2
    normal_presence_vaf: float = 0.005
    normal_presence_min_reads: int = 2
    min_normal_depth: int = 20
    germline_vaf_band: tuple[float, float] = (0.45, 0.55)
    homozygous_vaf: float = 0.95
    flag_germline_without_normal: bool = True
    ch_genes: tuple[str, ...] = DEFAULT_CH_GENES

    def __post_init__(self) -> None:
        if self.max_loci < 1 or self.top_vaf_count < 1:
            raise InvalidInput("max_loci and top_vaf_count must be >= 1")
        if not 0.0 < self.clonal_fraction <= 1.0:
            raise InvalidInput(f"clonal_fraction must be in (0, 1], got {self.clonal_fraction}")


@dataclass(frozen=True, slots=True)
class TrackingDecision:
    """Whether a candidate is tracked; ``reason`` is a stable code, ``detail`` explains it."""

    key: str
    kept: bool
    reason: str
    detail: str
    rank: int | None
    version: str


def _is_snv(candidate: TissueCandidate) -> bool:
    ref, alt = candidate.ref.upper(), candidate.alt.upper()
    return len(ref) == 1 and len(alt) == 1 and ref in _BASES and alt in _BASES and ref != alt


def _normal_informative(candidate: TissueCandidate, params: TrackingParams) -> bool:
    return (
        candidate.normal_vaf is not None
        and candidate.normal_depth is not None
        and candidate.normal_depth >= params.min_normal_depth
    )


def _first_failure(candidate: TissueCandidate, params: TrackingParams) -> tuple[str, str] | None:
    """The first eligibility rule the candidate breaks, as (reason, detail), else None."""
    if not candidate.passed:
        return "not_pass", "the caller did not PASS it"
    if not _is_snv(candidate):
        return "not_snv", f"{candidate.ref}>{candidate.alt} is not a single-nucleotide variant"
    if candidate.depth < params.min_depth:
        return "low_depth", f"tissue depth {candidate.depth} < {params.min_depth}"
    if candidate.alt_reads < params.min_alt_reads:
        return "low_alt_reads", f"{candidate.alt_reads} alt reads < {params.min_alt_reads}"
    if candidate.vaf < params.min_vaf:
        return "low_vaf", f"tissue VAF {candidate.vaf:.3f} < {params.min_vaf}"
    if candidate.gene.upper() in {g.upper() for g in params.ch_genes}:
        return "ch_gene", f"{candidate.gene} is a clonal-haematopoiesis gene"
    if _normal_informative(candidate, params):
        normal_vaf = candidate.normal_vaf or 0.0
        normal_alt = normal_vaf * (candidate.normal_depth or 0)
        if normal_vaf >= params.germline_normal_vaf:
            return (
                "germline_in_normal",
                f"normal VAF {normal_vaf:.3f} >= {params.germline_normal_vaf}",
            )
        if (
            normal_vaf >= params.normal_presence_vaf
            and normal_alt >= params.normal_presence_min_reads - 1e-9
        ):
            return (
                "present_in_normal",
                f"normal VAF {normal_vaf:.4f} ({normal_alt:.0f} reads): CH or contamination",
            )
    elif params.flag_germline_without_normal:
        low, high = params.germline_vaf_band
        if low <= candidate.vaf <= high or candidate.vaf >= params.homozygous_vaf:
            return (
                "possible_germline_no_normal",
                f"tissue VAF {candidate.vaf:.3f} looks germline and no matched normal was given",
            )
    return None


def select_tracked(
    candidates: Sequence[TissueCandidate], params: TrackingParams
) -> list[TrackingDecision]:
    """One decision per candidate, in input order; at most ``max_loci`` are kept."""
    failures: dict[int, tuple[str, str]] = {}
    seen_keys: dict[str, int] = {}
    for index, candidate in enumerate(candidates):
        if candidate.key in seen_keys:
            failures[index] = (
                "duplicate_key",
                f"same key as candidate #{seen_keys[candidate.key]}",
            )
            continue
        seen_keys[candidate.key] = index
        failure = _first_failure(candidate, params)
        if failure is not None:
            failures[index] = failure

    def order(index: int) -> tuple[float, int, str]:
        c = candidates[index]
        return (-c.vaf, -c.depth, c.key)

    # Lists are rebuilt, never .remove()d from: a tumour exome has ~10^5 candidates.
    ordered = sorted((i for i in range(len(candidates)) if i not in failures), key=order)
    by_position: dict[tuple[str, int], int] = {}
    eligible: list[int] = []
    for index in ordered:
        site = (candidates[index].chrom, candidates[index].pos)
        if site in by_position:
            failures[index] = (
                "same_position",
                f"another allele at {site[0]}:{site[1]} has a higher VAF",
            )
        else:
            by_position[site] = index
            eligible.append(index)

    if eligible:
        top = [candidates[i].vaf for i in eligible[: params.top_vaf_count]]
        reference = statistics.median(top)
        cutoff = params.clonal_fraction * reference
        clonal: list[int] = []
        for index in eligible:
            vaf = candidates[index].vaf
            if vaf < cutoff:
                failures[index] = (
                    "subclonal",
                    f"VAF {vaf:.3f} < {params.clonal_fraction} x {reference:.3f} "
                    f"(median of the top {len(top)} VAFs)",
                )
            else:
                clonal.append(index)
        eligible = clonal

    ranks = {index: rank for rank, index in enumerate(eligible, start=1)}
    decisions = []
    for index, candidate in enumerate(candidates):
        if index in failures:
            reason, detail = failures[index]
            decisions.append(
                TrackingDecision(candidate.key, False, reason, detail, None, params.version)
            )
        elif ranks[index] <= params.max_loci:
            detail = f"rank {ranks[index]} by tissue VAF {candidate.vaf:.3f}"
            decisions.append(
                TrackingDecision(
                    candidate.key, True, "tracked", detail, ranks[index], params.version
                )
            )
        else:
            detail = f"rank {ranks[index]} > max_loci {params.max_loci}"
            decisions.append(
                TrackingDecision(
                    candidate.key, False, "beyond_max_loci", detail, ranks[index], params.version
                )
            )
    return decisions
