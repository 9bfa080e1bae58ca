"""The analysis bodies the API serves (``GET /v1/patients/{id}/mrd`` ...): built through these
models when a patient is recomputed, stored as JSON, served as stored bytes, declared here so
that OpenAPI, the UI, the reports, the exports and the CLI read one typed shape."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CloneStatus = Literal["emerging", "expanding", "stable", "declining", "cleared", "not_detected"]
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
    background_model: str | None = Field(
        default=None, description="Digest of the assay background model the call was made on"
    )


class MrdBody(_Body):
    """``GET /v1/patients/{patient_id}/mrd``."""

    patient_id: str
    status: MrdPatientStatus
    reason: str | None
    surgery_date: dt.date | None = None
    calls: list[MrdCallBody]
    molecular_relapse_date: dt.date | None = Field(
        description="First POSITIVE draw of the first confirmed positive run"
    )
    relapse_confirmed_date: dt.date | None = Field(
        default=None, description="The draw that confirmed the molecular relapse"
    )
    clinical_relapse_date: dt.date | None = None
    lead_time_days: int | None
    loci_tracked: int = 0
    rule_version: str | None = Field(default=None, description="None: nothing computed yet")
    background_version: str | None = None
    background_models: list[BackgroundModelRef] = Field(default_factory=list)
    specificity: float | None = None
    threshold_specificity: float | None = None
    confirmation_specificity: float | None = None
    min_informative_reads: int | None = None
    computed_at: str | None = None


class TrendSample(_Body):
    """One plasma draw in ``/trends``."""

    sample_id: str
    collection_date: dt.date
    tumor_fraction: float | None = Field(description="ctDNA fraction of the cfDNA")
    tumor_fraction_ci: list[float | None] | None = None
    tumor_fraction_method: Literal["tumour_informed", "panel_vaf"] | None = Field(
        default=None,
        description="tumour_informed: the tracked loci weighted by their allele fraction in "
        "tumour DNA; panel_vaf: without tissue, from the clone seen at baseline",
    )
    tumor_fraction_source: Literal["mrd_call", "trends"] | None = Field(
        default=None, description="mrd_call: the draw's MRD call as issued (the same number)"
    )
    detected: bool | None = None
    p_value: float | None = None
    lod95: float | None = None
    mutant_reads: int | None = None
    informative_reads: int | None = None
    math_score: float | None = Field(
        default=None, description="MATH over the measurable somatic variants, when >= 3"
    )
    math_variants: int | None = None


class TrendPoint(_Body):
    sample_id: str
    collection_date: dt.date
    alt_reads: int
    depth: int
    vaf: float
    rccf: float | None
    rccf_ci: list[float | None] | None
    background_error: float | None = None


class TrendVariant(_Body):
    locus_key: str
    gene: str | None
    protein_change: str | None
    tracked: bool
    truncal: bool = Field(description="Part of the tumour-fraction reference")
    germline_suspected: bool = False
    points: list[TrendPoint]


class ResponseAssessmentBody(_Body):
    sample_id: str
    collection_date: dt.date
    tumour_fraction: float
    response: str
    ratio: float | None
    nadir_sample_id: str | None = None
    nadir_ratio: float | None = None
    resistance: list[str] = Field(default_factory=list)


class LineResponseBody(_Body):
    line: dict[str, object]
    baseline_sample_id: str | None
    baseline_tf: float | None
    assessments: list[ResponseAssessmentBody]
    best_response: str
    latest_response: str


class TrendsBody(_Body):
    """``GET /v1/patients/{patient_id}/trends``."""

    patient_id: str
    samples: list[TrendSample]
    variants: list[TrendVariant]
    responses: list[LineResponseBody]
    therapy_lines: list[dict[str, object]] = Field(default_factory=list)
    events: list[dict[str, object]] = Field(default_factory=list)
    params_version: str | None = None
    computed_at: str | None = None


class CloneMember(_Body):
    locus_key: str
    gene: str | None
    protein_change: str | None


class CloneBody(_Body):
    clone_id: int
    status: CloneStatus
    label_p_value: float | None
    label_fold_change: float | None
    members: list[CloneMember]
    ccf_series: list[dict[str, object]]


class ClonesBody(_Body):
    """``GET /v1/patients/{patient_id}/clones``: a beta-binomial trajectory mixture over the
    detected somatic variants (``error`` says why there is none)."""

    patient_id: str
    clones: list[CloneBody]
    params_version: str | None = None
    computed_at: str | None = None
    method: str | None = None
    n_clones: int | None = None
    samples: list[dict[str, object]] = Field(default_factory=list)
    error: str | None = None
