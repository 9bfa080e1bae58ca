"""Tests of the empirical-Bayes beta-binomial background (services/genomics/background.py)."""

from __future__ import annotations

import numpy as np
import pytest

from services.errors import InvalidInput
from services.genomics.background import (
    BackgroundCounts,
    BackgroundParams,
    LocusBackground,
    default_prior,
    fit_background,
    fit_beta_prior,
    panel_of_normals,
    prior_background,
    substitution_class,
    update_with_negative_draws,
)

PARAMS = BackgroundParams()


def panel(
    rates: np.ndarray,
    n_controls: int,
    rng: np.random.Generator,
    depth: tuple[int, int] = (2000, 5000),
) -> dict[str, list[BackgroundCounts]]:
    out = {}
    for i, rate in enumerate(rates):
        depths = rng.integers(*depth, size=n_controls)
        out[f"chr1:{100 + i}:A>C"] = [
            BackgroundCounts(int(rng.binomial(d, rate)), int(d)) for d in depths
        ]
    return out


def test_prior_recovered_by_marginal_ml() -> None:
    rng = np.random.default_rng(1)
    shape, mean = 2.0, 4e-5
    rates = rng.beta(shape, shape * (1 - mean) / mean, size=3000)
    counts = panel(rates, 30, rng)
    alt = [sum(c.alt_reads for c in v) for v in counts.values()]
    depth = [sum(c.depth for c in v) for v in counts.values()]
    prior = fit_beta_prior(alt, depth, PARAMS)
    assert prior.mean == pytest.approx(mean, rel=0.1)
    assert prior.alpha == pytest.approx(shape, rel=0.3)
    assert prior.source == "global" and prior.n_loci == 3000
    # hyperparameter uncertainty: nine quadrature nodes around the estimate, weights sum to 1
    assert len(prior.nodes) == 9
    assert sum(w for w, _, _ in prior.nodes) == pytest.approx(1.0)
    assert min(a for _, a, _ in prior.nodes) < prior.alpha < max(a for _, a, _ in prior.nodes)


def test_sparse_controls_widen_the_posterior_beyond_the_plug_in_prior() -> None:
    rng = np.random.default_rng(6)
    rates = rng.beta(2.0, 5e4, size=300)
    counts = panel(rates, 2, rng)
    counts["new"] = [BackgroundCounts(0, 3000)]
    fitted = fit_background(counts, PARAMS)
    alt = [sum(c.alt_reads for c in v) for k, v in counts.items() if k != "new"]
    depth = [sum(c.depth for c in v) for k, v in counts.items() if k != "new"]
    prior = fit_beta_prior(alt, depth, PARAMS)
    plug_in_concentration = prior.alpha + prior.beta + 3000
    # same mean, more spread: the hyperparameters are uncertain with 300 sparse loci
    assert fitted["new"].mean == pytest.approx(prior.alpha / plug_in_concentration, rel=0.1)
    assert fitted["new"].alpha + fitted["new"].beta < plug_in_concentration


def test_posterior_shrinks_sparse_loci_and_follows_rich_ones() -> None:
    rng = np.random.default_rng(2)
    rates = rng.beta(2.0, 2.0 / 4e-5, size=500)
    counts = panel(rates, 20, rng)
    counts["sparse"] = [BackgroundCounts(1, 3000)]  # 3.3e-4 observed in one small control
    counts["rich"] = [BackgroundCounts(60, 200_000)] * 10  # 3e-4 over 2 M molecules
    counts["none"] = []
    fitted = fit_background(counts, PARAMS)
    prior_mean = fitted["none"].mean
    assert fitted["none"].n_controls == 0 and fitted["none"].prior_source == "global"
    assert prior_mean == pytest.approx(4e-5, rel=0.2)
    # one read in 3,000 barely moves a locus off the prior; 600 in 2 M pins it
    assert fitted["sparse"].mean < 2 * prior_mean
    assert fitted["rich"].mean == pytest.approx(3e-4, rel=0.05)
    # uncertainty is carried: the rich locus' Beta is far more concentrated
    assert fitted["rich"].alpha + fitted["rich"].beta > 5 * (
        fitted["sparse"].alpha + fitted["sparse"].beta
    )
    for bg in fitted.values():
        assert bg.mean == pytest.approx(bg.alpha / (bg.alpha + bg.beta))
        assert bg.version == "background-1"


def test_background_is_floored_never_zero() -> None:
    zeros = {f"l{i}": [BackgroundCounts(0, 5000)] * 40 for i in range(50)}
    fitted = fit_background(zeros, PARAMS)
    for bg in fitted.values():
        assert bg.mean == pytest.approx(1e-5)
        assert bg.floored and bg.alpha > 0
    raw = fit_background(zeros, BackgroundParams(floor=1e-4))
    assert all(bg.mean == pytest.approx(1e-4) for bg in raw.values())
    assert prior_background("x", default_prior(PARAMS), PARAMS).mean == pytest.approx(1e-4)


def test_default_prior_when_nothing_to_borrow_from() -> None:
    few = {"a": [BackgroundCounts(0, 4000)], "b": []}
    fitted = fit_background(few, PARAMS)
    assert fitted["b"].prior_source == "default"
    assert fitted["b"].mean == pytest.approx(PARAMS.default_prior_mean)
    assert fitted["b"].alpha + fitted["b"].beta == pytest.approx(PARAMS.default_prior_pseudo_depth)
    assert fitted["a"].mean < fitted["b"].mean  # 4,000 clean molecules pull it down


def test_blacklist_reasons() -> None:
    rng = np.random.default_rng(3)
    counts = panel(np.full(40, 3e-5), 20, rng)
    counts["noisy"] = [BackgroundCounts(80, 4000)] * 20  # AF 0.02 in every control
    counts["recurrent"] = [BackgroundCounts(3, 4000)] * 3 + [BackgroundCounts(0, 4000)] * 17
    counts["once"] = [BackgroundCounts(3, 4000)] * 2 + [BackgroundCounts(0, 4000)] * 18
    fitted = fit_background(counts, PARAMS)
    assert fitted["noisy"].blacklisted and fitted["noisy"].reason.startswith("background_af 0.02")
    assert fitted["recurrent"].blacklisted
    assert "3/20 controls > 10%" in fitted["recurrent"].reason
    assert not fitted["once"].blacklisted and fitted["once"].reason == ""  # 2/20 = 10 %, not >
    # the gross locus does not leak into the prior
    assert fitted["chr1:100:A>C"].mean < 1e-4


def test_substitution_class_priors() -> None:
    rng = np.random.default_rng(4)
    counts, classes = {}, {}
    for cls, mean in (("C>T", 1e-4), ("T>G", 2e-5)):
        rates = rng.beta(3.0, 3.0 / mean, size=200)
        for key, obs in panel(rates, 20, rng, depth=(1000, 2500)).items():
            counts[f"{cls}:{key}"] = obs
            classes[f"{cls}:{key}"] = cls
    counts["C>T:new"], classes["C>T:new"] = [], "C>T"
    counts["T>G:new"], classes["T>G:new"] = [], "T>G"
    counts["A>C:new"], classes["A>C:new"] = [], "C>A"  # too few loci: global prior
    fitted = fit_background(counts, PARAMS, substitution_class_by_locus=classes)
    assert fitted["C>T:new"].prior_source == "class C>T"
    assert fitted["C>T:new"].mean == pytest.approx(1e-4, rel=0.25)
    assert fitted["T>G:new"].mean == pytest.approx(2e-5, rel=0.25)
    assert fitted["A>C:new"].prior_source == "global"
    pooled = fit_background(counts, PARAMS)
    assert pooled["C>T:new"].mean < fitted["C>T:new"].mean


def test_substitution_class_is_strand_symmetric() -> None:
    assert substitution_class("G", "A") == "C>T"
    assert substitution_class("c", "t") == "C>T"
    assert substitution_class("A", "C") == "T>G"
    with pytest.raises(InvalidInput):
        substitution_class("A", "A")
    with pytest.raises(InvalidInput):
        substitution_class("AT", "A")


def test_patient_negative_draws_update_the_posterior() -> None:
    rng = np.random.default_rng(5)
    counts = panel(rng.beta(2.0, 5e4, size=100), 10, rng)
    fitted = fit_background(counts, PARAMS)
    key = next(iter(fitted))
    before = fitted[key]
    after = update_with_negative_draws(
        fitted, {key: [BackgroundCounts(1, 5000), BackgroundCounts(0, 4000)]}, PARAMS
    )
    assert not before.floored and not after[key].floored
    assert after[key].alpha == pytest.approx(before.alpha + 1)
    assert after[key].alpha + after[key].beta == pytest.approx(before.alpha + before.beta + 9000)
    assert after[key].n_controls == before.n_controls + 2
    assert after[key].depth == before.depth + 9000
    assert not after[key].blacklisted
    other = next(k for k in fitted if k != key)
    assert after[other] == fitted[other]
    with pytest.raises(InvalidInput):
        update_with_negative_draws(fitted, {"unknown": [BackgroundCounts(0, 10)]}, PARAMS)


def test_invalid_inputs() -> None:
    with pytest.raises(InvalidInput):
        BackgroundCounts(5, 4)
    with pytest.raises(InvalidInput):
        BackgroundCounts(-1, 4)
    with pytest.raises(InvalidInput):
        BackgroundParams(floor=0.0)
    with pytest.raises(InvalidInput):
        LocusBackground("k", 1.0, 9.0, 0.5, 0, 0, 0, False, "", "x", False, "v")


def test_panel_of_normals_borrows_across_the_whole_panel() -> None:
    """Normal-plasma evidence tables (one per control) pooled per locus: a patient's locus
    that no control covers gets the prior fitted on every locus of the panel (not the
    uninformed default), and a locus absent from a table is missing, not zero reads."""
    rng = np.random.default_rng(12)
    rates = rng.beta(2.0, 2.0 / 4e-5, 60)
    by_locus = panel(rates, 20, rng)
    tables = [{key: counts[j] for key, counts in by_locus.items()} for j in range(20)]
    del tables[0]["chr1:100:A>C"]  # this control did not cover that locus
    uncovered = "chr9:5000:G>T"
    pon = panel_of_normals(tables, PARAMS, loci=[uncovered])
    assert pon["chr1:100:A>C"].n_controls == 19 and pon["chr1:101:A>C"].n_controls == 20
    assert pon[uncovered].n_controls == 0 and pon[uncovered].prior_source == "global"
    fitted_prior_mean = pon[uncovered].mean
    assert 2e-5 < fitted_prior_mean < 8e-5  # near the panel's mean rate, not the default 1e-4
    assert abs(fitted_prior_mean - default_prior(PARAMS).mean) > 2e-5
    pooled = {key: list(counts) for key, counts in by_locus.items()}
    pooled["chr1:100:A>C"] = pooled["chr1:100:A>C"][1:]
    pooled[uncovered] = []
    assert pon == fit_background(pooled, PARAMS)
