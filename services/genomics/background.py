"""Per-locus background error model for MRD calling: hierarchical, over-dispersed, empirical Bayes.

The background error rate of a tracked allele is the probability that a molecule without the
mutation is read as mutant (PCR and sequencing errors surviving UMI correction, oxidation,
deamination). Real assays are noisier than a binomial with a fixed rate per locus: the rate of
one locus moves from draw to draw (library preparation, oxidation, batch) and from lab to lab.
The model, one per assay of a site (an "assay model"), is

    mu_i  ~ Beta(m_c kappa_c, (1 - m_c) kappa_c)    mean error of locus i; c = its substitution
                                                   class (C>T deamination differs from the rest)
    e_ij  = mu_i exp(sigma Z_ij - sigma^2 / 2)       rate of locus i in draw j, Z ~ N(0, 1): the
                                                   draw-to-draw variation, mean kept at mu_i
    M_ij ~ Poisson(R_ij e_ij)                        mutant molecules of a control draw j
    with probability pi a control row instead carries a real mutation (clonal haematopoiesis,
    another patient's tumour): M_ij from a VAF log-uniform on [1e-3, 1]

(Gerstung et al., Nat Commun 2012 and Bioinformatics 2014, deepSNV/shearwater: beta-binomial
background with shrinkage across loci; Wan et al., Sci Transl Med 2020, INVAR: errors learnt
from controls, loci blacklisted by their noise). The draw-to-draw variation is lognormal, as
reported error-rate variation between libraries is, and because a lognormal mixture has a
heavier tail than a beta of the same variance: a caller calibrated on it errs conservative.

The hyperparameters (m_c, kappa_c per class, sigma, pi) are fitted by marginal maximum
likelihood over every locus with controls of the assay: each locus' mean is integrated out on
a log-spaced grid of rates from the floor to ``max_rate``, the lognormal factor by
Gauss-Hermite quadrature. The controls are every independent observation of a locus without
the patient's tumour: panel-of-normal plasmas, matched normals (each counted once per patient),
other patients' draws at loci they do not track and, weighted by the posterior probability that
they carry no ctDNA, the site's plasma draws at their own tracked loci (so sigma is learnt even
without a panel of normals: each patient's serial draws repeat its loci). A row that carries a
real mutation is explained by the contamination component, not trimmed by a VAF cut, so the
high tail of the error distribution, which is what reveals sigma, stays in the fit.

Each locus then has a posterior over its mean rate (the class prior times the likelihood of its
own controls, and later of the patient's own NEGATIVE draws), and the posterior predictive
count of a new draw mixes, over that posterior and the lognormal factor, binomial counts: the
MRD caller scores with its mean and calibrates on the whole distribution
(``services.genomics.mrd``). The rate grid starts at ``floor``: a rate of zero would make one
mutant read infinitely significant (1e-5 suits UMI-collapsed molecules; 1e-4 raw reads).

Too little background is not a negative: with fewer than ``min_loci_for_model`` loci (or
``min_rows_for_model`` rows) of controls in an assay the model is not fitted
(``fit_assay_model`` returns None) and the backgrounds are marked unknown; the MRD caller then
says INDETERMINATE, never a call resting on a guessed prior.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy import optimize, sparse, special

from services.errors import InvalidInput

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SUBSTITUTION_CLASSES = ("C>A", "C>G", "C>T", "T>A", "T>C", "T>G")
INDEL_CLASS = "indel"
GLOBAL = "global"
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
class DrawLocus:
    """One tracked locus of a plasma draw used to learn the assay model: its counts and g, the
    probability that a tumour-derived molecule reads mutant (see ``services.genomics.mrd``)."""

    key: str
    alt_reads: int
    depth: int
    g: float

    def __post_init__(self) -> None:
        if self.depth < 0 or self.alt_reads < 0 or self.alt_reads > self.depth:
            raise InvalidInput(f"{self.key}: need 0 <= alt_reads <= depth")
        if not 0.0 < self.g <= 1.0:
            raise InvalidInput(f"{self.key}: g must be in (0, 1], got {self.g}")


@dataclass(frozen=True, slots=True)
class BackgroundParams:
    """Parameters of the background model; ``version`` is stored with every call.

    ``floor``/``max_rate``/``grid_points``: the log-spaced grid of locus mean rates.
    ``hermite_nodes``: quadrature of the lognormal draw-to-draw factor. ``sigma_grid`` and
    ``contamination_grid``: the values of sigma and pi the marginal likelihood is profiled over
    (the largest sigma within ``sigma_margin`` log-likelihood units of the best is kept: the
    data rarely pin sigma down, and under-estimating it is what gives false positives).
    ``contaminant_vaf``: the VAF range of a control row that carries a real mutation.
    ``blacklist_*``: INVAR2 locus-noise rules (pooled background AF > 1 %, or more than 10 %
    of at least ``blacklist_min_controls`` controls explained as mutated).
    ``min_loci_for_model`` / ``min_rows_for_model``: with fewer loci with any row, or fewer
    rows, an assay's background is unknown (one patient's 16 loci with a few panel-of-normal
    plasmas are enough; one matched normal alone is not).
    ``min_loci_for_class_prior``: a substitution class gets its own prior from this many loci.
    ``max_fit_rows``: rows used to fit the hyperparameters (whole loci, chosen by a hash of the
    key, so the choice is the same in every process). ``draw_null_prior`` and
    ``fraction_grid``: the prior that a site's plasma draw carries no ctDNA, and the ctDNA
    fractions averaged over in its Bayes factor, when draws are weighted into the fit;
    ``draw_weight_rounds`` rounds of reweighting and refitting.
    """

    version: str = "background-2"
    floor: float = 1e-5
    max_rate: float = 0.05
    grid_points: int = 72
    hermite_nodes: int = 10
    sigma_grid: tuple[float, ...] = (0.0, 0.15, 0.3, 0.45, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0)
    sigma_margin: float = 1.0
    contamination_grid: tuple[float, ...] = (0.002, 0.01, 0.05)
    contaminant_vaf: tuple[float, float] = (1e-3, 1.0)
    blacklist_mean_af: float = 0.01
    blacklist_mutated_fraction: float = 0.10
    blacklist_min_controls: int = 10
    min_loci_for_model: int = 15
    min_rows_for_model: int = 40
    min_loci_for_class_prior: int = 50
    min_prior_concentration: float = 2.0
    max_prior_concentration: float = 1e9
    max_fit_rows: int = 40_000
    draw_null_prior: float = 0.8
    draw_weight_rounds: int = 2
    fraction_grid: tuple[float, float, int] = (1e-5, 0.3, 32)

    def __post_init__(self) -> None:
        if not 0.0 < self.floor < self.max_rate < 0.5:
            raise InvalidInput(
                f"need 0 < floor < max_rate < 0.5, got {self.floor} and {self.max_rate}"
            )
        if self.grid_points < 8 or self.hermite_nodes < 1:
            raise InvalidInput("the rate grid needs >= 8 points and >= 1 quadrature node")
        if not self.sigma_grid or min(self.sigma_grid) < 0:
            raise InvalidInput("sigma_grid must hold non-negative values")
        if not self.contamination_grid or not all(0 < c < 0.5 for c in self.contamination_grid):
            raise InvalidInput("contamination_grid values must be in (0, 0.5)")
        if not 0 < self.min_prior_concentration < self.max_prior_concentration:
            raise InvalidInput("prior concentration bounds must satisfy 0 < min < max")
        if not 0.0 < self.draw_null_prior < 1.0:
            raise InvalidInput("draw_null_prior must be in (0, 1)")


@dataclass(frozen=True, slots=True)
class ClassPrior:
    """Beta prior of the locus mean rates of one substitution class (or all loci)."""

    mean: float
    concentration: float
    n_loci: int
    source: str

    @property
    def alpha(self) -> float:
        return self.mean * self.concentration

    @property
    def beta(self) -> float:
        return (1.0 - self.mean) * self.concentration


@dataclass(frozen=True, slots=True)
class AssayModel:
    """The fitted hyperparameters of one assay: class priors, draw-to-draw sigma, contamination.

    ``priors`` maps a class (or ``"global"``) to its prior; ``n_loci``/``n_rows``/``n_draws``
    are what the fit saw (draws: plasma draws weighted in); ``digest`` identifies the model in
    every call that used it.
    """

    version: str
    sigma: float
    contamination: float
    priors: tuple[tuple[str, ClassPrior], ...]
    n_loci: int
    n_rows: int
    n_draws: int
    log_likelihood: float

    def prior_for(self, cls: str | None) -> ClassPrior:
        table = dict(self.priors)
        return table.get(cls or GLOBAL, table[GLOBAL])

    @property
    def digest(self) -> str:
        return hashlib.sha256(repr(self.to_json()).encode()).hexdigest()[:16]

    def to_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "sigma": self.sigma,
            "contamination": self.contamination,
            "priors": {
                cls: {
                    "mean": p.mean,
                    "concentration": p.concentration,
                    "n_loci": p.n_loci,
                    "source": p.source,
                }
                for cls, p in self.priors
            },
            "n_loci": self.n_loci,
            "n_rows": self.n_rows,
            "n_draws": self.n_draws,
            "log_likelihood": self.log_likelihood,
        }

    @classmethod
    def from_json(cls, body: Mapping[str, object]) -> AssayModel:
        priors = body["priors"]
        assert isinstance(priors, Mapping)
        return cls(
            version=str(body["version"]),
            sigma=float(body["sigma"]),  # type: ignore[arg-type]
            contamination=float(body["contamination"]),  # type: ignore[arg-type]
            priors=tuple(
                (
                    str(name),
                    ClassPrior(
                        mean=float(p["mean"]),
                        concentration=float(p["concentration"]),
                        n_loci=int(p["n_loci"]),
                        source=str(p["source"]),
                    ),
                )
                for name, p in sorted(priors.items())
            ),
            n_loci=int(body["n_loci"]),  # type: ignore[call-overload]
            n_rows=int(body["n_rows"]),  # type: ignore[call-overload]
            n_draws=int(body["n_draws"]),  # type: ignore[call-overload]
            log_likelihood=float(body["log_likelihood"]),  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True, eq=False)
class LocusBackground:
    """The error model of one locus: a posterior over its mean rate (``log_weights`` on the
    rate grid of ``BackgroundParams``), the assay's sigma and contamination, and whether the
    locus is usable.

    ``mean`` is the predictive mean error rate (the draw-to-draw factor has mean 1);
    ``alt_reads``/``depth``/``n_controls`` are the control counts behind the posterior;
    ``known`` is False when the assay had too little background to fit a model (the MRD
    caller then refuses to call); ``reason`` says why a blacklisted locus is blacklisted.
    """

    key: str
    mean: float
    n_controls: int
    alt_reads: int
    depth: int
    blacklisted: bool
    reason: str
    prior_source: str
    version: str
    sigma: float
    contamination: float
    known: bool
    log_weights: FloatArray = field(repr=False)
    grid: FloatArray = field(repr=False)
    hermite_nodes: int = 10

    def __post_init__(self) -> None:
        if not 0.0 < self.mean < 0.5 or not math.isfinite(self.mean):
            raise InvalidInput(f"{self.key}: background mean must be in (0, 0.5), got {self.mean}")

    @property
    def floored(self) -> bool:
        """True when (nearly) all posterior mass sits on the floor of the grid."""
        return bool(np.exp(self.log_weights[0]) > 0.5)

    def fingerprint(self) -> tuple[object, ...]:
        """What a call depends on, exactly (for caches and reproducibility checks)."""
        digest = hashlib.sha256(np.round(self.log_weights, 12).tobytes()).hexdigest()[:16]
        return (self.key, self.blacklisted, self.known, self.sigma, self.contamination, digest)


# --------------------------------------------------------------------------- classes and grids


def substitution_class(ref: str, alt: str) -> str:
    """Pyrimidine-normalised SNV class ('G>A' is 'C>T'), one of SUBSTITUTION_CLASSES."""
    ref, alt = ref.upper(), alt.upper()
    if ref not in _COMPLEMENT or alt not in _COMPLEMENT or ref == alt:
        raise InvalidInput(f"not a single-nucleotide substitution: {ref}>{alt}")
    if ref in "GA":
        ref, alt = _COMPLEMENT[ref], _COMPLEMENT[alt]
    return f"{ref}>{alt}"


def locus_class(key: str) -> str:
    """The substitution class of a locus key (``chr3:179234297:A>G``), or ``indel``."""
    alleles = key.rsplit(":", 1)[-1]
    ref, _, alt = alleles.partition(">")
    if len(ref) == 1 and len(alt) == 1 and ref in _COMPLEMENT and alt in _COMPLEMENT:
        return substitution_class(ref, alt)
    return INDEL_CLASS


@lru_cache(maxsize=8)
def rate_grid(params: BackgroundParams) -> FloatArray:
    """Log-spaced mean rates from the floor to ``max_rate``."""
    return np.geomspace(params.floor, params.max_rate, params.grid_points)


@lru_cache(maxsize=64)
def lognormal_factors(sigma: float, nodes: int) -> tuple[FloatArray, FloatArray]:
    """Draw-to-draw factors exp(sigma z - sigma^2/2) and weights of Gauss-Hermite nodes."""
    if sigma == 0.0:
        return np.ones(1), np.ones(1)
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    return np.exp(sigma * z - sigma * sigma / 2.0), w / w.sum()


def _prior_log_weights(prior: ClassPrior, grid: FloatArray) -> FloatArray:
    """Log probability of each grid point under Beta(prior): the Beta mass of the bin around
    it in log space (the first bin takes everything below, the last everything above)."""
    edges = np.sqrt(grid[1:] * grid[:-1])
    cdf = special.betainc(prior.alpha, prior.beta, edges)
    mass = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    result: FloatArray = np.log(np.maximum(mass, 1e-300))
    return result


def _contaminant_log_pmf(
    alt: FloatArray, depth: FloatArray, params: BackgroundParams
) -> FloatArray:
    """log P(M | R) for a row carrying a real mutation at a VAF log-uniform on the range."""
    low, high = params.contaminant_vaf
    lam_low, lam_high = depth * low, depth * high
    span = math.log(high / low)
    safe = np.maximum(alt, 1.0)
    with np.errstate(divide="ignore"):
        positive = special.gammaincc(safe, lam_low) - special.gammaincc(safe, lam_high)
        zero = special.exp1(np.maximum(lam_low, 1e-300)) - special.exp1(
            np.maximum(lam_high, 1e-300)
        )
    mass = np.where(alt > 0, positive / safe, zero)
    result: FloatArray = np.log(np.maximum(mass / span, 1e-300))
    return result


_CHUNK = 4096


def _logsumexp_last(values: FloatArray, log_weights: FloatArray | None = None) -> FloatArray:
    """log sum exp over the last axis (plus log weights), without scipy's per-call checks:
    this runs on every row of every fit."""
    if log_weights is not None:
        values = values + log_weights
    top = values.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    result: FloatArray = np.log(np.exp(values - top).sum(axis=-1)) + top[..., 0]
    return result


def _error_log_likelihood(
    alt: FloatArray, depth: FloatArray, sigma: float, params: BackgroundParams
) -> FloatArray:
    """(rows x grid) log P(M_r | R_r, mu_g) under the lognormal-Poisson error model (the
    Poisson is the binomial of small rates: rates stay below ``max_rate`` x the factors)."""
    grid = rate_grid(params)
    factors, weights = lognormal_factors(sigma, params.hermite_nodes)
    log_w = np.log(weights)
    rates = (grid[:, None] * factors[None, :]).ravel()  # (G*H)
    log_rates = np.log(rates)
    out = np.empty((alt.size, grid.size))
    for start in range(0, alt.size, _CHUNK):
        a = alt[start : start + _CHUNK, None]
        d = depth[start : start + _CHUNK, None]
        log_pois = (
            a * (np.log(d) + log_rates[None, :]) - d * rates[None, :] - special.gammaln(a + 1.0)
        )
        if factors.size == 1:
            out[start : start + _CHUNK] = log_pois
        else:
            out[start : start + _CHUNK] = _logsumexp_last(
                log_pois.reshape(a.shape[0], grid.size, factors.size), log_w
            )
    return out


def _mix_contaminant(
    error: FloatArray, contaminant: FloatArray, contamination: float
) -> FloatArray:
    """log[(1 - pi) P(M | error) + pi P(M | a real mutation)] per row and grid point."""
    mixed: FloatArray = np.logaddexp(
        error + math.log1p(-contamination), contaminant[:, None] + math.log(contamination)
    )
    return mixed


def _row_log_likelihood(
    alt: FloatArray,
    depth: FloatArray,
    sigma: float,
    contamination: float,
    params: BackgroundParams,
) -> FloatArray:
    """(rows x grid) log P(M_r | R_r, mu_g): the error model mixed with contamination."""
    return _mix_contaminant(
        _error_log_likelihood(alt, depth, sigma, params),
        _contaminant_log_pmf(alt, depth, params),
        contamination,
    )


# --------------------------------------------------------------------------- fitting the assay


@dataclass(frozen=True, slots=True)
class _Rows:
    """Rows of many loci for the fit, as a table of distinct (alt, depth bin) pairs and a
    sparse (loci x distinct) matrix of row weights: depths binned to 0.5 % change a row's
    likelihood by less than its rounding, and turn ~10^4-10^5 rows into ~10^3 to evaluate."""

    keys: tuple[str, ...]
    classes: tuple[str, ...]
    alt: FloatArray  # distinct pairs
    depth: FloatArray
    weights: sparse.csr_matrix  # loci x distinct pairs
    row_index: IntArray  # each input row's distinct pair
    row_locus: IntArray  # each input row's locus
    n_rows: int


_DEPTH_BIN = 0.005


def _collect(
    controls: Mapping[str, Sequence[BackgroundCounts]],
    extra: Mapping[str, Sequence[tuple[int, int, float]]],
    budget: int | None,
) -> _Rows:
    """The rows of every locus with any, each locus' rows contiguous (its controls, then its
    ``extra`` weighted rows); with a ``budget``, whole loci in an order fixed by a hash of their
    keys until it is spent."""
    keys = sorted({k for k, v in controls.items() if v} | {k for k, v in extra.items() if v})
    if budget is not None:
        by_hash = sorted(keys, key=lambda k: hashlib.sha256(k.encode()).digest())
        chosen: set[str] = set()
        used = 0
        for key in by_hash:
            size = len(controls.get(key, ())) + len(extra.get(key, ()))
            if used + size > budget and chosen:
                continue
            chosen.add(key)
            used += size
        keys = [k for k in keys if k in chosen]
    alt: list[int] = []
    depth: list[int] = []
    weight: list[float] = []
    locus: list[int] = []
    for i, key in enumerate(keys):
        for c in controls.get(key, ()):
            alt.append(c.alt_reads)
            depth.append(c.depth)
            weight.append(1.0)
            locus.append(i)
        for a, d, w in extra.get(key, ()):
            alt.append(a)
            depth.append(d)
            weight.append(w)
            locus.append(i)
    alt_array = np.array(alt, dtype=np.int64)
    depth_array = np.maximum(np.array(depth, dtype=np.float64), 1.0)
    depth_bin = np.rint(np.log(depth_array) / _DEPTH_BIN).astype(np.int64)
    pairs, index = np.unique(np.stack([alt_array, depth_bin], axis=1), axis=0, return_inverse=True)
    index = index.reshape(-1)
    locus_array = np.array(locus, dtype=np.int64)
    weights = sparse.csr_matrix(
        (np.array(weight), (locus_array, index)), shape=(len(keys), pairs.shape[0])
    )
    return _Rows(
        keys=tuple(keys),
        classes=tuple(locus_class(k) for k in keys),
        alt=pairs[:, 0].astype(np.float64),
        depth=np.exp(pairs[:, 1] * _DEPTH_BIN),
        weights=weights,
        row_index=index,
        row_locus=locus_array,
        n_rows=len(alt),
    )


def _locus_log_likelihood(rows: _Rows, pair_ll: FloatArray) -> FloatArray:
    """(loci x grid) sum of the weighted row log-likelihoods of each locus."""
    result: FloatArray = np.asarray(rows.weights @ pair_ll)
    return result


def _fit_prior(
    locus_ll: FloatArray,
    params: BackgroundParams,
    source: str,
    start: tuple[float, float] | None = None,
) -> tuple[ClassPrior, float]:
    """Marginal-ML Beta prior of the locus means given each locus' grid log-likelihood
    (warm-started from ``start``, the (mean, concentration) of a neighbouring fit)."""
    grid = rate_grid(params)
    lo_k = math.log(params.min_prior_concentration)
    hi_k = math.log(params.max_prior_concentration)
    bounds = [
        (float(special.logit(params.floor / 10)), float(special.logit(params.max_rate))),
        (lo_k, hi_k),
    ]
    shift = locus_ll.max(axis=1, keepdims=True)
    scaled = np.exp(locus_ll - shift)
    constant = float(shift.sum())

    def negative(theta: FloatArray) -> float:
        prior = ClassPrior(float(special.expit(theta[0])), math.exp(float(theta[1])), 0, source)
        weights = np.exp(_prior_log_weights(prior, grid))
        return -float(np.sum(np.log(np.maximum(scaled @ weights, 1e-300)))) - constant

    if start is None:
        # The rate that explains the loci best on average, and a few spreads.
        best_rate = float(np.exp(np.mean(np.log(grid[np.argmax(scaled, axis=1)]))))
        mean0 = float(np.clip(best_rate, params.floor, params.max_rate / 2))
        starts = [(mean0, kappa) for kappa in (2.0, 50.0, 1e4)]
    else:
        starts = [start]
    best: tuple[float, FloatArray] | None = None
    for mean0, kappa0 in starts:
        theta0 = np.array(
            [float(special.logit(mean0)), float(np.clip(math.log(kappa0), lo_k, hi_k))]
        )
        result = optimize.minimize(negative, theta0, method="L-BFGS-B", bounds=bounds)
        value = float(result.fun)
        if np.all(np.isfinite(result.x)) and (best is None or value < best[0]):
            best = (value, result.x)
    assert best is not None
    value, theta = best
    prior = ClassPrior(
        mean=float(special.expit(theta[0])),
        concentration=math.exp(float(theta[1])),
        n_loci=int(locus_ll.shape[0]),
        source=source,
    )
    return prior, -value


def _fit_hyperparameters(
    rows: _Rows, params: BackgroundParams, n_draws: int, near: float | None = None
) -> tuple[AssayModel, FloatArray]:
    """Profile the marginal likelihood over sigma (with the middle contamination), then over
    pi at the chosen sigma, with the global prior; then one prior per substitution class with
    enough loci. ``near``: a previous sigma; the grid is profiled up to one step above it.
    Returns the model and the (loci x grid) log-likelihood of each locus' rows under it."""
    contaminant = _contaminant_log_pmf(rows.alt, rows.depth, params)
    grid_sigmas = list(params.sigma_grid)
    if near is not None and near in grid_sigmas:
        # Reweighting the draws only takes signal out: sigma does not grow much after it.
        grid_sigmas = grid_sigmas[: grid_sigmas.index(near) + 2]
    middle = sorted(params.contamination_grid)[len(params.contamination_grid) // 2]
    profile: list[tuple[float, float, ClassPrior, FloatArray]] = []
    start: tuple[float, float] | None = None
    errors: dict[float, FloatArray] = {}
    for sigma in grid_sigmas:
        errors[sigma] = _error_log_likelihood(rows.alt, rows.depth, sigma, params)
        locus_ll = _locus_log_likelihood(rows, _mix_contaminant(errors[sigma], contaminant, middle))
        prior, ll = _fit_prior(locus_ll, params, GLOBAL, start)
        start = (prior.mean, prior.concentration)
        profile.append((ll, sigma, prior, locus_ll))
    best_ll = max(p[0] for p in profile)
    # The largest sigma the data cannot tell from the best (sigma is weakly identified, and an
    # under-estimate is what breaks specificity).
    sigma = max(p[1] for p in profile if p[0] >= best_ll - params.sigma_margin)
    ll, _, global_prior, locus_ll = next(p for p in profile if p[1] == sigma)
    pi = middle
    for other in params.contamination_grid:
        if other == middle:
            continue
        other_ll = _locus_log_likelihood(rows, _mix_contaminant(errors[sigma], contaminant, other))
        prior, value = _fit_prior(
            other_ll, params, GLOBAL, (global_prior.mean, global_prior.concentration)
        )
        if value > ll:
            ll, pi, global_prior, locus_ll = value, other, prior, other_ll
    priors: dict[str, ClassPrior] = {GLOBAL: global_prior}
    classes = np.array(rows.classes)
    for cls in sorted(set(rows.classes)):
        members = np.flatnonzero(classes == cls)
        if members.size >= params.min_loci_for_class_prior:
            priors[cls], _ = _fit_prior(
                locus_ll[members],
                params,
                f"class {cls}",
                (global_prior.mean, global_prior.concentration),
            )
    model = AssayModel(
        version=params.version,
        sigma=sigma,
        contamination=pi,
        priors=tuple(sorted(priors.items())),
        n_loci=len(rows.keys),
        n_rows=rows.n_rows,
        n_draws=n_draws,
        log_likelihood=ll,
    )
    return model, locus_ll


def _draw_null_weights(
    model: AssayModel,
    locus_ll: FloatArray,
    rows: _Rows,
    draws: Sequence[Sequence[DrawLocus]],
    params: BackgroundParams,
) -> list[float]:
    """P(no ctDNA | draw) of each draw in a two-component mixture: no ctDNA (prior
    ``draw_null_prior``), or ctDNA at a fraction log-uniform on ``fraction_grid``. Both
    components carry the error model itself, each locus' rate being lognormal around its
    posterior mean from its controls and the *other* draws, with spread sqrt(sigma^2 +
    posterior variance of its log mean): an isolated spike is then noise, as the model says it
    can be, and only reads coherent across a draw's loci (ctDNA) take its weight away. A
    weight from the bare INVAR likelihood would take noisy null draws out of the fit and
    shrink sigma round after round."""
    if not draws:
        return []
    grid = rate_grid(params)
    log_grid = np.log(grid)
    prior_rows = {cls: _prior_log_weights(model.prior_for(cls), grid) for cls in set(rows.classes)}
    log_post = locus_ll + np.stack([prior_rows[c] for c in rows.classes])
    position = {key: i for i, key in enumerate(rows.keys)}
    width = max(len(d) for d in draws)
    n = len(draws)
    alt = np.zeros((n, width))
    depth = np.zeros((n, width))
    g = np.full((n, width), 0.5)
    locus = np.zeros((n, width), dtype=np.int64)
    for j, draw in enumerate(draws):
        for i, lo in enumerate(draw):
            alt[j, i], depth[j, i], g[j, i] = lo.alt_reads, lo.depth, lo.g
            locus[j, i] = position[lo.key]
    present = depth > 0
    flat_alt, flat_depth = alt[present], depth[present]
    own = _mix_contaminant(
        _error_log_likelihood(flat_alt, flat_depth, model.sigma, params),
        _contaminant_log_pmf(flat_alt, flat_depth, params),
        model.contamination,
    )
    # Leave each draw's own row out of its locus' posterior.
    leave_out = log_post[locus[present]] - own
    leave_out -= _logsumexp_last(leave_out)[:, None]
    weights_grid = np.exp(leave_out)
    log_mean = weights_grid @ log_grid
    log_var = np.maximum(weights_grid @ log_grid**2 - log_mean**2, 0.0)
    mean_rate = weights_grid @ grid
    spread = np.sqrt(model.sigma**2 + log_var)
    z, zw = np.polynomial.hermite_e.hermegauss(params.hermite_nodes)
    log_zw = np.log(zw / zw.sum())
    factors = np.exp(spread[:, None] * z[None, :] - spread[:, None] ** 2 / 2.0)  # rows x H
    e = mean_rate[:, None] * factors
    a, d, gg = flat_alt[:, None], flat_depth[:, None], g[present][:, None]

    def log_count(rate: FloatArray) -> FloatArray:
        lam = d * np.minimum(rate, 0.5)
        return _logsumexp_last(a * np.log(lam) - lam - special.gammaln(a + 1.0), log_zw)

    null_ll = log_count(e)
    low, high, count = params.fraction_grid
    log_bf_rows = np.stack(
        [log_count(f * gg + (1.0 - f) * e) - null_ll for f in np.geomspace(low, high, count)]
    )  # fractions x rows
    per_draw = np.zeros((count, n, width))
    per_draw[:, present] = log_bf_rows
    log_bf = special.logsumexp(per_draw.sum(axis=2), axis=0) - math.log(count)
    prior = params.draw_null_prior
    weights: FloatArray = special.expit(math.log(prior / (1.0 - prior)) - log_bf)
    return [float(w) for w in weights]


def fit_assay_model(
    controls: Mapping[str, Sequence[BackgroundCounts]],
    params: BackgroundParams,
    *,
    draws: Sequence[Sequence[DrawLocus]] = (),
) -> AssayModel | None:
    """The assay model from its controls (locus key -> rows) and, optionally, its plasma
    draws at their tracked loci (each a sequence of ``DrawLocus``), weighted by P(no ctDNA).

    None when fewer than ``min_loci_for_model`` loci have any row, or there are fewer than
    ``min_rows_for_model`` rows: too little background.
    """
    with_rows = {k for k, v in controls.items() if v} | {lo.key for d in draws for lo in d}
    n_rows = sum(len(v) for v in controls.values()) + sum(len(d) for d in draws)
    if len(with_rows) < params.min_loci_for_model or n_rows < params.min_rows_for_model:
        return None

    def draw_rows(weights: Sequence[float]) -> dict[str, list[tuple[int, int, float]]]:
        table: dict[str, list[tuple[int, int, float]]] = {}
        for draw, weight in zip(draws, weights, strict=True):
            for locus in draw:
                table.setdefault(locus.key, []).append((locus.alt_reads, locus.depth, weight))
        return table

    weights = [1.0] * len(draws)
    rows = _collect(controls, draw_rows(weights), params.max_fit_rows)
    model, locus_ll = _fit_hyperparameters(rows, params, len(draws))
    # Reweight the draws by P(no ctDNA) under the current model and refit, until the weights
    # settle: a draw with ctDNA would otherwise pass for over-dispersed noise.
    for _ in range(params.draw_weight_rounds if draws else 0):
        # Draws at loci left out of a bounded fit keep weight 1 (they are not in the fit).
        fitted = set(rows.keys)
        inside = [i for i, d in enumerate(draws) if all(lo.key in fitted for lo in d)]
        weights = [1.0] * len(draws)
        estimates = _draw_null_weights(model, locus_ll, rows, [draws[i] for i in inside], params)
        for i, w in zip(inside, estimates, strict=True):
            weights[i] = w
        rows = _collect(controls, draw_rows(weights), params.max_fit_rows)
        model, locus_ll = _fit_hyperparameters(rows, params, round(sum(weights)), model.sigma)
    return model


# --------------------------------------------------------------------------- per-locus posteriors


def _blacklist_reason(
    counts: Sequence[BackgroundCounts], flags: npt.NDArray[np.bool_], params: BackgroundParams
) -> str:
    """INVAR2's locus-noise rules on the model's reading of the controls: the pooled
    background AF of the rows the error model explains (of every row when most look mutated:
    a locus noisy everywhere) above ``blacklist_mean_af``, or rows explained as real mutations
    in more than ``blacklist_mutated_fraction`` of at least ``blacklist_min_controls``
    controls. One other patient's real mutation in a few controls blacklists nothing."""
    mutated = int(flags.sum())
    rows = [c for c, f in zip(counts, flags, strict=True) if not f or 2 * mutated > len(counts)]
    depth = sum(c.depth for c in rows)
    pooled = sum(c.alt_reads for c in rows) / depth if depth else 0.0
    if pooled > params.blacklist_mean_af:
        return f"background_af {pooled:.4g} > {params.blacklist_mean_af:g}"
    if len(counts) >= params.blacklist_min_controls and (
        mutated / len(counts) > params.blacklist_mutated_fraction
    ):
        return (
            f"mutated in {mutated}/{len(counts)} controls > {params.blacklist_mutated_fraction:.0%}"
        )
    return ""


def _unknown(
    key: str, counts: Sequence[BackgroundCounts], params: BackgroundParams
) -> LocusBackground:
    """A locus of an assay without a model: marked unknown, mean the pooled rate (floored)."""
    depth = sum(c.depth for c in counts)
    alt = sum(c.alt_reads for c in counts)
    mean = float(np.clip((alt + 1.0) / (depth + 1e4), params.floor, params.max_rate))
    grid = rate_grid(params)
    log_weights = np.full(grid.size, -np.inf)
    log_weights[int(np.argmin(np.abs(np.log(grid / mean))))] = 0.0
    return LocusBackground(
        key=key,
        mean=mean,
        n_controls=len(counts),
        alt_reads=alt,
        depth=depth,
        blacklisted=False,
        reason="",
        prior_source="none",
        version=params.version,
        sigma=0.0,
        contamination=params.contamination_grid[0],
        known=False,
        log_weights=log_weights,
        grid=grid,
        hermite_nodes=params.hermite_nodes,
    )


def _from_log_posterior(
    key: str,
    log_post: FloatArray,
    counts: Sequence[BackgroundCounts],
    reason: str,
    source: str,
    model_sigma: float,
    contamination: float,
    params: BackgroundParams,
) -> LocusBackground:
    log_post = log_post - special.logsumexp(log_post)
    mean = float(np.exp(special.logsumexp(log_post + np.log(rate_grid(params)))))
    return LocusBackground(
        key=key,
        mean=mean,
        n_controls=len(counts),
        alt_reads=sum(c.alt_reads for c in counts),
        depth=sum(c.depth for c in counts),
        blacklisted=bool(reason),
        reason=reason,
        prior_source=source,
        version=params.version,
        sigma=model_sigma,
        contamination=contamination,
        known=True,
        log_weights=log_post,
        grid=rate_grid(params),
        hermite_nodes=params.hermite_nodes,
    )


def locus_backgrounds(
    model: AssayModel | None,
    controls_by_locus: Mapping[str, Sequence[BackgroundCounts]],
    params: BackgroundParams,
    *,
    loci: Iterable[str] = (),
    own_normals: Mapping[str, Sequence[BackgroundCounts]] | None = None,
) -> dict[str, LocusBackground]:
    """Each locus' posterior: its class prior times the likelihood of its own controls.

    ``loci`` adds keys without controls (they get their class prior). ``own_normals`` are the
    patient's own normal rows (its buffy coat: the matched normal, its normal samples), counted
    as controls too; a locus where one of them carries mutant reads the error model does not
    explain (clonal haematopoiesis, a germline or artefactual allele of this patient) is
    blacklisted for this patient: its plasma reads there are not evidence of tumour DNA.
    Without a model every locus is returned unknown (``known=False``). Every locus' rows are
    evaluated together (a panel patient has hundreds of loci)."""
    own = own_normals or {}
    keys = sorted(set(controls_by_locus) | set(loci) | set(own))
    combined = {k: [*controls_by_locus.get(k, ()), *own.get(k, ())] for k in keys}
    if model is None:
        return {k: _unknown(k, combined[k], params) for k in keys}
    grid = rate_grid(params)
    rows = _collect(combined, {}, None)
    contaminant = _contaminant_log_pmf(rows.alt, rows.depth, params)
    error = _error_log_likelihood(rows.alt, rows.depth, model.sigma, params)
    locus_ll = _locus_log_likelihood(
        rows, _mix_contaminant(error, contaminant, model.contamination)
    )
    position = {key: i for i, key in enumerate(rows.keys)}
    starts = np.searchsorted(rows.row_locus, np.arange(len(rows.keys) + 1))
    priors = {
        cls: _prior_log_weights(model.prior_for(cls), grid)
        for cls in {locus_class(k) for k in keys}
    }
    log_null = math.log1p(-model.contamination)
    log_cont = math.log(model.contamination)
    result: dict[str, LocusBackground] = {}
    for key in keys:
        prior = model.prior_for(locus_class(key))
        log_post = priors[locus_class(key)].copy()
        counts = combined[key]
        flags = np.zeros(len(counts), dtype=np.bool_)
        if key in position:
            i = position[key]
            log_post += locus_ll[i]
            pairs = rows.row_index[starts[i] : starts[i + 1]]
            candidates = np.flatnonzero(rows.alt[pairs] >= 2)
            if candidates.size:
                post = log_post - special.logsumexp(log_post)
                picked = pairs[candidates]
                explained = special.logsumexp(error[picked] + post[None, :], axis=1) + log_null
                flags[candidates] = contaminant[picked] + log_cont > explained
        own_mutated = bool(flags[len(counts) - len(own.get(key, ())) :].any())
        reason = (
            "mutated in the patient's own normal (clonal haematopoiesis, germline or artefact)"
            if own_mutated
            else _blacklist_reason(counts, flags, params)
        )
        result[key] = _from_log_posterior(
            key, log_post, counts, reason, prior.source, model.sigma, model.contamination, params
        )
    return result


def update_with_negative_draws(
    backgrounds: Mapping[str, LocusBackground],
    negative_draws: Mapping[str, Sequence[BackgroundCounts]],
    params: BackgroundParams,
) -> dict[str, LocusBackground]:
    """Add the patient's own earlier NEGATIVE draws as controls at the patient's tracked loci.

    Each draw is one more row of the locus, with the assay's draw-to-draw variation, so a
    patient's serial draws narrow the posterior of its loci without being mistaken for a
    fixed rate. Blacklist status is not changed (it is decided on independent controls). Bias
    caveat, both ways: a draw called NEGATIVE may still carry ctDNA below the LoD, whose
    mutant reads then inflate the background (conservative); and selecting draws *because*
    they were negative favours draws with few mutant reads (slightly anti-conservative). Use
    only draws called NEGATIVE, before the draw being called, never that draw itself.
    """
    updated = dict(backgrounds)
    for key, draws in negative_draws.items():
        if key not in backgrounds:
            raise InvalidInput(f"negative draw counts for unknown locus {key}")
        base = backgrounds[key]
        if not draws or not base.known:
            continue
        alt = np.array([c.alt_reads for c in draws], dtype=np.float64)
        depth = np.array([c.depth for c in draws], dtype=np.float64)
        row_ll = _row_log_likelihood(alt, depth, base.sigma, base.contamination, params)
        log_post = base.log_weights + row_ll.sum(axis=0)
        log_post -= special.logsumexp(log_post)
        updated[key] = replace(
            base,
            mean=float(np.exp(special.logsumexp(log_post + np.log(rate_grid(params))))),
            n_controls=base.n_controls + len(draws),
            alt_reads=base.alt_reads + int(alt.sum()),
            depth=base.depth + int(depth.sum()),
            log_weights=log_post,
        )
    return updated


# --------------------------------------------------------------------------- predictive counts


_NEGLIGIBLE = 1e-11
_TAIL = 1e-7


def null_pmf(backgrounds: Sequence[LocusBackground], depths: IntArray) -> FloatArray:
    """(k x loci) posterior predictive pmf of the mutant count of a draw with no ctDNA: the
    binomial mixed over each locus' posterior mean rate and the lognormal draw factor.

    Mixture terms lighter than 1e-11, and the highest rates whose weights sum to < 1e-7, are
    dropped: 3,000 replicates of 16 loci meet such a tail with probability ~0.005 and the LoD
    needs the pmf to ~1e-4. The k grid reaches 10 standard deviations past the largest rate
    left."""
    mixtures = []
    top = 8
    for bg, depth in zip(backgrounds, depths, strict=True):
        factors, weights = lognormal_factors(bg.sigma, bg.hermite_nodes)
        w = (np.exp(bg.log_weights)[:, None] * weights[None, :]).ravel()
        r = np.minimum((bg.grid[:, None] * factors[None, :]).ravel(), 0.5)
        order = np.argsort(r)
        r, w = r[order], w[order]
        tail = np.cumsum(w[::-1])[::-1]
        keep = (tail >= _TAIL) & (w > _NEGLIGIBLE)
        keep[0] = True
        rates, kept = r[keep], w[keep] / w[keep].sum()
        mixtures.append((np.log(rates), np.log1p(-rates), kept))
        mean = float(rates.max()) * float(depth)
        top = max(top, min(int(depth), int(mean + 10.0 * math.sqrt(mean) + 10.0)))
    pmf = np.zeros((top + 1, len(backgrounds)))
    k = np.arange(top + 1, dtype=np.float64)
    for j, ((log_r, log_1mr, weights), depth) in enumerate(zip(mixtures, depths, strict=True)):
        d = float(depth)
        kk = np.minimum(k, d)[:, None]
        log_pmf = (
            special.gammaln(d + 1.0)
            - special.gammaln(kk + 1.0)
            - special.gammaln(d - kk + 1.0)
            + kk * log_r[None, :]
            + (d - kk) * log_1mr[None, :]
        )
        column = np.exp(log_pmf) @ weights
        column[k > d] = 0.0
        pmf[:, j] = column
    return pmf


# --------------------------------------------------------------------------- conveniences


def fit_background(
    observations_by_locus: Mapping[str, Sequence[BackgroundCounts]],
    params: BackgroundParams,
) -> dict[str, LocusBackground]:
    """Assay model and per-locus posteriors from control rows alone (locus key -> rows)."""
    model = fit_assay_model(observations_by_locus, params)
    return locus_backgrounds(model, observations_by_locus, params)


def panel_of_normals(
    tables: Sequence[Mapping[str, BackgroundCounts]],
    params: BackgroundParams,
    *,
    loci: Iterable[str] = (),
) -> dict[str, LocusBackground]:
    """Per-locus background from normal-plasma evidence tables (a panel of normals).

    Each table is one control sample (locus key -> its counts there). A locus missing from a
    table is missing evidence, not zero reads. ``loci`` adds keys that must be in the result
    even without controls (they get their class prior)."""
    observations: dict[str, list[BackgroundCounts]] = {key: [] for key in loci}
    for table in tables:
        for key, counts in table.items():
            observations.setdefault(key, []).append(counts)
    model = fit_assay_model(observations, params)
    return locus_backgrounds(model, observations, params, loci=loci)
