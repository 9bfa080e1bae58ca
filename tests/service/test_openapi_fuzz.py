"""Schemathesis against the OpenAPI document of a running API (real PostgreSQL, Redis and a
worker): every operation gets generated requests, valid and invalid, with a valid admin key,
on known ids of seeded data and on random ones. No answer may be a server error (5xx).

Bounded: a fixed number of examples per operation, derandomised (the same requests on every
run, so CI is reproducible), well under two minutes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import Running, create_keys, service_env, upload_panel, wait_job

pytestmark = [pytest.mark.queue, pytest.mark.postgres]

# (generation mode, use the seeded ids, examples per operation)
ROUNDS = (
    (GenerationMode.POSITIVE, True, 10),
    (GenerationMode.POSITIVE, False, 6),
    (GenerationMode.NEGATIVE, False, 6),
)


@dataclass
class Seeded:
    base: str
    key: str
    known: dict[str, str]


@pytest.fixture(scope="module")
def seeded(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Seeded]:
    tmp = tmp_path_factory.mktemp("fuzz")
    env = service_env(
        tmp,
        CTDNA_DATABASE_URL=pg_url,
        CTDNA_BROKER_URL=redis_url,
        CTDNA_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        CTDNA_RATE_LIMIT_READS_PER_SECOND="0",
        CTDNA_RATE_LIMIT_UPLOADS_PER_SECOND="0",
        CTDNA_SWEEP_INTERVAL_SECONDS="1",
        CTDNA_JOB_RESEND_AFTER_SECONDS="3",
    )
    with Running() as running:
        running.worker(env, tmp, "--concurrency", "1", "--beat")
        (base,) = running.apis(tmp, env)
        yield _seed(env, base, tmp)


def _seed(env: dict[str, str], base: str, tmp: Path) -> Seeded:
    # and a throwaway key for the key routes: the fuzzer may revoke or rotate it
    key, spare = create_keys(env, ("site-fuzz", "admin"), ("site-fuzz", "read"))
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        assert client.post("/v1/patients", json={"patient_id": "P-fuzz"}).status_code == 201
        event = {"type": "surgery", "date": "2025-01-05"}
        assert client.post("/v1/patients/P-fuzz/events", json=event).status_code == 201
        accepted = upload_panel(client, tmp, "P-fuzz", "S-fuzz")
        assert wait_job(client, accepted.json()["job_id"])["status"] == "succeeded"
        endpoint = client.post(
            "/v1/webhook-endpoints",
            json={"url": "http://127.0.0.1:9/hook", "events": ["sample.processed"]},
        ).json()
        spare_id = next(
            k["id"] for k in client.get("/v1/keys").json()["items"] if spare.startswith(k["prefix"])
        )
    known = {
        "patient_id": "P-fuzz",
        "sample_id": "S-fuzz",
        "job_id": accepted.json()["job_id"],
        "endpoint_id": endpoint["id"],
        "key_id": spare_id,
        "fmt": "svg",
    }
    return Seeded(base=base, key=key, known=known)


def test_no_operation_answers_a_server_error(seeded: Seeded) -> None:
    schema = schemathesis.openapi.from_url(f"{seeded.base}/openapi.json")
    headers = {"Authorization": f"Bearer {seeded.key}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        names = {p.name for p in operation.path_parameters}
        for mode, use_known, examples in ROUNDS:
            if use_known and not names:
                continue
            fixed = {n: seeded.known[n] for n in names if n in seeded.known} if use_known else None
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)

            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: schemathesis.Case) -> None:
                response = case.call(base_url=seeded.base, headers=headers, timeout=30)
                if response.status_code >= 500:
                    failures.append(
                        f"{response.status_code} {case.method} {case.formatted_path} "
                        f"query={case.query} body={str(case.body)[:200]}: {response.text[:300]}"
                    )

            try:
                run()
            except Unsatisfiable:
                # nothing to make invalid (an operation without parameters or body)
                assert mode is GenerationMode.NEGATIVE, operation.label
    assert operations >= 25
    assert not failures, "\n".join(failures[:20])
    # the fuzzing did not take the API down
    assert httpx.get(f"{seeded.base}/readyz", timeout=10).status_code == 200
