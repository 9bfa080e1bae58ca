"""The API's drug-class Literal (it must be literal for OpenAPI) and the scientific core's
vocabulary are written twice; they must not drift apart."""

from __future__ import annotations

from typing import get_args

from schemas.patients import DrugClass
from services.genomics.therapy import DRUG_CLASSES


def test_api_drug_classes_are_the_therapy_vocabulary() -> None:
    assert set(get_args(DrugClass)) == set(DRUG_CLASSES)


def test_every_drug_class_and_event_type_has_words() -> None:
    """The web view, the report and the CLI show words (services/reports/labels.py), never an
    API code: a class or event type added to the API needs its label."""
    from schemas.patients import EventType
    from services.reports.labels import DRUG_CLASS_LABELS, EVENT_LABELS

    assert set(DRUG_CLASS_LABELS) == set(get_args(DrugClass))
    assert set(get_args(EventType)) <= set(EVENT_LABELS)
    assert all("_" not in label for label in [*DRUG_CLASS_LABELS.values(), *EVENT_LABELS.values()])
