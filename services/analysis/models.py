"""Precomputed analyses of a patient (MRD calls, trends, clones, resistance) stored as the JSON
bodies the API returns, the resistance events already announced (so each fires once), the
amendments of results already issued (services/analysis/amendments.py), and the fitted
background model of each assay of a site (so every call names the model it used)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UtcDateTime, utcnow


class PatientAnalysis(Base):
    __tablename__ = "patient_analyses"
    __table_args__ = (UniqueConstraint("patient_pk", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    # Summary fields the patient list filters and sorts on without parsing bodies.
    status: Mapped[str | None] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    computed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ResistanceEventRecord(Base):
    """A resistance or actionable alert that was sent (``status`` the event's), the draw it was
    about, and when a later recompute withdrew it."""

    __tablename__ = "resistance_events"
    __table_args__ = (
        Index("ix_resistance_events_patient_locus", "patient_pk", "locus_key", "drug_class"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    locus_key: Mapped[str] = mapped_column(String(2200))
    gene: Mapped[str | None] = mapped_column(String(32), nullable=True)
    protein_change: Mapped[str | None] = mapped_column(String(256), nullable=True)
    drug_class: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    first_detected_date: Mapped[date] = mapped_column(Date)
    event_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    sample_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ResultAmendment(Base):
    """One change of a result that had been issued: what it was, what it is now, why, when
    and under which method version. `previous` and `current` are JSON (a whole MRD call or
    resistance event, or a patient-level value; `current` null: withdrawn)."""

    __tablename__ = "result_amendments"
    __table_args__ = (Index("ix_result_amendments_patient", "patient_pk", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    analysis: Mapped[str] = mapped_column(String(16))  # "mrd" | "resistance"
    field: Mapped[str] = mapped_column(String(32))  # "call" | "status" | ... | "event"
    sample_id: Mapped[str | None] = mapped_column(String(128))
    # A call's sample id, or an event's identity (its locus key may be long: Text).
    subject: Mapped[str | None] = mapped_column(Text)
    previous: Mapped[str] = mapped_column(Text)
    current: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(2000))
    method_version: Mapped[str] = mapped_column(String(256))
    amended_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class BackgroundModel(Base):
    """One fit of an assay's background model (``services.genomics.background.AssayModel``).

    ``scope`` is the site it was fitted on, or ``*`` when the site pools controls across sites
    (CTDNA_CROSS_SITE_CONTROLS); ``n_samples`` counts the samples it saw, so a refit happens
    when the assay has grown by half. Rows are never updated: a refit adds one, and each
    MRD call records the digest of the model it used."""

    __tablename__ = "background_models"
    __table_args__ = (Index("ix_background_models_scope_assay", "scope", "assay", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(64))
    assay: Mapped[str] = mapped_column(String(64))
    n_samples: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str | None] = mapped_column(String(32))
    body: Mapped[str | None] = mapped_column(Text)  # None: too little background to fit
    fitted_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
