"""Tests of the hierarchical, over-dispersed background model (services/genomics/background.py).

Control panels are simulated with known truth: per-locus mean rates from a Beta prior, each
control draw's rate varying around its locus' mean by a lognormal factor (sigma), a few rows
carrying real mutations. The fit must recover the prior and sigma, keep the high tail that
reveals sigma while explaining real mutations away, and say so when there is too little to fit.
"""

from __future__ import annotations

import numpy as np
import pytest

from services.errors import InvalidInput
from services.genomics.background import (
    AssayModel,
    BackgroundCounts,
    BackgroundParams,
    DrawLocus,
    fit_assay_model,
    fit_background,
    locus_backgrounds,
    locus_class,
    null_pmf,
    panel_of_normals,
    substitution_class,
    update_with_negative_draws,
)

PARAMS = BackgroundParams()


def panel(
    rates: np.ndarray,
    n_controls: int,
    rng: np.random.Generator,
    *,
    sigma: float = 0.0,
    depth: tuple[int, int] = (2000, 5000),
    prefix: str = "chr1",
    alt: str = "C",
) -> dict[str, list[BackgroundCounts]]:
    out = {}
    for i, rate in enumerate(rates):
        depths = rng.integers(*depth, size=n_controls)
        factor = np.exp(sigma * rng.standard_normal(n_controls) - sigma**2 / 2)
        out[f"{prefix}:{100 + i}:A>{alt}"] = [
            BackgroundCounts(int(m), int(d))
            for m, d in zip(
                rng.binomial(depths, np.minimum(rate * factor, 0.5)), depths, strict=True
            )
        ]
    return out


def beta_rates(
    rng: np.random.Generator, n: int, mean: float = 1e-4, shape: float = 2.0
) -> np.ndarray:
    return rng.beta(shape, shape * (1 - mean) / mean, size=n)


@pytest.mark.parametrize("sigma", [0.0, 0.5, 1.0])
def test_prior_and_draw_to_draw_sigma_are_recovered(sigma: float) -> None:
    rng = np.random.default_rng(1)
    controls = panel(beta_rates(rng, 600), 40, rng, sigma=sigma)
    model = fit_assay_model(controls, PARAMS)
    assert model is not None
    prior = model.prior_for(None)
    assert prior.mean == pytest.approx(1e-4, rel=0.15)
    assert prior.concentration == pytest.approx(2.0 / 1e-4, rel=0.5)
    # one grid step either side (the fit keeps the largest sigma the data cannot refute)
    assert abs(model.sigma - sigma) <= 0.2
    assert model.n_loci == 600 and model.n_rows == 24_000


def test_real_mutations_in_controls_are_explained_not_trimmed() -> None:
    """3 % of control rows carry a mutation at 0.5-5 % VAF: the contamination component
    explains them (sigma and the prior stay right), where pooling them as error would inflate
    both; the noisy high tail of sigma 0.5 stays in the fit."""
    rng = np.random.default_rng(2)
    controls = panel(beta_rates(rng, 400), 40, rng, sigma=0.5)
    for rows in controls.values():
        for j in range(len(rows)):
            if rng.random() < 0.03:
                depth = rows[j].depth
                rows[j] = BackgroundCounts(
                    int(rng.binomial(depth, rng.uniform(0.005, 0.05))), depth
                )
    model = fit_assay_model(controls, PARAMS)
    assert model is not None and model.contamination >= 0.01
    assert abs(model.sigma - 0.5) <= 0.2
    assert model.prior_for(None).mean == pytest.approx(1e-4, rel=0.25)


def test_without_a_panel_the_patients_draws_teach_sigma() -> None:
    """One matched normal per locus cannot separate sigma from the spread of locus means; the
    patients' own serial draws can, and draws carrying ctDNA are weighted out of the fit."""
    rng = np.random.default_rng(3)
    rates = beta_rates(rng, 16 * 80)
    controls = panel(rates, 1, rng, sigma=0.5)
    keys = list(controls)
    draws = []
    for patient in range(80):
        loci = keys[16 * patient : 16 * (patient + 1)]
        fraction_by_draw = [0.0] * 8 if patient % 4 else [0, 0, 0, 0, 2e-4, 1e-3, 5e-3, 2e-2]
        for fraction in fraction_by_draw:
            depth = rng.integers(2000, 5000, size=16)
            e = rates[16 * patient : 16 * (patient + 1)]
            e = e * np.exp(0.5 * rng.standard_normal(16) - 0.125)
            alt = rng.binomial(depth, fraction * 0.5 + (1 - fraction) * e)
            draws.append(
                [
                    DrawLocus(k, int(m), int(d), 0.5)
                    for k, m, d in zip(loci, alt, depth, strict=True)
                ]
            )
    model = fit_assay_model(controls, PARAMS, draws=draws)
    assert model is not None and model.n_draws < len(draws)  # ctDNA draws weighted out
    assert abs(model.sigma - 0.5) <= 0.2
    assert model.prior_for(None).mean == pytest.approx(1e-4, rel=0.25)


def test_too_little_background_is_unknown() -> None:
    controls = {f"chr1:{i}:A>C": [BackgroundCounts(0, 3000)] for i in range(10)}
    assert fit_assay_model(controls, PARAMS) is None  # too few loci
    one_normal = {f"chr1:{i}:A>C": [BackgroundCounts(0, 3000)] for i in range(20)}
    assert fit_assay_model(one_normal, PARAMS) is None  # one matched normal: too few rows
    panel = {f"chr1:{i}:A>C": [BackgroundCounts(i % 2, 3000)] * 6 for i in range(16)}
    assert fit_assay_model(panel, PARAMS) is not None  # one patient's loci, six normals
    backgrounds = fit_background(controls, PARAMS)
    assert all(not bg.known for bg in backgrounds.values())
    assert all(bg.prior_source == "none" for bg in backgrounds.values())


def test_posterior_shrinks_sparse_loci_and_follows_rich_ones() -> None:
    rng = np.random.default_rng(4)
    controls = panel(beta_rates(rng, 300, mean=4e-5), 20, rng)
    model = fit_assay_model(controls, PARAMS)
    extra = {
        "chr2:1:A>C": [BackgroundCounts(1, 3000)],
        "chr2:2:A>C": [BackgroundCounts(60, 200_000)] * 10,
        "chr2:3:A>C": [],
    }
    fitted = locus_backgrounds(model, extra, PARAMS, loci=["chr2:3:A>C"])
    prior_mean = fitted["chr2:3:A>C"].mean
    assert fitted["chr2:3:A>C"].n_controls == 0
    assert fitted["chr2:3:A>C"].prior_source == "class T>G"  # A>C, 300 such loci
    assert prior_mean == pytest.approx(4e-5, rel=0.3)
    assert fitted["chr2:1:A>C"].mean < 2 * prior_mean  # one read in 3,000 barely moves it
    assert fitted["chr2:2:A>C"].mean == pytest.approx(3e-4, rel=0.1)
    for bg in fitted.values():
        assert bg.known and bg.version == PARAMS.version
        assert np.exp(bg.log_weights).sum() == pytest.approx(1.0)


def test_the_rate_grid_starts_at_the_floor() -> None:
    zeros = {f"chr1:{i}:A>C": [BackgroundCounts(0, 5000)] * 40 for i in range(50)}
    for floor in (1e-5, 1e-4):
        fitted = fit_background(zeros, BackgroundParams(floor=floor))
        for bg in fitted.values():
            assert floor <= bg.mean < 1.5 * floor and bg.floored


def test_blacklist_reasons() -> None:
    rng = np.random.default_rng(5)
    controls = panel(np.full(60, 3e-5), 20, rng)
    controls["chr3:1:A>C"] = [BackgroundCounts(80, 4000)] * 20  # AF 0.02 in every control
    controls["chr3:2:A>C"] = [BackgroundCounts(40, 4000)] * 4 + [BackgroundCounts(0, 4000)] * 16
    controls["chr3:3:A>C"] = [BackgroundCounts(40, 4000)] * 2 + [BackgroundCounts(0, 4000)] * 18
    fitted = fit_background(controls, PARAMS)
    assert fitted["chr3:1:A>C"].blacklisted
    assert fitted["chr3:1:A>C"].reason.startswith("background_af 0.02")
    assert fitted["chr3:2:A>C"].blacklisted and "4/20 controls > 10%" in fitted["chr3:2:A>C"].reason
    assert not fitted["chr3:3:A>C"].blacklisted  # 2/20 = 10 %, not more
    # the mutated rows are explained as mutations, not as a high error rate
    assert fitted["chr3:3:A>C"].mean < 1e-4
    assert fitted["chr1:100:A>C"].mean < 1e-4


def test_substitution_class_priors() -> None:
    rng = np.random.default_rng(6)
    controls = {
        **panel(beta_rates(rng, 200, mean=2e-4, shape=3), 20, rng, prefix="chr4", alt="G"),
        **panel(beta_rates(rng, 200, mean=2e-5, shape=3), 20, rng, prefix="chr5", alt="C"),
    }
    model = fit_assay_model(controls, PARAMS)
    assert model is not None
    assert locus_class("chr4:1:A>G") == "T>C" and locus_class("chr5:1:A>C") == "T>G"
    assert model.prior_for("T>C").source == "class T>C"
    assert model.prior_for("T>C").mean == pytest.approx(2e-4, rel=0.25)
    assert model.prior_for("T>G").mean == pytest.approx(2e-5, rel=0.25)
    assert model.prior_for("C>A").source == "global"  # no such loci
    assert locus_class("chr1:5:AT>A") == "indel"


def test_substitution_class_is_strand_symmetric() -> None:
    assert substitution_class("G", "A") == "C>T"
    assert substitution_class("c", "t") == "C>T"
    assert substitution_class("A", "C") == "T>G"
    with pytest.raises(InvalidInput):
        substitution_class("A", "A")
    with pytest.raises(InvalidInput):
        substitution_class("AT", "A")


def test_patient_negative_draws_update_the_posterior() -> None:
    rng = np.random.default_rng(7)
    fitted = fit_background(panel(beta_rates(rng, 100), 10, rng), PARAMS)
    key = next(iter(fitted))
    before = fitted[key]
    noisy = [BackgroundCounts(6, 5000), BackgroundCounts(5, 4000)]
    after = update_with_negative_draws(fitted, {key: noisy}, PARAMS)
    assert after[key].mean > before.mean
    assert after[key].n_controls == before.n_controls + 2
    assert after[key].depth == before.depth + 9000 and not after[key].blacklisted
    other = next(k for k in fitted if k != key)
    assert after[other] is fitted[other]
    with pytest.raises(InvalidInput):
        update_with_negative_draws(fitted, {"unknown": [BackgroundCounts(0, 10)]}, PARAMS)


def test_null_pmf_is_a_distribution_with_the_model_tail() -> None:
    rng = np.random.default_rng(8)
    controls = panel(beta_rates(rng, 300), 30, rng, sigma=1.0)
    model = fit_assay_model(controls, PARAMS)
    assert model is not None and model.sigma >= 0.8
    key = next(iter(controls))
    spread = locus_backgrounds(model, {key: controls[key]}, PARAMS)[key]
    fixed = locus_backgrounds(
        AssayModel(**{**vars_of(model), "sigma": 0.0}), {key: controls[key]}, PARAMS
    )[key]
    depth = np.array([5000])
    heavy, light = null_pmf([spread], depth)[:, 0], null_pmf([fixed], depth)[:, 0]
    light = np.pad(light, (0, max(0, heavy.size - light.size)))
    assert heavy.sum() == pytest.approx(1.0, abs=1e-6) and light.sum() == pytest.approx(
        1.0, abs=1e-6
    )
    k = np.arange(heavy.size)
    mean = float((k * light).sum())
    assert float((k * heavy).sum()) == pytest.approx(mean, rel=0.1)  # same mean
    tail = int(np.ceil(mean + 6 * np.sqrt(mean)))
    assert heavy[tail:].sum() > 3 * light[tail:].sum()  # a heavier tail


def vars_of(model: AssayModel) -> dict[str, object]:
    return {f: getattr(model, f) for f in model.__dataclass_fields__}


def test_the_model_round_trips_through_json() -> None:
    rng = np.random.default_rng(9)
    model = fit_assay_model(panel(beta_rates(rng, 100), 20, rng), PARAMS)
    assert model is not None
    again = AssayModel.from_json(model.to_json())
    assert again == model and again.digest == model.digest


def test_invalid_inputs() -> None:
    with pytest.raises(InvalidInput):
        BackgroundCounts(5, 4)
    with pytest.raises(InvalidInput):
        BackgroundCounts(-1, 4)
    with pytest.raises(InvalidInput):
        BackgroundParams(floor=0.0)
    with pytest.raises(InvalidInput):
        DrawLocus("k", 1, 10, 0.0)


def test_panel_of_normals_borrows_across_the_whole_panel() -> None:
    """Normal-plasma evidence tables (one per control) pooled per locus: a patient's locus
    that no control covers gets the prior fitted on every locus of the panel, and a locus
    absent from a table is missing, not zero reads."""
    rng = np.random.default_rng(12)
    by_locus = panel(beta_rates(rng, 60, mean=4e-5), 20, rng)
    tables = [{key: counts[j] for key, counts in by_locus.items()} for j in range(20)]
    del tables[0]["chr1:100:A>C"]  # this control did not cover that locus
    uncovered = "chr9:5000:G>T"
    pon = panel_of_normals(tables, PARAMS, loci=[uncovered])
    assert pon["chr1:100:A>C"].n_controls == 19 and pon["chr1:101:A>C"].n_controls == 20
    assert pon[uncovered].n_controls == 0 and pon[uncovered].prior_source == "global"
    assert 2e-5 < pon[uncovered].mean < 8e-5
    pooled = {key: list(counts) for key, counts in by_locus.items()}
    pooled["chr1:100:A>C"] = pooled["chr1:100:A>C"][1:]
    direct = locus_backgrounds(fit_assay_model(pooled, PARAMS), pooled, PARAMS, loci=[uncovered])
    assert {k: b.fingerprint() for k, b in pon.items()} == {
        k: b.fingerprint() for k, b in direct.items()
    }
