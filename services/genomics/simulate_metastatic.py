"""Seeded simulator of a patient with metastatic ER+ breast cancer on an aromatase inhibitor in
whom an ESR1 resistance clone emerges (the PADA-1 / SERENA-6 situation), with known truth.

Every draw is a force-called hotspot panel (every row of hotspots.tsv reported, zero mutant
reads included). The sensitive tumour falls on therapy to a nadir,
s_t = max(nadir, p_0 · 0.35^t), while the resistant clone grows from draw t_e on,
r_t = r_0 · growth^(t − t_e); the tumour fraction is p_t = s_t + r_t. The truncal variant
(PIK3CA H1047R by default) is in every tumour cell, VAF p_t/2; the resistance variant (ESR1
D538G) only in the resistant clone, VAF r_t/2 (clonal heterozygous, copy-neutral;
domain-anchors §4.6-4.7). Mutant molecules M ~ Binomial(R, VAF + (1 − VAF)·e)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from services.genomics.simulate import Hotspot, SimulationParams, load_hotspots, write_records


@dataclass(frozen=True, slots=True)
class MetastaticParams:
    version: str = "sim-metastatic-1"
    draws: int = 8
    interval_days: int = 60
    depth_range: tuple[int, int] = (2500, 6000)
    error_rate: float = 5e-5
    baseline_fraction: float = 0.04
    nadir_fraction: float = 0.004
    trunk: tuple[str, str] = ("PIK3CA", "p.H1047R")
    emerging: tuple[str, str] = ("ESR1", "p.D538G")
    emerge_at_draw: int = 3
    resistant_start: float = 5e-4
    resistant_growth: float = 2.5
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
    patient_id: str
    therapy_start: date
    drugs: tuple[str, ...]
    trunk: Hotspot
    emerging: Hotspot
    draws: tuple[PanelDraw, ...]

    @property
    def first_visible_draw(self) -> int:
        """Index of the first draw at which the emerging clone has >= 2 mutant reads."""
        for index, draw in enumerate(self.draws):
            for hotspot, alt_reads, _ in draw.counts:
                if hotspot == self.emerging and alt_reads >= 2:
                    return index
        return len(self.draws)


def _pick(hotspots: tuple[Hotspot, ...], gene: str, protein: str) -> Hotspot:
    return next(h for h in hotspots if h.gene == gene and h.protein == protein)


def simulate_metastatic_patient(
    patient_id: str, rng: np.random.Generator, params: MetastaticParams | None = None
) -> MetastaticPatient:
    params = params or MetastaticParams()
    hotspots = load_hotspots()
    trunk = _pick(hotspots, *params.trunk)
    emerging = _pick(hotspots, *params.emerging)
    draws: list[PanelDraw] = []
    for t in range(params.draws):
        sensitive = max(params.nadir_fraction, params.baseline_fraction * 0.35**t)
        resistant = 0.0
        if t >= params.emerge_at_draw:
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
            rate = vaf + (1 - vaf) * params.error_rate
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
        drugs=("letrozole", "palbociclib"),
        trunk=trunk,
        emerging=emerging,
        draws=tuple(draws),
    )


def write_panel_vcf(path: str | Path, draw: PanelDraw) -> Path:
    """A force-called hotspot-panel plasma VCF of one draw."""
    records = [
        (h.chrom, h.pos, h.ref, h.alt, alt_reads, depth, "PASS")
        for h, alt_reads, depth in draw.counts
    ]
    return write_records(path, draw.sample_id, records, SimulationParams())
