"""The patient report: one context built from the stored analysis bodies, rendered as the web
page and printable HTML (Jinja templates in services/api/templates) and as a PDF written with
matplotlib's PdfPages (no other dependency): the plots, the MRD calls with their LoD95 and
reasons, the resistance events with implications and citations, the molecular response per
therapy line, the method versions and parameters, the site and the time it was generated."""

from __future__ import annotations

import datetime as dt
import io
import textwrap
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from services.reports.figures import clones_model, timeline_model, variant_label
from services.reports.labels import (
    STATUS_TEXT,
    TERMS,
    call_text,
    drug_class_label,
    event_label,
    reason_text,
)
from services.reports.numbers import count, fraction_or_lod, p_value, percent, percent_range
from services.reports.plots import draw_clones, draw_timeline, plain
from services.samples.models import Sample

A4 = (8.27, 11.69)


def _call_row(call: dict[str, Any]) -> dict[str, Any]:
    detected = call["call"] == "POSITIVE"
    return {
        "amended": _amended_from(call),
        "sample_id": call["sample_id"],
        "collection_date": call["collection_date"],
        "call": call["call"],
        "call_text": call_text(call["call"]),
        "reason": reason_text(call.get("reason")),
        "days": call.get("days_since_surgery"),
        "score": "–" if call.get("score") is None else f"{call['score']:.1f}",
        "threshold": "–" if call.get("threshold") is None else f"{call['threshold']:.1f}",
        "p_value": p_value(call.get("p_value")),
        "tumor_fraction": fraction_or_lod(
            call.get("tumor_fraction"), detected=detected, lod95=call.get("lod95")
        ),
        "ci": percent_range(call.get("ci_low"), call.get("ci_high")) if detected else "",
        "lod95": percent(call.get("lod95")),
        "loci": f"{call.get('loci_detected', '–')} of {call.get('loci_tracked', '–')}",
        "informative_reads": count(call.get("informative_reads")),
        "mutant_reads": call.get("mutant_reads"),
    }


def _amended_from(result: dict[str, Any]) -> str | None:
    """For a call or event that was amended: what it had been issued as, and why it changed;
    None for one shown as first issued."""
    history = result.get("amendments") or []
    if not history:
        return None
    first = history[0]
    return f"first issued as {_shown(first['previous'])}; amended: {first['reason']}"


def _shown(value: Any) -> str:
    """An amended value as a reader knows it: a call or event by its categorical value."""
    if value is None:
        return "withdrawn"
    if isinstance(value, dict):
        return str(value.get("call") or value.get("status") or "")
    return str(value)


EVENT_STATUS_TEXT = {
    "emerged": "emerged",
    "present_at_start": "present when the line began",
    "rising": "rising",
}


def _event_row(event: dict[str, Any]) -> dict[str, Any]:
    """A resistance event as the page, the report and the PDF show it."""
    status = str(event.get("status") or "")
    return {
        **event,
        "status_text": EVENT_STATUS_TEXT.get(status, status.replace("_", " ")),
        "drug_class_text": drug_class_label(event.get("drug_class")),
        "vaf_text": percent(event.get("vaf")),
        "on": event.get("drug") or drug_class_label(event.get("drug_class")),
        "amended": _amended_from(event),
    }


FIELD_NAMES = {
    "call": "MRD call",
    "status": "MRD status",
    "molecular_relapse_date": "molecular relapse date",
    "event": "resistance event",
}


def amendment_rows(history: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Every amendment of the patient's issued results, newest first, for the page and PDF."""
    rows = []
    for item in reversed(history):
        result = item["previous"] if isinstance(item["previous"], dict) else {}
        what = FIELD_NAMES.get(item["field"], item["field"])
        if item["field"] == "event":
            what += f" {result.get('gene', '')} {result.get('protein_change', '')}".rstrip()
        if item.get("sample_id"):
            what += f" ({item['sample_id']})"
        rows.append(
            {
                "when": _when(item["amended_at"]),
                "what": what,
                "before": _shown(item["previous"]),
                "after": _shown(item["current"]),
                "reason": item["reason"],
                "version": item["method_version"],
            }
        )
    return rows


def _methods(bodies: dict[str, Any]) -> list[dict[str, str]]:
    mrd, trends, clones, resistance = (
        bodies["mrd"],
        bodies["trends"],
        bodies["clones"],
        bodies["resistance"],
    )
    calls = mrd.get("calls") or []
    nulls = {c.get("n_null_simulations") for c in calls if c.get("n_null_simulations")}
    mrd_params = [
        f"specificity ≥ {mrd['specificity']:.1%} per sample" if mrd.get("specificity") else "",
        f"threshold calibrated at {mrd['threshold_specificity']:.1%}"
        if mrd.get("threshold_specificity")
        else "",
        f"min. informative reads {mrd['min_informative_reads']:,}"
        if mrd.get("min_informative_reads")
        else "",
        f"background {mrd['background_version']}" if mrd.get("background_version") else "",
        f"{max(nulls):,} posterior-predictive null draws per call" if nulls else "",
        f"{mrd['loci_tracked']} tracked loci" if mrd.get("loci_tracked") else "",
    ]
    return [
        {
            "analysis": "MRD call (INVAR likelihood ratio, calibrated threshold)",
            "version": str(mrd.get("rule_version") or "–"),
            "parameters": "; ".join(p for p in mrd_params if p),
            "computed_at": _when(mrd.get("computed_at")),
        },
        {
            "analysis": "Trends: tumour fraction, relative CCF, molecular response",
            "version": str(trends.get("params_version") or "–"),
            "parameters": "95% profile-likelihood CI; response = ≥ 50% fall from line baseline",
            "computed_at": _when(trends.get("computed_at")),
        },
        {
            "analysis": "Clones",
            "version": str(clones.get("params_version") or "–"),
            "parameters": str(clones.get("method") or ""),
            "computed_at": _when(clones.get("computed_at")),
        },
        {
            "analysis": "Resistance (versioned resistance map)",
            "version": " / ".join(
                str(v)
                for v in (resistance.get("params_version"), resistance.get("map_version"))
                if v
            )
            or "–",
            "parameters": "newly detected (≥ 2 mutant reads, previous draw sensitive enough) or "
            "≥ 2-fold rise with p < 0.01, on a class the variant resists",
            "computed_at": _when(resistance.get("computed_at")),
        },
    ]


def _when(text: str | None) -> str:
    if not text:
        return "–"
    try:
        return dt.datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return text


def _hormone_text(value: float | str | None, status: str) -> str:
    if value is None:
        return "–"
    return f"{value:g}% ({status})" if isinstance(value, float | int) else status


def receptor_rows(receptors: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The receptor_status events of GET /receptors as the page and the report show them."""
    rows = []
    for e in (receptors or {}).get("events", []):
        her2 = [
            *([f"IHC {e['her2_ihc']}"] if e.get("her2_ihc") else []),
            *([f"ISH {e['her2_ish'].replace('_', ' ')}"] if e.get("her2_ish") else []),
        ]
        rows.append(
            {
                "date": e["date"],
                "specimen": e["specimen"],
                "site": e.get("site") or "",
                "er_text": _hormone_text(e.get("er"), e["er_status"]),
                "pr_text": _hormone_text(e.get("pr"), e["pr_status"]),
                "her2_text": ", ".join(her2) or "–",
                "her2_category": e["her2_category"],
                "subtype": e["subtype_label"],
            }
        )
    return rows


def report_context(
    bodies: dict[str, Any],
    *,
    patient_id: str,
    site: str,
    samples: Sequence[Sample],
    generated_at: dt.datetime,
    amendments: Sequence[dict[str, Any]] = (),
    receptors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The page's and the report's context; ``receptors`` is the GET /receptors body."""
    mrd, trends, clones, resistance = (
        bodies["mrd"],
        bodies["trends"],
        bodies["clones"],
        bodies["resistance"],
    )
    per_sample = {s["sample_id"]: s for s in trends.get("samples", [])}
    calls = {c["sample_id"]: c for c in mrd.get("calls", [])}
    sample_rows = [_sample_row(s, calls.get(s.sample_id), per_sample) for s in samples]
    # Draws are counted when processed; failed and retracted samples are listed as such.
    plasma = [s for s in samples if s.sample_type == "plasma" and s.status == "processed"]
    therapy = resistance.get("current_therapy") or [
        line for line in trends.get("therapy_lines", []) if not line.get("stop_date")
    ]
    latest_id = next((s.sample_id for s in reversed(plasma) if s.sample_id in per_sample), None)
    latest = next((r for r in sample_rows if r["sample_id"] == latest_id), None)
    model = clones_model(clones)
    responses = [
        {
            "line": _therapy_name(r["line"]),
            "start_date": r["line"].get("start_date"),
            "stop_date": r["line"].get("stop_date"),
            "baseline": f"{percent(r.get('baseline_tf'))} ({r.get('baseline_date')})"
            if r.get("baseline_tf") is not None
            else "–",
            "best": (r.get("best_response") or "–").replace("_", " "),
            "latest": (r.get("latest_response") or "–").replace("_", " "),
        }
        for r in trends.get("responses", [])
    ]
    timeline = timeline_model(trends, mrd, resistance)
    undetected = sorted({v.label for v in timeline.variants if not v.prominent})
    events = [_event_row(event) for event in resistance.get("events", [])]
    actionable = [
        {
            **finding,
            "drug_class_text": drug_class_label(finding.get("drug_class")),
            "drugs_text": ", ".join(finding.get("drugs") or []) or "–",
            "vaf_text": percent(finding.get("vaf")),
        }
        for finding in resistance.get("actionable", [])
    ]
    context = {
        "patient_id": patient_id,
        "site": site,
        "generated_at": generated_at.strftime("%Y-%m-%d %H:%M UTC"),
        "mrd": mrd,
        "trends": trends,
        "clones": clones,
        "resistance": resistance,
        "status": mrd.get("status") or "not_applicable",
        "status_text": STATUS_TEXT.get(mrd.get("status") or "", mrd.get("status") or ""),
        "status_reason": reason_text(mrd.get("reason")),
        "emerging": any(e.get("confirmation", "confirmed") == "confirmed" for e in events),
        "therapy": [_therapy_name(t) for t in therapy],
        "therapy_lines": trends.get("therapy_lines", []),
        "clinical_events": [
            {**e, "label": event_label(e.get("type"))} for e in trends.get("events", [])
        ],
        "last_draw": plasma[-1].collection_date.isoformat() if plasma else None,
        "n_plasma": len(plasma),
        "n_failed": sum(1 for s in samples if s.status == "failed"),
        "n_retracted": sum(1 for s in samples if s.status == "retracted"),
        "amendments": amendment_rows(amendments),
        "latest_tf": latest["tumor_fraction"] if latest else None,
        "latest_tf_date": latest["collection_date"] if latest else None,
        "calls": [_call_row(c) for c in mrd.get("calls", [])],
        "events": events,
        "withdrawn_events": [_event_row(e) for e in resistance.get("withdrawn_events", [])],
        "actionable": actionable,
        "clone_rows": [
            {
                "label": c.label,
                "status": c.status.replace("_", " "),
                "latest_vaf": (percent(c.vafs[-1]) if c.detected[-1] else "not detected")
                if c.vafs
                else "–",
                "shown": c in model.shown,
            }
            for c in [*model.shown, *model.hidden]
        ],
        "clone_method": model.method,
        "responses": responses,
        "receptors": receptors or {},
        "receptor_rows": receptor_rows(receptors),
        "samples": sample_rows,
        "methods": _methods(bodies),
        "terms": TERMS,
        "tracked_n": sum(1 for v in timeline.variants if v.tracked),
        "undetected_hotspots": undetected,
        "tracked_labels": [
            variant_label(v) for v in trends.get("variants", []) if v.get("tracked")
        ],
    }
    context["draws_text"] = _draws(context)
    return context


def _therapy_name(line: dict[str, Any]) -> str:
    """A therapy line as a clinician names it: the drug, else its class in words."""
    return str(line.get("drug") or drug_class_label(line.get("drug_class")) or "therapy")


def _sample_row(
    sample: Sample, call: dict[str, Any] | None, per_sample: dict[str, Any]
) -> dict[str, Any]:
    """A sample with the tumour fraction of its MRD call (post-surgery plasma), else of the
    trend estimate: "< LoD95" when nothing was detected."""
    estimate = per_sample.get(sample.sample_id, {})
    source = call or estimate
    if call:
        detected: bool | None = call["call"] == "POSITIVE"
        low, high = call.get("ci_low"), call.get("ci_high")
    else:
        detected = estimate.get("detected")
        low, high = (estimate.get("tumor_fraction_ci") or [None, None])[:2]
    return {
        "sample_id": sample.sample_id,
        "collection_date": sample.collection_date.isoformat(),
        "sample_type": sample.sample_type,
        "status": sample.status,
        "retraction_reason": sample.retraction_reason,
        "build": sample.detected_build or sample.genome_build or "",
        "tumor_fraction": fraction_or_lod(
            source.get("tumor_fraction"), detected=detected, lod95=source.get("lod95")
        )
        if source
        else "",
        "tf_ci": percent_range(low, high) if source and detected else "",
        "detected": detected,
        "lod95": percent(source.get("lod95")) if source.get("lod95") is not None else "",
        "math": f"{estimate['math_score']:.0f}" if estimate.get("math_score") is not None else "",
    }


# --- PDF ------------------------------------------------------------------------------------


class _Page:
    """A portrait A4 page filled top-down with text blocks and tables, in figure inches."""

    def __init__(self, pdf: PdfPages, context: dict[str, Any]) -> None:
        self.pdf = pdf
        self.context = context
        self.fig: Figure | None = None
        self.y = 0.0
        self.number = 0

    def new(self) -> Figure:
        self.finish()
        self.fig = Figure(figsize=A4)
        self.number += 1
        self.y = A4[1] - 0.6
        self.fig.text(
            0.6 / A4[0],
            0.35 / A4[1],
            plain(
                f"ctDNA monitoring report · patient {self.context['patient_id']} · site "
                f"{self.context['site']} · generated {self.context['generated_at']}"
            ),
            fontsize=7,
            color="#555555",
        )
        self.fig.text(1 - 0.6 / A4[0], 0.35 / A4[1], f"page {self.number}", fontsize=7, ha="right")
        return self.fig

    def finish(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)  # type: ignore[no-untyped-call]
            self.fig = None

    def room(self, inches: float) -> Figure:
        if self.fig is None or self.y - inches < 0.8:
            return self.new()
        return self.fig

    def text(
        self,
        text: str,
        *,
        size: float = 9,
        weight: str = "normal",
        colour: str = "#111111",
        width: int = 110,
        gap: float = 0.06,
    ) -> None:
        lines = [line for para in text.split("\n") for line in (textwrap.wrap(para, width) or [""])]
        height = len(lines) * size * 1.45 / 72
        fig = self.room(height + gap)
        fig.text(
            0.6 / A4[0],
            self.y / A4[1],
            "\n".join(plain(line) for line in lines),
            fontsize=size,
            weight=weight,
            color=colour,
            va="top",
            linespacing=1.35,
        )
        self.y -= height + gap

    def heading(self, text: str) -> None:
        self.room(1.2)  # a heading stays with the start of its section
        self.text(text, size=11, weight="bold")

    def table(self, header: list[str], rows: list[list[str]], widths: list[float]) -> None:
        """A table in rows of 7-point text; long cells wrap within their column."""
        size = 7
        line = size * 1.5 / 72
        chars = [max(4, int(w * 72 / (size * 0.55))) for w in widths]

        def wrapped(cells: list[str]) -> tuple[list[list[str]], float]:
            split = [textwrap.wrap(str(c), n) or [""] for c, n in zip(cells, chars, strict=True)]
            return split, max(len(s) for s in split) * line + 0.06

        def draw(cells: list[str], bold: bool) -> None:
            split, height = wrapped(cells)
            fig = self.room(height)
            x = 0.6
            for parts, width in zip(split, widths, strict=True):
                fig.text(
                    x / A4[0],
                    self.y / A4[1],
                    "\n".join(plain(part) for part in parts),
                    fontsize=size,
                    weight="bold" if bold else "normal",
                    va="top",
                    linespacing=1.3,
                )
                x += width
            self.y -= height
            fig.add_artist(_rule(self.y + 0.03, fig, colour="#999999" if bold else "#dddddd"))

        self.room(wrapped(header)[1] + (wrapped(rows[0])[1] if rows else 0))
        draw(header, True)
        for row in rows:
            if self.y - wrapped(row)[1] < 0.8:
                self.new()
                draw(header, True)
            draw(row, False)
        self.y -= 0.15

    def plot(self, height: float, draw: Any) -> None:
        fig = self.room(height + 0.2)
        ax = fig.add_axes(
            (0.9 / A4[0], (self.y - height) / A4[1], (A4[0] - 1.3) / A4[0], (height - 0.35) / A4[1])
        )
        draw(ax)
        self.y -= height + 0.45


def _rule(y: float, fig: Figure, colour: str) -> Any:
    from matplotlib.lines import Line2D

    return Line2D(
        [0.6 / A4[0], 1 - 0.6 / A4[0]],
        [y / A4[1], y / A4[1]],
        color=colour,
        lw=0.5,
        transform=fig.transFigure,
    )


def _draws(context: dict[str, Any]) -> str:
    """ "3 plasma draws · 1 failed · 1 retracted": processed draws, the others apart."""
    n = context["n_plasma"]
    parts = [f"{n} plasma draw{'' if n == 1 else 's'}"]
    parts += [
        f"{context[key]} {label}"
        for key, label in (("n_failed", "failed"), ("n_retracted", "retracted"))
        if context[key]
    ]
    return " · ".join(parts)


def report_pdf(bodies: dict[str, Any], context: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with PdfPages(buffer) as pdf:
        metadata = pdf.infodict()
        metadata["Title"] = f"ctDNA monitoring report: patient {context['patient_id']}"
        metadata["Subject"] = f"site {context['site']}"
        metadata["Creator"] = "ctDNA monitoring service"
        page = _Page(pdf, context)
        page.new()
        page.text(
            f"ctDNA monitoring report: patient {context['patient_id']}", size=15, weight="bold"
        )
        page.text(
            f"Site {context['site']} · generated {context['generated_at']}",
            size=8,
            colour="#555555",
            gap=0.15,
        )
        summary = [
            f"Status: {context['status_text']}"
            + (f" ({context['status_reason']})" if context["status_reason"] else "")
        ]
        mrd = context["mrd"]
        if mrd.get("molecular_relapse_date"):
            lead = mrd.get("lead_time_days")
            summary.append(
                f"Molecular relapse {mrd['molecular_relapse_date']}"
                + (f", {lead} days before clinical relapse" if lead is not None else "")
            )
        if context["emerging"]:
            genes = sorted({f"{e['gene']} {e['protein_change']}" for e in context["events"]})
            summary.append("Emerging resistance: " + ", ".join(genes))
        summary.append(
            f"Current therapy: {', '.join(context['therapy']) or 'none recorded'} · "
            f"{context['draws_text']}, last {context['last_draw'] or '–'}"
            + (
                f" · latest tumour fraction {context['latest_tf']} ({context['latest_tf_date']})"
                if context["latest_tf"]
                else ""
            )
        )
        page.text("\n".join(summary), size=9.5, gap=0.2)
        timeline = timeline_model(bodies["trends"], bodies["mrd"], bodies["resistance"])
        page.plot(4.3, lambda ax: draw_timeline(ax, timeline))
        page.y -= 0.45  # the legend sits under the axes
        clones = clones_model(bodies["clones"])
        page.plot(2.6, lambda ax: draw_clones(ax, clones))

        page.new()
        page.heading("MRD calls (tumour-informed, post-surgery plasma)")
        if context["calls"]:
            page.table(
                [
                    "Sample",
                    "Date",
                    "ctDNA",
                    "Reason",
                    "Evidence / threshold",
                    "p",
                    "Tumour fraction (95% CI)",
                    "LoD95",
                    "Loci with reads",
                    "Reads",
                ],
                [
                    [
                        c["sample_id"],
                        c["collection_date"],
                        c["call_text"] + (" (amended)" if c["amended"] else ""),
                        c["reason"],
                        f"{c['score']} / {c['threshold']}",
                        c["p_value"],
                        c["tumor_fraction"] + (f" ({c['ci']})" if c["ci"] else ""),
                        c["lod95"],
                        c["loci"],
                        c["informative_reads"],
                    ]
                    for c in context["calls"]
                ],
                [0.9, 0.7, 0.6, 1.3, 0.7, 0.4, 1.1, 0.5, 0.4, 0.5],
            )
        else:
            page.text(mrd.get("reason") or "No post-surgery plasma call.", gap=0.2)
        page.heading("Resistance events")
        if context["events"]:
            for event in context["events"]:
                page.text(
                    f"{event['gene']} {event['protein_change']}: {event['status_text']}"
                    + (
                        " (awaiting confirmation)"
                        if event.get("confirmation") == "awaiting_confirmation"
                        else ""
                    )
                    + (" (amended)" if event["amended"] else "")
                    + " "
                    f"{event.get('event_date') or ''} (first detected "
                    f"{event['first_detected_date']}, sample {event.get('sample_id', '')}) "
                    f"on {event['on']} · VAF {event['vaf_text']}"
                    + (f", {event['fold_change']:.1f}-fold" if event.get("fold_change") else "")
                    + (f", p {p_value(event.get('p_value'))}" if event.get("p_value") else ""),
                    size=8.5,
                    weight="bold",
                )
                page.text(event.get("implication") or "", size=8)
                page.text(
                    "\n".join(f"• {c}" for c in event.get("citations", [])),
                    size=7,
                    colour="#444444",
                    width=130,
                    gap=0.15,
                )
        else:
            page.text("No resistance event.", gap=0.2)
        page.heading("Actionable variants")
        page.table(
            ["Variant", "Drugs", "Evidence", "Established", "VAF"],
            [
                [
                    f"{a['gene']} {a['protein_change']}",
                    a["drugs_text"],
                    f"ESCAT {a['evidence_level']}" if a.get("evidence_level") else "–",
                    str(a.get("alert_date") or ""),
                    a["vaf_text"],
                ]
                for a in context["actionable"]
            ]
            or [["No actionable variant detected", "", "", "", ""]],
            [1.6, 1.6, 0.9, 1.0, 0.8],
        )
        if context["receptor_rows"]:
            page.heading("Receptors (ER/PR ASCO/CAP 2020, HER2 ASCO/CAP 2023)")
            page.table(
                ["Date", "Specimen", "ER", "PR", "HER2", "Subtype"],
                [
                    [
                        str(r["date"]),
                        r["specimen"] + (f" ({r['site']})" if r["site"] else ""),
                        r["er_text"],
                        r["pr_text"],
                        f"{r['her2_category']} ({r['her2_text']})",
                        r["subtype"],
                    ]
                    for r in context["receptor_rows"]
                ],
                [0.8, 1.2, 0.9, 0.9, 1.7, 1.6],
            )
            for d in context["receptors"].get("discordance", []):
                page.text(
                    f"{d['receptor']} {d['change'].replace('_', ' ')}: {d['primary']} "
                    f"({d['primary_date']}) → {d['latest']} ({d['latest_date']})",
                    size=8.5,
                    weight="bold",
                )
                page.text(d["implication"], size=8)
                page.text(
                    "\n".join(f"• {c}" for c in d["citations"]),
                    size=7,
                    colour="#444444",
                    width=130,
                    gap=0.15,
                )
        if context["amendments"]:
            page.heading("Amendments of issued results")
            page.table(
                ["When", "Result", "Issued as", "Now", "Reason", "Method"],
                [
                    [a["when"], a["what"], a["before"], a["after"], a["reason"], a["version"]]
                    for a in context["amendments"]
                ],
                [1.0, 1.6, 0.8, 0.8, 2.1, 0.8],
            )
        if context["responses"]:
            page.heading("Molecular response per therapy line")
            page.table(
                ["Therapy", "Start", "Stop", "Baseline tumour fraction", "Best", "Latest"],
                [
                    [
                        r["line"],
                        r["start_date"],
                        r["stop_date"] or "ongoing",
                        r["baseline"],
                        r["best"],
                        r["latest"],
                    ]
                    for r in context["responses"]
                ],
                [1.3, 0.9, 0.9, 1.9, 1.0, 1.0],
            )
        page.heading("Clones")
        page.table(
            ["Clone", "Status", "Latest VAF"],
            [[c["label"], c["status"], c["latest_vaf"]] for c in context["clone_rows"]]
            or [["No clone fitted", "", ""]],
            [4.5, 1.2, 1.2],
        )
        page.heading("Samples")
        page.table(
            [
                "Sample",
                "Date",
                "Type",
                "Status",
                "Build",
                "Tumour fraction (95% CI)",
                "LoD95",
                "Heterogeneity",
            ],
            [
                [
                    s["sample_id"],
                    s["collection_date"],
                    s["sample_type"],
                    s["status"]
                    + (f" ({s['retraction_reason']})" if s["retraction_reason"] else ""),
                    s["build"],
                    s["tumor_fraction"] + (f" ({s['tf_ci']})" if s["tf_ci"] else ""),
                    s["lod95"],
                    s["math"],
                ]
                for s in context["samples"]
            ],
            [1.2, 0.8, 0.6, 0.75, 0.6, 1.7, 0.6, 0.5],
        )
        page.heading("Methods, versions and parameters")
        page.table(
            ["Analysis", "Version", "Parameters", "Computed"],
            [
                [m["analysis"], m["version"], m["parameters"], m["computed_at"]]
                for m in context["methods"]
            ],
            [2.0, 1.3, 2.7, 1.1],
        )
        page.text(
            "Terms. "
            + " ".join(
                f"{name.replace('_', ' ').capitalize()}: {text}."
                for name, text in context["terms"].items()
            ),
            size=7,
            colour="#555555",
            width=140,
        )
        page.text(
            "Research use: results of a monitoring service, to be read with the clinical picture.",
            size=7,
            colour="#555555",
        )
        page.finish()
    return buffer.getvalue()
