"""Patients and their clinical events."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import Field, field_validator

from schemas.common import ApiModel, Identifier, Reason

EventType = Literal[
    "surgery", "therapy_start", "therapy_stop", "clinical_relapse", "progression", "receptor_status"
]
Specimen = Literal["primary", "recurrence", "metastasis"]
Her2Ihc = Literal["0", "ultralow", "1+", "2+", "3+"]
Her2Ish = Literal["amplified", "not_amplified", "equivocal"]
HormoneReceptor = Annotated[float, Field(ge=0, le=100)] | Literal["positive", "low", "negative"]
"""ER or PR: the percentage of stained tumour nuclei (0-100), or the word of the report."""
AnatomicalSite = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00]*$")]
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


class ReceptorFields(ApiModel):
    """The fields of a receptor_status event (refused on any other type)."""

    specimen: Specimen | None = Field(
        default=None, description="receptor_status: the tumour specimen tested"
    )
    site: AnatomicalSite | None = Field(
        default=None, description="receptor_status: anatomical site of the specimen (e.g. liver)"
    )
    er: HormoneReceptor | None = None
    pr: HormoneReceptor | None = None
    her2_ihc: Her2Ihc | None = None
    her2_ish: Her2Ish | None = None

    @field_validator("her2_ihc", mode="before")
    @classmethod
    def _ihc_zero(cls, value: object) -> object:
        # IHC 0 sent as the number 0 is the score "0".
        return "0" if value == 0 and not isinstance(value, bool) else value


class EventCreate(ReceptorFields):
    type: EventType
    date: dt.date
    drug: str | None = Field(default=None, max_length=128, pattern=r"^[^\x00]*$")
    drug_class: DrugClass | None = None
    note: str | None = Field(default=None, max_length=1000, pattern=r"^[^\x00]*$")


class EventUpdate(ReceptorFields):
    """A correction of an event: only the fields sent change (`null` clears drug, drug class,
    note or a receptor field)."""

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
    specimen: Specimen | None = None
    site: str | None = None
    er: float | str | None = None
    pr: float | str | None = None
    her2_ihc: Her2Ihc | None = None
    her2_ish: Her2Ish | None = None


class PatientDetail(PatientRead):
    events: list[EventRead]
    samples: list[SampleSummary]


class SampleSummary(ApiModel):
    sample_id: str
    collection_date: dt.date
    sample_type: str
    status: str


PatientDetail.model_rebuild()
