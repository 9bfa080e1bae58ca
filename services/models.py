"""Every ORM model, imported once so that metadata (and Alembic) see the whole schema."""

from services.alerts.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from services.analysis.models import PatientAnalysis, ResistanceEventRecord, ResultAmendment
from services.audit.models import AuditEntry
from services.auth.models import ApiKey, UiSession
from services.db import Base
from services.idempotency.models import IdempotentRequest
from services.jobs.models import Job
from services.patients.models import Patient, PatientEvent
from services.samples.models import Sample
from services.sites.models import SiteSettings
from services.variants.models import TrackedVariant, Variant

__all__ = [
    "ApiKey",
    "AuditEntry",
    "Base",
    "IdempotentRequest",
    "Job",
    "Patient",
    "PatientAnalysis",
    "ResistanceEventRecord",
    "ResultAmendment",
    "PatientEvent",
    "Sample",
    "SiteSettings",
    "TrackedVariant",
    "UiSession",
    "Variant",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
]
