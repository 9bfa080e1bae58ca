"""The MRD benchmark's claims, on a smaller cohort and other seeds (benchmarks/mrd.py).

The same production pipeline as the benchmark and the service (tracked set from tissue, the
site's assay model fitted on its controls and weighted draws, each patient's series called by
``mrd.call_series`` with its earlier negatives), 100 simulated patients x 8 draws in the world
the issue found hardest to hold: every locus' error rate varying from draw to draw
(lognormal sigma 0.5), no panel of normals, a matched normal in every plasma VCF. Compared
with the simulator's truth and with the oracle that knows the true rates and sigma. The seeds
are used by no other test and not by the README's benchmark runs.

The tests can fail: a model blind to the draw-to-draw variation doubles the false positives
of null draws (tests/genomics/test_mrd.py::test_draw_to_draw_variation_is_learnt_and_calibrated
shows it on 1,000 draws).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats

from benchmarks.mrd import SCENARIOS, run_scenario
from services.genomics.mrd import MrdParams

SEED = 20261203
PATIENTS = 100
HARD = next(s for s in SCENARIOS if s.name == "sigma0.5-err0.0001-nopon")


def significantly_above(hits: int, n: int, rate: float, level: float = 0.01) -> bool:
    """One-sided exact binomial test of 'the true rate is <= rate'."""
    return float(stats.binomtest(hits, n, rate, alternative="greater").pvalue) < level


@pytest.fixture(scope="module")
def summary() -> dict[str, Any]:
    return run_scenario(HARD, PATIENTS, 8, SEED)


def test_specificity_and_false_relapse_hold_under_draw_to_draw_noise(
    summary: dict[str, Any],
) -> None:
    params = MrdParams()
    assert summary["null_draws"] > 400
    assert not significantly_above(
        summary["false_positives"], summary["null_draws"], 1.0 - params.specificity
    )
    assert summary["specificity"] >= params.specificity - 0.005
    # a molecular relapse needs confirmation: <= 2 % of never-relapsing patients
    assert not significantly_above(
        summary["false_molecular_relapses"], summary["never_relapsing_patients"], 0.02
    )
    assert summary["positive_with_fewer_than_2_loci"] == 0
    assert summary["negative_without_lod95"] == 0


def test_sensitivity_is_close_to_the_oracle(summary: dict[str, Any]) -> None:
    """Paired on the same draws, over every draw with a ctDNA fraction >= 1e-4: the gap to
    the oracle stays within the scenario's margin plus sampling noise (McNemar's variance)."""
    bins = [b for b in summary["bins"] if b["margin_points"] is not None]
    n = sum(b["draws"] for b in bins)
    assert n > 150
    ours = sum(b["positive"] for b in bins)
    oracle = sum(b["oracle_positive"] for b in bins)
    gap = (oracle - ours) / n
    assert gap <= HARD.margin + 2.33 * np.sqrt((oracle + ours) * 0.1) / n
    high = next(b for b in summary["bins"] if b["bin"] == "1e-3-1e-2")
    assert high["sensitivity"] >= 0.95


def test_relapse_is_seen_before_it_is_clinical(summary: dict[str, Any]) -> None:
    assert summary["molecular_relapses"] >= 0.9 * summary["relapsing_patients"]
    assert summary["detected_before_clinical_relapse"] >= 0.85 * summary["relapsing_patients"]
    assert summary["median_lead_time_days"] is not None
    assert summary["median_lead_time_days"] > 60
