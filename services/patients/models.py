"""Patients (scoped to a site) and their clinical events (surgery, therapy lines, relapse)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from services.db import Base, UtcDateTime, utcnow


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("site", "patient_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    events: Mapped[list[PatientEvent]] = relationship(
        back_populates="patient", order_by="PatientEvent.event_date", lazy="raise"
    )


class PatientEvent(Base):
    __tablename__ = "patient_events"
    __table_args__ = (Index("ix_patient_events_patient_date", "patient_pk", "event_date"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    event_date: Mapped[date] = mapped_column(Date)
    drug: Mapped[str | None] = mapped_column(String(128))
    drug_class: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(String(1000))
    # receptor_status only: the specimen tested, its anatomical site, ER and PR (a percentage
    # of stained nuclei as text, e.g. "90", or positive / low / negative), HER2 IHC and ISH.
    specimen: Mapped[str | None] = mapped_column(String(16))
    specimen_site: Mapped[str | None] = mapped_column(String(128))
    er: Mapped[str | None] = mapped_column(String(16))
    pr: Mapped[str | None] = mapped_column(String(16))
    her2_ihc: Mapped[str | None] = mapped_column(String(16))
    her2_ish: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="events", lazy="raise")
