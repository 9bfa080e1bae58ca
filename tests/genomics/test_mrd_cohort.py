"""The cohort benchmark's claims, on a smaller cohort and another seed (benchmarks/mrd.py).

The same pipeline as the benchmark and the service (tracked set from tissue, panel-of-normals
background, draws called in order with the patient's earlier negatives added to the
background, the service's MrdParams), 120 simulated patients x 8 draws, compared with the
simulator's truth and with the likelihood-ratio oracle (true error rates). The seed is used
by no other test and not by the benchmark. Measured with it (rule mrd-2, threshold at 99.5 %):
5 POSITIVE of 657 callable null draws (0.76 %); on the 120 draws at 1e-4 <= TF < 1e-2, 71.7 %
detected vs 73.3 % by the oracle at the same level (75.0 % by the oracle at 99 %); 40 of 40
relapsing patients molecularly relapsed first, median lead 170 days. The tests can fail
(measured with the threshold at 99 %, mrd-1): a plug-in background from 5 controls gives
46/657 positives (all four calibration tests reject), a background inflated 3x a 17.5-point
gap to the oracle (limit 13.9).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from benchmarks.mrd import (
    MRD_PARAMS,
    DrawResult,
    PatientResult,
    call_patient,
    cohort_backgrounds,
    score_oracle,
    summarise,
)
from services.genomics.mrd import MrdStatus
from services.genomics.simulate import SimulationParams, simulate_cohort

SEED = 20261201
PATIENTS = 120
DRAWS = 8


@pytest.fixture(scope="module")
def results() -> list[PatientResult]:
    cohort = simulate_cohort(PATIENTS, DRAWS, np.random.default_rng(SEED), SimulationParams())
    backgrounds = cohort_backgrounds(cohort)
    out = [call_patient(p, backgrounds, MRD_PARAMS) for p in cohort.patients]
    score_oracle(out, MRD_PARAMS, np.random.default_rng([SEED, 1]))
    return out


def callable_draws(results: list[PatientResult]) -> list[DrawResult]:
    return [d for r in results for d in r.draws if d.call.reason != "low_informative_reads"]


def significantly_above(hits: int, n: int, rate: float, level: float = 0.01) -> bool:
    """One-sided exact binomial test of 'the true rate is <= rate'."""
    return float(stats.binomtest(hits, n, rate, alternative="greater").pvalue) < level


def test_specificity_is_at_least_99_percent(results: list[PatientResult]) -> None:
    null = [d for d in callable_draws(results) if d.true_fraction == 0.0]
    assert len(null) > 500
    positives = sum(d.call.call is MrdStatus.POSITIVE for d in null)
    # calibrated at 0.5 % (MrdParams.threshold_specificity), validated to >= 99 %: tested at
    # the calibration level, which is the sharper claim
    assert not significantly_above(positives, len(null), 1.0 - MRD_PARAMS.threshold_specificity)
    assert positives / len(null) <= 1.0 - MRD_PARAMS.specificity
    # The p-values of null draws are (super-)uniform at every level, which has more power
    # against a miscalibrated background than the 1 % tail alone.
    p_values = np.array([d.call.p_value for d in null], dtype=float)
    for level in (0.02, 0.05, 0.1):
        assert not significantly_above(int(np.sum(p_values <= level)), len(null), level)


def test_sensitivity_is_close_to_the_oracle(results: list[PatientResult]) -> None:
    """Paired on the same draws: the caller misses few draws the oracle detects."""
    signal = [d for d in callable_draws(results) if 1e-4 <= d.true_fraction < 1e-2]
    assert len(signal) > 60
    ours = np.array([d.call.call is MrdStatus.POSITIVE for d in signal])
    oracle = np.array([d.oracle_positive for d in signal])
    only_oracle, only_ours = int(np.sum(oracle & ~ours)), int(np.sum(ours & ~oracle))
    gap = (only_oracle - only_ours) / len(signal)
    # 5 points, plus a one-sided 99 % margin for the discordant pairs (McNemar's variance)
    margin = 2.33 * np.sqrt(only_oracle + only_ours) / len(signal)
    assert gap <= 0.05 + margin
    high = [d for d in signal if d.true_fraction >= 1e-3]
    assert np.mean([d.call.call is MrdStatus.POSITIVE for d in high]) >= 0.9


def test_rule_invariants_and_lead_time(results: list[PatientResult]) -> None:
    summary = summarise(results, MRD_PARAMS)
    assert summary["positive_with_fewer_than_2_loci"] == 0
    assert summary["negative_without_lod95"] == 0
    assert summary["decoys_tracked"] == 0
    # molecular relapse precedes the clinical one in most relapsing patients
    assert summary["molecular_relapses"] >= 0.8 * summary["relapsing_patients"]
    assert summary["median_lead_time_days"] is not None
    assert summary["median_lead_time_days"] > 60
