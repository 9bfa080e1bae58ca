"""The API's drug-class Literal (it must be literal for OpenAPI) and the scientific core's
vocabulary are written twice; they must not drift apart."""

from __future__ import annotations

from typing import get_args

from schemas.patients import DrugClass
from services.genomics.therapy import DRUG_CLASSES


def test_api_drug_classes_are_the_therapy_vocabulary() -> None:
    assert set(get_args(DrugClass)) == set(DRUG_CLASSES)
