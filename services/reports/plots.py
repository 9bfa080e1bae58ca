"""The patient plots as static images (PNG, SVG) and as matplotlib axes for the PDF report,
drawn from the same models as the web page's interactive figures (`services/reports/figures`):
VAF per variant on a log scale, the tumour-fraction estimate with its 95% band, the LoD95 of
negative draws, MRD calls, therapy lines as shaded spans, surgery and relapses as markers; and
the clones' prevalence over time as a stacked area."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: rendering happens in API processes

import matplotlib.dates as mdates
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from services.reports.figures import (
    CALL_COLOURS,
    EVENT_COLOURS,
    RESISTANCE_COLOUR,
    TF_COLOUR,
    Clones,
    Timeline,
    clones_model,
    padded_range,
    percent_ticks,
    timeline_model,
)
from services.reports.numbers import percent


def plain(text: str) -> str:
    """Text that matplotlib draws as written: an unescaped `$` starts mathtext, so a drug
    named `x$\\frac{$y` failed every plot and report of its patient. Log-axis tick labels
    still use mathtext (their own, not ours), so it is escaped here rather than turned off."""
    return text.replace("$", r"\$")


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def _date_axis(ax: Any) -> None:
    locator = mdates.AutoDateLocator(maxticks=10)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    low, high = ax.get_xlim()
    # year-month over months and years; day-level labels for a short span
    formatter = (
        mdates.DateFormatter("%Y-%m")  # type: ignore[no-untyped-call]
        if high - low > 120
        else mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
    )
    ax.xaxis.set_major_formatter(formatter)


def _render(fig: Figure, fmt: str) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, bbox_inches="tight")
    return buffer.getvalue()


def timeline(
    trends: dict[str, Any],
    mrd: dict[str, Any],
    resistance: dict[str, Any] | None = None,
    *,
    fmt: str = "png",
) -> bytes:
    # Figure() rather than pyplot: no global figure registry shared by the API's threads.
    fig = Figure(figsize=(10, 5.2), dpi=110)
    draw_timeline(fig.add_subplot(), timeline_model(trends, mrd, resistance))
    return _render(fig, fmt)


def clones(body: dict[str, Any], *, fmt: str = "png") -> bytes:
    fig = Figure(figsize=(10, 3.6), dpi=110)
    draw_clones(fig.add_subplot(), clones_model(body))
    return _render(fig, fmt)


def draw_timeline(ax: Any, model: Timeline) -> None:
    ax.set_yscale("log")
    ax.set_ylim(model.y_floor, model.y_ceiling)
    ax.set_ylabel("level in plasma (VAF, tumour fraction)")
    ticks = percent_ticks(model.y_floor, model.y_ceiling)
    ax.yaxis.set_major_locator(FixedLocator(ticks["tickvals"]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: percent(v, 1)))
    ax.yaxis.set_minor_locator(NullLocator())
    tracked_labelled = False
    for series in model.variants:
        if not series.prominent:
            continue  # undetected hotspots: listed in the report, not drawn
        xs = [_date(d) for d, v in zip(series.dates, series.vafs, strict=True) if v > 0]
        ys = [v for v in series.vafs if v > 0]
        if series.tracked:
            label = None if tracked_labelled else "tracked loci"
            tracked_labelled = True
            ax.plot(xs, ys, color=series.colour, lw=0.8, alpha=0.6, marker="o", ms=2, label=label)
        else:
            ax.plot(xs, ys, color=series.colour, lw=2, marker="o", ms=4, label=plain(series.label))
    if model.tf_dates:
        xs = [_date(d) for d in model.tf_dates]
        ax.fill_between(
            xs, model.tf_low, model.tf_high, color=TF_COLOUR, alpha=0.12, lw=0, label="95% CI"
        )
        tf = [(x, v) for x, v in zip(xs, model.tf, strict=True) if v > 0]
        ax.plot(
            [x for x, _ in tf],
            [v for _, v in tf],
            color=TF_COLOUR,
            lw=2.5,
            marker="o",
            ms=5,
            label="tumour fraction",
        )
    if model.lods:
        ax.scatter(
            [_date(d) for d in model.lod_dates],
            model.lods,
            marker="v",
            s=60,
            color=CALL_COLOURS["NEGATIVE"],
            edgecolor="white",
            zorder=5,
            label="LoD95 of a negative draw",
        )
    if model.resistance:
        ax.scatter(
            [_date(d) for d, _, _ in model.resistance],
            [v for _, v, _ in model.resistance],
            marker="*",
            s=220,
            color=RESISTANCE_COLOUR[0],
            edgecolor=RESISTANCE_COLOUR[1],
            zorder=7,
            label="resistance event",
        )
    # MRD calls as coloured squares along the top edge, in axes coordinates
    strip = ax.get_xaxis_transform()
    for date, call in zip(model.call_dates, model.calls, strict=True):
        ax.scatter(
            [_date(date)],
            [0.965],
            transform=strip,
            marker="s",
            s=45,
            color=CALL_COLOURS.get(call, "#7f8c8d"),
            zorder=6,
            clip_on=False,
        )
    end = _date(model.x_range[1]) if model.x_range else None
    for span in model.spans:
        start = _date(span.start)
        stop = _date(span.stop) if span.stop else (end or start)
        ax.axvspan(start, stop, color=span.colour, alpha=0.45, lw=0, zorder=0)
    for event in model.events:
        colour = EVENT_COLOURS.get(event.kind, "#555555")
        when = _date(event.date)
        ax.axvline(when, color=colour, ls="--" if event.kind == "surgery" else ":", lw=1.3)
        ax.scatter([when], [0.02], transform=strip, marker="D", s=36, color=colour, zorder=6)
    # therapy lines and clinical events named above the axes, out of the data's way
    for top in model.labels:
        # matplotlib.dates carries no annotations: date2num is an untyped call
        x = mdates.date2num(_date(top.date))  # type: ignore[no-untyped-call]
        ax.annotate(
            plain(top.text),
            xy=(x, 1.0),
            xycoords=strip,
            xytext=(0, 3 + 11 * top.row),
            textcoords="offset points",
            fontsize=7.5,
            color=top.colour,
            va="bottom",
            annotation_clip=False,
        )
    if model.x_view:
        ax.set_xlim(_date(model.x_view[0]), _date(model.x_view[1]))
    _date_axis(ax)
    ax.grid(True, which="major", alpha=0.25)
    if not (model.variants or model.tf_dates or model.calls):
        ax.text(0.5, 0.5, "No plasma result yet", ha="center", va="center", transform=ax.transAxes)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=4, frameon=False)
    rows = 1 + max((label.row for label in model.labels), default=-1)
    ax.set_title(
        plain(
            f"Patient {model.patient_id}: ctDNA timeline "
            "(squares: ctDNA result of each draw; triangles: LoD95 of negative draws)"
        ),
        fontsize=9,
        pad=6 + 11 * rows,
    )


def draw_clones(ax: Any, model: Clones) -> None:
    ax.set_title(
        plain(f"Patient {model.patient_id}: clone prevalence (stacked clone VAF)"), fontsize=9
    )
    if not model.shown:
        ax.text(0.5, 0.5, "No clone detected", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    dates = sorted({d for clone in model.shown for d in clone.dates})
    xs = [_date(d) for d in dates]
    layers = []
    for clone in model.shown:
        by_date = dict(zip(clone.dates, clone.vafs, strict=True))
        layers.append([by_date.get(d, 0.0) for d in dates])
    labels = [plain(f"{c.label} ({c.status})") for c in model.shown]
    colours = [c.colour for c in model.shown]
    if len(xs) == 1:
        # one draw: stacked bars (an area over a single date has no width)
        bottom = 0.0
        for layer, label, colour in zip(layers, labels, colours, strict=True):
            ax.bar(xs, layer, bottom=bottom, width=6, color=colour, label=label, alpha=0.85)
            bottom += layer[0]
    else:
        ax.stackplot(xs, layers, colors=colours, labels=labels, alpha=0.85)
    view = padded_range((dates[0], dates[-1]))
    assert view is not None
    ax.set_xlim(_date(view[0]), _date(view[1]))
    ax.set_ylabel("clone level (VAF, stacked)")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: percent(v) if v else "0"))
    _date_axis(ax)
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=7, loc="upper left", frameon=False)
