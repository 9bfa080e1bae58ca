"""Resistance map (data, validated) and emerging-resistance events on therapy."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, stats

from services.errors import InvalidInput
from services.genomics.longitudinal import LocusObservation, LocusSeries, locus_lod95
from services.genomics.resistance import (
    DEFAULT_HOTSPOTS_PATH,
    DEFAULT_MAP_PATH,
    ESCAT_TIERS,
    ResistanceMap,
    ResistanceMapError,
    ResistanceParams,
    detect_resistance_events,
    load_resistance_map,
    normalise_protein_change,
    resistance_report,
)
from services.genomics.therapy import TherapyEvent, TherapyLine, therapy_lines

D0 = dt.date(2025, 1, 1)
PARAMS = ResistanceParams()


@pytest.fixture(scope="module")
def rmap() -> ResistanceMap:
    return load_resistance_map()


def on_therapy(*drugs: str, start: dt.date = D0 - dt.timedelta(days=30)) -> list[TherapyLine]:
    return therapy_lines([TherapyEvent("therapy_start", start, drug) for drug in drugs])


def series_of(
    counts: list[tuple[int, int]],
    gene: str = "ESR1",
    protein: str = "p.D538G",
    background: float = 1e-4,
    every_days: int = 60,
) -> LocusSeries:
    return LocusSeries(
        key=f"{gene}:{protein}",
        gene=gene,
        protein_change=protein,
        observations=tuple(
            LocusObservation(f"s{t}", D0 + dt.timedelta(days=every_days * t), m, r, background)
            for t, (m, r) in enumerate(counts)
        ),
    )


# --------------------------------------------------------------------------- the map


def test_packaged_map_is_versioned_and_every_entry_is_cited(rmap: ResistanceMap) -> None:
    assert rmap.version == "2026.12-1"
    assert len(rmap.entries) >= 8
    for entry in rmap.entries:
        assert entry.citations and all(c.strip() for c in entry.citations)
        assert entry.implication
        assert entry.evidence_level in ESCAT_TIERS


@pytest.mark.parametrize(
    ("gene", "protein", "entry_id", "escat", "oncokb"),
    [
        ("ESR1", "p.D538G", "esr1-lbd-elacestrant-sensitivity", "IA", "1"),
        ("ESR1", "p.Y537S", "esr1-lbd-ai-resistance", "IIA", None),
        ("PIK3CA", "p.H1047R", "pik3ca-activating-pi3k-sensitivity", "IA", "1"),
        ("PIK3CA", "p.E545K", "pik3ca-activating-akt-sensitivity", "IA", "1"),
        ("AKT1", "p.E17K", "akt1-e17k-akt-sensitivity", "IA", "1"),
        ("ERBB2", "p.L869R", "erbb2-activating-neratinib-sensitivity", "IIB", None),
        ("ERBB2", "p.T798I", "erbb2-t798i-her2-tki-resistance", "IVA", None),
    ],
)
def test_every_effect_carries_its_evidence_level(
    rmap: ResistanceMap,
    gene: str,
    protein: str,
    entry_id: str,
    escat: str,
    oncokb: str | None,
) -> None:
    effect = next(e for e in rmap.effects_for(gene, protein) if e.entry_id == entry_id)
    assert (effect.evidence_level, effect.oncokb_level) == (escat, oncokb)


@pytest.mark.parametrize(
    "protein",
    [
        "p.E380Q", "p.V422del", "p.S463P", "p.L469V", "p.L536H", "p.L536P", "p.L536R",
        "p.L536Q", "p.Y537S", "p.Y537N", "p.Y537C", "p.Y537D", "p.D538G",
    ],
)  # fmt: skip
def test_established_esr1_mutations_resist_ais_and_mean_elacestrant(
    rmap: ResistanceMap, protein: str
) -> None:
    effects = rmap.effects_for("ESR1", protein)
    assert not any(e.vus for e in effects)
    assert ("resistance", "aromatase_inhibitor") in {(e.effect, e.drug_class) for e in effects}
    (serd,) = [e for e in effects if e.effect == "sensitivity"]
    assert (serd.drug_class, serd.drugs, serd.evidence_level, serd.oncokb_level) == (
        "serd",
        ("elacestrant",),
        "IA",
        "1",
    )
    assert any("EMERALD" in c for c in serd.citations)


@pytest.mark.parametrize("protein", ["p.K531E", "p.Leu536Val", "p.A380T", "p.R548W"])
def test_other_esr1_lbd_missense_is_a_vus_shown_not_alerted(
    rmap: ResistanceMap, protein: str
) -> None:
    (effect,) = rmap.effects_for("ESR1", protein)
    assert effect.vus and effect.effect == "vus" and effect.evidence_level == "X"
    assert effect.implication == (
        "variant of unknown significance in the ligand-binding domain: shown, not alerted"
    )
    assert "vus" not in PARAMS.trigger_effects
    assert rmap.resisted_classes("ESR1", protein) == frozenset()
    # Listed with the patient's variants, never an event, whatever the therapy.
    locus = series_of([(0, 5000), (0, 5000), (40, 5000), (200, 5000)], protein=protein)
    report = resistance_report([locus], on_therapy("letrozole", "palbociclib"), rmap, PARAMS)
    assert report.events == ()
    (status,) = report.variants
    assert status.status == "detected" and status.resisted_classes_on == ()
    assert [e.effect for e in status.effects] == ["vus"]


@pytest.mark.parametrize(
    "protein",
    [
        "p.D538G",
        "p.Y537S",
        "p.Y537N",
        "p.Y537C",
        "p.E380Q",
        "p.L536R",
        "p.L536H",
        "p.S463P",
        "p.V422del",
    ],
)
def test_esr1_lbd_mutations_resist_aromatase_inhibitors(rmap: ResistanceMap, protein: str) -> None:
    assert "aromatase_inhibitor" in rmap.resisted_classes("ESR1", protein)
    effect = next(e for e in rmap.effects_for("ESR1", protein) if e.effect == "resistance")
    assert "SERD" in effect.implication and "PADA-1" in effect.implication
    assert any("PADA-1" in c for c in effect.citations)


def test_only_y537s_is_relatively_serd_resistant(rmap: ResistanceMap) -> None:
    y537s = {(e.effect, e.drug_class) for e in rmap.effects_for("ESR1", "p.Y537S")}
    assert ("relative_resistance", "serd") in y537s
    assert "serd" not in rmap.resisted_classes("ESR1", "p.D538G")
    assert rmap.resisted_classes("ESR1", "p.Y537S", include_relative=False) == {
        "aromatase_inhibitor"
    }


def test_esr1_outside_the_lbd_or_not_missense_is_not_mapped(rmap: ResistanceMap) -> None:
    assert rmap.effects_for("ESR1", "p.S47T") == []
    assert rmap.effects_for("ESR1", "p.E380*") == []
    assert rmap.effects_for("ESR1", "p.D538=") == []


def test_every_pik3ca_hotspot_row_gives_pi3k_and_akt_sensitivity(rmap: ResistanceMap) -> None:
    with DEFAULT_HOTSPOTS_PATH.open() as handle:
        proteins = {
            r["protein"] for r in csv.DictReader(handle, delimiter="\t") if r["gene"] == "PIK3CA"
        }
    assert len(proteins) >= 10
    for protein in proteins:
        effects = {(e.effect, e.drug_class) for e in rmap.effects_for("PIK3CA", protein)}
        assert {("sensitivity", "pi3k_inhibitor"), ("sensitivity", "akt_inhibitor")} <= effects
        assert rmap.resisted_classes("PIK3CA", protein) == frozenset()


def test_akt1_e17k_means_capivasertib(rmap: ResistanceMap) -> None:
    (effect,) = rmap.effects_for("AKT1", "p.Glu17Lys")
    assert (effect.effect, effect.drug_class, effect.drugs) == (
        "sensitivity",
        "akt_inhibitor",
        ("capivasertib",),
    )


@pytest.mark.parametrize(
    "protein",
    [
        "p.S310F",
        "p.S310Y",
        "p.L755S",
        "p.V777L",
        "p.D769Y",
        "p.D769H",
        "p.V842I",
        "p.L869R",
        "p.R678Q",
        "p.Y772_A775dup",
        "p.A775_G776insYVMA",
        "p.G776delinsVC",
    ],
)
def test_erbb2_activating_is_endocrine_resistant_and_neratinib_sensitive(
    rmap: ResistanceMap, protein: str
) -> None:
    assert {"aromatase_inhibitor", "serd"} <= rmap.resisted_classes("ERBB2", protein)
    sensitive = [e for e in rmap.effects_for("ERBB2", protein) if e.effect == "sensitivity"]
    assert [(e.drug_class, e.drugs) for e in sensitive] == [("her2_tki", ("neratinib",))]
    assert all(e.context.startswith("HER2-non-amplified") for e in sensitive)


def test_erbb2_t798i_resists_neratinib_only(rmap: ResistanceMap) -> None:
    assert rmap.resisted_classes("ERBB2", "p.T798I") == {"her2_tki"}
    assert rmap.resisted_classes("ERBB2", "p.Thr798Ile") == {"her2_tki"}
    (effect,) = rmap.effects_for("ERBB2", "p.T798I")
    assert effect.drugs == ("neratinib",)
    assert "afatinib kept activity" in effect.implication


def test_t798i_is_an_event_on_neratinib_not_on_afatinib(rmap: ResistanceMap) -> None:
    """Hanker 2017: the gatekeeper resists neratinib; afatinib kept activity."""
    t798i = series_of([(0, 5000), (0, 5000), (20, 5000)], "ERBB2", "p.T798I")
    assert detect_resistance_events([t798i], on_therapy("afatinib"), rmap, PARAMS) == []
    (event,) = detect_resistance_events([t798i], on_therapy("neratinib"), rmap, PARAMS)
    assert (event.drug_class, event.drug, event.entry_id) == (
        "her2_tki",
        "neratinib",
        "erbb2-t798i-her2-tki-resistance",
    )


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("p.D538G", "p.D538G"),
        ("D538G", "p.D538G"),
        ("p.Asp538Gly", "p.D538G"),
        ("p.(Asp538Gly)", "p.D538G"),
        ("ENSP00000206249.3:p.Asp538Gly", "p.D538G"),
        ("p.Tyr772_Ala775dup", "p.Y772_A775dup"),
        ("p.Gly776delinsValCys", "p.G776delinsVC"),
        ("p.Glu380Ter", "p.E380*"),
    ],
)
def test_protein_changes_share_one_normal_form(text: str, normal: str) -> None:
    assert normalise_protein_change(text) == normal


_GOOD_ENTRY = """
[[entry]]
id = "x"
gene = "ESR1"
proteins = ["p.D538G"]
effect = "resistance"
drug_class = "aromatase_inhibitor"
evidence_level = "IIA"
implication = "text"
citations = ["Toy 2013"]
"""


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.replace('"aromatase_inhibitor"', '"ai"'), "unknown drug class 'ai'"),
        (lambda s: s.replace('"resistance"', '"resists"'), "unknown effect 'resists'"),
        (lambda s: s.replace('citations = ["Toy 2013"]', "citations = []"), "citation"),
        (lambda s: s.replace('citations = ["Toy 2013"]\n', ""), "citation"),
        (lambda s: s.replace('implication = "text"', 'implication = ""'), "implication"),
        (lambda s: s.replace('gene = "ESR1"', 'gene = "ESR1"\ngenes = "x"'), "unknown key"),
        (lambda s: s.replace('proteins = ["p.D538G"]', 'proteins = ["538"]'), "protein"),
        (lambda s: s.replace('proteins = ["p.D538G"]', ""), "'proteins', 'variant_class'"),
        (lambda s: s + 'drugs = ["fulvestrant"]\n', "not a known aromatase_inhibitor"),
        (lambda s: s + 'variant_class = "lbd"\n', "unknown variant_class"),
        (lambda s: s + "codons = [550, 380]\n", "codons"),
        (lambda s: s + s, "duplicate id"),
        (lambda s: s.replace('"IIA"', '"II"'), r"\(x\): unknown ESCAT tier 'II'"),
        (lambda s: s.replace('evidence_level = "IIA"\n', ""), r"\(x\): 'evidence_level'"),
        (lambda s: s + 'oncokb_level = "3"\n', r"\(x\): unknown OncoKB level '3'"),
        (
            lambda s: (
                s.replace('gene = "ESR1"', 'gene = "TP53"') + "variant_class = "
                '"activating_hotspot"\n'
            ),
            "no row for TP53",
        ),
    ],
)
def test_map_validation_names_the_problem(tmp_path: Path, mutate: object, message: str) -> None:
    body = mutate(_GOOD_ENTRY)  # type: ignore[operator]
    path = tmp_path / "map.toml"
    path.write_text(f'version = "t-1"\n{body}')
    with pytest.raises(ResistanceMapError, match=message):
        load_resistance_map(path)


def test_a_valid_custom_map_loads_and_bad_files_fail_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "map.toml"
    path.write_text(f'version = "t-1"\n{_GOOD_ENTRY}')
    assert load_resistance_map(path).resisted_classes("ESR1", "D538G") == {"aromatase_inhibitor"}
    path.write_text(_GOOD_ENTRY)
    with pytest.raises(ResistanceMapError, match="version"):
        load_resistance_map(path)
    path.write_text("version = [")
    with pytest.raises(ResistanceMapError, match="cannot read"):
        load_resistance_map(path)
    assert issubclass(ResistanceMapError, InvalidInput)
    assert DEFAULT_MAP_PATH.name == "resistance_map.toml"


# --------------------------------------------------------------------------- events


def test_esr1_emerges_then_rises_on_an_aromatase_inhibitor(rmap: ResistanceMap) -> None:
    lines = on_therapy("letrozole", "palbociclib")
    locus = series_of([(0, 5000), (1, 5000), (0, 5000), (0, 5000), (12, 5000), (40, 5000)])
    events = detect_resistance_events([locus], lines, rmap, PARAMS)
    assert [(e.status, e.sample_id, e.drug_class, e.drug) for e in events] == [
        ("emerged", "s4", "aromatase_inhibitor", "letrozole"),
        ("rising", "s5", "aromatase_inhibitor", "letrozole"),
    ]
    emerged, rising = events
    assert emerged.first_detected_date == emerged.event_date == D0 + dt.timedelta(days=240)
    assert emerged.p_value == pytest.approx(stats.binom.sf(11, 5000, 1e-4))
    assert emerged.previous_lod95 is not None and emerged.previous_lod95 < emerged.vaf
    assert emerged.map_version == "2026.12-1" and emerged.params_version == PARAMS.version
    assert "SERD" in emerged.implication and emerged.citations
    assert rising.first_detected_date == emerged.event_date
    assert rising.fold_change == pytest.approx(40 / 12)
    assert rising.p_value == pytest.approx(
        stats.fisher_exact([[40, 4960], [12, 4988]], alternative="greater").pvalue
    )
    assert rising.p_value < 0.01


def test_one_mutant_read_or_a_background_level_count_is_not_a_detection(
    rmap: ResistanceMap,
) -> None:
    lines = on_therapy("letrozole")
    # Two reads at 20,000x with e = 1e-4 is what background gives (p ~ 0.6).
    locus = series_of([(0, 20000), (2, 20000), (1, 300), (1, 5000)])
    report = resistance_report([locus], lines, rmap, PARAMS)
    assert report.events == ()
    assert [c.detected for c in report.variants[0].calls] == [False] * 4


def test_off_therapy_detection_is_listed_but_not_an_event(rmap: ResistanceMap) -> None:
    locus = series_of([(0, 5000), (0, 5000), (15, 5000)])
    report = resistance_report([locus], [], rmap, PARAMS)
    assert report.events == ()
    (status,) = report.variants
    assert status.status == "detected" and status.resisted_classes_on == ()
    assert status.first_detected_date == D0 + dt.timedelta(days=120)
    assert [(e.effect, e.drug_class) for e in status.effects] == [
        ("resistance", "aromatase_inhibitor"),
        ("sensitivity", "serd"),
    ]


def test_the_earlier_undetected_draws_pooled_must_have_been_sensitive(
    rmap: ResistanceMap,
) -> None:
    lines = on_therapy("anastrozole")
    # One 300x draw before: its LoD95 (~1.6%) is above the 0.3% seen now, so "new" is not
    # established; the next significant >= 2-fold rise is the event.
    locus = series_of([(0, 300), (15, 5000), (45, 5000)])
    assert [
        (e.status, e.sample_id) for e in detect_resistance_events([locus], lines, rmap, PARAMS)
    ] == [("rising", "s2")]
    # A 5,000x draw and a 300x draw, pooled, could have seen 0.3%: an emergence, reported
    # against the pooled draws (named after the latest).
    locus = series_of([(0, 5000), (0, 300), (15, 5000)])
    (event,) = detect_resistance_events([locus], lines, rmap, PARAMS)
    assert (event.status, event.sample_id, event.previous_sample_id) == ("emerged", "s2", "s1")
    assert event.previous_lod95 == pytest.approx(locus_lod95(5300, 1e-4, 0.01, 2))
    assert event.previous_vaf == 0.0 and event.first_detected_date == event.event_date


def test_a_weak_first_detection_emerges_at_the_next_draw(rmap: ResistanceMap) -> None:
    """Detected (p < 0.01) but not at the emergence level: the run starts, and the event comes
    at the first draw of the run that passes, with the run's start as first_detected_date."""
    lines = on_therapy("letrozole")
    # 2 reads at 3,000x, e = 1e-4: p = 0.037 (not detected); 3 reads: p = 0.0036 (detected,
    # not < 3e-3); 6 reads: p < 1e-5.
    locus = series_of([(0, 3000), (0, 3000), (3, 3000), (6, 3000)], background=1e-4)
    report = resistance_report([locus], lines, rmap, PARAMS)
    assert [c.detected for c in report.variants[0].calls] == [False, False, True, True]
    (event,) = report.events
    assert (event.status, event.sample_id) == ("emerged", "s3")
    assert event.first_detected_date == D0 + dt.timedelta(days=120)
    # An ERBB2 hotspot needs p < 1e-4 (a smaller share of the false-event budget).
    erbb2 = series_of([(0, 3000), (0, 3000), (4, 3000), (8, 3000)], "ERBB2", "p.L755S")
    (event,) = detect_resistance_events([erbb2], lines, rmap, PARAMS)
    assert event.sample_id == "s3"


def test_the_class_must_be_resisted_at_the_draw(rmap: ResistanceMap) -> None:
    counts = [(0, 5000), (0, 5000), (20, 5000)]
    on_serd = on_therapy("fulvestrant")
    assert detect_resistance_events([series_of(counts)], on_serd, rmap, PARAMS) == []
    (event,) = detect_resistance_events(
        [series_of(counts, protein="p.Tyr537Ser")], on_serd, rmap, PARAMS
    )
    assert (event.effect, event.drug_class, event.drug) == (
        "relative_resistance",
        "serd",
        "fulvestrant",
    )
    strict = ResistanceParams(trigger_effects=("resistance",))
    assert (
        detect_resistance_events([series_of(counts, protein="p.Y537S")], on_serd, rmap, strict)
        == []
    )
    # The switch on day 120 (the detecting draw's date): the draw still reflects the AI.
    lines = therapy_lines(
        [
            TherapyEvent("therapy_start", D0 - dt.timedelta(days=30), "letrozole"),
            TherapyEvent("therapy_stop", D0 + dt.timedelta(days=120), "letrozole"),
            TherapyEvent("therapy_start", D0 + dt.timedelta(days=120), "fulvestrant"),
        ]
    )
    (event,) = detect_resistance_events([series_of(counts)], lines, rmap, PARAMS)
    assert event.drug == "letrozole"


def test_a_clone_there_when_the_line_begins_is_present_at_start(rmap: ResistanceMap) -> None:
    """Detected at the first draw on an aromatase inhibitor (no earlier draw to say it is new),
    or detected before the line began and still there: the drug was started against a clone
    that resists it (the most actionable case of PADA-1 / SERENA-6)."""
    (event,) = detect_resistance_events(
        [series_of([(20, 5000), (25, 5000)])], on_therapy("letrozole"), rmap, PARAMS
    )
    assert (event.status, event.sample_id, event.confirmation) == (
        "present_at_start",
        "s0",
        "confirmed",
    )
    assert event.alert_date == event.event_date == D0
    later = on_therapy("anastrozole", start=D0 + dt.timedelta(days=90))
    (event,) = detect_resistance_events(
        [series_of([(0, 5000), (20, 5000), (22, 5000), (24, 5000)])], later, rmap, PARAMS
    )
    assert (event.status, event.sample_id) == ("present_at_start", "s2")
    assert event.first_detected_date == D0 + dt.timedelta(days=60)
    # New on the line, the earlier draws (off therapy) sensitive: that is an emergence.
    (event,) = detect_resistance_events(
        [series_of([(0, 5000), (0, 5000), (0, 5000), (24, 5000)])], later, rmap, PARAMS
    )
    assert (event.status, event.sample_id) == ("emerged", "s3")


def test_thin_evidence_waits_for_the_next_draw_and_can_be_contradicted(
    rmap: ResistanceMap,
) -> None:
    lines = on_therapy("letrozole")
    negatives = [(0, 5000), (0, 5000), (0, 5000)]
    # 4 reads at 5,000x, e = 1e-4: p ~ 1.7e-3 (< 3e-3 for ESR1) but not strong evidence.
    (event,) = detect_resistance_events([series_of([*negatives, (4, 5000)])], lines, rmap, PARAMS)
    assert (event.status, event.confirmation, event.alert_date) == (
        "emerged",
        "awaiting_confirmation",
        None,
    )
    events = detect_resistance_events(
        [series_of([*negatives, (4, 5000), (9, 5000)])], lines, rmap, PARAMS
    )
    assert [(e.status, e.sample_id, e.confirmation, e.alert_sample_id) for e in events] == [
        ("emerged", "s3", "confirmed", "s4"),
    ]
    # A next draw too shallow to see 8e-4 says nothing; a deep one that misses it contradicts.
    events = detect_resistance_events(
        [series_of([*negatives, (4, 5000), (0, 300), (0, 20000)])], lines, rmap, PARAMS
    )
    assert [(e.sample_id, e.confirmation) for e in events] == [("s3", "contradicted")]
    # Strong evidence alerts at once; only later deep draws on the same class that never see
    # it again contradict it, and not once the patient has switched away from that class.
    strong = [*negatives, (14, 5000), (0, 20000), (0, 20000)]
    (event,) = detect_resistance_events([series_of(strong)], lines, rmap, PARAMS)
    assert (event.confirmation, event.alert_sample_id) == ("contradicted", None)
    switched = therapy_lines(
        [
            TherapyEvent("therapy_start", D0 - dt.timedelta(days=30), "letrozole"),
            TherapyEvent("therapy_stop", D0 + dt.timedelta(days=200), "letrozole"),
            TherapyEvent("therapy_start", D0 + dt.timedelta(days=200), "elacestrant"),
        ]
    )
    (event,) = detect_resistance_events([series_of(strong)], switched, rmap, PARAMS)
    assert (event.confirmation, event.alert_sample_id) == ("confirmed", "s3")


def test_actionable_variants_are_found_whatever_the_therapy(rmap: ResistanceMap) -> None:
    locus = series_of([(0, 5000), (30, 5000)], "PIK3CA", "p.H1047R")
    report = resistance_report([locus], [], rmap, PARAMS)
    assert report.events == ()
    found = {(a.drug_class, a.sample_id) for a in report.actionable}
    assert found == {("pi3k_inhibitor", "s1"), ("akt_inhibitor", "s1")}
    assert all(a.citations and a.map_version == rmap.version for a in report.actionable)
    # Thin evidence in one draw is established by the next draw that detects it again.
    thin = series_of([(0, 5000), (4, 5000), (5, 5000)], "AKT1", "p.E17K")
    (finding,) = resistance_report([thin], [], rmap, PARAMS).actionable
    assert (finding.drug_class, finding.sample_id) == ("akt_inhibitor", "s2")
    assert finding.first_detected_date == D0 + dt.timedelta(days=60)
    alone = series_of([(0, 5000), (4, 5000), (0, 20000)], "AKT1", "p.E17K")
    assert resistance_report([alone], [], rmap, PARAMS).actionable == ()


def test_sensitivity_only_variants_never_fire(rmap: ResistanceMap) -> None:
    locus = series_of([(0, 5000), (0, 5000), (30, 5000), (300, 5000)], "PIK3CA", "p.H1047R")
    report = resistance_report([locus], on_therapy("letrozole", "alpelisib"), rmap, PARAMS)
    assert report.events == ()
    assert report.variants[0].status == "detected"


def test_erbb2_drug_restricted_entries(rmap: ResistanceMap) -> None:
    counts = [(0, 5000), (0, 5000), (20, 5000)]
    locus = series_of(counts, "ERBB2", "p.L755S")
    (event,) = detect_resistance_events([locus], on_therapy("lapatinib"), rmap, PARAMS)
    assert (event.drug_class, event.drug, event.context) == (
        "her2_tki",
        "lapatinib",
        "HER2-amplified breast cancer",
    )
    assert detect_resistance_events([locus], on_therapy("neratinib"), rmap, PARAMS) == []
    events = detect_resistance_events([locus], on_therapy("letrozole", "fulvestrant"), rmap, PARAMS)
    assert sorted(e.drug_class for e in events) == ["aromatase_inhibitor", "serd"]
    t798i = series_of(counts, "ERBB2", "p.T798I")
    (event,) = detect_resistance_events([t798i], on_therapy("neratinib"), rmap, PARAMS)
    assert event.drug_class == "her2_tki" and "Hanker" in event.implication


def test_unmapped_and_unannotated_loci_are_ignored(rmap: ResistanceMap) -> None:
    tracked = LocusSeries(
        "chr1:100:A>G", None, None, series_of([(0, 5000), (50, 5000)]).observations
    )
    tp53 = series_of([(0, 5000), (50, 5000)], "TP53", "p.R175H")
    report = resistance_report([tracked, tp53], on_therapy("letrozole"), rmap, PARAMS)
    assert report.events == () and report.variants == ()


@pytest.mark.parametrize(
    ("counts", "state"),
    [
        ([(0, 5000), (20, 5000), (0, 20000)], "cleared"),
        ([(0, 5000), (20, 5000), (0, 400)], "indeterminate"),
        ([(0, 5000), (1, 5000)], "not_detected"),
        ([(0, 0)], "not_evaluable"),
    ],
)
def test_variant_states(rmap: ResistanceMap, counts: list[tuple[int, int]], state: str) -> None:
    report = resistance_report([series_of(counts)], [], rmap, PARAMS)
    assert report.variants[0].status == state


def test_locus_lod95_has_its_nominal_sensitivity() -> None:
    rng = np.random.default_rng(7)
    for depth, background in [(5000, 1e-4), (2000, 5e-5), (12000, 2e-4)]:
        lod = locus_lod95(depth, background, 0.01, 2)
        k = next(k for k in range(2, 100) if stats.binom.sf(k - 1, depth, background) < 0.01)
        hits = rng.binomial(depth, lod * (1 - background) + background, size=40000) >= k
        assert abs(hits.mean() - 0.95) < 0.006


# --------------------------------------------------------------------------- simulations


def _oracle_lod(depth: int, background: float) -> float:
    """LoD95 by root finding on the binomial tail (independent of the closed form)."""
    k = next(k for k in range(2, 10_000) if stats.binom.sf(k - 1, depth, background) < 0.01)
    return float(
        optimize.brentq(
            lambda f: stats.binom.sf(k - 1, depth, f * (1 - background) + background) - 0.95,
            0.0,
            1.0,
        )
    )


def _simulate(
    rng: np.random.Generator, n_draws: int, emerge: bool
) -> tuple[LocusSeries, list[int], list[int], float]:
    background = float(rng.uniform(3e-5, 1.5e-4))
    depth = [int(rng.integers(3000, 15000)) for _ in range(n_draws)]
    t0 = int(rng.integers(2, 7))
    v0, growth = float(10 ** rng.uniform(-4, -3)), float(rng.uniform(2.0, 6.0))
    alt = []
    for t in range(n_draws):
        vaf = min(0.3, v0 * growth ** (t - t0)) if emerge and t >= t0 else 0.0
        alt.append(int(rng.binomial(depth[t], vaf * (1 - background) + background)))
    locus = series_of(list(zip(alt, depth, strict=True)), background=background)
    return locus, alt, depth, background


def _first_event(
    alt: list[int], depth: list[int], background: float, alpha_emerge: float
) -> int | None:
    """The first draw where the rule of resistance.py holds, recomputed here: "emerged" at the
    draw of a run of detections (p < 0.01) where that draw, or the run so far pooled, has
    p < alpha_emerge, and whose earlier undetected draws, pooled, have an LoD95 (root-found)
    below its VAF; or "rising"."""
    p_values = [stats.binom.sf(m - 1, r, background) for m, r in zip(alt, depth, strict=True)]
    detected = [m >= 2 and p < 0.01 for m, p in zip(alt, p_values, strict=True)]
    negatives: list[int] = []
    before: list[int] = []
    run: list[int] = []
    for t, (m, r) in enumerate(zip(alt, depth, strict=True)):
        if not detected[t]:
            run = []
            negatives.append(t)
            continue
        if not run:
            before, negatives = negatives, []
        run.append(t)
        vaf = m / r
        pooled = stats.binom.sf(
            sum(alt[i] for i in run) - 1, sum(depth[i] for i in run), background
        )
        if (
            before
            and min(p_values[t], pooled) < alpha_emerge
            and _oracle_lod(sum(depth[i] for i in before), background) < vaf
        ):
            return t
        if t > 0 and detected[t - 1] and vaf >= 2 * alt[t - 1] / depth[t - 1]:
            table = [[m, r - m], [alt[t - 1], depth[t - 1] - alt[t - 1]]]
            if stats.fisher_exact(table, alternative="greater").pvalue < 0.01:
                return t
    return None


def test_emergence_is_flagged_at_the_first_statistically_visible_draw(
    rmap: ResistanceMap,
) -> None:
    """Seeded ESR1 D538G trajectories on AI + palbociclib, 10 draws two months apart: the first
    event is at exactly the first draw where the rule holds (recomputed independently here),
    and in nearly every trajectory that is the first draw where the emergence test passes
    (>= 2 reads, p < 3e-3): the pooled earlier draws were sensitive enough."""
    alpha = dict(PARAMS.alpha_emerge_by_gene)["ESR1"]
    rng = np.random.default_rng(20261101)
    lines = on_therapy("letrozole", "palbociclib")
    at_first_pass = 0
    for _ in range(300):
        locus, alt, depth, background = _simulate(rng, 10, emerge=True)
        events = detect_resistance_events([locus], lines, rmap, PARAMS)
        first_event = int(events[0].sample_id[1:]) if events else None
        assert first_event == _first_event(alt, depth, background, alpha)
        first_pass = next(
            t
            for t, (m, r) in enumerate(zip(alt, depth, strict=True))
            if m >= 2 and stats.binom.sf(m - 1, r, background) < alpha
        )
        assert first_event is not None and first_event >= first_pass
        at_first_pass += first_event == first_pass
    assert at_first_pass >= 290, at_first_pass
