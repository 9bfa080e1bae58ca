"""Variant rows extracted from a sample, and the patient's tracked (tumour-informed) loci.

`locus_key` is the build-independent identity (normalised GRCh38 "chr3:179234297:A>G") that
lines up a GRCh37 and a GRCh38 sample of one patient."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UtcDateTime, utcnow


class Variant(Base):
    __tablename__ = "variants"
    __table_args__ = (
        UniqueConstraint("sample_pk", "chrom", "pos", "ref", "alt"),
        Index("ix_variants_locus_key", "locus_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_pk: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"))
    chrom: Mapped[str] = mapped_column(String(64))
    pos: Mapped[int] = mapped_column(Integer)
    ref: Mapped[str] = mapped_column(String(1024))
    alt: Mapped[str] = mapped_column(String(1024))
    build: Mapped[str] = mapped_column(String(8))
    locus_key: Mapped[str | None] = mapped_column(String(2200))
    gene: Mapped[str | None] = mapped_column(String(32))
    protein_change: Mapped[str | None] = mapped_column(String(128))
    filter: Mapped[str] = mapped_column(String(256))
    passed: Mapped[bool] = mapped_column(Boolean)
    detected: Mapped[bool] = mapped_column(Boolean)
    alt_reads: Mapped[int | None] = mapped_column(Integer)
    depth: Mapped[int | None] = mapped_column(Integer)
    vaf: Mapped[float | None] = mapped_column(Float)
    quantitative: Mapped[bool] = mapped_column(Boolean)
    normal_alt_reads: Mapped[int | None] = mapped_column(Integer)
    normal_depth: Mapped[int | None] = mapped_column(Integer)
    hotspot: Mapped[bool] = mapped_column(Boolean)
    in_monitored_gene: Mapped[bool] = mapped_column(Boolean)
    tracked: Mapped[bool] = mapped_column(Boolean)
    # Where alt_reads/depth come from: "vcf" (the caller's FORMAT fields) or "alignment"
    # (fragments counted in the sample's BAM/CRAM at a tracked locus).
    evidence: Mapped[str] = mapped_column(String(16), server_default="vcf")


class TrackedVariant(Base):
    __tablename__ = "tracked_variants"
    __table_args__ = (UniqueConstraint("patient_pk", "locus_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    locus_key: Mapped[str] = mapped_column(String(2200))
    gene: Mapped[str | None] = mapped_column(String(32))
    protein_change: Mapped[str | None] = mapped_column(String(128))
    tumor_af: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16))
    source_sample_pk: Mapped[int | None] = mapped_column(
        ForeignKey("samples.id", ondelete="SET NULL")
    )
    kept: Mapped[bool] = mapped_column(Boolean, default=True)
    reason: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
