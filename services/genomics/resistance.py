"""The resistance/sensitivity map, and emerging-resistance events on therapy.

Owns ``data/resistance_map.toml`` (versioned, cited data: which variant confers resistance or
sensitivity to which drug class), its validation, and the detection of emerging-resistance
events in a patient's serial ctDNA, following domain-anchors §2.1 (derived from PADA-1, Bidard
et al., Lancet Oncol 2022; SERENA-6, Turner et al., N Engl J Med 2025; plasmaMATCH, Turner et
al., Lancet Oncol 2020) and §4.8:

* *emerged*: the variant is detected at a draw (>= 2 mutant reads and a one-sided binomial, or
  beta-binomial, test against the locus background) in its current run of detections, with
  p < ``alpha_emerge`` for its gene at that draw or for the run so far pooled (a clone growing
  slowly is seen in two consecutive draws before either alone passes), and the undetected
  draws before that run, pooled, were sensitive enough to have seen it (their pooled LoD95 is
  below the VAF now observed). Pooling the earlier draws is what "the earlier draws were
  sensitive enough" means for a clone that grows from nothing: one 3,000x draw cannot exclude
  a VAF of 1e-3, four can;
* *present_at_start*: the same evidence at the first draw on a line of the class (nothing
  earlier says it is new), or the run began before the line did: the drug was started against
  a clone that resists it;
* *rising*: detected at both the previous draw and this one (p < ``alpha_detect``), VAF up
  >= 2-fold and a one-sided Fisher exact test of the two draws' (mutant, wild-type) counts
  p < ``alpha_rise``;

each while the draw reflects a therapy class the variant resists (therapy.py's date convention).
An onset seen in one draw on thin evidence (p >= ``alpha_alert`` or fewer than
``min_alt_reads_alert`` reads) awaits confirmation by the next draw that detects it again, and a
next draw sensitive enough to see it that does not contradicts it (``confirmation``).
*Actionable findings*: variants with a "sensitivity" entry (a drug works against them),
detected with evidence that holds, whatever the therapy.

The emergence threshold is a false-event budget spent by weighted Bonferroni (Genovese, Roeder &
Wasserman, Biometrika 2006): every mapped resistance locus is tested at every draw, so the
per-locus, per-draw level must be small, and more of the budget goes where emergence is common
(ESR1 LBD mutations in a large share of patients on an aromatase inhibitor, PADA-1 / SERENA-6;
ERBB2 mutations in a few per cent, Nayar et al. 2019). The defaults were tuned on simulated
cohorts (benchmarks/resistance.py, seeds 11-13: four genes, cross-patient controls, the alerts
replayed draw by draw): 0.004 false alerts per patient-year, 98.7% of the clones visible
before the last draw alerted on, median delay 1 draw.

Protein changes are compared in one normal form: ``p.`` + one-letter amino acids (``p.D538G``,
``p.Y772_A775dup``); three-letter, parenthesised or transcript-prefixed forms are accepted.
Pure: stdlib (tomllib), numpy, scipy, services.errors and the annotator's hotspot table.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from scipy import stats

from services.errors import InvalidInput
from services.genomics import annotate
from services.genomics.longitudinal import (
    LocusObservation,
    LocusSeries,
    locus_lod95,
    locus_p_value,
)
from services.genomics.tables import versioned_entries
from services.genomics.therapy import (
    DRUG_CLASSES,
    TherapyLine,
    canonical_drug_name,
    known_drug,
    lines_on,
)

DATA_DIR: Final[Path] = Path(__file__).resolve().parent / "data"
DEFAULT_MAP_PATH: Final[Path] = DATA_DIR / "resistance_map.toml"
DEFAULT_HOTSPOTS_PATH: Final[Path] = DATA_DIR / "hotspots.tsv"

EFFECTS: Final[tuple[str, ...]] = ("resistance", "relative_resistance", "sensitivity", "vus")
"""``vus``: a variant of unknown significance, shown with the variant but never an event (it is
not among ``ResistanceParams.trigger_effects``); it applies only to a variant that no other
entry of its gene selects."""
ESCAT_TIERS: Final[tuple[str, ...]] = (
    "IA", "IB", "IC", "IIA", "IIB", "IIIA", "IIIB", "IVA", "IVB", "V", "X",
)  # fmt: skip
"""ESMO Scale for Clinical Actionability of molecular Targets (Mateo et al., Ann Oncol
2018;29:1895-1902): I-A..C ready for routine use, II-A..B investigational, III-A..B
hypothetical (another tumour type, or another alteration of the gene), IV-A..B preclinical
(models, in silico), V co-targeting, X lack of evidence."""
ONCOKB_LEVELS: Final[tuple[str, ...]] = ("1", "2", "3A", "3B", "4", "R1", "R2")
"""OncoKB therapeutic levels of evidence (Chakravarty et al., JCO Precis Oncol 2017)."""
VARIANT_CLASSES: Final[tuple[str, ...]] = ("missense", "inframe_insertion", "activating_hotspot")
_ENTRY_KEYS: Final[frozenset[str]] = frozenset(
    {
        "id",
        "gene",
        "proteins",
        "variant_class",
        "codons",
        "region",
        "effect",
        "drug_class",
        "drugs",
        "context",
        "implication",
        "citations",
        "evidence_level",
        "oncokb_level",
    }
)


class ResistanceMapError(InvalidInput):
    """The resistance map file cannot be used. Names the file, the entry and the reason."""


# --------------------------------------------------------------------------- protein changes

_MISSENSE_RE: Final = re.compile(r"^p\.([A-Z])(\d+)([A-Z])$")
_INSERTION_RE: Final = re.compile(
    r"^p\.([A-Z])(\d+)(?:_([A-Z])(\d+))?(dup|ins[A-Z]+|delins[A-Z]+)$"
)


def normalise_protein_change(text: str) -> str:
    """``p.`` + one-letter HGVS: "NP_000116.2:p.(Asp538Gly)", "D538G" -> "p.D538G" (the
    annotator's normal form, so map entries and annotated variants compare equal)."""
    return annotate.normalize_protein_change(text) or text.strip()


def _missense_codon(protein: str) -> int | None:
    match = _MISSENSE_RE.match(protein)
    if match is None or match.group(1) == match.group(3):
        return None
    return int(match.group(2))


def _insertion_codon(protein: str) -> int | None:
    """First codon of an in-frame change that adds residues (dup, ins, delins longer than
    what it deletes); None for anything else."""
    match = _INSERTION_RE.match(protein)
    if match is None:
        return None
    start = int(match.group(2))
    kind = match.group(5)
    if kind.startswith("delins"):
        end = int(match.group(4)) if match.group(4) else start
        if len(kind) - len("delins") <= end - start + 1:
            return None
    return start


# --------------------------------------------------------------------------- the map


@dataclass(frozen=True, slots=True)
class MapEntry:
    """One validated entry of the map; ``hotspot_proteins`` resolves "activating_hotspot"."""

    entry_id: str
    gene: str
    proteins: frozenset[str]
    variant_class: str | None
    codons: tuple[int, int] | None
    region: str
    hotspot_proteins: frozenset[str]
    effect: str
    drug_class: str
    drugs: tuple[str, ...]
    context: str
    implication: str
    citations: tuple[str, ...]
    evidence_level: str
    """ESCAT tier (``ESCAT_TIERS``) of this variant-drug-class pairing."""
    oncokb_level: str | None = None
    """OncoKB level (``ONCOKB_LEVELS``) where OncoKB lists the pairing."""

    def matches(self, gene: str, protein_change: str) -> bool:
        """True if the (normalised) variant falls under this entry's selector."""
        if gene.upper() != self.gene:
            return False
        if protein_change in self.proteins or protein_change in self.hotspot_proteins:
            return True
        if self.variant_class == "missense":
            codon = _missense_codon(protein_change)
        elif self.variant_class == "inframe_insertion":
            codon = _insertion_codon(protein_change)
        else:
            return False
        if codon is None:
            return False
        return self.codons is None or self.codons[0] <= codon <= self.codons[1]

    @property
    def selector(self) -> str:
        """Human description of what the entry selects."""
        parts: list[str] = []
        if self.variant_class is not None:
            what = self.variant_class.replace("_", " ")
            if self.codons is not None:
                what += f" codons {self.codons[0]}-{self.codons[1]}"
            if self.region:
                what += f", {self.region}"
            parts.append(f"{self.gene} {what}")
        if self.proteins:
            parts.append(f"{self.gene} {', '.join(sorted(self.proteins))}")
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class MapEffect:
    """What the map says about one variant for one drug class."""

    entry_id: str
    gene: str
    protein_change: str
    selector: str
    effect: str
    drug_class: str
    drugs: tuple[str, ...]
    context: str
    implication: str
    citations: tuple[str, ...]
    map_version: str
    evidence_level: str
    oncokb_level: str | None = None

    @property
    def vus(self) -> bool:
        """A variant of unknown significance: shown, never an event."""
        return self.effect == "vus"


@dataclass(frozen=True, slots=True)
class ResistanceMap:
    """The validated map: its version, its entries, and the file it came from."""

    version: str
    entries: tuple[MapEntry, ...]
    source: str

    def effects_for(self, gene: str, protein_change: str) -> list[MapEffect]:
        """Every entry that applies to the variant, in file order; a "vus" entry only when no
        other entry selects the variant (an established variant is never of unknown
        significance)."""
        protein = normalise_protein_change(protein_change)
        matched = [entry for entry in self.entries if entry.matches(gene, protein)]
        if any(entry.effect != "vus" for entry in matched):
            matched = [entry for entry in matched if entry.effect != "vus"]
        return [
            MapEffect(
                entry_id=entry.entry_id,
                gene=entry.gene,
                protein_change=protein,
                selector=entry.selector,
                effect=entry.effect,
                drug_class=entry.drug_class,
                drugs=entry.drugs,
                context=entry.context,
                implication=entry.implication,
                citations=entry.citations,
                map_version=self.version,
                evidence_level=entry.evidence_level,
                oncokb_level=entry.oncokb_level,
            )
            for entry in matched
        ]

    def resisted_classes(
        self, gene: str, protein_change: str, *, include_relative: bool = True
    ) -> frozenset[str]:
        """Classes the variant confers resistance to (for at least one drug of the class)."""
        wanted = {"resistance", "relative_resistance"} if include_relative else {"resistance"}
        return frozenset(
            e.drug_class for e in self.effects_for(gene, protein_change) if e.effect in wanted
        )


def load_hotspot_proteins() -> dict[str, frozenset[str]]:
    """Gene -> protein changes of the annotator's hotspot table (data/hotspots.tsv)."""
    found: dict[str, set[str]] = {}
    for hotspot in annotate.load_hotspots():
        found.setdefault(hotspot.gene.upper(), set()).add(hotspot.protein_change)
    return {gene: frozenset(proteins) for gene, proteins in found.items()}


def load_resistance_map(path: Path | str | None = None) -> ResistanceMap:
    """Read and validate a resistance map (default: the packaged data/resistance_map.toml).

    Raises ResistanceMapError on unreadable TOML, a missing or empty version, an unknown key,
    drug class, effect or variant class, a missing or unknown ESCAT tier, an unknown OncoKB
    level, a drug that is not of the entry's class, a selector
    that selects nothing, an unparseable protein change, a duplicate id, or an entry without
    implication or citations.
    """
    source = Path(path) if path is not None else DEFAULT_MAP_PATH
    version, raw_entries = versioned_entries(source, ResistanceMapError, "the resistance map")
    hotspots = load_hotspot_proteins()
    entries: list[MapEntry] = []
    for index, raw in enumerate(raw_entries, start=1):
        entry = _parse_entry(raw, hotspots, f"{source}: entry {index}")
        if any(e.entry_id == entry.entry_id for e in entries):
            raise ResistanceMapError(f"{source}: entry {index}: duplicate id {entry.entry_id!r}")
        entries.append(entry)
    return ResistanceMap(version=version.strip(), entries=tuple(entries), source=str(source))


def _text(raw: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise ResistanceMapError(f"{where}: {key!r} must be a non-empty string")
    return " ".join(value.split())


def _strings(raw: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ResistanceMapError(f"{where}: {key!r} must be a list of non-empty strings")
    return [v.strip() for v in value]


def _parse_entry(raw: Any, hotspots: Mapping[str, frozenset[str]], where: str) -> MapEntry:
    if not isinstance(raw, dict):
        raise ResistanceMapError(f"{where}: not a table")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise ResistanceMapError(f"{where}: unknown key(s) {', '.join(unknown)}")
    entry_id = _text(raw, "id", where)
    where = f"{where} ({entry_id})"
    gene = _text(raw, "gene", where).upper()
    effect = _text(raw, "effect", where)
    if effect not in EFFECTS:
        raise ResistanceMapError(
            f"{where}: unknown effect {effect!r}; expected one of {', '.join(EFFECTS)}"
        )
    drug_class = _text(raw, "drug_class", where)
    if drug_class not in DRUG_CLASSES:
        raise ResistanceMapError(
            f"{where}: unknown drug class {drug_class!r}; expected one of {', '.join(DRUG_CLASSES)}"
        )
    drugs = []
    for drug in _strings(raw, "drugs", where):
        hit = known_drug(drug)
        if hit is None or hit[1] != drug_class:
            raise ResistanceMapError(f"{where}: drug {drug!r} is not a known {drug_class}")
        drugs.append(hit[0])
    proteins = []
    for protein in _strings(raw, "proteins", where):
        normal = normalise_protein_change(protein)
        if not re.fullmatch(r"p\.[A-Z*]\d+[A-Za-z0-9_*]*", normal):
            raise ResistanceMapError(f"{where}: cannot read protein change {protein!r}")
        proteins.append(normal)
    variant_class = raw.get("variant_class")
    if variant_class is not None and variant_class not in VARIANT_CLASSES:
        raise ResistanceMapError(
            f"{where}: unknown variant_class {variant_class!r}; expected one of "
            f"{', '.join(VARIANT_CLASSES)}"
        )
    codons = _codons(raw.get("codons"), variant_class, where)
    hotspot_proteins: frozenset[str] = frozenset()
    if variant_class == "activating_hotspot":
        hotspot_proteins = hotspots.get(gene, frozenset())
        if not hotspot_proteins:
            raise ResistanceMapError(f"{where}: hotspots.tsv has no row for {gene}")
    if variant_class is None and not proteins:
        raise ResistanceMapError(f"{where}: give 'proteins', 'variant_class', or both")
    citations = _strings(raw, "citations", where)
    if not citations:
        raise ResistanceMapError(f"{where}: at least one citation is required")
    evidence_level = _text(raw, "evidence_level", where)
    if evidence_level not in ESCAT_TIERS:
        raise ResistanceMapError(
            f"{where}: unknown ESCAT tier {evidence_level!r}; expected one of "
            f"{', '.join(ESCAT_TIERS)}"
        )
    oncokb_level = raw.get("oncokb_level")
    if oncokb_level is not None and oncokb_level not in ONCOKB_LEVELS:
        raise ResistanceMapError(
            f"{where}: unknown OncoKB level {oncokb_level!r}; expected one of "
            f"{', '.join(ONCOKB_LEVELS)}"
        )
    return MapEntry(
        entry_id=entry_id,
        gene=gene,
        proteins=frozenset(proteins),
        variant_class=variant_class,
        codons=codons,
        region=_text(raw, "region", where, required=False),
        hotspot_proteins=hotspot_proteins,
        effect=effect,
        drug_class=drug_class,
        drugs=tuple(drugs),
        context=_text(raw, "context", where, required=False),
        implication=_text(raw, "implication", where),
        citations=tuple(citations),
        evidence_level=evidence_level,
        oncokb_level=oncokb_level,
    )


def _codons(value: Any, variant_class: Any, where: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if variant_class not in ("missense", "inframe_insertion"):
        raise ResistanceMapError(f"{where}: 'codons' needs a missense or inframe_insertion class")
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int) and v > 0 for v in value)
        or value[0] > value[1]
    ):
        raise ResistanceMapError(f"{where}: 'codons' must be [first, last] positive integers")
    return (value[0], value[1])


# --------------------------------------------------------------------------- emergence


@dataclass(frozen=True, slots=True)
class ResistanceParams:
    """Parameters of emergence detection; ``version`` is stored with every result."""

    version: str = "resistance-2026.12-1"
    alpha_detect: float = 0.01
    """Per-locus one-sided test against background: the variant is "detected" in a draw."""
    alpha_emerge: float = 1e-4
    """A new detection is an emergence only below this p-value (per locus and draw)."""
    alpha_emerge_by_gene: tuple[tuple[str, float], ...] = (("ESR1", 3e-3),)
    """Per-gene overrides of ``alpha_emerge`` (weighted Bonferroni: more of the false-event
    budget where emergence is common)."""
    min_alt_reads: int = 2
    alpha_rise: float = 0.01
    """One-sided Fisher exact test, this draw vs the previous one."""
    min_fold: float = 2.0
    lod_confidence: float = 0.95
    min_background_error: float = 1e-6
    background_overdispersion: float = 0.0
    """rho > 0 turns the per-locus test into a beta-binomial one (uncertain background)."""
    trigger_effects: tuple[str, ...] = ("resistance", "relative_resistance")
    alpha_alert: float = 1e-6
    min_alt_reads_alert: int = 6
    """An emergence (or presence at the start of a line) seen in one draw is alerted at once
    only with p < ``alpha_alert`` and >= ``min_alt_reads_alert`` mutant reads; thinner
    evidence waits for the next draw that detects the variant again (``confirmation``
    "awaiting_confirmation" until then), and a next draw sensitive to the event's allele
    fraction that does not detect it contradicts the event. A few mutant reads in one draw are
    what background and sampling artefacts make; a real clone under the pressure of the drug
    it resists is there again two months later."""


Confirmation = Literal["confirmed", "awaiting_confirmation", "contradicted"]


@dataclass(frozen=True, slots=True)
class LocusCall:
    """The per-locus test of one variant in one draw (``lod95`` inf without depth)."""

    sample_id: str
    collection_date: dt.date
    alt_reads: int
    depth: int
    vaf: float
    p_value: float
    detected: bool
    lod95: float
    background: float = 0.0
    """The (floored) background error rate the call was tested against."""


ResistanceStatus = Literal["emerged", "present_at_start", "rising"]
VariantState = Literal["detected", "not_detected", "cleared", "indeterminate", "not_evaluable"]


@dataclass(frozen=True, slots=True)
class ResistanceEvent:
    """An emerging-resistance event: a mapped variant newly detected, present when a line of a
    class it resists began, or rising significantly, at a draw taken while the patient was on
    that class.

    ``status``: ``emerged`` (new, the earlier draws sensitive enough to have seen it),
    ``present_at_start`` (detected at the first draw on the line, or detected before the line
    began: the drug was started against a clone that resists it), ``rising``.
    ``p_value`` is the detection p-value (``emerged``, ``present_at_start``) or the Fisher
    p-value (``rising``); ``fold_change`` is VAF / previous VAF (None when the previous VAF is 0).
    ``first_detected_date`` starts the run of consecutive detections the event belongs to.
    ``confirmation``: ``confirmed`` from ``alert_date`` (the event's draw when its evidence is
    strong, else the next draw that detected it again; a rise is two draws already),
    ``awaiting_confirmation`` (thin evidence in the latest draws), or ``contradicted`` (the next
    draw sensitive enough to see it did not; or, for an event confirmed by one strong draw, no
    later draw on the same class saw it again).
    """

    gene: str
    protein_change: str
    key: str
    status: ResistanceStatus
    event_date: dt.date
    first_detected_date: dt.date
    sample_id: str
    drug_class: str
    drug: str | None
    effect: str
    implication: str
    context: str
    citations: tuple[str, ...]
    entry_id: str
    map_version: str
    params_version: str
    vaf: float
    p_value: float
    fold_change: float | None
    previous_sample_id: str | None
    previous_vaf: float | None
    previous_lod95: float | None
    confirmation: Confirmation = "confirmed"
    alert_date: dt.date | None = None
    alert_sample_id: str | None = None
    evidence_level: str | None = None


@dataclass(frozen=True, slots=True)
class VariantStatus:
    """State of one mapped variant at its latest evaluable draw, whatever the therapy.

    ``detected``; ``not_detected`` (never detected); ``cleared`` (detected before, not now, at a
    LoD95 below its last detected VAF); ``indeterminate`` (not now, but not sensitive enough to
    call it cleared); ``not_evaluable`` (no draw with depth).
    """

    key: str
    gene: str
    protein_change: str
    status: VariantState
    first_detected_date: dt.date | None
    last_sample_id: str | None
    last_date: dt.date | None
    last_vaf: float | None
    effects: tuple[MapEffect, ...]
    resisted_classes_on: tuple[str, ...]
    calls: tuple[LocusCall, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class ResistanceReport:
    """Events and per-variant states of one patient, with the map version and parameters."""

    map_version: str
    params: ResistanceParams
    events: tuple[ResistanceEvent, ...]
    variants: tuple[VariantStatus, ...]
    actionable: tuple[ActionableFinding, ...] = ()


@dataclass(frozen=True, slots=True)
class ActionableFinding:
    """A variant the map says a drug works against (``effect`` "sensitivity"), detected with
    evidence that holds: one draw with p < ``alpha_alert`` and >= ``min_alt_reads_alert``
    mutant reads, or two consecutive draws that detect it. Whatever the current therapy: the
    oncologist decides whether to use it. ``sample_id`` and ``alert_date`` are the draw that
    established it; ``first_detected_date`` starts its run of detections."""

    gene: str
    protein_change: str
    key: str
    drug_class: str
    drugs: tuple[str, ...]
    context: str
    implication: str
    citations: tuple[str, ...]
    entry_id: str
    map_version: str
    first_detected_date: dt.date
    alert_date: dt.date
    sample_id: str
    vaf: float
    evidence_level: str | None = None


def _call(obs: LocusObservation, params: ResistanceParams) -> LocusCall:
    background = max(obs.background_error, params.min_background_error)
    p_value = locus_p_value(obs.alt_reads, obs.depth, background, params.background_overdispersion)
    lod = (
        obs.lod95
        if obs.lod95 is not None
        else locus_lod95(
            obs.depth,
            background,
            params.alpha_detect,
            params.min_alt_reads,
            params.lod_confidence,
            params.background_overdispersion,
        )
    )
    return LocusCall(
        sample_id=obs.sample_id,
        collection_date=obs.collection_date,
        alt_reads=obs.alt_reads,
        depth=obs.depth,
        vaf=obs.vaf,
        p_value=p_value,
        detected=obs.depth > 0
        and obs.alt_reads >= params.min_alt_reads
        and p_value < params.alpha_detect,
        lod95=lod,
        background=background,
    )


def _pooled(calls: Sequence[LocusCall], params: ResistanceParams) -> LocusCall | None:
    """The draws as one: summed reads, depth-weighted background, the pooled LoD95; named
    after the latest of them. None for no draws."""
    if not calls:
        return None
    alt = sum(call.alt_reads for call in calls)
    depth = sum(call.depth for call in calls)
    background = sum(call.depth * call.background for call in calls) / depth
    last = calls[-1]
    return LocusCall(
        sample_id=last.sample_id,
        collection_date=last.collection_date,
        alt_reads=alt,
        depth=depth,
        vaf=alt / depth,
        p_value=locus_p_value(alt, depth, background, params.background_overdispersion),
        detected=False,
        lod95=locus_lod95(
            depth,
            background,
            params.alpha_detect,
            params.min_alt_reads,
            params.lod_confidence,
            params.background_overdispersion,
        ),
        background=background,
    )


def _rise_p_value(current: LocusCall, previous: LocusCall) -> float:
    """One-sided Fisher exact test that the current draw's mutant fraction is higher."""
    table = [
        [current.alt_reads, current.depth - current.alt_reads],
        [previous.alt_reads, previous.depth - previous.alt_reads],
    ]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)


def resistance_report(
    series: Sequence[LocusSeries],
    lines: Sequence[TherapyLine],
    rmap: ResistanceMap,
    params: ResistanceParams,
) -> ResistanceReport:
    """Emerging-resistance events and per-variant states (see the module docstring).

    Only series with a gene and protein change that the map knows are considered. An event is
    flagged at the first draw where the rule holds; "emerged" at most once per run of
    detections, so a variant stays one event until it clears and comes back (the gate then
    pools the undetected draws since it cleared); each further significant >= 2-fold rise
    between consecutive detected draws is a "rising" event. An "emerged" event's
    ``previous_*`` fields describe the pooled earlier draws (named after the latest of them).
    One event per resisted class the draw reflects (a drug-restricted entry needs that drug
    among the lines).
    """
    events: list[ResistanceEvent] = []
    variants: list[VariantStatus] = []
    actionable: list[ActionableFinding] = []
    for locus in series:
        if not locus.gene or not locus.protein_change:
            continue
        effects = rmap.effects_for(locus.gene, locus.protein_change)
        if not effects:
            continue
        calls = [_call(obs, params) for obs in locus.ordered()]
        events.extend(_locus_events(locus, calls, effects, lines, rmap, params))
        variants.append(_variant_status(locus, calls, effects, lines, params))
        actionable.extend(_actionable(locus, calls, effects, rmap, params))
    events.sort(key=lambda e: (e.event_date, e.gene, e.protein_change, e.drug_class))
    actionable.sort(key=lambda a: (a.alert_date, a.gene, a.protein_change, a.drug_class))
    return ResistanceReport(rmap.version, params, tuple(events), tuple(variants), tuple(actionable))


def _actionable(
    locus: LocusSeries,
    calls: Sequence[LocusCall],
    effects: Sequence[MapEffect],
    rmap: ResistanceMap,
    params: ResistanceParams,
) -> list[ActionableFinding]:
    """One finding per sensitivity entry (drug class) of the locus, at the first draw where its
    detection holds (see ``ActionableFinding``)."""
    sensitive = {e.drug_class: e for e in effects if e.effect == "sensitivity"}
    if not sensitive:
        return []
    evaluable = [call for call in calls if call.depth > 0]
    established: LocusCall | None = None
    run_start: dt.date | None = None
    for index, call in enumerate(evaluable):
        if not call.detected:
            run_start = None
            continue
        run_start = run_start or call.collection_date
        if _strong(call, params) or (index > 0 and evaluable[index - 1].detected):
            established = call
            break
    if established is None or run_start is None:
        return []
    return [
        ActionableFinding(
            gene=effect.gene,
            protein_change=effect.protein_change,
            key=locus.key,
            drug_class=drug_class,
            drugs=effect.drugs,
            context=effect.context,
            implication=effect.implication,
            citations=effect.citations,
            entry_id=effect.entry_id,
            map_version=rmap.version,
            first_detected_date=run_start,
            alert_date=established.collection_date,
            sample_id=established.sample_id,
            vaf=established.vaf,
            evidence_level=effect.evidence_level,
        )
        for drug_class, effect in sensitive.items()
    ]


def detect_resistance_events(
    series: Sequence[LocusSeries],
    lines: Sequence[TherapyLine],
    rmap: ResistanceMap,
    params: ResistanceParams,
) -> list[ResistanceEvent]:
    """The events of ``resistance_report``, in date order."""
    return list(resistance_report(series, lines, rmap, params).events)


def _triggering(
    effects: Sequence[MapEffect],
    lines: Sequence[TherapyLine],
    date: dt.date,
    params: ResistanceParams,
) -> list[tuple[MapEffect, str | None]]:
    """(effect, drug) for each resisted class the draw on ``date`` reflects."""
    active = lines_on(lines, date)
    found: list[tuple[MapEffect, str | None]] = []
    seen: set[str] = set()
    for effect in effects:
        if effect.effect not in params.trigger_effects or effect.drug_class in seen:
            continue
        on_class = [line for line in active if line.drug_class == effect.drug_class]
        if effect.drugs:
            on_class = [
                line
                for line in on_class
                if line.drug is not None and canonical_drug_name(line.drug) in effect.drugs
            ]
        if not on_class:
            continue
        seen.add(effect.drug_class)
        drugs = sorted({line.drug for line in on_class if line.drug is not None})
        found.append((effect, " + ".join(drugs) if drugs else None))
    return found


def _locus_events(
    locus: LocusSeries,
    calls: Sequence[LocusCall],
    effects: Sequence[MapEffect],
    lines: Sequence[TherapyLine],
    rmap: ResistanceMap,
    params: ResistanceParams,
) -> list[ResistanceEvent]:
    """The events of one locus, in draw order (see ``resistance_report``)."""
    events: list[ResistanceEvent] = []
    alpha_emerge = dict(params.alpha_emerge_by_gene).get(
        (locus.gene or "").upper(), params.alpha_emerge
    )
    evaluable = [call for call in calls if call.depth > 0]
    # No reads: neither evidence of presence nor of absence; such draws are skipped.
    on_class = [
        {
            effect.drug_class: (effect, drug)
            for effect, drug in _triggering(effects, lines, c.collection_date, params)
        }
        for c in evaluable
    ]
    run_start: dt.date | None = None
    fired: set[str] = set()  # classes with an onset event in the current run
    negatives: list[LocusCall] = []  # the undetected draws before the current run
    gate: LocusCall | None = None
    previous: LocusCall | None = None
    run: list[LocusCall] = []  # the current run of detections
    for index, call in enumerate(evaluable):
        found: list[tuple[ResistanceStatus, MapEffect, str | None, float, LocusCall | None]] = []
        if call.detected:
            if run_start is None:
                run_start, fired, run = call.collection_date, set(), []
                gate, negatives = _pooled(negatives, params), []
            run.append(call)
            # The run so far as one draw: a clone growing slowly is seen in two consecutive
            # draws before any one of them alone passes the emergence level.
            evidence = call
            if len(run) > 1:
                pooled = _pooled(run, params)
                if pooled is not None and pooled.p_value < call.p_value:
                    evidence = pooled
            rose = (
                previous is not None
                and previous.detected
                and call.vaf >= params.min_fold * previous.vaf
            )
            rise_p = _rise_p_value(call, previous) if rose and previous is not None else 1.0
            for drug_class, (effect, drug) in on_class[index].items():
                if drug_class not in fired and evidence.p_value < alpha_emerge:
                    line_start = _stretch_start(evaluable, on_class, index, drug_class)
                    if run_start >= line_start and gate is not None and gate.lod95 < call.vaf:
                        found.append(("emerged", effect, drug, evidence.p_value, gate))
                        fired.add(drug_class)
                        continue
                    if run_start <= line_start:
                        found.append(("present_at_start", effect, drug, evidence.p_value, None))
                        fired.add(drug_class)
                        continue
                if rise_p < params.alpha_rise:
                    found.append(("rising", effect, drug, rise_p, previous))
        else:
            run_start = None
            negatives.append(call)
        for status, effect, drug, p_value, reference in found:
            confirmation, alert = _confirmation(
                status, evaluable, on_class, index, effect, params, len(run) > 1
            )
            events.append(
                ResistanceEvent(
                    gene=effect.gene,
                    protein_change=effect.protein_change,
                    key=locus.key,
                    status=status,
                    event_date=call.collection_date,
                    first_detected_date=run_start or call.collection_date,
                    sample_id=call.sample_id,
                    drug_class=effect.drug_class,
                    drug=drug,
                    effect=effect.effect,
                    implication=effect.implication,
                    context=effect.context,
                    citations=effect.citations,
                    entry_id=effect.entry_id,
                    map_version=rmap.version,
                    params_version=params.version,
                    vaf=call.vaf,
                    p_value=p_value,
                    fold_change=call.vaf / reference.vaf
                    if reference is not None and reference.vaf > 0
                    else None,
                    previous_sample_id=reference.sample_id if reference else None,
                    previous_vaf=reference.vaf if reference else None,
                    previous_lod95=_finite(reference.lod95) if reference else None,
                    confirmation=confirmation,
                    alert_date=alert.collection_date if alert else None,
                    alert_sample_id=alert.sample_id if alert else None,
                    evidence_level=effect.evidence_level,
                )
            )
        previous = call
    return events


def _stretch_start(
    evaluable: Sequence[LocusCall],
    on_class: Sequence[Mapping[str, object]],
    index: int,
    drug_class: str,
) -> dt.date:
    """The date of the first draw of the uninterrupted stretch of draws on ``drug_class`` that
    ends at ``index``: where the line began, as the draws see it."""
    first = index
    while first > 0 and drug_class in on_class[first - 1]:
        first -= 1
    return evaluable[first].collection_date


def _confirmation(
    status: ResistanceStatus,
    evaluable: Sequence[LocusCall],
    on_class: Sequence[Mapping[str, object]],
    index: int,
    effect: MapEffect,
    params: ResistanceParams,
    seen_before: bool,
) -> tuple[Confirmation, LocusCall | None]:
    """Whether the event at ``evaluable[index]`` holds, and the draw its alert dates from
    (``seen_before``: the draw before detected the variant too)."""
    call = evaluable[index]
    later = evaluable[index + 1 :]
    if status == "rising" or seen_before:
        return "confirmed", call
    if _strong(call, params):
        # One strong draw alerts at once; it is contradicted only if no later draw saw it
        # again while a draw on the same class was sensitive enough to.
        on_same = [
            c
            for c, classes in zip(later, on_class[index + 1 :], strict=True)
            if effect.drug_class in classes
        ]
        if any(c.detected for c in later) or not any(c.lod95 < call.vaf for c in on_same):
            return "confirmed", call
        return "contradicted", None
    for next_call in later:
        if next_call.detected:
            return "confirmed", next_call
        if next_call.lod95 < call.vaf:
            return "contradicted", None
    return "awaiting_confirmation", None


def _strong(call: LocusCall, params: ResistanceParams) -> bool:
    """Evidence in one draw strong enough to alert on without a second draw."""
    return call.p_value < params.alpha_alert and call.alt_reads >= params.min_alt_reads_alert


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _variant_status(
    locus: LocusSeries,
    calls: Sequence[LocusCall],
    effects: Sequence[MapEffect],
    lines: Sequence[TherapyLine],
    params: ResistanceParams,
) -> VariantStatus:
    evaluable = [call for call in calls if call.depth > 0]
    detected = [call for call in evaluable if call.detected]
    last = evaluable[-1] if evaluable else None
    state: VariantState
    if last is None:
        state = "not_evaluable"
    elif last.detected:
        state = "detected"
    elif not detected:
        state = "not_detected"
    elif last.lod95 < detected[-1].vaf:
        state = "cleared"
    else:
        state = "indeterminate"
    resisted_on = (
        sorted(
            {
                effect.drug_class
                for effect, _ in _triggering(effects, lines, last.collection_date, params)
            }
        )
        if last is not None and last.detected
        else []
    )
    return VariantStatus(
        key=locus.key,
        gene=effects[0].gene,
        protein_change=effects[0].protein_change,
        status=state,
        first_detected_date=detected[0].collection_date if detected else None,
        last_sample_id=last.sample_id if last else None,
        last_date=last.collection_date if last else None,
        last_vaf=last.vaf if last else None,
        effects=tuple(effects),
        resisted_classes_on=tuple(resisted_on),
        calls=tuple(calls),
    )
