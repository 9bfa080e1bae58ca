"""The patient timeline as a static image (PNG or SVG), drawn from the stored trend and MRD
bodies: VAF per variant on a log scale, the tumour-fraction estimate with its 95% band, the
LoD95 of negative draws, surgery and therapy lines as spans, clinical events as markers."""

from __future__ import annotations

import datetime as dt
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: rendering happens in API processes

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

FLOOR = 1e-6  # a zero VAF is drawn at the floor of the log axis
CALL_COLOURS = {"POSITIVE": "#c0392b", "NEGATIVE": "#27ae60", "INDETERMINATE": "#7f8c8d"}


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def timeline(trends: dict[str, Any], mrd: dict[str, Any], *, fmt: str = "png") -> bytes:
    fig, ax = plt.subplots(figsize=(10, 5.2), dpi=110)
    try:
        _draw(ax, trends, mrd)
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, bbox_inches="tight")
        return buffer.getvalue()
    finally:
        plt.close(fig)


def _draw(ax: Any, trends: dict[str, Any], mrd: dict[str, Any]) -> None:
    ax.set_yscale("log")
    ax.set_ylim(FLOOR, 1.0)
    ax.set_ylabel("VAF / tumour fraction (log)")
    dates: list[dt.date] = []
    for variant in trends.get("variants", []):
        points = variant.get("points", [])
        if not points:
            continue
        xs = [_date(p["collection_date"]) for p in points]
        ys = [max(p["vaf"], FLOOR) for p in points]
        dates += xs
        label = " ".join(x for x in (variant.get("gene"), variant.get("protein_change")) if x)
        ax.plot(
            xs,
            ys,
            marker="o",
            markersize=3,
            linewidth=1,
            alpha=0.9 if variant.get("protein_change") else 0.35,
            label=label or None if variant.get("protein_change") else None,
        )
    samples = [s for s in trends.get("samples", []) if s.get("tumor_fraction") is not None]
    if samples:
        xs = [_date(s["collection_date"]) for s in samples]
        tf = [max(s["tumor_fraction"], FLOOR) for s in samples]
        low = [
            max((s.get("tumor_fraction_ci") or [FLOOR, FLOOR])[0] or FLOOR, FLOOR) for s in samples
        ]
        high = [
            max((s.get("tumor_fraction_ci") or [FLOOR, FLOOR])[1] or FLOOR, FLOOR) for s in samples
        ]
        dates += xs
        ax.plot(xs, tf, color="black", linewidth=2, label="tumour fraction")
        ax.fill_between(xs, low, high, color="black", alpha=0.12, label="95% CI")
    for call in mrd.get("calls", []):
        x = _date(call["collection_date"])
        dates.append(x)
        colour = CALL_COLOURS.get(call["call"], "#7f8c8d")
        if call["call"] == "NEGATIVE" and call.get("lod95"):
            ax.scatter([x], [max(call["lod95"], FLOOR)], marker="v", color=colour, zorder=5)
        ax.scatter([x], [1.0 / 1.5], marker="s", color=colour, zorder=5, clip_on=False)
    _clinical(ax, trends, mrd, dates)
    if dates:
        lo, hi = min(dates), max(dates)
        pad = dt.timedelta(days=max(14, (hi - lo).days // 20))
        # clamped: a date near the ends of the calendar (year 1, year 9999) must not overflow
        ax.set_xlim(max(lo, dt.date.min + pad) - pad, min(hi, dt.date.max - pad) + pad)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m"))
    ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=7, loc="lower left", ncol=2)
    ax.set_title(
        f"Patient {trends.get('patient_id', '')}: ctDNA timeline "
        "(squares: MRD calls; triangles: LoD95 of negatives)",
        fontsize=9,
    )


def _clinical(ax: Any, trends: dict[str, Any], mrd: dict[str, Any], dates: list[dt.date]) -> None:
    for line in trends.get("therapy_lines", []):
        start = _date(line["start_date"])
        stop = _date(line["stop_date"]) if line.get("stop_date") else max(dates or [start])
        dates += [start, stop]
        ax.axvspan(start, stop, color="#3498db", alpha=0.08)
        ax.text(
            start,
            2e-6,
            line.get("drug") or line.get("drug_class"),
            fontsize=7,
            color="#2c3e50",
            rotation=90,
            va="bottom",
        )
    for event in trends.get("events", []):
        when = _date(event["date"])
        dates.append(when)
        if event["type"] == "surgery":
            ax.axvline(when, color="#8e44ad", linestyle="--", linewidth=1)
            ax.text(when, 0.3, "surgery", fontsize=7, color="#8e44ad", rotation=90)
        elif event["type"] in ("clinical_relapse", "progression"):
            ax.axvline(when, color="#c0392b", linestyle=":", linewidth=1.5)
            ax.text(
                when, 0.3, event["type"].replace("_", " "), fontsize=7, color="#c0392b", rotation=90
            )
    relapse = mrd.get("molecular_relapse_date")
    if relapse:
        ax.axvline(_date(relapse), color="#e67e22", linewidth=1.5)
        ax.text(_date(relapse), 0.05, "molecular relapse", fontsize=7, color="#e67e22", rotation=90)
