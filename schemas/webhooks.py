"""Webhook endpoints and the versioned event payloads (JSON Schema exported by
`ctdna schemas export`). Payloads carry ids and the facts needed to act, not more patient data
than needed."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from schemas.common import ApiModel

EventType = Literal[
    "sample.processed",
    "sample.failed",
    "mrd.status_changed",
    "resistance.emerged",
    "resistance.rising",
    "resistance.withdrawn",
    "actionable.detected",
    "result.amended",
]
EVENT_TYPES: tuple[str, ...] = EventType.__args__  # type: ignore[attr-defined]


class EndpointCreate(ApiModel):
    url: AnyHttpUrl
    events: list[EventType] = Field(min_length=1)
    description: str | None = Field(default=None, max_length=512)


class EndpointUpdate(ApiModel):
    url: AnyHttpUrl | None = None
    events: list[EventType] | None = Field(default=None, min_length=1)
    description: str | None = Field(default=None, max_length=512)
    enabled: bool | None = None


class EndpointRead(ApiModel):
    id: str
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    created_at: dt.datetime


class EndpointCreated(EndpointRead):
    secret: str


class EndpointList(ApiModel):
    items: list[EndpointRead]
    next_cursor: str | None = None


class SecretRotated(ApiModel):
    id: str
    secret: str
    previous_secret_valid_until: dt.datetime


class AttemptRead(ApiModel):
    attempted_at: dt.datetime
    status_code: int | None
    latency_ms: float | None
    error: str | None
    response_excerpt: str | None


class DeliveryRead(ApiModel):
    id: str
    event_id: str
    event_type: str
    endpoint_id: str
    status: str
    attempts: int
    last_status_code: int | None
    next_attempt_at: dt.datetime | None
    created_at: dt.datetime
    attempt_log: list[AttemptRead]


class DeliveryList(ApiModel):
    items: list[DeliveryRead]
    next_cursor: str | None = None


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleProcessedV1(_Payload):
    patient_id: str
    sample_id: str
    job_id: str
    sample_type: str
    collection_date: dt.date
    variant_count: int


class SampleFailedV1(_Payload):
    patient_id: str
    sample_id: str
    job_id: str
    error: str


class MrdStatusChangedV1(_Payload):
    patient_id: str
    sample_id: str
    collection_date: dt.date
    previous_status: str | None
    status: str
    molecular_relapse_date: dt.date | None
    tumor_fraction: float | None
    lod95: float | None
    rule_version: str


class ResistanceEmergedV1(_Payload):
    """A resistance clone on the current therapy: `status` `emerged` (new, the earlier draws
    sensitive enough to have seen it) or `present_at_start` (there when the line began). Sent
    once the evidence holds: at once when strong, else when the next draw detects it again
    (`alert_date`); `first_detected_date` starts the run of detections."""

    patient_id: str
    sample_id: str
    gene: str
    protein_change: str | None
    status: str
    first_detected_date: dt.date
    drug_class: str
    implication: str
    map_version: str
    event_date: dt.date | None = None
    alert_date: dt.date | None = None
    alert_sample_id: str | None = None
    drug: str | None = None
    vaf: float | None = None
    evidence_level: str | None = None


class ResistanceRisingV1(ResistanceEmergedV1):
    """A resistance clone already detected rose significantly (>= 2-fold, one-sided Fisher
    p < 0.01) between two draws on the therapy it resists; `status` `rising`."""

    fold_change: float | None = None
    previous_sample_id: str | None = None


class ResistanceWithdrawnV1(_Payload):
    """A resistance or actionable alert sent earlier that later evidence contradicts (a draw
    sensitive enough to see the clone did not) or that a corrected record no longer supports:
    the alert no longer holds. `status` is the withdrawn alert's."""

    patient_id: str
    sample_id: str
    gene: str | None
    protein_change: str | None
    status: str
    drug_class: str
    first_detected_date: dt.date
    alerted_at: dt.datetime
    reason: str


class ActionableDetectedV1(_Payload):
    """A variant a drug works against (PIK3CA/AKT1 for alpelisib, inavolisib, capivasertib;
    ERBB2 for neratinib; ESR1 for elacestrant) detected with evidence that holds, whatever the
    current therapy."""

    patient_id: str
    sample_id: str
    gene: str
    protein_change: str
    drug_class: str
    drugs: list[str]
    evidence_level: str | None
    implication: str
    first_detected_date: dt.date
    alert_date: dt.date
    map_version: str


class AmendedResultV1(_Payload):
    """One issued result that changed. `field`: `call` (an MRD call, of `sample_id`),
    `status` or `molecular_relapse_date` (the patient's MRD answer), `event` (a resistance
    event, `subject` its identity). The values are the categorical ones (the call, the status,
    the date); `current_value` null: the result was withdrawn. The whole results are in
    GET /v1/patients/{patient_id}/amendments."""

    amendment_id: int
    analysis: Literal["mrd", "resistance"]
    field: str
    sample_id: str | None
    subject: str | None
    previous_value: str | None
    current_value: str | None
    reason: str
    method_version: str


class ResultAmendedV1(_Payload):
    """Results already issued (served or sent) changed in one recompute of the patient's
    analyses, for `reason` (a new sample or background, a correction or retraction, an event
    change, a new method version)."""

    patient_id: str
    reason: str
    amended_at: dt.datetime
    amendments: list[AmendedResultV1] = Field(min_length=1)


PAYLOADS: dict[str, type[_Payload]] = {
    "sample.processed": SampleProcessedV1,
    "sample.failed": SampleFailedV1,
    "mrd.status_changed": MrdStatusChangedV1,
    "resistance.emerged": ResistanceEmergedV1,
    "resistance.rising": ResistanceRisingV1,
    "resistance.withdrawn": ResistanceWithdrawnV1,
    "actionable.detected": ActionableDetectedV1,
    "result.amended": ResultAmendedV1,
}


def json_schemas() -> dict[str, dict[str, object]]:
    """The JSON Schema of every webhook payload, by file name (`mrd.status_changed.v1.json`)."""
    return {f"{event}.v1.json": model.model_json_schema() for event, model in PAYLOADS.items()}
