"""Seeded simulator of a post-surgery MRD cohort with known truth, and VCF writers for it.

Used by the statistical tests, by ``ctdna simulate`` and by the demo loader. The generative
model is the one the MRD caller assumes (``services.genomics.mrd``), so the truth is known:

* per locus (key ``chrom:pos:ref>alt``, GRCh38) a true mean background error rate
  e ~ Beta(shape, shape (1 - m) / m), mean m = ``error_mean`` (x ``ct_error_factor`` for C>T
  class loci, the deamination-prone class); in every draw (plasma, control or normal) the
  locus' rate is e x exp(sigma Z - sigma^2 / 2), Z ~ N(0, 1), sigma = ``dispersion_sigma``
  (draw-to-draw variation of real assays; 0 = a fixed rate); a panel of ``n_controls``
  control samples per locus (0 = no panel of normals) with M ~ Binomial(R, rate);
* optionally (``matched_normal``) a buffy-coat normal per patient, sequenced once, whose
  counts at the tracked loci every plasma VCF of the patient carries in a NORMAL column;
* per patient ``n_loci`` tracked clonal SNVs at random GRCh38 positions plus up to
  ``max_hotspot_loci`` ESR1/PIK3CA hotspots from ``data/hotspots.tsv``; tissue allele fraction
  AF = purity / 2 x a copy-number factor; a tissue sample that also holds decoys that tracking
  must reject (subclonal, germline, clonal-haematopoiesis DNMT3A R882H, a non-PASS call);
* per draw a ctDNA fraction f (tumour-derived share of the cfDNA): 0 for cured patients; for
  relapsing patients f(t) = ``fraction_at_relapse`` x 2^((t - t_relapse) / ``doubling_days``),
  counted as 0 below ``min_fraction`` (no shedding yet), capped at ``max_fraction``; unique
  molecules per locus around a per-draw input level (1,500-6,000; some low-input draws);
  mutant molecules M_i ~ Binomial(R_i, f g_i + (1 - f) e_ij), g_i = a_i (1 - e_ij) +
  (1 - a_i) e_ij (INVAR), a_i the allele fraction of the variant in tumour DNA (1/2 x a copy
  number factor; the tissue VAF is purity x a_i).

REF bases of the random SNVs are random (no reference FASTA is shipped): a reader that checks
REF against a FASTA will flag them; the hotspot and DNMT3A records carry the true GRCh38 REF.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pysam

from services.errors import InvalidInput
from services.genomics import annotate
from services.genomics.background import BackgroundCounts, LocusBackground, substitution_class
from services.genomics.mrd import LocusEvidence

HOTSPOTS_PATH = Path(__file__).parent / "data" / "hotspots.tsv"

GRCH38_CONTIG_LENGTHS: Mapping[str, int] = {
    "chr1": 248_956_422,
    "chr2": 242_193_529,
    "chr3": 198_295_559,
    "chr4": 190_214_555,
    "chr5": 181_538_259,
    "chr6": 170_805_979,
    "chr7": 159_345_973,
    "chr8": 145_138_636,
    "chr9": 138_394_717,
    "chr10": 133_797_422,
    "chr11": 135_086_622,
    "chr12": 133_275_309,
    "chr13": 114_364_328,
    "chr14": 107_043_718,
    "chr15": 101_991_189,
    "chr16": 90_338_345,
    "chr17": 83_257_441,
    "chr18": 80_373_285,
    "chr19": 58_617_616,
    "chr20": 64_444_167,
    "chr21": 46_709_983,
    "chr22": 50_818_468,
    "chrX": 156_040_895,
    "chrY": 57_227_415,
}
_AUTOSOMES = tuple(f"chr{i}" for i in range(1, 23))
_ACROCENTRIC = frozenset({"chr13", "chr14", "chr15", "chr21", "chr22"})
_BASES = "ACGT"
# DNMT3A R882H (c.2645G>A), the commonest clonal-haematopoiesis hotspot; GRCh38, + strand.
_CH_DECOY = ("DNMT3A", "chr2", 25_234_373, "C", "T", "p.R882H")
_WEAK_FILTER = "weak_evidence"
# Caller dialects the VCF writers speak (where each caller puts the read counts):
# Mutect2 AD/AF/DP; Strelka2 somatic AU/CU/GU/TU (SNV) or TAR/TIR (indel) in a TUMOR column
# next to NORMAL; VarScan2 RD + AD (ALT only) + FREQ "%"; VarDict VD/AD/AF/DP; bcftools call
# without FORMAT/AD (INFO/DP4 strand counts, FORMAT GT:PL).
DIALECTS = ("mutect2", "strelka2", "varscan2", "vardict", "bcftools")


@dataclass(frozen=True, slots=True)
class SimulationParams:
    """Knobs of the simulated cohort; ``version`` is written into every VCF it produces."""

    version: str = "sim-1"
    n_loci: int = 16
    max_hotspot_loci: int = 2
    hotspot_genes: tuple[str, ...] = ("ESR1", "PIK3CA")
    relapse_fraction: float = 0.3
    depth_range: tuple[int, int] = (1500, 6000)
    depth_locus_sd: float = 0.2
    low_input_rate: float = 0.05
    low_input_range: tuple[int, int] = (300, 1000)
    n_controls: int = 50
    control_depth_range: tuple[int, int] = (1500, 6000)
    error_mean: float = 4e-5
    error_shape: float = 2.0
    ct_error_factor: float = 2.0
    dispersion_sigma: float = 0.0
    matched_normal: bool = False
    matched_normal_depth_range: tuple[int, int] = (1500, 6000)
    purity_range: tuple[float, float] = (0.3, 0.65)
    copy_factor_range: tuple[float, float] = (0.85, 1.1)
    tissue_depth_range: tuple[int, int] = (400, 1000)
    normal_depth_range: tuple[int, int] = (300, 600)
    first_draw_days: tuple[int, int] = (7, 42)
    draw_interval_days: int = 90
    draw_jitter_days: int = 14
    fraction_at_relapse: float = 5e-3
    doubling_days: float = 45.0
    min_fraction: float = 5e-6
    max_fraction: float = 0.15
    surgery_start: date = date(2022, 1, 3)
    surgery_span_days: int = 365
    tissue_decoys: bool = True
    dialects: tuple[str, ...] = ("mutect2", "strelka2", "varscan2", "vardict", "bcftools")

    def __post_init__(self) -> None:
        if not self.dialects or set(self.dialects) - set(DIALECTS):
            raise InvalidInput(f"dialects must be a non-empty subset of {DIALECTS}")
        if self.n_loci < 1 or self.n_controls < 0:
            raise InvalidInput("a simulated patient needs >= 1 locus and >= 0 controls")
        if not 0.0 <= self.relapse_fraction <= 1.0 or not 0.0 <= self.low_input_rate <= 1.0:
            raise InvalidInput("relapse_fraction and low_input_rate must be probabilities")
        if not 0.0 < self.error_mean * self.ct_error_factor < 0.5 or self.error_shape <= 0:
            raise InvalidInput("error rates must be in (0, 0.5) with a positive shape")
        if self.dispersion_sigma < 0:
            raise InvalidInput("dispersion_sigma must be >= 0")


@dataclass(frozen=True, slots=True)
class SimLocus:
    """A tracked SNV with its tissue AF, its allele fraction in tumour DNA and its true mean
    background error rate (the truth)."""

    key: str
    gene: str
    chrom: str
    pos: int
    ref: str
    alt: str
    tumor_af: float
    error_rate: float
    hotspot: bool
    protein: str
    allele_fraction: float = 0.5


@dataclass(frozen=True, slots=True)
class SimTissueVariant:
    """A variant of the tissue VCF; ``kind`` is the truth tracking should recover
    (``clonal`` = tracked; ``subclonal``, ``germline``, ``ch``, ``artefact`` = decoys)."""

    key: str
    gene: str
    chrom: str
    pos: int
    ref: str
    alt: str
    alt_reads: int
    depth: int
    filter: str
    kind: str
    normal_alt_reads: int
    normal_depth: int

    @property
    def vaf(self) -> float:
        return self.alt_reads / self.depth


@dataclass(frozen=True, slots=True)
class SimDraw:
    """One plasma draw: counts per tracked locus (in the patient's locus order) and the truth."""

    sample_id: str
    patient_id: str
    collection_date: date
    days_since_surgery: int
    true_fraction: float
    alt_reads: tuple[int, ...]
    depths: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SimPatient:
    patient_id: str
    surgery_date: date
    relapsing: bool
    clinical_relapse_date: date | None
    purity: float
    loci: tuple[SimLocus, ...]
    tissue_sample_id: str
    tissue: tuple[SimTissueVariant, ...]
    draws: tuple[SimDraw, ...]
    dialect: str = "mutect2"  # the caller dialect of this patient's VCFs (truth for readers)
    # (alt reads, depth) of the buffy-coat normal at each locus, in locus order, if sequenced
    normal: tuple[tuple[int, int], ...] | None = None

    @property
    def normal_sample_id(self) -> str:
        return f"{self.patient_id}-NORMAL"


@dataclass(frozen=True, slots=True)
class Cohort:
    """Patients, the panel-of-normal control counts per locus key, and the parameters used."""

    patients: tuple[SimPatient, ...]
    controls: Mapping[str, tuple[BackgroundCounts, ...]] = field(hash=False)
    params: SimulationParams


@dataclass(frozen=True, slots=True)
class Hotspot:
    gene: str
    protein: str
    chrom: str
    pos: int
    ref: str
    alt: str


def load_hotspots() -> tuple[Hotspot, ...]:
    """The GRCh38 coordinates of the VERIFIED single-nucleotide rows of ``data/hotspots.tsv``
    (parsed once, by the annotator): the subset domain-anchors §3.3 sets aside for test
    fixtures. A simulated panel is then two-source verified SNVs, which tracking accepts, and
    does not move when the annotator's table gains MNV, indel or one-source rows."""
    return tuple(
        Hotspot(
            gene=h.gene,
            protein=h.protein_change,
            chrom=h.locus.chrom,
            pos=h.locus.pos,
            ref=h.ref,
            alt=h.alt,
        )
        for h in annotate.load_hotspots()
        if h.verification == "VERIFIED" and len(h.ref) == len(h.alt) == 1
    )


def locus_key(chrom: str, pos: int, ref: str, alt: str) -> str:
    return f"{chrom}:{pos}:{ref}>{alt}"


def draw_rates(
    rate: float | np.ndarray, size: int, rng: np.random.Generator, params: SimulationParams
) -> np.ndarray:
    """Each draw's error rate at a locus of mean ``rate``: the mean times a lognormal factor of
    spread ``dispersion_sigma`` with mean 1 (the rate itself when sigma is 0)."""
    sigma = params.dispersion_sigma
    if sigma == 0.0:
        return np.broadcast_to(np.asarray(rate, dtype=np.float64), (size,)).copy()
    factor = np.exp(sigma * rng.standard_normal(size) - sigma * sigma / 2.0)
    result: np.ndarray = np.minimum(np.asarray(rate) * factor, 0.5)
    return result


class _Truth:
    """Cohort-wide per-locus truth: error rates and control panels, shared by a key."""

    def __init__(self, rng: np.random.Generator, params: SimulationParams) -> None:
        self.rng = rng
        self.params = params
        self.error_rates: dict[str, float] = {}
        self.controls: dict[str, tuple[BackgroundCounts, ...]] = {}

    def error_rate(self, key: str, ref: str, alt: str) -> float:
        if key not in self.error_rates:
            p = self.params
            mean = p.error_mean * (
                p.ct_error_factor if substitution_class(ref, alt) == "C>T" else 1
            )
            rate = float(self.rng.beta(p.error_shape, p.error_shape * (1.0 - mean) / mean))
            depths = self.rng.integers(*p.control_depth_range, size=p.n_controls, endpoint=True)
            self.error_rates[key] = rate
            alts = self.rng.binomial(depths, draw_rates(rate, p.n_controls, self.rng, p))
            self.controls[key] = tuple(
                BackgroundCounts(int(m), int(d)) for m, d in zip(alts, depths, strict=True)
            )
        return self.error_rates[key]


def _random_snv(rng: np.random.Generator, taken: set[str]) -> tuple[str, int, str, str]:
    weights = np.array([GRCH38_CONTIG_LENGTHS[c] for c in _AUTOSOMES], dtype=np.float64)
    while True:
        chrom = _AUTOSOMES[int(rng.choice(len(_AUTOSOMES), p=weights / weights.sum()))]
        # acrocentric short arms are unassembled repeats: start on the long arm
        start = 20_000_000 if chrom in _ACROCENTRIC else 1_000_000
        pos = int(rng.integers(start, GRCH38_CONTIG_LENGTHS[chrom] - 1_000_000))
        ref = _BASES[int(rng.integers(4))]
        alt = [b for b in _BASES if b != ref][int(rng.integers(3))]
        if f"{chrom}:{pos}" not in taken:
            taken.add(f"{chrom}:{pos}")
            return chrom, pos, ref, alt


def _tissue_variant(
    rng: np.random.Generator,
    params: SimulationParams,
    site: tuple[str, str, int, str, str],
    vaf: float,
    normal_vaf: float,
    kind: str,
    filter_: str = "PASS",
) -> SimTissueVariant:
    gene, chrom, pos, ref, alt = site
    depth = int(rng.integers(*params.tissue_depth_range, endpoint=True))
    normal_depth = int(rng.integers(*params.normal_depth_range, endpoint=True))
    return SimTissueVariant(
        key=locus_key(chrom, pos, ref, alt),
        gene=gene,
        chrom=chrom,
        pos=pos,
        ref=ref,
        alt=alt,
        alt_reads=max(int(rng.binomial(depth, vaf)), 1),
        depth=depth,
        filter=filter_,
        kind=kind,
        normal_alt_reads=int(rng.binomial(normal_depth, normal_vaf)),
        normal_depth=normal_depth,
    )


def fraction_at(
    days_since_surgery: int, relapse_day: int | None, params: SimulationParams
) -> float:
    """True ctDNA fraction (tumour share of the cfDNA) on a given day (0 for a cured patient)."""
    if relapse_day is None:
        return 0.0
    fraction = params.fraction_at_relapse * 2.0 ** (
        (days_since_surgery - relapse_day) / params.doubling_days
    )
    return 0.0 if fraction < params.min_fraction else min(fraction, params.max_fraction)


def simulate_plasma(
    loci: Sequence[SimLocus],
    *,
    fraction: float,
    patient_id: str,
    sample_id: str,
    collection_date: date,
    days_since_surgery: int,
    rng: np.random.Generator,
    params: SimulationParams,
) -> SimDraw:
    """One plasma draw at a known ctDNA fraction (INVAR generative model, see module doc)."""
    low, high = (
        params.low_input_range if rng.random() < params.low_input_rate else params.depth_range
    )
    level = rng.uniform(low, high)
    depths = np.maximum(
        np.rint(level * rng.lognormal(0.0, params.depth_locus_sd, size=len(loci))), 50
    ).astype(np.int64)
    a = np.array([locus.allele_fraction for locus in loci])
    e = draw_rates(np.array([locus.error_rate for locus in loci]), len(loci), rng, params)
    g = a * (1.0 - e) + (1.0 - a) * e
    alt = rng.binomial(depths, fraction * g + (1.0 - fraction) * e)
    return SimDraw(
        sample_id=sample_id,
        patient_id=patient_id,
        collection_date=collection_date,
        days_since_surgery=days_since_surgery,
        true_fraction=fraction,
        alt_reads=tuple(int(m) for m in alt),
        depths=tuple(int(r) for r in depths),
    )


def _simulate_patient(
    index: int,
    draws_per_patient: int,
    hotspots: Sequence[Hotspot],
    truth: _Truth,
    rng: np.random.Generator,
    params: SimulationParams,
) -> SimPatient:
    patient_id = f"SIM-{index + 1:04d}"
    surgery = params.surgery_start + timedelta(days=int(rng.integers(params.surgery_span_days)))
    purity = float(rng.uniform(*params.purity_range))
    taken: set[str] = set()
    sites: list[tuple[str, str, int, str, str, bool, str]] = []
    n_hot = int(rng.integers(0, params.max_hotspot_loci + 1))
    eligible = [h for h in hotspots if h.gene in params.hotspot_genes]
    for i in rng.permutation(len(eligible)):
        hot = eligible[int(i)]
        if len(sites) < min(n_hot, params.n_loci) and f"{hot.chrom}:{hot.pos}" not in taken:
            taken.add(f"{hot.chrom}:{hot.pos}")
            sites.append((hot.gene, hot.chrom, hot.pos, hot.ref, hot.alt, True, hot.protein))
    while len(sites) < params.n_loci:
        chrom, pos, ref, alt = _random_snv(rng, taken)
        sites.append(("", chrom, pos, ref, alt, False, ""))
    loci = tuple(
        SimLocus(
            key=locus_key(chrom, pos, ref, alt),
            gene=gene,
            chrom=chrom,
            pos=pos,
            ref=ref,
            alt=alt,
            tumor_af=purity * fraction,
            error_rate=truth.error_rate(locus_key(chrom, pos, ref, alt), ref, alt),
            hotspot=hot,
            protein=protein,
            allele_fraction=fraction,
        )
        for gene, chrom, pos, ref, alt, hot, protein in sites
        for fraction in (0.5 * float(rng.uniform(*params.copy_factor_range)),)
    )
    tissue = [
        _tissue_variant(
            rng, params, (lo.gene, lo.chrom, lo.pos, lo.ref, lo.alt), lo.tumor_af, 0.0, "clonal"
        )
        for lo in loci
    ]
    if params.tissue_decoys:
        gene, chrom, pos, ref, alt, _ = _CH_DECOY
        taken.add(f"{chrom}:{pos}")
        tissue.append(_tissue_variant(rng, params, (gene, chrom, pos, ref, alt), 0.06, 0.05, "ch"))
        for kind, vaf, normal_vaf, filter_ in (
            ("subclonal", purity / 2.0 * 0.12, 0.0, "PASS"),
            ("subclonal", purity / 2.0 * 0.2, 0.0, "PASS"),
            ("germline", 0.5, 0.5, "PASS"),
            ("artefact", purity / 2.0, 0.0, _WEAK_FILTER),
        ):
            chrom, pos, ref, alt = _random_snv(rng, taken)
            tissue.append(
                _tissue_variant(
                    rng, params, ("", chrom, pos, ref, alt), vaf, normal_vaf, kind, filter_
                )
            )
    tissue.sort(key=lambda v: (_chrom_order(v.chrom), v.pos))

    normal: tuple[tuple[int, int], ...] | None = None
    if params.matched_normal:
        low, high = params.matched_normal_depth_range
        normal_depths = rng.integers(low, high, size=len(loci), endpoint=True)
        rates = draw_rates(np.array([lo.error_rate for lo in loci]), len(loci), rng, params)
        normal = tuple(
            (int(m), int(d))
            for m, d in zip(rng.binomial(normal_depths, rates), normal_depths, strict=True)
        )
    relapsing = bool(rng.random() < params.relapse_fraction)
    days: list[int] = []
    day = int(rng.integers(*params.first_draw_days, endpoint=True))
    for _ in range(draws_per_patient):
        days.append(day)
        jitter = int(rng.integers(-params.draw_jitter_days, params.draw_jitter_days + 1))
        day += params.draw_interval_days + jitter
    relapse_day: int | None = None
    if relapsing:
        start = days[min(2, len(days) - 1)] if days else 180
        end = (days[-1] if days else 540) + 120
        relapse_day = int(rng.integers(start, max(end, start + 1)))
    draws = tuple(
        simulate_plasma(
            loci,
            fraction=fraction_at(d, relapse_day, params),
            patient_id=patient_id,
            sample_id=f"{patient_id}-P{j + 1:02d}",
            collection_date=surgery + timedelta(days=d),
            days_since_surgery=d,
            rng=rng,
            params=params,
        )
        for j, d in enumerate(days)
    )
    return SimPatient(
        patient_id=patient_id,
        surgery_date=surgery,
        relapsing=relapsing,
        clinical_relapse_date=(
            None if relapse_day is None else surgery + timedelta(days=relapse_day)
        ),
        purity=purity,
        loci=loci,
        tissue_sample_id=f"{patient_id}-TISSUE",
        tissue=tuple(tissue),
        draws=draws,
        normal=normal,
    )


def simulate_cohort(
    n_patients: int,
    draws_per_patient: int,
    rng: np.random.Generator,
    params: SimulationParams | None = None,
) -> Cohort:
    """A cohort with known truth; the same seed gives the same cohort."""
    if n_patients < 0 or draws_per_patient < 0:
        raise InvalidInput("n_patients and draws_per_patient must be >= 0")
    params = params or SimulationParams()
    # Dialects come from a child generator: the counts of a seed do not depend on them.
    chooser = rng.spawn(1)[0]
    truth = _Truth(rng, params)
    hotspots = load_hotspots()
    patients = tuple(
        replace(
            _simulate_patient(i, draws_per_patient, hotspots, truth, rng, params),
            dialect=params.dialects[int(chooser.integers(len(params.dialects)))],
        )
        for i in range(n_patients)
    )
    return Cohort(patients=patients, controls=dict(truth.controls), params=params)


def substitution_classes(cohort: Cohort) -> dict[str, str]:
    """Substitution class of every tracked locus key (for ``fit_background``)."""
    return {
        locus.key: substitution_class(locus.ref, locus.alt)
        for patient in cohort.patients
        for locus in patient.loci
    }


def locus_evidence(
    patient: SimPatient, draw: SimDraw, backgrounds: Mapping[str, LocusBackground]
) -> list[LocusEvidence]:
    """The MRD caller's input for one simulated draw, the loci weighted by their true allele
    fraction in tumour DNA (so the fraction estimated is the ctDNA fraction)."""
    return [
        LocusEvidence(
            key=locus.key,
            alt_reads=alt,
            depth=depth,
            tumor_af=locus.allele_fraction,
            background=backgrounds[locus.key],
        )
        for locus, alt, depth in zip(patient.loci, draw.alt_reads, draw.depths, strict=True)
    ]


def _chrom_order(chrom: str) -> int:
    return list(GRCH38_CONTIG_LENGTHS).index(chrom)


def _phred_likelihoods(alt_reads: int, depth: int, error: float = 1e-3) -> tuple[int, ...]:
    """bcftools-style PL of 0/0, 0/1, 1/1 from the counts (binomial, per-read error)."""
    ref_reads = depth - alt_reads
    log10 = [
        alt_reads * math.log10(max(f, 1e-300)) + ref_reads * math.log10(max(1.0 - f, 1e-300))
        for f in (error, 0.5, 1.0 - error)
    ]
    best = max(log10)
    return tuple(round(-10.0 * (value - best)) for value in log10)


def _dialect_header(
    header: pysam.VariantHeader, dialect: str, sample: str, normal: str | None
) -> tuple[list[str], str, str | None]:
    """Declare the dialect's fields; returns (sample columns in file order, the tumour column,
    the normal column or None), each named as the caller names them."""
    formats = header.formats
    if dialect == "mutect2":
        header.add_line(f"##tumor_sample={sample}")
        if normal:
            header.add_line(f"##normal_sample={normal}")
        formats.add("GT", 1, "String", "Genotype")
        formats.add("AD", "R", "Integer", "Allelic depths for the ref and alt alleles")
        formats.add("AF", "A", "Float", "Allele fractions of alternate alleles in the tumor")
        formats.add("DP", 1, "Integer", "Approximate read depth")
        return ([normal, sample] if normal else [sample]), sample, normal
    if dialect == "strelka2":
        header.info.add("SOMATIC", 0, "Flag", "Somatic mutation")
        formats.add("DP", 1, "Integer", "Read depth for tier1")
        for base in "ACGT":
            formats.add(f"{base}U", 2, "Integer", f"Number of '{base}' alleles used in tiers 1,2")
        formats.add("TAR", 2, "Integer", "Reads strongly supporting alternate allele for tiers 1,2")
        formats.add("TIR", 2, "Integer", "Reads strongly supporting indel allele for tiers 1,2")
        return ["NORMAL", "TUMOR"], "TUMOR", ("NORMAL" if normal else None)
    if dialect == "varscan2":
        formats.add("GT", 1, "String", "Genotype")
        formats.add("DP", 1, "Integer", "Read Depth")
        formats.add("RD", 1, "Integer", "Depth of reference-supporting bases (reads1)")
        formats.add("AD", 1, "Integer", "Depth of variant-supporting bases (reads2)")
        formats.add("FREQ", 1, "String", "Variant allele frequency")
        formats.add("DP4", 1, "String", "Strand read counts: ref/fwd, ref/rev, var/fwd, var/rev")
        if normal:  # VarScan2 somatic names its two columns NORMAL and TUMOR
            return ["NORMAL", "TUMOR"], "TUMOR", "NORMAL"
        return [sample], sample, None
    if dialect == "vardict":
        header.add_line("##source=VarDict")
        formats.add("GT", 1, "String", "Genotype")
        formats.add("DP", 1, "Integer", "Total Depth")
        formats.add("VD", 1, "Integer", "Variant Depth")
        formats.add("AD", "R", "Integer", "Allelic depths for the ref and alt alleles")
        formats.add("AF", "A", "Float", "Allele Frequency")
        formats.add("RD", 2, "Integer", "Reference forward, reverse reads")
        formats.add("ALD", 2, "Integer", "Variant forward, reverse reads")
        # VarDict paired mode: the tumour column first, the matched normal second
        return ([sample, normal] if normal else [sample]), sample, normal
    if dialect == "bcftools":
        header.info.add("DP", 1, "Integer", "Raw read depth")
        header.info.add(
            "DP4",
            4,
            "Integer",
            "Number of high-quality ref-forward , ref-reverse, alt-forward and alt-reverse bases",
        )
        formats.add("GT", 1, "String", "Genotype")
        formats.add("PL", "G", "Integer", "List of Phred-scaled genotype likelihoods")
        formats.add("AD", "R", "Integer", "Allelic depths (normal column)")
        return ([normal, sample] if normal else [sample]), sample, normal
    raise InvalidInput(f"unknown VCF dialect {dialect!r}; one of {DIALECTS}")


def _fill_dialect(
    record: pysam.VariantRecord,
    dialect: str,
    column: str,
    alleles: tuple[str, str],
    alt_reads: int,
    depth: int,
    *,
    info: bool = True,
) -> None:
    """Write one column's counts in the dialect; ``info`` False for the matched-normal column
    (bcftools keeps a single sample's counts in INFO; with two columns each has its AD)."""
    ref_reads = depth - alt_reads
    # strand splits: deterministic halves (the counts, not the strands, are simulated)
    ref_fwd, alt_fwd = ref_reads // 2, alt_reads // 2
    genotype = (0, 1) if alt_reads > 0 else (0, 0)
    call = record.samples[column]
    if dialect == "mutect2":
        call["GT"] = genotype
        call["AD"] = (ref_reads, alt_reads)
        call["AF"] = (alt_reads / depth if depth else 0.0,)
        call["DP"] = depth
    elif dialect == "strelka2":
        record.info["SOMATIC"] = True
        call["DP"] = depth
        ref, alt = alleles
        if len(ref) == 1 and len(alt) == 1:
            for base in "ACGT":
                count = alt_reads if base == alt else ref_reads if base == ref else 0
                call[f"{base}U"] = (count, count)
        else:
            call["TAR"] = (ref_reads, ref_reads)
            call["TIR"] = (alt_reads, alt_reads)
    elif dialect == "varscan2":
        call["GT"] = genotype
        call["DP"] = depth
        call["RD"] = ref_reads
        call["AD"] = alt_reads
        call["FREQ"] = f"{100.0 * alt_reads / depth if depth else 0.0:.2f}%"
        call["DP4"] = f"{ref_fwd},{ref_reads - ref_fwd},{alt_fwd},{alt_reads - alt_fwd}"
    elif dialect == "vardict":
        call["GT"] = genotype
        call["DP"] = depth
        call["VD"] = alt_reads
        call["AD"] = (ref_reads, alt_reads)
        call["AF"] = (alt_reads / depth if depth else 0.0,)
        call["RD"] = (ref_fwd, ref_reads - ref_fwd)
        call["ALD"] = (alt_fwd, alt_reads - alt_fwd)
    else:
        # bcftools call: strand counts in INFO/DP4 for a single sample; with a matched normal
        # each column has its own FORMAT/AD (multi-sample calling), INFO left to the tumour.
        call["GT"] = genotype
        if info:
            record.info["DP"] = depth
            record.info["DP4"] = (ref_fwd, ref_reads - ref_fwd, alt_fwd, alt_reads - alt_fwd)
            call["PL"] = _phred_likelihoods(alt_reads, depth)
        if not info or len(record.samples) > 1:
            call["AD"] = (ref_reads, alt_reads)


def write_records(
    path: str | Path,
    sample: str,
    records: Sequence[tuple[str, int, str, str, int, int, str]],
    params: SimulationParams,
    *,
    dialect: str = "mutect2",
    normal: tuple[str, Sequence[tuple[int, int]]] | None = None,
) -> Path:
    """Write a bgzipped, tabix-indexed VCF of one sample's counts in a caller's dialect.

    Records are (chrom, pos, ref, alt, alt_reads, depth, filter). Every dialect carries the
    same alt reads and depth (see ``DIALECTS``); Strelka2 writes the sample as TUMOR next to
    a NORMAL column (empty without a normal), as its somatic workflow names them. ``normal``
    = (its sample name, its (alt reads, depth) per record, in record order) adds a
    matched-normal column.
    """
    out_path = Path(path)
    if not out_path.name.endswith(".vcf.gz"):
        raise InvalidInput(f"{out_path}: a simulated VCF must be written to a .vcf.gz path")
    header = pysam.VariantHeader()
    header.add_line("##reference=GRCh38")
    header.add_line(f"##source=ctdna-monitor simulate {params.version} ({dialect})")
    for chrom in sorted({r[0] for r in records}, key=_chrom_order):
        header.contigs.add(chrom, length=GRCH38_CONTIG_LENGTHS[chrom], assembly="GRCh38")
    header.filters.add(_WEAK_FILTER, None, None, "Simulated low-confidence call")
    columns, tumor, normal_column = _dialect_header(
        header, dialect, sample, normal[0] if normal else None
    )
    for column in columns:
        header.add_sample(column)
    normal_counts = list(normal[1]) if normal else [None] * len(records)
    if len(normal_counts) != len(records):
        raise InvalidInput("the normal column needs one (alt reads, depth) per record")
    ordered = sorted(
        zip(records, normal_counts, strict=True), key=lambda r: (_chrom_order(r[0][0]), r[0][1])
    )
    with pysam.VariantFile(str(out_path), "wz", header=header) as vcf:
        for (chrom, pos, ref, alt, alt_reads, depth, filter_), counts in ordered:
            record = vcf.new_record(
                contig=chrom,
                start=pos - 1,
                stop=pos - 1 + len(ref),
                alleles=(ref, alt),
                filter=filter_,
            )
            if normal_column is not None and counts is not None:
                _fill_dialect(record, dialect, normal_column, (ref, alt), *counts, info=False)
            _fill_dialect(record, dialect, tumor, (ref, alt), alt_reads, depth)
            vcf.write(record)
    pysam.tabix_index(str(out_path), preset="vcf", force=True)
    return out_path


def write_plasma_vcf(
    path: str | Path,
    draw: SimDraw,
    patient: SimPatient,
    params: SimulationParams | None = None,
    *,
    dialect: str | None = None,
) -> Path:
    """Force-called plasma VCF: every tracked locus, 0 alt reads included, FILTER PASS, in the
    patient's dialect unless ``dialect`` is given; with the patient's buffy-coat normal in a
    normal column when it was sequenced (the same counts in every draw: one normal)."""
    records = [
        (locus.chrom, locus.pos, locus.ref, locus.alt, alt, depth, "PASS")
        for locus, alt, depth in zip(patient.loci, draw.alt_reads, draw.depths, strict=True)
    ]
    return write_records(
        path,
        draw.sample_id,
        records,
        params or SimulationParams(),
        dialect=dialect or patient.dialect,
        normal=(patient.normal_sample_id, patient.normal) if patient.normal else None,
    )


def write_tissue_vcf(
    path: str | Path,
    patient: SimPatient,
    params: SimulationParams | None = None,
    *,
    dialect: str | None = None,
) -> Path:
    """Tumour tissue VCF: the tracked clonal SNVs and the decoys, each with its FILTER, in the
    patient's dialect unless ``dialect`` is given."""
    records = [
        (v.chrom, v.pos, v.ref, v.alt, v.alt_reads, v.depth, v.filter) for v in patient.tissue
    ]
    return write_records(
        path,
        patient.tissue_sample_id,
        records,
        params or SimulationParams(),
        dialect=dialect or patient.dialect,
    )
