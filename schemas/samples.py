"""Samples, their jobs and their variant rows."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from schemas.common import ApiModel, JobStatus


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
