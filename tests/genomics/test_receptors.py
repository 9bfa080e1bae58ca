"""Receptor status: HER2 category (ASCO/CAP 2023), ER/PR status (ASCO/CAP 2020), subtype,
discordance between primary and relapse, and the cited rule table."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from services.errors import InvalidInput
from services.genomics.receptors import (
    CHANGES,
    DEFAULT_RULES_PATH,
    ReceptorError,
    ReceptorParams,
    ReceptorRules,
    ReceptorTest,
    discordance,
    her2_category,
    hormone_status,
    load_receptor_rules,
    profile,
    subtype,
)

PARAMS = ReceptorParams()
D0 = dt.date(2020, 3, 1)


@pytest.fixture(scope="module")
def rules() -> ReceptorRules:
    return load_receptor_rules()


# --------------------------------------------------------------------------- HER2 category


@pytest.mark.parametrize(
    ("ihc", "ish", "expected"),
    [
        ("3+", None, "HER2-positive"),
        ("3+", "not_amplified", "HER2-positive"),
        ("2+", "amplified", "HER2-positive"),
        ("1+", "amplified", "HER2-positive"),
        (None, "amplified", "HER2-positive"),
        ("2+", "not_amplified", "HER2-low"),
        ("2+", None, "equivocal"),
        ("2+", "equivocal", "equivocal"),
        ("1+", None, "HER2-low"),
        ("1+", "not_amplified", "HER2-low"),
        ("ultralow", None, "HER2-ultralow"),
        ("0", None, "HER2-0"),
        ("0", "not_amplified", "HER2-0"),
        (None, "not_amplified", "equivocal"),
        (None, "equivocal", "equivocal"),
        (None, None, "unknown"),
    ],
)
def test_her2_category_asco_cap_2023(ihc: str | None, ish: str | None, expected: str) -> None:
    assert her2_category(ihc, ish) == expected


@pytest.mark.parametrize(
    ("ihc", "ish", "field"), [("4+", None, "her2_ihc"), ("2+", "yes", "her2_ish")]
)
def test_her2_out_of_vocabulary_names_the_field(ihc: str, ish: str | None, field: str) -> None:
    with pytest.raises(ReceptorError, match=field) as caught:
        her2_category(ihc, ish)
    assert isinstance(caught.value, InvalidInput)


# --------------------------------------------------------------------------- ER / PR


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (100, "positive"),
        (90, "positive"),
        (10, "positive"),
        (9.9, "low"),
        (1, "low"),
        (0.5, "negative"),
        (0, "negative"),
        ("positive", "positive"),
        ("Low", "low"),
        (" negative ", "negative"),
        (None, "unknown"),
    ],
)
def test_hormone_status_asco_cap_2020(value: float | str | None, expected: str) -> None:
    assert hormone_status(value, PARAMS, "er") == expected


@pytest.mark.parametrize("value", [-1, 100.5, float("nan"), "weak", True])
def test_hormone_status_refuses_bad_values(value: float | str) -> None:
    with pytest.raises(ReceptorError, match="^pr "):
        hormone_status(value, PARAMS, "pr")


def test_thresholds_come_from_the_versioned_params() -> None:
    strict = ReceptorParams(version="test", positive_min_percent=50.0)
    assert hormone_status(20, strict, "er") == "low"
    assert PARAMS.version.startswith("receptors-")


# --------------------------------------------------------------------------- subtype


@pytest.mark.parametrize(
    ("er", "pr", "her2", "name", "label"),
    [
        ("positive", "positive", "HER2-0", "HR+/HER2-", "HR+/HER2-"),
        ("positive", "negative", "HER2-low", "HR+/HER2-", "HR+/HER2- (HER2-low)"),
        ("negative", "positive", "HER2-ultralow", "HR+/HER2-", "HR+/HER2- (HER2-ultralow)"),
        ("low", "negative", "HER2-0", "HR+/HER2-", "HR+/HER2-"),
        ("positive", "unknown", "HER2-positive", "HR+/HER2+", "HR+/HER2+"),
        ("negative", "negative", "HER2-positive", "HR-/HER2+", "HR-/HER2+"),
        ("negative", "negative", "HER2-0", "triple-negative", "triple-negative"),
        ("negative", "unknown", "HER2-low", "triple-negative", "triple-negative (HER2-low)"),
        ("negative", "negative", "equivocal", "undetermined", "undetermined"),
        ("positive", "positive", "unknown", "undetermined", "undetermined"),
        ("unknown", "negative", "HER2-0", "undetermined", "undetermined"),
        ("unknown", "unknown", "HER2-positive", "undetermined", "undetermined"),
    ],
)
def test_subtype(er: str, pr: str, her2: str, name: str, label: str) -> None:
    assert subtype(er, pr, her2) == (name, label)  # type: ignore[arg-type]


def test_profile_reads_one_test() -> None:
    read = profile(ReceptorTest(D0, "primary", "breast", er=90, pr=40, her2_ihc="1+"))
    assert (read.er_status, read.pr_status, read.her2_category) == (
        "positive",
        "positive",
        "HER2-low",
    )
    assert read.subtype_label == "HR+/HER2- (HER2-low)"
    with pytest.raises(ReceptorError, match="specimen"):
        profile(ReceptorTest(D0, "biopsy"))


# --------------------------------------------------------------------------- discordance


def primary(**fields: object) -> ReceptorTest:
    return ReceptorTest(D0, "primary", "breast", **fields)  # type: ignore[arg-type]


def relapse(days: int = 900, specimen: str = "metastasis", **fields: object) -> ReceptorTest:
    return ReceptorTest(D0 + dt.timedelta(days=days), specimen, "liver", **fields)  # type: ignore[arg-type]


def changes(rules: ReceptorRules, *tests: ReceptorTest) -> dict[str, str]:
    return {d.receptor: d.change for d in discordance([profile(t) for t in tests], rules)}


def test_er_loss_pr_loss_with_implication_and_citations(rules: ReceptorRules) -> None:
    found = discordance(
        [
            profile(primary(er=90, pr=40, her2_ihc="1+")),
            profile(relapse(er=0, her2_ihc="2+", her2_ish="not_amplified")),
        ],
        rules,
    )
    assert [(d.receptor, d.primary, d.latest, d.change) for d in found] == [
        ("ER", "positive", "negative", "loss")
    ]  # PR not tested at relapse: not compared; HER2-low both: no change
    (er,) = found
    assert "endocrine therapy is unlikely" in er.implication
    assert any("Schrijver" in c for c in er.citations)
    assert (er.primary_date, er.latest_date, er.rule_id) == (D0, relapse().date, "er-loss")


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({"er": 0, "pr": 0}, {"er": 50, "pr": 20}, {"ER": "gain", "PR": "gain"}),
        ({"er": "positive", "pr": 60}, {"er": "low", "pr": 0.5}, {"PR": "loss"}),
        ({"her2_ihc": "1+"}, {"her2_ihc": "3+"}, {"HER2": "gain"}),
        ({"her2_ish": "amplified"}, {"her2_ihc": "1+"}, {"HER2": "loss"}),
        (
            {"her2_ihc": "0"},
            {"her2_ihc": "2+", "her2_ish": "not_amplified"},
            {"HER2": "zero_to_low"},
        ),
        ({"her2_ihc": "0"}, {"her2_ihc": "ultralow"}, {"HER2": "zero_to_ultralow"}),
        ({"her2_ihc": "1+"}, {"her2_ihc": "0"}, {"HER2": "low_to_zero"}),
        ({"her2_ihc": "ultralow"}, {"her2_ihc": "0"}, {"HER2": "ultralow_to_zero"}),
        ({"her2_ihc": "1+"}, {"her2_ihc": "ultralow"}, {}),
        ({"her2_ihc": "0"}, {"her2_ihc": "2+"}, {}),
        ({"her2_ihc": "2+", "her2_ish": "equivocal"}, {"her2_ihc": "3+"}, {}),
        ({"er": 5}, {"er": 95}, {}),
    ],
)
def test_discordance_changes(
    rules: ReceptorRules,
    before: dict[str, object],
    after: dict[str, object],
    expected: dict[str, str],
) -> None:
    assert changes(rules, primary(**before), relapse(**after)) == expected


def test_every_change_has_its_cited_implication(rules: ReceptorRules) -> None:
    for receptor, kinds in CHANGES.items():
        for change in kinds:
            rule = rules.rule_for(receptor, change)
            assert rule.implication and rule.citations
    assert "trastuzumab deruxtecan" in rules.rule_for("HER2", "zero_to_low").implication
    assert any("DESTINY-Breast04" in c for c in rules.rule_for("HER2", "zero_to_low").citations)
    assert any(
        "DESTINY-Breast06" in c for c in rules.rule_for("HER2", "zero_to_ultralow").citations
    )
    assert "anti-HER2" in rules.rule_for("HER2", "gain").implication
    assert "may no longer benefit" in rules.rule_for("HER2", "loss").implication
    assert "endocrine therapy" in rules.rule_for("ER", "gain").implication


def test_latest_relapse_against_the_first_primary(rules: ReceptorRules) -> None:
    tests = [
        relapse(days=400, specimen="recurrence", er=0),
        primary(er=80),
        relapse(days=1200, er=70),
        ReceptorTest(D0 + dt.timedelta(days=30), "primary", er=0),
    ]
    assert changes(rules, *tests) == {}
    assert changes(rules, *tests[:2]) == {"ER": "loss"}


def test_no_discordance_without_both_sides(rules: ReceptorRules) -> None:
    assert changes(rules, primary(er=90)) == {}
    assert changes(rules, relapse(er=0)) == {}
    assert discordance([], rules) == []


# --------------------------------------------------------------------------- the rule table


def test_packaged_rules_load_with_a_version(rules: ReceptorRules) -> None:
    assert rules.version
    assert rules.source == str(DEFAULT_RULES_PATH)
    assert len({r.rule_id for r in rules.rules}) == len(rules.rules)


GOOD_ENTRY = """
[[entry]]
id = "x"
receptor = "ER"
change = "loss"
implication = "text"
citations = ["a"]
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version = ", "cannot read the receptor rules"),
        (GOOD_ENTRY, "'version' is required"),
        ('version = "1"\n', r"no \[\[entry\]\]"),
        ('version = "1"\n' + GOOD_ENTRY.replace('"ER"', '"AR"'), "receptor 'AR'"),
        (
            'version = "1"\n' + GOOD_ENTRY.replace('"loss"', '"zero_to_low"'),
            "change 'zero_to_low' of ER",
        ),
        ('version = "1"\n' + GOOD_ENTRY.replace('["a"]', "[]"), "'citations'"),
        ('version = "1"\n' + GOOD_ENTRY.replace('"text"', '"  "'), "'implication'"),
        ('version = "1"\n' + GOOD_ENTRY + 'drug = "x"\n', r"unknown key\(s\) drug"),
        ('version = "1"\n' + GOOD_ENTRY + GOOD_ENTRY, "duplicate id 'x'"),
        (
            'version = "1"\n' + GOOD_ENTRY + GOOD_ENTRY.replace('"x"', '"y"'),
            "second rule for ER loss",
        ),
        ('version = "1"\n' + GOOD_ENTRY, "no rule for ER gain, PR gain"),
    ],
)
def test_bad_rule_table_fails_naming_file_and_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ReceptorError, match=message) as caught:
        load_receptor_rules(path)
    assert str(path) in str(caught.value)


def test_missing_rule_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ReceptorError, match="absent.toml"):
        load_receptor_rules(tmp_path / "absent.toml")
