"""Per-locus background error model for MRD calling: empirical-Bayes beta-binomial.

The background error rate ``e_i`` of a tracked substitution is the probability that a molecule
without the mutation is read as mutant (PCR/sequencing error surviving UMI correction, low-level
artefacts). Following deepSNV / shearwater (Gerstung et al., Nat Commun 2012; Bioinformatics
2014) it is modelled as a Beta-distributed rate, so counts in a control sample are beta-binomial:

    e_i ~ Beta(alpha_0, beta_0)           prior shared across loci (per substitution class)
    M_ij | e_i ~ Binomial(R_ij, e_i)      control j (matched normal, panel-of-normal plasma,
                                          cross-patient control) at locus i

The prior is estimated once across loci by marginal maximum likelihood (method-of-moments
start), which borrows strength: a locus with few or no controls shrinks to the prior, a locus
with many controls is dominated by its own counts. Each locus gets the conjugate posterior
``Beta(alpha_0 + sum M_ij, beta_0 + sum (R_ij - M_ij))``, averaged over the uncertainty of the
fitted hyperparameters (3 x 3 Gauss-Hermite nodes of a Laplace approximation, moment-matched
back to one Beta; it matters only when controls are sparse). The MRD caller uses the posterior
mean in the likelihood and the whole posterior in the calibration (``services.genomics.mrd``),
so the uncertainty of a rate estimated from a few thousand control molecules is carried, not
plugged in.

Assumption worth knowing: all controls of a locus share one rate (no extra between-sample
over-dispersion at a locus). Loci whose controls disagree wildly are the ones the blacklist
removes: pooled background AF > 0.01, or mutated (>= 2 alt reads) in > 10 % of controls
(INVAR2 ``LOCUS_NOISE`` defaults, Wan et al., Sci Transl Med 2020).

The posterior mean is floored (default 1e-5, right for UMI-collapsed data; use 1e-4 for raw
reads): a rate of zero would make a single mutant read infinitely significant.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy import optimize, special

from services.errors import InvalidInput

SUBSTITUTION_CLASSES = ("C>A", "C>G", "C>T", "T>A", "T>C", "T>G")
_COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A"}


@dataclass(frozen=True, slots=True)
class BackgroundCounts:
    """Alt reads and depth (unique molecules) of one control sample at one locus."""

    alt_reads: int
    depth: int

    def __post_init__(self) -> None:
        if self.depth < 0 or self.alt_reads < 0 or self.alt_reads > self.depth:
            raise InvalidInput(
                f"background counts need 0 <= alt_reads <= depth, got {self.alt_reads}/{self.depth}"
            )


@dataclass(frozen=True, slots=True)
class BackgroundParams:
    """Parameters of the background model; ``version`` is stored with every LocusBackground.

    ``floor``: smallest allowed posterior mean (1e-5 for UMI-collapsed molecules, 1e-4 for raw
    reads; domain-anchors §4.2). ``blacklist_mean_af`` and ``blacklist_mutated_fraction`` are the
    INVAR2 locus-noise defaults; a control counts as "mutated" with >= ``mutated_min_alt_reads``.
    ``default_prior_mean`` / ``default_prior_pseudo_depth`` define the prior used when fewer than
    ``min_loci_for_prior`` clean loci have controls (nothing to borrow from): Beta with mean
    1e-4 and alpha + beta = 1e4, i.e. worth one control of 10,000 molecules.
    """

    version: str = "background-1"
    floor: float = 1e-5
    blacklist_mean_af: float = 0.01
    blacklist_mutated_fraction: float = 0.10
    mutated_min_alt_reads: int = 2
    default_prior_mean: float = 1e-4
    default_prior_pseudo_depth: float = 1e4
    min_loci_for_prior: int = 20
    min_loci_for_class_prior: int = 50
    min_prior_concentration: float = 2.0
    max_prior_concentration: float = 1e9

    def __post_init__(self) -> None:
        if not 0.0 < self.floor < 0.5:
            raise InvalidInput(f"background floor must be in (0, 0.5), got {self.floor}")
        if not 0.0 < self.default_prior_mean < 0.5 or self.default_prior_pseudo_depth <= 0:
            raise InvalidInput("default prior needs a mean in (0, 0.5) and a positive pseudo-depth")
        if not 0 < self.min_prior_concentration < self.max_prior_concentration:
            raise InvalidInput("prior concentration bounds must satisfy 0 < min < max")


@dataclass(frozen=True, slots=True)
class BetaPrior:
    """A Beta(alpha, beta) prior on a per-locus error rate, with where it came from.

    ``nodes`` are (weight, alpha, beta) quadrature points over the uncertainty of the fitted
    hyperparameters (empty for a prior given rather than fitted).
    """

    alpha: float
    beta: float
    source: str
    n_loci: int
    nodes: tuple[tuple[float, float, float], ...] = ()

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


@dataclass(frozen=True, slots=True)
class LocusBackground:
    """Posterior Beta(alpha, beta) of one locus' error rate, and whether the locus is usable.

    ``mean`` = alpha / (alpha + beta) (after the floor); ``alt_reads``/``depth`` are the pooled
    control counts behind it; ``prior_source`` names the prior it was shrunk to; ``reason`` says
    why a blacklisted locus is blacklisted (empty otherwise).
    """

    key: str
    alpha: float
    beta: float
    mean: float
    n_controls: int
    alt_reads: int
    depth: int
    blacklisted: bool
    reason: str
    prior_source: str
    floored: bool
    version: str

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.beta > 0 and math.isfinite(self.alpha + self.beta)):
            raise InvalidInput(f"{self.key}: Beta parameters must be positive and finite")
        expected = self.alpha / (self.alpha + self.beta)
        if not math.isclose(self.mean, expected, rel_tol=1e-9):
            raise InvalidInput(f"{self.key}: mean {self.mean} != alpha/(alpha+beta) {expected}")


def substitution_class(ref: str, alt: str) -> str:
    """Pyrimidine-normalised SNV class ('G>A' is 'C>T'), one of SUBSTITUTION_CLASSES."""
    ref, alt = ref.upper(), alt.upper()
    if ref not in _COMPLEMENT or alt not in _COMPLEMENT or ref == alt:
        raise InvalidInput(f"not a single-nucleotide substitution: {ref}>{alt}")
    if ref in "GA":
        ref, alt = _COMPLEMENT[ref], _COMPLEMENT[alt]
    return f"{ref}>{alt}"


def default_prior(params: BackgroundParams) -> BetaPrior:
    """The prior used when there is nothing to borrow strength from."""
    kappa = params.default_prior_pseudo_depth
    mean = params.default_prior_mean
    return BetaPrior(alpha=mean * kappa, beta=(1.0 - mean) * kappa, source="default", n_loci=0)


def fit_beta_prior(
    alt_totals: npt.ArrayLike,
    depth_totals: npt.ArrayLike,
    params: BackgroundParams,
    *,
    source: str = "global",
) -> BetaPrior:
    """Marginal-ML Beta prior across loci from pooled control counts (one entry per locus).

    Maximises sum_i log B(a + S_i, b + T_i - S_i) - log B(a, b) over the mean (logit scale)
    and the concentration a + b (log scale, bounded by the params), starting from the method
    of moments. Falls back to ``default_prior`` with fewer than ``min_loci_for_prior`` loci.
    """
    alt = np.asarray(alt_totals, dtype=np.float64)
    depth = np.asarray(depth_totals, dtype=np.float64)
    keep = depth > 0
    alt, depth = alt[keep], depth[keep]
    if alt.size < params.min_loci_for_prior:
        return default_prior(params)
    ref = depth - alt
    lo_k = math.log(params.min_prior_concentration)
    hi_k = math.log(params.max_prior_concentration)
    mean0 = float(np.clip(alt.sum() / depth.sum(), 1e-9, 0.5))
    rates = alt / depth
    between = float(np.var(rates) - np.mean(mean0 * (1.0 - mean0) / depth))
    kappa0 = (
        mean0 * (1.0 - mean0) / between - 1.0 if between > 0 else params.max_prior_concentration
    )
    start = np.array([special.logit(mean0), float(np.clip(math.log(max(kappa0, 1.0)), lo_k, hi_k))])

    def negative_log_marginal(theta: npt.NDArray[np.float64]) -> float:
        mean = float(special.expit(theta[0]))
        kappa = math.exp(float(theta[1]))
        a, b = mean * kappa, (1.0 - mean) * kappa
        ll = special.betaln(a + alt, b + ref) - special.betaln(a, b)
        return -float(ll.sum())

    bounds = [(float(special.logit(1e-9)), float(special.logit(0.5))), (lo_k, hi_k)]
    result = optimize.minimize(negative_log_marginal, start, method="L-BFGS-B", bounds=bounds)
    theta = result.x if np.all(np.isfinite(result.x)) else start
    mean = float(special.expit(theta[0]))
    kappa = math.exp(float(theta[1]))
    return BetaPrior(
        alpha=mean * kappa,
        beta=(1.0 - mean) * kappa,
        source=source,
        n_loci=alt.size,
        nodes=_hyperparameter_nodes(negative_log_marginal, theta, bounds),
    )


def _hyperparameter_nodes(
    negative_log_marginal: Callable[[npt.NDArray[np.float64]], float],
    theta: npt.NDArray[np.float64],
    bounds: Sequence[tuple[float, float]],
) -> tuple[tuple[float, float, float], ...]:
    """3 x 3 Gauss-Hermite nodes over a Laplace approximation of the hyperparameters.

    The posterior of (logit mean, log concentration) is approximated by a normal centred on
    the marginal-ML estimate with the inverse Hessian as covariance (finite differences).
    """
    step = 1e-3
    hessian = np.empty((2, 2))
    for i in range(2):
        for j in range(2):
            shifts = []
            for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                point = theta.copy()
                point[i] += si * step
                point[j] += sj * step
                shifts.append(si * sj * negative_log_marginal(point))
            hessian[i, j] = sum(shifts) / (4 * step * step)
    try:
        covariance = np.linalg.inv(hessian)
        root = np.linalg.cholesky(covariance)
    except np.linalg.LinAlgError:
        return ()
    points, weights = np.polynomial.hermite_e.hermegauss(3)
    weights = weights / weights.sum()
    nodes = []
    for u, wu in zip(points, weights, strict=True):
        for v, wv in zip(points, weights, strict=True):
            node = theta + root @ np.array([u, v])
            node = np.clip(node, [b[0] for b in bounds], [b[1] for b in bounds])
            m = float(special.expit(node[0]))
            k = math.exp(float(node[1]))
            nodes.append((float(wu * wv), m * k, (1.0 - m) * k))
    return tuple(nodes)


def _floored(alpha: float, beta: float, floor: float) -> tuple[float, float, bool]:
    """Raise the mean to ``floor`` keeping the concentration (the weight of evidence) fixed."""
    kappa = alpha + beta
    if alpha / kappa >= floor:
        return alpha, beta, False
    return floor * kappa, (1.0 - floor) * kappa, True


def _pooled_af(counts: Sequence[BackgroundCounts]) -> float:
    depth = sum(c.depth for c in counts)
    return sum(c.alt_reads for c in counts) / depth if depth else 0.0


def _blacklist_reason(counts: Sequence[BackgroundCounts], params: BackgroundParams) -> str:
    pooled = _pooled_af(counts)
    if pooled > params.blacklist_mean_af:
        return f"background_af {pooled:.4g} > {params.blacklist_mean_af:g}"
    mutated = sum(1 for c in counts if c.alt_reads >= params.mutated_min_alt_reads)
    if counts and mutated / len(counts) > params.blacklist_mutated_fraction:
        return (
            f"mutated (>= {params.mutated_min_alt_reads} alt reads) in {mutated}/{len(counts)} "
            f"controls > {params.blacklist_mutated_fraction:.0%}"
        )
    return ""


def _posterior(
    key: str,
    counts: Sequence[BackgroundCounts],
    prior: BetaPrior,
    blacklist_reason: str,
    params: BackgroundParams,
) -> LocusBackground:
    alt = sum(c.alt_reads for c in counts)
    depth = sum(c.depth for c in counts)
    alpha, beta = prior.alpha + alt, prior.beta + depth - alt
    if prior.nodes:
        # The mixture over the hyperparameter nodes, moment-matched by one Beta: same mean
        # and variance of e, hence the same mean and variance of every predictive count.
        w = np.array([n[0] for n in prior.nodes])
        a = np.array([n[1] for n in prior.nodes]) + alt
        b = np.array([n[2] for n in prior.nodes]) + depth - alt
        means = a / (a + b)
        second = float(np.sum(w * (means * (1 - means) / (a + b + 1) + means**2)))
        mean = float(np.sum(w * means))
        variance = second - mean * mean
        if variance > 0:
            kappa = mean * (1 - mean) / variance - 1.0
            alpha, beta = mean * kappa, (1 - mean) * kappa
    alpha, beta, floored = _floored(alpha, beta, params.floor)
    return LocusBackground(
        key=key,
        alpha=alpha,
        beta=beta,
        mean=alpha / (alpha + beta),
        n_controls=len(counts),
        alt_reads=alt,
        depth=depth,
        blacklisted=bool(blacklist_reason),
        reason=blacklist_reason,
        prior_source=prior.source,
        floored=floored,
        version=params.version,
    )


def fit_background(
    observations_by_locus: Mapping[str, Sequence[BackgroundCounts]],
    params: BackgroundParams,
    *,
    substitution_class_by_locus: Mapping[str, str] | None = None,
) -> dict[str, LocusBackground]:
    """Empirical-Bayes beta-binomial background for every locus (deepSNV/shearwater style).

    1. Blacklist loci by the INVAR2 locus-noise rules (reason recorded).
    2. Fit a global Beta prior by marginal ML over the loci with controls, less the gross
       artefacts (background AF > 0.01); when ``substitution_class_by_locus`` is given (e.g.
       from ``substitution_class``), fit one prior per class that has >=
       ``min_loci_for_class_prior`` such loci (C>T deamination noise differs from the rest)
       and use the global prior for the other classes.
    3. Each locus: posterior = prior + its pooled counts, mean floored. A locus with no
       controls gets its prior (the default prior if no prior could be fitted).
    """
    reasons = {key: _blacklist_reason(obs, params) for key, obs in observations_by_locus.items()}
    # The prior is fitted on every locus with controls except gross ones (background AF > 0.01:
    # germline or mapping artefacts, not part of the error-rate population). Loci blacklisted
    # for recurrent mutation stay in the fit: dropping them would cut the high tail of the
    # population and make the prior over-confident for the loci that narrowly escaped.
    clean = [
        key
        for key, obs in observations_by_locus.items()
        if obs and _pooled_af(obs) <= params.blacklist_mean_af
    ]

    def prior_over(keys: Sequence[str], source: str) -> BetaPrior:
        alt = [sum(c.alt_reads for c in observations_by_locus[k]) for k in keys]
        depth = [sum(c.depth for c in observations_by_locus[k]) for k in keys]
        return fit_beta_prior(alt, depth, params, source=source)

    global_prior = prior_over(clean, "global")
    class_priors: dict[str, BetaPrior] = {}
    if substitution_class_by_locus is not None:
        by_class: dict[str, list[str]] = {}
        for key in clean:
            cls = substitution_class_by_locus.get(key)
            if cls is not None:
                by_class.setdefault(cls, []).append(key)
        for cls, keys in sorted(by_class.items()):
            if len(keys) >= params.min_loci_for_class_prior:
                class_priors[cls] = prior_over(keys, f"class {cls}")

    result: dict[str, LocusBackground] = {}
    for key, obs in observations_by_locus.items():
        cls = substitution_class_by_locus.get(key) if substitution_class_by_locus else None
        prior = class_priors.get(cls, global_prior) if cls is not None else global_prior
        result[key] = _posterior(key, obs, prior, reasons[key], params)
    return result


def panel_of_normals(
    tables: Sequence[Mapping[str, BackgroundCounts]],
    params: BackgroundParams,
    *,
    loci: Iterable[str] = (),
    substitution_class_by_locus: Mapping[str, str] | None = None,
) -> dict[str, LocusBackground]:
    """Per-locus background from normal-plasma evidence tables (a panel of normals).

    Each table is one control sample (locus key -> its counts there): healthy-donor plasma run
    on the same assay, or another patient's plasma at loci that patient does not track. A locus
    missing from a table is missing evidence, not zero reads. The tables are pooled per locus
    and go through ``fit_background``, exactly as cross-patient controls do, so the prior is
    fitted across *every* locus of the panel (borrowing strength across the whole site panel,
    not just one patient's 16 loci); ``loci`` adds keys that must be in the result even
    without controls (they get the fitted prior).
    """
    observations: dict[str, list[BackgroundCounts]] = {key: [] for key in loci}
    for table in tables:
        for key, counts in table.items():
            observations.setdefault(key, []).append(counts)
    return fit_background(
        observations, params, substitution_class_by_locus=substitution_class_by_locus
    )


def prior_background(key: str, prior: BetaPrior, params: BackgroundParams) -> LocusBackground:
    """Background of a locus with no controls at all: its prior, floored."""
    return _posterior(key, (), prior, "", params)


def update_with_negative_draws(
    backgrounds: Mapping[str, LocusBackground],
    negative_draws: Mapping[str, Sequence[BackgroundCounts]],
    params: BackgroundParams,
) -> dict[str, LocusBackground]:
    """Add the patient's own earlier NEGATIVE draws as controls at the patient's tracked loci.

    Conjugate update: alpha += alt reads, beta += ref reads, then the floor again; blacklist
    status is not changed (it is decided on independent controls). Bias caveat, both ways:
    a draw called NEGATIVE may still carry ctDNA below the LoD, whose mutant reads then inflate
    the background and cost sensitivity later (conservative); and selecting draws *because* they
    were negative favours draws with few mutant reads, which biases the rate down slightly
    (anti-conservative). Use only draws called NEGATIVE with adequate informative reads, long
    enough before the draw being called, and never the draw being called itself.
    """
    updated = dict(backgrounds)
    for key, draws in negative_draws.items():
        if key not in backgrounds:
            raise InvalidInput(f"negative draw counts for unknown locus {key}")
        base = backgrounds[key]
        alt = sum(c.alt_reads for c in draws)
        depth = sum(c.depth for c in draws)
        alpha, beta, floored = _floored(base.alpha + alt, base.beta + depth - alt, params.floor)
        updated[key] = replace(
            base,
            alpha=alpha,
            beta=beta,
            mean=alpha / (alpha + beta),
            n_controls=base.n_controls + len(draws),
            alt_reads=base.alt_reads + alt,
            depth=base.depth + depth,
            floored=floored,
            version=params.version,
        )
    return updated
