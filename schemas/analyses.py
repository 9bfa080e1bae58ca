"""The analysis bodies the API serves (``GET /v1/patients/{id}/mrd`` ...): built through these
models when a patient is recomputed, stored as JSON, served as stored bytes, declared here so
that OpenAPI, the UI, the reports, the exports and the CLI read one typed shape."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MrdCallValue = Literal["POSITIVE", "NEGATIVE", "INDETERMINATE"]
MrdPatientStatus = Literal[
    "positive", "positive_unconfirmed", "negative", "indeterminate", "not_applicable"
]
# The patient statuses in the words an oncologist reads (UI, reports, CLI, exports).
MRD_STATUS_LABELS: dict[str, str] = {
    "positive": "ctDNA positive (molecular relapse)",
    "positive_unconfirmed": "ctDNA positive, not yet confirmed",
    "negative": "ctDNA negative",
    "indeterminate": "indeterminate",
    "not_applicable": "MRD not applicable",
}
MRD_PATIENT_STATUSES: tuple[str, ...] = tuple(MRD_STATUS_LABELS)


class _Body(BaseModel):
    # Stored bodies may carry fields a later version added (amendments, ...): keep them.
    model_config = ConfigDict(extra="allow")


class BackgroundModelRef(_Body):
    """The assay background model a patient's calls rest on."""

    assay: str
    controls_scope: Literal["site", "all sites"]
    digest: str | None = Field(
        description="Identity of the fitted model; None: too little background"
    )
    fitted_at: str
    samples: int
    sigma: float | None = Field(description="Fitted draw-to-draw spread of the error rates")
    loci: int | None


class MrdCallBody(_Body):
    """One post-surgery plasma draw's MRD call."""

    sample_id: str
    collection_date: dt.date
    assay: str
    call: MrdCallValue
    reason: str
    flags: list[str] = Field(
        default_factory=list,
        description="Why a POSITIVE stands despite a gate: low_informative_reads, early_postop",
    )
    confirmed: bool = Field(description="The score also passes the 99.9 % confirmation threshold")
    status_after: MrdPatientStatus = Field(description="The patient status after this draw")
    score: float
    threshold: float | None
    confirmation_threshold: float | None
    p_value: float | None
    tumor_fraction: float = Field(description="ctDNA fraction of the cfDNA (p-hat)")
    ci_low: float
    ci_high: float
    lod95: float | None
    loci_detected: int
    loci_tracked: int
    loci_used: int
    loci_reported: int
    informative_reads: int
    mutant_reads: int
    background_reads: float
    dropped_loci: list[str]
    excluded_loci: list[str]
    days_since_surgery: int | None
    n_null_simulations: int
    params_version: str
    mutant_molecules_per_ml: float | None
    fingerprint: str


class MrdBody(_Body):
    """``GET /v1/patients/{patient_id}/mrd``."""

    patient_id: str
    status: MrdPatientStatus
    reason: str | None
    surgery_date: dt.date | None
    calls: list[MrdCallBody]
    molecular_relapse_date: dt.date | None = Field(
        description="First POSITIVE draw of the first confirmed positive run"
    )
    relapse_confirmed_date: dt.date | None = Field(
        default=None, description="The draw that confirmed the molecular relapse"
    )
    clinical_relapse_date: dt.date | None
    lead_time_days: int | None
    loci_tracked: int
    rule_version: str
    background_version: str
    background_models: list[BackgroundModelRef] = Field(default_factory=list)
    specificity: float
    threshold_specificity: float
    confirmation_specificity: float
    min_informative_reads: int
    computed_at: str
