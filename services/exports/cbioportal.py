"""A cBioPortal study of a site's patients (https://docs.cbioportal.org/file-formats/).

Files: `meta_study.txt`; `data_clinical_patient.txt` and `data_clinical_sample.txt` with the
four `#` header lines (display name, description, datatype, priority); `data_mutations.txt`
(MAF, one Tumor_Sample_Barcode per tissue sample and per plasma draw, so the patient view
shows each variant's VAF across draws); `data_timeline_{treatment,surgery,specimen,status,
labtest}.txt`; a `meta_*.txt` for each data file; `case_lists/cases_sequenced.txt`.

Coordinates: every variant is written on GRCh38 from its build-independent locus key (a
GRCh37 sample and a GRCh38 sample line up), so the study is `reference_genome: hg38`.
Timeline days count from a per-patient anchor: the surgery, else the first therapy start,
else the first sample (`TIMELINE_ANCHOR` in the patient file says which).

The site's patients are read in chunks (services/exports/repository.py): the number of
queries grows with the number of chunks, not of patients."""

from __future__ import annotations

import datetime as dt
import io
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from services.exports.repository import PatientExport, iter_site
from services.exports.service import (
    anchor,
    current_therapy,
    first_event,
    inert,
    last_follow_up,
    lines_of,
    resistance_summary,
    sample_statuses,
)
from services.genomics.types import Locus

CANCER_TYPE = "brca"
STUDY_ID = re.compile(r"^[A-Za-z0-9_]{1,64}$")
DAYS_PER_MONTH = 30.4375

# Entrez Gene ids (NCBI Gene) of the genes a breast ctDNA panel reports; 0 is MAF's "unknown".
ENTREZ_IDS = {
    "ESR1": 2099,
    "PIK3CA": 5290,
    "ERBB2": 2064,
    "AKT1": 207,
    "TP53": 7157,
    "PTEN": 5728,
    "KRAS": 3845,
    "BRCA1": 672,
    "BRCA2": 675,
}

MAF_COLUMNS = (
    "Hugo_Symbol", "Entrez_Gene_Id", "Center", "NCBI_Build", "Chromosome", "Start_Position",
    "End_Position", "Strand", "Variant_Classification", "Variant_Type", "Reference_Allele",
    "Tumor_Seq_Allele1", "Tumor_Seq_Allele2", "Tumor_Sample_Barcode", "Mutation_Status",
    "HGVSp_Short", "t_alt_count", "t_ref_count", "n_alt_count", "n_ref_count",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Attribute:
    """One clinical attribute column with its cBioPortal header lines."""

    column: str
    name: str
    description: str
    datatype: str = "STRING"  # STRING | NUMBER | BOOLEAN
    priority: int = 1


PATIENT_ATTRIBUTES = (
    Attribute("PATIENT_ID", "Patient Identifier", "Patient identifier"),
    Attribute("MRD_STATUS", "ctDNA MRD Status", "Latest tumour-informed MRD call after surgery"),
    Attribute("MOLECULAR_RELAPSE_DAY", "Molecular Relapse Day",
              "Day of the first positive MRD call", "NUMBER"),
    Attribute("CLINICAL_RELAPSE_DAY", "Clinical Relapse Day", "Day of clinical relapse",
              "NUMBER"),
    Attribute("LEAD_TIME_DAYS", "Lead Time (days)",
              "Days from molecular to clinical relapse", "NUMBER"),
    Attribute("RESISTANCE_STATUS", "Resistance", "Emerging resistance clone on therapy"),
    Attribute("RESISTANCE_EVENTS", "Resistance Events", "Gene, protein change and drug class"),
    Attribute("CURRENT_THERAPY", "Current Therapy", "Therapy lines not stopped"),
    Attribute("TIMELINE_ANCHOR", "Timeline Anchor",
              "Day 0 of the timeline: surgery, therapy_start or first_sample"),
    Attribute("DFS_STATUS", "Disease Free Status", "Clinical relapse after surgery"),
    Attribute("DFS_MONTHS", "Disease Free (Months)",
              "Months from surgery to clinical relapse or last follow-up", "NUMBER"),
)  # fmt: skip

SAMPLE_ATTRIBUTES = (
    Attribute("PATIENT_ID", "Patient Identifier", "Patient identifier"),
    Attribute("SAMPLE_ID", "Sample Identifier", "Sample identifier"),
    Attribute("CANCER_TYPE", "Cancer Type", "Cancer type"),
    Attribute("SAMPLE_CLASS", "Sample Class", "cfDNA (plasma) or Tumor (tissue)"),
    Attribute("SPECIMEN_TYPE", "Specimen Type", "plasma or tissue"),
    Attribute("COLLECTION_DAY", "Collection Day", "Day of collection from the anchor",
              "NUMBER"),
    Attribute("GENOME_BUILD", "Genome Build", "Build of the uploaded file"),
    Attribute("CTDNA_CALL", "ctDNA Call", "MRD call, or detected/not detected"),
    Attribute("CTDNA_METHOD", "ctDNA Method", "Tumour-informed MRD or tumour-fraction estimate"),
    Attribute("TUMOR_FRACTION", "ctDNA Tumour Fraction", "Estimated ctDNA fraction", "NUMBER"),
    Attribute("TUMOR_FRACTION_CI_LOW", "Tumour Fraction CI Low", "95% CI lower bound",
              "NUMBER"),
    Attribute("TUMOR_FRACTION_CI_HIGH", "Tumour Fraction CI High", "95% CI upper bound",
              "NUMBER"),
    Attribute("LOD95", "LoD95", "Sample limit of detection (95%)", "NUMBER"),
    Attribute("INFORMATIVE_READS", "Informative Reads", "Reads at the tracked loci", "NUMBER"),
    Attribute("PLASMA_ML", "Plasma Volume (mL)", "Plasma volume", "NUMBER"),
    Attribute("CFDNA_NG_PER_ML", "cfDNA (ng/mL)", "cfDNA concentration", "NUMBER"),
)  # fmt: skip

TIMELINES: dict[str, tuple[str, ...]] = {
    "treatment": ("TREATMENT_TYPE", "SUBTYPE", "AGENT", "ONGOING"),
    "surgery": ("SUBTYPE",),
    "specimen": ("SAMPLE_ID", "SPECIMEN_TYPE", "SOURCE"),
    "status": ("STATUS", "SOURCE"),
    "labtest": ("TEST", "RESULT", "CALL", "SAMPLE_ID"),
}
TIMELINE_COLUMNS = ("PATIENT_ID", "START_DATE", "STOP_DATE", "EVENT_TYPE")


@dataclass
class _Tables:
    patients: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    mutations: list[dict[str, Any]] = field(default_factory=list)
    timelines: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {name: [] for name in TIMELINES}
    )


def default_study_id(site: str) -> str:
    return ("ctdna_" + re.sub(r"[^A-Za-z0-9_]", "_", site).lower())[:64]


def study_files(session: Session, site: str, study_id: str) -> tuple[dict[str, str], list[str]]:
    """File name (relative to the study folder) -> content, for every patient of the site;
    and the patient ids the study holds (each one's read is audited by the caller)."""
    tables = _Tables()
    for export in iter_site(session, site, detected_only=True):
        _add_patient(tables, export)
    patient_ids = [row["PATIENT_ID"] for row in tables.patients]
    sample_ids = [row["SAMPLE_ID"] for row in tables.samples]
    files = {
        "meta_study.txt": _meta(
            type_of_cancer=CANCER_TYPE,
            cancer_study_identifier=study_id,
            name=f"ctDNA monitoring ({site})",
            description="Serial plasma ctDNA and tumour tissue variants with tumour-informed "
            "MRD calls, tumour fractions and therapy timelines, exported by ctdna-monitor.",
            short_name=study_id,
            reference_genome="hg38",
            add_global_case_list="true",
        ),
        "data_clinical_patient.txt": _clinical(PATIENT_ATTRIBUTES, tables.patients),
        "meta_clinical_patient.txt": _meta(
            cancer_study_identifier=study_id,
            genetic_alteration_type="CLINICAL",
            datatype="PATIENT_ATTRIBUTES",
            data_filename="data_clinical_patient.txt",
        ),
        "data_clinical_sample.txt": _clinical(SAMPLE_ATTRIBUTES, tables.samples),
        "meta_clinical_sample.txt": _meta(
            cancer_study_identifier=study_id,
            genetic_alteration_type="CLINICAL",
            datatype="SAMPLE_ATTRIBUTES",
            data_filename="data_clinical_sample.txt",
        ),
        "data_mutations.txt": _tsv(MAF_COLUMNS, tables.mutations),
        "meta_mutations.txt": _meta(
            cancer_study_identifier=study_id,
            genetic_alteration_type="MUTATION_EXTENDED",
            datatype="MAF",
            stable_id="mutations",
            show_profile_in_analysis_tab="true",
            profile_name="Mutations (ctDNA and tumour tissue)",
            profile_description="Variants detected (PASS, with mutant reads) in plasma draws "
            "and tumour tissue; tracked loci and the monitored genes ESR1, PIK3CA, ERBB2, AKT1.",
            data_filename="data_mutations.txt",
        ),
        "case_lists/cases_sequenced.txt": _meta(
            cancer_study_identifier=study_id,
            stable_id=f"{study_id}_sequenced",
            case_list_name="Sequenced samples",
            case_list_description="Every tissue sample and plasma draw with variant calls",
            case_list_ids="\t".join(sample_ids),
        ),
    }
    for name, extra in TIMELINES.items():
        files[f"data_timeline_{name}.txt"] = _tsv(TIMELINE_COLUMNS + extra, tables.timelines[name])
        files[f"meta_timeline_{name}.txt"] = _meta(
            cancer_study_identifier=study_id,
            genetic_alteration_type="CLINICAL",
            datatype="TIMELINE",
            data_filename=f"data_timeline_{name}.txt",
        )
    return files, patient_ids


def write_folder(files: dict[str, str], folder: Path) -> list[Path]:
    written = []
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def zip_bytes(files: dict[str, str], folder: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(f"{folder}/{name}", text)
    return buffer.getvalue()


# --- rows -------------------------------------------------------------------------------------


def _add_patient(tables: _Tables, export: PatientExport) -> None:
    day0, anchor_kind = anchor(export)

    def day(date: dt.date | str | None) -> int | None:
        if date is None or day0 is None:
            return None
        return ((dt.date.fromisoformat(date) if isinstance(date, str) else date) - day0).days

    patient_id = export.patient_id
    mrd = export.bodies.get("mrd", {})
    events = export.bodies.get("resistance", {}).get("events", [])
    surgery = first_event(export, "surgery")
    relapse = first_event(export, "clinical_relapse")
    follow_up = relapse or last_follow_up(export)
    tables.patients.append(
        {
            "PATIENT_ID": patient_id,
            "MRD_STATUS": mrd.get("status"),
            "MOLECULAR_RELAPSE_DAY": day(mrd.get("molecular_relapse_date")),
            "CLINICAL_RELAPSE_DAY": day(relapse),
            "LEAD_TIME_DAYS": mrd.get("lead_time_days"),
            "RESISTANCE_STATUS": "emerging" if events else None,
            "RESISTANCE_EVENTS": resistance_summary(events) or None,
            "CURRENT_THERAPY": current_therapy(export) or None,
            "TIMELINE_ANCHOR": anchor_kind,
            "DFS_STATUS": None
            if surgery is None
            else ("1:Recurred/Progressed" if relapse else "0:DiseaseFree"),
            "DFS_MONTHS": None
            if surgery is None or follow_up is None
            else round((follow_up - surgery).days / DAYS_PER_MONTH, 2),
        }
    )

    statuses = sample_statuses(export)
    for sample in export.samples:
        if sample.sample_type == "normal":
            continue
        status = statuses.get(sample.sample_id)
        call = None
        if status is not None:
            call = status.call or ("DETECTED" if status.detected else "NOT_DETECTED")
        tables.samples.append(
            {
                "PATIENT_ID": patient_id,
                "SAMPLE_ID": sample.sample_id,
                "CANCER_TYPE": "Breast Cancer",
                "SAMPLE_CLASS": "cfDNA" if sample.sample_type == "plasma" else "Tumor",
                "SPECIMEN_TYPE": sample.sample_type,
                "COLLECTION_DAY": day(sample.collection_date),
                "GENOME_BUILD": sample.detected_build or sample.genome_build,
                "CTDNA_CALL": call,
                "CTDNA_METHOD": status.method if status else None,
                "TUMOR_FRACTION": status.tumor_fraction if status else None,
                "TUMOR_FRACTION_CI_LOW": status.ci_low if status else None,
                "TUMOR_FRACTION_CI_HIGH": status.ci_high if status else None,
                "LOD95": status.lod95 if status else None,
                "INFORMATIVE_READS": status.informative_reads if status else None,
                "PLASMA_ML": sample.plasma_ml,
                "CFDNA_NG_PER_ML": sample.cfdna_ng_per_ml,
            }
        )
        tables.timelines["specimen"].append(
            {
                "PATIENT_ID": patient_id,
                "START_DATE": day(sample.collection_date),
                "EVENT_TYPE": "SPECIMEN",
                "SAMPLE_ID": sample.sample_id,
                "SPECIMEN_TYPE": sample.sample_type,
                "SOURCE": "plasma draw" if sample.sample_type == "plasma" else "tumour tissue",
            }
        )
        if status is not None and status.tumor_fraction is not None:
            tables.timelines["labtest"].append(
                {
                    "PATIENT_ID": patient_id,
                    "START_DATE": day(sample.collection_date),
                    "EVENT_TYPE": "LAB_TEST",
                    "TEST": "ctDNA_TUMOR_FRACTION",
                    "RESULT": status.tumor_fraction,
                    "CALL": call,
                    "SAMPLE_ID": sample.sample_id,
                }
            )
        for row in export.variants.get(sample.id, []):
            mutation = _maf_row(row, sample.sample_id)
            if mutation is not None:
                tables.mutations.append(mutation)

    last_day = day(last_follow_up(export))
    for line in lines_of(export):
        tables.timelines["treatment"].append(
            {
                "PATIENT_ID": patient_id,
                "START_DATE": day(line.start_date),
                "STOP_DATE": day(line.stop_date) if line.stop_date else last_day,
                "EVENT_TYPE": "TREATMENT",
                "TREATMENT_TYPE": "Medical Therapy",
                "SUBTYPE": line.drug_class,
                "AGENT": line.drug or line.drug_class,
                "ONGOING": "Yes" if line.stop_date is None else "No",
            }
        )
    for event in export.events:
        if event.type == "surgery":
            tables.timelines["surgery"].append(
                {
                    "PATIENT_ID": patient_id,
                    "START_DATE": day(event.event_date),
                    "EVENT_TYPE": "SURGERY",
                    "SUBTYPE": event.note or "curative surgery",
                }
            )
        elif event.type in ("clinical_relapse", "progression"):
            tables.timelines["status"].append(
                {
                    "PATIENT_ID": patient_id,
                    "START_DATE": day(event.event_date),
                    "EVENT_TYPE": "STATUS",
                    "STATUS": "Clinical relapse"
                    if event.type == "clinical_relapse"
                    else "Progression",
                    "SOURCE": "clinical",
                }
            )
    if mrd.get("molecular_relapse_date"):
        tables.timelines["status"].append(
            {
                "PATIENT_ID": patient_id,
                "START_DATE": day(mrd["molecular_relapse_date"]),
                "EVENT_TYPE": "STATUS",
                "STATUS": "Molecular relapse (ctDNA positive)",
                "SOURCE": "ctDNA",
            }
        )


def maf_alleles(pos: int, ref: str, alt: str) -> tuple[int, int, str, str, str]:
    """(Start_Position, End_Position, Reference_Allele, Tumor_Seq_Allele2, Variant_Type) of a
    VCF-style allele: MAF drops the shared anchor base and writes "-" for an empty allele; an
    insertion spans the two bases around it."""
    shared = 0
    while shared < min(len(ref), len(alt)) and ref[shared] == alt[shared]:
        shared += 1
    start, ref, alt = pos + shared, ref[shared:] or "-", alt[shared:] or "-"
    if ref == "-":
        return start - 1, start, ref, alt, "INS"
    end = start + len(ref) - 1
    if alt == "-" or len(ref) > len(alt):
        return start, end, ref, alt, "DEL"
    if len(alt) > len(ref):
        return start, end, ref, alt, "INS"
    return start, end, ref, alt, {1: "SNP", 2: "DNP", 3: "TNP"}.get(len(ref), "ONP")


def variant_classification(protein_change: str | None, variant_type: str) -> str:
    """MAF Variant_Classification from a short p.HGVS (the only consequence we store)."""
    p = (protein_change or "").strip()
    if not p.startswith("p."):
        return "Unknown"
    if "fs" in p:
        return "Frame_Shift_Del" if variant_type == "DEL" else "Frame_Shift_Ins"
    if "splice" in p.lower():
        return "Splice_Site"
    if p.endswith("=") or re.fullmatch(r"p\.([A-Z])\d+\1", p):
        return "Silent"
    if re.match(r"p\.M1[^0-9]", p):
        return "Translation_Start_Site"
    if p.startswith("p.*") or "ext" in p:
        return "Nonstop_Mutation"
    if p.endswith("*") or p.endswith("X"):
        return "Nonsense_Mutation"
    if "ins" in p or "dup" in p:
        return "In_Frame_Ins" if "del" not in p or variant_type == "INS" else "In_Frame_Del"
    if "del" in p:
        return "In_Frame_Del"
    if re.fullmatch(r"p\.[A-Z]\d+[A-Z]", p):
        return "Missense_Mutation"
    return "Unknown"


def _maf_row(row: Any, sample_id: str) -> dict[str, Any] | None:
    if row.locus_key:
        locus = Locus.parse(row.locus_key)
        chrom, pos, ref, alt = locus.chrom, locus.pos, locus.ref, locus.alt
    elif row.build == "GRCh38":
        chrom, pos, ref, alt = row.chrom, row.pos, row.ref, row.alt
    else:
        return None  # no GRCh38 position: it cannot be placed in an hg38 study
    start, end, maf_ref, maf_alt, variant_type = maf_alleles(pos, ref, alt)
    t_ref = (
        row.depth - row.alt_reads if row.depth is not None and row.alt_reads is not None else None
    )
    n_ref = (
        row.normal_depth - row.normal_alt_reads
        if row.normal_depth is not None and row.normal_alt_reads is not None
        else None
    )
    return {
        "Hugo_Symbol": row.gene or "Unknown",
        "Entrez_Gene_Id": ENTREZ_IDS.get(row.gene or "", 0),
        "Center": "ctdna-monitor",
        "NCBI_Build": "GRCh38",
        "Chromosome": chrom.removeprefix("chr"),
        "Start_Position": start,
        "End_Position": end,
        "Strand": "+",
        "Variant_Classification": variant_classification(row.protein_change, variant_type),
        "Variant_Type": variant_type,
        "Reference_Allele": maf_ref,
        "Tumor_Seq_Allele1": maf_ref,
        "Tumor_Seq_Allele2": maf_alt,
        "Tumor_Sample_Barcode": sample_id,
        "Mutation_Status": "Somatic",
        "HGVSp_Short": row.protein_change,
        "t_alt_count": row.alt_reads,
        "t_ref_count": t_ref,
        "n_alt_count": row.normal_alt_reads,
        "n_ref_count": n_ref,
    }


# --- text -------------------------------------------------------------------------------------


def _meta(**fields: str) -> str:
    return "".join(f"{k}: {v}\n" for k, v in fields.items())


def _value(value: Any, missing: str) -> str:
    if value is None or value == "":
        return missing
    text = str(value)
    # A tab or newline inside a value would shift every later column; a leading formula
    # character would make the cell live in a spreadsheet.
    return inert(text.replace("\t", " ").replace("\n", " ").replace("\r", " "))


def _tsv(columns: Sequence[str], rows: Iterable[dict[str, Any]], missing: str = "") -> str:
    lines = ["\t".join(columns)]
    lines += ["\t".join(_value(row.get(c), missing) for c in columns) for row in rows]
    return "\n".join(lines) + "\n"


def _clinical(attributes: Sequence[Attribute], rows: Iterable[dict[str, Any]]) -> str:
    header = [
        "#" + "\t".join(a.name for a in attributes),
        "#" + "\t".join(a.description for a in attributes),
        "#" + "\t".join(a.datatype for a in attributes),
        "#" + "\t".join(str(a.priority) for a in attributes),
    ]
    return "\n".join(header) + "\n" + _tsv([a.column for a in attributes], rows, missing="NA")
