"""Drug vocabulary, drug -> class table, and therapy lines from start/stop events."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.errors import InvalidInput
from services.genomics.therapy import (
    DRUG_CLASSES,
    TherapyEvent,
    TherapyLine,
    classes_on,
    drug_class_for,
    lines_on,
    therapy_lines,
)

D = dt.date


def test_vocabulary_is_the_public_contract() -> None:
    assert DRUG_CLASSES == (
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


@pytest.mark.parametrize(
    ("drug", "expected"),
    [
        ("letrozole", "aromatase_inhibitor"),
        ("Femara", "aromatase_inhibitor"),
        ("ANASTROZOLE", "aromatase_inhibitor"),
        ("exemestane", "aromatase_inhibitor"),
        ("fulvestrant", "serd"),
        ("Faslodex", "serd"),
        ("elacestrant", "serd"),
        ("camizestrant", "serd"),
        ("imlunestrant", "serd"),
        ("giredestrant", "serd"),
        ("palbociclib", "cdk46_inhibitor"),
        ("Ibrance", "cdk46_inhibitor"),
        ("ribociclib", "cdk46_inhibitor"),
        ("abemaciclib", "cdk46_inhibitor"),
        ("alpelisib", "pi3k_inhibitor"),
        ("inavolisib", "pi3k_inhibitor"),
        ("capivasertib", "akt_inhibitor"),
        ("everolimus", "mtor_inhibitor"),
        ("neratinib", "her2_tki"),
        ("tucatinib", "her2_tki"),
        ("lapatinib", "her2_tki"),
        ("trastuzumab", "her2_antibody"),
        ("pertuzumab", "her2_antibody"),
        ("trastuzumab deruxtecan", "her2_adc"),
        ("Trastuzumab-Deruxtecan", "her2_adc"),
        ("T-DM1", "her2_adc"),
        ("t-dm1", "her2_adc"),
        ("trastuzumab emtansine", "her2_adc"),
        ("Kadcyla", "her2_adc"),
        ("capecitabine", "chemotherapy"),
        ("paclitaxel", "chemotherapy"),
        ("docetaxel", "chemotherapy"),
        ("eribulin", "chemotherapy"),
        ("tamoxifen", "other"),
    ],
)
def test_known_drug_alone_implies_its_class(drug: str, expected: str) -> None:
    assert drug_class_for(drug, None) == expected
    assert drug_class_for(f"  {drug} ", None) == expected


def test_trastuzumab_and_its_conjugates_are_not_confused() -> None:
    assert drug_class_for("trastuzumab", None) == "her2_antibody"
    assert drug_class_for("trastuzumab deruxtecan", None) == "her2_adc"


def test_explicit_class_wins_for_an_unknown_drug_and_must_be_valid() -> None:
    assert drug_class_for("investigational-123", "serd") == "serd"
    assert drug_class_for(None, "chemotherapy") == "chemotherapy"
    with pytest.raises(InvalidInput, match="unknown drug class 'serm'"):
        drug_class_for("tamoxifen", "serm")


def test_unknown_drug_without_class_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match=r"unknown drug 'zorbexifen'.*drug_class"):
        drug_class_for("zorbexifen", None)
    with pytest.raises(InvalidInput, match="drug name, a drug class"):
        drug_class_for(None, None)
    with pytest.raises(InvalidInput):
        drug_class_for("  ", "")


def test_drug_class_mismatch_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="letrozole.*aromatase_inhibitor, not a serd"):
        drug_class_for("letrozole", "serd")
    assert drug_class_for("Letrozole", "aromatase_inhibitor") == "aromatase_inhibitor"


def start(day: dt.date, drug: str | None = None, drug_class: str | None = None) -> TherapyEvent:
    return TherapyEvent("therapy_start", day, drug, drug_class)


def stop(day: dt.date, drug: str | None = None, drug_class: str | None = None) -> TherapyEvent:
    return TherapyEvent("therapy_stop", day, drug, drug_class)


def test_combination_then_switch_of_the_endocrine_partner() -> None:
    events = [
        start(D(2025, 1, 10), "Femara"),
        start(D(2025, 1, 10), "palbociclib"),
        stop(D(2025, 9, 1), "letrozole"),
        start(D(2025, 9, 1), "fulvestrant"),
    ]
    lines = therapy_lines(events)
    assert lines == [
        TherapyLine("letrozole", "aromatase_inhibitor", D(2025, 1, 10), D(2025, 9, 1)),
        TherapyLine("palbociclib", "cdk46_inhibitor", D(2025, 1, 10), None),
        TherapyLine("fulvestrant", "serd", D(2025, 9, 1), None),
    ]
    # A draw on the start date is the baseline; a draw on the stop date still reflects the drug.
    assert classes_on(lines, D(2025, 1, 10)) == frozenset()
    assert classes_on(lines, D(2025, 1, 11)) == {"aromatase_inhibitor", "cdk46_inhibitor"}
    assert classes_on(lines, D(2025, 9, 1)) == {"aromatase_inhibitor", "cdk46_inhibitor"}
    assert classes_on(lines, D(2025, 9, 2)) == {"serd", "cdk46_inhibitor"}
    assert [line.drug for line in lines_on(lines, D(2026, 1, 1))] == ["palbociclib", "fulvestrant"]


def test_stop_by_class_closes_every_open_line_of_that_class() -> None:
    lines = therapy_lines(
        [
            start(D(2025, 2, 1), "paclitaxel"),
            start(D(2025, 2, 1), "carboplatin"),
            start(D(2025, 2, 1), "trastuzumab"),
            stop(D(2025, 6, 1), drug_class="chemotherapy"),
        ]
    )
    assert {line.drug: line.stop_date for line in lines} == {
        "paclitaxel": D(2025, 6, 1),
        "carboplatin": D(2025, 6, 1),
        "trastuzumab": None,
    }


def test_a_class_only_line_is_stopped_by_its_class() -> None:
    lines = therapy_lines([start(D(2025, 1, 1), None, "other"), stop(D(2025, 3, 1), None, "other")])
    assert lines == [TherapyLine(None, "other", D(2025, 1, 1), D(2025, 3, 1))]


def test_events_are_applied_in_date_order() -> None:
    lines = therapy_lines([stop(D(2025, 5, 1), "anastrozole"), start(D(2025, 1, 1), "Arimidex")])
    assert lines == [
        TherapyLine("anastrozole", "aromatase_inhibitor", D(2025, 1, 1), D(2025, 5, 1))
    ]


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([stop(D(2025, 1, 1), "letrozole")], "no ongoing line of letrozole"),
        ([stop(D(2025, 1, 1), drug_class="serd")], "no ongoing line of serd"),
        ([start(D(2025, 1, 1), "letrozole"), start(D(2025, 2, 1), "femara")], "already ongoing"),
        ([start(D(2025, 1, 1), "letrozole"), stop(D(2025, 2, 1))], "neither a drug"),
        (
            [start(D(2025, 1, 1), "letrozole"), stop(D(2025, 2, 1), "letrozole", "serd")],
            "letrozole was started as aromatase_inhibitor, not serd",
        ),
        ([start(D(2025, 1, 1), "mysterinib")], "unknown drug 'mysterinib'"),
    ],
)
def test_inconsistent_events_raise(events: list[TherapyEvent], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        therapy_lines(events)


def test_only_therapy_event_types_are_accepted() -> None:
    with pytest.raises(InvalidInput, match="not a therapy event type"):
        TherapyEvent("surgery", D(2025, 1, 1))  # type: ignore[arg-type]


_DRUGS = ["letrozole", "palbociclib", "fulvestrant", "capecitabine", "alpelisib"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_DRUGS),
            st.integers(min_value=0, max_value=300),
            st.one_of(st.none(), st.integers(min_value=0, max_value=300)),
        ),
        max_size=8,
    ),
    st.randoms(use_true_random=False),
)
def test_lines_round_trip_from_shuffled_events(
    spans: list[tuple[str, int, int | None]], shuffler: object
) -> None:
    """Non-overlapping courses per drug, as events in any order, give back the same lines."""
    origin = D(2025, 1, 1)
    courses: list[tuple[str, int, int | None]] = []
    busy_until: dict[str, float] = {}
    for drug, begin, length in sorted(spans, key=lambda s: s[1]):
        if begin <= busy_until.get(drug, -1):
            continue
        end = None if length is None else begin + length
        courses.append((drug, begin, end))
        busy_until[drug] = float("inf") if end is None else end
    events = []
    for drug, begin, end in courses:
        events.append(start(origin + dt.timedelta(days=begin), drug))
        if end is not None:
            events.append(stop(origin + dt.timedelta(days=end), drug))
    # Same-day events keep their order; only whole days are shuffled.
    days = sorted({e.date for e in events})
    shuffler.shuffle(days)  # type: ignore[attr-defined]
    shuffled = [e for day in days for e in events if e.date == day]
    lines = therapy_lines(shuffled)
    expected = {
        (drug, origin + dt.timedelta(days=b), None if e is None else origin + dt.timedelta(days=e))
        for drug, b, e in courses
    }
    assert {(line.drug, line.start_date, line.stop_date) for line in lines} == expected
    for probe in range(0, 320, 7):
        day = origin + dt.timedelta(days=probe)
        brute = {
            drug_class_for(drug, None)
            for drug, b, e in courses
            if b < probe and (e is None or probe <= e)
        }
        assert classes_on(lines, day) == brute
