"""A patient's results as a FHIR R4 Bundle following the HL7 Genomics Reporting IG (STU3,
http://hl7.org/fhir/uv/genomics-reporting/).

Built and validated with `fhir.resources.R4B`: fhir.resources 8 defaults to R5, and R4B is its
R4-compatible line (Observation, DiagnosticReport, Specimen and Bundle serialise as in R4).
The validation covers structure, types, cardinality and choice types; it does not check code
bindings or the IG's profiles, so the codes are fixed here and asserted by the tests.

Per sample (tissue and plasma): a Specimen, one `variant` Observation per detected variant
(LOINC 69548-6, components gene 48018-6, p.HGVS 48005-3, c.HGVS 48004-6 when known, allele
frequency 81258-6, genomic reference sequence 48013-7, alleles, 0-based start-end), a ctDNA
status Observation for plasma (the GRIG has no ctDNA code: a local code, with the tumour
fraction, its 95% CI and the LoD95 as components), a `therapeutic-implication` Observation per
resistance event that fired at the draw (derived from its variant Observation: medication
assessed 51963-7, effect on drug efficacy 51961-1, the implication and citations as notes) and
a `genomics-report` DiagnosticReport (LOINC 51969-4) with conclusionCode Positive/Negative.
The patient is referenced by identifier (a logical reference): the bundle carries no
demographics.

Resource ids are name-based UUIDs of (site, patient, sample, variant), so exporting twice gives
the same ids and a receiving system can update instead of duplicating."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any
from urllib.parse import quote

from fhir.resources.R4B.bundle import Bundle

from services.db import utcnow
from services.exports.repository import PatientExport
from services.exports.service import SampleStatus, hgvs_c, sample_statuses
from services.genomics.types import Locus

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
HGNC = "http://www.genenames.org/geneId"
HGVS = "http://varnomen.hgvs.org"
REFSEQ = "http://www.ncbi.nlm.nih.gov/refseq"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
GRIG = "http://hl7.org/fhir/uv/genomics-reporting/StructureDefinition"
# Codes LOINC does not have (a coded ctDNA / MRD status): our own code system.
LOCAL = "urn:ctdna-monitor:codes"
IDENTIFIER_BASE = "urn:ctdna-monitor:site"
_NAMESPACE = uuid.UUID("5b0f3c52-7a55-4d1e-9a3e-2f1c0f6d3b8e")

# HGNC id and symbol of the genes a breast ctDNA panel reports (HGNC, checked by hand).
HGNC_IDS = {
    "ESR1": "HGNC:3467",
    "PIK3CA": "HGNC:8975",
    "ERBB2": "HGNC:3430",
    "AKT1": "HGNC:391",
    "TP53": "HGNC:11998",
    "PTEN": "HGNC:9588",
    "KRAS": "HGNC:6407",
    "BRCA1": "HGNC:1100",
    "BRCA2": "HGNC:1101",
}
# GRCh38 RefSeq accessions of the primary chromosomes (GCF_000001405.26): variant coordinates
# are exported on GRCh38 (the build-independent locus key) whatever the file's build.
REFSEQ_GRCH38 = {
    **{
        f"chr{n}": f"NC_{n:06d}.{v}"
        for n, v in zip(
            range(1, 23),
            (11, 12, 12, 12, 10, 12, 14, 11, 12, 11, 10, 12, 11, 9, 10, 10, 11, 10, 10, 11, 9, 11),
            strict=True,
        )
    },
    "chrX": "NC_000023.11",
    "chrY": "NC_000024.10",
}
SPECIMEN_TYPES = {
    "plasma": ("119361006", "Plasma specimen"),
    "tissue": ("119376003", "Tissue specimen"),
    "normal": ("119297000", "Blood specimen"),
}
GRIG_CODES = "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs"
EFFECTS = {
    "resistance": "Resistant",
    "relative_resistance": "Relatively resistant",
    "sensitivity": "Responsive",
}
CONCLUSION_CODES = {
    "POSITIVE": ("LA6576-8", "Positive"),
    "NEGATIVE": ("LA6577-6", "Negative"),
}


def patient_bundle(export: PatientExport, site: str) -> Bundle:
    """The validated Bundle (type collection) of every tissue and plasma sample."""
    subject = {
        "identifier": {
            "system": f"{IDENTIFIER_BASE}:{quote(site, safe='')}:patient",
            "value": export.patient_id,
        },
        "display": export.patient_id,
    }
    statuses = sample_statuses(export)
    implications: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in export.bodies.get("resistance", {}).get("events", []):
        implications[event["sample_id"]].append(event)
    entries: list[dict[str, Any]] = []
    for sample in export.samples:
        if sample.sample_type == "normal":
            continue
        ids = _Ids(site, export.patient_id, sample.sample_id)
        date = sample.collection_date.isoformat()
        specimen = {
            "resourceType": "Specimen",
            "id": ids.of("specimen"),
            "identifier": [
                {
                    "system": f"{IDENTIFIER_BASE}:{quote(site, safe='')}:sample",
                    "value": sample.sample_id,
                }
            ],
            "type": _concept(SNOMED, *SPECIMEN_TYPES[sample.sample_type]),
            "subject": subject,
            "collection": {"collectedDateTime": date},
        }
        common = {
            "status": "final",
            "subject": subject,
            "effectiveDateTime": date,
            "specimen": {"reference": ids.ref("specimen")},
        }
        results = [
            _variant(row, sample.sample_type, ids, common)
            for row in export.variants.get(sample.id, [])
            if row.detected
        ]
        variant_ids = {r["id"] for r in results}
        results += [
            _implication(event, variant_ids, ids, common)
            for event in implications.get(sample.sample_id, [])
        ]
        status = statuses.get(sample.sample_id)
        if status is not None:
            results.append(_ctdna_status(status, ids, common))
        report = _report(sample.sample_id, status, results, ids, common)
        entries += [specimen, *results, report]
    bundle = {
        "resourceType": "Bundle",
        "identifier": {
            "system": f"{IDENTIFIER_BASE}:{quote(site, safe='')}:export",
            "value": str(uuid.uuid4()),
        },
        "type": "collection",
        "timestamp": utcnow().isoformat(),
        "entry": [{"fullUrl": f"urn:uuid:{e['id']}", "resource": e} for e in entries],
    }
    return Bundle.model_validate(bundle)


class _Ids:
    """Stable UUIDs for the resources of one sample."""

    def __init__(self, site: str, patient_id: str, sample_id: str) -> None:
        self._prefix = f"{site}/{patient_id}/{sample_id}"

    def of(self, *parts: str) -> str:
        return str(uuid.uuid5(_NAMESPACE, "/".join((self._prefix, *parts))))

    def ref(self, *parts: str) -> str:
        return f"urn:uuid:{self.of(*parts)}"


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    return {"system": system, "code": code, **({"display": display} if display else {})}


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)], **({"text": display} if display else {})}


def _component(code: str, display: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"code": _concept(LOINC, code, display), **value}


def _local_component(code: str, display: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"code": _concept(LOCAL, code, display), **value}


def _fraction(value: float) -> dict[str, Any]:
    return {"valueQuantity": {"value": value, "system": UCUM, "code": "1"}}


def _laboratory() -> list[dict[str, Any]]:
    return [_concept(OBSERVATION_CATEGORY, "laboratory", "Laboratory")]


def _variant(row: Any, sample_type: str, ids: _Ids, common: dict[str, Any]) -> dict[str, Any]:
    locus = Locus.parse(row.locus_key) if row.locus_key else None
    chrom, pos, ref, alt = (
        (locus.chrom, locus.pos, locus.ref, locus.alt)
        if locus is not None
        else (row.chrom, row.pos, row.ref, row.alt)
    )
    build = "GRCh38" if locus is not None else row.build
    components = []
    if row.gene:
        hgnc = HGNC_IDS.get(row.gene)
        components.append(
            _component(
                "48018-6",
                "Gene studied [ID]",
                {
                    "valueCodeableConcept": _concept(HGNC, hgnc, row.gene)
                    if hgnc
                    else {"text": row.gene}
                },
            )
        )
    cdna = hgvs_c(row.locus_key)
    if cdna:
        components.append(
            _component(
                "48004-6", "DNA change (c.HGVS)", {"valueCodeableConcept": _concept(HGVS, cdna)}
            )
        )
    if row.protein_change:
        components.append(
            _component(
                "48005-3",
                "Amino acid change (pHGVS)",
                {"valueCodeableConcept": _concept(HGVS, row.protein_change)},
            )
        )
    refseq = REFSEQ_GRCH38.get(chrom) if build == "GRCh38" else None
    if refseq:
        components.append(
            _component(
                "48013-7",
                "Genomic reference sequence [ID]",
                {"valueCodeableConcept": _concept(REFSEQ, refseq)},
            )
        )
    assembly = {"GRCh38": ("LA26806-2", "GRCh38"), "GRCh37": ("LA14029-5", "GRCh37")}[build]
    components += [
        _component(
            "62374-4",
            "Human reference sequence assembly version",
            {"valueCodeableConcept": _concept(LOINC, *assembly)},
        ),
        _component(
            "92822-6",
            "Genomic coordinate system [Type]",
            {"valueCodeableConcept": _concept(LOINC, "LA30100-4", "0-based interval counting")},
        ),
        _component(
            "81254-5",
            "Genomic allele start-end",
            {"valueRange": {"low": {"value": pos - 1}, "high": {"value": pos - 1 + len(ref)}}},
        ),
        _component("69547-8", "Genomic ref allele [ID]", {"valueString": ref}),
        _component("69551-0", "Genomic alt allele [ID]", {"valueString": alt}),
        _component(
            "48002-0",
            "Genomic source class [Type]",
            {"valueCodeableConcept": _concept(LOINC, "LA6684-0", "Somatic")},
        ),
    ]
    if row.vaf is not None:
        components.append(
            _component("81258-6", "Sample variant allelic frequency [NFr]", _fraction(row.vaf))
        )
    if row.alt_reads is not None:
        components.append(
            _component("82121-5", "Allelic read depth", {"valueQuantity": {"value": row.alt_reads}})
        )
    if row.depth is not None:
        components.append(
            _local_component(
                "read-depth",
                "Total read depth at the locus",
                {"valueQuantity": {"value": row.depth}},
            )
        )
    key = row.locus_key or f"{row.chrom}:{row.pos}:{row.ref}>{row.alt}"
    return {
        "resourceType": "Observation",
        "id": ids.of("variant", key),
        "meta": {"profile": [f"{GRIG}/variant"]},
        "category": _laboratory(),
        "code": _concept(LOINC, "69548-6", "Genetic variant assessment"),
        **common,
        "valueCodeableConcept": _concept(LOINC, "LA9633-4", "Present"),
        "method": {"text": f"{sample_type} variant calls (FILTER {row.filter})"},
        "note": [{"text": "tumour-informed tracked locus"}] if row.tracked else None,
        "component": components,
    }


def _implication(
    event: dict[str, Any], variant_ids: set[str], ids: _Ids, common: dict[str, Any]
) -> dict[str, Any]:
    """A resistance (or sensitivity) event of the resistance map, as the GRIG's therapeutic
    implication of the variant it was derived from."""
    variant_id = ids.of("variant", event["locus_key"])
    effect = EFFECTS.get(event.get("effect") or "", event.get("effect") or "unknown")
    medication = event.get("drug_class") or "unknown"
    notes = [event.get("implication"), event.get("context")]
    notes += [f"Evidence: {c}" for c in event.get("citations") or ()]
    return {
        "resourceType": "Observation",
        "id": ids.of("implication", event["locus_key"], medication, str(event.get("status"))),
        "meta": {"profile": [f"{GRIG}/therapeutic-implication"]},
        "category": _laboratory(),
        "code": _concept(GRIG_CODES, "therapeutic-implication", "Therapeutic Implication"),
        **common,
        "derivedFrom": [{"reference": f"urn:uuid:{variant_id}"}]
        if variant_id in variant_ids
        else None,
        "method": {
            "text": f"{event.get('status')} on {medication} (resistance map "
            f"{event.get('map_version')}, {event.get('params_version')})"
        },
        "component": [
            _component(
                "51963-7",
                "Medication assessed [ID]",
                {
                    "valueCodeableConcept": {
                        "coding": [_coding(LOCAL, f"drug-class-{medication}", medication)],
                        "text": medication,
                    }
                },
            ),
            _component(
                "51961-1",
                "Genetic variation's effect on drug efficacy",
                {"valueCodeableConcept": {"text": effect}},
            ),
        ],
        "note": [{"text": n} for n in notes if n],
    }


def _ctdna_status(status: SampleStatus, ids: _Ids, common: dict[str, Any]) -> dict[str, Any]:
    answer = status.call or ("POSITIVE" if status.detected else "NEGATIVE")
    value = (
        _concept(LOINC, *CONCLUSION_CODES[answer])
        if answer in CONCLUSION_CODES
        else {"text": answer.capitalize()}
    )
    components = []
    for code, display, number in (
        ("tumor-fraction", "Circulating tumour DNA fraction", status.tumor_fraction),
        ("tumor-fraction-ci-low", "Tumour fraction 95% CI lower bound", status.ci_low),
        ("tumor-fraction-ci-high", "Tumour fraction 95% CI upper bound", status.ci_high),
        ("lod95", "Limit of detection (95%) of this sample", status.lod95),
    ):
        if number is not None:
            components.append(_local_component(code, display, _fraction(number)))
    if status.p_value is not None:
        components.append(
            _local_component(
                "p-value", "p-value of the call", {"valueQuantity": {"value": status.p_value}}
            )
        )
    for code, display, count in (
        ("informative-reads", "Informative reads at the tracked loci", status.informative_reads),
        ("loci-detected", "Tracked loci with mutant reads", status.loci_detected),
        ("loci-tracked", "Tracked loci", status.loci_tracked),
    ):
        if count is not None:
            components.append(_local_component(code, display, {"valueInteger": count}))
    return {
        "resourceType": "Observation",
        "id": ids.of("ctdna-status"),
        "meta": {"profile": [f"{GRIG}/genomic-finding"]},
        "category": _laboratory(),
        "code": {
            "coding": [_coding(LOCAL, "ctdna-status", "Circulating tumour DNA status")],
            "text": "Circulating tumour DNA (ctDNA) status"
            + (" for minimal residual disease" if status.call else ""),
        },
        **common,
        "valueCodeableConcept": value,
        "method": {"text": status.method + (f", {status.version}" if status.version else "")},
        "note": [{"text": status.reason}] if status.reason else None,
        "component": components,
    }


def _report(
    sample_id: str,
    status: SampleStatus | None,
    results: list[dict[str, Any]],
    ids: _Ids,
    common: dict[str, Any],
) -> dict[str, Any]:
    variants = sum(1 for r in results if r["code"]["coding"][0]["code"] == "69548-6")
    conclusion = f"Sample {sample_id}: {variants} variant(s) detected."
    code = None
    if status is not None:
        answer = status.call or ("POSITIVE" if status.detected else "NEGATIVE")
        code = CONCLUSION_CODES.get(answer)
        detail = []
        if status.tumor_fraction is not None:
            detail.append(f"tumour fraction {status.tumor_fraction:.3g}")
        if status.loci_tracked is not None:
            detail.append(
                f"{status.loci_detected} of {status.loci_tracked} tracked loci with mutant reads"
            )
        if answer == "NEGATIVE" and status.lod95 is not None:
            detail.append(f"LoD95 {status.lod95:.3g}")
        conclusion += f" ctDNA {answer} ({status.method}" + (
            f"; {', '.join(detail)})." if detail else ")."
        )
    return {
        "resourceType": "DiagnosticReport",
        "id": ids.of("report"),
        "meta": {"profile": [f"{GRIG}/genomics-report"]},
        "status": "final",
        "category": [_concept(V2_0074, "GE", "Genetics")],
        "code": _concept(LOINC, "51969-4", "Genetic analysis report"),
        "subject": common["subject"],
        "effectiveDateTime": common["effectiveDateTime"],
        "issued": utcnow().isoformat(),
        "specimen": [common["specimen"]],
        "result": [{"reference": f"urn:uuid:{r['id']}"} for r in results],
        "conclusion": conclusion,
        "conclusionCode": [_concept(LOINC, *code)] if code else None,
    }
