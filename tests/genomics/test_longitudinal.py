"""Tumour fraction, relative CCF, MATH and molecular response, on seeded simulations."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import pytest

from services.errors import InvalidInput
from services.genomics.longitudinal import (
    LocusObservation,
    LocusSeries,
    LongitudinalParams,
    RelativeCCF,
    fit_fraction,
    longitudinal_report,
    math_scores,
    molecular_responses,
    pooled_call,
    relative_ccfs,
    tumour_fractions,
)
from services.genomics.therapy import TherapyEvent, TherapyLine, therapy_lines

D0 = dt.date(2025, 1, 1)
P = LongitudinalParams()


def simulate(
    rng: np.random.Generator,
    tfs: list[float],
    n_truncal: int = 8,
    depth: tuple[int, int] = (3000, 8000),
    background: float = 1e-4,
    subclones: tuple[tuple[str, list[float]], ...] = (),
    every_days: int = 30,
) -> list[LocusSeries]:
    """Truncal heterozygous loci at VAF = TF/2, and subclonal loci at VAF = TF·ccf/2."""
    loci = [(f"trunk{j}", [1.0] * len(tfs), True) for j in range(n_truncal)]
    loci += [(key, ccfs, False) for key, ccfs in subclones]
    series = []
    for key, ccfs, truncal in loci:
        observations = []
        for t, (tf, ccf) in enumerate(zip(tfs, ccfs, strict=True)):
            reads = int(rng.integers(*depth))
            rate = tf * ccf / 2 * (1 - background) + background
            observations.append(
                LocusObservation(
                    f"s{t}",
                    D0 + dt.timedelta(days=every_days * t),
                    int(rng.binomial(reads, rate)),
                    reads,
                    background,
                )
            )
        series.append(LocusSeries(key, None, None, tuple(observations), truncal=truncal))
    return series


# --------------------------------------------------------------------------- tumour fraction


def test_tumour_fraction_interval_has_nominal_coverage() -> None:
    """Profile-likelihood 95% CI of a pooled binomial TF: coverage over 300 seeded draws."""
    rng = np.random.default_rng(11)
    covered, estimates = 0, []
    for _ in range(300):
        (tf,) = tumour_fractions(simulate(rng, [0.02]), P)
        covered += tf.lower <= 0.02 <= tf.upper
        estimates.append(tf.estimate)
    assert 0.92 <= covered / 300 <= 0.975
    assert abs(np.mean(estimates) - 0.02) < 0.0005


def test_tumour_fraction_reports_the_robust_median_too() -> None:
    rng = np.random.default_rng(2)
    series = simulate(rng, [0.1])
    # One truncal locus on an amplified allele: 3× the VAF. The median barely moves.
    amp = series[0].observations[0]
    series[0] = LocusSeries(
        "trunk0",
        None,
        None,
        (
            LocusObservation(
                amp.sample_id,
                amp.collection_date,
                amp.alt_reads * 3,
                amp.depth,
                amp.background_error,
            ),
        ),
        truncal=True,
    )
    (tf,) = tumour_fractions(series, P)
    assert tf.median_2vaf is not None and abs(tf.median_2vaf - 0.1) < 0.01
    assert tf.estimate > tf.median_2vaf and tf.n_loci == 8
    assert tf.truncal_keys == tuple(f"trunk{j}" for j in range(8))


def test_detection_is_calibrated_and_lod95_is_sensitive() -> None:
    """No tumour: detected in <= 1.5% of 1,000 draws. At the reported LoD95: detected in 95%."""
    false = sum(
        tumour_fractions(simulate(np.random.default_rng(i), [0.0], depth=(5000, 5001)), P)[
            0
        ].detected
        for i in range(1000)
    )
    assert false <= 15  # nominal 0.81% (Poisson(4) >= 10): 8 expected
    (null,) = tumour_fractions(simulate(np.random.default_rng(0), [0.0], depth=(5000, 5001)), P)
    hits = sum(
        tumour_fractions(
            simulate(np.random.default_rng(10_000 + i), [null.lod95], depth=(5000, 5001)), P
        )[0].detected
        for i in range(600)
    )
    assert 0.93 <= hits / 600 <= 0.97


def test_untouched_draws_and_bad_counts() -> None:
    series = simulate(np.random.default_rng(1), [0.05])
    series.append(
        LocusSeries("late", None, None, (LocusObservation("s9", D0, 0, 0, 1e-4),), truncal=True)
    )
    by_sample = {tf.sample_id: tf for tf in tumour_fractions(series, P)}
    assert by_sample["s9"].informative_reads == 0 and not by_sample["s9"].detected
    with pytest.raises(InvalidInput, match="exceed depth"):
        LocusObservation("s", D0, 10, 5, 1e-4)
    with pytest.raises(InvalidInput, match="two collection dates"):
        tumour_fractions(
            [
                LocusSeries("a", None, None, (LocusObservation("s", D0, 1, 5, 1e-4),)),
                LocusSeries(
                    "b", None, None, (LocusObservation("s", D0 + dt.timedelta(1), 1, 5, 1e-4),)
                ),
            ],
            P,
        )


def test_fit_fraction_matches_the_closed_form_without_background() -> None:
    fit = fit_fraction([30, 50], [1000, 1000], [0.0, 0.0], scale=1.0)
    assert fit.estimate == pytest.approx(0.04, rel=1e-9)
    assert fit.lower < 0.04 < fit.upper
    pooled = pooled_call([3, 2], [10_000, 10_000], [1e-4, 1e-4], 0.01, 2)
    assert pooled.expected_background == pytest.approx(2.0)
    assert not pooled.detected  # 5 reads where 2 are expected: p ~ 0.053


# --------------------------------------------------------------------------- relative CCF


def test_relative_ccf_of_a_half_clone_and_its_interval() -> None:
    """A subclone in half the tumour cells: rCCF ≈ 0.5, the MC interval covers 0.5 in ~95%."""
    covered, medians = 0, []
    for seed in range(120):
        rng = np.random.default_rng(seed)
        series = simulate(rng, [0.1], subclones=(("sub", [0.5]),))
        rows = {r.key: r for r in relative_ccfs(series, P, np.random.default_rng(seed))}
        sub = rows["sub"]
        assert sub.evaluable and sub.rccf is not None
        assert sub.lower is not None and sub.upper is not None
        covered += sub.lower <= 0.5 <= sub.upper
        medians.append(sub.rccf)
    assert 0.9 <= covered / 120 <= 0.99
    assert abs(np.median(medians) - 0.5) < 0.02


def test_relative_ccf_is_reproducible_and_not_evaluable_without_tumour_signal() -> None:
    series = simulate(np.random.default_rng(4), [0.05, 0.0], subclones=(("sub", [0.3, 0.3]),))
    first = relative_ccfs(series, P, np.random.default_rng(42))
    assert first == relative_ccfs(series, P, np.random.default_rng(42))
    assert first != relative_ccfs(series, P, np.random.default_rng(43))
    at_s1 = [r for r in first if r.sample_id == "s1"]
    assert at_s1 and all(not r.evaluable and r.rccf is None for r in at_s1)


# --------------------------------------------------------------------------- MATH


def test_math_score_by_hand() -> None:
    vafs = [0.10, 0.20, 0.30, 0.05]
    series = [
        LocusSeries(
            f"v{i}", None, None, (LocusObservation("s0", D0, int(v * 10_000), 10_000, 1e-4),)
        )
        for i, v in enumerate(vafs)
    ]
    series.append(LocusSeries("absent", None, None, (LocusObservation("s0", D0, 1, 10_000, 1e-4),)))
    (score,) = math_scores(series, P)
    median = np.median(vafs)
    expected = 100 * 1.4826 * np.median(np.abs(np.array(vafs) - median)) / median
    assert score.n_detected == 4
    assert score.math == pytest.approx(expected)
    (alone,) = math_scores(series[:1], P)
    assert alone.math is None and alone.n_detected == 1


def test_math_rises_with_subclonal_spread() -> None:
    rng = np.random.default_rng(8)
    homogeneous = simulate(rng, [0.2], n_truncal=10)
    ccfs = [0.1, 0.2, 0.3, 0.5, 0.7, 0.9]
    mixed = simulate(
        rng, [0.2], n_truncal=3, subclones=tuple((f"sub{i}", [c]) for i, c in enumerate(ccfs))
    )
    (low,) = math_scores(homogeneous, P)
    (high,) = math_scores(mixed, P)
    assert low.math is not None and high.math is not None
    assert low.math < 15 < high.math


# --------------------------------------------------------------------------- molecular response


def _line(start_day: int = 0, stop_day: int | None = None) -> list[TherapyLine]:
    events = [TherapyEvent("therapy_start", D0 + dt.timedelta(days=start_day), "letrozole")]
    if stop_day is not None:
        events.append(TherapyEvent("therapy_stop", D0 + dt.timedelta(days=stop_day), "letrozole"))
    return therapy_lines(events)


@pytest.mark.parametrize(
    ("tfs", "expected"),
    [
        ([0.10, 0.02], "molecular_response"),
        ([0.10, 0.0], "complete_molecular_response"),
        ([0.10, 0.30], "molecular_progression"),
        ([0.10, 0.08], "falling"),  # significant, not a >= 50 % fall
        ([0.10, 0.12], "stable"),  # within the between-draw reproducibility
        ([0.10, 0.14], "rising"),  # significant, not a 2-fold rise
        ([0.0, 0.05], "molecular_progression"),
        ([0.0, 0.0], "not_evaluable"),
    ],
)
def test_response_categories(tfs: list[float], expected: str) -> None:
    series = simulate(np.random.default_rng(3), tfs)
    (response,) = molecular_responses(series, _line(), P)
    assert response.baseline_sample_id == "s0"
    (assessment,) = response.assessments
    assert assessment.response == expected == response.best_response == response.latest_response


def test_response_reports_the_numbers_it_used() -> None:
    series = simulate(np.random.default_rng(3), [0.10, 0.02])
    (response,) = molecular_responses(series, _line(), P)
    (a,) = response.assessments
    assert response.baseline_tf is not None and response.baseline_detected
    assert a.ratio == pytest.approx(a.tumour_fraction / response.baseline_tf)
    assert a.ratio is not None and a.ratio_lower is not None and a.ratio_upper is not None
    assert a.ratio_lower < a.ratio < a.ratio_upper < 0.5


def test_a_clearance_at_a_poor_lod_is_not_a_complete_response() -> None:
    """Baseline 0.4% TF; an undetected draw at 100x cannot rule out half of it."""
    rng = np.random.default_rng(6)
    baseline = simulate(rng, [0.004], depth=(20_000, 20_001))
    shallow = simulate(rng, [0.0], depth=(100, 101))
    series = [
        LocusSeries(
            b.key,
            None,
            None,
            (
                b.observations[0],
                LocusObservation(
                    "s1",
                    D0 + dt.timedelta(30),
                    s.observations[0].alt_reads,
                    s.observations[0].depth,
                    1e-4,
                ),
            ),
            truncal=True,
        )
        for b, s in zip(baseline, shallow, strict=True)
    ]
    (response,) = molecular_responses(series, _line(), P)
    assert response.baseline_detected
    assert response.latest_response == "stable"


def test_no_change_is_stable_in_most_seeds() -> None:
    """Same TF before and on therapy: neither response nor progression in >= 95% of seeds."""
    stable = sum(
        molecular_responses(simulate(np.random.default_rng(s), [0.03, 0.03]), _line(), P)[
            0
        ].latest_response
        == "stable"
        for s in range(100)
    )
    assert stable >= 95


def test_best_and_latest_differ_when_a_response_is_lost() -> None:
    """A rise from the line's nadir is progression even while the tumour fraction is still
    below its baseline (0.01 -> 0.08: eight-fold from the nadir, 0.8x the baseline)."""
    series = simulate(np.random.default_rng(9), [0.10, 0.02, 0.01, 0.08, 0.25])
    (response,) = molecular_responses(series, _line(), P)
    assert [a.response for a in response.assessments] == [
        "molecular_response",
        "molecular_response",
        "molecular_progression",
        "molecular_progression",
    ]
    assert [a.nadir_sample_id for a in response.assessments] == ["s0", "s1", "s2", "s2"]
    assert response.best_response == "molecular_response"
    assert response.latest_response == "molecular_progression"


def test_an_emerging_resistance_clone_is_progression() -> None:
    series = simulate(np.random.default_rng(9), [0.10, 0.05, 0.05])
    plain = molecular_responses(series, _line(), P)[0]
    assert plain.latest_response != "molecular_progression"
    day = plain.assessments[-1].collection_date
    other_class = molecular_responses(
        series, _line(), P, emergences=[(day, "ERBB2 p.T798I", "her2_tki")]
    )[0]
    assert other_class.latest_response == plain.latest_response
    (response,) = molecular_responses(
        series, _line(), P, emergences=[(day, "ESR1 p.D538G", "aromatase_inhibitor")] * 2
    )
    assert response.latest_response == "molecular_progression"
    assert response.assessments[-1].resistance == ("ESR1 p.D538G",)
    assert response.assessments[0].response == plain.assessments[0].response


def test_baseline_rules() -> None:
    series = simulate(np.random.default_rng(1), [0.1, 0.02, 0.02])
    # Draws on day 0, 30, 60. A line started on day 30 takes the day-30 draw as baseline.
    (late,) = molecular_responses(series, _line(start_day=30), P)
    assert late.baseline_sample_id == "s1" and len(late.assessments) == 1
    # A baseline older than max_baseline_age_days is not used.
    (old,) = molecular_responses(series, _line(start_day=200), P)
    assert old.baseline_sample_id is None and old.best_response == "not_evaluable"
    # The draw on the stop date belongs to the line; later draws do not.
    (stopped,) = molecular_responses(series, _line(start_day=0, stop_day=30), P)
    assert [a.sample_id for a in stopped.assessments] == ["s1"]


def test_report_bundles_everything_with_its_parameters() -> None:
    series = simulate(np.random.default_rng(1), [0.1, 0.02], subclones=(("sub", [0.5, 0.5]),))
    report = longitudinal_report(series, _line(), P, (0,))
    assert report.params.version == P.version
    assert len(report.tumour_fractions) == 2 and len(report.math_scores) == 2
    assert len(report.relative_ccfs) == 18 and len(report.responses) == 1


# --------------------------------------------------------------------------- draw by draw


def _random_series(rng: np.random.Generator, flag_truncal: bool) -> list[LocusSeries]:
    draws = [(f"S{i}", D0 + dt.timedelta(days=30 * i)) for i in range(6)]
    series = []
    for j in range(12):
        observations = tuple(
            LocusObservation(sid, day, int(rng.integers(0, 30)), int(rng.integers(500, 3000)), 1e-4)
            for sid, day in draws
            if rng.random() < 0.7
        )
        if observations:
            truncal = flag_truncal and j < 4
            series.append(
                LocusSeries(f"chr3:{179234000 + j}:A>G", "PIK3CA", None, observations, truncal)
            )
    return series


@pytest.mark.parametrize("flag_truncal", [True, False])
def test_the_report_does_not_depend_on_the_cache(flag_truncal: bool) -> None:
    """A worker keeps each draw's rCCFs: the report is the same cold, warm and without one."""
    rng = np.random.default_rng(11)
    for _ in range(10):
        series = _random_series(rng, flag_truncal)
        cache: dict[str, tuple[RelativeCCF, ...]] = {}
        cold = longitudinal_report(series, [], P, (7,), cache=cache)
        warm = longitudinal_report(series, [], P, (7,), cache=cache)
        none = longitudinal_report(series, [], P, (7,))
        assert cold == warm == none
        assert list(cold.tumour_fractions) == tumour_fractions(series, P)


def test_a_new_draw_leaves_the_earlier_draws_as_they_were() -> None:
    series = _random_series(np.random.default_rng(5), True)
    first = longitudinal_report(series, [], P, (7,))
    extra = [
        replace(
            s,
            observations=(
                *s.observations,
                LocusObservation("S9", D0 + dt.timedelta(days=400), 9, 2000, 1e-4),
            ),
        )
        for s in series
    ]
    longer = longitudinal_report(extra, [], P, (7,))
    earlier = {(r.key, r.sample_id): r for r in first.relative_ccfs}
    assert all(
        earlier[(r.key, r.sample_id)] == r for r in longer.relative_ccfs if r.sample_id != "S9"
    )
