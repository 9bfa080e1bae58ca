"""Resistance and actionable alerts against the simulator's truth (issue 16, "Done means").

    python -m benchmarks.resistance --patients 200 --seed 2026

Simulates a mixed metastatic cohort (``simulate_metastatic_cohort`` with ``FOUR_GENE_CLONES``:
several assays, therapies and clone kinetics; an ESR1, ERBB2, PIK3CA or AKT1 clone in 70% of
patients, the rest without one), then replays every patient draw by draw through what the
service runs on each new draw (services/analysis): the background of each panel locus from the
other patients' draws of the same assay (the service's cross-patient controls, at most
``CONTROLS_PER_LOCUS`` rows, their real mutations included; ``--panel`` uses the assay's clean
control draws instead) with ``fit_background`` (background-2: ``fit_assay_model`` +
``locus_backgrounds``), ``analysis.resistance.resistance_body`` on the draws so far and
``analysis.resistance.plan_alerts`` on the alerts sent so far: exactly the webhooks the
service would have sent, in the order it would have sent them. Measured, per gene:

* flagged: clones alerted on (``resistance.emerged``/``rising`` for ESR1 and ERBB2 clones on a
  class they resist; ``actionable.detected`` for PIK3CA and AKT1 clones), among the clones the
  oracle sees (a one-sided binomial test of the draw's mutant reads against the locus' TRUE
  error rate at the true depth, p < 0.01) while an alert is due;
* delay: draws and days from the oracle's first visible draw to the draw whose recompute sent
  the alert, median / p90;
* false alerts per patient-year: alerts on any locus without a clone (the truncal PIK3CA
  H1047R is a clone), on a clone's locus before the clone exists, resistance alerts on clones
  the therapy is not resisted by, and every alert later withdrawn (``resistance.withdrawn``);
  patient-years from therapy start to the last draw;
* clone counts: ``fit_clones`` clones with a label other than ``not_detected`` against the true
  number of oracle-visible clones (trunk, emerging), per patient and per sample.

Prints a table and writes benchmarks/results_resistance.json. Tune on other seeds than the one
the results are reported for.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from services.analysis.backgrounds import CONTROLS_PER_LOCUS
from services.analysis.models import ResistanceEventRecord
from services.analysis.resistance import Alert, plan_alerts, resistance_body
from services.genomics.background import (
    AssayModel,
    BackgroundCounts,
    BackgroundParams,
    fit_assay_model,
    fit_background,
    locus_backgrounds,
)
from services.genomics.clones import CloneParams, clones_per_sample, fit_clones
from services.genomics.longitudinal import LocusObservation, LocusSeries, LongitudinalParams
from services.genomics.resistance import (
    ResistanceMap,
    ResistanceParams,
    load_resistance_map,
)
from services.genomics.simulate_metastatic import (
    ESR1_CLONES,
    FOUR_GENE_CLONES,
    MetastaticPatient,
    key_of,
    simulate_metastatic_cohort,
)
from services.genomics.therapy import TherapyEvent, TherapyLine, classes_on, therapy_lines

RESULTS_PATH = Path(__file__).resolve().parent / "results_resistance.json"
ORACLE_ALPHA = 0.01
TARGETS = {"sensitivity": 0.95, "median_delay_draws": 1.0, "false_events_per_patient_year": 0.02}
RESISTANCE_ALERTS = ("resistance.emerged", "resistance.rising")
ACTIONABLE_GENES = ("PIK3CA", "AKT1")
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class PatientOutcome:
    patient_id: str
    assay: str
    drugs: tuple[str, ...]
    draws: int
    years: float
    clone: str | None
    clone_gene: str | None
    resisted: bool
    """An alert is due for the clone: ESR1/ERBB2 on a class it resists, PIK3CA/AKT1 always."""
    oracle_draw: int | None
    first_event_draw: int | None
    delay_days: int | None
    false_events: int
    false_event_loci: tuple[str, ...]
    unresisted_clone_events: int = 0
    """Resistance alerts on the clone although the therapy is not one it resists."""
    withdrawn: int = 0
    alerts: tuple[str, ...] = ()
    true_clones: int | None = None
    fitted_clones: int | None = None
    sample_clones_true: tuple[int, ...] = ()
    sample_clones_fitted: tuple[int, ...] = ()


@dataclass
class GeneMetrics:
    clones: int
    visible: int
    flagged: int
    visible_before_last: int
    flagged_before_last: int
    sensitivity: float
    sensitivity_ci95: tuple[float, float]
    median_delay_draws: float | None
    p90_delay_draws: float | None
    flagged_before_visible: int = 0


@dataclass
class CohortMetrics:
    patients: int
    patient_years: float
    clones: int
    clones_resisted: int
    visible: int
    visible_before_last: int
    flagged: int
    flagged_before_last: int
    sensitivity: float
    sensitivity_before_last: float
    sensitivity_ci95: tuple[float, float]
    median_delay_draws: float | None
    p90_delay_draws: float | None
    median_delay_days: float | None
    p90_delay_days: float | None
    flagged_before_visible: int
    false_events: int
    false_events_per_patient_year: float
    false_events_per_patient_year_ci95: tuple[float, float]
    false_events_no_clone_patients: int
    patient_years_no_clone: float
    events_on_unresisted_clones: int
    withdrawn: int = 0
    by_gene: dict[str, GeneMetrics] = field(default_factory=dict)
    clone_count_exact: float | None = None
    sample_clone_count_exact: float | None = None
    outcomes: list[PatientOutcome] = field(default_factory=list)


def patient_series(
    patient: MetastaticPatient, model: AssayModel | None | bool = False
) -> list[LocusSeries]:
    """One series per panel locus, with the background posterior mean from the patient's
    controls, as the service builds them (``_backgrounds`` + ``_series``: no tissue, so no
    truncal flag): the site's assay ``model`` (fitted once per assay, as the service keeps
    it), else one fitted on this patient's controls."""
    keys = [key_of(h) for h, _, _ in patient.draws[0].counts]
    controls = {key: patient.controls.get(key, ()) for key in keys}
    backgrounds = (
        fit_background(controls, BackgroundParams())
        if model is False
        else locus_backgrounds(
            model if isinstance(model, AssayModel) else None,
            controls,
            BackgroundParams(),
            loci=keys,
        )
    )
    observations: dict[str, list[LocusObservation]] = {key: [] for key in keys}
    for draw in patient.draws:
        for hotspot, alt_reads, depth in draw.counts:
            key = key_of(hotspot)
            observations[key].append(
                LocusObservation(
                    draw.sample_id, draw.collection_date, alt_reads, depth, backgrounds[key].mean
                )
            )
    hotspots = {key_of(h): h for h, _, _ in patient.draws[0].counts}
    return [
        LocusSeries(key, hotspots[key].gene, hotspots[key].protein, tuple(obs))
        for key, obs in sorted(observations.items())
    ]


def _visible(alt: int, depth: int, rate: float) -> bool:
    return bool(stats.binom.sf(alt - 1, depth, rate) < ORACLE_ALPHA)


def replay(
    patient: MetastaticPatient,
    series: Sequence[LocusSeries],
    lines: Sequence[TherapyLine],
    rmap: ResistanceMap,
    params: ResistanceParams,
) -> list[tuple[int, Alert]]:
    """The webhooks the service sends for this patient, each with the index of the draw whose
    recompute sent it: every draw's recompute sees the draws up to it."""
    records: list[ResistanceEventRecord] = []
    sent: list[tuple[int, Alert]] = []
    for t in range(len(patient.draws)):
        so_far = [replace(s, observations=s.observations[: t + 1]) for s in series]
        answer = resistance_body(patient.patient_id, so_far, lines, rmap, params)
        active = [r for r in records if r.withdrawn_at is None]
        plan = plan_alerts(active, answer, patient.patient_id, NOW + dt.timedelta(days=t))
        records.extend(plan.new)
        sent.extend((t, alert) for alert in plan.alerts)
    return sent


def evaluate_patient(
    patient: MetastaticPatient,
    rmap: ResistanceMap,
    params: ResistanceParams,
    *,
    clone_rng: np.random.Generator | None = None,
    model: AssayModel | None | bool = False,
) -> PatientOutcome:
    series = patient_series(patient, model)
    lines = therapy_lines(
        TherapyEvent("therapy_start", patient.therapy_start, drug) for drug in patient.drugs
    )
    sent = replay(patient, series, lines, rmap, params)
    clone = (patient.emerging.gene, patient.emerging.protein) if patient.emerging else None
    trunk = (patient.trunk.gene, patient.trunk.protein)
    on_classes = classes_on(lines, patient.draws[-1].collection_date)
    actionable_clone = clone is not None and clone[0] in ACTIONABLE_GENES
    resisted = clone is not None and (
        actionable_clone or bool(rmap.resisted_classes(clone[0], clone[1]) & on_classes)
    )
    clone_exists = [draw.emerging_ccf > 0 for draw in patient.draws]
    withdrawn = {
        (a.data["gene"], a.data["protein_change"], a.data["drug_class"], a.data["status"])
        for _, a in sent
        if a.event_type == "resistance.withdrawn"
    }
    flags: list[int] = []
    false: list[str] = []
    unresisted = 0
    for t, alert in sent:
        if alert.event_type == "resistance.withdrawn":
            continue
        variant = (alert.data["gene"], alert.data["protein_change"])
        identity = (*variant, alert.data["drug_class"], alert.data.get("status", "actionable"))
        is_resistance = alert.event_type in RESISTANCE_ALERTS
        on_clone = variant == clone and clone_exists[t]
        if identity in withdrawn:
            false.append(f"{' '.join(variant)} (withdrawn)")
        elif variant == trunk and not is_resistance:
            continue
        elif on_clone and is_resistance and not resisted:
            unresisted += 1
            false.append(f"{' '.join(variant)} (not resisted)")
        elif on_clone:
            if is_resistance != actionable_clone:
                flags.append(t)
        else:
            false.append(" ".join(variant))
    oracle = patient.oracle_visible_draw(ORACLE_ALPHA)
    first = min(flags, default=None) if resisted else None
    delay_days = None
    if oracle is not None and first is not None:
        delay_days = (
            patient.draws[first].collection_date - patient.draws[oracle].collection_date
        ).days
    years = (patient.draws[-1].collection_date - patient.therapy_start).days / 365.25
    outcome = PatientOutcome(
        patient_id=patient.patient_id,
        assay=f"{patient.params.depth_range[0]}-{patient.params.depth_range[1]}x, "
        f"e={patient.params.error_rate:g}",
        drugs=patient.drugs,
        draws=len(patient.draws),
        years=years,
        clone=" ".join(clone) if clone else None,
        clone_gene=clone[0] if clone else None,
        resisted=resisted,
        oracle_draw=oracle,
        first_event_draw=first,
        delay_days=delay_days,
        false_events=len(false),
        false_event_loci=tuple(sorted(set(false))),
        unresisted_clone_events=unresisted,
        withdrawn=sum(a.event_type == "resistance.withdrawn" for _, a in sent),
        alerts=tuple(
            f"{t}:{a.event_type}:{a.data.get('gene')} {a.data.get('protein_change')}"
            for t, a in sent
        ),
    )
    if clone_rng is None:
        return outcome
    return _with_clones(outcome, patient, series, clone_rng)


def _with_clones(
    outcome: PatientOutcome,
    patient: MetastaticPatient,
    series: Sequence[LocusSeries],
    rng: np.random.Generator,
) -> PatientOutcome:
    fit = fit_clones(series, CloneParams(), rng, longitudinal_params=LongitudinalParams())
    per_sample = {s.sample_id: s.n_clones for s in clones_per_sample(fit)}
    truth_by_draw = []
    for draw in patient.draws:
        present = 0
        for hotspot, alt_reads, depth in draw.counts:
            rate = patient.error_rates[key_of(hotspot)]
            if hotspot == patient.trunk or (hotspot == patient.emerging and draw.emerging_ccf > 0):
                present += _visible(alt_reads, depth, rate)
        truth_by_draw.append(present)
    trunk_seen = any(
        _visible(m, r, patient.error_rates[key_of(h)])
        for draw in patient.draws
        for h, m, r in draw.counts
        if h == patient.trunk
    )
    true_clones = int(trunk_seen) + int(patient.oracle_visible_draw(ORACLE_ALPHA) is not None)
    fitted = sum(1 for clone in fit.clones if clone.label != "not_detected")
    return PatientOutcome(
        **{
            **asdict(outcome),
            "true_clones": true_clones,
            "fitted_clones": fitted,
            "sample_clones_true": tuple(truth_by_draw),
            "sample_clones_fitted": tuple(per_sample[d.sample_id] for d in patient.draws),
        }
    )


def cross_patient_controls(
    cohort: Sequence[MetastaticPatient], max_vaf: float | None, limit: int = 400
) -> list[MetastaticPatient]:
    """Each patient with the service's cross-patient controls instead of the assay's clean
    panel: the other patients' draws of the same assay at each locus, at most ``limit``
    (``CROSS_PATIENT_CONTROL_LIMIT``), their true mutations included. ``max_vaf`` drops a
    control row with >= 2 mutant reads above that VAF (a mutation, not noise)."""
    out = []
    for patient in cohort:
        controls: dict[str, list[BackgroundCounts]] = {}
        for other in cohort:
            if other.patient_id == patient.patient_id or other.error_rates != patient.error_rates:
                continue
            for draw in other.draws:
                for hotspot, alt_reads, depth in draw.counts:
                    if max_vaf is not None and alt_reads >= 2 and alt_reads > max_vaf * depth:
                        continue
                    rows = controls.setdefault(key_of(hotspot), [])
                    if len(rows) < limit:
                        rows.append(BackgroundCounts(alt_reads, depth))
        out.append(replace(patient, controls={k: tuple(v) for k, v in controls.items()}))
    return out


def _poisson_ci(count: int, exposure: float) -> tuple[float, float]:
    """Exact (Garwood) 95% interval of a Poisson rate."""
    lo = stats.chi2.ppf(0.025, 2 * count) / 2 if count else 0.0
    hi = stats.chi2.ppf(0.975, 2 * count + 2) / 2
    return float(lo / exposure), float(hi / exposure)


def _wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    z = 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (centre - half, centre + half)


def summarise(outcomes: Sequence[PatientOutcome]) -> CohortMetrics:
    overall = _gene_metrics(outcomes)
    flagged = [
        o
        for o in outcomes
        if o.resisted and o.oracle_draw is not None and o.first_event_draw is not None
    ]
    days = [o.delay_days for o in flagged if o.delay_days is not None]
    years = sum(o.years for o in outcomes)
    false = sum(o.false_events for o in outcomes)
    no_clone = [o for o in outcomes if o.clone is None]
    with_counts = [o for o in outcomes if o.true_clones is not None]
    sample_pairs = [
        (t, f)
        for o in with_counts
        for t, f in zip(o.sample_clones_true, o.sample_clones_fitted, strict=True)
    ]
    return CohortMetrics(
        patients=len(outcomes),
        patient_years=years,
        clones=sum(o.clone is not None for o in outcomes),
        clones_resisted=sum(o.resisted for o in outcomes),
        visible=overall.visible,
        visible_before_last=overall.visible_before_last,
        flagged=overall.flagged,
        flagged_before_last=overall.flagged_before_last,
        sensitivity=overall.sensitivity,
        sensitivity_before_last=(
            overall.flagged_before_last / overall.visible_before_last
            if overall.visible_before_last
            else math.nan
        ),
        sensitivity_ci95=overall.sensitivity_ci95,
        median_delay_draws=overall.median_delay_draws,
        p90_delay_draws=overall.p90_delay_draws,
        median_delay_days=float(np.median(days)) if days else None,
        p90_delay_days=_quantile(days, 0.9),
        flagged_before_visible=overall.flagged_before_visible,
        false_events=false,
        false_events_per_patient_year=false / years if years else math.nan,
        false_events_per_patient_year_ci95=_poisson_ci(false, years),
        false_events_no_clone_patients=sum(o.false_events for o in no_clone),
        patient_years_no_clone=sum(o.years for o in no_clone),
        events_on_unresisted_clones=sum(o.unresisted_clone_events for o in outcomes),
        withdrawn=sum(o.withdrawn for o in outcomes),
        by_gene={
            gene: _gene_metrics([o for o in outcomes if o.clone_gene == gene])
            for gene in sorted({o.clone_gene for o in outcomes if o.clone_gene})
        },
        clone_count_exact=(
            sum(o.true_clones == o.fitted_clones for o in with_counts) / len(with_counts)
            if with_counts
            else None
        ),
        sample_clone_count_exact=(
            sum(t == f for t, f in sample_pairs) / len(sample_pairs) if sample_pairs else None
        ),
        outcomes=list(outcomes),
    )


def _gene_metrics(outcomes: Sequence[PatientOutcome]) -> GeneMetrics:
    visible = [o for o in outcomes if o.resisted and o.oracle_draw is not None]
    flagged = [o for o in visible if o.first_event_draw is not None]
    delays = [
        o.first_event_draw - o.oracle_draw
        for o in flagged
        if o.first_event_draw is not None and o.oracle_draw is not None
    ]
    before_last = [o for o in visible if o.oracle_draw is not None and o.oracle_draw < o.draws - 1]
    return GeneMetrics(
        clones=sum(o.clone is not None for o in outcomes),
        visible=len(visible),
        flagged=len(flagged),
        visible_before_last=len(before_last),
        flagged_before_last=sum(o.first_event_draw is not None for o in before_last),
        sensitivity=len(flagged) / len(visible) if visible else math.nan,
        sensitivity_ci95=_wilson(len(flagged), len(visible)),
        median_delay_draws=float(np.median(delays)) if delays else None,
        p90_delay_draws=_quantile(delays, 0.9),
        flagged_before_visible=sum(d < 0 for d in delays),
    )


def _quantile(values: Sequence[int], level: float) -> float | None:
    return float(np.quantile(values, level, method="lower")) if values else None


def evaluate_cohort(
    patients: Sequence[MetastaticPatient],
    params: ResistanceParams,
    *,
    rmap: ResistanceMap | None = None,
    clone_seed: int | None = None,
) -> CohortMetrics:
    """Every patient through the service's functions; clones too when ``clone_seed`` is set."""
    rmap = rmap or load_resistance_map()
    rng = np.random.default_rng(clone_seed) if clone_seed is not None else None
    # One assay model per assay (patients of an assay share its error rates), fitted on the
    # controls its first patient sees, as the service fits one per site and assay.
    models: dict[tuple[tuple[str, float], ...], AssayModel | None] = {}
    for patient in patients:
        assay = _assay_of(patient)
        if assay not in models:
            models[assay] = fit_assay_model(patient.controls, BackgroundParams())
    return summarise(
        [
            evaluate_patient(p, rmap, params, clone_rng=rng, model=models[_assay_of(p)])
            for p in patients
        ]
    )


def _assay_of(patient: MetastaticPatient) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(patient.error_rates.items()))


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def table(m: CohortMetrics, params: ResistanceParams) -> list[tuple[str, str, str, str]]:
    rows = [
        ("patients / patient-years", f"{m.patients} / {m.patient_years:.1f}", "", ""),
        (
            "clones (alert due) / oracle-visible / visible before the last draw",
            f"{m.clones} ({m.clones_resisted}) / {m.visible} / {m.visible_before_last}",
            "",
            "",
        ),
        (
            "emerging clones flagged (of oracle-visible), 95% CI",
            f"{m.flagged}/{m.visible} = {_fmt(m.sensitivity)} "
            f"[{_fmt(m.sensitivity_ci95[0])}, {_fmt(m.sensitivity_ci95[1])}]",
            ">= 0.95",
            "yes" if m.sensitivity >= TARGETS["sensitivity"] else "NO",
        ),
        (
            "  flagged, of those visible before the last draw",
            f"{m.flagged_before_last}/{m.visible_before_last} = {_fmt(m.sensitivity_before_last)}",
            "",
            "",
        ),
        (
            "delay after first visible draw, draws: median / p90",
            f"{_fmt(m.median_delay_draws, '.1f')} / {_fmt(m.p90_delay_draws, '.0f')}",
            "median <= 1",
            "yes"
            if m.median_delay_draws is not None
            and m.median_delay_draws <= TARGETS["median_delay_draws"]
            else "NO",
        ),
        (
            "delay, days: median / p90",
            f"{_fmt(m.median_delay_days, '.0f')} / {_fmt(m.p90_delay_days, '.0f')}",
            "",
            "",
        ),
        ("flagged before the oracle's first visible draw", str(m.flagged_before_visible), "", ""),
        (
            "false alerts / patient-year (withdrawn ones included), 95% CI",
            f"{m.false_events} / {m.patient_years:.1f} = "
            f"{_fmt(m.false_events_per_patient_year, '.4f')} "
            f"[{_fmt(m.false_events_per_patient_year_ci95[0], '.4f')}, "
            f"{_fmt(m.false_events_per_patient_year_ci95[1], '.4f')}]",
            "< 0.02",
            "yes"
            if m.false_events_per_patient_year < TARGETS["false_events_per_patient_year"]
            else "NO",
        ),
        (
            "  of which on patients without a clone (patient-years)",
            f"{m.false_events_no_clone_patients} ({m.patient_years_no_clone:.1f})",
            "",
            "",
        ),
        (
            "  of which on ESR1 clones the therapy is not resisted by",
            str(m.events_on_unresisted_clones),
            "",
            "",
        ),
    ]
    rows.append(("  alerts withdrawn", str(m.withdrawn), "", ""))
    for gene, g in m.by_gene.items():
        rows.append(
            (
                f"{gene} clones flagged / visible, 95% CI (visible before the last draw); "
                "delay median / p90 draws",
                f"{g.flagged}/{g.visible} = {_fmt(g.sensitivity)} "
                f"[{_fmt(g.sensitivity_ci95[0])}, {_fmt(g.sensitivity_ci95[1])}] "
                f"({g.flagged_before_last}/{g.visible_before_last}); "
                f"{_fmt(g.median_delay_draws, '.1f')} / {_fmt(g.p90_delay_draws, '.0f')}",
                ">= 0.95; <= 1",
                "yes"
                if g.sensitivity >= TARGETS["sensitivity"]
                and g.median_delay_draws is not None
                and g.median_delay_draws <= TARGETS["median_delay_draws"]
                else "NO",
            )
        )
    if m.clone_count_exact is not None:
        rows.append(("clone count exact, per patient", _fmt(m.clone_count_exact), "", ""))
        rows.append(("clone count exact, per sample", _fmt(m.sample_clone_count_exact), "", ""))
    rows.append(("rule", params.version, "", ""))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resistance")
    parser.add_argument("--patients", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--controls", type=int, default=100, help="control draws per locus and assay"
    )
    parser.add_argument(
        "--panel",
        action="store_true",
        help="background from the assay's clean control draws instead of the other patients' "
        "draws of the same assay (what the service does)",
    )
    parser.add_argument(
        "--esr1-only", action="store_true", help="ESR1 clones only (the first round's cohort)"
    )
    parser.add_argument(
        "--control-max-vaf",
        type=float,
        default=None,
        help="with --cross-patient: drop control rows with >= 2 mutant reads above this VAF",
    )
    parser.add_argument("--no-clones", action="store_true", help="skip the clone fits")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    params = ResistanceParams()
    cohort = simulate_metastatic_cohort(
        args.patients,
        np.random.default_rng(args.seed),
        n_controls=args.controls,
        clones=ESR1_CLONES if args.esr1_only else FOUR_GENE_CLONES,
    )
    if not args.panel:
        cohort = tuple(
            cross_patient_controls(cohort, args.control_max_vaf, limit=CONTROLS_PER_LOCUS)
        )
    metrics = evaluate_cohort(cohort, params, clone_seed=None if args.no_clones else args.seed + 1)
    elapsed = time.perf_counter() - started
    rows = table(metrics, params)
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  value | target | met")
    for name, value, target, met in rows:
        print(f"{name:<{width}}  {value}" + (f" | {target} | {met}" if target else ""))
    print(f"({elapsed:.0f} s)")
    body: dict[str, Any] = {
        "command": f"python -m benchmarks.resistance --patients {args.patients} --seed "
        f"{args.seed} --controls {args.controls}"
        + (" --panel" if args.panel else "")
        + (" --esr1-only" if args.esr1_only else "")
        + (f" --control-max-vaf {args.control_max_vaf}" if args.control_max_vaf else "")
        + (" --no-clones" if args.no_clones else ""),
        "run_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "seconds": round(elapsed, 1),
        "params": asdict(params),
        "targets": TARGETS,
        "metrics": {k: v for k, v in asdict(metrics).items() if k != "outcomes"},
        "patients": [asdict(o) for o in metrics.outcomes],
    }
    args.output.write_text(json.dumps(body, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
