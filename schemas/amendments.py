"""Amendments: results that had been issued (served or sent) and changed since."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import Field

from schemas.common import ApiModel


class AmendmentRead(ApiModel):
    id: int
    analysis: Literal["mrd", "resistance"]
    field: str = Field(
        description="call (an MRD call), status or molecular_relapse_date (the patient's MRD "
        "answer), event (a resistance event)"
    )
    sample_id: str | None = Field(description="the draw of the call or event")
    subject: str | None = Field(
        description="what is amended: the sample id of a call, the identity of an event"
    )
    previous: Any = Field(description="the result as it had been issued (a whole call or event)")
    current: Any = Field(description="the result now; null when it was withdrawn")
    reason: str = Field(description="why the analyses were recomputed")
    method_version: str
    amended_at: dt.datetime


class AmendmentList(ApiModel):
    patient_id: str
    items: list[AmendmentRead]
