"""Seeded simulator of patients with metastatic ER+ breast cancer on endocrine therapy in whom an
ESR1 resistance clone may emerge (the PADA-1 / SERENA-6 situation), with known truth.

Every draw is a force-called hotspot panel (every row of hotspots.tsv reported, zero mutant
reads included). The sensitive tumour falls on therapy to a nadir,
s_t = max(nadir, p_0 · 0.35^t), while the resistant clone grows from draw t_e on,
r_t = r_0 · growth^(t − t_e); the tumour fraction is p_t = s_t + r_t. The truncal variant
(PIK3CA H1047R by default) is in every tumour cell, VAF p_t/2; the resistance variant (ESR1
D538G by default, or none) only in the resistant clone, VAF r_t/2 (clonal heterozygous,
copy-neutral; domain-anchors §4.6-4.7). Mutant molecules M ~ Binomial(R, VAF + (1 − VAF)·e_i),
with e_i the locus' true error rate: the same for every locus, or, with
``error_concentration``, drawn per locus from Beta(c·m, c·(1 − m)) around the assay mean m.

``simulate_metastatic_cohort`` mixes assays (depth ranges, error rates), therapies (AI alone,
AI + CDK4/6 inhibitor, SERD + CDK4/6 inhibitor), schedules and clone kinetics, with some
patients who never grow a resistance clone; each assay has its per-locus error rates and a panel
of control draws (the lab's cross-patient controls) to estimate the background from, as the
service does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np
from scipy import stats

from services.genomics.background import BackgroundCounts
from services.genomics.simulate import (
    Hotspot,
    SimulationParams,
    load_hotspots,
    locus_key,
    write_records,
)


@dataclass(frozen=True, slots=True)
class MetastaticParams:
    version: str = "sim-metastatic-2"
    draws: int = 8
    interval_days: int = 60
    depth_range: tuple[int, int] = (2500, 6000)
    error_rate: float = 5e-5
    error_concentration: float | None = None
    """None: every locus has ``error_rate``; else per-locus Beta(c·m, c·(1 − m)) rates."""
    baseline_fraction: float = 0.04
    nadir_fraction: float = 0.004
    trunk: tuple[str, str] = ("PIK3CA", "p.H1047R")
    emerging: tuple[str, str] | None = ("ESR1", "p.D538G")
    """None: no resistance clone ever grows."""
    emerge_at_draw: int = 3
    resistant_start: float = 5e-4
    resistant_growth: float = 2.5
    drugs: tuple[str, ...] = ("letrozole", "palbociclib")
    n_controls: int = 0
    """Control draws per locus (cross-patient controls of the same assay) in the truth."""
    start_date: date = date(2024, 1, 8)


@dataclass(frozen=True, slots=True)
class PanelDraw:
    sample_id: str
    collection_date: date
    true_fraction: float
    emerging_ccf: float
    counts: tuple[tuple[Hotspot, int, int], ...]  # (hotspot, alt reads, depth)


@dataclass(frozen=True, slots=True)
class MetastaticPatient:
    """One simulated patient; ``error_rates`` and ``controls`` are keyed by ``key_of``."""

    patient_id: str
    therapy_start: date
    drugs: tuple[str, ...]
    trunk: Hotspot
    emerging: Hotspot | None
    draws: tuple[PanelDraw, ...]
    error_rates: Mapping[str, float] = field(default_factory=dict)
    controls: Mapping[str, tuple[BackgroundCounts, ...]] = field(default_factory=dict)
    params: MetastaticParams = field(default_factory=MetastaticParams)

    @property
    def first_visible_draw(self) -> int:
        """Index of the first draw at which the emerging clone has >= 2 mutant reads."""
        for index, draw in enumerate(self.draws):
            for hotspot, alt_reads, _ in draw.counts:
                if hotspot == self.emerging and alt_reads >= 2:
                    return index
        return len(self.draws)

    def oracle_visible_draw(self, alpha: float = 0.01) -> int | None:
        """First draw where the clone is present and a one-sided binomial test of its mutant
        reads against the locus' TRUE error rate, at the true depth, has p < alpha: the
        earliest draw at which the clone is statistically visible (None if never)."""
        if self.emerging is None:
            return None
        rate = self.error_rates.get(key_of(self.emerging), self.params.error_rate)
        for index, draw in enumerate(self.draws):
            if draw.emerging_ccf <= 0:
                continue
            for hotspot, alt_reads, depth in draw.counts:
                if hotspot == self.emerging and stats.binom.sf(alt_reads - 1, depth, rate) < alpha:
                    return index
        return None


def key_of(hotspot: Hotspot) -> str:
    return locus_key(hotspot.chrom, hotspot.pos, hotspot.ref, hotspot.alt)


def _pick(hotspots: tuple[Hotspot, ...], gene: str, protein: str) -> Hotspot:
    return next(h for h in hotspots if h.gene == gene and h.protein == protein)


def _error_rates(
    hotspots: tuple[Hotspot, ...], rng: np.random.Generator, params: MetastaticParams
) -> dict[str, float]:
    c, m = params.error_concentration, params.error_rate
    if c is None:
        return {key_of(h): m for h in hotspots}
    return {key_of(h): float(rng.beta(c * m, c * (1.0 - m))) for h in hotspots}


@dataclass(frozen=True, slots=True)
class Assay:
    """A lab's assay: the true error rate of every panel locus, and its control draws (the
    cross-patient controls the service estimates the background from)."""

    error_rates: Mapping[str, float]
    controls: Mapping[str, tuple[BackgroundCounts, ...]]


def simulate_assay(rng: np.random.Generator, params: MetastaticParams) -> Assay:
    """Per-locus error rates (``error_rate``, or Beta around it with ``error_concentration``)
    and ``n_controls`` control draws per locus at depths of ``depth_range``."""
    hotspots = load_hotspots()
    rates = _error_rates(hotspots, rng, params)
    controls: dict[str, tuple[BackgroundCounts, ...]] = {}
    for hotspot in hotspots if params.n_controls else ():
        key = key_of(hotspot)
        depths = rng.integers(*params.depth_range, size=params.n_controls)
        alts = rng.binomial(depths, rates[key])
        controls[key] = tuple(
            BackgroundCounts(int(a), int(d)) for a, d in zip(alts, depths, strict=True)
        )
    return Assay(rates, controls)


def simulate_metastatic_patient(
    patient_id: str,
    rng: np.random.Generator,
    params: MetastaticParams | None = None,
    *,
    assay: Assay | None = None,
) -> MetastaticPatient:
    """One patient; with ``assay``, its error rates and controls are the assay's (shared by
    every patient of the lab) instead of drawn for this patient."""
    params = params or MetastaticParams()
    hotspots = load_hotspots()
    trunk = _pick(hotspots, *params.trunk)
    emerging = _pick(hotspots, *params.emerging) if params.emerging else None
    if assay is None:
        assay = simulate_assay(rng, params)
    rates = assay.error_rates
    draws: list[PanelDraw] = []
    for t in range(params.draws):
        sensitive = max(params.nadir_fraction, params.baseline_fraction * 0.35**t)
        resistant = 0.0
        if emerging is not None and t >= params.emerge_at_draw:
            steps = t - params.emerge_at_draw
            resistant = params.resistant_start * params.resistant_growth**steps
        fraction = min(0.5, sensitive + resistant)
        ccf_in_tumour = min(1.0, resistant / fraction) if fraction else 0.0
        counts = []
        for hotspot in hotspots:
            depth = int(rng.integers(*params.depth_range))
            if hotspot == trunk:
                vaf = fraction / 2
            elif hotspot == emerging:
                vaf = fraction * ccf_in_tumour / 2
            else:
                vaf = 0.0
            rate = vaf + (1 - vaf) * rates[key_of(hotspot)]
            counts.append((hotspot, int(rng.binomial(depth, rate)), depth))
        draws.append(
            PanelDraw(
                sample_id=f"{patient_id}-D{t + 1:02d}",
                collection_date=params.start_date + timedelta(days=params.interval_days * t),
                true_fraction=fraction,
                emerging_ccf=ccf_in_tumour,
                counts=tuple(counts),
            )
        )
    return MetastaticPatient(
        patient_id=patient_id,
        therapy_start=params.start_date,
        drugs=params.drugs,
        trunk=trunk,
        emerging=emerging,
        draws=tuple(draws),
        error_rates=rates,
        controls=assay.controls,
        params=params,
    )


# Assays (unique-molecule depth range, mean background error), therapies and ESR1 variants the
# cohort mixes, with their weights. D538G and Y537S are the commonest ESR1 LBD mutations in
# plasma (PADA-1, SERENA-6).
COHORT_ASSAYS: tuple[tuple[tuple[int, int], float], ...] = (
    ((1500, 4000), 1e-5),
    ((2500, 6000), 5e-5),
    ((2500, 6000), 1.5e-4),
    ((6000, 15000), 2e-5),
    ((6000, 15000), 1e-4),
)
ERROR_CONCENTRATION = 2e4
COHORT_THERAPIES: tuple[tuple[tuple[str, ...], float], ...] = (
    (("letrozole", "palbociclib"), 0.35),
    (("anastrozole", "ribociclib"), 0.15),
    (("letrozole",), 0.15),
    (("fulvestrant", "palbociclib"), 0.2),
    (("fulvestrant", "abemaciclib"), 0.15),
)
COHORT_ESR1: tuple[tuple[str, float], ...] = (
    ("p.D538G", 0.35),
    ("p.Y537S", 0.3),
    ("p.Y537N", 0.1),
    ("p.Y537C", 0.1),
    ("p.L536R", 0.1),
    ("p.E380Q", 0.05),
)

ESR1_CLONES: tuple[tuple[tuple[str, str], float], ...] = tuple(
    (("ESR1", protein), weight) for protein, weight in COHORT_ESR1
)
# A clone of each monitored gene: ESR1 and ERBB2 resist the endocrine therapies of the cohort
# (Nayar et al., Nat Genet 2019 for ERBB2); PIK3CA (beside the truncal H1047R) and AKT1
# clones are actionable (alpelisib / inavolisib / capivasertib), whatever the therapy.
FOUR_GENE_CLONES: tuple[tuple[tuple[str, str], float], ...] = (
    *((("ESR1", protein), 0.55 * weight) for protein, weight in COHORT_ESR1),
    (("ERBB2", "p.L755S"), 0.06),
    (("ERBB2", "p.V777L"), 0.05),
    (("ERBB2", "p.S310F"), 0.04),
    (("PIK3CA", "p.E545K"), 0.08),
    (("PIK3CA", "p.E542K"), 0.07),
    (("AKT1", "p.E17K"), 0.15),
)

_T = TypeVar("_T")


def _weighted(rng: np.random.Generator, options: tuple[tuple[_T, float], ...]) -> _T:
    weights = np.array([w for _, w in options])
    return options[int(rng.choice(len(options), p=weights / weights.sum()))][0]


def simulate_metastatic_cohort(
    n_patients: int,
    rng: np.random.Generator,
    *,
    no_clone_fraction: float = 0.3,
    n_controls: int = 100,
    prefix: str = "MET",
    clones: tuple[tuple[tuple[str, str], float], ...] = ESR1_CLONES,
) -> tuple[MetastaticPatient, ...]:
    """A mixed cohort with known truth.

    Per patient: one of ``COHORT_ASSAYS`` (per-locus error rates around its mean, concentration
    ``ERROR_CONCENTRATION``, and ``n_controls`` control draws per locus, both shared by the
    assay's patients as cross-patient controls are); a therapy of ``COHORT_THERAPIES``; 8-10
    draws 56-90 days apart; with probability 1 - ``no_clone_fraction`` a clone of ``clones``
    (by default the ESR1 variants of ``COHORT_ESR1``; ``FOUR_GENE_CLONES`` for all four genes)
    emerging at draw 1..draws-3 from a tumour fraction of 10^U(-4, -3),
    growing 1.6-4x per draw; sensitive tumour from 10^U(-2, -0.8) down to a nadir of
    10^U(-3.3, -2.3).
    """
    assays = [
        simulate_assay(
            rng,
            replace(
                MetastaticParams(),
                depth_range=depth_range,
                error_rate=error_rate,
                error_concentration=ERROR_CONCENTRATION,
                n_controls=n_controls,
            ),
        )
        for depth_range, error_rate in COHORT_ASSAYS
    ]
    out: list[MetastaticPatient] = []
    for index in range(1, n_patients + 1):
        which = int(rng.integers(len(COHORT_ASSAYS)))
        depth_range, error_rate = COHORT_ASSAYS[which]
        drugs = _weighted(rng, COHORT_THERAPIES)
        draws = int(rng.integers(8, 11))
        emerging = None
        if rng.random() >= no_clone_fraction:
            emerging = _weighted(rng, clones)
        params = replace(
            MetastaticParams(),
            draws=draws,
            interval_days=int(rng.integers(56, 91)),
            depth_range=depth_range,
            error_rate=error_rate,
            error_concentration=ERROR_CONCENTRATION,
            baseline_fraction=float(10 ** rng.uniform(-2.0, -0.8)),
            nadir_fraction=float(10 ** rng.uniform(-3.3, -2.3)),
            emerging=emerging,
            emerge_at_draw=int(rng.integers(1, draws - 2)),
            resistant_start=float(10 ** rng.uniform(-4.0, -3.0)),
            resistant_growth=float(rng.uniform(1.6, 4.0)),
            drugs=drugs,
            n_controls=n_controls,
        )
        out.append(
            simulate_metastatic_patient(f"{prefix}-{index:03d}", rng, params, assay=assays[which])
        )
    return tuple(out)


def write_panel_vcf(path: str | Path, draw: PanelDraw) -> Path:
    """A force-called hotspot-panel plasma VCF of one draw."""
    records = [
        (h.chrom, h.pos, h.ref, h.alt, alt_reads, depth, "PASS")
        for h, alt_reads, depth in draw.counts
    ]
    return write_records(path, draw.sample_id, records, SimulationParams())
