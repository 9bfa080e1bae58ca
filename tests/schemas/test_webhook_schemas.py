"""The exported JSON Schemas of the webhook payloads are the models' own (run `ctdna schemas`
after changing a payload model; a breaking change needs a new version, e.g. ...V2)."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.webhooks import json_schemas

EXPORTED = Path(__file__).resolve().parents[2] / "schemas" / "json"


def test_exported_schemas_match_the_models() -> None:
    current = json_schemas()
    assert sorted(p.name for p in EXPORTED.glob("*.json")) == sorted(current)
    for name, schema in current.items():
        assert json.loads((EXPORTED / name).read_text()) == schema, name


def test_payloads_refuse_unknown_fields() -> None:
    for schema in json_schemas().values():
        assert schema.get("additionalProperties") is False
