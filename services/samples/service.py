"""Accepting uploads: one sample and one ingest job per distinct file of a patient; an
alignment (BAM/CRAM) posted with it, or later, queues a re-extraction of that sample."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO

from sqlalchemy.orm import Session

from services.config import get_settings
from services.db import utcnow
from services.errors import Conflict, InvalidInput, NotFound
from services.genomics.sniff import ALIGNMENT_FORMATS, AlignmentCheck, UploadCheck
from services.jobs import service as jobs
from services.jobs.models import Job
from services.patients import repository as patients_repository
from services.patients import service as patients
from services.patients.models import Patient
from services.samples import repository, storage
from services.samples.models import Sample
from services.samples.storage import Staged, StoredFile
from services.sites import service as sites


@dataclass(frozen=True, slots=True)
class SampleForm:
    patient_id: str
    sample_id: str
    collection_date: dt.date
    sample_type: str
    genome_build: str | None
    tumor_sample: str | None
    normal_sample: str | None
    plasma_ml: float | None
    cfdna_ng_per_ml: float | None
    file_name: str
    # An unknown patient is created only when asked (None: the site's default).
    create_patient: bool | None = None
    assay: str = "default"
    tumor_purity: float | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """`created`: a new sample; `queued`: a new ingest job of an existing sample (its
    alignment changed). Neither: a retry, answered with what is already there."""

    sample: Sample
    job: Job
    created: bool
    queued: bool = False


@dataclass(frozen=True, slots=True)
class AlignmentFiles:
    """A BAM/CRAM and its index as stored (content-addressed, like the VCF)."""

    name: str
    format: str  # "bam" | "cram"
    sha256: str
    index_sha256: str


class UploadBatch:
    """The files of one request, each judged as it streams in, and kept (renamed to their
    content address) only by `commit()` once all are accepted: a refused alignment leaves
    no VCF behind, and the other way round."""

    def __init__(self) -> None:
        self._settings = get_settings()
        self._staged: list[Staged] = []

    def __enter__(self) -> UploadBatch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for staged in self._staged:
            staged.discard()

    def _stage(self, source: BinaryIO, check: storage.StreamCheck) -> Staged:
        staged = storage.stage(
            source,
            self._settings.uploads_dir,
            max_bytes=self._settings.max_upload_bytes,
            check=check,
        )
        self._staged.append(staged)
        return staged

    def variant_file(self, source: BinaryIO, file_name: str) -> StoredFile:
        """A VCF or BCF, refused when it is not one, is over the size cap, or inflates past
        the decompression cap."""
        settings = self._settings
        check = UploadCheck(
            file_name,
            max_decompressed_bytes=settings.max_decompressed_bytes,
            max_sample_columns=settings.max_sample_columns,
            max_line_bytes=settings.max_line_bytes,
            max_records=settings.max_records,
        )
        staged = self._stage(source, check)
        return StoredFile(sha256=staged.sha256, size=staged.size, path=staged.final_path)

    def alignment(
        self, source: BinaryIO, name: str, index_source: BinaryIO, index_name: str
    ) -> AlignmentFiles:
        """A BAM with its BAI/CSI, or a CRAM with its CRAI (same size cap as a VCF)."""
        reads = AlignmentCheck(name, role="alignment")
        staged = self._stage(source, reads)
        index = AlignmentCheck(index_name, role="index")
        staged_index = self._stage(index_source, index)
        if index.kind not in ALIGNMENT_FORMATS[reads.kind]:
            fits = " or ".join(f".{k}" for k in ALIGNMENT_FORMATS[reads.kind])
            raise InvalidInput(
                f"{index_name}: a .{index.kind} index does not fit {name}, a "
                f"{reads.kind.upper()} (send its {fits})"
            )
        return AlignmentFiles(name, reads.kind, staged.sha256, staged_index.sha256)

    def commit(self) -> None:
        for staged in self._staged:
            staged.commit()
        self._staged.clear()


def attach_alignment(
    session: Session, site: str, sample: Sample, files: AlignmentFiles
) -> Accepted:
    """Give the sample this alignment and queue its re-extraction; the alignment it already
    has answers with its latest job (a retry), nothing queued."""
    same = (sample.alignment_sha256, sample.alignment_index_sha256) == (
        files.sha256,
        files.index_sha256,
    )
    job = repository.latest_job(session, sample.id)
    if same and job is not None:
        return Accepted(sample=sample, job=job, created=False)
    sample.alignment_name = files.name
    sample.alignment_format = files.format
    sample.alignment_sha256 = files.sha256
    sample.alignment_index_sha256 = files.index_sha256
    job = jobs.create_job(
        session,
        task=jobs.INGEST_TASK,
        site=site,
        sample_pk=sample.id,
        reason=f"alignment {files.name} attached to sample {sample.sample_id}",
    )
    return Accepted(sample=sample, job=job, created=False, queued=True)


def accept_upload(
    session: Session,
    site: str,
    form: SampleForm,
    stored: StoredFile,
    alignment: AlignmentFiles | None = None,
) -> Accepted:
    """Create the sample and its ingest job in the caller's transaction; the same bytes for
    the same patient and sample id return the existing sample and job, nothing duplicated
    (unless a new alignment comes with them: it is attached and the sample re-extracted).
    Refused: a collection date that cannot be true (422), an unknown patient not asked to be
    created (404), the same bytes under another sample id or another file under this one
    (409, naming the sample)."""
    sites.check_collection_date(session, site, form.collection_date, what="collection_date")
    patient = patient_for_upload(session, site, form.patient_id, form.create_patient)
    same = repository.find_same_bytes(session, patient.id, stored.sha256, form.sample_id)
    if same is not None:
        if same.sample_id != form.sample_id:
            retracted = " (retracted)" if same.status == "retracted" else ""
            raise Conflict(
                f"this file is already sample {same.sample_id!r}{retracted} of patient "
                f"{form.patient_id!r}; the same bytes cannot be sample {form.sample_id!r} too "
                "(correct the existing sample with PATCH /v1/samples/{sample_id} instead)"
            )
        if alignment is not None:
            return attach_alignment(session, site, same, alignment)
        job = repository.latest_job(session, same.id)
        if job is None:  # a sample always gets a job at creation; keep the invariant anyway
            job = jobs.create_job(session, task=jobs.INGEST_TASK, site=site, sample_pk=same.id)
        return Accepted(sample=same, job=job, created=False)
    existing = repository.get_with_patient(session, site, form.sample_id)
    if existing is not None:
        owner = existing[1].patient_id
        raise Conflict(
            f"sample {form.sample_id!r} already exists (patient {owner!r}) with different "
            "file contents; use a new sample_id for a new file"
        )
    sample = Sample(
        site=site,
        sample_id=form.sample_id,
        patient_pk=patient.id,
        collection_date=form.collection_date,
        sample_type=form.sample_type,
        genome_build=form.genome_build,
        tumor_sample=form.tumor_sample,
        normal_sample=form.normal_sample,
        plasma_ml=form.plasma_ml,
        cfdna_ng_per_ml=form.cfdna_ng_per_ml,
        assay=form.assay,
        tumor_purity=form.tumor_purity,
        file_name=form.file_name,
        file_sha256=stored.sha256,
        file_size=stored.size,
        alignment_name=alignment.name if alignment else None,
        alignment_format=alignment.format if alignment else None,
        alignment_sha256=alignment.sha256 if alignment else None,
        alignment_index_sha256=alignment.index_sha256 if alignment else None,
        status="pending",
        created_at=utcnow(),
    )
    session.add(sample)
    session.flush()
    job = jobs.create_job(
        session,
        task=jobs.INGEST_TASK,
        site=site,
        sample_pk=sample.id,
        reason=f"new {form.sample_type} sample {form.sample_id}",
    )
    return Accepted(sample=sample, job=job, created=True)


def patient_for_upload(
    session: Session, site: str, patient_id: str, create: bool | None
) -> Patient:
    """The site's patient; an unknown one is created only when the upload asks for it
    (`create`), or by default when the site says so, so a mistyped id is a 404."""
    patient = patients_repository.get(session, site, patient_id)
    if patient is not None:
        return patient
    if create is None:
        create = sites.settings_of(session, site).create_patients_on_upload
    if not create:
        raise NotFound(
            f"patient {patient_id!r} not found: create it first (POST /v1/patients) or send "
            "create_patient=true with the upload"
        )
    return patients.get_or_create_patient(session, site, patient_id)


def get_sample_or_raise(session: Session, site: str, sample_id: str) -> Sample:
    sample = repository.get(session, site, sample_id)
    if sample is None:
        raise NotFound(f"sample {sample_id!r} not found")
    return sample
