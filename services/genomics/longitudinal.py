"""Serial ctDNA quantities of one patient: tumour fraction, relative CCF, MATH, molecular response.

Owns the serial read-count types (``LocusObservation``, ``LocusSeries``) shared by the
resistance and clone modules, the per-locus and pooled count statistics (one-sided tests against
background, LoD95), and four per-patient analyses:

* tumour fraction per draw from truncal loci: binomial (or beta-binomial) likelihood pooled over
  the truncal loci with mean ``p/2·(1-e_i) + e_i`` (clonal, heterozygous, copy-neutral:
  TF = 2 × VAF, domain-anchors §4.6), maximum-likelihood estimate with a profile-likelihood 95%
  interval (INVAR, Wan et al., Sci Transl Med 2020), alongside the robust median of 2×VAF;
* relative cancer-cell fraction ``rCCF_j = f_j / median(f_truncal)`` with Monte Carlo
  uncertainty over ``Beta(M+0.5, R-M+0.5)`` posteriors (§4.7);
* MATH score, ``100 × 1.4826·MAD / median`` of the VAFs of detected variants (Mroz & Rocco,
  Oral Oncol 2013;49:211);
* molecular response per therapy line from the line's baseline tumour fraction (§4.8).

Dates: ``collection_date`` of a draw; lines cover ``(start_date, stop_date]`` (see therapy.py).
Pure: stdlib, numpy, scipy and services.errors only; randomness from a Generator passed in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Final, Literal, Protocol

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special, stats

from services.errors import InvalidInput
from services.genomics.therapy import TherapyLine

FloatArray = NDArray[np.float64]


@lru_cache(maxsize=16)
def _chi2_1(level: float) -> float:
    """Quantile of chi-square with one degree of freedom (cached: scipy's ppf is slow)."""
    return float(stats.chi2.ppf(level, 1))


# Largest mean allowed in a count likelihood: keeps log(1 - mean) finite.
_MAX_MEAN: Final[float] = 1.0 - 1e-9


# --------------------------------------------------------------------------- serial read counts


@dataclass(frozen=True, slots=True)
class LocusObservation:
    """Read counts of one variant in one draw.

    ``background_error`` is the per-read error rate at this locus (panel of normals, matched
    normal...); it is floored by the analysis parameters, never taken as zero. ``lod95`` is the
    locus' limit of detection (VAF) when the caller computed one; otherwise it is derived from
    depth and background.
    """

    sample_id: str
    collection_date: dt.date
    alt_reads: int
    depth: int
    background_error: float
    lod95: float | None = None

    def __post_init__(self) -> None:
        where = f"sample {self.sample_id!r}"
        if self.alt_reads < 0 or self.depth < 0:
            raise InvalidInput(f"{where}: read counts must be non-negative")
        if self.alt_reads > self.depth:
            raise InvalidInput(f"{where}: alt_reads {self.alt_reads} exceed depth {self.depth}")
        if not 0.0 <= self.background_error < 0.5:
            raise InvalidInput(
                f"{where}: background_error {self.background_error} is not in [0, 0.5)"
            )
        if self.lod95 is not None and not 0.0 < self.lod95 <= 1.0:
            raise InvalidInput(f"{where}: lod95 {self.lod95} is not in (0, 1]")

    @property
    def vaf(self) -> float:
        """Observed variant allele fraction (0 when there is no depth)."""
        return self.alt_reads / self.depth if self.depth else 0.0


@dataclass(frozen=True, slots=True)
class LocusSeries:
    """All draws of one variant of one patient.

    ``key`` identifies the variant (normalised GRCh38 allele); ``truncal`` marks a clonal
    (trunk) variant chosen from tissue, used as the tumour-fraction reference; ``weight`` is
    the variant's allele fraction in tumour DNA (tissue VAF / purity for a tracked variant:
    ``mrd.allele_weights``; 1/2, clonal heterozygous, otherwise), so that the tumour fraction
    is the same quantity the MRD call estimates; ``germline_suspected`` keeps a variant that
    looks inherited (``germline_suspected``) out of the tumour fraction, rCCF, MATH and clones.
    """

    key: str
    gene: str | None
    protein_change: str | None
    observations: tuple[LocusObservation, ...]
    truncal: bool = False
    weight: float = 0.5
    germline_suspected: bool = False

    def __post_init__(self) -> None:
        ids = [obs.sample_id for obs in self.observations]
        if len(set(ids)) != len(ids):
            raise InvalidInput(f"variant {self.key!r}: a sample appears twice in its series")
        if not 0.0 < self.weight <= 1.0:
            raise InvalidInput(f"variant {self.key!r}: weight must be in (0, 1], got {self.weight}")

    def ordered(self) -> tuple[LocusObservation, ...]:
        """Observations by collection date (then sample id)."""
        return tuple(sorted(self.observations, key=lambda o: (o.collection_date, o.sample_id)))


@dataclass(frozen=True, slots=True)
class Draw:
    """One blood draw seen across the series."""

    sample_id: str
    collection_date: dt.date


def observations_by_draw(
    series: Iterable[LocusSeries],
) -> dict[str, list[tuple[LocusSeries, LocusObservation]]]:
    """(series, observation) pairs of each draw, in series order: one pass over the data
    instead of one scan per draw."""
    by_draw: dict[str, list[tuple[LocusSeries, LocusObservation]]] = defaultdict(list)
    for locus in series:
        for obs in locus.observations:
            by_draw[obs.sample_id].append((locus, obs))
    return by_draw


def draws_of(series: Iterable[LocusSeries]) -> list[Draw]:
    """Every draw of the patient in date order; a sample with two dates is an input error."""
    dates: dict[str, dt.date] = {}
    for locus in series:
        for obs in locus.observations:
            known = dates.setdefault(obs.sample_id, obs.collection_date)
            if known != obs.collection_date:
                raise InvalidInput(
                    f"sample {obs.sample_id!r} has two collection dates ({known}, "
                    f"{obs.collection_date})"
                )
    return [Draw(s, d) for s, d in sorted(dates.items(), key=lambda item: (item[1], item[0]))]


# --------------------------------------------------------------------------- count statistics


def log_binomial_coefficient(alt: FloatArray, depth: FloatArray) -> FloatArray:
    """log C(depth, alt), elementwise."""
    return np.asarray(
        special.gammaln(depth + 1) - special.gammaln(alt + 1) - special.gammaln(depth - alt + 1),
        dtype=np.float64,
    )


def count_loglik(
    alt: FloatArray,
    depth: FloatArray,
    mean: FloatArray,
    overdispersion: float,
    log_choose: FloatArray | None = None,
) -> FloatArray:
    """Log-pmf of ``alt`` mutant reads out of ``depth`` (elementwise, broadcasting).

    Binomial when ``overdispersion`` (rho, the intra-class correlation) is 0, otherwise
    beta-binomial with mean ``mean`` and ``a + b = (1 - rho)/rho`` (PyClone-VI's read model,
    Gillis & Roth, BMC Bioinformatics 2020). ``depth == 0`` contributes 0. ``log_choose``
    (``log_binomial_coefficient(alt, depth)``) may be passed when it is reused.
    """
    mean = np.clip(mean, 1e-300, _MAX_MEAN)
    if log_choose is None:
        log_choose = log_binomial_coefficient(alt, depth)
    if overdispersion <= 0.0:
        return np.asarray(
            log_choose + special.xlogy(alt, mean) + special.xlog1py(depth - alt, -mean),
            dtype=np.float64,
        )
    precision = (1.0 - overdispersion) / overdispersion
    a = mean * precision
    b = (1.0 - mean) * precision
    return np.asarray(
        log_choose + special.betaln(alt + a, depth - alt + b) - special.betaln(a, b),
        dtype=np.float64,
    )


def _count_dloglik_dmean(
    alt: FloatArray, depth: FloatArray, mean: FloatArray, overdispersion: float
) -> FloatArray:
    mean = np.clip(mean, 1e-300, _MAX_MEAN)
    if overdispersion <= 0.0:
        return np.asarray(alt / mean - (depth - alt) / (1.0 - mean), dtype=np.float64)
    precision = (1.0 - overdispersion) / overdispersion
    a = mean * precision
    b = (1.0 - mean) * precision
    return np.asarray(
        precision
        * (
            special.digamma(alt + a)
            - special.digamma(a)
            - special.digamma(depth - alt + b)
            + special.digamma(b)
        ),
        dtype=np.float64,
    )


def _upper_tail(k: int, depth: int, rate: float, overdispersion: float) -> float:
    """P(X >= k) for X ~ Binomial(depth, rate) or the beta-binomial of the same mean."""
    if k <= 0:
        return 1.0
    if k > depth:
        return 0.0
    if overdispersion <= 0.0:
        # The binomial survival function itself (scipy.stats' wrapper costs ~100x more).
        return float(special.bdtrc(k - 1, depth, rate))
    precision = (1.0 - overdispersion) / overdispersion
    return float(stats.betabinom.sf(k - 1, depth, rate * precision, (1.0 - rate) * precision))


def _lowest_pmf(
    n: int, depth: int, rate: float, overdispersion: float, log_choose: FloatArray | None = None
) -> FloatArray:
    """pmf(0), ..., pmf(n - 1) of the binomial / beta-binomial read count."""
    counts = np.arange(n, dtype=np.float64)
    depths, rates = np.full(1, float(depth)), np.full(1, rate)
    return np.exp(count_loglik(counts, depths, rates, overdispersion, log_choose))


def locus_p_value(
    alt_reads: int, depth: int, background_error: float, overdispersion: float = 0.0
) -> float:
    """One-sided p-value P(X >= alt_reads) under background only (binomial or beta-binomial)."""
    if 0 < alt_reads <= min(depth, 10_000):
        # 1 - (sum of the lowest pmf terms) is quick and accurate unless the tail is tiny.
        quick = 1.0 - float(_lowest_pmf(alt_reads, depth, background_error, overdispersion).sum())
        if quick > 1e-6:
            return quick
    return _upper_tail(alt_reads, depth, background_error, overdispersion)


@lru_cache(maxsize=65536)
def detection_threshold(
    depth: int,
    background_error: float,
    alpha: float,
    min_alt_reads: int,
    overdispersion: float = 0.0,
) -> int:
    """Smallest k >= min_alt_reads with P(X >= k | background) < alpha (depth + 1 if none)."""
    if depth <= 0:
        return max(min_alt_reads, 1)
    n = max(min_alt_reads + 1, 32)
    while True:
        n = min(n, depth + 1)
        # tails[i] = P(X >= i + 1) = 1 - P(X <= i); exact enough at alpha-sized tails.
        tails = 1.0 - np.cumsum(_lowest_pmf(n, depth, background_error, overdispersion))
        ks = np.arange(1, n + 1)
        ok = np.flatnonzero((tails < alpha) & (ks >= min_alt_reads))
        if ok.size:
            return int(ks[ok[0]])
        if n == depth + 1:
            return depth + 1
        n *= 4


@lru_cache(maxsize=65536)
def locus_lod95(
    depth: int,
    background_error: float,
    alpha: float,
    min_alt_reads: int,
    confidence: float = 0.95,
    overdispersion: float = 0.0,
) -> float:
    """VAF at which one locus is detected with probability ``confidence`` (inf if never).

    Detection means at least k mutant reads, k the smallest count significant at ``alpha``
    (and >= ``min_alt_reads``); the LoD solves P(X >= k | rate) = confidence with
    rate = vaf·(1 - e) + e (domain-anchors §4.5, per locus).
    """
    k = detection_threshold(depth, background_error, alpha, min_alt_reads, overdispersion)
    if depth <= 0 or k > depth:
        return math.inf
    if overdispersion <= 0.0:
        # P(Bin(n, q) >= k) = I_q(k, n - k + 1): the regularised incomplete beta, inverted.
        rate = float(special.betaincinv(k, depth - k + 1, confidence))
    else:
        # P(X >= k) = 1 - sum of the k lowest pmf terms: a short vectorised sum, exact enough
        # near the 0.95 being solved for, and far cheaper than scipy's generic sf per step.
        log_choose = log_binomial_coefficient(
            np.arange(k, dtype=np.float64), np.full(1, float(depth))
        )

        def tail(q: float) -> float:
            return 1.0 - float(_lowest_pmf(k, depth, q, overdispersion, log_choose).sum())

        if tail(_MAX_MEAN) < confidence:
            return math.inf
        rate = float(
            optimize.brentq(lambda q: tail(q) - confidence, background_error, _MAX_MEAN, xtol=1e-12)
        )
    return max(0.0, (rate - background_error) / (1.0 - background_error))


@dataclass(frozen=True, slots=True)
class PooledCall:
    """Mutant reads pooled over several loci, tested against the pooled background.

    Poisson approximation of the sum of binomials (rates ≪ 1): p-value
    P(Poisson(Σ R_i e_i) >= Σ M_i); LoD95 is the common per-locus VAF detected with 95%
    probability (domain-anchors §4.5, "with background e").
    """

    mutant_reads: int
    informative_reads: int
    expected_background: float
    p_value: float
    detected: bool
    lod95: float


def pooled_call(
    alt: Sequence[int],
    depth: Sequence[int],
    background: Sequence[float],
    alpha: float,
    min_alt_reads: int,
    confidence: float = 0.95,
) -> PooledCall:
    """Pooled one-sided test and LoD95 of loci read together (see PooledCall)."""
    m = int(sum(alt))
    n = int(sum(depth))
    lam = float(sum(r * e for r, e in zip(depth, background, strict=True)))
    exposure = float(sum(r * (1.0 - e) for r, e in zip(depth, background, strict=True)))
    if n == 0:
        return PooledCall(0, 0, 0.0, 1.0, False, math.inf)
    # special.pdtrc(k, mu) = P(Poisson(mu) > k), the function scipy.stats.poisson.sf wraps.
    p_value = float(special.pdtrc(m - 1, lam)) if m > 0 else 1.0
    k = max(min_alt_reads, 1)
    span = max(64, int(lam + 10.0 * math.sqrt(lam) + 10.0))
    while True:
        ks = np.arange(k, k + span)
        below = np.flatnonzero(special.pdtrc(ks - 1, lam) < alpha)
        if below.size:
            k = int(ks[below[0]])
            break
        k += span
    # P(Poisson(mu) >= k) = P(k, mu), the regularised lower incomplete gamma, inverted.
    mu = float(special.gammaincinv(k, confidence))
    lod = max(0.0, (mu - lam) / exposure)
    return PooledCall(m, n, lam, p_value, p_value < alpha and m >= min_alt_reads, lod)


class _FractionLikelihood:
    """Log-likelihood of a scalar fraction x with per-read mean ``s_i·x·(1 - e_i) + e_i``
    (``scale``: one s for every locus, or one per locus)."""

    def __init__(
        self,
        alt: Sequence[int],
        depth: Sequence[int],
        background: Sequence[float],
        scale: float | Sequence[float],
        overdispersion: float,
    ) -> None:
        self.alt = np.asarray(alt, dtype=np.float64)
        self.depth = np.asarray(depth, dtype=np.float64)
        self.background = np.asarray(background, dtype=np.float64)
        self.scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), self.alt.shape)
        self.overdispersion = overdispersion
        self.upper = min(1.0, _MAX_MEAN / float(self.scale.max(initial=_MAX_MEAN)))

    def mean(self, x: float) -> FloatArray:
        return np.asarray(self.scale * x * (1.0 - self.background) + self.background)

    def loglik(self, x: float) -> float:
        return float(count_loglik(self.alt, self.depth, self.mean(x), self.overdispersion).sum())

    def dloglik(self, x: float) -> float:
        grad = _count_dloglik_dmean(self.alt, self.depth, self.mean(x), self.overdispersion)
        return float((grad * self.scale * (1.0 - self.background)).sum())


def _argmax_concave(derivative: Callable[[float], float], lo: float, hi: float) -> float:
    """Maximiser on [lo, hi] of a concave function given its derivative."""
    if derivative(lo) <= 0.0:
        return lo
    if derivative(hi) >= 0.0:
        return hi
    return float(optimize.brentq(derivative, lo, hi, xtol=1e-14, rtol=1e-9))


@dataclass(frozen=True, slots=True)
class FractionFit:
    """Maximum-likelihood fraction with its profile-likelihood interval."""

    estimate: float
    lower: float
    upper: float
    loglik: float


def fit_fraction(
    alt: Sequence[int],
    depth: Sequence[int],
    background: Sequence[float],
    *,
    scale: float | Sequence[float],
    overdispersion: float = 0.0,
    level: float = 0.95,
) -> FractionFit:
    """MLE of x where each read is mutant with probability ``s_i·x·(1 - e_i) + e_i``.

    ``scale`` = 1/2 for a tumour fraction from clonal heterozygous loci, 1 for a VAF, or one
    value per locus (the loci's allele fractions in tumour DNA). The
    interval is ``{x : 2·[LL(x̂) - LL(x)] <= chi2_1(level)}`` (profile likelihood, INVAR2).
    """
    lik = _FractionLikelihood(alt, depth, background, scale, overdispersion)
    best = _argmax_concave(lik.dloglik, 0.0, lik.upper)
    top = lik.loglik(best)
    target = top - _chi2_1(level) / 2.0

    def gap(x: float) -> float:
        return lik.loglik(x) - target

    lower = (
        0.0 if gap(0.0) >= 0.0 else float(optimize.brentq(gap, 0.0, best, xtol=1e-14, rtol=1e-9))
    )
    upper = (
        lik.upper
        if gap(lik.upper) >= 0.0
        else float(optimize.brentq(gap, best, lik.upper, xtol=1e-14, rtol=1e-9))
    )
    return FractionFit(best, lower, upper, top)


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True, slots=True)
class LongitudinalParams:
    """Parameters of the serial analyses; ``version`` is stored with every result."""

    version: str = "longitudinal-2026.12-1"
    alpha: float = 0.01
    """One-sided significance of a per-locus or pooled detection against background."""
    min_alt_reads: int = 2
    min_background_error: float = 1e-6
    tf_overdispersion: float = 0.0
    """rho of a beta-binomial tumour-fraction likelihood; 0 = binomial (sampling error only)."""
    mc_samples: int = 4000
    ci_level: float = 0.95
    math_min_variants: int = 3
    """MATH needs at least this many measurable variants in a draw (a MAD of two is noise)."""
    math_min_mutant_reads: int = 10
    """A variant's VAF is measurable with >= this many mutant reads (relative sampling error
    <= ~30%): below it, MATH would measure binomial noise, not heterogeneity."""
    germline_vaf_band: tuple[float, float] = (0.35, 0.65)
    germline_min_vaf: float = 0.9
    germline_normal_vaf: float = 0.2
    germline_min_depth: int = 30
    baseline_clone_vaf_ratio: float = 0.25
    """Without a tracked set, the tumour-fraction reference is the clone seen at baseline: the
    variants detected in the first draw that has any, within this factor of its highest VAF."""
    germline_polymorphisms: tuple[tuple[str, str], ...] = (
        ("ERBB2", "p.I655V"),
        ("ERBB2", "p.P1170A"),
        ("PIK3CA", "p.I391M"),
    )
    """Common inherited polymorphisms of the monitored genes (ERBB2 I655V rs1136201, P1170A
    rs1058808; PIK3CA I391M rs2230461: gnomAD allele frequencies of 5-25 %)."""
    response_fall: float = 0.5
    """Molecular response: the ratio's upper CI bound is below this (a >= 50% fall)."""
    progression_min_fold: float = 2.0
    """Molecular progression: the ratio's lower CI bound is above 1 and the ratio >= this."""
    stable_fold: float = 1.25
    """A change within this factor either way is stable even when sampling alone would call it
    significant (deep draws): the reproducibility of a tumour fraction between draws."""
    cmr_max_lod_ratio: float = 0.1
    """Clearance counts as complete response when the draw's TF LoD95 <= this × baseline TF."""
    max_baseline_age_days: int = 90


# --------------------------------------------------------------------------- tumour fraction


@dataclass(frozen=True, slots=True)
class TumourFraction:
    """Tumour fraction of one draw from its truncal loci.

    ``estimate``/``lower``/``upper``: pooled likelihood MLE and profile 95% CI (sampling error
    only when ``tf_overdispersion`` is 0), each locus' reads weighted by its allele fraction in
    tumour DNA. ``median_2vaf``: median over truncal loci of 2×VAF. ``detected``/``p_value``/
    ``lod95``: pooled test of the truncal reads against background and the TF detected with
    95% probability.
    """

    sample_id: str
    collection_date: dt.date
    estimate: float
    lower: float
    upper: float
    median_2vaf: float | None
    detected: bool
    p_value: float
    lod95: float
    mutant_reads: int
    informative_reads: int
    n_loci: int
    truncal_keys: tuple[str, ...]


def truncal_series(series: Sequence[LocusSeries]) -> list[LocusSeries]:
    """The loci flagged truncal; all somatic loci when none is flagged (a tumour-informed
    panel is chosen from clonal tissue variants, so its loci are truncal by construction).
    A variant suspected germline is never a reference."""
    somatic = [locus for locus in series if not locus.germline_suspected]
    flagged = [locus for locus in somatic if locus.truncal]
    return flagged if flagged else somatic


def tumour_fractions(
    series: Sequence[LocusSeries], params: LongitudinalParams
) -> list[TumourFraction]:
    """Per-draw tumour fraction from the truncal loci (see the module docstring)."""
    trunk = truncal_series(series)
    keys = tuple(locus.key for locus in trunk)
    trunk_keys = set(keys)
    by_draw = observations_by_draw(series)
    result: list[TumourFraction] = []
    for draw in draws_of(series):
        observed = [
            (obs, locus.weight)
            for locus, obs in by_draw[draw.sample_id]
            if locus.key in trunk_keys and obs.depth > 0
        ]
        result.append(_tumour_fraction(draw, observed, keys, params))
    return result


def _tumour_fraction(
    draw: Draw,
    weighted: Sequence[tuple[LocusObservation, float]],
    keys: tuple[str, ...],
    params: LongitudinalParams,
) -> TumourFraction:
    observed = [obs for obs, _ in weighted]
    weights = [w for _, w in weighted]
    alt = [obs.alt_reads for obs in observed]
    depth = [obs.depth for obs in observed]
    background = [max(obs.background_error, params.min_background_error) for obs in observed]
    if not observed:
        return TumourFraction(
            draw.sample_id,
            draw.collection_date,
            0.0,
            0.0,
            1.0,
            None,
            False,
            1.0,
            math.inf,
            0,
            0,
            0,
            keys,
        )
    fit = fit_fraction(
        alt,
        depth,
        background,
        scale=weights,
        overdispersion=params.tf_overdispersion,
        level=params.ci_level,
    )
    pooled = pooled_call(alt, depth, background, params.alpha, params.min_alt_reads)
    mean_weight = float(np.average(weights, weights=depth)) if sum(depth) else 0.5
    return TumourFraction(
        sample_id=draw.sample_id,
        collection_date=draw.collection_date,
        estimate=fit.estimate,
        lower=fit.lower,
        upper=fit.upper,
        median_2vaf=float(np.median([2.0 * obs.vaf for obs in observed])),
        detected=pooled.detected,
        p_value=pooled.p_value,
        lod95=min(1.0, pooled.lod95 / mean_weight),
        mutant_reads=pooled.mutant_reads,
        informative_reads=pooled.informative_reads,
        n_loci=len(observed),
        truncal_keys=keys,
    )


# --------------------------------------------------------------------------- relative CCF


@dataclass(frozen=True, slots=True)
class RelativeCCF:
    """rCCF of one variant in one draw: posterior median and central 95% interval.

    None values (``evaluable`` False) when the draw's truncal reads are not detected: a ratio
    to a reference at background level carries no information.
    """

    key: str
    sample_id: str
    collection_date: dt.date
    vaf: float
    rccf: float | None
    lower: float | None
    upper: float | None
    evaluable: bool


def relative_ccfs(
    series: Sequence[LocusSeries],
    params: LongitudinalParams,
    rng: np.random.Generator,
    fractions: Sequence[TumourFraction] | None = None,
) -> list[RelativeCCF]:
    """``rCCF_j = f_j / median(f_truncal)`` per variant and draw (domain-anchors §4.7).

    Each f is drawn from its ``Beta(M + 0.5, R - M + 0.5)`` posterior (Jeffreys prior),
    ``params.mc_samples`` times; the truncal median is taken inside each Monte Carlo draw, so a
    truncal variant's own rCCF carries its correlation with the reference. ``fractions`` (the
    series' tumour_fractions) may be passed when already computed.
    """
    trunk_keys = {locus.key for locus in truncal_series(series)}
    tail = (1.0 - params.ci_level) / 2.0
    if fractions is None:
        fractions = tumour_fractions(series, params)
    tfs = {tf.sample_id: tf for tf in fractions}
    by_draw = observations_by_draw(series)
    result: list[RelativeCCF] = []
    for draw in draws_of(series):
        present = [
            (locus.key, obs)
            for locus, obs in by_draw[draw.sample_id]
            if obs.depth > 0 and not locus.germline_suspected
        ]
        evaluable = tfs[draw.sample_id].detected and any(k in trunk_keys for k, _ in present)
        if not evaluable:
            result.extend(
                RelativeCCF(
                    key, draw.sample_id, draw.collection_date, obs.vaf, None, None, None, False
                )
                for key, obs in present
            )
            continue
        alt = np.array([obs.alt_reads for _, obs in present], dtype=np.float64)
        depth = np.array([obs.depth for _, obs in present], dtype=np.float64)
        samples = rng.beta(alt + 0.5, depth - alt + 0.5, size=(params.mc_samples, len(present)))
        is_trunk = np.array([key in trunk_keys for key, _ in present])
        reference = np.median(samples[:, is_trunk], axis=1)
        ratios = samples / reference[:, None]
        mid, lo, hi = np.quantile(ratios, [0.5, tail, 1.0 - tail], axis=0)
        result.extend(
            RelativeCCF(
                key,
                draw.sample_id,
                draw.collection_date,
                obs.vaf,
                float(mid[i]),
                float(lo[i]),
                float(hi[i]),
                True,
            )
            for i, (key, obs) in enumerate(present)
        )
    return result


# --------------------------------------------------------------------------- MATH


@dataclass(frozen=True, slots=True)
class MathScore:
    """Mutant-allele tumour heterogeneity of one draw (None below ``math_min_variants``)."""

    sample_id: str
    collection_date: dt.date
    math: float | None
    n_detected: int
    median_vaf: float | None


def locus_detected(obs: LocusObservation, alpha: float, min_alt_reads: int, floor: float) -> bool:
    """Per-locus detection: >= min_alt_reads mutant reads and binomial p < alpha."""
    return (
        obs.alt_reads >= min_alt_reads
        and locus_p_value(obs.alt_reads, obs.depth, max(obs.background_error, floor)) < alpha
    )


def math_scores(series: Sequence[LocusSeries], params: LongitudinalParams) -> list[MathScore]:
    """MATH = 100 × 1.4826·median(|f - median f|) / median f over the measurable somatic
    variants of a draw (Mroz & Rocco, Oral Oncol 2013;49:211; Mroz et al., Cancer 2013;119:3034).

    Measurable: detected against background with >= ``math_min_mutant_reads`` mutant reads, so
    that the VAF's own sampling error (~1/sqrt(M)) is small against the spread MATH reads as
    heterogeneity; at ctDNA levels below that, binomial noise alone gives a perfectly clonal
    tumour a MATH of 30+. Not reported (None) with fewer than ``math_min_variants`` such
    variants, nor from variants suspected germline."""
    result: list[MathScore] = []
    by_draw = observations_by_draw(series)
    for draw in draws_of(series):
        vafs = np.array(
            [
                obs.vaf
                for locus, obs in by_draw[draw.sample_id]
                if not locus.germline_suspected
                and obs.alt_reads >= params.math_min_mutant_reads
                and locus_detected(
                    obs, params.alpha, params.min_alt_reads, params.min_background_error
                )
            ]
        )
        if len(vafs) < max(params.math_min_variants, 1):
            result.append(MathScore(draw.sample_id, draw.collection_date, None, len(vafs), None))
            continue
        median = float(np.median(vafs))
        mad = 1.4826 * float(np.median(np.abs(vafs - median)))
        result.append(
            MathScore(draw.sample_id, draw.collection_date, 100.0 * mad / median, len(vafs), median)
        )
    return result


# --------------------------------------------------------------------------- molecular response

MolecularResponse = Literal[
    "complete_molecular_response",
    "molecular_response",
    "falling",
    "stable",
    "rising",
    "molecular_progression",
    "not_evaluable",
]

_RESPONSE_RANK: Final[dict[str, int]] = {
    "complete_molecular_response": 6,
    "molecular_response": 5,
    "falling": 4,
    "stable": 3,
    "rising": 2,
    "molecular_progression": 1,
    "not_evaluable": 0,
}


@dataclass(frozen=True, slots=True)
class ResponseAssessment:
    """One on-treatment draw against the line's baseline.

    ``ratio`` = TF / baseline TF (None when both are 0; inf when only the baseline is 0), with
    its profile-likelihood 95% interval (``ratio_upper`` None = unbounded); ``nadir_ratio``
    and its interval the same against the lowest tumour fraction of the line before this draw;
    ``resistance`` the resistance variants emerged on the line by this draw.
    """

    sample_id: str
    collection_date: dt.date
    tumour_fraction: float
    tf_lower: float
    tf_upper: float
    tf_detected: bool
    tf_lod95: float
    ratio: float | None
    ratio_lower: float | None
    ratio_upper: float | None
    response: MolecularResponse
    nadir_sample_id: str | None = None
    nadir_ratio: float | None = None
    nadir_ratio_lower: float | None = None
    resistance: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LineResponse:
    """Molecular response of one therapy line: baseline, every on-line draw, best and latest."""

    line: TherapyLine
    baseline_sample_id: str | None
    baseline_date: dt.date | None
    baseline_tf: float | None
    baseline_lower: float | None
    baseline_upper: float | None
    baseline_detected: bool
    assessments: tuple[ResponseAssessment, ...]
    best_response: MolecularResponse
    latest_response: MolecularResponse


def _ratio_profile(
    base: _FractionLikelihood, draw: _FractionLikelihood
) -> tuple[float | None, float | None, float | None]:
    """Ratio of two fractions with its profile-likelihood 95% interval.

    LR(r) = 2·[LL0(p̂0) + LLt(p̂t) - max_p LL0(p) + LLt(r·p)]; the interval is
    {r : LR(r) <= chi2_1(0.95)}, searched on log r in [1e-6, 1e6].
    """
    p0 = _argmax_concave(base.dloglik, 0.0, base.upper)
    pt = _argmax_concave(draw.dloglik, 0.0, draw.upper)
    top = base.loglik(p0) + draw.loglik(pt)
    if p0 == 0.0 and pt == 0.0:
        return None, None, None
    ratio = math.inf if p0 == 0.0 else pt / p0

    def excess(log_r: float) -> float:
        r = math.exp(log_r)
        hi = min(base.upper, draw.upper / r)
        p = _argmax_concave(lambda x: base.dloglik(x) + r * draw.dloglik(r * x), 0.0, hi)
        return 2.0 * (top - base.loglik(p) - draw.loglik(r * p)) - _chi2_1(0.95)

    lo_bound, hi_bound = math.log(1e-6), math.log(1e6)
    centre = min(max(math.log(ratio), lo_bound), hi_bound) if ratio > 0.0 else lo_bound
    lower = (
        0.0
        if excess(lo_bound) <= 0.0
        else math.exp(optimize.brentq(excess, lo_bound, centre, xtol=1e-4))
    )
    upper = (
        None
        if excess(hi_bound) <= 0.0
        else math.exp(optimize.brentq(excess, centre, hi_bound, xtol=1e-4))
    )
    return ratio, lower, upper


def _likelihood_at(
    series: Sequence[LocusSeries], sample_id: str, params: LongitudinalParams
) -> _FractionLikelihood:
    observed = [
        (obs, locus.weight)
        for locus in truncal_series(series)
        for obs in locus.observations
        if obs.sample_id == sample_id and obs.depth > 0
    ]
    return _FractionLikelihood(
        [o.alt_reads for o, _ in observed],
        [o.depth for o, _ in observed],
        [max(o.background_error, params.min_background_error) for o, _ in observed],
        [w for _, w in observed],
        params.tf_overdispersion,
    )


def molecular_responses(
    series: Sequence[LocusSeries],
    lines: Sequence[TherapyLine],
    params: LongitudinalParams,
    fractions: Sequence[TumourFraction] | None = None,
    emergences: Sequence[tuple[dt.date, str, str]] = (),
) -> list[LineResponse]:
    """Molecular response per therapy line (domain-anchors §4.8).

    Baseline: the last draw on or before the line's start (at most ``max_baseline_age_days``
    earlier) with truncal reads. Each draw the line covers is classified, first match wins:

    * ``molecular_progression``: the tumour fraction rose significantly, >=
      ``progression_min_fold`` from the line's nadir (its lowest draw so far, the baseline
      included) with the ratio's lower 95% bound above 1 (or from an undetected nadir to a
      detected draw), or a variant resisting the line's drug class emerged on the line by
      this draw (``emergences``: (date, "gene protein", drug class) of resistance events);
    * ``complete_molecular_response``: baseline detected, this draw not, at a TF LoD95 <=
      ``cmr_max_lod_ratio`` x baseline TF (clearance at an adequate LoD);
    * ``molecular_response``: the upper 95% bound of TF/baseline below ``response_fall``;
    * ``falling`` / ``rising``: a change beyond the uncertainty (the ratio's interval excludes
      1) and beyond ``stable_fold``, but short of those thresholds;
    * ``stable``: only when the change is within the uncertainty;
    * ``not_evaluable`` without baseline or reads (or, for a fall, with an undetected baseline).
    """
    tfs = list(fractions) if fractions is not None else tumour_fractions(series, params)
    result: list[LineResponse] = []
    for line in lines:
        baseline = next(
            (
                tf
                for tf in reversed(tfs)
                if tf.collection_date <= line.start_date
                and (line.start_date - tf.collection_date).days <= params.max_baseline_age_days
                and tf.informative_reads > 0
            ),
            None,
        )
        on_line = [tf for tf in tfs if line.covers(tf.collection_date)]
        assessments = []
        nadir = baseline
        for tf in on_line:
            emerged = tuple(
                sorted(
                    {
                        name
                        for when, name, drug_class in emergences
                        if drug_class == line.drug_class
                        and line.covers(when)
                        and when <= tf.collection_date
                    }
                )
            )
            assessments.append(_assess(series, baseline, nadir, tf, emerged, params))
            if tf.informative_reads > 0 and (nadir is None or tf.estimate < nadir.estimate):
                nadir = tf
        evaluable = [a.response for a in assessments if a.response != "not_evaluable"]
        best: MolecularResponse = (
            max(evaluable, key=lambda r: _RESPONSE_RANK[r]) if evaluable else "not_evaluable"
        )
        result.append(
            LineResponse(
                line=line,
                baseline_sample_id=baseline.sample_id if baseline else None,
                baseline_date=baseline.collection_date if baseline else None,
                baseline_tf=baseline.estimate if baseline else None,
                baseline_lower=baseline.lower if baseline else None,
                baseline_upper=baseline.upper if baseline else None,
                baseline_detected=baseline.detected if baseline else False,
                assessments=tuple(assessments),
                best_response=best,
                latest_response=assessments[-1].response if assessments else "not_evaluable",
            )
        )
    return result


def _assess(
    series: Sequence[LocusSeries],
    baseline: TumourFraction | None,
    nadir: TumourFraction | None,
    tf: TumourFraction,
    emerged: tuple[str, ...],
    params: LongitudinalParams,
) -> ResponseAssessment:
    ratio = lower = upper = None
    nadir_ratio = nadir_lower = None
    response: MolecularResponse = "not_evaluable"
    if baseline is not None and tf.informative_reads > 0:
        ratio, lower, upper = _ratio_profile(
            _likelihood_at(series, baseline.sample_id, params),
            _likelihood_at(series, tf.sample_id, params),
        )
        nadir_ratio, nadir_lower = ratio, lower
        if nadir is not None and nadir.sample_id != baseline.sample_id:
            nadir_ratio, nadir_lower, _ = _ratio_profile(
                _likelihood_at(series, nadir.sample_id, params),
                _likelihood_at(series, tf.sample_id, params),
            )
        from_undetected = nadir is not None and not nadir.detected and tf.detected
        progressed = (
            nadir_ratio is not None
            and nadir_lower is not None
            and nadir_lower > 1.0
            and (nadir_ratio >= params.progression_min_fold or from_undetected)
        )
        if progressed or (emerged and tf.informative_reads > 0):
            response = "molecular_progression"
        elif baseline.detected:
            if not tf.detected and tf.lod95 <= params.cmr_max_lod_ratio * baseline.estimate:
                response = "complete_molecular_response"
            elif upper is not None and upper < params.response_fall:
                response = "molecular_response"
            elif (
                upper is not None
                and upper < 1.0
                and ratio is not None
                and (ratio * params.stable_fold < 1.0)
            ):
                response = "falling"
            elif (
                lower is not None
                and lower > 1.0
                and ratio is not None
                and (ratio > params.stable_fold)
            ):
                response = "rising"
            else:
                response = "stable"
    elif emerged and tf.informative_reads > 0:
        response = "molecular_progression"
    return ResponseAssessment(
        sample_id=tf.sample_id,
        collection_date=tf.collection_date,
        tumour_fraction=tf.estimate,
        tf_lower=tf.lower,
        tf_upper=tf.upper,
        tf_detected=tf.detected,
        tf_lod95=tf.lod95,
        ratio=ratio,
        ratio_lower=lower,
        ratio_upper=upper,
        response=response,
        nadir_sample_id=nadir.sample_id if nadir is not None else None,
        nadir_ratio=nadir_ratio,
        nadir_ratio_lower=nadir_lower,
        resistance=emerged,
    )


# --------------------------------------------------------------------------- references


def baseline_clone(series: Sequence[LocusSeries], params: LongitudinalParams) -> set[str]:
    """The tumour-fraction reference of a patient without a tracked set (tumour-naive panels,
    metastatic monitoring): the somatic variants detected in the first draw that has any (the
    per-locus test against background), within ``baseline_clone_vaf_ratio`` of that draw's
    highest VAF. A panel reports every hotspot it covers, mostly at background: taking them
    all as truncal would dilute the tumour fraction by the unmutated ones, and a subclone
    first seen later (an emerging resistance variant) is measured against the baseline clone,
    not part of it. A variant suspected germline is never part of it."""
    by_draw = observations_by_draw(s for s in series if not s.germline_suspected)
    for draw in draws_of(series):
        detected = [
            (locus.key, obs)
            for locus, obs in by_draw.get(draw.sample_id, [])
            if locus_detected(obs, params.alpha, params.min_alt_reads, params.min_background_error)
        ]
        if detected:
            top = max(obs.vaf for _, obs in detected)
            return {
                key for key, obs in detected if obs.vaf >= params.baseline_clone_vaf_ratio * top
            }
    return set()


def clonal_candidates(
    series: Sequence[LocusSeries], params: LongitudinalParams
) -> list[LocusSeries]:
    """The variants a clone fit is made of: somatic (not suspected germline) and detected
    against background in at least one draw. A hotspot a panel reports at background in
    every draw is not part of any clone."""
    return [
        locus
        for locus in series
        if not locus.germline_suspected
        and any(
            locus_detected(obs, params.alpha, params.min_alt_reads, params.min_background_error)
            for obs in locus.observations
        )
    ]


# --------------------------------------------------------------------------- germline


def germline_suspected(
    observations: Sequence[LocusObservation],
    *,
    gene: str | None,
    protein_change: str | None,
    normal_vafs: Sequence[float],
    params: LongitudinalParams,
) -> bool:
    """Whether a plasma variant looks inherited rather than tumour-derived: a known common
    polymorphism of the monitored genes, support in a matched normal (VAF >=
    ``germline_normal_vaf``), or a VAF in the heterozygous band (or near 1) in every draw with
    enough depth. Such variants are shown but kept out of the tumour fraction, clones,
    heterogeneity and resistance (a heterozygous germline ERBB2 I655V would otherwise read as a
    tumour fraction of 1)."""
    if (gene, protein_change) in params.germline_polymorphisms:
        return True
    if any(vaf >= params.germline_normal_vaf for vaf in normal_vafs):
        return True
    deep = [obs for obs in observations if obs.depth >= params.germline_min_depth]
    low, high = params.germline_vaf_band
    return bool(deep) and all(
        low <= obs.vaf <= high or obs.vaf >= params.germline_min_vaf for obs in deep
    )


# --------------------------------------------------------------------------- all of it


@dataclass(frozen=True, slots=True)
class LongitudinalReport:
    """Every serial quantity of one patient, with the parameters that produced them."""

    params: LongitudinalParams
    tumour_fractions: tuple[TumourFraction, ...]
    relative_ccfs: tuple[RelativeCCF, ...]
    math_scores: tuple[MathScore, ...]
    responses: tuple[LineResponse, ...]


class RccfCache(Protocol):
    """Where a caller keeps the rCCFs of draws already computed (a dict serves)."""

    def get(self, key: str, /) -> tuple[RelativeCCF, ...] | None: ...

    def __setitem__(self, key: str, value: tuple[RelativeCCF, ...], /) -> None: ...


def draw_relative_ccfs(
    series: Sequence[LocusSeries],
    params: LongitudinalParams,
    seed: Sequence[int],
    fractions: Sequence[TumourFraction],
    cache: RccfCache | None = None,
) -> list[RelativeCCF]:
    """``relative_ccfs`` draw by draw, each draw's Monte Carlo seeded by (seed, crc32 of its
    sample id): a draw's rCCFs depend on its own reads only, not on the other draws, so a
    caller may keep them (``cache``, keyed by a digest of exactly what they depend on) and a
    new draw costs one Monte Carlo, not the whole history again."""
    trunk = {locus.key for locus in truncal_series(series)}
    flagged = next((locus for locus in series if locus.truncal), None)
    by_draw = observations_by_draw(series)
    result: list[RelativeCCF] = []
    for draw, fraction in zip(draws_of(series), fractions, strict=True):
        pairs = by_draw[draw.sample_id]
        alone = [replace(locus, observations=(obs,)) for locus, obs in pairs]
        if flagged is not None and not any(locus.truncal for locus, _ in pairs):
            # Keep the series' truncal set flagged (here: empty for this draw), or the one-draw
            # series would fall back to "every locus is truncal".
            alone.append(replace(flagged, observations=()))
        draw_seed = [*seed, zlib.crc32(draw.sample_id.encode())]
        key = hashlib.sha256(
            repr(
                (
                    params,
                    draw_seed,
                    draw,
                    fraction.detected,
                    [
                        (
                            locus.key,
                            locus.key in trunk,
                            locus.germline_suspected,
                            obs.alt_reads,
                            obs.depth,
                        )
                        for locus, obs in pairs
                    ],
                )
            ).encode()
        ).hexdigest()
        hit = cache.get(key) if cache is not None else None
        if hit is None:
            rng = np.random.default_rng(draw_seed)
            hit = tuple(relative_ccfs(alone, params, rng, [fraction]))
            if cache is not None:
                cache[key] = hit
        result.extend(hit)
    return result


def longitudinal_report(
    series: Sequence[LocusSeries],
    lines: Sequence[TherapyLine],
    params: LongitudinalParams,
    seed: Sequence[int],
    *,
    fractions: Sequence[TumourFraction] | None = None,
    emergences: Sequence[tuple[dt.date, str, str]] = (),
    cache: RccfCache | None = None,
) -> LongitudinalReport:
    """Tumour fraction, rCCF, MATH and molecular response of one patient in one call.

    ``fractions`` replaces the draws' tumour fractions (the service passes the values its MRD
    calls issued, so that one draw has one tumour fraction everywhere); ``emergences`` are the
    resistance variants that emerged (``molecular_responses``); ``cache`` keeps each draw's
    rCCFs (``draw_relative_ccfs``)."""
    fractions = tuple(fractions if fractions is not None else tumour_fractions(series, params))
    return LongitudinalReport(
        params=params,
        tumour_fractions=fractions,
        relative_ccfs=tuple(draw_relative_ccfs(series, params, seed, fractions, cache)),
        math_scores=tuple(math_scores(series, params)),
        responses=tuple(molecular_responses(series, lines, params, fractions, emergences)),
    )
