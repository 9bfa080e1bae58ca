"""Samples: one uploaded variant file of one patient (and optionally its alignment), kept on
disk under their sha256."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Float, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UtcDateTime, utcnow


class Sample(Base):
    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("site", "sample_id"),
        Index("ix_samples_patient_sha256", "patient_pk", "file_sha256"),
        Index("ix_samples_patient_date", "patient_pk", "collection_date"),
        Index("ix_samples_site_assay_type", "site", "assay", "sample_type"),
        Index("ix_samples_patient_status", "patient_pk", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    sample_id: Mapped[str] = mapped_column(String(128))
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    collection_date: Mapped[date] = mapped_column(Date)
    sample_type: Mapped[str] = mapped_column(String(16))
    genome_build: Mapped[str | None] = mapped_column(String(8))
    tumor_sample: Mapped[str | None] = mapped_column(String(256))
    normal_sample: Mapped[str | None] = mapped_column(String(256))
    plasma_ml: Mapped[float | None] = mapped_column(Float)
    cfdna_ng_per_ml: Mapped[float | None] = mapped_column(Float)
    # The panel/assay the sample was run on: backgrounds pool within one assay of one site.
    assay: Mapped[str] = mapped_column(String(64), default="default", server_default="default")
    # Tumour purity of a tissue sample (a pathologist's estimate), else estimated from its VAFs.
    tumor_purity: Mapped[float | None] = mapped_column(Float)
    file_name: Mapped[str] = mapped_column(String(512))
    file_sha256: Mapped[str] = mapped_column(String(64))
    file_size: Mapped[int] = mapped_column(BigInteger)
    # An optional BAM/CRAM of the same sample, kept content-addressed with its index: at the
    # tracked loci its reads are the evidence (services/genomics/pileup.py), not the VCF's.
    alignment_name: Mapped[str | None] = mapped_column(String(512))
    alignment_sha256: Mapped[str | None] = mapped_column(String(64))
    alignment_index_sha256: Mapped[str | None] = mapped_column(String(64))
    alignment_format: Mapped[str | None] = mapped_column(String(8))  # "bam" | "cram"
    # pending -> processed | failed; "processed" refers to the latest successful extraction.
    # Any of them -> retracted (by the site, with a reason): kept and readable, its variant
    # rows gone, left out of every analysis.
    status: Mapped[str] = mapped_column(String(16), default="pending")
    retracted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    retraction_reason: Mapped[str | None] = mapped_column(String(1000))
    detected_build: Mapped[str | None] = mapped_column(String(8))
    build_source: Mapped[str | None] = mapped_column(String(32))
    resolved_tumor_sample: Mapped[str | None] = mapped_column(String(256))
    resolved_normal_sample: Mapped[str | None] = mapped_column(String(256))
    records_read: Mapped[int | None] = mapped_column(BigInteger)
    alleles_skipped: Mapped[int | None] = mapped_column(BigInteger)
    variant_count: Mapped[int | None] = mapped_column(BigInteger)
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
