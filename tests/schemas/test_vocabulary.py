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


def test_api_receptor_vocabulary_is_the_science() -> None:
    """The receptor Literals of the API (literal for OpenAPI) and genomics.receptors."""
    from schemas import patients, receptors
    from services.genomics import receptors as science

    assert get_args(patients.Specimen) == science.SPECIMENS
    assert get_args(patients.Her2Ihc) == science.HER2_IHC
    assert get_args(patients.Her2Ish) == science.HER2_ISH
    for api, core in [
        (receptors.HormoneStatus, science.HormoneStatus),
        (receptors.Her2Category, science.Her2Category),
        (receptors.Subtype, science.Subtype),
    ]:
        assert get_args(api) == get_args(core)
