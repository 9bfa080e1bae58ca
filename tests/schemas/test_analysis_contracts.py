"""The analysis bodies are declared (schemas/analyses.py) and served as stored bytes: the empty
bodies served before anything is computed fit the same contracts, and OpenAPI names them."""

from __future__ import annotations

import pytest

from schemas.analyses import ClonesBody, MrdBody, TrendsBody
from services.analysis.router import EMPTY
from services.api.app import create_app


@pytest.mark.parametrize(
    ("kind", "contract"), [("mrd", MrdBody), ("trends", TrendsBody), ("clones", ClonesBody)]
)
def test_the_empty_bodies_fit_their_contracts(kind: str, contract: type) -> None:
    contract.model_validate({"patient_id": "P1", **EMPTY[kind]})


def test_openapi_declares_the_analysis_bodies() -> None:
    spec = create_app().openapi()
    for route, name in (("mrd", "MrdBody"), ("trends", "TrendsBody"), ("clones", "ClonesBody")):
        ok = spec["paths"][f"/v1/patients/{{patient_id}}/{route}"]["get"]["responses"]["200"]
        assert ok["content"]["application/json"]["schema"]["$ref"].endswith(f"/{name}")
        assert name in spec["components"]["schemas"]
