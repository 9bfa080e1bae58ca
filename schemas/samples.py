"""Samples, their jobs and their variant rows."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from schemas.common import ApiModel, Identifier, JobStatus, Reason, SampleType


class SampleAccepted(ApiModel):
    sample_id: str
    job_id: str


class SampleRead(ApiModel):
    sample_id: str
    patient_id: str
    collection_date: dt.date
    sample_type: str
    status: str
    genome_build: str | None
    build_source: str | None
    tumor_sample: str | None
    normal_sample: str | None
    plasma_ml: float | None
    cfdna_ng_per_ml: float | None
    assay: str = "default"
    tumor_purity: float | None = None
    file_name: str
    file_sha256: str
    file_size: int
    alignment_name: str | None = None
    alignment_format: Literal["bam", "cram"] | None = None
    alignment_sha256: str | None = None
    records_read: int | None
    alleles_skipped: int | None
    variant_count: int | None
    processed_at: dt.datetime | None
    created_at: dt.datetime
    job_id: str | None = None
    retracted_at: dt.datetime | None = None
    retraction_reason: str | None = None
    corrections: list[CorrectionRead] = Field(
        default_factory=list, description="every correction and retraction, oldest first"
    )


class CorrectionRead(ApiModel):
    at: dt.datetime
    key_id: str | None
    action: str = Field(description="sample.corrected | sample.retracted")
    changes: dict[str, list[Any]] = Field(
        default_factory=dict, description="field: [before, after]"
    )
    reason: str


class SampleUpdate(ApiModel):
    """A correction of a sample: only the fields sent change (`null` clears an optional one).
    A new `patient_id` moves the sample to that patient of the same site."""

    reason: Reason
    collection_date: dt.date | None = None
    sample_type: SampleType | None = None
    plasma_ml: float | None = Field(default=None, gt=0, lt=1000)
    cfdna_ng_per_ml: float | None = Field(default=None, ge=0, lt=100000)
    tumor_sample: str | None = Field(default=None, max_length=256, pattern=r"^[^\x00]*$")
    normal_sample: str | None = Field(default=None, max_length=256, pattern=r"^[^\x00]*$")
    patient_id: Identifier | None = Field(
        default=None, description="move the sample to this patient of the same site"
    )


class Retraction(ApiModel):
    """Why the sample is retracted: wrong patient, failed QC, duplicate draw..."""

    reason: Reason


class JobRead(ApiModel):
    job_id: str
    task: str
    status: JobStatus
    error: str | None = None
    sample_id: str | None = None
    attempts: int
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    # What the running task last reported doing ("reading line 1200 of x.vcf"), and how many
    # of its workers vanished (killed, out of memory, past the time limit) before an answer.
    progress: str | None = None
    workers_lost: int = 0


class VariantRead(ApiModel):
    gene: str | None
    protein_change: str | None
    chrom: str
    pos: int
    ref: str
    alt: str
    build: str
    locus_key: str | None
    alt_reads: int | None
    depth: int | None
    vaf: float | None
    filter: str
    detected: bool
    hotspot: bool
    quantitative: bool
    tracked: bool
    normal_alt_reads: int | None = None
    normal_depth: int | None = None
    evidence: Literal["vcf", "alignment"] = Field(
        default="vcf",
        description="where alt_reads/depth come from: the VCF's FORMAT fields, or fragments "
        "counted in the sample's BAM/CRAM at a tracked locus",
    )


class VariantList(ApiModel):
    sample_id: str
    items: list[VariantRead]
    next_cursor: str | None = None


SampleRead.model_rebuild()
