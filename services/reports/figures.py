"""What the patient plots show, decided once from the stored analysis bodies (trends, MRD,
clones, resistance), and drawn twice: as a Plotly figure for the web page (`plotly_timeline`,
`plotly_clones`: plain JSON, drawn in the browser by the plotly.js the app serves itself) and
with matplotlib for the static images and the PDF report (`services/reports/plots.py`).

Values are passed through as the API returns them: a variant trace's y values are the VAFs of
`/trends` (a zero, which a log axis cannot show, is a gap: null in y, the raw value in
customdata; the LoD95 markers show what a negative draw could have seen)."""

from __future__ import annotations

import datetime as dt
import html
import math
from dataclasses import dataclass, field
from typing import Any

from services.reports.labels import drug_class_label, event_label
from services.reports.numbers import percent, percent_range

CALL_COLOURS = {
    "POSITIVE": "#c0392b",
    "NEGATIVE": "#1e8449",
    "INDETERMINATE": "#7f8c8d",
}
EVENT_COLOURS = {
    "surgery": "#6c3483",
    "clinical_relapse": "#c0392b",
    "progression": "#c0392b",
    "molecular_relapse": "#d35400",
}
TF_COLOUR = "#111111"
RESISTANCE_COLOUR = ("#f4d03f", "#7e5109")  # fill, edge
TRACKED_COLOUR = "#5d7fa3"
QUIET_COLOUR = "#b0b7bf"
# Named (hotspot) variants that were detected: a qualitative palette readable in print.
PALETTE = ["#d35400", "#2874a6", "#b03a2e", "#117a65", "#7d3c98", "#b7950b", "#2e4053", "#a04000"]
THERAPY_FILL = ["#d6eaf8", "#e8daef", "#d5f5e3", "#fdebd0", "#fadbd8", "#e5e8e8"]
CLONE_COLOURS = ["#2874a6", "#d35400", "#117a65", "#7d3c98", "#b03a2e", "#b7950b", "#5d6d7e"]


@dataclass(frozen=True, slots=True)
class VariantSeries:
    label: str
    locus_key: str
    tracked: bool
    # tracked loci and detected hotspots are drawn; undetected hotspots are only listed
    prominent: bool
    colour: str
    dates: list[str]
    vafs: list[float]
    alt_reads: list[int | None]
    depths: list[int | None]


@dataclass(frozen=True, slots=True)
class Span:
    label: str
    start: str
    stop: str | None
    colour: str


@dataclass(frozen=True, slots=True)
class Marker:
    date: str
    kind: str
    label: str


@dataclass(frozen=True, slots=True)
class TopLabel:
    date: str
    text: str
    colour: str
    row: int


@dataclass(frozen=True, slots=True)
class Timeline:
    patient_id: str
    variants: list[VariantSeries]
    tf_dates: list[str]
    tf: list[float]
    tf_low: list[float]
    tf_high: list[float]
    lod_dates: list[str]
    lods: list[float]
    lod_samples: list[str]
    call_dates: list[str]
    calls: list[str]
    call_samples: list[str]
    spans: list[Span]
    events: list[Marker]
    # resistance events (emerged, rising) at the variant's VAF in the draw that fired them
    resistance: list[tuple[str, float, str]]
    y_floor: float
    y_ceiling: float
    x_range: tuple[str, str] | None
    # the drawn x range: x_range with a margin, at least a few weeks wide (one draw included)
    x_view: tuple[str, str] | None = None
    # spans and events named above the plot, each label on a row where it overlaps no other
    labels: list[TopLabel] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class CloneSeries:
    clone_id: Any
    label: str
    status: str
    colour: str
    dates: list[str]
    vafs: list[float]
    lows: list[float | None]
    highs: list[float | None]
    detected: list[bool]


@dataclass(frozen=True, slots=True)
class Clones:
    patient_id: str
    shown: list[CloneSeries]
    hidden: list[CloneSeries] = field(default_factory=list)
    method: str = ""


def variant_label(variant: dict[str, Any]) -> str:
    named = " ".join(x for x in (variant.get("gene"), variant.get("protein_change")) if x)
    key = str(variant.get("locus_key") or "")
    if variant.get("protein_change"):
        return named
    chrom, _, rest = key.partition(":")
    pos, _, change = rest.partition(":")
    locus = f"{chrom}:{pos} {change}".strip() if pos else key
    return f"{named} {locus}".strip() if named else locus


def timeline_model(
    trends: dict[str, Any], mrd: dict[str, Any], resistance: dict[str, Any] | None = None
) -> Timeline:
    detected_keys = {
        v.get("key")
        for v in (resistance or {}).get("variants", [])
        if any(c.get("detected") for c in v.get("calls", []))
    }
    variants: list[VariantSeries] = []
    named = 0
    for variant in trends.get("variants", []):
        points = variant.get("points") or []
        if not points:
            continue
        tracked = bool(variant.get("tracked"))
        prominent = tracked or variant.get("locus_key") in detected_keys
        if tracked:
            colour = TRACKED_COLOUR
        elif prominent:
            colour = PALETTE[named % len(PALETTE)]
            named += 1
        else:
            colour = QUIET_COLOUR
        variants.append(
            VariantSeries(
                label=variant_label(variant),
                locus_key=str(variant.get("locus_key")),
                tracked=tracked,
                prominent=prominent,
                colour=colour,
                dates=[p["collection_date"] for p in points],
                vafs=[float(p["vaf"]) for p in points],
                alt_reads=[p.get("alt_reads") for p in points],
                depths=[p.get("depth") for p in points],
            )
        )
    samples = [s for s in trends.get("samples", []) if s.get("tumor_fraction") is not None]
    ci = [s.get("tumor_fraction_ci") or [None, None] for s in samples]

    calls = mrd.get("calls", [])
    by_sample = {c["sample_id"]: c for c in calls}
    lod_dates: list[str] = []
    lods: list[float] = []
    lod_samples: list[str] = []
    # The LoD95 of a negative draw: the MRD call's own where the draw was called; elsewhere
    # (no surgery, metastatic monitoring) the tumour-fraction test's, where it saw nothing.
    for call in calls:
        if call["call"] == "NEGATIVE" and call.get("lod95"):
            lod_dates.append(call["collection_date"])
            lods.append(float(call["lod95"]))
            lod_samples.append(call["sample_id"])
    for sample in trends.get("samples", []):
        if sample["sample_id"] in by_sample or sample.get("detected") or not sample.get("lod95"):
            continue
        lod_dates.append(sample["collection_date"])
        lods.append(float(sample["lod95"]))
        lod_samples.append(sample["sample_id"])

    spans = [
        Span(
            label=line.get("drug") or drug_class_label(line.get("drug_class")) or "therapy",
            start=line["start_date"],
            stop=line.get("stop_date"),
            colour=THERAPY_FILL[i % len(THERAPY_FILL)],
        )
        for i, line in enumerate(trends.get("therapy_lines", []))
    ]
    events = [
        Marker(e["date"], e["type"], event_label(e["type"]))
        for e in trends.get("events", [])
        if e["type"] in ("surgery", "clinical_relapse", "progression")
    ]
    if mrd.get("molecular_relapse_date"):
        lead = mrd.get("lead_time_days")
        label = "molecular relapse" + (f" ({lead} d lead)" if lead is not None else "")
        events.append(Marker(mrd["molecular_relapse_date"], "molecular_relapse", label))

    resistance_marks = [
        (
            e.get("event_date") or e["first_detected_date"],
            float(e["vaf"]),
            f"{e['gene']} {e['protein_change']} {e['status']} on "
            f"{e.get('drug') or drug_class_label(e.get('drug_class'))}",
        )
        for e in (resistance or {}).get("events", [])
        if e.get("vaf")
    ]
    positive = [v for s in variants for v in s.vafs if v > 0]
    positive += [float(s["tumor_fraction"]) for s in samples if s["tumor_fraction"] > 0]
    positive += [float(c[1]) for c in ci if c[1]]
    positive += lods
    low = min(positive, default=1e-4)
    high = max(positive, default=1e-2)
    y_floor = 10 ** math.floor(math.log10(max(low, 1e-7)) - 0.3)
    y_ceiling = min(1.0, 10 ** math.ceil(math.log10(high) + 0.3))

    dates = sorted(
        [d for s in variants for d in s.dates]
        + [s["collection_date"] for s in samples]
        + [c["collection_date"] for c in calls]
        + [s.start for s in spans]
        + [s.stop for s in spans if s.stop]
        + [e.date for e in events]
    )
    x_range = (dates[0], dates[-1]) if dates else None
    x_view = padded_range(x_range)
    labels = top_labels(
        [(s.start, s.label + ("" if s.stop else " (ongoing)"), "#1b2631") for s in spans]
        + [(e.date, e.label, EVENT_COLOURS.get(e.kind, "#555555")) for e in events],
        x_view,
    )
    return Timeline(
        patient_id=str(trends.get("patient_id") or mrd.get("patient_id") or ""),
        variants=variants,
        tf_dates=[s["collection_date"] for s in samples],
        tf=[float(s["tumor_fraction"]) for s in samples],
        # drawn band: a lower bound of 0 sits at the axis floor (a log axis has no zero)
        tf_low=[max(float(c[0] or 0.0), y_floor) for c in ci],
        tf_high=[max(float(c[1] or 0.0), y_floor) for c in ci],
        lod_dates=lod_dates,
        lods=lods,
        lod_samples=lod_samples,
        call_dates=[c["collection_date"] for c in calls],
        calls=[c["call"] for c in calls],
        call_samples=[c["sample_id"] for c in calls],
        spans=spans,
        events=events,
        resistance=resistance_marks,
        y_floor=y_floor,
        y_ceiling=y_ceiling,
        x_range=x_range,
        x_view=x_view,
        labels=labels,
    )


def padded_range(x_range: tuple[str, str] | None) -> tuple[str, str] | None:
    """The dates to draw: a margin of 1/25 of the span each side, at least 14 days (one draw
    alone gets four weeks around it, not a span of one instant), clamped to the calendar."""
    if x_range is None:
        return None
    low, high = dt.date.fromisoformat(x_range[0]), dt.date.fromisoformat(x_range[1])
    pad = dt.timedelta(days=max(14, (high - low).days // 25))
    low = dt.date.min + pad if low < dt.date.min + pad else low
    high = dt.date.max - pad if high > dt.date.max - pad else high
    return ((low - pad).isoformat(), (high + pad).isoformat())


# Room a label takes on the time axis, as a share of the plot's width per character (a plot
# about 1,100 px wide, 11 px text): enough to keep two labels of one row apart.
LABEL_CHAR_SHARE = 6.5 / 1100


def top_labels(items: list[tuple[str, str, str]], x_view: tuple[str, str] | None) -> list[TopLabel]:
    """(date, text, colour) placed in rows above the plot, left-aligned at their date: each on
    the first row where it does not run into the previous label, so none overlaps another or
    the data."""
    if not items or x_view is None:
        return []
    start, end = (dt.date.fromisoformat(d) for d in x_view)
    span = max(1, (end - start).days)
    row_ends: list[float] = []
    placed: list[TopLabel] = []
    for date, text, colour in sorted(items, key=lambda item: item[0]):
        left = (dt.date.fromisoformat(date) - start).days / span
        right = left + (len(text) + 2) * LABEL_CHAR_SHARE
        row = next((i for i, used in enumerate(row_ends) if used <= left), len(row_ends))
        if row == len(row_ends):
            row_ends.append(right)
        else:
            row_ends[row] = right
        placed.append(TopLabel(date, text, colour, row))
    return placed


def clones_model(clones: dict[str, Any]) -> Clones:
    shown: list[CloneSeries] = []
    hidden: list[CloneSeries] = []
    for clone in clones.get("clones", []):
        series = clone.get("ccf_series") or []
        members = clone.get("members") or []
        names = [
            m.get("protein_change") and f"{m.get('gene')} {m['protein_change']}" for m in members
        ]
        named = [n for n in names if n]
        if named:
            label = ", ".join(named[:3]) + (f" +{len(members) - 3}" if len(members) > 3 else "")
        else:
            label = f"{len(members)} tracked loci"
        item = CloneSeries(
            clone_id=clone.get("clone_id"),
            label=f"Clone {clone.get('clone_id')}: {label}",
            status=str(clone.get("status") or ""),
            colour=CLONE_COLOURS[len(shown) % len(CLONE_COLOURS)],
            dates=[s["collection_date"] for s in series],
            vafs=[float(s.get("vaf") or 0.0) for s in series],
            lows=[s.get("vaf_lower") for s in series],
            highs=[s.get("vaf_upper") for s in series],
            detected=[bool(s.get("detected")) for s in series],
        )
        (shown if any(item.detected) else hidden).append(item)
    return Clones(
        patient_id=str(clones.get("patient_id") or ""),
        shown=shown,
        hidden=hidden,
        method=str(clones.get("method") or ""),
    )


def plain(text: str) -> str:
    """Text that plotly.js shows as written: it reads tags (`<b>`, `<a href>`, `<br>`) and
    entities in labels, so a drug or variant name must not be able to write any."""
    return html.escape(text, quote=False)


def _vaf_hover(series: VariantSeries) -> list[str]:
    return [
        f"{plain(series.label)}<br>{d}: VAF {percent(v)}"
        + (f" ({a}/{n} reads)" if a is not None and n is not None else "")
        for d, v, a, n in zip(
            series.dates, series.vafs, series.alt_reads, series.depths, strict=True
        )
    ]


def _drawable(values: list[float]) -> list[float | None]:
    """A log axis has no zero: a draw without mutant reads is a gap in the line (the raw
    values, zeros included, stay in the trace's customdata)."""
    return [v if v > 0 else None for v in values]


def plotly_timeline(model: Timeline) -> dict[str, Any]:
    """The timeline as a Plotly figure (`{data, layout}`), JSON-ready. Trace `meta.role` names
    what a trace is (variant, tumour_fraction, band, lod95, mrd_call, event) for tests and
    scripts reading the figure back."""
    data: list[dict[str, Any]] = []
    # Tracked loci and undetected hotspots each get one legend entry for the whole group (a
    # legend of 16 anonymous loci helps nobody); detected hotspots are named one by one.
    groups = {
        "tracked": [v for v in model.variants if v.tracked],
        "quiet": [v for v in model.variants if not v.prominent],
    }
    titles = {
        "tracked": f"Tracked loci ({len(groups['tracked'])})",
        "quiet": f"Hotspots not detected ({len(groups['quiet'])})",
    }
    for series in model.variants:
        group = "tracked" if series.tracked else ("quiet" if not series.prominent else None)
        trace: dict[str, Any] = {
            "type": "scatter",
            "mode": "lines+markers",
            "name": plain(series.label),
            "x": series.dates,
            "y": _drawable(series.vafs),
            "customdata": series.vafs,
            "text": _vaf_hover(series),
            "hoverinfo": "text",
            "line": {"color": series.colour, "width": 1 if group else 2.5},
            "marker": {"size": 4 if group else 7, "color": series.colour},
            "meta": {"role": "variant", "locus_key": series.locus_key, "tracked": series.tracked},
        }
        if group is not None:
            first = series is groups[group][0]
            trace.update(legendgroup=group, showlegend=first, opacity=0.7)
            if first:
                trace["name"] = titles[group]
            if group == "quiet":
                trace["visible"] = "legendonly"
        data.append(trace)
    if model.tf_dates:
        data.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": model.tf_dates + model.tf_dates[::-1],
                "y": model.tf_high + model.tf_low[::-1],
                "fill": "toself",
                "fillcolor": "rgba(17,17,17,0.12)",
                "line": {"width": 0},
                "hoverinfo": "skip",
                "name": "Tumour fraction 95% CI",
                "meta": {"role": "band"},
            }
        )
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "x": model.tf_dates,
                "y": _drawable(model.tf),
                "customdata": model.tf,
                "name": "Tumour fraction",
                "line": {"color": TF_COLOUR, "width": 3},
                "marker": {"size": 8, "color": TF_COLOUR},
                "text": [
                    f"Tumour fraction {d}: {percent(v)} (95% CI {percent_range(lo, hi)})"
                    for d, v, lo, hi in zip(
                        model.tf_dates, model.tf, model.tf_low, model.tf_high, strict=True
                    )
                ],
                "hoverinfo": "text",
                "meta": {"role": "tumour_fraction"},
            }
        )
    if model.lods:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": model.lod_dates,
                "y": model.lods,
                "name": "LoD95 of a negative draw (nothing detected)",
                "marker": {
                    "symbol": "triangle-down",
                    "size": 11,
                    "color": CALL_COLOURS["NEGATIVE"],
                    "line": {"color": "#ffffff", "width": 1},
                },
                "text": [
                    plain(f"{s}: not detected, below LoD95 {percent(v)}")
                    for s, v in zip(model.lod_samples, model.lods, strict=True)
                ],
                "hoverinfo": "text",
                "meta": {"role": "lod95"},
            }
        )
    if model.resistance:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [d for d, _, _ in model.resistance],
                "y": [v for _, v, _ in model.resistance],
                "name": "Resistance event",
                "marker": {
                    "symbol": "star",
                    "size": 18,
                    "color": RESISTANCE_COLOUR[0],
                    "line": {"color": RESISTANCE_COLOUR[1], "width": 1.5},
                },
                "text": [plain(f"{label} ({d})") for d, _, label in model.resistance],
                "hoverinfo": "text",
                "meta": {"role": "resistance"},
            }
        )
    if model.calls:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": model.call_dates,
                "y": [0.96] * len(model.calls),
                "yaxis": "y2",
                "name": "ctDNA result",
                "marker": {
                    "symbol": "square",
                    "size": 12,
                    "color": [CALL_COLOURS.get(c, "#7f8c8d") for c in model.calls],
                },
                "text": [
                    plain(f"{s}: {c.lower()}")
                    for s, c in zip(model.call_samples, model.calls, strict=True)
                ],
                "hoverinfo": "text",
                "meta": {"role": "mrd_call", "calls": model.calls},
            }
        )
    if model.events:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [e.date for e in model.events],
                "y": [0.02] * len(model.events),
                "yaxis": "y2",
                "name": "Clinical events",
                "marker": {
                    "symbol": "diamond",
                    "size": 11,
                    "color": [EVENT_COLOURS.get(e.kind, "#555") for e in model.events],
                },
                "hovertext": [plain(f"{e.label} {e.date}") for e in model.events],
                "hoverinfo": "text",
                "meta": {"role": "event", "kinds": [e.kind for e in model.events]},
            }
        )
    end = model.x_range[1] if model.x_range else None
    shapes: list[dict[str, Any]] = []
    for span in model.spans:
        shapes.append(
            {
                "type": "rect",
                "xref": "x",
                "yref": "paper",
                "x0": span.start,
                "x1": span.stop or end,
                "y0": 0,
                "y1": 1,
                "fillcolor": span.colour,
                "opacity": 0.4,
                "line": {"width": 0},
                "layer": "below",
            }
        )
    for event in model.events:
        shapes.append(
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": event.date,
                "x1": event.date,
                "y0": 0,
                "y1": 1,
                "line": {
                    "color": EVENT_COLOURS.get(event.kind, "#555"),
                    "width": 1.5,
                    "dash": "dash" if event.kind == "surgery" else "dot",
                },
            }
        )
    # therapy lines and clinical events are named above the plot, out of the data's way
    annotations = [
        {
            "x": label.date,
            "xref": "x",
            "y": 1,
            "yref": "paper",
            "yanchor": "bottom",
            "yshift": 4 + LABEL_ROW_PX * label.row,
            "text": plain(label.text),
            "showarrow": False,
            "xanchor": "left",
            "font": {"size": 11, "color": label.colour},
            "meta": {"role": "label"},
        }
        for label in model.labels
    ]
    rows = 1 + max((label.row for label in model.labels), default=-1)
    return {
        "data": data,
        "layout": {
            "margin": {"l": 70, "r": 20, "t": 16 + LABEL_ROW_PX * rows, "b": 50},
            "height": 460 + LABEL_ROW_PX * rows,
            "hovermode": "closest",
            "plot_bgcolor": "#ffffff",
            "paper_bgcolor": "#ffffff",
            "font": {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12},
            "xaxis": date_axis(model.x_view),
            "yaxis": {
                "type": "log",
                "title": {"text": "level in plasma (VAF, tumour fraction)"},
                "range": [math.log10(model.y_floor), math.log10(model.y_ceiling)],
                **percent_ticks(model.y_floor, model.y_ceiling),
                "gridcolor": "#eceff1",
            },
            "yaxis2": {"overlaying": "y", "range": [0, 1], "visible": False, "fixedrange": True},
            "legend": {"orientation": "h", "y": -0.15, "font": {"size": 11}},
            "shapes": shapes,
            "annotations": annotations,
        },
    }


LABEL_ROW_PX = 18


def date_axis(x_view: tuple[str, str] | None) -> dict[str, Any]:
    """A date axis over `x_view` labelled by day or by month, never by time of day (one draw
    alone would otherwise get ticks in milliseconds)."""
    axis: dict[str, Any] = {"type": "date", "showgrid": True, "gridcolor": "#eceff1"}
    if x_view is not None:
        days = (dt.date.fromisoformat(x_view[1]) - dt.date.fromisoformat(x_view[0])).days
        axis["range"] = list(x_view)
        axis["tickformat"] = "%Y-%m-%d" if days <= 120 else "%b %Y"
        if days <= 60:
            axis["dtick"] = 7 * 86_400_000  # weekly
        elif days <= 400:
            axis["dtick"] = "M1"
    return axis


def percent_ticks(floor: float, ceiling: float) -> dict[str, Any]:
    """Decade ticks of a log axis written as percentages (0.01%, 0.1%, 1%, 10%)."""
    low, high = math.floor(math.log10(floor)), math.ceil(math.log10(ceiling))
    values = [10.0**k for k in range(low, high + 1)]
    return {"tickvals": values, "ticktext": [percent(v, 1) for v in values]}


def _clone_dates(model: Clones) -> tuple[str, str] | None:
    dates = sorted({d for clone in model.shown for d in clone.dates})
    return (dates[0], dates[-1]) if dates else None


def plotly_clones(model: Clones) -> dict[str, Any]:
    """Clone prevalence over time as a stacked area: each band is one clone's mean VAF in
    the draw (its share of the cell-free DNA). Bands are stacked, not nested: the clones'
    ancestry is not inferred."""
    data = [
        {
            "type": "scatter",
            # markers too: a clone seen in one draw is a point, which an area alone hides
            "mode": "lines+markers",
            "stackgroup": "clones",
            "x": clone.dates,
            "y": clone.vafs,
            "name": plain(f"{clone.label} ({clone.status})"),
            "line": {"color": clone.colour, "width": 1},
            "fillcolor": clone.colour,
            "text": [
                f"{plain(clone.label)}<br>{d}: VAF {percent(v)}"
                + ("" if det else " (not detected)")
                for d, v, det in zip(clone.dates, clone.vafs, clone.detected, strict=True)
            ],
            "hoverinfo": "text",
            "meta": {"role": "clone", "clone_id": clone.clone_id, "status": clone.status},
        }
        for clone in model.shown
    ]
    return {
        "data": data,
        "layout": {
            "margin": {"l": 70, "r": 20, "t": 20, "b": 40},
            "height": 300,
            "plot_bgcolor": "#ffffff",
            "paper_bgcolor": "#ffffff",
            "font": {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12},
            "xaxis": date_axis(padded_range(_clone_dates(model))),
            "yaxis": {
                "title": {"text": "clone level (VAF, stacked)"},
                "rangemode": "tozero",
                "tickformat": ".2~%",
                "gridcolor": "#eceff1",
            },
            "legend": {"orientation": "h", "y": -0.2, "font": {"size": 11}, "traceorder": "normal"},
        },
    }
