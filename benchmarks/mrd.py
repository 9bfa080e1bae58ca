"""`python -m benchmarks.mrd`: tumour-informed MRD calling on simulated cohorts with known truth,
next to the likelihood-ratio oracle, in several worlds (issue 15, "The benchmark tells the truth").

Each scenario is a cohort of ``services.genomics.simulate`` (early breast cancer after surgery,
30 % of patients relapsing with ctDNA growing from an onset day) in one world: draw-to-draw
variation of each locus' error rate (lognormal sigma), the lab's mean error rate, with or
without a panel of normals (50 normal plasmas per locus), with or without a matched normal
(a buffy coat per patient, in every plasma VCF). Every patient goes through the production
functions, exactly as the service runs them for a stored patient:

1. tracked set = ``tracking.select_tracked`` on the tissue VCF's variants (decoys included),
   allele weights = ``mrd.allele_weights`` (tissue VAF / purity estimated from the tissue);
2. the site's assay model = ``background.fit_assay_model`` on what the service would hold as
   controls (the panel of normals, each patient's matched normal once) and on every plasma
   draw at its patient's tracked loci (weighted by P(no ctDNA)); each patient's loci get
   ``background.locus_backgrounds`` from their own controls;
3. ``mrd.call_series``: draws called in date order with the patient's earlier NEGATIVE draws
   added, the patient status, the confirmed molecular relapse and the lead time.

The oracle knows the truth: the true mean error rate of every locus, the true draw-to-draw
sigma and the true allele fractions; its score is the same INVAR likelihood ratio with the
true rates, its threshold calibrated at exactly the claimed 99 % on null replicates from the
true model (``oracle_lr``, ``oracle_threshold``): the best test the reads allow at the claimed
level. "Relapse" for the oracle is its first positive draw (no confirmation).

Reported per scenario: per-sample specificity (P(not POSITIVE | no ctDNA), INDETERMINATE
counted as not positive and shown apart), the share of never-relapsing patients ever confirmed
positive (false molecular relapse), sensitivity per true tumour-fraction bin beside the oracle
(paired on the same draws), relapsers detected before clinical relapse and the median lead
time. Each run draws a fresh seed unless ``--seed`` is given, and prints it.
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from services.genomics.background import (
    AssayModel,
    BackgroundCounts,
    BackgroundParams,
    DrawLocus,
    fit_assay_model,
    locus_backgrounds,
)
from services.genomics.mrd import (
    MrdParams,
    MrdSeries,
    MrdStatus,
    PatientStatus,
    PlasmaDraw,
    allele_weights,
    call_series,
    oracle_lr,
    oracle_threshold,
    patient_seed,
)
from services.genomics.simulate import Cohort, SimPatient, SimulationParams, simulate_cohort
from services.genomics.tracking import TissueCandidate, TrackingParams, select_tracked

SITE = "bench"
ASSAY = "default"
MRD_PARAMS = MrdParams()
BACKGROUND_PARAMS = BackgroundParams()
TRACKING_PARAMS = TrackingParams()
# (label, low, high): true ctDNA fraction in [low, high)
BINS: tuple[tuple[str, float, float], ...] = (
    ("<1e-4", 0.0, 1e-4),
    ("1e-4-3e-4", 1e-4, 3e-4),
    ("3e-4-1e-3", 3e-4, 1e-3),
    ("1e-3-1e-2", 1e-3, 1e-2),
    (">=1e-2", 1e-2, math.inf),
)
FALSE_RELAPSE_TARGET = 0.02


@dataclass(frozen=True, slots=True)
class Scenario:
    """One world: draw-to-draw sigma, the lab's mean error, which controls the site holds.
    ``margin`` is the sensitivity gap to the oracle allowed in each bin from 1e-4 up (None:
    no sensitivity target, e.g. sigma = 1, where specificity of POSITIVE calls is the claim)."""

    name: str
    sigma: float
    error_mean: float
    panel: bool
    matched_normal: bool
    margin: float | None


SCENARIOS: tuple[Scenario, ...] = tuple(
    Scenario(
        name=f"sigma{sigma:g}-err{error:g}-{'pon' if panel else 'nopon'}",
        sigma=sigma,
        error_mean=error,
        panel=panel,
        matched_normal=True,
        margin={0.0: 0.05, 0.5: 0.10}.get(sigma),
    )
    for sigma in (0.0, 0.5, 1.0)
    for error in (1e-4, 3e-4)
    for panel in (True, False)
) + (Scenario("sigma0-err3e-4-no-controls", 0.0, 3e-4, False, False, 0.05),)


@dataclass
class DrawResult:
    """One plasma draw: the truth, our call and the oracle's."""

    sample_id: str
    true_fraction: float
    call: Any  # MrdCall
    oracle_positive: bool = False


@dataclass
class PatientResult:
    patient: SimPatient
    series: MrdSeries
    draws: list[DrawResult] = field(default_factory=list)
    tracked: dict[str, float] = field(default_factory=dict)


def simulation_params(scenario: Scenario) -> SimulationParams:
    return SimulationParams(
        error_mean=scenario.error_mean,
        dispersion_sigma=scenario.sigma,
        n_controls=50 if scenario.panel else 0,
        matched_normal=scenario.matched_normal,
    )


def tracked_weights(patient: SimPatient) -> dict[str, float]:
    """Locus key -> allele weight of the loci the service would track from this tissue."""
    candidates = [
        TissueCandidate(
            key=v.key,
            gene=v.gene,
            chrom=v.chrom,
            pos=v.pos,
            ref=v.ref,
            alt=v.alt,
            vaf=v.vaf,
            alt_reads=v.alt_reads,
            depth=v.depth,
            passed=v.filter == "PASS",
            normal_vaf=v.normal_alt_reads / v.normal_depth if v.normal_depth else None,
            normal_depth=v.normal_depth,
        )
        for v in patient.tissue
    ]
    by_key = {c.key: c for c in candidates}
    kept = [d.key for d in select_tracked(candidates, TRACKING_PARAMS) if d.kept]
    return allele_weights({key: by_key[key].vaf for key in kept}, MRD_PARAMS)


def plasma_draws(patient: SimPatient) -> list[PlasmaDraw]:
    """The patient's plasma draws as the service stores them: a force-called VCF reports the
    simulated tumour loci only (a tracked decoy is missing evidence, not zero reads)."""
    return [
        PlasmaDraw(
            sample_id=draw.sample_id,
            collection_date=draw.collection_date,
            counts={
                locus.key: (alt, depth)
                for locus, alt, depth in zip(patient.loci, draw.alt_reads, draw.depths, strict=True)
            },
            assay=ASSAY,
        )
        for draw in patient.draws
    ]


def site_controls(cohort: Cohort) -> dict[str, list[BackgroundCounts]]:
    """What the service holds as independent controls of each locus: the panel of normals and
    each patient's matched normal, counted once per patient."""
    controls: dict[str, list[BackgroundCounts]] = {
        key: list(rows) for key, rows in cohort.controls.items() if rows
    }
    for patient in cohort.patients:
        for key, rows in own_normals(patient).items():
            controls.setdefault(key, []).extend(rows)
    return controls


def own_normals(patient: SimPatient) -> dict[str, list[BackgroundCounts]]:
    """The patient's matched normal at its loci (none when it was not sequenced)."""
    if patient.normal is None:
        return {}
    return {
        locus.key: [BackgroundCounts(alt, depth)]
        for locus, (alt, depth) in zip(patient.loci, patient.normal, strict=True)
    }


@dataclass
class Site:
    """A simulated site as the service holds it: the cohort (with its truth), the controls of
    every locus, each patient's tracked loci and the assay model fitted on them."""

    scenario: Scenario
    cohort: Cohort
    controls: dict[str, list[BackgroundCounts]]
    tracked: dict[str, dict[str, float]]
    model: AssayModel | None


def simulate_site(scenario: Scenario, patients: int, draws: int, seed: int) -> Site:
    cohort = simulate_cohort(
        patients, draws, np.random.default_rng(seed), simulation_params(scenario)
    )
    controls = site_controls(cohort)
    tracked = {p.patient_id: tracked_weights(p) for p in cohort.patients}
    fit_draws = [
        [
            DrawLocus(key, *draw.counts[key], weight)
            for key, weight in sorted(tracked[p.patient_id].items())
            if key in draw.counts and draw.counts[key][1] > 0
        ]
        for p in cohort.patients
        for draw in plasma_draws(p)
    ]
    model = fit_assay_model(controls, BACKGROUND_PARAMS, draws=[d for d in fit_draws if d])
    return Site(scenario, cohort, controls, tracked, model)


def call_site(
    site: Site, params: MrdParams = MRD_PARAMS, *, site_id: str = SITE
) -> list[PatientResult]:
    """Every patient's series, called as the service calls it (seeded as the service seeds a
    patient of site ``site_id``)."""
    results = []
    for patient in site.cohort.patients:
        weights = site.tracked[patient.patient_id]
        own = {k: v for k, v in own_normals(patient).items() if k in weights}
        shared = {key: list(site.controls.get(key, [])) for key in weights}
        for key, rows in own.items():  # the site's controls hold this patient's normal too
            for row in rows:
                shared[key].remove(row)
        backgrounds = locus_backgrounds(
            site.model, shared, BACKGROUND_PARAMS, loci=weights, own_normals=own
        )
        series = call_series(
            plasma_draws(patient),
            weights,
            {ASSAY: backgrounds},
            surgery_dates=[patient.surgery_date],
            clinical_relapse_date=patient.clinical_relapse_date,
            params=params,
            background_params=BACKGROUND_PARAMS,
            seed=patient_seed(site_id, patient.patient_id),
        )
        truth = {d.sample_id: d.true_fraction for d in patient.draws}
        results.append(
            PatientResult(
                patient=patient,
                series=series,
                draws=[DrawResult(c.sample_id, truth[c.sample_id], c.call) for c in series.calls],
                tracked=weights,
            )
        )
    return results


def run_scenario(
    scenario: Scenario,
    patients: int,
    draws: int,
    seed: int,
    params: MrdParams = MRD_PARAMS,
    *,
    site: Site | None = None,
) -> dict[str, Any]:
    """The scenario's summary; ``site`` calls an already simulated (or altered) site."""
    started = time.perf_counter()
    site = site or simulate_site(scenario, patients, draws, seed)
    fitted = time.perf_counter()
    results = call_site(site, params)
    score_oracle(results, scenario, params, np.random.default_rng([seed, 1]))
    summary = summarise(results, scenario, params)
    summary["assay_model"] = None if site.model is None else site.model.to_json()
    summary["config"] = {
        "scenario": scenario.name,
        "patients": patients,
        "draws_per_patient": draws,
        "seed": seed,
        "simulation": simulation_params(scenario).version,
        "dispersion_sigma": scenario.sigma,
        "error_mean": scenario.error_mean,
        "panel_of_normals": scenario.panel,
        "matched_normal": scenario.matched_normal,
        "mrd_params": params.version,
        "threshold_specificity": params.threshold_specificity,
        "background_params": BACKGROUND_PARAMS.version,
        "seconds_fit": round(fitted - started, 2),
        "seconds_total": round(time.perf_counter() - started, 2),
    }
    return summary


def score_oracle(
    results: Sequence[PatientResult],
    scenario: Scenario,
    params: MrdParams,
    rng: np.random.Generator,
) -> None:
    """The oracle at every called draw: the INVAR score with the true mean error rates and
    allele fractions, over the loci the draw reported that we track, against a threshold
    calibrated at exactly ``params.specificity`` on nulls from the true model."""
    groups: dict[int, list[tuple[DrawResult, list[int], list[int], list[float], list[float]]]] = {}
    for result in results:
        loci = {lo.key: (i, lo) for i, lo in enumerate(result.patient.loci)}
        keys = [k for k in sorted(result.tracked) if k in loci]
        index = [loci[k][0] for k in keys]
        draws = {d.sample_id: d for d in result.patient.draws}
        for drawn in result.draws:
            draw = draws[drawn.sample_id]
            groups.setdefault(len(keys), []).append(
                (
                    drawn,
                    [draw.alt_reads[i] for i in index],
                    [draw.depths[i] for i in index],
                    [loci[k][1].allele_fraction for k in keys],
                    [loci[k][1].error_rate for k in keys],
                )
            )
    for width, group in groups.items():
        if width == 0:
            continue
        alt, depth, af, e = (np.array([row[i] for row in group], dtype=float) for i in range(1, 5))
        scores = oracle_lr(alt, depth, af, e, params=params)
        thresholds = oracle_threshold(
            depth,
            af,
            e,
            specificity=params.specificity,
            n_simulations=params.n_null_simulations,
            rng=rng,
            sigma=scenario.sigma,
        )
        for (drawn, *_), score, threshold in zip(group, scores, thresholds, strict=True):
            drawn.oracle_positive = bool(score >= threshold)


def _rate(hits: int, n: int) -> float | None:
    return hits / n if n else None


def _clopper_pearson(hits: int, n: int, level: float = 0.95) -> tuple[float, float] | None:
    if not n:
        return None
    low = 0.0 if hits == 0 else float(stats.beta.ppf((1 - level) / 2, hits, n - hits + 1))
    high = 1.0 if hits == n else float(stats.beta.ppf(1 - (1 - level) / 2, hits + 1, n - hits))
    return low, high


def summarise(
    results: Sequence[PatientResult], scenario: Scenario, params: MrdParams
) -> dict[str, Any]:
    draws = [d for r in results for d in r.draws]
    null = [d for d in draws if d.true_fraction == 0.0]
    positive = [d for d in draws if d.call.call is MrdStatus.POSITIVE]
    negative = [d for d in draws if d.call.call is MrdStatus.NEGATIVE]
    null_fp = sum(d.call.call is MrdStatus.POSITIVE for d in null)
    bins = []
    for label, low, high in BINS:
        members = [d for d in draws if d.true_fraction > 0 and low <= d.true_fraction < high]
        ours = sum(d.call.call is MrdStatus.POSITIVE for d in members)
        oracle = sum(d.oracle_positive for d in members)
        gap = (oracle - ours) / len(members) if members else None
        target = scenario.margin if low >= 1e-4 else None
        bins.append(
            {
                "bin": label,
                "draws": len(members),
                "positive": ours,
                "oracle_positive": oracle,
                "indeterminate": sum(d.call.call is MrdStatus.INDETERMINATE for d in members),
                "sensitivity": _rate(ours, len(members)),
                "oracle_sensitivity": _rate(oracle, len(members)),
                "gap_points": None if gap is None else 100 * gap,
                "margin_points": None if target is None else 100 * target,
                "met": None if gap is None or target is None else gap <= target,
            }
        )
    cured = [r for r in results if not r.patient.relapsing]
    false_relapse = sum(r.series.molecular_relapse_date is not None for r in cured)
    ever_unconfirmed = sum(
        any(c.status_after is PatientStatus.POSITIVE_UNCONFIRMED for c in r.series.calls)
        for r in cured
    )
    relapsers = [r for r in results if r.patient.relapsing]
    leads = [r.series.lead_time_days for r in relapsers if r.series.lead_time_days is not None]
    oracle_leads = []
    for r in relapsers:
        dates = {d.sample_id: d.collection_date for d in r.patient.draws}
        first = next((dates[d.sample_id] for d in r.draws if d.oracle_positive), None)
        if first is not None and r.patient.clinical_relapse_date is not None:
            oracle_leads.append((r.patient.clinical_relapse_date - first).days)
    specificity = _rate(len(null) - null_fp, len(null))
    reasons: dict[str, int] = {}
    for d in null:
        if d.call.call is MrdStatus.INDETERMINATE:
            reasons[d.call.reason] = reasons.get(d.call.reason, 0) + 1
    return {
        "patients": len(results),
        "draws": len(draws),
        "null_draws": len(null),
        "false_positives": null_fp,
        "specificity": specificity,
        "specificity_ci95": _clopper_pearson(len(null) - null_fp, len(null)),
        "specificity_met": specificity is not None and specificity >= params.specificity,
        "null_indeterminate": sum(reasons.values()),
        "null_indeterminate_reasons": reasons,
        "oracle_specificity": _rate(len(null) - sum(d.oracle_positive for d in null), len(null)),
        "never_relapsing_patients": len(cured),
        "false_molecular_relapses": false_relapse,
        "false_relapse_rate": _rate(false_relapse, len(cured)),
        "false_relapse_met": (
            len(cured) > 0 and false_relapse / len(cured) <= FALSE_RELAPSE_TARGET
        ),
        "never_relapsing_ever_positive_unconfirmed": ever_unconfirmed,
        "bins": bins,
        "positive_with_fewer_than_2_loci": sum(
            d.call.loci_detected < params.min_loci_with_reads for d in positive
        ),
        "negative_without_lod95": sum(d.call.lod95 is None for d in negative),
        "relapsing_patients": len(relapsers),
        "molecular_relapses": sum(r.series.molecular_relapse_date is not None for r in relapsers),
        "detected_before_clinical_relapse": sum(lead > 0 for lead in leads),
        "median_lead_time_days": float(np.median(leads)) if leads else None,
        "oracle_detected_before_clinical_relapse": sum(lead > 0 for lead in oracle_leads),
        "oracle_median_lead_time_days": float(np.median(oracle_leads)) if oracle_leads else None,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render(summary: dict[str, Any]) -> str:
    config = summary["config"]
    model = summary["assay_model"]
    fitted = (
        "no assay model (too little background)"
        if model is None
        else f"fitted sigma {model['sigma']:g}, global mean error "
        f"{model['priors']['global']['mean']:.2g}"
    )
    lines = [
        f"== {config['scenario']}: {summary['patients']} patients x {config['draws_per_patient']} "
        f"draws, seed {config['seed']}; {fitted}; {config['seconds_total']:.0f} s",
    ]
    ci = summary["specificity_ci95"]
    met = "yes" if summary["specificity_met"] else "NO"
    lines.append(
        f"  specificity per sample {_pct(summary['specificity'])} "
        f"(95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f}%, n={summary['null_draws']}, "
        f"{summary['false_positives']} FP, {summary['null_indeterminate']} indeterminate "
        f"{summary['null_indeterminate_reasons'] or ''}) oracle "
        f"{_pct(summary['oracle_specificity'])}  >= 99%: {met}"
        if ci
        else "  no null draw"
    )
    lines.append(
        f"  false molecular relapse {summary['false_molecular_relapses']}/"
        f"{summary['never_relapsing_patients']} = {_pct(summary['false_relapse_rate'])} "
        f"(ever unconfirmed positive: {summary['never_relapsing_ever_positive_unconfirmed']})"
        f"  <= 2%: {'yes' if summary['false_relapse_met'] else 'NO'}"
    )
    for b in summary["bins"]:
        target = "" if b["met"] is None else ("  met" if b["met"] else "  NOT MET")
        gap = "" if b["gap_points"] is None else f" gap {b['gap_points']:+.1f} pts"
        margin = "" if b["margin_points"] is None else f" (<= {b['margin_points']:.0f})"
        lines.append(
            f"  sensitivity TF {b['bin']:<10} n={b['draws']:<4} ours {_pct(b['sensitivity']):>6}"
            f"  oracle@99% {_pct(b['oracle_sensitivity']):>6}{gap}{margin}{target}"
        )
    lead, oracle_lead = summary["median_lead_time_days"], summary["oracle_median_lead_time_days"]
    lines.append(
        f"  relapsers {summary['relapsing_patients']}: confirmed molecular relapse "
        f"{summary['molecular_relapses']}, before clinical relapse "
        f"{summary['detected_before_clinical_relapse']} (oracle "
        f"{summary['oracle_detected_before_clinical_relapse']}); median lead "
        f"{'-' if lead is None else f'{lead:.0f}'} d (oracle "
        f"{'-' if oracle_lead is None else f'{oracle_lead:.0f}'} d)"
    )
    lines.append(
        f"  POSITIVE with < 2 loci: {summary['positive_with_fewer_than_2_loci']}; "
        f"NEGATIVE without LoD95: {summary['negative_without_lod95']}"
    )
    return "\n".join(lines)


def run(
    patients: int,
    draws: int,
    seed: int,
    scenarios: Sequence[Scenario] = SCENARIOS,
    params: MrdParams = MRD_PARAMS,
) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": seed, "scenarios": []}
    for i, scenario in enumerate(scenarios):
        summary = run_scenario(scenario, patients, draws, seed + i, params)
        print(render(summary), flush=True)
        out["scenarios"].append(summary)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--draws", type=int, default=8, help="plasma draws per patient")
    parser.add_argument(
        "--seed", type=int, default=None, help="first seed (default: a fresh one, printed)"
    )
    parser.add_argument(
        "--scenarios",
        default="all",
        help="comma-separated scenario names, or 'all': " + ", ".join(s.name for s in SCENARIOS),
    )
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("results_mrd.json"))
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    chosen = (
        SCENARIOS
        if args.scenarios == "all"
        else [s for s in SCENARIOS if s.name in set(args.scenarios.split(","))]
    )
    print(f"MRD benchmark, seed {seed} (scenario i uses seed + i)", flush=True)
    result = run(args.patients, args.draws, seed, chosen)
    args.output.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
