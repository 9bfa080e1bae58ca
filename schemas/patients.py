"""Patients and their clinical events."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from schemas.common import ApiModel, Identifier, Reason

EventType = Literal["surgery", "therapy_start", "therapy_stop", "clinical_relapse", "progression"]
DrugClass = Literal[
    "aromatase_inhibitor",
    "serd",
    "cdk46_inhibitor",
    "pi3k_inhibitor",
    "akt_inhibitor",
    "mtor_inhibitor",
    "her2_tki",
    "her2_antibody",
    "her2_adc",
    "chemotherapy",
    "other",
]


class PatientCreate(ApiModel):
    patient_id: Identifier


class PatientRead(ApiModel):
    patient_id: str
    created_at: dt.datetime
    sample_count: int = Field(default=0, description="processed samples")
    samples_by_status: dict[str, int] = Field(
        default_factory=dict,
        description="samples by status: pending, processed, failed, retracted",
    )


class PatientList(ApiModel):
    items: list[PatientRead]
    next_cursor: str | None = None


class EventCreate(ApiModel):
    type: EventType
    date: dt.date
    drug: str | None = Field(default=None, max_length=128, pattern=r"^[^\x00]*$")
    drug_class: DrugClass | None = None
    note: str | None = Field(default=None, max_length=1000, pattern=r"^[^\x00]*$")


class EventUpdate(ApiModel):
    """A correction of an event: only the fields sent change (`null` clears drug, drug class
    or note)."""

    reason: Reason
    type: EventType | None = None
    date: dt.date | None = None
    drug: str | None = Field(default=None, max_length=128, pattern=r"^[^\x00]*$")
    drug_class: DrugClass | None = None
    note: str | None = Field(default=None, max_length=1000, pattern=r"^[^\x00]*$")


class EventDeletion(ApiModel):
    reason: Reason


class EventRead(ApiModel):
    id: int
    type: EventType
    date: dt.date
    drug: str | None
    drug_class: DrugClass | None
    note: str | None


class PatientDetail(PatientRead):
    events: list[EventRead]
    samples: list[SampleSummary]


class SampleSummary(ApiModel):
    sample_id: str
    collection_date: dt.date
    sample_type: str
    status: str


PatientDetail.model_rebuild()
