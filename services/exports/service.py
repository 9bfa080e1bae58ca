"""What every export says about a patient, computed once from the loaded rows: therapy lines,
the timeline anchor, each sample's ctDNA call and tumour fraction; and the CSV tables.

The MRD call of a sample is the tumour-informed INVAR call of the stored `mrd` analysis (post
surgery); the tumour fraction of a plasma sample without one is the hotspot/truncal estimate
of the stored `trends` analysis. Nothing is recomputed here."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from services.errors import InvalidInput
from services.exports.repository import PatientExport
from services.genomics.annotate import hotspot_for
from services.genomics.therapy import TherapyEvent, TherapyLine, therapy_lines
from services.genomics.types import Locus


@dataclass(frozen=True, slots=True)
class SampleStatus:
    """A plasma sample's ctDNA answer, from the MRD call when there is one."""

    call: str | None  # POSITIVE | NEGATIVE | INDETERMINATE (MRD), None without an MRD call
    detected: bool | None  # trends: tumour DNA seen above background at this draw
    tumor_fraction: float | None
    ci_low: float | None
    ci_high: float | None
    lod95: float | None
    p_value: float | None
    informative_reads: int | None
    loci_detected: int | None
    loci_tracked: int | None
    method: str  # "tumour-informed MRD (INVAR)" or "tumour-fraction estimate"
    reason: str | None
    version: str | None


def lines_of(export: PatientExport) -> list[TherapyLine]:
    events = [
        TherapyEvent(type=e.type, date=e.event_date, drug=e.drug, drug_class=e.drug_class)  # type: ignore[arg-type]
        for e in export.events
        if e.type in ("therapy_start", "therapy_stop")
    ]
    try:
        return therapy_lines(events)
    except InvalidInput:
        # Stored events were validated one by one; a history that no longer composes into
        # lines is shown as no lines rather than failing the export.
        return []


def current_therapy(export: PatientExport) -> str:
    return ", ".join(
        line.drug or line.drug_class for line in lines_of(export) if line.stop_date is None
    )


def first_event(export: PatientExport, kind: str) -> dt.date | None:
    return next((e.event_date for e in export.events if e.type == kind), None)


def anchor(export: PatientExport) -> tuple[dt.date | None, str]:
    """Day 0 of the patient's timeline: surgery, else the first therapy start, else the first
    sample; (None, "none") for a patient with nothing dated."""
    for kind in ("surgery", "therapy_start"):
        date = first_event(export, kind)
        if date is not None:
            return date, kind
    if export.samples:
        return export.samples[0].collection_date, "first_sample"
    return None, "none"


def last_follow_up(export: PatientExport) -> dt.date | None:
    dates = [s.collection_date for s in export.samples] + [e.event_date for e in export.events]
    return max(dates) if dates else None


def sample_statuses(export: PatientExport) -> dict[str, SampleStatus]:
    """sample_id -> its ctDNA status, for the plasma samples the analyses cover."""
    out: dict[str, SampleStatus] = {}
    trends = export.bodies.get("trends", {})
    for point in trends.get("samples", []):
        if point.get("tumor_fraction") is None:
            continue
        ci = point.get("tumor_fraction_ci") or [None, None]
        out[point["sample_id"]] = SampleStatus(
            call=None,
            detected=point.get("detected"),
            tumor_fraction=point["tumor_fraction"],
            ci_low=ci[0],
            ci_high=ci[1],
            lod95=point.get("lod95"),
            p_value=point.get("p_value"),
            informative_reads=point.get("informative_reads"),
            loci_detected=None,
            loci_tracked=None,
            method="tumour-fraction estimate",
            reason=None,
            version=trends.get("params_version"),
        )
    mrd = export.bodies.get("mrd", {})
    for call in mrd.get("calls", []):
        out[call["sample_id"]] = SampleStatus(
            call=call["call"],
            detected=call["call"] == "POSITIVE",
            tumor_fraction=call.get("tumor_fraction"),
            ci_low=call.get("ci_low"),
            ci_high=call.get("ci_high"),
            lod95=call.get("lod95"),
            p_value=call.get("p_value"),
            informative_reads=call.get("informative_reads"),
            loci_detected=call.get("loci_detected"),
            loci_tracked=call.get("loci_tracked"),
            method="tumour-informed MRD (INVAR)",
            reason=call.get("reason"),
            version=mrd.get("rule_version"),
        )
    return out


def hgvs_c(locus_key: str | None) -> str | None:
    """The cDNA change of a hotspot (hotspots.tsv), the only place we know one from."""
    if not locus_key:
        return None
    try:
        hotspot = hotspot_for(Locus.parse(locus_key))
    except ValueError:
        return None
    return hotspot.hgvs_c if hotspot else None


# --- CSV --------------------------------------------------------------------------------------

CALL_COLUMNS = (
    "patient_id", "sample_id", "collection_date", "days_since_surgery", "call", "reason",
    "score", "threshold", "p_value", "tumor_fraction", "tumor_fraction_ci_low",
    "tumor_fraction_ci_high", "lod95", "loci_detected", "loci_tracked", "loci_reported",
    "informative_reads", "mutant_reads", "mutant_molecules_per_ml", "rule_version",
)  # fmt: skip

VARIANT_CSV_COLUMNS = (
    "patient_id", "sample_id", "sample_type", "collection_date", "gene", "protein_change",
    "hgvs_c", "chrom", "pos", "ref", "alt", "build", "locus_key", "filter", "detected",
    "hotspot", "tracked", "alt_reads", "depth", "vaf", "quantitative", "normal_alt_reads",
    "normal_depth",
)  # fmt: skip

SUMMARY_COLUMNS = (
    "patient_id", "samples", "last_draw", "mrd_status", "molecular_relapse_date",
    "lead_time_days", "resistance", "resistance_events", "current_therapy",
    "latest_tumor_fraction",
)  # fmt: skip


def to_csv(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    return buffer.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return inert(value)
    return value


# A cell a spreadsheet would evaluate: a formula (= + - @), or one led by a tab or carriage
# return (OWASP "CSV injection"); the fullwidth forms count, some spreadsheets fold them.
_LIVE = tuple("=+-@\t\r\uff1d\uff0b\uff0d\uff20")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def inert(text: str) -> str:
    """The text of a CSV/TSV cell, never evaluated by a spreadsheet: a leading formula
    character gets a quote before it (the text is kept, shown as written). A number stays a
    number ("-12" days before surgery)."""
    if text.startswith(_LIVE) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def calls_rows(export: PatientExport) -> list[dict[str, Any]]:
    mrd = export.bodies.get("mrd", {})
    return [
        {
            **call,
            "patient_id": export.patient_id,
            "tumor_fraction_ci_low": call.get("ci_low"),
            "tumor_fraction_ci_high": call.get("ci_high"),
            "rule_version": mrd.get("rule_version"),
        }
        for call in mrd.get("calls", [])
    ]


def variant_rows(export: PatientExport) -> list[dict[str, Any]]:
    rows = []
    for sample in export.samples:
        for v in export.variants.get(sample.id, []):
            rows.append(
                {
                    "patient_id": export.patient_id,
                    "sample_id": sample.sample_id,
                    "sample_type": sample.sample_type,
                    "collection_date": sample.collection_date,
                    **v._asdict(),
                    "hgvs_c": hgvs_c(v.locus_key),
                }
            )
    return rows


def resistance_summary(events: Iterable[dict[str, Any]]) -> str:
    """ "ESR1 p.D538G (aromatase_inhibitor)", once per variant and class (an event that
    emerged and then rose is one clone)."""
    names = (f"{e.get('gene')} {e.get('protein_change')} ({e.get('drug_class')})" for e in events)
    return "; ".join(dict.fromkeys(names))


def summary_row(export: PatientExport) -> dict[str, Any]:
    """One line of the site's patient list (the CLI's `ctdna patients` reads it)."""
    mrd = export.bodies.get("mrd", {})
    resistance = export.bodies.get("resistance", {})
    statuses = sample_statuses(export)
    latest = next(
        (statuses[s.sample_id] for s in reversed(export.samples) if s.sample_id in statuses),
        None,
    )
    # an event awaiting confirmation (thin evidence in one draw) is not a result yet
    events = [
        e for e in resistance.get("events", []) if e.get("confirmation", "confirmed") == "confirmed"
    ]
    # Counted: processed samples (a failed one has no data); last draw: processed plasma.
    done = [s for s in export.samples if s.status == "processed"]
    return {
        "patient_id": export.patient_id,
        "samples": len(done),
        "last_draw": max(
            (s.collection_date for s in done if s.sample_type == "plasma"), default=None
        ),
        "mrd_status": mrd.get("status") or "not_applicable",
        "molecular_relapse_date": mrd.get("molecular_relapse_date"),
        "lead_time_days": mrd.get("lead_time_days"),
        "resistance": "emerging" if events else "",
        "resistance_events": resistance_summary(events),
        "current_therapy": current_therapy(export),
        "latest_tumor_fraction": latest.tumor_fraction if latest else None,
    }
