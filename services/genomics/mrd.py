"""Tumour-informed MRD call for one plasma sample: INVAR likelihood ratio, calibrated null.

Method (Wan et al., Sci Transl Med 2020, INVAR2 ``R/shared/detectionFunctions.R``): per
tracked locus i, mutant molecules M_i out of R_i, tissue allele fraction AF_i, background
error rate e_i:

    g_i    = AF_i (1 - e_i) + (1 - AF_i) e_i     P(mutant read | tumour-derived molecule)
    q_i(p) = p g_i + (1 - p) e_i                 P(mutant read) at ctDNA fraction p
    LL(p)  = sum_i M_i log q_i + (R_i - M_i) log(1 - q_i)
    score  = LL(p_hat) - LL(0)                   generalised likelihood ratio (log scale)

p_hat is the maximum-likelihood estimate, the fixed point of INVAR2's EM (``estimate_p_EM``,
start 0.01, 200 iterations). LL is concave in p, so we check the boundary first (LL'(0) <= 0
means p_hat = 0) and reach the same fixed point by a bracketed Newton iteration, ~4 steps per
row where EM needs up to 200 at low fractions (see ``_fit_fraction``; a test compares the two).
One round of outlier suppression follows: loci with P(X >= M_i | R_i, q_i(p_hat)) <
outlier_alpha / N are dropped and p is refitted (protects against one artefactual locus).

e_i is the posterior mean of the locus' beta-binomial background
(``services.genomics.background``). The threshold (99.5 % specificity, so that the
validated per-sample specificity is >= 99 %: see ``MrdParams``) is calibrated on the
posterior predictive null *of this sample*: null replicates at the sample's own depths R_i,
each locus drawing e_i ~ Beta(alpha_i, beta_i) and M_i ~ Binomial(R_i, e_i), scored by exactly
the same procedure (same e_i posterior mean in the likelihood, same outlier suppression). So
the uncertainty of e_i widens the null instead of being ignored; a plug-in rate from a matched
normal of similar depth, whose own uncertainty is ignored, gives several times the intended
false-positive rate (see tests/genomics/test_mrd.py). The threshold is the conformal
(1 - s) upper quantile of the n null scores, s = ``threshold_specificity``: positive iff
(1 + #{null >= score}) / (1 + n) <= 1 - s, which is exactly the reported p-value; when the
observed sample is exchangeable with the null replicates this holds the false-positive rate
at or below 1 - s for any n (ties count against the sample). Null
replicates are drawn exactly, locus by locus, by inverting each beta-binomial CDF; they are
mostly sparse and repeat, so identical replicates are scored once, and the replicates of many
samples are scored together in a few large arrays (``call_samples``).

Call (domain-anchors §6): POSITIVE iff score >= threshold and >= ``min_loci_with_reads``
distinct retained loci carry mutant reads; INDETERMINATE when informative reads
(sum R_i over retained loci) < ``min_informative_reads``, when fewer loci have reads than a
positive needs, or when a non-positive draw is < ``min_days_post_surgery`` after surgery;
NEGATIVE otherwise. Every call carries p_hat with a 95 % profile-likelihood interval
{p : 2 [LL(p_hat) - LL(p)] <= 3.84} (for a non-positive call ci_low is 0 and ci_high the
upper bound) and the sample's own LoD95, see ``_lod95``.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from services.errors import InvalidInput
from services.genomics.background import (
    BackgroundCounts,
    BackgroundParams,
    LocusBackground,
    lognormal_factors,
    null_pmf,
    update_with_negative_draws,
)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class MrdStatus(StrEnum):
    POSITIVE = "POSITIVE"
    NEGATIVE = "NEGATIVE"
    INDETERMINATE = "INDETERMINATE"


@dataclass(frozen=True, slots=True)
class LocusEvidence:
    """One tracked locus in one plasma sample: counts, tissue AF and background posterior."""

    key: str
    alt_reads: int
    depth: int
    tumor_af: float
    background: LocusBackground

    def __post_init__(self) -> None:
        if self.depth < 0 or self.alt_reads < 0 or self.alt_reads > self.depth:
            raise InvalidInput(
                f"{self.key}: need 0 <= alt_reads <= depth, got {self.alt_reads}/{self.depth}"
            )
        if not 0.0 < self.tumor_af <= 1.0:
            raise InvalidInput(f"{self.key}: tumour AF must be in (0, 1], got {self.tumor_af}")


@dataclass(frozen=True, slots=True)
class MrdParams:
    """Parameters of the MRD call; ``version`` is stored with every MrdCall.

    ``specificity`` is the per-sample specificity the call is validated to (reported with every
    patient's calls, checked on simulated cohorts by ``benchmarks.mrd``);
    ``threshold_specificity`` is the level each sample's threshold is calibrated at. A conformal
    threshold holds the false-positive rate at its level *in expectation*, so one calibrated at
    exactly 99 % gives a validation cohort's specificity that lands either side of 99 %;
    calibrating a little above it keeps a cohort at >= 99 % at the cost of a slightly higher
    LoD (the LoD95 reported is the one of the threshold actually used).
    ``confirmation_specificity``: a POSITIVE past this stricter threshold confirms a molecular
    relapse on its own (domain-anchors §6.7); otherwise two consecutive POSITIVE draws do.

    ``n_null_simulations`` posterior-predictive null replicates per sample; it must be at least
    1 / (1 - confirmation_specificity) - 1 for the conformal thresholds to exist.
    ``em_iterations`` / ``em_tolerance`` cap and stop the p_hat solver (the name keeps INVAR2's
    200 EM iterations as the cap). ``lod_power`` is the detection probability that defines the
    reported limit of detection, ``ci_level`` the profile-likelihood interval's coverage.
    ``clonal_g``: P(mutant read | tumour molecule) of a tracked locus with no tissue allele
    fraction (clonal, heterozygous, copy-neutral: 1/2); ``purity_bounds`` clamp a tumour purity
    estimated from the tissue (2 x the median tissue VAF of the tracked loci).
    """

    version: str = "mrd-3"
    specificity: float = 0.99
    threshold_specificity: float = 0.995
    confirmation_specificity: float = 0.999
    min_informative_reads: int = 20_000
    min_days_post_surgery: int = 14
    min_loci_with_reads: int = 2
    outlier_alpha: float = 0.05
    em_iterations: int = 200
    em_tolerance: float = 1e-10
    n_null_simulations: int = 3000
    ci_level: float = 0.95
    lod_power: float = 0.95
    clonal_g: float = 0.5
    purity_bounds: tuple[float, float] = (0.05, 1.0)
    own_negative_lag_days: int = 0

    def __post_init__(self) -> None:
        if not 0.5 < self.specificity <= self.threshold_specificity < 1.0:
            raise InvalidInput(
                "need 0.5 < specificity <= threshold_specificity < 1, got "
                f"{self.specificity} and {self.threshold_specificity}"
            )
        if not self.threshold_specificity <= self.confirmation_specificity < 1.0:
            raise InvalidInput("need threshold_specificity <= confirmation_specificity < 1")
        if math.floor((1.0 - self.confirmation_specificity) * (self.n_null_simulations + 1)) < 1:
            raise InvalidInput(
                f"{self.n_null_simulations} null simulations cannot calibrate "
                f"specificity {self.confirmation_specificity}"
            )
        if self.em_iterations < 1 or not 0.0 < self.em_tolerance < 1e-3:
            raise InvalidInput("the p_hat solver needs >= 1 iteration and a tolerance in (0, 1e-3)")
        if not 0.0 < self.ci_level < 1.0 or not 0.0 < self.lod_power < 1.0:
            raise InvalidInput("ci_level and lod_power must be in (0, 1)")
        if self.min_loci_with_reads < 1:
            raise InvalidInput("min_loci_with_reads must be >= 1")
        if not 0.0 < self.clonal_g <= 1.0:
            raise InvalidInput("clonal_g must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class MrdCall:
    """The MRD call of one sample, with everything needed to explain it.

    ``tumor_fraction`` is p_hat, the ctDNA fraction of the cfDNA (the loci's g are the
    tissue allele fractions corrected by the tumour purity, see ``allele_weights``).
    ``loci_detected`` counts retained loci with >= 1 mutant read; ``dropped_loci`` are
    outlier-suppressed, ``excluded_loci`` blacklisted by the background model.
    ``threshold``/``p_value``/``lod95`` are None only when no locus could be scored.
    ``confirmed``: the score also passes the stricter confirmation threshold. ``flags`` qualify
    a call that stands despite a gate (a POSITIVE below the informative-reads gate or early
    after surgery).
    """

    call: MrdStatus
    reason: str
    score: float
    threshold: float | None
    confirmation_threshold: float | None
    p_value: float | None
    tumor_fraction: float
    ci_low: float
    ci_high: float
    lod95: float | None
    loci_detected: int
    loci_tracked: int
    loci_used: int
    informative_reads: int
    mutant_reads: int
    background_reads: float
    dropped_loci: tuple[str, ...]
    excluded_loci: tuple[str, ...]
    days_since_surgery: int | None
    n_null_simulations: int
    params_version: str
    confirmed: bool = False
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Fit:
    """Scores of a batch of rows (replicates x loci) after outlier suppression."""

    score: FloatArray
    p_hat: FloatArray
    dropped: BoolArray


def _log_likelihood_ratio(
    p: FloatArray, alt: FloatArray, depth: FloatArray, e: FloatArray, t: FloatArray
) -> FloatArray:
    """LL(p) - LL(0) per row, as sum M log(q / e) + (R - M) log((1 - q) / (1 - e)), q = e + p t:
    two logarithms per locus instead of four, and no cancellation of two large LLs."""
    pc = p[:, None]
    llr: FloatArray = (
        alt * np.log1p(pc * t / e) + (depth - alt) * np.log1p(-pc * t / (1.0 - e))
    ).sum(axis=1)
    return llr


def _fit_fraction(
    alt: FloatArray, depth: FloatArray, e: FloatArray, g: FloatArray, params: MrdParams
) -> FloatArray:
    """MLE of p for each row (rows x loci arrays; masked or padding loci have depth 0).

    LL is concave on [0, 1]: p_hat = 0 when LL'(0) <= 0 and 1 when LL'(1) >= 0. Otherwise
    LL'(p) = A(p) - B(p) with A = sum t M / q (mutant reads) and B = sum t (R - M) / (1 - q)
    (wild-type reads), t = g - e, and we solve 1/A(p) = 1/B(p) by Newton's method from p = 0,
    inside a bisection bracket. 1/A is exactly linear in p for one locus and nearly so for
    several, so this takes ~4 iterations per row and no logarithms; INVAR2's EM
    (``estimate_p_EM``: start 0.01, 200 iterations) converges to the same fixed point, slowly
    at low fractions (tests compare the two). ``em_iterations`` caps the iterations.
    """
    t = g - e
    ref = depth - alt
    total = depth.sum(axis=1)
    slope0 = (t * (alt / e - ref / (1.0 - e))).sum(axis=1)
    slope1 = (t * (alt / g - ref / (1.0 - g))).sum(axis=1)
    p = np.zeros(alt.shape[0])
    p[(slope1 >= 0.0) & (total > 0)] = 1.0
    rows = np.flatnonzero((slope0 > 0.0) & (slope1 < 0.0) & (total > 0))
    # Work on a compacted copy of the active rows, re-compacted when half of them converged.
    a, r, ee, tt = alt[rows], ref[rows], e[rows], t[rows]
    tt2 = tt * tt
    low = np.zeros(rows.size)
    high = np.ones(rows.size)
    current = np.zeros(rows.size)
    live = np.ones(rows.size, dtype=np.bool_)
    for _ in range(params.em_iterations):
        q = ee + current[:, None] * tt
        mutant_term = a / q
        complement = 1.0 - q
        wild_term = r / complement
        mutant = (tt * mutant_term).sum(axis=1)
        wild = (tt * wild_term).sum(axis=1)
        mutant_slope = (tt2 * (mutant_term / q)).sum(axis=1)
        wild_slope = (tt2 * (wild_term / complement)).sum(axis=1)
        gap = 1.0 / mutant - 1.0 / wild
        gap_slope = mutant_slope / mutant**2 + wild_slope / wild**2
        rising = mutant > wild
        low = np.where(rising, current, low)
        high = np.where(rising, high, current)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = current - gap / gap_slope
        # Inclusive bracket: at convergence the Newton step lands on the bracket end it
        # just set, and must not be mistaken for a failed step (a bisection jump away).
        new = np.where((step >= low) & (step <= high), step, 0.5 * (low + high))
        # Converged rows stay where they converged until they are compacted away.
        new = np.where(live, new, current)
        live &= np.abs(new - current) > params.em_tolerance * new
        current = new
        if not live.any():
            break
        if live.sum() * 2 < live.size:
            p[rows[~live]] = current[~live]
            rows, low, high, current = rows[live], low[live], high[live], current[live]
            a, r, ee, tt, tt2 = a[live], r[live], ee[live], tt[live], tt2[live]
            live = np.ones(rows.size, dtype=np.bool_)
    p[rows] = current
    return p


def _score_rows(
    alt: FloatArray,
    depth: FloatArray,
    e: FloatArray,
    g: FloatArray,
    params: MrdParams,
    *,
    suppress_outliers: bool = True,
) -> _Fit:
    """Score, p_hat and outlier-dropped loci for each row: fit, suppress outliers once, refit."""
    t = g - e
    p = _fit_fraction(alt, depth, e, g, params)
    dropped = np.zeros(alt.shape, dtype=np.bool_)
    if suppress_outliers:
        q = e + p[:, None] * t
        n_loci = np.maximum((depth > 0).sum(axis=1), 1)
        hit = np.nonzero(alt > 0)
        # P(X >= M) for X ~ Binomial(R, q) is the regularised incomplete beta I_q(M, R - M + 1).
        tail = special.betainc(alt[hit], depth[hit] - alt[hit] + 1.0, q[hit])
        dropped[hit] = tail < params.outlier_alpha / n_loci[hit[0]]
        refit = np.flatnonzero(dropped.any(axis=1))
        if refit.size:
            alt = np.where(dropped, 0.0, alt)
            depth = np.where(dropped, 0.0, depth)
            p[refit] = _fit_fraction(alt[refit], depth[refit], e[refit], g[refit], params)
    score = np.zeros_like(p)
    fitted = np.flatnonzero(p > 0.0)
    if fitted.size:
        a, d, ee, tt = alt[fitted], depth[fitted], e[fitted], t[fitted]
        score[fitted] = np.maximum(_log_likelihood_ratio(p[fitted], a, d, ee, tt), 0.0)
    return _Fit(score=score, p_hat=p, dropped=dropped)


@dataclass(frozen=True, slots=True)
class _Block:
    """Count rows (k x L) of one sample, sharing its depths, error means and g (each L)."""

    alt: FloatArray
    depth: FloatArray
    e: FloatArray
    g: FloatArray


_CHUNK_ROWS = 32_768


def _score_group(
    blocks: Sequence[_Block], params: MrdParams, suppress_outliers: bool
) -> list[_Fit]:
    width = max(block.depth.size for block in blocks)
    sizes = [block.alt.shape[0] for block in blocks]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    alt = np.zeros((offsets[-1], width))
    depth = np.zeros_like(alt)
    e = np.full_like(alt, 0.5)
    g = np.full_like(alt, 0.5)
    for block, start, stop in zip(blocks, offsets[:-1], offsets[1:], strict=True):
        n_loci = block.depth.size
        alt[start:stop, :n_loci] = block.alt
        depth[start:stop, :n_loci] = block.depth
        e[start:stop, :n_loci] = block.e
        g[start:stop, :n_loci] = block.g
    fit = _score_rows(alt, depth, e, g, params, suppress_outliers=suppress_outliers)
    return [
        _Fit(
            score=fit.score[start:stop],
            p_hat=fit.p_hat[start:stop],
            dropped=fit.dropped[start:stop, : block.depth.size],
        )
        for block, start, stop in zip(blocks, offsets[:-1], offsets[1:], strict=True)
    ]


def _score_blocks(
    blocks: Sequence[_Block], params: MrdParams, *, suppress_outliers: bool = True
) -> list[_Fit]:
    """Score the rows of many samples in groups of ~32k rows: numpy's per-call overhead is paid
    once per group, not per sample, and the arrays stay cache-sized. Padding loci have depth 0
    and t = 0, so they add nothing to any likelihood, Newton step or outlier count."""
    fits: list[_Fit] = []
    group: list[_Block] = []
    rows = 0
    for block in blocks:
        if group and rows + block.alt.shape[0] > _CHUNK_ROWS:
            fits.extend(_score_group(group, params, suppress_outliers))
            group, rows = [], 0
        group.append(block)
        rows += block.alt.shape[0]
    if group:
        fits.extend(_score_group(group, params, suppress_outliers))
    return fits


IntArray = npt.NDArray[np.int64]


def _pmf_table(
    log_pmf: Callable[[FloatArray, FloatArray], FloatArray], depth: IntArray
) -> FloatArray:
    """P(M_i = k) on a (k x loci) grid, k = 0..top; ``log_pmf(k, depth)`` is evaluated for
    k <= depth. The grid grows until every locus has < 1e-10 of its mass beyond it (or its pmf
    has died out)."""
    top = 32
    while True:
        k = np.minimum(np.arange(top + 1, dtype=np.float64)[:, None], depth[None, :])
        pmf = np.exp(log_pmf(k, depth.astype(np.float64)[None, :]))
        pmf[np.arange(top + 1)[:, None] > depth[None, :]] = 0.0
        settled = (pmf.sum(axis=0) > 1.0 - 1e-10) | (pmf[-1] < 1e-18) | (top >= depth)
        if np.all(settled):
            return pmf
        top *= 4


def _draw_counts(pmf: FloatArray, n: int, rng: np.random.Generator) -> IntArray:
    """n draws of each locus' count, exactly, by inverting its CDF (loci are independent):
    one uniform per draw instead of a Beta and a Binomial variate, which otherwise dominate
    the cost of the null simulation."""
    cdf = np.cumsum(pmf, axis=0)
    uniforms = rng.random((n, pmf.shape[1]))
    draws = np.empty((n, pmf.shape[1]), dtype=np.int64)
    for locus in range(pmf.shape[1]):
        draws[:, locus] = np.searchsorted(cdf[:, locus], uniforms[:, locus], side="right")
    clipped: IntArray = np.minimum(draws, pmf.shape[0] - 1)
    return clipped


def _log_choose(depth: FloatArray, k: FloatArray) -> FloatArray:
    result: FloatArray = (
        special.gammaln(depth + 1) - special.gammaln(k + 1) - special.gammaln(depth - k + 1)
    )
    return result


def binomial_pmf(depth: IntArray, rate: FloatArray, sigma: float = 0.0) -> FloatArray:
    """(k x loci) pmf of M ~ Binomial(R, rate x F), F the lognormal draw-to-draw factor of
    spread ``sigma`` (mean 1; none when 0): the null when the error rates are known."""
    factors, weights = lognormal_factors(sigma, 16)
    rates = np.clip(np.asarray(rate)[None, :] * factors[:, None], 1e-300, 0.5)

    def log_pmf(k: FloatArray, r: FloatArray) -> FloatArray:
        terms = (
            _log_choose(r, k)[None, :, :]
            + k[None, :, :] * np.log(rates)[:, None, :]
            + (r - k)[None, :, :] * np.log1p(-rates)[:, None, :]
        )
        result: FloatArray = special.logsumexp(terms, axis=0, b=weights[:, None, None])
        return result

    return _pmf_table(log_pmf, depth)


def _distinct_rows(
    alt: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.intp]]:
    """Distinct count vectors and the index of each row's vector among them.

    Null replicates are sparse small counts, so a mixed-radix code of each row fits an int64 and
    a 1-D unique is exact and much faster than ``np.unique(axis=0)`` (kept as the fallback).
    """
    base = int(alt.max(initial=0)) + 1
    if alt.shape[1] * math.log2(base) < 62:
        codes = alt @ (base ** np.arange(alt.shape[1], dtype=np.int64))
        _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        return alt[first], inverse.reshape(-1)
    distinct, inverse = np.unique(alt, axis=0, return_inverse=True)
    return distinct, inverse.reshape(-1)


def _conformal_rank(n: int, specificity: float) -> int:
    """Index k (0-based, descending order) such that 'exceeds the k-th largest null' is a
    level (1 - specificity) test: k + 1 = floor((1 - specificity)(n + 1))."""
    return math.floor((1.0 - specificity) * (n + 1)) - 1


def _tie_tolerance(score: FloatArray | float) -> FloatArray | float:
    """Scores this close are the same count configuration scored along different code paths."""
    return 1e-9 * np.abs(score) + 1e-12


def calibrated_threshold(null_scores: FloatArray, specificity: float) -> float:
    """Smallest score whose conformal p-value (1 + #null >= s) / (1 + n) is <= 1 - specificity.

    Ties go against the sample: a score within rounding of a null score counts as equal.
    """
    ordered = np.sort(null_scores)[::-1]
    k = _conformal_rank(ordered.size, specificity)
    if k < 0:
        raise InvalidInput(f"{ordered.size} null scores cannot calibrate {specificity}")
    return float(ordered[k] + _tie_tolerance(float(ordered[k])) * 2.0)


def empirical_p_value(score: float, null_scores: FloatArray) -> float:
    """(1 + #{null >= score}) / (1 + n), ties (within rounding) counted against the sample."""
    tied_or_above = np.count_nonzero(null_scores >= score - _tie_tolerance(score))
    return (1.0 + float(tied_or_above)) / (null_scores.size + 1.0)


def _lod95(
    null_pmf: FloatArray, depth: FloatArray, e: FloatArray, g: FloatArray, params: MrdParams
) -> float:
    """Sample LoD95 by the Poisson approximation of domain-anchors §4.5, calibrated.

    k* = the smallest total mutant count with P(K >= k*) <= 1 - threshold_specificity under the
    posterior-predictive null, K = sum of the loci's beta-binomial counts (exact convolution
    of the same per-locus distributions the score threshold is simulated from, so background
    uncertainty is included), and at least ``min_loci_with_reads``. LoD95 = the ctDNA fraction
    f at which Poisson(sum_i R_i q_i(f)) >= k* with probability ``lod_power``. Deterministic
    and monotone in the depths: more molecules at the same background raise sum R_i q_i(f)
    faster than they raise k*. Thresholding the pooled count is slightly less efficient than
    the AF-weighted likelihood ratio, so it errs conservative (tests check the real call's
    detection rate at the reported LoD95).
    """
    total = np.array([1.0])
    for locus in range(null_pmf.shape[1]):
        total = np.convolve(total, null_pmf[:, locus])
    tail = total[::-1].cumsum()[::-1]
    allowed = np.flatnonzero(tail <= 1.0 - params.threshold_specificity)
    k_star = max(int(allowed[0]) if allowed.size else total.size, params.min_loci_with_reads)
    lam = float(special.gammaincinv(k_star, params.lod_power))
    background = float((depth * e).sum())
    signal = float((depth * (g - e)).sum())
    if signal <= 0.0:
        return 1.0
    return float(np.clip((lam - background) / signal, 1e-12, 1.0))


def _profile_interval(
    alt: FloatArray,
    depth: FloatArray,
    e: FloatArray,
    g: FloatArray,
    p_hat: float,
    level: float,
) -> tuple[float, float]:
    """{p : 2 [LL(p_hat) - LL(p)] <= chi2_1(level)} by Brent's method on each side."""
    t = g - e
    half = float(special.chdtri(1, 1.0 - level)) / 2.0

    def llr(p: float) -> float:
        return float(np.sum(alt * np.log1p(p * t / e) + (depth - alt) * np.log1p(-p * t / (1 - e))))

    top = llr(p_hat)

    def excess(p: float) -> float:
        return top - llr(p) - half

    def root(a: float, b: float) -> float:
        return float(optimize.brentq(excess, a, b, xtol=1e-15, rtol=1e-10))

    low = 0.0 if excess(0.0) <= 0.0 else root(0.0, p_hat)
    high_end = 1.0 - 1e-12
    high = 1.0 if excess(high_end) <= 0.0 else root(p_hat, high_end)
    return low, high


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One sample's retained loci as arrays, and its posterior-predictive null replicates."""

    used: tuple[LocusEvidence, ...]
    alt: FloatArray
    depth: FloatArray
    e: FloatArray
    g: FloatArray
    null_pmf: FloatArray
    null_distinct: npt.NDArray[np.int64]
    null_inverse: npt.NDArray[np.intp]


def _prepare(
    evidence: Sequence[LocusEvidence], params: MrdParams, rng: np.random.Generator
) -> _Prepared | None:
    keys = [ev.key for ev in evidence]
    if len(set(keys)) != len(keys):
        raise InvalidInput("duplicate locus keys in MRD evidence")
    if any(ev.depth > 0 and not ev.background.known for ev in evidence):
        return None  # the assay has too little background to call on: no call at all
    used = tuple(ev for ev in evidence if not ev.background.blacklisted and ev.depth > 0)
    if not used:
        return None
    depth = np.array([ev.depth for ev in used], dtype=np.int64)
    af = np.array([ev.tumor_af for ev in used])
    e = np.array([ev.background.mean for ev in used])
    pmf = null_pmf([ev.background for ev in used], depth)
    null_alt = _draw_counts(pmf, params.n_null_simulations, rng)
    distinct, inverse = _distinct_rows(null_alt)
    return _Prepared(
        used=used,
        alt=np.array([ev.alt_reads for ev in used], dtype=np.float64),
        depth=depth.astype(np.float64),
        e=e,
        g=af * (1.0 - e) + (1.0 - af) * e,
        null_pmf=pmf,
        null_distinct=distinct,
        null_inverse=inverse,
    )


def _status(
    *,
    background_known: bool,
    informative: int,
    n_kept: int,
    passes: bool,
    detected: int,
    days_since_surgery: int | None,
    params: MrdParams,
) -> tuple[MrdStatus, str, tuple[str, ...]]:
    """The call rule of domain-anchors §6: a POSITIVE needs a known background, the calibrated
    score and mutant reads at >= ``min_loci_with_reads`` loci, and then stands (flagged) even
    below the informative-reads gate or early after surgery; those gates guard the draws that
    would otherwise be NEGATIVE."""
    if not background_known:
        return MrdStatus.INDETERMINATE, "background_unknown", ()
    if n_kept < params.min_loci_with_reads:
        return MrdStatus.INDETERMINATE, "too_few_loci", ()
    early = days_since_surgery is not None and days_since_surgery < params.min_days_post_surgery
    thin = informative < params.min_informative_reads
    if passes and detected >= params.min_loci_with_reads:
        flags = (("low_informative_reads",) if thin else ()) + (("early_postop",) if early else ())
        return MrdStatus.POSITIVE, "score_above_threshold", flags
    if days_since_surgery is not None and days_since_surgery < 0:
        return MrdStatus.INDETERMINATE, "pre_surgery", ()
    if early:
        return MrdStatus.INDETERMINATE, "early_postop", ()
    if thin:
        return MrdStatus.INDETERMINATE, "low_informative_reads", ()
    if passes:
        return MrdStatus.NEGATIVE, "signal_at_too_few_loci", ()
    return MrdStatus.NEGATIVE, "score_below_threshold", ()


def _finish(
    evidence: Sequence[LocusEvidence],
    days_since_surgery: int | None,
    prepared: _Prepared | None,
    observed: _Fit | None,
    null_scores: FloatArray | None,
    params: MrdParams,
) -> MrdCall:
    score = p_hat = low = background = 0.0
    high = 1.0
    threshold = confirmation = p_value = lod = None
    detected = informative = mutant = n_kept = 0
    dropped: tuple[str, ...] = ()
    passes = confirmed = False
    if prepared is not None and observed is not None and null_scores is not None:
        score, p_hat = float(observed.score[0]), float(observed.p_hat[0])
        kept = ~observed.dropped[0]
        threshold = calibrated_threshold(null_scores, params.threshold_specificity)
        confirmation = calibrated_threshold(null_scores, params.confirmation_specificity)
        passes = score >= threshold
        confirmed = score >= confirmation
        p_value = empirical_p_value(score, null_scores)
        alt, depth = prepared.alt[kept], prepared.depth[kept]
        e, g = prepared.e[kept], prepared.g[kept]
        n_kept = int(kept.sum())
        informative, mutant = int(depth.sum()), int(alt.sum())
        background = float((depth * e).sum())
        detected = int(np.count_nonzero(alt > 0))
        dropped = tuple(
            ev.key for ev, d in zip(prepared.used, observed.dropped[0], strict=True) if d
        )
        lod = _lod95(prepared.null_pmf[:, kept], depth, e, g, params)
        low, high = _profile_interval(alt, depth, e, g, p_hat, params.ci_level)
    known = not any(ev.depth > 0 and not ev.background.known for ev in evidence)
    if prepared is None:
        # No score, but the reads are what they are: reported as informative and mutant.
        usable = [ev for ev in evidence if ev.depth > 0 and not ev.background.blacklisted]
        n_kept = len(usable)
        informative = sum(ev.depth for ev in usable)
        mutant = sum(ev.alt_reads for ev in usable)
        detected = sum(1 for ev in usable if ev.alt_reads > 0)
    status, reason, flags = _status(
        background_known=known,
        informative=informative,
        n_kept=n_kept,
        passes=passes,
        detected=detected,
        days_since_surgery=days_since_surgery,
        params=params,
    )
    return MrdCall(
        call=status,
        reason=reason,
        score=score,
        threshold=threshold,
        confirmation_threshold=confirmation,
        p_value=p_value,
        tumor_fraction=p_hat,
        ci_low=low if status is MrdStatus.POSITIVE else 0.0,
        ci_high=high,
        lod95=lod,
        loci_detected=detected,
        loci_tracked=len(evidence),
        loci_used=n_kept,
        informative_reads=informative,
        mutant_reads=mutant,
        background_reads=background,
        dropped_loci=dropped,
        excluded_loci=tuple(ev.key for ev in evidence if ev.background.blacklisted),
        days_since_surgery=days_since_surgery,
        n_null_simulations=params.n_null_simulations,
        params_version=params.version,
        confirmed=status is MrdStatus.POSITIVE and confirmed,
        flags=flags,
    )


def call_samples(
    samples: Sequence[tuple[Sequence[LocusEvidence], int | None]],
    *,
    params: MrdParams,
    rng: np.random.Generator,
) -> list[MrdCall]:
    """MRD calls of many plasma samples, each (evidence, days_since_surgery).

    Each sample gets its own child generator (``rng.spawn``) for its null replicates, so the
    result of a sample does not depend on which other samples are called with it; the scoring
    of all samples' replicates is batched (a patient's series, a cohort, a benchmark).
    """
    children = rng.spawn(len(samples))
    prepared = [
        _prepare(evidence, params, child)
        for (evidence, _), child in zip(samples, children, strict=True)
    ]
    blocks: list[_Block] = []
    for prep in prepared:
        if prep is not None:
            blocks.append(_Block(prep.alt[None, :], prep.depth, prep.e, prep.g))
            blocks.append(_Block(prep.null_distinct.astype(np.float64), prep.depth, prep.e, prep.g))
    fits = iter(_score_blocks(blocks, params) if blocks else [])
    calls = []
    for (evidence, days), prep in zip(samples, prepared, strict=True):
        if prep is None:
            calls.append(_finish(evidence, days, None, None, None, params))
            continue
        observed, null = next(fits), next(fits)
        null_scores = null.score[prep.null_inverse]
        calls.append(_finish(evidence, days, prep, observed, null_scores, params))
    return calls


def call_sample(
    evidence: Sequence[LocusEvidence],
    *,
    days_since_surgery: int | None,
    params: MrdParams,
    rng: np.random.Generator,
) -> MrdCall:
    """MRD call of one plasma sample (INVAR GLRT, posterior-predictive calibrated threshold).

    Same as ``call_samples([(evidence, days_since_surgery)], ...)[0]``.
    """
    return call_samples([(evidence, days_since_surgery)], params=params, rng=rng)[0]


def oracle_lr(
    alt_reads: npt.ArrayLike,
    depths: npt.ArrayLike,
    tumor_afs: npt.ArrayLike,
    error_rates: npt.ArrayLike,
    *,
    params: MrdParams | None = None,
) -> FloatArray:
    """INVAR likelihood ratio with the TRUE per-locus error rates (a benchmark, not a caller).

    No background uncertainty, hence no outlier suppression: the best test the reads allow.
    Arrays broadcast as rows (replicates) x loci; returns one score per row.
    """
    alt = np.atleast_2d(np.asarray(alt_reads, dtype=np.float64))
    shape = alt.shape
    depth = np.broadcast_to(np.asarray(depths, dtype=np.float64), shape).copy()
    e = np.broadcast_to(np.asarray(error_rates, dtype=np.float64), shape).copy()
    af = np.broadcast_to(np.asarray(tumor_afs, dtype=np.float64), shape)
    g = af * (1.0 - e) + (1.0 - af) * e
    return _score_rows(alt, depth, e, g, params or MrdParams(), suppress_outliers=False).score


def oracle_threshold(
    depths: npt.ArrayLike,
    tumor_afs: npt.ArrayLike,
    error_rates: npt.ArrayLike,
    *,
    specificity: float,
    n_simulations: int,
    rng: np.random.Generator,
    sigma: float = 0.0,
) -> FloatArray:
    """Conformal thresholds of ``oracle_lr`` from null replicates drawn from the true model:
    Binomial(R_i, e_i x F), F the lognormal draw-to-draw factor of spread ``sigma``.

    Inputs are samples x loci (or one sample's loci); returns one threshold per sample.
    """
    depth = np.atleast_2d(np.asarray(depths, dtype=np.int64))
    rates = np.broadcast_to(np.asarray(error_rates, dtype=np.float64), depth.shape)
    af = np.broadcast_to(np.asarray(tumor_afs, dtype=np.float64), depth.shape)
    blocks: list[_Block] = []
    inverses = []
    for r, e, a in zip(depth, rates, af, strict=True):
        distinct, inverse = _distinct_rows(
            _draw_counts(binomial_pmf(r, e, sigma), n_simulations, rng)
        )
        blocks.append(
            _Block(distinct.astype(np.float64), r.astype(np.float64), e, a * (1 - e) + (1 - a) * e)
        )
        inverses.append(inverse)
    fits = _score_blocks(blocks, MrdParams(), suppress_outliers=False)
    return np.array(
        [
            calibrated_threshold(fit.score[inverse], specificity)
            for fit, inverse in zip(fits, inverses, strict=True)
        ]
    )


class PatientStatus(StrEnum):
    """A patient's ctDNA status after surgery (the brief's ``/mrd`` status values)."""

    POSITIVE = "positive"
    POSITIVE_UNCONFIRMED = "positive_unconfirmed"
    NEGATIVE = "negative"
    INDETERMINATE = "indeterminate"
    NOT_APPLICABLE = "not_applicable"


@dataclass(frozen=True, slots=True)
class PlasmaDraw:
    """One plasma draw of a patient: the counts (alt reads, depth) of the tracked loci its file
    reported (a locus a file did not report is missing evidence, not zero reads), and the
    assay it was run on (its background model)."""

    sample_id: str
    collection_date: date
    counts: Mapping[str, tuple[int, int]]
    assay: str = "default"


@dataclass(frozen=True, slots=True)
class DrawCall:
    """A draw of the series with its call and the patient status after it."""

    sample_id: str
    collection_date: date
    assay: str
    call: MrdCall
    status_after: PatientStatus
    loci_reported: int
    fingerprint: str


@dataclass(frozen=True, slots=True)
class MrdSeries:
    """A patient's post-surgery MRD story: every call, the status, the molecular relapse.

    ``molecular_relapse_date`` is the first POSITIVE draw of the first confirmed positive
    run (confirmed by the next informative draw being POSITIVE too, or by its own score past
    the confirmation threshold); ``relapse_confirmed_date`` the draw that confirmed it;
    ``lead_time_days`` runs from the molecular to the clinical relapse.
    """

    calls: tuple[DrawCall, ...]
    status: PatientStatus
    reason: str
    molecular_relapse_date: date | None
    relapse_confirmed_date: date | None
    lead_time_days: int | None


def patient_seed(site: str, patient_id: str) -> tuple[int, ...]:
    """The seed of a patient's null replicates: the same data give the same calls in any
    process, and no call depends on which other patients exist."""
    return (zlib.crc32(f"{site}/{patient_id}".encode()),)


def allele_weights(
    tissue_afs: Mapping[str, float | None],
    params: MrdParams,
    *,
    purity: float | None = None,
) -> dict[str, float]:
    """The allele fraction of each tracked variant in tumour DNA, which makes p_hat the ctDNA
    fraction of the cfDNA (INVAR's g with tissue AF divided by tumour purity; domain-anchors
    §4.6: a clonal heterozygous copy-neutral variant is at 1/2). The purity is the one given
    (a pathologist's estimate, ``tumor_purity``) or 2 x the median tissue VAF of the tracked
    loci, clamped to ``purity_bounds``; a locus without a tissue AF gets ``clonal_g``."""
    known = [af for af in tissue_afs.values() if af is not None and af > 0]
    low, high = params.purity_bounds
    if purity is None and known:
        purity = 2.0 * float(np.median(known))
    if purity is None:
        return {key: params.clonal_g for key in tissue_afs}
    purity = min(max(purity, low), high)
    return {
        key: params.clonal_g if af is None or af <= 0 else min(1.0, af / purity)
        for key, af in tissue_afs.items()
    }


def _draw_fingerprint(
    evidence: Sequence[LocusEvidence], days: int, params: MrdParams, seed: Sequence[int]
) -> str:
    """What a call depends on, exactly: its evidence, backgrounds, timing, rule and seed."""
    text = repr(
        (
            params,
            days,
            tuple(seed),
            [
                (e.key, e.alt_reads, e.depth, e.tumor_af, e.background.fingerprint())
                for e in evidence
            ],
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StatusWalk:
    """The patient status after each call of a series, and where it ends."""

    after: tuple[PatientStatus, ...]
    status: PatientStatus
    reason: str
    molecular_relapse_date: date | None
    relapse_confirmed_date: date | None


def patient_status(calls: Sequence[tuple[date, MrdCall]]) -> StatusWalk:
    """The patient status through a post-surgery series of calls, in date order
    (domain-anchors §6.7, §4.8):

    * a POSITIVE draw makes the patient ``positive_unconfirmed``; a second consecutive
      POSITIVE (INDETERMINATE draws in between neither break nor confirm), or one past the
      confirmation threshold, confirms the molecular relapse (``positive``), dated at the first
      POSITIVE of that run; a NEGATIVE before confirmation makes the patient ``negative``;
    * once ``positive`` the status is sticky: an INDETERMINATE draw, or a NEGATIVE whose LoD95
      is above the last positive tumour fraction (it could not have seen it), leaves it
      positive; only a NEGATIVE sensitive enough to have seen the last positive level clears it;
    * otherwise the status follows the latest draw (``indeterminate`` when it is).
    """
    state = PatientStatus.INDETERMINATE
    reason = "no informative draw yet"
    run_start: date | None = None
    relapse: date | None = None
    confirmed_on: date | None = None
    last_positive: float | None = None
    after: list[PatientStatus] = []
    for when, call in calls:
        if state is PatientStatus.POSITIVE:
            if call.call is MrdStatus.POSITIVE:
                last_positive = call.tumor_fraction
                reason = "molecular relapse confirmed; ctDNA still detected"
            elif (
                call.call is MrdStatus.NEGATIVE
                and call.lod95 is not None
                and last_positive is not None
                and call.lod95 <= last_positive
            ):
                state, run_start, last_positive = PatientStatus.NEGATIVE, None, None
                reason = "cleared: a negative draw sensitive enough to see the last positive level"
            elif call.call is MrdStatus.NEGATIVE:
                reason = (
                    "still positive: the latest negative draw's LoD95 is above the last "
                    "positive tumour fraction, so it cannot clear it"
                )
            else:
                reason = "still positive: the latest draw was indeterminate"
        elif call.call is MrdStatus.POSITIVE:
            if call.confirmed or run_start is not None:
                state = PatientStatus.POSITIVE
                relapse = relapse or run_start or when
                confirmed_on = confirmed_on or when
                reason = (
                    "molecular relapse: confirmed by a second consecutive positive draw"
                    if run_start is not None
                    else "molecular relapse: one draw past the confirmation threshold"
                )
            else:
                state, run_start = PatientStatus.POSITIVE_UNCONFIRMED, when
                reason = "one positive draw: a second consecutive positive draw confirms it"
            last_positive = call.tumor_fraction
        elif call.call is MrdStatus.NEGATIVE:
            state, run_start, last_positive = PatientStatus.NEGATIVE, None, None
            reason = call.reason
        elif state is PatientStatus.POSITIVE_UNCONFIRMED:
            reason = "one positive draw, the next indeterminate: awaiting confirmation"
        else:
            state, reason = PatientStatus.INDETERMINATE, call.reason
        after.append(state)
    return StatusWalk(
        after=tuple(after),
        status=state,
        reason=reason,
        molecular_relapse_date=relapse,
        relapse_confirmed_date=confirmed_on,
    )


def call_series(
    draws: Sequence[PlasmaDraw],
    tracked: Mapping[str, float],
    backgrounds: Mapping[str, Mapping[str, LocusBackground]],
    *,
    surgery_dates: Sequence[date],
    clinical_relapse_date: date | None,
    params: MrdParams,
    background_params: BackgroundParams,
    seed: Sequence[int],
    reuse: Mapping[str, tuple[str, MrdCall]] | None = None,
) -> MrdSeries:
    """The MRD series of one patient: every plasma draw on or after the first surgery, called
    in date order, and the patient status that follows (the one composition the service, the
    benchmark and the cohort tests run).

    ``tracked``: locus key -> allele fraction in tumour DNA (``allele_weights``).
    ``backgrounds``: per assay, the locus backgrounds of the tracked loci (the assay model and
    the loci's independent controls); each draw is called on its assay's, updated with the
    patient's own earlier NEGATIVE draws of that assay. ``seed``: the patient's seed; each
    draw's null replicates come from (seed, crc32(sample_id)), so a call depends on nothing but
    its inputs. ``reuse``: sample_id -> (fingerprint, call) computed before; a call whose
    fingerprint is unchanged is reused rather than recomputed.
    """
    if not surgery_dates:
        raise InvalidInput("an MRD series needs a surgery date")
    surgeries = sorted(surgery_dates)
    ordered = sorted(
        (d for d in draws if d.collection_date >= surgeries[0]),
        key=lambda d: (d.collection_date, d.sample_id),
    )
    # The patient's NEGATIVE draws, (date, assay, evidence), added as controls of later draws
    # at least ``own_negative_lag_days`` older than the draw being called.
    negatives: list[tuple[date, str, list[LocusEvidence]]] = []
    computed: list[tuple[PlasmaDraw, MrdCall, int, str]] = []
    for draw in ordered:
        latest = max(s for s in surgeries if s <= draw.collection_date)
        days = (draw.collection_date - latest).days
        base = backgrounds.get(draw.assay, {})
        own: dict[str, list[BackgroundCounts]] = {}
        for when, assay, items in negatives:
            lag = (draw.collection_date - when).days
            if assay == draw.assay and lag >= params.own_negative_lag_days:
                for item in items:
                    own.setdefault(item.key, []).append(
                        BackgroundCounts(item.alt_reads, item.depth)
                    )
        current = update_with_negative_draws(base, own, background_params) if own else base
        evidence = [
            LocusEvidence(
                key=key,
                alt_reads=min(alt, depth),
                depth=depth,
                tumor_af=tracked[key],
                background=current[key],
            )
            for key in sorted(tracked)
            if key in draw.counts and key in current
            for alt, depth in (draw.counts[key],)
            if depth > 0
        ]
        draw_seed = [*seed, zlib.crc32(draw.sample_id.encode())]
        fingerprint = _draw_fingerprint(evidence, days, params, draw_seed)
        hit = (reuse or {}).get(draw.sample_id)
        if hit is not None and hit[0] == fingerprint:
            call = hit[1]
        else:
            call = call_sample(
                evidence,
                days_since_surgery=days,
                params=params,
                rng=np.random.default_rng(draw_seed),
            )
        if call.call is MrdStatus.NEGATIVE:
            negatives.append((draw.collection_date, draw.assay, evidence))
        computed.append((draw, call, len(evidence), fingerprint))
    walk = patient_status([(draw.collection_date, call) for draw, call, _, _ in computed])
    calls = tuple(
        DrawCall(
            sample_id=draw.sample_id,
            collection_date=draw.collection_date,
            assay=draw.assay,
            call=call,
            status_after=status,
            loci_reported=reported,
            fingerprint=fingerprint,
        )
        for (draw, call, reported, fingerprint), status in zip(computed, walk.after, strict=True)
    )
    if not calls:
        return MrdSeries(
            calls=(),
            status=PatientStatus.NOT_APPLICABLE,
            reason="no plasma sample collected after surgery",
            molecular_relapse_date=None,
            relapse_confirmed_date=None,
            lead_time_days=None,
        )
    return MrdSeries(
        calls=calls,
        status=walk.status,
        reason=walk.reason,
        molecular_relapse_date=walk.molecular_relapse_date,
        relapse_confirmed_date=walk.relapse_confirmed_date,
        lead_time_days=lead_time_days(walk.molecular_relapse_date, clinical_relapse_date),
    )


def lead_time_days(
    molecular_relapse_date: date | None, clinical_relapse_date: date | None
) -> int | None:
    """Days from molecular to clinical relapse (positive = ctDNA first), None if either unknown."""
    if molecular_relapse_date is None or clinical_relapse_date is None:
        return None
    return (clinical_relapse_date - molecular_relapse_date).days
