"""HTTP edge for patients and their events."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, cast

from fastapi import APIRouter, Path, Request, Response, status

from schemas.patients import (
    DrugClass,
    EventCreate,
    EventDeletion,
    EventRead,
    EventType,
    EventUpdate,
    PatientCreate,
    PatientDetail,
    PatientList,
    PatientRead,
    SampleSummary,
)
from schemas.receptors import ReceptorsRead
from services.analysis import service as analysis
from services.api.deps import Ingestor, Page, Reader, SessionDep
from services.audit.service import audit
from services.patients import repository, service
from services.patients.models import PatientEvent

router = APIRouter(prefix="/v1/patients", tags=["patients"])
EventId = Annotated[int, Path(ge=1, le=2**31 - 1, description="the event's id")]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=PatientRead)
def create_patient(
    body: PatientCreate, principal: Ingestor, session: SessionDep, request: Request
) -> PatientRead:
    patient = service.create_patient(session, principal.site, body.patient_id)
    audit(session, request, principal, patient_id=patient.patient_id)
    return PatientRead(patient_id=patient.patient_id, created_at=patient.created_at)


@router.get("", response_model=PatientList)
def list_patients(
    principal: Reader, session: SessionDep, request: Request, page: Page
) -> PatientList:
    """The site's patients by patient_id, a page at a time (follow `next_cursor`)."""
    rows, next_cursor = repository.list_with_counts(session, principal.site, page)
    items = [
        PatientRead(
            patient_id=p.patient_id,
            created_at=p.created_at,
            sample_count=counts.get("processed", 0),
            samples_by_status=counts,
        )
        for p, counts in rows
    ]
    audit(session, request, principal)
    return PatientList(items=items, next_cursor=next_cursor)


@router.get("/{patient_id}", response_model=PatientDetail)
def get_patient(
    patient_id: str, principal: Reader, session: SessionDep, request: Request
) -> PatientDetail:
    patient = service.get_patient_or_raise(session, principal.site, patient_id)
    audit(session, request, principal, patient_id=patient.patient_id)
    samples = repository.samples(session, patient.id)
    counts = Counter(s.status for s in samples)
    return PatientDetail(
        patient_id=patient.patient_id,
        created_at=patient.created_at,
        sample_count=counts["processed"],
        samples_by_status=dict(counts),
        events=[_event_read(e) for e in repository.events(session, patient.id)],
        samples=[
            SampleSummary(
                sample_id=s.sample_id,
                collection_date=s.collection_date,
                sample_type=s.sample_type,
                status=s.status,
            )
            for s in samples
        ],
    )


@router.post("/{patient_id}/events", status_code=status.HTTP_201_CREATED, response_model=EventRead)
def add_event(
    patient_id: str, body: EventCreate, principal: Ingestor, session: SessionDep, request: Request
) -> EventRead:
    patient = service.get_patient_or_raise(session, principal.site, patient_id)
    event = service.add_event(session, patient, body)
    session.flush()
    analysis.recompute_safely(session, patient, f"event added: {body.type} {body.date}")
    audit(session, request, principal, patient_id=patient.patient_id)
    return _event_read(event)


@router.patch("/{patient_id}/events/{event_id}", response_model=EventRead)
def patch_event(
    patient_id: str,
    event_id: EventId,
    body: EventUpdate,
    principal: Ingestor,
    session: SessionDep,
    request: Request,
) -> EventRead:
    """Correct an event, with a reason (checked as a new event: no date after tomorrow in the
    site's time). On the audit trail; the analyses are recomputed and a result already issued
    that changes is amended."""
    patient = service.get_patient_or_raise(session, principal.site, patient_id)
    event, changes = service.correct_event(session, patient, event_id, body)
    detail = {
        "action": "event.corrected",
        "event_id": event.id,
        "changes": changes,
        "reason": body.reason,
    }
    audit(
        session,
        request,
        principal,
        patient_id=patient.patient_id,
        detail=detail if changes else None,
    )
    return _event_read(event)


@router.delete("/{patient_id}/events/{event_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_event(
    patient_id: str,
    event_id: EventId,
    body: EventDeletion,
    principal: Ingestor,
    session: SessionDep,
    request: Request,
) -> Response:
    """Delete an event, with a reason (JSON body `{reason}`). The event as it was is kept on
    the audit trail; the analyses are recomputed and a result already issued that changes is
    amended."""
    patient = service.get_patient_or_raise(session, principal.site, patient_id)
    gone = service.delete_event(session, patient, event_id, body.reason)
    detail = {"action": "event.deleted", "event": gone, "reason": body.reason}
    audit(session, request, principal, patient_id=patient.patient_id, detail=detail)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{patient_id}/receptors", response_model=ReceptorsRead)
def get_receptors(
    patient_id: str, principal: Reader, session: SessionDep, request: Request
) -> ReceptorsRead:
    """ER, PR and HER2 of each receptor_status event by date, with the HER2 category (ASCO/CAP
    2023, HER2-low and ultralow included), ER/PR status (ASCO/CAP 2020) and the subtype; and
    the discordance between the first primary and the latest recurrence or metastasis, each
    change with its implication and citations from the versioned rule table."""
    patient = service.get_patient_or_raise(session, principal.site, patient_id)
    audit(session, request, principal, patient_id=patient.patient_id)
    return service.receptors_read(session, patient)


def _event_read(event: PatientEvent) -> EventRead:
    # The stored type and drug class are the schema's Literals: validated on the way in.
    return EventRead(
        id=event.id,
        type=cast(EventType, event.type),
        date=event.event_date,
        drug=event.drug,
        drug_class=cast("DrugClass | None", event.drug_class),
        note=event.note,
        **service.receptor_fields(event),
    )
