"""Therapy vocabulary and therapy lines built from a patient's start/stop events.

Owns the controlled vocabulary of drug classes (the public contract's list, nothing more), the
table of known drug names (generic and brand, case-insensitive) that imply a class, and the
reconstruction of therapy lines from ``therapy_start`` / ``therapy_stop`` events.

Date convention, used everywhere a draw is set against a line: a blood draw taken on the day
of a therapy change is taken *before* the change. A line therefore covers the half-open
interval ``(start_date, stop_date]``: the draw on the start date is the line's baseline
(pre-dose), the draw on the stop date still reflects the stopped drug. This is the convention of
the ctDNA switching trials, where the draw that shows the mutation is what triggers the switch
(PADA-1, Bidard et al., Lancet Oncol 2022; SERENA-6, Turner et al., N Engl J Med 2025).

Pure: imports only the standard library and ``services.errors``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from services.errors import InvalidInput

DRUG_CLASSES: Final[tuple[str, ...]] = (
    "aromatase_inhibitor",
    "serd",
    "cdk46_inhibitor",
    "pi3k_inhibitor",
    "akt_inhibitor",
    "mtor_inhibitor",
    "her2_tki",
    "her2_antibody",
    "her2_adc",
    "chemotherapy",
    "other",
)

# Generic name -> (class, other spellings: brands, abbreviations, USAN prefixes). Classes the
# vocabulary does not have (SERMs, LHRH agonists, PARP inhibitors, TROP2 ADCs, immunotherapy)
# are "other" on purpose: the vocabulary is part of the public contract.
_DRUGS: Final[Mapping[str, tuple[str, tuple[str, ...]]]] = {
    "letrozole": ("aromatase_inhibitor", ("femara",)),
    "anastrozole": ("aromatase_inhibitor", ("arimidex",)),
    "exemestane": ("aromatase_inhibitor", ("aromasin",)),
    "fulvestrant": ("serd", ("faslodex",)),
    "elacestrant": ("serd", ("orserdu",)),
    "camizestrant": ("serd", ("azd9833",)),
    "imlunestrant": ("serd", ("inluriyo", "ly3484356")),
    "giredestrant": ("serd", ("gdc-9545",)),
    "amcenestrant": ("serd", ()),
    "vepdegestrant": ("serd", ("arv-471",)),
    "palbociclib": ("cdk46_inhibitor", ("ibrance",)),
    "ribociclib": ("cdk46_inhibitor", ("kisqali",)),
    "abemaciclib": ("cdk46_inhibitor", ("verzenio", "verzenios")),
    "dalpiciclib": ("cdk46_inhibitor", ()),
    "alpelisib": ("pi3k_inhibitor", ("piqray",)),
    "inavolisib": ("pi3k_inhibitor", ("itovebi",)),
    "capivasertib": ("akt_inhibitor", ("truqap",)),
    "ipatasertib": ("akt_inhibitor", ()),
    "everolimus": ("mtor_inhibitor", ("afinitor",)),
    "neratinib": ("her2_tki", ("nerlynx",)),
    "tucatinib": ("her2_tki", ("tukysa",)),
    "lapatinib": ("her2_tki", ("tykerb", "tyverb")),
    "pyrotinib": ("her2_tki", ()),
    "afatinib": ("her2_tki", ("gilotrif", "giotrif")),
    "trastuzumab": ("her2_antibody", ("herceptin",)),
    "pertuzumab": ("her2_antibody", ("perjeta",)),
    "pertuzumab/trastuzumab": ("her2_antibody", ("phesgo",)),
    "margetuximab": ("her2_antibody", ("margenza",)),
    "trastuzumab deruxtecan": (
        "her2_adc",
        ("enhertu", "t-dxd", "ds-8201", "fam-trastuzumab deruxtecan-nxki"),
    ),
    "trastuzumab emtansine": (
        "her2_adc",
        ("kadcyla", "t-dm1", "tdm1", "ado-trastuzumab emtansine"),
    ),
    "capecitabine": ("chemotherapy", ("xeloda",)),
    "paclitaxel": ("chemotherapy", ("taxol",)),
    "nab-paclitaxel": ("chemotherapy", ("abraxane",)),
    "docetaxel": ("chemotherapy", ("taxotere",)),
    "eribulin": ("chemotherapy", ("halaven",)),
    "vinorelbine": ("chemotherapy", ("navelbine",)),
    "gemcitabine": ("chemotherapy", ("gemzar",)),
    "carboplatin": ("chemotherapy", ()),
    "cisplatin": ("chemotherapy", ()),
    "doxorubicin": ("chemotherapy", ("adriamycin",)),
    "pegylated liposomal doxorubicin": ("chemotherapy", ("doxil", "caelyx")),
    "epirubicin": ("chemotherapy", ("ellence",)),
    "cyclophosphamide": ("chemotherapy", ()),
    "fluorouracil": ("chemotherapy", ("5-fu", "5-fluorouracil")),
    "methotrexate": ("chemotherapy", ()),
    "tamoxifen": ("other", ("nolvadex",)),
    "toremifene": ("other", ("fareston",)),
    "goserelin": ("other", ("zoladex",)),
    "leuprorelin": ("other", ("leuprolide", "lupron")),
    "olaparib": ("other", ("lynparza",)),
    "talazoparib": ("other", ("talzenna",)),
    "sacituzumab govitecan": ("other", ("trodelvy",)),
    "datopotamab deruxtecan": ("other", ("datroway", "dato-dxd")),
    "pembrolizumab": ("other", ("keytruda",)),
    "atezolizumab": ("other", ("tecentriq",)),
    "bevacizumab": ("other", ("avastin",)),
}


def _name_key(name: str) -> str:
    """Case-, space- and punctuation-insensitive key: "T-DM1", "t dm1" and "tdm1 " agree."""
    return re.sub(r"[^a-z0-9]+", "", name.casefold())


def _build_index() -> dict[str, tuple[str, str]]:
    index: dict[str, tuple[str, str]] = {}
    for generic, (drug_class, aliases) in _DRUGS.items():
        for name in (generic, *aliases):
            key = _name_key(name)
            if key in index and index[key] != (generic, drug_class):
                raise AssertionError(f"drug table: {name!r} is listed twice")
            index[key] = (generic, drug_class)
    return index


_DRUG_INDEX: Final[Mapping[str, tuple[str, str]]] = _build_index()

TherapyEventType = Literal["therapy_start", "therapy_stop"]


def known_drug(drug: str) -> tuple[str, str] | None:
    """``(generic name, drug class)`` of a known drug or brand name, else None."""
    return _DRUG_INDEX.get(_name_key(drug))


def canonical_drug_name(drug: str) -> str:
    """The generic name of a known drug, else the given name with surrounding spaces removed."""
    hit = known_drug(drug)
    return hit[0] if hit is not None else drug.strip()


def _valid_class(drug_class: str) -> str:
    normalised = drug_class.strip().lower()
    if normalised not in DRUG_CLASSES:
        raise InvalidInput(
            f"unknown drug class {drug_class!r}; expected one of {', '.join(DRUG_CLASSES)}"
        )
    return normalised


def drug_class_for(drug: str | None, drug_class: str | None) -> str:
    """The drug class of an event from its drug name and/or explicit class.

    An explicit class must be in the vocabulary; it wins for drugs we do not know. A known drug
    alone implies its class. Raises InvalidInput for an unknown class, an unknown drug without a
    class, a drug whose known class differs from the explicit one, or neither given.
    """
    name = drug.strip() if drug is not None else ""
    hit = known_drug(name) if name else None
    if drug_class is not None and drug_class.strip() != "":
        explicit = _valid_class(drug_class)
        if hit is not None and hit[1] != explicit:
            raise InvalidInput(
                f"drug {name!r} ({hit[0]}) is a {hit[1]}, not a {explicit}; "
                "fix the drug name or the drug class"
            )
        return explicit
    if not name:
        raise InvalidInput("a therapy event needs a drug name, a drug class, or both")
    if hit is None:
        raise InvalidInput(
            f"unknown drug {name!r}: give its drug_class (one of {', '.join(DRUG_CLASSES)})"
        )
    return hit[1]


@dataclass(frozen=True, slots=True)
class TherapyEvent:
    """One ``therapy_start`` or ``therapy_stop`` event as recorded on the patient."""

    type: TherapyEventType
    date: dt.date
    drug: str | None = None
    drug_class: str | None = None

    def __post_init__(self) -> None:
        if self.type not in ("therapy_start", "therapy_stop"):
            raise InvalidInput(f"not a therapy event type: {self.type!r}")


@dataclass(frozen=True, slots=True)
class TherapyLine:
    """One drug (or one class when no drug was named) given over ``(start_date, stop_date]``.

    ``drug`` is the generic name for known drugs, the given name otherwise. ``stop_date`` is None
    while the line is ongoing. Combinations (AI + palbociclib) are several concurrent lines.
    """

    drug: str | None
    drug_class: str
    start_date: dt.date
    stop_date: dt.date | None

    def covers(self, date: dt.date) -> bool:
        """True if a draw taken on ``date`` reflects this line (see the module's convention)."""
        return self.start_date < date and (self.stop_date is None or date <= self.stop_date)


def therapy_lines(events: Iterable[TherapyEvent]) -> list[TherapyLine]:
    """Therapy lines from start/stop events, ordered by start date.

    Events are applied in date order (stable, so same-day events keep their recorded order).
    A start opens a line; starting a drug (or a drug-less class) that is already open raises
    InvalidInput. A stop naming a drug closes the open line of that drug; a stop naming only a
    class closes every open line of that class (stopping "chemotherapy" stops all of it). A
    stop that matches no open line, or a stop dated before its line's start, raises InvalidInput.
    """
    closed: list[TherapyLine] = []
    open_lines: list[TherapyLine] = []
    for event in sorted(events, key=lambda e: e.date):
        if event.type == "therapy_start":
            drug_class = drug_class_for(event.drug, event.drug_class)
            drug = canonical_drug_name(event.drug) if event.drug and event.drug.strip() else None
            for line in open_lines:
                if _same_agent(line, drug, drug_class):
                    raise InvalidInput(
                        f"therapy_start on {event.date}: {drug or drug_class} is already "
                        f"ongoing since {line.start_date}"
                    )
            open_lines.append(TherapyLine(drug, drug_class, event.date, None))
            continue
        to_close = _lines_stopped_by(event, open_lines)
        for line in to_close:
            if event.date < line.start_date:
                raise InvalidInput(
                    f"therapy_stop on {event.date} precedes the start of "
                    f"{line.drug or line.drug_class} on {line.start_date}"
                )
            open_lines.remove(line)
            closed.append(TherapyLine(line.drug, line.drug_class, line.start_date, event.date))
    return sorted(
        [*closed, *open_lines], key=lambda line: (line.start_date, line.drug_class, line.drug or "")
    )


def _same_agent(line: TherapyLine, drug: str | None, drug_class: str) -> bool:
    if drug is not None:
        return line.drug is not None and _name_key(line.drug) == _name_key(drug)
    return line.drug is None and line.drug_class == drug_class


def _lines_stopped_by(event: TherapyEvent, open_lines: Sequence[TherapyLine]) -> list[TherapyLine]:
    if event.drug is not None and event.drug.strip():
        drug = canonical_drug_name(event.drug)
        matches = [
            line
            for line in open_lines
            if line.drug is not None and _name_key(line.drug) == _name_key(drug)
        ]
        if matches and event.drug_class is not None and event.drug_class.strip():
            explicit = _valid_class(event.drug_class)
            if matches[0].drug_class != explicit:
                raise InvalidInput(
                    f"therapy_stop on {event.date}: {drug} was started as "
                    f"{matches[0].drug_class}, not {explicit}"
                )
        what = drug
    elif event.drug_class is not None and event.drug_class.strip():
        drug_class = _valid_class(event.drug_class)
        matches = [line for line in open_lines if line.drug_class == drug_class]
        what = drug_class
    else:
        raise InvalidInput(f"therapy_stop on {event.date} names neither a drug nor a drug class")
    if not matches:
        raise InvalidInput(f"therapy_stop on {event.date}: no ongoing line of {what}")
    return matches


def lines_on(lines: Iterable[TherapyLine], date: dt.date) -> list[TherapyLine]:
    """The lines a draw taken on ``date`` reflects (start exclusive, stop inclusive)."""
    return [line for line in lines if line.covers(date)]


def classes_on(lines: Iterable[TherapyLine], date: dt.date) -> frozenset[str]:
    """The drug classes a draw taken on ``date`` reflects."""
    return frozenset(line.drug_class for line in lines_on(lines, date))
