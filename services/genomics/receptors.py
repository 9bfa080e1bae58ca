"""Tumour receptor status (ER, PR, HER2), breast-cancer subtype, and receptor discordance
between the primary tumour and a later recurrence or metastasis.

Owns ``data/receptor_rules.toml`` (versioned, cited data: what each change of receptor status
implies for treatment) and its validation.

* HER2 category from IHC and ISH, ASCO/CAP 2023 update (Wolff AC et al., HER2 testing in
  breast cancer: ASCO-CAP guideline update, J Clin Oncol 2023;41:3867-3872): HER2-positive is
  IHC 3+ or ISH amplified; IHC 2+ with ISH not amplified, or IHC 1+, is HER2-low; IHC 0 is
  HER2-0, and IHC "ultralow" (faint, incomplete membrane staining in <= 10% of cells, the
  DESTINY-Breast06 definition, Bardia A et al., N Engl J Med 2024) is HER2-ultralow. IHC 2+
  without ISH, or with ISH equivocal, is "equivocal": the category is undetermined until the
  ISH is (re)done, and no subtype or HER2 discordance is called on it.
* ER and PR status from the percentage of stained tumour nuclei, ASCO/CAP 2020 (Allison KH et
  al., J Clin Oncol 2020;38:1346-1366): positive at >= ``ReceptorParams.positive_min_percent``
  (10), "low" (ER-low positive) from ``low_min_percent`` (1), negative below; a report that
  gives only the word (positive / low / negative) is taken as is.
* Subtype: hormone-receptor (HR) positive when ER or PR is positive or low (the guideline
  reports 1-10% as low *positive*); HR+/HER2-, HR+/HER2+, HR-/HER2+, triple-negative, with
  the HER2-low or ultralow category added to the label of a HER2-negative subtype.
* Discordance: the primary (earliest primary specimen) against the latest recurrence or
  metastasis: gain or loss of ER, PR (positive or low vs negative) and HER2-positivity, and
  HER2-0 to or from HER2-low / ultralow, each with its implication and citations from the rule
  table. Receptor conversion is common (Schrijver WAME et al., J Natl Cancer Inst
  2018;110:568-580: ER 19%, PR 31%, HER2 10%).

Pure: stdlib (tomllib) and services.errors.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from services.errors import InvalidInput
from services.genomics.tables import versioned_entries

DEFAULT_RULES_PATH: Final[Path] = Path(__file__).resolve().parent / "data" / "receptor_rules.toml"

Specimen = Literal["primary", "recurrence", "metastasis"]
Her2Ihc = Literal["0", "ultralow", "1+", "2+", "3+"]
Her2Ish = Literal["amplified", "not_amplified", "equivocal"]
HormoneStatus = Literal["positive", "low", "negative", "unknown"]
Her2Category = Literal[
    "HER2-positive", "HER2-low", "HER2-ultralow", "HER2-0", "equivocal", "unknown"
]
Subtype = Literal["HR+/HER2-", "HR+/HER2+", "HR-/HER2+", "triple-negative", "undetermined"]

SPECIMENS: Final[tuple[str, ...]] = ("primary", "recurrence", "metastasis")
HER2_IHC: Final[tuple[str, ...]] = ("0", "ultralow", "1+", "2+", "3+")
HER2_ISH: Final[tuple[str, ...]] = ("amplified", "not_amplified", "equivocal")
HORMONE_WORDS: Final[tuple[str, ...]] = ("positive", "low", "negative")
RECEPTORS: Final[tuple[str, ...]] = ("ER", "PR", "HER2")
CHANGES: Final[Mapping[str, tuple[str, ...]]] = {
    "ER": ("gain", "loss"),
    "PR": ("gain", "loss"),
    "HER2": ("gain", "loss", "zero_to_low", "zero_to_ultralow", "low_to_zero", "ultralow_to_zero"),
}
"""Every change the comparison can report; the rule table must have one entry for each."""

_ENTRY_KEYS: Final[frozenset[str]] = frozenset(
    {"id", "receptor", "change", "implication", "citations"}
)


class ReceptorError(InvalidInput):
    """A receptor value or the receptor rule table cannot be used; names what and why."""


@dataclass(frozen=True, slots=True)
class ReceptorParams:
    """Thresholds of ER/PR status; ``version`` is returned with every result."""

    version: str = "receptors-2026.12-1"
    positive_min_percent: float = 10.0
    """ER/PR positive at or above this share of stained nuclei (ASCO/CAP 2020)."""
    low_min_percent: float = 1.0
    """ER/PR low (low positive) from this share up to ``positive_min_percent``; negative
    below (ASCO/CAP 2020: < 1% is negative)."""


@dataclass(frozen=True, slots=True)
class ReceptorTest:
    """One receptor_status event as recorded: ``er`` and ``pr`` are a percentage of stained
    nuclei (0-100) or a word (positive / low / negative); any field may be missing."""

    date: dt.date
    specimen: str
    site: str | None = None
    er: float | str | None = None
    pr: float | str | None = None
    her2_ihc: str | None = None
    her2_ish: str | None = None


@dataclass(frozen=True, slots=True)
class ReceptorProfile:
    """A test read: ER, PR status, HER2 category and the subtype they make."""

    test: ReceptorTest
    er_status: HormoneStatus
    pr_status: HormoneStatus
    her2_category: Her2Category
    subtype: Subtype
    subtype_label: str
    """The subtype with the HER2-low or ultralow category of a HER2-negative tumour, e.g.
    "HR+/HER2- (HER2-low)"."""


@dataclass(frozen=True, slots=True)
class ReceptorRule:
    rule_id: str
    receptor: str
    change: str
    implication: str
    citations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReceptorRules:
    version: str
    rules: tuple[ReceptorRule, ...]
    source: str

    def rule_for(self, receptor: str, change: str) -> ReceptorRule:
        for rule in self.rules:
            if rule.receptor == receptor and rule.change == change:
                return rule
        raise ReceptorError(f"{self.source}: no rule for {receptor} {change}")


@dataclass(frozen=True, slots=True)
class Discordance:
    """A receptor that changed between the primary and the latest recurrence or metastasis."""

    receptor: str
    primary: str
    latest: str
    primary_date: dt.date
    latest_date: dt.date
    change: str
    rule_id: str
    implication: str
    citations: tuple[str, ...]


# --------------------------------------------------------------------------- one test


def hormone_status(value: float | str | None, params: ReceptorParams, what: str) -> HormoneStatus:
    """ER or PR status of a percentage (ASCO/CAP 2020 thresholds) or a reported word."""
    if value is None:
        return "unknown"
    if isinstance(value, str):
        word = value.strip().lower()
        if word == "positive":
            return "positive"
        if word == "low":
            return "low"
        if word == "negative":
            return "negative"
        raise ReceptorError(
            f"{what} {value!r}: a percentage 0-100 or one of {', '.join(HORMONE_WORDS)}"
        )
    if isinstance(value, bool) or not math.isfinite(value) or not 0 <= value <= 100:
        raise ReceptorError(f"{what} {value!r}: a percentage must be between 0 and 100")
    if value >= params.positive_min_percent:
        return "positive"
    if value >= params.low_min_percent:
        return "low"
    return "negative"


def her2_category(ihc: str | None, ish: str | None) -> Her2Category:
    """HER2 category of an IHC score and an ISH result (ASCO/CAP 2023; ultralow per
    DESTINY-Breast06). IHC 3+ or ISH amplified is positive; IHC 2+ needs the ISH (not
    amplified: HER2-low; missing or equivocal: "equivocal"); IHC 0, ultralow and 1+ are read
    from the IHC alone. An ISH without IHC that is not amplified cannot tell HER2-0 from low:
    "equivocal"; nothing at all: "unknown"."""
    if ihc is not None and ihc not in HER2_IHC:
        raise ReceptorError(f"her2_ihc {ihc!r}: one of {', '.join(HER2_IHC)}")
    if ish is not None and ish not in HER2_ISH:
        raise ReceptorError(f"her2_ish {ish!r}: one of {', '.join(HER2_ISH)}")
    if ihc == "3+" or ish == "amplified":
        return "HER2-positive"
    if ihc == "2+":
        return "HER2-low" if ish == "not_amplified" else "equivocal"
    if ihc == "1+":
        return "HER2-low"
    if ihc == "ultralow":
        return "HER2-ultralow"
    if ihc == "0":
        return "HER2-0"
    # No IHC: ISH not amplified says HER2-negative but not which of 0 / ultralow / low.
    return "equivocal" if ish is not None else "unknown"


def subtype(er: HormoneStatus, pr: HormoneStatus, her2: Her2Category) -> tuple[Subtype, str]:
    """The subtype and its label (HER2-low or ultralow added to a HER2-negative subtype)."""
    positive = ("positive", "low")
    if er in positive or pr in positive:
        hr: bool | None = True
    elif er == "negative" and pr in ("negative", "unknown"):
        hr = False
    else:
        hr = None
    her2_positive = her2 == "HER2-positive"
    her2_negative = her2 in ("HER2-low", "HER2-ultralow", "HER2-0")
    name: Subtype
    if hr is None or not (her2_positive or her2_negative):
        name = "undetermined"
    elif her2_positive:
        name = "HR+/HER2+" if hr else "HR-/HER2+"
    else:
        name = "HR+/HER2-" if hr else "triple-negative"
    if name in ("HR+/HER2-", "triple-negative") and her2 in ("HER2-low", "HER2-ultralow"):
        return name, f"{name} ({her2})"
    return name, name


def profile(test: ReceptorTest, params: ReceptorParams | None = None) -> ReceptorProfile:
    """Read one test; raises ReceptorError naming the field of a value out of vocabulary."""
    params = params or ReceptorParams()
    if test.specimen not in SPECIMENS:
        raise ReceptorError(f"specimen {test.specimen!r}: one of {', '.join(SPECIMENS)}")
    er = hormone_status(test.er, params, "er")
    pr = hormone_status(test.pr, params, "pr")
    her2 = her2_category(test.her2_ihc, test.her2_ish)
    name, label = subtype(er, pr, her2)
    return ReceptorProfile(test, er, pr, her2, name, label)


# --------------------------------------------------------------------------- discordance


def _hormone_change(primary: HormoneStatus, latest: HormoneStatus) -> str | None:
    if "unknown" in (primary, latest):
        return None
    before, after = primary != "negative", latest != "negative"
    if before and not after:
        return "loss"
    if after and not before:
        return "gain"
    return None


_HER2_SHORT: Final[Mapping[str, str]] = {
    "HER2-0": "zero",
    "HER2-low": "low",
    "HER2-ultralow": "ultralow",
}


def _her2_change(primary: Her2Category, latest: Her2Category) -> str | None:
    if {primary, latest} & {"equivocal", "unknown"}:
        return None
    if primary != "HER2-positive" and latest == "HER2-positive":
        return "gain"
    if primary == "HER2-positive" and latest != "HER2-positive":
        return "loss"
    if primary == "HER2-0" and latest in ("HER2-low", "HER2-ultralow"):
        return f"zero_to_{_HER2_SHORT[latest]}"
    if primary in ("HER2-low", "HER2-ultralow") and latest == "HER2-0":
        return f"{_HER2_SHORT[primary]}_to_zero"
    return None


def discordance(profiles: Sequence[ReceptorProfile], rules: ReceptorRules) -> list[Discordance]:
    """Changes between the earliest primary specimen and the latest recurrence or metastasis
    (by date; the later given wins a tie). Empty without both; a receptor missing or
    undetermined on either side is not compared."""
    primaries = [p for p in profiles if p.test.specimen == "primary"]
    relapses = [p for p in profiles if p.test.specimen != "primary"]
    if not primaries or not relapses:
        return []
    first = min(primaries, key=lambda p: p.test.date)
    latest = max(enumerate(relapses), key=lambda ip: (ip[1].test.date, ip[0]))[1]
    compared: list[tuple[str, str, str, str | None]] = [
        (
            "ER",
            first.er_status,
            latest.er_status,
            _hormone_change(first.er_status, latest.er_status),
        ),
        (
            "PR",
            first.pr_status,
            latest.pr_status,
            _hormone_change(first.pr_status, latest.pr_status),
        ),
        (
            "HER2",
            first.her2_category,
            latest.her2_category,
            _her2_change(first.her2_category, latest.her2_category),
        ),
    ]
    found: list[Discordance] = []
    for receptor, before, after, change in compared:
        if change is None:
            continue
        rule = rules.rule_for(receptor, change)
        found.append(
            Discordance(
                receptor=receptor,
                primary=before,
                latest=after,
                primary_date=first.test.date,
                latest_date=latest.test.date,
                change=change,
                rule_id=rule.rule_id,
                implication=rule.implication,
                citations=rule.citations,
            )
        )
    return found


# --------------------------------------------------------------------------- the rule table


def load_receptor_rules(path: Path | str | None = None) -> ReceptorRules:
    """Read and validate the rule table (default: the packaged data/receptor_rules.toml).

    Raises ReceptorError naming the file (and the entry) on unreadable TOML, a missing version,
    no entries, an unknown key, receptor or change, a missing implication or citations, a
    duplicate id or (receptor, change), or a change the comparison can report without a rule.
    """
    source = Path(path) if path is not None else DEFAULT_RULES_PATH
    version, raw_entries = versioned_entries(source, ReceptorError, "the receptor rules")
    rules: list[ReceptorRule] = []
    for index, raw in enumerate(raw_entries, start=1):
        rule = _parse_rule(raw, f"{source}: entry {index}")
        for seen in rules:
            if seen.rule_id == rule.rule_id:
                raise ReceptorError(f"{source}: entry {index}: duplicate id {rule.rule_id!r}")
            if (seen.receptor, seen.change) == (rule.receptor, rule.change):
                raise ReceptorError(
                    f"{source}: entry {index}: a second rule for {rule.receptor} {rule.change}"
                )
        rules.append(rule)
    covered = {(r.receptor, r.change) for r in rules}
    missing = [
        f"{r} {c}" for r, changes in CHANGES.items() for c in changes if (r, c) not in covered
    ]
    if missing:
        raise ReceptorError(f"{source}: no rule for {', '.join(missing)}")
    return ReceptorRules(version=version.strip(), rules=tuple(rules), source=str(source))


def _text(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ReceptorError(f"{where}: {key!r} must be a non-empty string")
    return " ".join(value.split())


def _parse_rule(raw: Any, where: str) -> ReceptorRule:
    if not isinstance(raw, dict):
        raise ReceptorError(f"{where}: not a table")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise ReceptorError(f"{where}: unknown key(s) {', '.join(unknown)}")
    rule_id = _text(raw, "id", where)
    receptor = _text(raw, "receptor", where)
    if receptor not in RECEPTORS:
        raise ReceptorError(f"{where} ({rule_id}): receptor {receptor!r} not one of ER, PR, HER2")
    change = _text(raw, "change", where)
    if change not in CHANGES[receptor]:
        raise ReceptorError(
            f"{where} ({rule_id}): change {change!r} of {receptor} not one of "
            f"{', '.join(CHANGES[receptor])}"
        )
    citations = raw.get("citations")
    if (
        not isinstance(citations, list)
        or not citations
        or not all(isinstance(c, str) and c.strip() for c in citations)
    ):
        raise ReceptorError(f"{where} ({rule_id}): 'citations' must be a non-empty list of strings")
    return ReceptorRule(
        rule_id=rule_id,
        receptor=receptor,
        change=change,
        implication=_text(raw, "implication", where),
        citations=tuple(" ".join(c.split()) for c in citations),
    )
