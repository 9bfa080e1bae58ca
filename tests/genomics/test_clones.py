"""Clone clustering by trajectory: recovery of K, assignments and labels on seeded simulations."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from scipy.special import comb

from services.genomics.clones import (
    CloneFit,
    CloneParams,
    clones_per_sample,
    fit_clones,
    sample_heterogeneity,
)
from services.genomics.longitudinal import (
    LocusObservation,
    LocusSeries,
    LongitudinalParams,
    math_scores,
)

D0 = dt.date(2025, 1, 1)
PARAMS = CloneParams()

# Plasma VAF trajectories over six draws two months apart, on an aromatase inhibitor:
# the trunk falls with the tumour, an ESR1-mutant subclone emerges, a sensitive subclone clears.
THREE_CLONES = {
    "trunk": (6, [0.10, 0.05, 0.025, 0.015, 0.010, 0.008]),
    "esr1": (3, [0.0, 0.0, 0.0, 5e-4, 1.5e-3, 4e-3]),
    "sensitive": (4, [0.04, 0.01, 0.002, 0.0, 0.0, 0.0]),
}


def adjusted_rand_index(a: list[str], b: list[int]) -> float:
    """Hubert & Arabie (1985) adjusted Rand index of two labelings."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(table, (ia, ib), 1)
    pairs = comb(table, 2).sum()
    rows, cols = comb(table.sum(axis=1), 2).sum(), comb(table.sum(axis=0), 2).sum()
    expected = rows * cols / comb(len(a), 2)
    top = (rows + cols) / 2
    return 1.0 if top == expected else float((pairs - expected) / (top - expected))


def simulate(
    rng: np.random.Generator,
    clones: dict[str, tuple[int, list[float]]],
    rho: float = 1e-3,
    depth: tuple[int, int] = (3000, 12000),
) -> tuple[list[LocusSeries], list[str]]:
    """Reads per variant and draw: beta-binomial around the clone's VAF (rho), plus a
    locus-specific background error; the first clone is truncal."""
    series, truth = [], []
    for c, (name, (count, trajectory)) in enumerate(clones.items()):
        for v in range(count):
            background = float(rng.uniform(2e-5, 2e-4))
            observations = []
            for t, vaf in enumerate(trajectory):
                reads = int(rng.integers(*depth))
                if vaf > 0:
                    precision = (1 - rho) / rho
                    vaf = float(rng.beta(vaf * precision, (1 - vaf) * precision))
                rate = vaf * (1 - background) + background
                observations.append(
                    LocusObservation(
                        f"s{t}",
                        D0 + dt.timedelta(days=60 * t),
                        int(rng.binomial(reads, rate)),
                        reads,
                        background,
                    )
                )
            series.append(
                LocusSeries(f"{name}{v}", None, None, tuple(observations), truncal=c == 0)
            )
            truth.append(name)
    return series, truth


def clone_of(fit: CloneFit, key: str) -> int:
    return next(a.clone_id for a in fit.assignments if a.key == key)


def test_three_clones_are_recovered_with_their_labels() -> None:
    """12 seeded patients: K = 3, ARI >= 0.9 and the right labels in at least 10."""
    right_k = good_ari = right_labels = 0
    for seed in range(12):
        series, truth = simulate(np.random.default_rng(seed), THREE_CLONES)
        fit = fit_clones(series, PARAMS, np.random.default_rng(seed))
        predicted = [clone_of(fit, s.key) for s in series]
        right_k += fit.n_clones == 3
        good_ari += adjusted_rand_index(truth, predicted) >= 0.9
        labels = {fit.clones[clone_of(fit, name + "0") - 1].label for name in THREE_CLONES}
        right_labels += [
            fit.clones[clone_of(fit, f"{name}0") - 1].label for name in THREE_CLONES
        ] == ["declining", "emerging", "cleared"] and len(labels) == 3
    assert right_k >= 10
    assert good_ari >= 10
    assert right_labels >= 10


def test_fit_reports_ccf_assignments_and_bic() -> None:
    series, _ = simulate(np.random.default_rng(3), THREE_CLONES)
    fit = fit_clones(series, PARAMS, np.random.default_rng(3))
    assert [k for k, _ in fit.bic] == [1, 2, 3, 4, 5, 6]
    assert min(fit.bic, key=lambda kb: kb[1])[0] == fit.n_clones == 3
    trunk = fit.clones[0]
    assert set(trunk.member_keys) == {f"trunk{v}" for v in range(6)}
    # The truncal clone is the tumour-fraction reference: its CCF is 1 within its interval.
    for draw in trunk.draws:
        assert draw.ccf is not None and draw.ccf_lower is not None and draw.ccf_upper is not None
        assert draw.ccf_lower <= 1.0 <= draw.ccf_upper
        assert draw.vaf_lower <= draw.vaf <= draw.vaf_upper
    esr1 = fit.clones[clone_of(fit, "esr10") - 1]
    assert not esr1.draws[0].detected and esr1.draws[-1].detected
    last = esr1.draws[-1]
    assert last.ccf is not None and 0.2 < last.ccf < 0.8  # truth: 2 × 0.004 / 0.016 = 0.5
    for assignment in fit.assignments:
        assert sum(assignment.probabilities) == pytest.approx(1.0)
        assert max(assignment.probabilities) == assignment.probabilities[assignment.clone_id - 1]
    assert 1e-4 < fit.overdispersion < 1e-2


def test_two_clones_stable_trunk_and_expanding_subclone() -> None:
    clones = {
        "trunk": (5, [0.03, 0.03, 0.03, 0.03, 0.03]),
        "esr1": (4, [0.001, 0.002, 0.004, 0.008, 0.012]),
    }
    hits = 0
    for seed in range(6):
        series, truth = simulate(np.random.default_rng(100 + seed), clones)
        fit = fit_clones(series, PARAMS, np.random.default_rng(seed))
        labels = [fit.clones[clone_of(fit, k) - 1].label for k in ("trunk0", "esr10")]
        ari = adjusted_rand_index(truth, [clone_of(fit, s.key) for s in series])
        hits += fit.n_clones == 2 and ari == 1.0 and labels == ["stable", "expanding"]
        expanding = fit.clones[clone_of(fit, "esr10") - 1]
        if expanding.label == "expanding":
            assert expanding.label_p_value is not None and expanding.label_p_value < 0.01
            assert expanding.label_fold_change is not None
            assert expanding.label_fold_change >= 2
    assert hits >= 5


def test_one_clone_when_all_variants_share_a_trajectory() -> None:
    clones = {"trunk": (8, [0.05, 0.02, 0.01, 0.03])}
    ones = sum(
        fit_clones(
            simulate(np.random.default_rng(s), clones)[0], PARAMS, np.random.default_rng(s)
        ).n_clones
        == 1
        for s in range(6)
    )
    assert ones >= 5


def test_seeded_fits_are_reproducible() -> None:
    series, _ = simulate(np.random.default_rng(7), THREE_CLONES)
    assert fit_clones(series, PARAMS, np.random.default_rng(1)) == fit_clones(
        series, PARAMS, np.random.default_rng(1)
    )


@pytest.mark.parametrize(
    ("clones", "draws"),
    [
        ({"trunk": (1, [0.1, 0.05, 0.02]), "esr1": (1, [0.0, 0.0, 0.01])}, 3),
        ({"trunk": (4, [0.1]), "esr1": (2, [0.004])}, 1),
    ],
)
def test_too_little_data_gives_one_clone_per_variant(
    clones: dict[str, tuple[int, list[float]]], draws: int
) -> None:
    series, _ = simulate(np.random.default_rng(0), clones)
    fit = fit_clones(series, PARAMS, np.random.default_rng(0))
    assert fit.n_clones == len(series) and fit.bic == ()
    assert "one clone per variant" in fit.method
    assert all(len(c.member_keys) == 1 and len(c.draws) == draws for c in fit.clones)
    assert all(
        c.label in {"emerging", "expanding", "stable", "declining", "cleared", "not_detected"}
        for c in fit.clones
    )
    if draws == 3:
        labels = {c.member_keys[0]: c.label for c in fit.clones}
        assert labels == {"trunk0": "declining", "esr10": "emerging"}


def test_a_clone_of_background_only_is_not_detected() -> None:
    clones = {"trunk": (4, [0.05, 0.05, 0.05]), "ghost": (3, [0.0, 0.0, 0.0])}
    series, _ = simulate(np.random.default_rng(2), clones)
    fit = fit_clones(series, PARAMS, np.random.default_rng(2))
    ghost = fit.clones[clone_of(fit, "ghost0") - 1]
    assert ghost.label == "not_detected"
    assert all(d.ccf is not None and d.ccf < 0.05 for d in ghost.draws)


def test_clones_per_sample_counts_the_clones_present_in_each_draw() -> None:
    """A sensitive subclone gone by the third draw and an ESR1 subclone from the fourth: two
    clones, one, then two again. Exact per-draw counts in at least 5 of 6 seeded patients, and
    always the clones whose pooled reads are detected in that draw."""
    clones = {
        "trunk": (6, [0.10, 0.05, 0.025, 0.015, 0.010, 0.008]),
        "esr1": (3, [0.0, 0.0, 0.0, 1e-3, 3e-3, 8e-3]),
        "sensitive": (4, [0.04, 0.01, 0.0, 0.0, 0.0, 0.0]),
    }
    exact = 0
    for seed in range(6):
        rng = np.random.default_rng(300 + seed)
        series, _ = simulate(rng, clones)
        fit = fit_clones(series, PARAMS, rng)
        per_sample = clones_per_sample(fit)
        assert [s.sample_id for s in per_sample] == [f"s{t}" for t in range(6)]
        for sample in per_sample:
            present = {
                c.clone_id
                for c in fit.clones
                for d in c.draws
                if d.sample_id == sample.sample_id and d.detected
            }
            assert sample.clone_ids == tuple(sorted(present))
            assert sample.n_clones == len(present)
        exact += [s.n_clones for s in per_sample] == [2, 2, 1, 2, 2, 2]
        # The per-sample heterogeneity index: MATH next to the clone count, draw by draw.
        scores = math_scores(series, LongitudinalParams())
        index = sample_heterogeneity(scores, fit)
        assert [(h.sample_id, h.n_clones, h.clone_ids) for h in index] == [
            (s.sample_id, s.n_clones, s.clone_ids) for s in per_sample
        ]
        assert [(h.math, h.n_detected_variants) for h in index] == [
            (m.math, m.n_detected) for m in scores
        ]
    assert exact >= 5
