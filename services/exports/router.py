"""HTTP edge for the exports: per patient (CSV of calls and variants, a FHIR bundle) and per
site (patient summary CSV, a cBioPortal study as a zip). Read scope, site-scoped (another
site's patient is a 404), and every patient whose data leaves is audited."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.orm import Session

from services.api.deps import Reader, SessionDep
from services.audit.service import audit
from services.auth.service import Principal
from services.errors import InvalidInput, NotFound
from services.exports import cbioportal, fhir, repository, service
from services.exports.repository import PatientExport

router = APIRouter(tags=["exports"])

CSV = "text/csv; charset=utf-8"
FHIR_JSON = "application/fhir+json"


def _patient(
    session: Session,
    principal: Principal,
    request: Request,
    patient_id: str,
    *,
    detected_only: bool = False,
) -> PatientExport:
    export = repository.load_patient(
        session, principal.site, patient_id, detected_only=detected_only
    )
    if export is None:
        raise NotFound(f"patient {patient_id!r} not found")
    audit(session, request, principal, patient_id=export.patient_id)
    return export


def _attachment(content: str | bytes, media_type: str, filename: str) -> Response:
    return Response(
        content,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get(
    "/v1/patients/{patient_id}/export/calls.csv",
    response_class=Response,
    responses={200: {"content": {CSV: {}}}},
    summary="MRD calls of a patient as CSV",
)
def calls_csv(
    patient_id: str, principal: Reader, session: SessionDep, request: Request
) -> Response:
    """One row per post-surgery plasma sample: call, reason, score, p-value, tumour fraction
    with its 95% CI, LoD95, loci detected/tracked, informative reads."""
    export = _patient(session, principal, request, patient_id)
    text = service.to_csv(service.CALL_COLUMNS, service.calls_rows(export))
    return _attachment(text, CSV, f"{export.patient_id}-calls.csv")


@router.get(
    "/v1/patients/{patient_id}/export/variants.csv",
    response_class=Response,
    responses={200: {"content": {CSV: {}}}},
    summary="Variant rows of every sample of a patient as CSV",
)
def variants_csv(
    patient_id: str, principal: Reader, session: SessionDep, request: Request
) -> Response:
    """One row per sample and stored variant (any FILTER): gene, protein change, c.HGVS of a
    hotspot, coordinates, filter, detected, hotspot, tracked, alt reads, depth, VAF."""
    export = _patient(session, principal, request, patient_id)
    text = service.to_csv(service.VARIANT_CSV_COLUMNS, service.variant_rows(export))
    return _attachment(text, CSV, f"{export.patient_id}-variants.csv")


@router.get(
    "/v1/patients/{patient_id}/export/fhir",
    response_class=Response,
    responses={200: {"content": {FHIR_JSON: {}}}},
    summary="FHIR R4 Genomics Reporting bundle of a patient",
)
def fhir_bundle(
    patient_id: str, principal: Reader, session: SessionDep, request: Request
) -> Response:
    """A Bundle (collection): per sample a Specimen, `variant` Observations (LOINC 69548-6)
    of the detected variants, a ctDNA status Observation and a `genomics-report`
    DiagnosticReport (LOINC 51969-4)."""
    export = _patient(session, principal, request, patient_id, detected_only=True)
    bundle = fhir.patient_bundle(export, principal.site)
    return Response(bundle.json(), media_type=FHIR_JSON)


@router.get(
    "/v1/exports/patients.csv",
    response_class=Response,
    responses={200: {"content": {CSV: {}}}},
    summary="The site's patients with their status as CSV",
)
def patients_csv(principal: Reader, session: SessionDep, request: Request) -> Response:
    """One row per patient: samples, last draw, MRD status, molecular relapse, resistance,
    current therapy, latest tumour fraction."""
    rows = []
    for export in repository.iter_site(session, principal.site, variants=False):
        rows.append(service.summary_row(export))
        audit(session, request, principal, patient_id=export.patient_id)
    return _attachment(service.to_csv(service.SUMMARY_COLUMNS, rows), CSV, "patients.csv")


@router.get(
    "/v1/exports/cbioportal",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}}},
    summary="A cBioPortal study of the site's patients (zip)",
)
def cbioportal_zip(
    principal: Reader,
    session: SessionDep,
    request: Request,
    study_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """MAF, clinical patient and sample files, timelines, meta files and the sequenced case
    list, in a folder named after the study."""
    study = study_id or cbioportal.default_study_id(principal.site)
    if not cbioportal.STUDY_ID.fullmatch(study):
        raise InvalidInput("study_id must be letters, digits and underscores")
    files, patient_ids = cbioportal.study_files(session, principal.site, study)
    for patient_id in patient_ids:
        audit(session, request, principal, patient_id=patient_id)
    return _attachment(cbioportal.zip_bytes(files, study), "application/zip", f"{study}.zip")
