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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from services.errors import InvalidInput
from services.genomics.background import LocusBackground

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
    exactly 99 % gives a validation cohort's specificity that lands either side of 99 % (about
    half the time below). Calibrating at 99.5 % (half the false-positive budget) keeps a cohort
    of ~1,000 null draws at >= 99 % with ~99 % probability (binomial), at the cost of a slightly
    higher LoD; the LoD95 reported is the one of the threshold actually used.

    ``n_null_simulations`` posterior-predictive null replicates per sample; it must be at least
    1 / (1 - threshold_specificity) - 1 for the conformal threshold to exist (any such n is
    valid; more replicates give a threshold closer to the exact quantile, i.e. a little more
    power).
    ``em_iterations`` / ``em_tolerance`` cap and stop the p_hat solver (the name keeps INVAR2's
    200 EM iterations as the cap). ``lod_power`` is the detection probability that defines the
    reported limit of detection, ``ci_level`` the profile-likelihood interval's coverage.
    """

    version: str = "mrd-2"
    specificity: float = 0.99
    threshold_specificity: float = 0.995
    min_informative_reads: int = 20_000
    min_days_post_surgery: int = 14
    min_loci_with_reads: int = 2
    outlier_alpha: float = 0.05
    em_iterations: int = 200
    em_tolerance: float = 1e-10
    n_null_simulations: int = 2000
    ci_level: float = 0.95
    lod_power: float = 0.95

    def __post_init__(self) -> None:
        if not 0.5 < self.specificity <= self.threshold_specificity < 1.0:
            raise InvalidInput(
                "need 0.5 < specificity <= threshold_specificity < 1, got "
                f"{self.specificity} and {self.threshold_specificity}"
            )
        if math.floor((1.0 - self.threshold_specificity) * (self.n_null_simulations + 1)) < 1:
            raise InvalidInput(
                f"{self.n_null_simulations} null simulations cannot calibrate "
                f"specificity {self.threshold_specificity}"
            )
        if self.em_iterations < 1 or not 0.0 < self.em_tolerance < 1e-3:
            raise InvalidInput("the p_hat solver needs >= 1 iteration and a tolerance in (0, 1e-3)")
        if not 0.0 < self.ci_level < 1.0 or not 0.0 < self.lod_power < 1.0:
            raise InvalidInput("ci_level and lod_power must be in (0, 1)")
        if self.min_loci_with_reads < 1:
            raise InvalidInput("min_loci_with_reads must be >= 1")


@dataclass(frozen=True, slots=True)
class MrdCall:
    """The MRD call of one sample, with everything needed to explain it.

    ``tumor_fraction`` is p_hat on the INVAR ctDNA-fraction scale (relative to the tissue AFs
    given). ``loci_detected`` counts retained loci with >= 1 mutant read; ``dropped_loci`` are
    outlier-suppressed, ``excluded_loci`` blacklisted by the background model.
    ``threshold``/``p_value``/``lod95`` are None only when no locus is informative.
    """

    call: MrdStatus
    reason: str
    score: float
    threshold: float | None
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
    dropped_loci: tuple[str, ...]
    excluded_loci: tuple[str, ...]
    days_since_surgery: int | None
    n_null_simulations: int
    params_version: str


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


def beta_binomial_pmf(depth: IntArray, alpha: FloatArray, beta: FloatArray) -> FloatArray:
    """(k x loci) pmf of M ~ BetaBinomial(R, alpha, beta): e ~ Beta(alpha, beta), then
    M ~ Binomial(R, e) -- the posterior predictive count of a locus with no ctDNA."""

    def log_pmf(k: FloatArray, r: FloatArray) -> FloatArray:
        result: FloatArray = (
            _log_choose(r, k)
            + special.betaln(k + alpha, r - k + beta)
            - special.betaln(alpha, beta)
        )
        return result

    return _pmf_table(log_pmf, depth)


def binomial_pmf(depth: IntArray, rate: FloatArray) -> FloatArray:
    """(k x loci) pmf of M ~ Binomial(R, rate) (the null when the error rates are known)."""

    safe = np.clip(rate, 1e-300, 1.0 - 1e-16)

    def log_pmf(k: FloatArray, r: FloatArray) -> FloatArray:
        result: FloatArray = _log_choose(r, k) + k * np.log(safe) + (r - k) * np.log1p(-safe)
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
    used = tuple(ev for ev in evidence if not ev.background.blacklisted and ev.depth > 0)
    if not used:
        return None
    depth = np.array([ev.depth for ev in used], dtype=np.int64)
    af = np.array([ev.tumor_af for ev in used])
    e = np.array([ev.background.mean for ev in used])
    null_pmf = beta_binomial_pmf(
        depth,
        np.array([ev.background.alpha for ev in used]),
        np.array([ev.background.beta for ev in used]),
    )
    null_alt = _draw_counts(null_pmf, params.n_null_simulations, rng)
    distinct, inverse = _distinct_rows(null_alt)
    return _Prepared(
        used=used,
        alt=np.array([ev.alt_reads for ev in used], dtype=np.float64),
        depth=depth.astype(np.float64),
        e=e,
        g=af * (1.0 - e) + (1.0 - af) * e,
        null_pmf=null_pmf,
        null_distinct=distinct,
        null_inverse=inverse,
    )


def _status(
    *,
    informative: int,
    n_kept: int,
    passes: bool,
    detected: int,
    days_since_surgery: int | None,
    params: MrdParams,
) -> tuple[MrdStatus, str]:
    """The call rule of domain-anchors §6 (gates first, then the calibrated score)."""
    if informative < params.min_informative_reads:
        return MrdStatus.INDETERMINATE, "low_informative_reads"
    if n_kept < params.min_loci_with_reads:
        return MrdStatus.INDETERMINATE, "too_few_loci"
    if passes and detected >= params.min_loci_with_reads:
        return MrdStatus.POSITIVE, "score_above_threshold"
    if days_since_surgery is not None and days_since_surgery < 0:
        return MrdStatus.INDETERMINATE, "pre_surgery"
    if days_since_surgery is not None and days_since_surgery < params.min_days_post_surgery:
        return MrdStatus.INDETERMINATE, "early_postop"
    if passes:
        return MrdStatus.NEGATIVE, "signal_at_too_few_loci"
    return MrdStatus.NEGATIVE, "score_below_threshold"


def _finish(
    evidence: Sequence[LocusEvidence],
    days_since_surgery: int | None,
    prepared: _Prepared | None,
    observed: _Fit | None,
    null_scores: FloatArray | None,
    params: MrdParams,
) -> MrdCall:
    score = p_hat = low = 0.0
    high = 1.0
    threshold = p_value = lod = None
    detected = informative = mutant = n_kept = 0
    dropped: tuple[str, ...] = ()
    passes = False
    if prepared is not None and observed is not None and null_scores is not None:
        score, p_hat = float(observed.score[0]), float(observed.p_hat[0])
        kept = ~observed.dropped[0]
        threshold = calibrated_threshold(null_scores, params.threshold_specificity)
        passes = score >= threshold
        p_value = empirical_p_value(score, null_scores)
        alt, depth = prepared.alt[kept], prepared.depth[kept]
        e, g = prepared.e[kept], prepared.g[kept]
        n_kept = int(kept.sum())
        informative, mutant = int(depth.sum()), int(alt.sum())
        detected = int(np.count_nonzero(alt > 0))
        dropped = tuple(
            ev.key for ev, d in zip(prepared.used, observed.dropped[0], strict=True) if d
        )
        lod = _lod95(prepared.null_pmf[:, kept], depth, e, g, params)
        low, high = _profile_interval(alt, depth, e, g, p_hat, params.ci_level)
    status, reason = _status(
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
        dropped_loci=dropped,
        excluded_loci=tuple(ev.key for ev in evidence if ev.background.blacklisted),
        days_since_surgery=days_since_surgery,
        n_null_simulations=params.n_null_simulations,
        params_version=params.version,
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
) -> FloatArray:
    """Conformal thresholds of ``oracle_lr`` from Binomial(R_i, true e_i) null replicates.

    Inputs are samples x loci (or one sample's loci); returns one threshold per sample.
    """
    depth = np.atleast_2d(np.asarray(depths, dtype=np.int64))
    rates = np.broadcast_to(np.asarray(error_rates, dtype=np.float64), depth.shape)
    af = np.broadcast_to(np.asarray(tumor_afs, dtype=np.float64), depth.shape)
    blocks: list[_Block] = []
    inverses = []
    for r, e, a in zip(depth, rates, af, strict=True):
        distinct, inverse = _distinct_rows(_draw_counts(binomial_pmf(r, e), n_simulations, rng))
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


def molecular_relapse(
    calls: Sequence[tuple[date, MrdCall]], *, surgery_date: date | None = None
) -> date | None:
    """Date of the first POSITIVE call after surgery (domain-anchors §6.7), else None.

    A call counts as post-surgical when it is dated after ``surgery_date`` (if given) and its
    own ``days_since_surgery`` is not negative (if known).
    """
    for when, result in sorted(calls, key=lambda item: item[0]):
        if surgery_date is not None and when <= surgery_date:
            continue
        if result.days_since_surgery is not None and result.days_since_surgery < 0:
            continue
        if result.call is MrdStatus.POSITIVE:
            return when
    return None


def lead_time_days(
    molecular_relapse_date: date | None, clinical_relapse_date: date | None
) -> int | None:
    """Days from molecular to clinical relapse (positive = ctDNA first), None if either unknown."""
    if molecular_relapse_date is None or clinical_relapse_date is None:
        return None
    return (clinical_relapse_date - molecular_relapse_date).days
