"""HTTP edge for uploads, samples and their variant rows."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, BinaryIO, Literal, cast

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from schemas.common import AssayName, Identifier, SampleType
from schemas.samples import (
    CorrectionRead,
    Retraction,
    SampleAccepted,
    SampleRead,
    SampleUpdate,
    VariantList,
    VariantRead,
)
from services.api.deps import Ingestor, Reader, SessionDep, page_params
from services.audit.service import audit, corrections_of
from services.auth.service import Principal
from services.errors import InvalidInput, NotFound
from services.pagination import PageRequest
from services.patients.models import Patient
from services.samples import corrections, repository, service
from services.samples.models import Sample

router = APIRouter(prefix="/v1/samples", tags=["samples"])

BUILD_ALIASES = {
    "grch37": "GRCh37",
    "hg19": "GRCh37",
    "b37": "GRCh37",
    "hs37d5": "GRCh37",
    "grch38": "GRCh38",
    "hg38": "GRCh38",
    "b38": "GRCh38",
}


def normalise_build(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    build = BUILD_ALIASES.get(value.strip().lower())
    if build is None:
        raise InvalidInput(f"genome_build {value!r} is not GRCh37 or GRCh38")
    return build


@router.post(
    "",
    status_code=202,
    response_model=SampleAccepted,
    responses={200: {"model": SampleAccepted, "description": "Same bytes already uploaded"}},
)
def upload_sample(
    request: Request,
    principal: Ingestor,
    session: SessionDep,
    file: Annotated[UploadFile, File(description="VCF, VCF.gz or BCF")],
    patient_id: Annotated[Identifier, Form()],
    sample_id: Annotated[Identifier, Form()],
    collection_date: Annotated[dt.date, Form()],
    sample_type: Annotated[SampleType, Form()],
    genome_build: Annotated[str | None, Form(max_length=16)] = None,
    tumor_sample: Annotated[str | None, Form(max_length=256)] = None,
    normal_sample: Annotated[str | None, Form(max_length=256)] = None,
    plasma_ml: Annotated[float | None, Form(gt=0, lt=1000)] = None,
    cfdna_ng_per_ml: Annotated[float | None, Form(ge=0, lt=100000)] = None,
    assay: Annotated[AssayName, Form(description=ASSAY_HELP)] = "default",
    tumor_purity: Annotated[
        float | None, Form(gt=0, le=1, description="Tumour purity of a tissue sample (0-1]")
    ] = None,
    alignment: Annotated[UploadFile | None, File(description=ALIGNMENT_HELP)] = None,
    alignment_index: Annotated[UploadFile | None, File(description=INDEX_HELP)] = None,
    create_patient: Annotated[bool | None, Form(description=CREATE_HELP)] = None,
) -> JSONResponse:
    """Post one variant file of one sample: `202 {sample_id, job_id}`, or `200` with the same
    ids for the same bytes under the same sample id. Refused with problem+json: an unknown
    patient (404, unless `create_patient=true` or the site creates patients on upload), a
    collection date after tomorrow in the site's time zone or before 1990 (422), the same
    bytes under another sample id (409 naming the sample they belong to)."""
    form = service.SampleForm(
        patient_id=patient_id,
        sample_id=sample_id,
        collection_date=collection_date,
        sample_type=sample_type,
        genome_build=normalise_build(genome_build),
        tumor_sample=(tumor_sample or "").strip() or None,
        normal_sample=(normal_sample or "").strip() or None,
        plasma_ml=plasma_ml,
        cfdna_ng_per_ml=cfdna_ng_per_ml,
        file_name=_file_name(file, "upload.vcf"),
        create_patient=create_patient,
        assay=assay,
        tumor_purity=tumor_purity,
    )
    pair = _alignment_pair(alignment, alignment_index)
    # The files are kept (moved to their content address) only once the sample is accepted:
    # a refusal (409, 404...) leaves nothing in the upload folder.
    with service.UploadBatch() as uploads:
        stored = uploads.variant_file(file.file, form.file_name)
        aligned = uploads.alignment(*pair) if pair else None
        accepted = service.accept_upload(session, principal.site, form, stored, aligned)
        uploads.commit()
    audit(
        session, request, principal, patient_id=form.patient_id, sample_id=accepted.sample.sample_id
    )
    return _accepted(accepted)


ASSAY_HELP = (
    "The panel/assay the sample was run on (default 'default'): MRD backgrounds pool the "
    "controls of one assay of one site"
)
ALIGNMENT_HELP = (
    "Optional BAM or CRAM of the same sample (coordinate-sorted, GRCh38; a CRAM needs "
    "CTDNA_REFERENCE_FASTA): at the tracked loci its reads are the evidence"
)
INDEX_HELP = "The alignment's index (.bai or .csi for a BAM, .crai for a CRAM)"
CREATE_HELP = (
    "true: create the patient if the site has none of that id; false: an unknown patient is a "
    "404; unset: the site's setting (PUT /v1/site-settings, default false)"
)


def _file_name(upload: UploadFile, default: str) -> str:
    return (upload.filename or default).rsplit("/", 1)[-1][:512]


def _alignment_pair(
    alignment: UploadFile | None, index: UploadFile | None
) -> tuple[BinaryIO, str, BinaryIO, str] | None:
    """The alignment and its index as (stream, name) twice, or None when neither was sent;
    one without the other is refused before anything is read."""
    if alignment is None and index is None:
        return None
    if alignment is None:
        raise InvalidInput("alignment_index was sent without an alignment (a BAM or CRAM)")
    if index is None:
        raise InvalidInput(
            "alignment_index is required with an alignment (.bai/.csi for a BAM, .crai for a "
            "CRAM): the reads at the tracked loci are fetched through it"
        )
    name = _file_name(alignment, "alignment.bam")
    return alignment.file, name, index.file, _file_name(index, f"{name}.bai")


def _accepted(accepted: service.Accepted) -> JSONResponse:
    body = SampleAccepted(sample_id=accepted.sample.sample_id, job_id=accepted.job.id)
    new_work = accepted.created or accepted.queued
    return JSONResponse(body.model_dump(), status_code=202 if new_work else 200)


@router.put(
    "/{sample_id}/alignment",
    status_code=202,
    response_model=SampleAccepted,
    responses={200: {"model": SampleAccepted, "description": "This alignment is already attached"}},
)
def put_alignment(
    sample_id: str,
    request: Request,
    principal: Ingestor,
    session: SessionDep,
    alignment: Annotated[UploadFile, File(description=ALIGNMENT_HELP)],
    alignment_index: Annotated[UploadFile | None, File(description=INDEX_HELP)] = None,
) -> JSONResponse:
    """Attach (or replace) the BAM/CRAM of a sample already posted and re-extract it: a new
    ingest job whose rows at the tracked loci carry the counted reads."""
    found = repository.get_with_patient(session, principal.site, sample_id)
    if found is None:
        raise NotFound(f"sample {sample_id!r} not found")
    sample, patient = found
    pair = _alignment_pair(alignment, alignment_index)
    assert pair is not None
    with service.UploadBatch() as uploads:
        aligned = uploads.alignment(*pair)
        accepted = service.attach_alignment(session, principal.site, sample, aligned)
        uploads.commit()
    audit(session, request, principal, patient_id=patient.patient_id, sample_id=sample.sample_id)
    return _accepted(accepted)


def _read_sample(
    sample_id: str, principal: Principal, session: Session, request: Request
) -> tuple[Sample, Patient]:
    """The caller's site's sample and its patient, with the read audited; 404 otherwise."""
    found = repository.get_with_patient(session, principal.site, sample_id)
    if found is None:
        raise NotFound(f"sample {sample_id!r} not found")
    sample, patient = found
    audit(session, request, principal, patient_id=patient.patient_id, sample_id=sample.sample_id)
    return sample, patient


@router.get("/{sample_id}", response_model=SampleRead)
def get_sample(
    sample_id: str, principal: Reader, session: SessionDep, request: Request
) -> SampleRead:
    """The sample as stored, with its status (`pending`, `processed`, `failed`, or `retracted`:
    kept and readable, left out of every analysis) and every correction made to it."""
    sample, patient = _read_sample(sample_id, principal, session, request)
    return _sample_read(session, sample, patient)


def _sample_read(session: Session, sample: Sample, patient: Patient) -> SampleRead:
    job = repository.latest_job(session, sample.id)
    return SampleRead(
        sample_id=sample.sample_id,
        patient_id=patient.patient_id,
        collection_date=sample.collection_date,
        sample_type=sample.sample_type,
        status=sample.status,
        genome_build=sample.detected_build or sample.genome_build,
        build_source=sample.build_source,
        tumor_sample=sample.resolved_tumor_sample or sample.tumor_sample,
        normal_sample=sample.resolved_normal_sample or sample.normal_sample,
        plasma_ml=sample.plasma_ml,
        cfdna_ng_per_ml=sample.cfdna_ng_per_ml,
        assay=sample.assay,
        tumor_purity=sample.tumor_purity,
        file_name=sample.file_name,
        file_sha256=sample.file_sha256,
        file_size=sample.file_size,
        alignment_name=sample.alignment_name,
        # stored only as "bam" or "cram" (services.samples.service, the upload)
        alignment_format=cast('Literal["bam", "cram"] | None', sample.alignment_format),
        alignment_sha256=sample.alignment_sha256,
        records_read=sample.records_read,
        alleles_skipped=sample.alleles_skipped,
        variant_count=sample.variant_count,
        processed_at=sample.processed_at,
        created_at=sample.created_at,
        job_id=job.id if job else None,
        retracted_at=sample.retracted_at,
        retraction_reason=sample.retraction_reason,
        corrections=[
            CorrectionRead(
                at=row.at,
                key_id=row.key_id,
                action=detail.get("action", ""),
                changes=detail.get("changes", {}),
                reason=detail.get("reason", ""),
            )
            for row in corrections_of(session, sample.site, sample.sample_id)
            if (detail := json.loads(row.detail or "{}"))
        ],
    )


@router.patch("/{sample_id}", response_model=SampleRead)
def patch_sample(
    sample_id: str, body: SampleUpdate, principal: Ingestor, session: SessionDep, request: Request
) -> SampleRead:
    """Correct a sample, with a reason: its collection date (checked as at upload), type,
    plasma volume, cfDNA concentration, tumour/normal columns, or its patient (`patient_id`:
    moves it to another patient of the same site). The correction is on the audit trail and
    in the sample's `corrections`; the analyses it affects are recomputed (the file re-read
    when what is read from it changed) and a result already issued that changes is amended."""
    done = corrections.correct(session, principal.site, sample_id, body)
    detail = (
        {"action": "sample.corrected", "changes": done.changes, "reason": body.reason}
        if done.changes
        else None
    )
    audit(
        session,
        request,
        principal,
        patient_id=done.previous_patient.patient_id,
        sample_id=sample_id,
        detail=detail,
    )
    if done.patient is not done.previous_patient:
        audit(session, request, principal, patient_id=done.patient.patient_id, sample_id=sample_id)
    return _sample_read(session, done.sample, done.patient)


@router.post("/{sample_id}/retract", response_model=SampleRead)
def retract_sample(
    sample_id: str, body: Retraction, principal: Ingestor, session: SessionDep, request: Request
) -> SampleRead:
    """Retract a sample, with a reason (wrong patient, failed QC, duplicate draw...): it stays
    readable with status `retracted`, its variant rows are removed and it is left out of every
    analysis (its results already issued are amended). Retracting it again changes nothing."""
    sample, patient, now = corrections.retract(session, principal.site, sample_id, body.reason)
    detail = {"action": "sample.retracted", "reason": body.reason} if now else None
    audit(
        session,
        request,
        principal,
        patient_id=patient.patient_id,
        sample_id=sample_id,
        detail=detail,
    )
    return _sample_read(session, sample, patient)


VARIANTS_PAGE = Annotated[PageRequest, page_params(default=1000, maximum=5000)]


@router.get("/{sample_id}/variants", response_model=VariantList)
def get_variants(
    sample_id: str, principal: Reader, session: SessionDep, request: Request, page: VARIANTS_PAGE
) -> VariantList:
    """The sample's stored variant rows by position, a page at a time (follow `next_cursor`)."""
    sample, patient = _read_sample(sample_id, principal, session, request)
    rows, next_cursor = repository.variants(session, sample.id, page)
    return VariantList(
        sample_id=sample.sample_id,
        items=[VariantRead.model_validate(v) for v in rows],
        next_cursor=next_cursor,
    )
