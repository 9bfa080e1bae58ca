"""One way to write the numbers a clinician reads, for the web view, the report, the PDF and
the `ctdna` tables alike: fractions (tumour fraction, VAF, LoD95) as percentages with two
significant figures, "< LoD95" for a draw in which nothing was detected (never "0"), counts
with thousands separators. The API and the TSV/JSON outputs keep the full numbers."""

from __future__ import annotations

import math

DASH = "–"
BELOW_LOD = "< LoD95"


def percent(value: float | None, digits: int = 2) -> str:
    """0.000206 -> "0.021%", 0.0282 -> "2.8%", 0.84 -> "84%"; None -> "–"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    pct = float(value) * 100
    if pct == 0:
        return "0%"
    exponent = math.floor(math.log10(abs(pct)))
    decimals = max(0, digits - 1 - exponent)
    text = f"{pct:.{decimals}f}"
    # rounding up may add a digit (0.0999 -> "0.100"): keep the significant figures asked for
    if decimals and len(text.replace("-", "").replace(".", "").lstrip("0")) > digits:
        text = f"{pct:.{decimals - 1}f}"
    return f"{text}%"


def percent_range(low: float | None, high: float | None) -> str:
    """A 95% interval: "0.010–0.050%"; an unknown end is a dash."""
    if low is None and high is None:
        return DASH
    return f"{percent(low).removesuffix('%')}–{percent(high)}"


def fraction_or_lod(
    value: float | None, *, detected: bool | None, lod95: float | None = None
) -> str:
    """A tumour fraction as read at a glance: the estimate when ctDNA was detected, "< LoD95"
    when it was not (the draw could not see less than its LoD95; it does not say zero), a
    dash when there is no estimate."""
    if detected is False or (detected is None and value == 0):
        return BELOW_LOD if lod95 is not None or value is not None else DASH
    return percent(value)


def count(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def p_value(value: float | None) -> str:
    """Two significant figures; below 0.001 as "< 0.001"."""
    if value is None:
        return DASH
    if value < 0.001:
        return "< 0.001"
    return f"{value:.2g}"
