"""The `ctdna` commands that talk to a running API over HTTP: `patients`, `patient P`,
`submit` (one file, or a folder of VCFs with a manifest and its clinical events), `export
...`, the clinical events (`event add|correct|delete`), the corrections (`sample
correct|move|retract`) and `site show|set`. Their tables come in three formats
(services/cli_output.py).

They need only a URL and a key (`--url`/`CTDNA_URL`, `--api-key`/`CTDNA_API_KEY`), never the
database, so they work from a lab workstation. Failures the user can act on (a wrong key, an
unknown patient, a server that does not answer, a bad manifest row) end in one readable line
and a non-zero exit code, not a traceback."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from services.cli_output import (
    Column,
    Format,
    FormatOption,
    badge,
    emit,
    json_value,
    resolve,
    table,
)
from services.reports.labels import DRUG_CLASS_LABELS, drug_class_label, event_label, reason_text
from services.reports.numbers import fraction_or_lod, percent_range

if TYPE_CHECKING:
    import httpx

# What is printed to stdout comes from users and files (drug names, reasons, file names):
# never read as rich markup ("[x]" stays "[x]"); styles come from Text objects only.
out = Console(markup=False)
err = Console(stderr=True)

DEFAULT_URL = "http://127.0.0.1:8000"
SPARKS = "▁▂▃▄▅▆▇█"
SAMPLE_TYPES = ("plasma", "tissue", "normal")

Url = Annotated[
    str,
    typer.Option(
        "--url", envvar=["CTDNA_URL", "CTDNA_API_URL"], help="API base URL", show_default=True
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", "--key", envvar="CTDNA_API_KEY", help="Bearer key"),
]


class ClientError(Exception):
    """Something the user can fix; printed as one line. `status` is the HTTP status of an
    error answer, None when the server could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Api:
    """A thin httpx client that turns HTTP and connection failures into ClientError."""

    def __init__(self, url: str, key: str | None, timeout: float = 60.0) -> None:
        import httpx  # here: every other `ctdna` command would pay for its import

        if not key:
            raise ClientError(
                "no API key: pass --api-key or set CTDNA_API_KEY (`make run` prints one; an "
                "admin makes one with `ctdna keys create --site SITE --scopes ingest,read`)"
            )
        self.url = url.rstrip("/")
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
        )

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; a 429 (the site's rate limit) is waited out as its Retry-After says,
        for up to RATE_LIMIT_PATIENCE seconds in all."""
        import httpx

        deadline = time.monotonic() + RATE_LIMIT_PATIENCE
        while True:
            for value in (kwargs.get("files") or {}).values():
                value[1].seek(0)  # a file sent once more is sent whole
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.ConnectError as exc:
                raise ClientError(f"cannot connect to {self.url}: {_reason(exc)}") from exc
            except httpx.TimeoutException as exc:
                raise ClientError(f"{self.url} did not answer in time ({method} {path})") from exc
            except httpx.TransportError as exc:
                raise ClientError(f"{self.url}: {_reason(exc)}") from exc
            wait = _retry_after(response)
            if wait is None or time.monotonic() + wait > deadline:
                break
            time.sleep(wait)
        if response.status_code >= 400:
            raise ClientError(describe(response), response.status_code)
        return response

    def json(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None).json()


# How long one command waits, in all, for the site's rate limit to let a request through (a
# folder of a few hundred files goes out at the upload rate, 10 per second by default).
RATE_LIMIT_PATIENCE = 300.0


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait before sending a refused request again: only for a 429."""
    if response.status_code != 429:
        return None
    try:
        return min(30.0, max(0.1, float(response.headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0


def describe(response: httpx.Response) -> str:
    """One line for an error answer, from its problem+json detail when there is one."""
    detail = None
    try:
        body = response.json()
        detail = body.get("detail") or body.get("title") if isinstance(body, dict) else None
    except ValueError:
        detail = response.text.strip()[:200] or None
    status = response.status_code
    hint = {
        401: " (check --api-key / CTDNA_API_KEY)",
        403: " (this key lacks the scope)",
    }.get(status, "")
    phrase = response.reason_phrase or ""
    return f"{status} {phrase}: {detail or 'no detail'}{hint}"


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower():
        return "connection refused (is `ctdna serve` running there?)"
    return text


@contextmanager
def _session(url: str, key: str | None) -> Iterator[Api]:
    """The API client of one command; a ClientError ends the command with exit code 1."""
    api = None
    try:
        api = Api(url, key)
        yield api
    except ClientError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        if api is not None:
            api.close()


# --- ctdna patients / patient ------------------------------------------------------------------


def sparkline(values: Sequence[float | None]) -> str:
    """One character per value on a log scale between the smallest and largest positive value
    (tumour fractions span orders of magnitude); 0 is the lowest bar, a missing value "·"."""
    positive = [v for v in values if v is not None and v > 0]
    if not positive:
        return "".join("·" if v is None else SPARKS[0] for v in values)
    low, high = math.log10(min(positive)), math.log10(max(positive))
    chars = []
    for v in values:
        if v is None:
            chars.append("·")
        elif v <= 0:
            chars.append(SPARKS[0])
        else:
            share = 1.0 if high == low else (math.log10(v) - low) / (high - low)
            chars.append(SPARKS[1 + round(share * (len(SPARKS) - 2))])
    return "".join(chars)


def _number(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


PATIENT_COLUMNS = (
    Column("patient_id", "patient"),
    Column("samples", "samples", "number"),
    Column("last_draw", "last draw", "date"),
    Column("mrd_status", "ctDNA (MRD)", "badge"),
    Column("molecular_relapse_date", "molecular relapse", "date", table=False),
    Column("lead_time_days", "lead time (days)", "number", table=False),
    Column("latest_tumor_fraction", "tumour fraction", "fraction", table=False),
    Column("tumour_fraction", "tumour fraction", "number", machine=False),
    Column("resistance_events", "resistance", "text", table=False),
    Column("resistance_text", "resistance", "text", machine=False),
    Column("current_therapy", "current therapy", "text"),
)
DRUG_CLASS_IN_TEXT = re.compile(r"\(([a-z0-9_]+)\)")


def patients(
    search: Annotated[
        str | None, typer.Option(help="Only patients whose id contains this text")
    ] = None,
    fmt: FormatOption = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """The site's patients: ctDNA status, resistance, last draw, current therapy."""
    chosen = resolve(fmt, out)
    with _session(url, api_key) as api:
        text = api.request("GET", "/v1/exports/patients.csv").text
    rows: list[dict[str, Any]] = list(csv.DictReader(io.StringIO(text)))
    if search:
        rows = [r for r in rows if search.lower() in r["patient_id"].lower()]
    for row in rows:
        row["samples"] = int(row["samples"])
        row["latest_tumor_fraction"] = _number(row["latest_tumor_fraction"])
        row["lead_time_days"] = int(row["lead_time_days"]) if row["lead_time_days"] else None
        for key in ("last_draw", "molecular_relapse_date"):
            row[key] = row[key] or None
        # as in the web view: a negative patient's latest draw is "< LoD95", never a number
        negative = row["mrd_status"] == "NEGATIVE"
        row["tumour_fraction"] = fraction_or_lod(
            row["latest_tumor_fraction"], detected=False if negative else None
        )
        row["resistance_text"] = DRUG_CLASS_IN_TEXT.sub(
            lambda m: f"(on {drug_class_label(m.group(1))})", row["resistance_events"]
        )
    title = f"{len(rows)} patient{'' if len(rows) == 1 else 's'}"
    emit(out, chosen, PATIENT_COLUMNS, rows, title=title)


SAMPLE_COLUMNS = (
    Column("sample_id", "sample"),
    Column("collection_date", "date", "date"),
    Column("sample_type", "type"),
    Column("status", "status"),
    Column("call", "ctDNA call", table=False),
    Column("call_cell", "ctDNA call", machine=False),
    Column("amended_from", "issued as", table=False),
    Column("reason", "reason", "text"),
    Column("tumour_fraction", "tumour fraction (95% CI)", "number", machine=False),
    Column("tumor_fraction", "tumour fraction", "fraction", table=False),
    Column("ci_low", "95% CI low", "fraction", table=False),
    Column("ci_high", "95% CI high", "fraction", table=False),
    Column("detected", "detected", table=False),
    Column("lod95", "LoD95", "fraction"),
    Column("loci", "loci with reads", "number"),
    Column("informative_reads", "informative reads", "number"),
)
RESISTANCE_COLUMNS = (
    Column("gene", "gene"),
    Column("protein_change", "change"),
    Column("status", "status"),
    Column("first_detected_date", "first detected", "date"),
    Column("drug_class", "on drug class", table=False),
    Column("drug_class_text", "on", "text", machine=False),
    Column("implication", "implication", "text"),
)
SUMMARY_COLUMNS = (
    Column("patient_id", "patient"),
    Column("mrd_status", "ctDNA (MRD)", "badge"),
    Column("reason", "reason", "text"),
    Column("molecular_relapse_date", "molecular relapse", "date"),
    Column("lead_time_days", "lead time (days)", "number"),
    Column("current_therapy", "current therapy", "text"),
    Column("plasma_draws", "plasma draws", "number"),
    Column("not_counted", "not counted", "text"),
    Column("events", "events", "text"),
)
AMENDMENT_COLUMNS = (
    Column("amended_at", "when (UTC)", "date"),
    Column("field", "result"),
    Column("sample_id", "sample"),
    Column("previous", "issued as"),
    Column("current", "now"),
    Column("reason", "reason", "text"),
)


def patient(
    patient_id: Annotated[str, typer.Argument(help="patient_id")],
    fmt: FormatOption = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """One patient: samples with their ctDNA calls, a tumour-fraction sparkline, resistance,
    the amendments of issued results.

    TSV prints four tables, each after a `# name` line: the patient, its samples, its
    resistance events, its amendments; JSON one object with the four."""
    chosen = resolve(fmt, out)
    path = f"/v1/patients/{quote(patient_id, safe='')}"
    with _session(url, api_key) as api:
        detail = api.json(path)
        mrd = api.json(f"{path}/mrd")
        trends = api.json(f"{path}/trends")
        resistance = api.json(f"{path}/resistance")
        amendments = api.json(f"{path}/amendments")["items"]
    calls = {c["sample_id"]: c for c in mrd.get("calls", [])}
    fractions = {s["sample_id"]: s for s in trends.get("samples", [])}
    therapy = [
        line.get("drug") or drug_class_label(line.get("drug_class"))
        for line in resistance.get("current_therapy", [])
    ]
    by_status = detail.get("samples_by_status") or {}
    plasma = [
        s for s in detail["samples"] if s["sample_type"] == "plasma" and s["status"] == "processed"
    ]
    aside = [f"{by_status[k]} {k}" for k in ("failed", "retracted", "pending") if by_status.get(k)]
    summary = {
        "patient_id": detail["patient_id"],
        "mrd_status": mrd.get("status") or "not_applicable",
        "reason": reason_text(mrd.get("reason")),
        "molecular_relapse_date": mrd.get("molecular_relapse_date"),
        "lead_time_days": mrd.get("lead_time_days"),
        "current_therapy": ", ".join(therapy),
        "plasma_draws": len(plasma),
        "not_counted": ", ".join(aside),
        "events": "; ".join(
            f"#{e['id']} {event_label(e['type'])} {e['date']}"
            + (f" {e['drug']}" if e.get("drug") else "")
            for e in detail.get("events", [])
        ),
    }
    samples = [_sample_row(s, calls.get(s["sample_id"]), fractions) for s in detail["samples"]]
    events = [
        {**event, "drug_class_text": drug_class_label(event.get("drug_class"))}
        for event in resistance.get("events", [])
    ]
    changes = [_amendment_row(item) for item in reversed(amendments)]  # newest first
    tables = (
        ("patient", SUMMARY_COLUMNS, [summary]),
        ("samples", SAMPLE_COLUMNS, samples),
        ("resistance", RESISTANCE_COLUMNS, events),
        ("amendments", AMENDMENT_COLUMNS, changes),
    )
    if chosen == "json":
        payload = {
            name: [{c.key: json_value(r.get(c.key)) for c in columns if c.machine} for r in rows]
            for name, columns, rows in tables
        }
        payload["patient"] = payload["patient"][0]  # type: ignore[assignment]
        sys.stdout.write(json.dumps(payload, indent=2, default=str, ensure_ascii=False) + "\n")
        return
    if chosen == "tsv":
        for name, columns, rows in tables:
            sys.stdout.write(f"# {name}\n")
            emit(out, "tsv", columns, rows)
        return

    header = Text.assemble(
        (f"{detail['patient_id']}  ", "bold"), "ctDNA MRD ", badge(summary["mrd_status"])
    )
    if summary["reason"]:
        header.append(f"  {summary['reason']}")
    if mrd.get("molecular_relapse_date"):
        header.append(f"  molecular relapse {mrd['molecular_relapse_date']}", style="red")
        if mrd.get("lead_time_days") is not None:
            header.append(f" ({mrd['lead_time_days']} days before clinical relapse)")
    out.print(header)
    out.print(
        f"therapy: {summary['current_therapy'] or 'none'}; events: {summary['events'] or 'none'}"
    )
    out.print(
        f"{len(plasma)} plasma draw{'' if len(plasma) == 1 else 's'}"
        + (f" ({summary['not_counted']} not counted)" if aside else "")
    )
    series = [_tumour_fraction(s["sample_id"], calls, fractions) for s in plasma]
    if plasma:
        out.print(
            Text.assemble(
                "tumour fraction ",
                (sparkline(series), "bold cyan"),
                f"  {plasma[0]['collection_date']} → {plasma[-1]['collection_date']}",
            )
        )
    table(out, SAMPLE_COLUMNS, samples)
    if events:
        table(out, RESISTANCE_COLUMNS, events, title="emerging resistance", header_style="bold red")
    if changes:
        table(
            out,
            AMENDMENT_COLUMNS,
            changes,
            title="amendments of issued results",
            header_style="bold yellow",
        )


def _call_cell(call: dict[str, Any]) -> Text:
    """The call's badge, marked when it was amended after it had been issued."""
    cell = badge(call["call"])
    if call.get("amendments"):
        first = call["amendments"][0]["previous"] or {}
        cell.append(f" amended (was {first.get('call', '?')})", style="yellow")
    return cell


def _amendment_row(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "amended_at": str(item["amended_at"])[:16].replace("T", " "),
        "field": item["field"],
        "sample_id": item.get("sample_id"),
        "previous": _amended_value(item["previous"]),
        "current": _amended_value(item["current"]),
        "reason": item["reason"],
    }


def _amended_value(value: Any) -> str:
    if value is None:
        return "withdrawn"
    if isinstance(value, dict):
        return str(value.get("call") or value.get("status") or "")
    return str(value)


def _sample_row(
    sample: dict[str, Any], call: dict[str, Any] | None, fractions: dict[str, Any]
) -> dict[str, Any]:
    """A sample with its MRD call (post-surgery plasma) or, without one, its tumour-fraction
    estimate: the numbers raw for TSV/JSON, written as in the web view for the table."""
    point = fractions.get(sample["sample_id"]) or {}
    source = call or point
    if call:
        low, high = call.get("ci_low"), call.get("ci_high")
        detected: bool | None = call["call"] == "POSITIVE"
    else:
        low, high = tuple(point.get("tumor_fraction_ci") or (None, None))
        detected = point.get("detected")
    value = source.get("tumor_fraction")
    shown = fraction_or_lod(value, detected=detected, lod95=source.get("lod95"))
    if detected and (low is not None or high is not None):
        shown += f" ({percent_range(low, high)})"
    return {
        "sample_id": sample["sample_id"],
        "collection_date": sample["collection_date"],
        "sample_type": sample["sample_type"],
        "status": sample["status"],
        "call": call["call"] if call else None,
        "call_cell": _call_cell(call) if call else Text(""),
        "amended_from": ((call.get("amendments") or [{}])[0].get("previous") or {}).get("call")
        if call
        else None,
        "reason": reason_text(call.get("reason")) if call else _detected(point),
        "tumour_fraction": shown if source else "",
        "tumor_fraction": value,
        "ci_low": low,
        "ci_high": high,
        "detected": detected,
        "lod95": source.get("lod95"),
        "loci": f"{call['loci_detected']}/{call['loci_tracked']}" if call else None,
        "informative_reads": source.get("informative_reads"),
    }


def _tumour_fraction(
    sample_id: str, calls: dict[str, Any], fractions: dict[str, Any]
) -> float | None:
    source = calls.get(sample_id) or fractions.get(sample_id) or {}
    value = source.get("tumor_fraction")
    return float(value) if value is not None else None


def _detected(point: dict[str, Any]) -> str:
    if point.get("detected") is None:
        return ""
    return "ctDNA detected" if point["detected"] else "ctDNA not detected"


# --- ctdna submit -------------------------------------------------------------------------------

MANIFEST_NAMES = ("manifest.csv", "manifest.tsv", "manifest.txt")
# Column names a manifest may use for each form field (the first is ours).
COLUMN_ALIASES = {
    "file": ("file", "path", "filename", "vcf"),
    "patient_id": ("patient_id", "patient"),
    "sample_id": ("sample_id", "sample"),
    "sample_type": ("sample_type", "type"),
    "collection_date": ("collection_date", "collected_at", "collected", "date"),
    "genome_build": ("genome_build", "build"),
    "tumor_sample": ("tumor_sample",),
    "normal_sample": ("normal_sample",),
    "plasma_ml": ("plasma_ml",),
    "cfdna_ng_per_ml": ("cfdna_ng_per_ml",),
    "assay": ("assay", "panel"),
    "tumor_purity": ("tumor_purity", "purity"),
    "alignment": ("alignment", "bam", "cram"),
    "alignment_index": ("alignment_index", "bai", "crai", "index"),
}
FILE_COLUMNS = ("file", "alignment", "alignment_index")
REQUIRED = ("file", "patient_id", "sample_id", "collection_date")


@dataclass
class Upload:
    """One file to post, from the command line or a manifest row."""

    path: Path
    form: dict[str, str]
    where: str  # "manifest.csv line 3" or the file name, for messages
    alignment: Path | None = None  # the sample's BAM/CRAM, sent with the VCF
    alignment_index: Path | None = None
    outcome: str = "pending"  # accepted | duplicate | failed
    job_id: str | None = None
    job_status: str | None = None
    reason: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class ManifestError(ClientError):
    """A manifest that cannot be used; lists every bad row."""


def read_manifest(manifest: Path, folder: Path) -> list[Upload]:
    """The uploads a manifest describes, every row checked before anything is sent."""
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{manifest}: cannot read it ({exc})") from exc
    delimiter = "\t" if manifest.suffix == ".tsv" or "\t" in text.split("\n", 1)[0] else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    columns = {(c or "").strip().lower(): c for c in reader.fieldnames or ()}
    resolved: dict[str, str] = {}
    for name, aliases in COLUMN_ALIASES.items():
        found = next((columns[a] for a in aliases if a in columns), None)
        if found is not None:
            resolved[name] = found
    missing = [name for name in REQUIRED if name not in resolved]
    if missing:
        raise ManifestError(
            f"{manifest.name}: the header lacks {', '.join(missing)} "
            f"(columns: {', '.join(reader.fieldnames or ()) or 'none'})"
        )
    uploads: list[Upload] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        where = f"{manifest.name} line {line}"
        values = {k: (row.get(col) or "").strip() for k, col in resolved.items()}
        if not any(values.values()):
            continue
        row_problems = _check_row(values, folder)
        sample_id = values.get("sample_id", "")
        if sample_id and sample_id in seen:
            row_problems.append(f"sample_id {sample_id!r} already on line {seen[sample_id]}")
        seen.setdefault(sample_id, line)
        if row_problems:
            label = f" (sample {sample_id})" if sample_id else ""
            problems.append(f"{where}{label}: {'; '.join(row_problems)}")
            continue
        form = {k: v for k, v in values.items() if k not in FILE_COLUMNS and v}
        form.setdefault("sample_type", "plasma")
        alignment, index = values.get("alignment"), values.get("alignment_index")
        uploads.append(
            Upload(
                path=_resolve(values["file"], folder),
                form=form,
                where=where,
                alignment=_resolve(alignment, folder) if alignment else None,
                alignment_index=_resolve(index, folder) if index else None,
            )
        )
    if problems:
        raise ManifestError("\n".join(problems))
    if not uploads:
        raise ManifestError(f"{manifest.name}: no rows")
    # Tissue first (it chooses the tracked loci), then draws in date order: fewer
    # re-extractions than the manifest's own order.
    uploads.sort(key=lambda u: (u.form["sample_type"] == "plasma", u.form["collection_date"]))
    return uploads


def _resolve(name: str, folder: Path) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else folder / path


def _check_row(values: dict[str, str], folder: Path) -> list[str]:
    problems = [f"{name} is empty" for name in REQUIRED if not values.get(name)]
    for column in FILE_COLUMNS:
        if values.get(column) and not _resolve(values[column], folder).is_file():
            problems.append(f"{column} {values[column]!r} not found in {folder}")
    if bool(values.get("alignment")) != bool(values.get("alignment_index")):
        problems.append("alignment and alignment_index go together")
    if values.get("collection_date"):
        try:
            dt.date.fromisoformat(values["collection_date"][:10])
            values["collection_date"] = values["collection_date"][:10]
        except ValueError:
            problems.append(f"collection date {values['collection_date']!r} is not YYYY-MM-DD")
    if values.get("sample_type") and values["sample_type"].lower() not in SAMPLE_TYPES:
        problems.append(
            f"sample_type {values['sample_type']!r} is not one of {', '.join(SAMPLE_TYPES)}"
        )
    elif values.get("sample_type"):
        values["sample_type"] = values["sample_type"].lower()
    for name in ("plasma_ml", "cfdna_ng_per_ml", "tumor_purity"):
        if values.get(name):
            try:
                float(values[name])
            except ValueError:
                problems.append(f"{name} {values[name]!r} is not a number")
    return problems


def submit(
    path: Annotated[
        Path,
        typer.Argument(
            exists=True, readable=True, help="A VCF/VCF.gz/BCF, or a folder with a manifest"
        ),
    ],
    patient: Annotated[
        str | None, typer.Option("--patient", help="patient_id (single file)")
    ] = None,
    sample_id: Annotated[str | None, typer.Option(help="Default: the file name")] = None,
    collection_date: Annotated[
        str | None, typer.Option(help="YYYY-MM-DD, the day of the draw (single file: required)")
    ] = None,
    sample_type: Annotated[str, typer.Option(help="plasma | tissue | normal")] = "plasma",
    genome_build: Annotated[str | None, typer.Option()] = None,
    tumor_sample: Annotated[str | None, typer.Option()] = None,
    normal_sample: Annotated[str | None, typer.Option()] = None,
    plasma_ml: Annotated[float | None, typer.Option()] = None,
    cfdna_ng_per_ml: Annotated[float | None, typer.Option()] = None,
    assay: Annotated[
        str | None, typer.Option(help="Panel/assay name; backgrounds pool within one assay")
    ] = None,
    tumor_purity: Annotated[
        float | None, typer.Option(help="Tumour purity of a tissue sample, (0, 1]")
    ] = None,
    alignment: Annotated[
        Path | None,
        typer.Option(exists=True, readable=True, help="The sample's BAM/CRAM (single file)"),
    ] = None,
    alignment_index: Annotated[
        Path | None, typer.Option(exists=True, readable=True, help="Its .bai/.csi/.crai")
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(help="CSV/TSV manifest (folder mode; default FOLDER/manifest.csv|tsv)"),
    ] = None,
    events: Annotated[
        Path | None,
        typer.Option(
            help="CSV/TSV of clinical events posted before the samples (folder mode; default "
            "FOLDER/events.csv|tsv when there is one)"
        ),
    ] = None,
    create_patient: Annotated[
        bool | None,
        typer.Option(
            "--create-patient/--no-create-patient",
            help="Create a patient the site does not have yet (default: the site's setting, "
            "normally off: an unknown patient id is refused, so a typo creates nothing)",
        ),
    ] = None,
    fmt: FormatOption = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Poll until the jobs end")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the jobs")] = 300.0,
) -> None:
    """Upload variant files and (by default) wait for their ingest jobs.

    One file: `ctdna submit FILE --patient P --collection-date YYYY-MM-DD [--sample-id ...]`.
    A folder: `ctdna submit FOLDER [--manifest M] [--events E]`, the manifest a CSV or TSV
    with the columns file, patient_id, sample_id, collection_date (or collected_at) and
    optionally sample_type, genome_build, tumor_sample, normal_sample, plasma_ml,
    cfdna_ng_per_ml, assay, tumor_purity, alignment and alignment_index (a BAM/CRAM and its
    index, sent with the VCF); the events file has the columns patient_id, type, date and
    optionally drug, drug_class, note (and specimen, site, er, pr, her2_ihc, her2_ish for
    receptor_status).
    Every row of both is checked before anything is sent, and a bad row is named by its
    line. Events already recorded for the patient are not posted again. A patient the site
    does not have is refused (404) unless `--create-patient` is given (or the site creates
    patients on upload)."""
    chosen = resolve(fmt, out)
    creation = {} if create_patient is None else {"create_patient": str(create_patient).lower()}
    if path.is_dir():
        try:
            uploads = read_manifest(manifest or _find_manifest(path), path)
            for upload in uploads:
                upload.form.update(creation)
            event_file = events or _find_events(path)
            clinical = read_events(event_file) if event_file else []
        except ClientError as exc:
            err.print(
                f"[red]manifest rejected, nothing was sent:[/red]\n{escape(str(exc))}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2) from None
        with _session(url, api_key) as api:
            _post_events(api, clinical, create_patient=create_patient)
            _submit_many(api, uploads, wait=wait, timeout=timeout, fmt=chosen)
        failed = [u for u in uploads if u.outcome == "failed" or u.job_status == "failed"]
        failed_events = [e for e in clinical if e.outcome == "failed"]
        raise typer.Exit(1 if failed or failed_events else 0)
    problems = []
    if not patient:
        problems.append("--patient is required when submitting one file")
    if not collection_date:
        problems.append("--collection-date YYYY-MM-DD (the day of the draw) is required")
    elif not _is_date(collection_date):
        problems.append(f"--collection-date {collection_date!r} is not YYYY-MM-DD")
    if (alignment is None) != (alignment_index is None):
        problems.append("--alignment and --alignment-index go together")
    if problems:
        err.print(
            f"[red]error:[/red] {escape('; '.join(problems))}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(2)
    assert patient is not None and collection_date is not None
    form = {
        "patient_id": patient,
        "sample_id": sample_id or path.name.split(".")[0],
        "collection_date": collection_date,
        "sample_type": sample_type,
    }
    optional = {
        "genome_build": genome_build,
        "tumor_sample": tumor_sample,
        "normal_sample": normal_sample,
        "plasma_ml": plasma_ml,
        "cfdna_ng_per_ml": cfdna_ng_per_ml,
        "assay": assay,
        "tumor_purity": tumor_purity,
    }
    form.update({k: str(v) for k, v in optional.items() if v is not None})
    form.update(creation)
    upload = Upload(
        path=path,
        form=form,
        where=path.name,
        alignment=alignment,
        alignment_index=alignment_index,
    )
    with _session(url, api_key) as api:
        _post(api, upload)
        if upload.outcome == "failed":
            raise ClientError(f"{path.name}: {upload.reason}")
        print(f"sample_id={form['sample_id']} job_id={upload.job_id}", flush=True)
        if not wait:
            return
        _wait(api, [upload], timeout=timeout)
    if upload.job_status is None or upload.job_status not in ("succeeded", "failed"):
        err.print("[red]timed out waiting for the job[/red]")
        raise typer.Exit(1)
    print(f"status={upload.job_status}" + (f" error={upload.reason}" if upload.reason else ""))
    raise typer.Exit(0 if upload.job_status == "succeeded" else 1)


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _find_manifest(folder: Path) -> Path:
    for name in MANIFEST_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise ManifestError(f"no manifest in {folder} (looked for {', '.join(MANIFEST_NAMES)})")


def _find_events(folder: Path) -> Path | None:
    return next((folder / n for n in EVENT_FILE_NAMES if (folder / n).is_file()), None)


# --- clinical events: ctdna event, and the events file of a folder ------------------------------

EVENT_FILE_NAMES = ("events.csv", "events.tsv")
EVENT_TYPES = (
    "surgery",
    "therapy_start",
    "therapy_stop",
    "clinical_relapse",
    "progression",
    "receptor_status",
)
THERAPY_EVENTS = ("therapy_start", "therapy_stop")
# The fields of an event besides its type and date, in the order the API names them.
EVENT_FIELDS = (
    "drug",
    "drug_class",
    "note",
    "specimen",
    "site",
    "er",
    "pr",
    "her2_ihc",
    "her2_ish",
)
EVENT_ALIASES = {
    "patient_id": ("patient_id", "patient"),
    "type": ("type", "event", "event_type"),
    "date": ("date", "event_date"),
    **{name: (name,) for name in EVENT_FIELDS},
}


@dataclass
class ClinicalEvent:
    """One event to post: its patient, the JSON body, and where it was read."""

    patient_id: str
    body: dict[str, str]
    where: str
    outcome: str = "pending"  # posted | present | failed
    reason: str = ""


def check_event(body: dict[str, str]) -> list[str]:
    """What is wrong with an event body, before the API is asked (it checks again)."""
    problems = []
    kind = body.get("type", "")
    if kind not in EVENT_TYPES:
        problems.append(f"type {kind!r} is not one of {', '.join(EVENT_TYPES)}")
    if not body.get("date"):
        problems.append("date is empty")
    elif not _is_date(body["date"]):
        problems.append(f"date {body['date']!r} is not YYYY-MM-DD")
    if body.get("drug_class") and body["drug_class"] not in DRUG_CLASS_LABELS:
        problems.append(
            f"drug_class {body['drug_class']!r} is not one of {', '.join(DRUG_CLASS_LABELS)}"
        )
    if kind in THERAPY_EVENTS and not (body.get("drug") or body.get("drug_class")):
        problems.append(f"{kind} needs a drug or a drug_class")
    if kind not in THERAPY_EVENTS and (body.get("drug") or body.get("drug_class")):
        problems.append(f"an event of type {kind!r} takes no drug or drug_class")
    return problems


def read_events(path: Path) -> list[ClinicalEvent]:
    """The events of a CSV/TSV file, every row checked before anything is sent."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read it ({exc})") from exc
    delimiter = "\t" if path.suffix == ".tsv" or "\t" in text.split("\n", 1)[0] else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    columns = {(c or "").strip().lower(): c for c in reader.fieldnames or ()}
    resolved = {
        name: next(columns[a] for a in aliases if a in columns)
        for name, aliases in EVENT_ALIASES.items()
        if any(a in columns for a in aliases)
    }
    missing = [name for name in ("patient_id", "type", "date") if name not in resolved]
    if missing:
        raise ManifestError(
            f"{path.name}: the header lacks {', '.join(missing)} "
            f"(columns: {', '.join(reader.fieldnames or ()) or 'none'})"
        )
    found: list[ClinicalEvent] = []
    problems: list[str] = []
    for row in reader:
        values = {k: (row.get(col) or "").strip() for k, col in resolved.items()}
        if not any(values.values()):
            continue
        where = f"{path.name} line {reader.line_num}"
        patient_id = values.pop("patient_id")
        body = {k: v for k, v in values.items() if v}
        body["type"] = body.get("type", "").lower()
        row_problems = check_event(body) + ([] if patient_id else ["patient_id is empty"])
        if row_problems:
            problems.append(f"{where}: {'; '.join(row_problems)}")
            continue
        found.append(ClinicalEvent(patient_id, body, where))
    if problems:
        raise ManifestError("\n".join(problems))
    return found


def _same_event(body: dict[str, str], recorded: dict[str, Any]) -> bool:
    """Whether an event of the file is one the patient already has (the API stores drug
    names in lower case and fills in the class a known drug implies; two receptor_status
    events of a day differ by specimen or site)."""
    return (
        recorded["type"] == body["type"]
        and recorded["date"] == body["date"]
        and (recorded.get("drug") or "") == body.get("drug", "").lower()
        and (not body.get("drug_class") or recorded.get("drug_class") == body["drug_class"])
        and all((recorded.get(k) or "") == body.get(k, "") for k in ("specimen", "site"))
    )


def _post_events(api: Api, events: Sequence[ClinicalEvent], *, create_patient: bool | None) -> None:
    """Post each patient's events, skipping those it already has, so that a folder submitted
    twice records each event once. A patient the site does not have is created as an upload
    would create it: with `--create-patient`, or when the site creates patients on upload."""
    by_patient: dict[str, list[ClinicalEvent]] = {}
    for event in events:
        by_patient.setdefault(event.patient_id, []).append(event)
    for patient_id, items in by_patient.items():
        path = f"/v1/patients/{quote(patient_id, safe='')}"
        try:
            recorded = api.json(path)["events"]
        except ClientError as exc:
            if exc.status != 404:
                raise
            if create_patient is None:
                create_patient = bool(api.json("/v1/site-settings")["create_patients_on_upload"])
            if not create_patient:
                for event in items:
                    event.outcome = "failed"
                    event.reason = f"no patient {patient_id!r} at this site (--create-patient)"
                continue
            api.request("POST", "/v1/patients", json={"patient_id": patient_id})
            recorded = []
        for event in items:
            if any(_same_event(event.body, r) for r in recorded):
                event.outcome = "present"
                continue
            try:
                api.request("POST", f"{path}/events", json=event.body)
            except ClientError as exc:
                if exc.status is None or exc.status in (401, 403) or exc.status >= 500:
                    raise
                event.outcome, event.reason = "failed", str(exc)
                continue
            event.outcome = "posted"
    if events:
        counts = {k: sum(1 for e in events if e.outcome == k) for k in ("posted", "present")}
        err.print(
            f"events: {counts['posted']} posted, {counts['present']} already recorded",
            highlight=False,
        )
    for event in events:
        if event.outcome == "failed":
            err.print(
                f"[red]event failed:[/red] {escape(event.where)} ({escape(event.patient_id)}): "
                f"{escape(event.reason)}",
                highlight=False,
                soft_wrap=True,
            )


def event_add(
    patient_id: Annotated[str, typer.Argument(help="patient_id")],
    kind: Annotated[
        str,
        typer.Option(
            "--type",
            help="surgery | therapy_start | therapy_stop | clinical_relapse | progression | "
            "receptor_status",
        ),
    ],
    date: Annotated[str, typer.Option(help="YYYY-MM-DD")],
    drug: Annotated[str | None, typer.Option(help="Drug name (therapy events)")] = None,
    drug_class: Annotated[
        str | None, typer.Option(help="Drug class; implied by a known drug name")
    ] = None,
    note: Annotated[str | None, typer.Option()] = None,
    specimen: Annotated[
        str | None, typer.Option(help="receptor_status: primary | recurrence | metastasis")
    ] = None,
    site: Annotated[str | None, typer.Option(help="receptor_status: biopsy site")] = None,
    er: Annotated[str | None, typer.Option(help="receptor_status: ER result")] = None,
    pr: Annotated[str | None, typer.Option(help="receptor_status: PR result")] = None,
    her2_ihc: Annotated[
        str | None, typer.Option(help="receptor_status: 0 | ultralow | 1+ | 2+ | 3+")
    ] = None,
    her2_ish: Annotated[
        str | None,
        typer.Option(help="receptor_status: amplified | not_amplified | equivocal"),
    ] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Record a clinical event of a patient (surgery, a therapy line starting or stopping, a
    relapse, progression, receptor status); the patient's analyses are recomputed."""
    given = {
        "type": kind.lower(),
        "date": date,
        "drug": drug,
        "drug_class": drug_class,
        "note": note,
        "specimen": specimen,
        "site": site,
        "er": er,
        "pr": pr,
        "her2_ihc": her2_ihc,
        "her2_ish": her2_ish,
    }
    body = {k: v for k, v in given.items() if v}
    problems = check_event(body)
    if problems:
        err.print(
            f"[red]error:[/red] {escape('; '.join(problems))}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(2)
    with _session(url, api_key) as api:
        recorded = api.request(
            "POST", f"/v1/patients/{quote(patient_id, safe='')}/events", json=body
        ).json()
    described = event_label(recorded["type"]) + f" {recorded['date']}"
    if recorded.get("drug") or recorded.get("drug_class"):
        therapy = recorded.get("drug") or ""
        described += f" {therapy} ({drug_class_label(recorded.get('drug_class'))})".replace(
            "  ", " "
        )
    print(f"recorded {described} for {patient_id} (event {recorded['id']})", flush=True)


def _post(api: Api, upload: Upload) -> None:
    """POST one file; records accepted (202) / duplicate (200) / failed (4xx, with reason)."""
    with ExitStack() as opened:
        files = {"file": (upload.path.name, opened.enter_context(upload.path.open("rb")))}
        for name, extra in (
            ("alignment", upload.alignment),
            ("alignment_index", upload.alignment_index),
        ):
            if extra is not None:
                files[name] = (extra.name, opened.enter_context(extra.open("rb")))
        try:
            response = api.request("POST", "/v1/samples", data=upload.form, files=files)
        except ClientError as exc:
            # A key, connection or server problem would fail every row alike: stop at once.
            if exc.status is None or exc.status in (401, 403) or exc.status >= 500:
                raise
            upload.outcome, upload.reason = "failed", str(exc)
            if exc.status == 404 and "create_patient" in upload.reason:
                upload.reason += " (--create-patient does that)"
            return
    body = response.json()
    upload.job_id = body["job_id"]
    upload.outcome = "accepted" if response.status_code == 202 else "duplicate"


SUBMIT_COLUMNS = (
    Column("file", "file"),
    Column("patient_id", "patient"),
    Column("sample_id", "sample"),
    Column("outcome", "outcome"),
    Column("job_id", "job"),
    Column("job_status", "status"),
    Column("reason", "reason", "text"),
)
OUTCOME_STYLES = {"accepted": "green", "duplicate": "cyan", "failed": "red"}


def _submit_many(
    api: Api, uploads: list[Upload], *, wait: bool, timeout: float, fmt: Format
) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, disable=not err.is_terminal) as progress:
        task = progress.add_task("uploading", total=len(uploads))
        for upload in uploads:
            progress.update(task, description=f"uploading {escape(upload.path.name)}")
            _post(api, upload)
            progress.advance(task)
        progress.update(task, description="uploaded")
        pending = [u for u in uploads if u.job_id]
        if wait and pending:
            jobs = progress.add_task("processing", total=len(pending))
            _wait(api, pending, timeout=timeout, on_done=lambda: progress.advance(jobs))
    rows = [
        {
            "file": upload.path.name,
            "patient_id": upload.form["patient_id"],
            "sample_id": upload.form["sample_id"],
            "outcome": Text(upload.outcome, style=OUTCOME_STYLES.get(upload.outcome, "")),
            "job_id": upload.job_id,
            "job_status": Text(
                upload.job_status or "", style="red" if upload.job_status == "failed" else ""
            ),
            "reason": upload.reason,
        }
        for upload in uploads
    ]
    emit(out, fmt, SUBMIT_COLUMNS, rows, title=f"{len(uploads)} files")
    counts = {k: sum(1 for u in uploads if u.outcome == k) for k in OUTCOME_STYLES}
    failed_jobs = sum(1 for u in uploads if u.job_status == "failed")
    # the counts under the table; beside a TSV or JSON output they go to stderr
    (out if fmt == "table" else err).print(
        f"accepted {counts['accepted']}, duplicate {counts['duplicate']}, "
        f"failed {counts['failed']}" + (f", jobs failed {failed_jobs}" if failed_jobs else ""),
        highlight=False,
    )


def _wait(api: Api, uploads: list[Upload], *, timeout: float, on_done: Any = None) -> None:
    deadline = time.monotonic() + timeout
    pending = [u for u in uploads if u.job_id]
    while pending and time.monotonic() < deadline:
        still = []
        for upload in pending:
            job = api.json(f"/v1/jobs/{upload.job_id}")
            if job["status"] in ("succeeded", "failed"):
                upload.job_status = job["status"]
                upload.reason = job.get("error") or ""
                if on_done is not None:
                    on_done()
            else:
                still.append(upload)
        pending = still
        if pending:
            time.sleep(0.25)
    for upload in pending:
        upload.job_status = "timed out"


# --- ctdna sample / event / site: corrections ----------------------------------------------------

sample_app = typer.Typer(help="Correct or retract a posted sample", no_args_is_help=True)
event_app = typer.Typer(
    help="Record, correct or delete a patient's clinical events", no_args_is_help=True
)
site_app = typer.Typer(help="The site's settings", no_args_is_help=True)
Reason = Annotated[
    str, typer.Option("--reason", help="Why (kept on the audit trail and in any amendment)")
]


def _changes(before: dict[str, Any], after: dict[str, Any], names: Sequence[str]) -> str:
    moved = [
        f"{n} {before.get(n)} → {after.get(n)}" for n in names if before.get(n) != after.get(n)
    ]
    return "; ".join(moved) or "nothing changed"


def _patch_sample(sample_id: str, body: dict[str, Any], url: str, api_key: str | None) -> None:
    with _session(url, api_key) as api:
        before = api.json(f"/v1/samples/{sample_id}")
        after = api.request("PATCH", f"/v1/samples/{sample_id}", json=body).json()
    names = [n for n in body if n != "reason"]
    print(f"{sample_id}: {_changes(before, after, names)}")
    if after.get("job_id") != before.get("job_id"):
        print(f"re-read: job_id={after['job_id']}")


@sample_app.command("correct")
def sample_correct(
    sample_id: Annotated[str, typer.Argument(help="sample_id")],
    reason: Reason,
    collection_date: Annotated[str | None, typer.Option(help="YYYY-MM-DD")] = None,
    sample_type: Annotated[str | None, typer.Option(help="plasma | tissue | normal")] = None,
    plasma_ml: Annotated[float | None, typer.Option()] = None,
    cfdna_ng_per_ml: Annotated[float | None, typer.Option()] = None,
    tumor_sample: Annotated[str | None, typer.Option()] = None,
    normal_sample: Annotated[str | None, typer.Option()] = None,
    patient: Annotated[
        str | None, typer.Option("--patient", help="Move it to this patient of the site")
    ] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Correct what was posted with a sample (only the options given change). The analyses
    it affects are recomputed; a result already issued that changes is amended."""
    fields = {
        "collection_date": collection_date,
        "sample_type": sample_type,
        "plasma_ml": plasma_ml,
        "cfdna_ng_per_ml": cfdna_ng_per_ml,
        "tumor_sample": tumor_sample,
        "normal_sample": normal_sample,
        "patient_id": patient,
    }
    body = {k: v for k, v in fields.items() if v is not None}
    if not body:
        err.print("[red]error:[/red] nothing to correct: give at least one option")
        raise typer.Exit(2)
    _patch_sample(sample_id, {**body, "reason": reason}, url, api_key)


@sample_app.command("move")
def sample_move(
    sample_id: Annotated[str, typer.Argument(help="sample_id")],
    patient: Annotated[str, typer.Option("--patient", help="The patient it belongs to")],
    reason: Reason,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Move a sample posted to the wrong patient to another patient of the same site."""
    _patch_sample(sample_id, {"patient_id": patient, "reason": reason}, url, api_key)


@sample_app.command("retract")
def sample_retract(
    sample_id: Annotated[str, typer.Argument(help="sample_id")],
    reason: Reason,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Retract a sample (wrong patient, failed QC, duplicate draw...): it stays readable as
    retracted and is left out of every analysis."""
    with _session(url, api_key) as api:
        sample = api.request(
            "POST", f"/v1/samples/{sample_id}/retract", json={"reason": reason}
        ).json()
    print(f"{sample_id}: {sample['status']} ({sample['retraction_reason']})")


event_app.command("add")(event_add)


@event_app.command("correct")
def event_correct(
    patient_id: Annotated[str, typer.Argument(help="patient_id")],
    event_id: Annotated[int, typer.Argument(help="The event's id (ctdna patient P shows them)")],
    reason: Reason,
    event_type: Annotated[str | None, typer.Option("--type")] = None,
    date: Annotated[str | None, typer.Option(help="YYYY-MM-DD")] = None,
    drug: Annotated[str | None, typer.Option()] = None,
    drug_class: Annotated[str | None, typer.Option()] = None,
    note: Annotated[str | None, typer.Option()] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Correct an event (only the options given change)."""
    fields = {"type": event_type, "date": date, "drug": drug, "drug_class": drug_class}
    body = {k: v for k, v in {**fields, "note": note}.items() if v is not None}
    if not body:
        err.print("[red]error:[/red] nothing to correct: give at least one option")
        raise typer.Exit(2)
    path = f"/v1/patients/{patient_id}/events/{event_id}"
    with _session(url, api_key) as api:
        events: list[dict[str, Any]] = api.json(f"/v1/patients/{patient_id}")["events"]
        before = next((e for e in events if e["id"] == event_id), {})
        after = api.request("PATCH", path, json={**body, "reason": reason}).json()
    print(f"event {event_id}: {_changes(before, after, list(body))}")


@event_app.command("delete")
def event_delete(
    patient_id: Annotated[str, typer.Argument(help="patient_id")],
    event_id: Annotated[int, typer.Argument(help="The event's id")],
    reason: Reason,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Delete an event entered by mistake (kept on the audit trail)."""
    with _session(url, api_key) as api:
        api.request(
            "DELETE", f"/v1/patients/{patient_id}/events/{event_id}", json={"reason": reason}
        )
    print(f"event {event_id} of {patient_id} deleted")


@site_app.command("show")
def site_show(url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """The site's time zone and whether uploads create unknown patients."""
    with _session(url, api_key) as api:
        settings = api.json("/v1/site-settings")
    for name in ("site", "timezone", "today", "create_patients_on_upload"):
        print(f"{name}={settings[name]}")


@site_app.command("set")
def site_set(
    timezone: Annotated[str | None, typer.Option(help="IANA zone, e.g. Europe/Paris")] = None,
    create_patients_on_upload: Annotated[
        bool | None,
        typer.Option(
            "--create-patients-on-upload/--no-create-patients-on-upload",
            help="Whether an upload for an unknown patient creates it by default",
        ),
    ] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Change the site's settings (an admin key)."""
    body = {"timezone": timezone, "create_patients_on_upload": create_patients_on_upload}
    with _session(url, api_key) as api:
        api.request(
            "PUT", "/v1/site-settings", json={k: v for k, v in body.items() if v is not None}
        )
    site_show(url, api_key)


# --- ctdna export -------------------------------------------------------------------------------

export_app = typer.Typer(help="Download exports from the API", no_args_is_help=True)


def _save(content: bytes, output: Path | None) -> None:
    if output is None:
        typer.echo(content.decode("utf-8"), nl=False)
    else:
        output.write_bytes(content)
        err.print(f"wrote {output}")


@export_app.command("patients")
def export_patients(
    output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """The site's patients as CSV: samples, last draw, MRD status, molecular relapse,
    resistance, current therapy, latest tumour fraction (GET /v1/exports/patients.csv)."""
    with _session(url, api_key) as api:
        _save(api.request("GET", "/v1/exports/patients.csv").content, output)


PATIENT_EXPORTS = {
    "calls": ("calls.csv", "MRD calls of a patient as CSV."),
    "variants": ("variants.csv", "Variant rows of every sample of a patient as CSV."),
    "fhir": ("fhir", "FHIR R4 Genomics Reporting bundle of a patient (application/fhir+json)."),
}


def _patient_export(name: str, route: str, help_text: str) -> None:
    def command(
        patient_id: str,
        output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
        url: Url = DEFAULT_URL,
        api_key: ApiKey = None,
    ) -> None:
        with _session(url, api_key) as api:
            _save(api.request("GET", f"/v1/patients/{patient_id}/export/{route}").content, output)

    export_app.command(name, help=help_text)(command)


for _name, (_route, _help) in PATIENT_EXPORTS.items():
    _patient_export(_name, _route, _help)


@export_app.command("cbioportal")
def export_cbioportal(
    folder: Annotated[Path, typer.Argument(help="Folder to write the study files into")],
    study_id: Annotated[str | None, typer.Option(help="Default ctdna_<site>")] = None,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Write a cBioPortal study of the site's patients into FOLDER (ready for cBioPortal's
    metaImport.py)."""
    with _session(url, api_key) as api:
        params = {"study_id": study_id} if study_id else None
        content = api.request("GET", "/v1/exports/cbioportal", params=params).content
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        for info in archive.infolist():
            # Members are "<study>/<name>"; only their part under the study folder is used,
            # and never a path that climbs out of FOLDER.
            name = Path(*Path(info.filename).parts[1:])
            if info.is_dir() or not name.parts or ".." in name.parts:
                continue
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(info))
            written += 1
    err.print(f"wrote {written} files of the cBioPortal study into {folder}")


def register(app: typer.Typer) -> None:
    """Add the client commands to the `ctdna` application."""
    app.command()(patients)
    app.command()(patient)
    app.command()(submit)
    app.add_typer(export_app, name="export")
    app.add_typer(sample_app, name="sample")
    app.add_typer(event_app, name="event")
    app.add_typer(site_app, name="site")
