"""Receptor status over time (ER, PR, HER2) and its discordance between primary and relapse."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from schemas.common import ApiModel
from schemas.patients import Her2Ihc, Her2Ish, Specimen

HormoneStatus = Literal["positive", "low", "negative", "unknown"]
Her2Category = Literal[
    "HER2-positive", "HER2-low", "HER2-ultralow", "HER2-0", "equivocal", "unknown"
]
Subtype = Literal["HR+/HER2-", "HR+/HER2+", "HR-/HER2+", "triple-negative", "undetermined"]


class ReceptorEventRead(ApiModel):
    event_id: int
    date: dt.date
    specimen: Specimen
    site: str | None
    er: float | str | None = Field(description="as recorded: % of stained nuclei, or the word")
    pr: float | str | None
    her2_ihc: Her2Ihc | None
    her2_ish: Her2Ish | None
    er_status: HormoneStatus = Field(description="ASCO/CAP 2020: >=10% positive, 1-10% low")
    pr_status: HormoneStatus
    her2_category: Her2Category = Field(
        description="ASCO/CAP 2023; equivocal: IHC 2+ without a definite ISH, undetermined"
    )
    subtype: Subtype
    subtype_label: str = Field(
        description='with the HER2-low/ultralow category, e.g. "HR+/HER2- (HER2-low)"'
    )


class DiscordanceRead(ApiModel):
    receptor: Literal["ER", "PR", "HER2"]
    primary: str = Field(description="status or category of the primary tumour")
    latest: str = Field(description="of the latest recurrence or metastasis")
    primary_date: dt.date
    latest_date: dt.date
    change: str = Field(
        description="gain | loss; HER2 also zero_to_low, zero_to_ultralow, low_to_zero, "
        "ultralow_to_zero"
    )
    rule_id: str
    implication: str
    citations: list[str]


class ReceptorsRead(ApiModel):
    """The patient's receptor_status events by date, and what changed between the first
    primary and the latest recurrence or metastasis."""

    patient_id: str
    rules_version: str
    params_version: str
    events: list[ReceptorEventRead]
    discordance: list[DiscordanceRead]
