"""Clones from serial ctDNA: variants clustered by trajectory, with CCF series and a label.

Model (domain-anchors §4.9; read model of PyClone-VI, Gillis & Roth, BMC Bioinformatics
2020;21:571): variant j belongs to one of K clones; clone k has a plasma VAF trajectory
``theta_k(t) = p_t·phi_k(t)/2`` (diploid heterozygous, copy-neutral; ``p_t`` the draw's
tumour fraction, ``phi_k(t)`` the clone's cancer-cell fraction), and the mutant reads of j at
draw t follow ``BetaBinomial(R_jt, mean = theta_k(t)·(1 - e_jt) + e_jt, rho)``. Fitting on
``theta`` rather than ``phi`` needs no tumour fraction and is the same model whenever
``p_t > 0``; ``phi = 2·theta/p_t`` is reported against the tumour fraction of longitudinal.py.

Fit: EM over the mixture, several seeded restarts per K (k-means++ on log VAF trajectories plus
one deterministic start), a quasi-likelihood M-step for theta (beta-binomial variance weights
``1/(1 + (R - 1)·rho)``), and rho estimated by maximum likelihood on the best restart;
K from 1 to min(n_variants, max_clusters) chosen by BIC with n = the number of (variant, draw)
observations. With too few variants or draws, each variant is its own clone.

Per clone and draw: VAF MLE with profile 95% interval from the members' reads, CCF with
interval, and a pooled detection test; the clone label comes from that trajectory
(see ``label_trajectory``). Copy number is not modelled: a variant on an amplified allele
looks like a larger clone (sciclone #33: use copy-neutral loci).
Pure: stdlib, numpy, scipy and services.errors; randomness from a Generator passed in.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, stats

from services.genomics.longitudinal import (
    Draw,
    FloatArray,
    LocusSeries,
    LongitudinalParams,
    MathScore,
    PooledCall,
    count_loglik,
    draws_of,
    fit_fraction,
    log_binomial_coefficient,
    pooled_call,
    tumour_fractions,
)

CloneLabel = Literal["emerging", "expanding", "stable", "declining", "cleared", "not_detected"]

_MAX_THETA: Final[float] = 1.0 - 1e-9


@dataclass(frozen=True, slots=True)
class CloneParams:
    """Parameters of the clone model; ``version`` is stored with every result."""

    version: str = "clones-2026.11-1"
    max_clusters: int = 6
    n_restarts: int = 6
    max_iter: int = 500
    tol: float = 1e-6
    """Relative change of the log-likelihood that stops EM."""
    overdispersion: float | None = None
    """Fixed beta-binomial rho; None estimates it (maximum likelihood)."""
    initial_overdispersion: float = 1e-3
    overdispersion_bounds: tuple[float, float] = (1e-6, 0.2)
    alpha: float = 0.01
    """Significance of a clone's detection and of a rise or fall between two draws."""
    min_alt_reads: int = 2
    min_fold: float = 2.0
    min_background_error: float = 1e-6
    min_variants: int = 3
    min_draws: int = 2
    ci_level: float = 0.95


@dataclass(frozen=True, slots=True)
class CloneDraw:
    """One clone at one draw: VAF (MLE, profile CI), CCF against the tumour fraction, and the
    pooled detection of its members' reads. CCF is None when the tumour fraction is not
    detected or the clone has no reads at the draw."""

    sample_id: str
    collection_date: dt.date
    vaf: float
    vaf_lower: float
    vaf_upper: float
    ccf: float | None
    ccf_lower: float | None
    ccf_upper: float | None
    detected: bool
    p_value: float
    lod95: float
    mutant_reads: int
    informative_reads: int


@dataclass(frozen=True, slots=True)
class Clone:
    """A clone: its member variants, its CCF series and its trajectory label.

    ``label_p_value`` / ``label_fold_change`` are the two-draw test behind an "expanding" or
    "declining" label (None for other labels).
    """

    clone_id: int
    member_keys: tuple[str, ...]
    draws: tuple[CloneDraw, ...]
    label: CloneLabel
    label_p_value: float | None
    label_fold_change: float | None


@dataclass(frozen=True, slots=True)
class VariantAssignment:
    """Posterior probability of each clone (in ``CloneFit.clones`` order) for one variant."""

    key: str
    clone_id: int
    probabilities: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class CloneFit:
    """The chosen clone model of one patient and what it was chosen from."""

    params: CloneParams
    method: str
    n_clones: int
    clones: tuple[Clone, ...]
    assignments: tuple[VariantAssignment, ...]
    bic: tuple[tuple[int, float], ...]
    overdispersion: float
    log_likelihood: float


@dataclass(frozen=True, slots=True)
class SampleClones:
    """Heterogeneity of one draw by clone count: the clones detected in it (the pooled test of
    their members' reads against background, ``CloneDraw.detected``), the number that sits next
    to the draw's MATH score (longitudinal.py)."""

    sample_id: str
    collection_date: dt.date
    n_clones: int
    clone_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SampleHeterogeneity:
    """The heterogeneity index of one draw: MATH over its detected variants (None below the
    minimum number of variants) and the number of clones present in it."""

    sample_id: str
    collection_date: dt.date
    math: float | None
    n_detected_variants: int
    n_clones: int
    clone_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Mixture:
    loglik: float
    theta: FloatArray  # (K, T)
    weights: FloatArray  # (K,)
    resp: FloatArray  # (J, K)
    rho: float


# --------------------------------------------------------------------------- EM


def _component_loglik(
    alt: FloatArray, depth: FloatArray, bg: FloatArray, theta: FloatArray, rho: float
) -> FloatArray:
    """(J, K): sum over draws of the log-pmf of variant j's reads under clone k, without the
    binomial coefficients (constant in every parameter; ``_constant`` adds them back)."""
    mean = theta[None, :, :] * (1.0 - bg[:, None, :]) + bg[:, None, :]
    zero = np.zeros((1, 1, 1))
    ll = count_loglik(alt[:, None, :], depth[:, None, :], mean, rho, log_choose=zero)
    return np.asarray(ll.sum(axis=2), dtype=np.float64)


def _constant(alt: FloatArray, depth: FloatArray) -> float:
    return float(log_binomial_coefficient(alt, depth).sum())


def _m_step(
    alt: FloatArray,
    depth: FloatArray,
    bg: FloatArray,
    resp: FloatArray,
    rho: float,
    previous: FloatArray | None,
) -> tuple[FloatArray, FloatArray]:
    """Mixture weights and quasi-likelihood theta: sum w(M - R·e) / sum w·R·(1 - e) with
    w = r_jk / (1 + (R - 1)·rho), the inverse beta-binomial variance inflation."""
    weights = resp.mean(axis=0) + 1e-12
    inflation = 1.0 / (1.0 + np.maximum(depth - 1.0, 0.0) * rho)  # (J, T)
    num = resp.T @ (inflation * (alt - depth * bg))  # (K, T)
    den = resp.T @ (inflation * depth * (1.0 - bg))
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = np.where(den > 0, num / den, np.nan)
    fill = previous if previous is not None else np.zeros_like(theta)
    theta = np.where(np.isnan(theta), fill, theta)
    return np.clip(theta, 0.0, _MAX_THETA), weights / weights.sum()


def _e_step(
    alt: FloatArray,
    depth: FloatArray,
    bg: FloatArray,
    theta: FloatArray,
    weights: FloatArray,
    rho: float,
) -> tuple[FloatArray, float]:
    joint = _component_loglik(alt, depth, bg, theta, rho) + np.log(weights)[None, :]
    top = joint.max(axis=1)
    norm = top + np.log(np.exp(joint - top[:, None]).sum(axis=1))
    return np.exp(joint - norm[:, None]), float(norm.sum())


def _fit_rho(
    alt: FloatArray,
    depth: FloatArray,
    bg: FloatArray,
    theta: FloatArray,
    resp: FloatArray,
    params: CloneParams,
) -> float:
    lo, hi = (math.log(b) for b in params.overdispersion_bounds)

    def objective(log_rho: float) -> float:
        ll = _component_loglik(alt, depth, bg, theta, math.exp(log_rho))
        return -float((resp * ll).sum())

    found = optimize.minimize_scalar(
        objective, bounds=(lo, hi), method="bounded", options={"xatol": 0.02}
    )
    return math.exp(float(found.x))


def _em(
    alt: FloatArray,
    depth: FloatArray,
    bg: FloatArray,
    resp: FloatArray,
    rho: float,
    estimate_rho: bool,
    params: CloneParams,
) -> _Mixture:
    theta: FloatArray | None = None
    loglik = -math.inf
    for iteration in range(params.max_iter):
        theta, weights = _m_step(alt, depth, bg, resp, rho, theta)
        if estimate_rho and iteration % 5 == 0:
            rho = _fit_rho(alt, depth, bg, theta, resp, params)
        resp, new = _e_step(alt, depth, bg, theta, weights, rho)
        if abs(new - loglik) <= params.tol * (1.0 + abs(new)):
            loglik = new
            break
        loglik = new
    assert theta is not None
    return _Mixture(loglik, theta, resp.mean(axis=0), resp, rho)


def _initial_labels(
    features: FloatArray, k: int, rng: np.random.Generator | None
) -> NDArray[np.int64]:
    """k-means++ seeding and Lloyd iterations on log-VAF trajectories; without a generator,
    a deterministic start from the quantiles of each variant's mean log VAF."""
    n = features.shape[0]
    if rng is None:
        order = np.argsort(features.mean(axis=1), kind="stable")
        labels = np.empty(n, dtype=np.int64)
        labels[order] = np.minimum(np.arange(n) * k // n, k - 1)
        return labels
    centres = [features[int(rng.integers(n))]]
    for _ in range(1, k):
        dist = np.min([((features - c) ** 2).sum(axis=1) for c in centres], axis=0)
        total = float(dist.sum())
        pick = int(rng.choice(n, p=dist / total)) if total > 0 else int(rng.integers(n))
        centres.append(features[pick])
    centre_arr = np.array(centres)
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(20):
        labels = np.argmin(
            ((features[:, None, :] - centre_arr[None, :, :]) ** 2).sum(axis=2), axis=1
        )
        for c in range(k):
            if np.any(labels == c):
                centre_arr[c] = features[labels == c].mean(axis=0)
    return labels


def _features(alt: FloatArray, depth: FloatArray) -> FloatArray:
    with np.errstate(invalid="ignore", divide="ignore"):
        vaf = np.where(depth > 0, alt / depth, np.nan)
    logged = np.log10(vaf + 1e-4)
    column = np.nanmean(np.where(np.isnan(logged), np.nan, logged), axis=0)
    column = np.where(np.isnan(column), -4.0, column)
    return np.asarray(np.where(np.isnan(logged), column[None, :], logged), dtype=np.float64)


def _split_start(
    alt: FloatArray, depth: FloatArray, bg: FloatArray, smaller: _Mixture, k: int
) -> NDArray[np.int64]:
    """The (k - 1)-clone fit's assignments, with the variant its clone explains worst (largest
    deviance from its own per-draw VAFs) moved to a clone of its own: the greedy split that
    finds a one-variant subclone, e.g. an emerging ESR1 mutation, which seeding on log-VAF
    features misses when most variants are at background."""
    labels = np.asarray(smaller.resp.argmax(axis=1), dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        own_vaf = np.where(depth > 0, alt / depth, 0.0)
    saturated = np.diagonal(
        _component_loglik(alt, depth, bg, np.clip(own_vaf, 0.0, _MAX_THETA), smaller.rho)
    )
    fitted = _component_loglik(alt, depth, bg, smaller.theta, smaller.rho)
    deviance = saturated - fitted[np.arange(len(labels)), labels]
    labels[int(np.argmax(deviance))] = k - 1
    return labels


def _fit_k(
    alt: FloatArray,
    depth: FloatArray,
    bg: FloatArray,
    k: int,
    rng: np.random.Generator,
    params: CloneParams,
    smaller: _Mixture | None = None,
) -> _Mixture:
    features = _features(alt, depth)
    rho0 = (
        params.overdispersion
        if params.overdispersion is not None
        else params.initial_overdispersion
    )
    starts: list[NDArray[np.int64]] = [_initial_labels(features, k, None)]
    if k > 1:
        starts += [_initial_labels(features, k, rng) for _ in range(params.n_restarts)]
    if smaller is not None:
        starts.append(_split_start(alt, depth, bg, smaller, k))
    best: _Mixture | None = None
    for labels in starts:
        resp = np.full((alt.shape[0], k), 0.02 / k)
        resp[np.arange(alt.shape[0]), labels] += 0.98
        fit = _em(alt, depth, bg, resp, rho0, False, params)
        if best is None or fit.loglik > best.loglik:
            best = fit
    assert best is not None
    if params.overdispersion is None:
        best = _em(alt, depth, bg, best.resp, best.rho, True, params)
    return _Mixture(
        best.loglik + _constant(alt, depth), best.theta, best.weights, best.resp, best.rho
    )


# --------------------------------------------------------------------------- labels


def _two_draw_test(
    members: Sequence[tuple[Sequence[int], Sequence[int], Sequence[float]]], rho: float
) -> float:
    """Likelihood-ratio p-value (chi2_1, halved: one-sided) that two draws of one clone share
    their VAF. ``members``: (alt, depth, background) of draw a and of draw b."""
    (alt_a, dep_a, bg_a), (alt_b, dep_b, bg_b) = members
    separate = (
        fit_fraction(alt_a, dep_a, bg_a, scale=1.0, overdispersion=rho).loglik
        + fit_fraction(alt_b, dep_b, bg_b, scale=1.0, overdispersion=rho).loglik
    )
    joint = fit_fraction(
        [*alt_a, *alt_b], [*dep_a, *dep_b], [*bg_a, *bg_b], scale=1.0, overdispersion=rho
    ).loglik
    return 0.5 * float(stats.chi2.sf(max(0.0, 2.0 * (separate - joint)), 1))


def label_trajectory(
    draws: Sequence[CloneDraw],
    reads: Sequence[tuple[Sequence[int], Sequence[int], Sequence[float]]],
    rho: float,
    params: CloneParams,
) -> tuple[CloneLabel, float | None, float | None]:
    """Label a clone from its per-draw VAF series; returns (label, p-value, fold change).

    First match, on the draws with reads:
    ``not_detected`` never detected; ``cleared`` detected before, not at the last draw, whose
    LoD95 is below the clone's last detected VAF (adequate depth); ``emerging`` not detected at
    the first draw although it was sensitive to today's level, detected at the last;
    ``expanding`` last VAF >= min_fold × the earlier nadir with a one-sided likelihood-ratio
    p < alpha; ``declining`` last VAF <= peak / min_fold with p < alpha; ``stable`` otherwise.
    Nadir and peak are chosen after looking, so those p-values are mildly optimistic.
    """
    seen = [(d, r) for d, r in zip(draws, reads, strict=True) if d.informative_reads > 0]
    detected = [d for d, _ in seen if d.detected]
    if not detected:
        return "not_detected", None, None
    last, last_reads = seen[-1]
    if not last.detected and last.lod95 < detected[-1].vaf:
        return "cleared", None, None
    first = seen[0][0]
    if last.detected and not first.detected and first.lod95 < last.vaf:
        return "emerging", None, None
    earlier = seen[:-1]
    if earlier:
        nadir, nadir_reads = min(earlier, key=lambda item: item[0].vaf)
        if last.vaf >= params.min_fold * nadir.vaf and last.detected:
            p_value = _two_draw_test([nadir_reads, last_reads], rho)
            if p_value < params.alpha:
                fold = last.vaf / nadir.vaf if nadir.vaf > 0 else math.inf
                return "expanding", p_value, fold
        peak, peak_reads = max(earlier, key=lambda item: item[0].vaf)
        if peak.detected and last.vaf * params.min_fold <= peak.vaf:
            p_value = _two_draw_test([peak_reads, last_reads], rho)
            if p_value < params.alpha:
                return "declining", p_value, last.vaf / peak.vaf
    return "stable", None, None


# --------------------------------------------------------------------------- the fit


def _clone_draws(
    members: Sequence[int],
    alt: FloatArray,
    depth: FloatArray,
    bg: FloatArray,
    draws: Sequence[Draw],
    tf_by_sample: Mapping[str, tuple[float, bool]],
    rho: float,
    params: CloneParams,
) -> tuple[list[CloneDraw], list[tuple[list[int], list[int], list[float]]]]:
    result: list[CloneDraw] = []
    reads: list[tuple[list[int], list[int], list[float]]] = []
    for t, draw in enumerate(draws):
        rows = [j for j in members if depth[j, t] > 0]
        m = [int(alt[j, t]) for j in rows]
        r = [int(depth[j, t]) for j in rows]
        e = [float(bg[j, t]) for j in rows]
        reads.append((m, r, e))
        pooled: PooledCall = pooled_call(m, r, e, params.alpha, params.min_alt_reads)
        if rows:
            fit = fit_fraction(m, r, e, scale=1.0, overdispersion=rho, level=params.ci_level)
            vaf, lower, upper = fit.estimate, fit.lower, fit.upper
        else:
            vaf, lower, upper = 0.0, 0.0, 1.0
        tf, tf_detected = tf_by_sample.get(draw.sample_id, (0.0, False))
        scale = 2.0 / tf if tf_detected and tf > 0 and rows else None
        result.append(
            CloneDraw(
                sample_id=draw.sample_id,
                collection_date=draw.collection_date,
                vaf=vaf,
                vaf_lower=lower,
                vaf_upper=upper,
                ccf=vaf * scale if scale is not None else None,
                ccf_lower=lower * scale if scale is not None else None,
                ccf_upper=upper * scale if scale is not None else None,
                detected=pooled.detected,
                p_value=pooled.p_value,
                lod95=pooled.lod95,
                mutant_reads=pooled.mutant_reads,
                informative_reads=pooled.informative_reads,
            )
        )
    return result, reads


def fit_clones(
    series: Sequence[LocusSeries],
    params: CloneParams,
    rng: np.random.Generator,
    *,
    longitudinal_params: LongitudinalParams | None = None,
) -> CloneFit:
    """Cluster the variants of one patient into clones by trajectory (module docstring).

    The tumour fraction used for CCF comes from the truncal loci (longitudinal.py, with
    ``longitudinal_params`` or its defaults). Fewer than ``min_variants`` variants or
    ``min_draws`` draws: one clone per variant, labelled the same way, with rho fixed to
    ``params.overdispersion`` (0 when it is to be estimated: one variant cannot tell
    overdispersion from signal).
    """
    tf_params = longitudinal_params or LongitudinalParams()
    draws = draws_of(series)
    keys = [locus.key for locus in series]
    col = {draw.sample_id: t for t, draw in enumerate(draws)}
    shape = (len(series), len(draws))
    alt, depth = np.zeros(shape), np.zeros(shape)
    bg = np.full(shape, params.min_background_error)
    for j, locus in enumerate(series):
        for obs in locus.observations:
            t = col[obs.sample_id]
            alt[j, t], depth[j, t] = obs.alt_reads, obs.depth
            bg[j, t] = max(obs.background_error, params.min_background_error)
    tf_by_sample = {
        tf.sample_id: (tf.estimate, tf.detected) for tf in tumour_fractions(series, tf_params)
    }

    if len(series) < params.min_variants or len(draws) < params.min_draws:
        rho = params.overdispersion or 0.0
        groups = [[j] for j in range(len(series))]
        resp = np.eye(len(series))
        bic: tuple[tuple[int, float], ...] = ()
        with np.errstate(invalid="ignore", divide="ignore"):
            saturated = np.where(depth > 0, alt / depth, 0.0)
        loglik = float(np.trace(_component_loglik(alt, depth, bg, saturated, rho)))
        loglik += _constant(alt, depth)
        method = "one clone per variant (too few variants or draws to cluster)"
    else:
        n_obs = int((depth > 0).sum())
        draws_with_data = int((depth > 0).any(axis=0).sum())
        fits: dict[int, _Mixture] = {}
        scores: list[tuple[int, float]] = []
        for k in range(1, min(len(series), params.max_clusters) + 1):
            fit = _fit_k(alt, depth, bg, k, rng, params, fits.get(k - 1))
            n_params = k * draws_with_data + (k - 1) + (params.overdispersion is None)
            fits[k] = fit
            scores.append((k, -2.0 * fit.loglik + n_params * math.log(n_obs)))
        chosen = min(scores, key=lambda item: item[1])[0]
        best = fits[chosen]
        rho, loglik, bic = best.rho, best.loglik, tuple(scores)
        hard = best.resp.argmax(axis=1)
        used = [c for c in range(chosen) if np.any(hard == c)]
        groups = [[j for j in range(len(series)) if hard[j] == c] for c in used]
        resp = best.resp[:, used]
        resp = resp / resp.sum(axis=1, keepdims=True)
        method = "beta-binomial trajectory mixture, EM with seeded restarts, K by BIC"

    built = []
    for g, members in enumerate(groups):
        clone_draws, reads = _clone_draws(members, alt, depth, bg, draws, tf_by_sample, rho, params)
        built.append((g, members, clone_draws, reads))
    # Most abundant clone first: the truncal clone leads when there is one.
    built.sort(key=lambda item: -sum(d.vaf for d in item[2]) / max(len(item[2]), 1))
    clones: list[Clone] = []
    for clone_id, (_, members, clone_draws, reads) in enumerate(built, start=1):
        label, p_value, fold = label_trajectory(clone_draws, reads, rho, params)
        clones.append(
            Clone(
                clone_id=clone_id,
                member_keys=tuple(keys[j] for j in members),
                draws=tuple(clone_draws),
                label=label,
                label_p_value=p_value,
                label_fold_change=fold,
            )
        )
    order = [g for g, *_ in built]
    probabilities = resp[:, order]
    assignments = tuple(
        VariantAssignment(
            key=keys[j],
            clone_id=int(np.argmax(probabilities[j])) + 1,
            probabilities=tuple(float(p) for p in probabilities[j]),
        )
        for j in range(len(series))
    )
    return CloneFit(
        params=params,
        method=method,
        n_clones=len(clones),
        clones=tuple(clones),
        assignments=assignments,
        bic=bic,
        overdispersion=rho,
        log_likelihood=loglik,
    )


def clones_per_sample(fit: CloneFit) -> tuple[SampleClones, ...]:
    """Number of clones present in each draw of a fit, in draw order (0 when no clone's reads
    stand out from background in that draw)."""
    by_sample: dict[str, tuple[dt.date, list[int]]] = {}
    for clone in fit.clones:
        for draw in clone.draws:
            entry = by_sample.setdefault(draw.sample_id, (draw.collection_date, []))
            if draw.detected:
                entry[1].append(clone.clone_id)
    ordered = sorted(by_sample.items(), key=lambda item: (item[1][0], item[0]))
    return tuple(
        SampleClones(sample_id, date, len(ids), tuple(sorted(ids)))
        for sample_id, (date, ids) in ordered
    )


def sample_heterogeneity(
    scores: Sequence[MathScore], fit: CloneFit
) -> tuple[SampleHeterogeneity, ...]:
    """MATH (``longitudinal.math_scores``) and clone count (``clones_per_sample``) side by
    side, per draw in date order; a draw missing from one side has MATH None / 0 clones."""
    by_sample = {s.sample_id: s for s in clones_per_sample(fit)}
    math_by_sample = {m.sample_id: m for m in scores}
    dates = {s.sample_id: s.collection_date for s in by_sample.values()}
    dates.update({m.sample_id: m.collection_date for m in scores})
    result = []
    for sample_id, date in sorted(dates.items(), key=lambda item: (item[1], item[0])):
        score = math_by_sample.get(sample_id)
        clones = by_sample.get(sample_id)
        result.append(
            SampleHeterogeneity(
                sample_id=sample_id,
                collection_date=date,
                math=score.math if score else None,
                n_detected_variants=score.n_detected if score else 0,
                n_clones=clones.n_clones if clones else 0,
                clone_ids=clones.clone_ids if clones else (),
            )
        )
    return tuple(result)
