"""The one number format of the pages, the report and the CLI tables."""

from __future__ import annotations

import pytest

from services.reports.numbers import count, fraction_or_lod, p_value, percent, percent_range


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.000206, "0.021%"),
        (0.0282, "2.8%"),
        (0.84, "84%"),
        (1.0, "100%"),
        (0.0999, "10%"),  # rounding up keeps two significant figures
        (0.00999, "1.0%"),
        (1e-5, "0.0010%"),
        (0.0, "0%"),
        (None, "–"),
    ],
)
def test_percent_has_two_significant_figures(value: float | None, text: str) -> None:
    assert percent(value) == text


def test_a_draw_without_ctdna_reads_below_its_lod95_never_zero() -> None:
    assert fraction_or_lod(0.0, detected=False, lod95=0.0015) == "< LoD95"
    assert fraction_or_lod(0.0004, detected=False, lod95=0.0015) == "< LoD95"  # p̂ of a negative
    assert fraction_or_lod(0.0, detected=None) == "< LoD95"
    assert fraction_or_lod(0.0034, detected=True, lod95=0.0015) == "0.34%"
    assert fraction_or_lod(None, detected=None) == "–"


def test_ranges_counts_and_p_values() -> None:
    assert percent_range(0.0024, 0.0046) == "0.24–0.46%"
    assert percent_range(None, None) == "–"
    assert count(74944) == "74,944"
    assert p_value(0.0061) == "0.0061" and p_value(2e-9) == "< 0.001" and p_value(None) == "–"
