"""Cursor pagination of every list, on the real stack (PostgreSQL, Redis, a Celery worker, the
API as a subprocess): walking the pages returns every row exactly once, also while rows are
being inserted, and a cursor that is not one we handed out is a 422 problem+json."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Running, create_keys, free_port, service_env, upload_panel, wait_job

pytestmark = [pytest.mark.queue, pytest.mark.postgres]


@dataclass
class Stack:
    base: str
    tmp: Path
    key: str
    admin: str
    endpoint_id: str
    event_id: str
    sample_id: str

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )


@pytest.fixture(scope="module")
def stack(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("pages")
    env = service_env(
        tmp,
        CTDNA_DATABASE_URL=pg_url,
        CTDNA_BROKER_URL=redis_url,
        CTDNA_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        CTDNA_SWEEP_INTERVAL_SECONDS="1",
        CTDNA_JOB_RESEND_AFTER_SECONDS="3",
        CTDNA_RATE_LIMIT_READS_PER_SECOND="0",
    )
    with Running() as running:
        running.worker(env, tmp, "--concurrency", "1", "--beat")
        (base,) = running.apis(tmp, env)
        key, admin = create_keys(env, ("site-pages", "ingest,read"), ("site-pages", "admin"))
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=30
        ) as client:
            # Nobody listens there: every delivery stays on record, retried.
            hook = {"url": f"http://127.0.0.1:{free_port()}/hook", "events": ["sample.processed"]}
            endpoints = [client.post("/v1/webhook-endpoints", json=hook) for _ in range(5)]
            assert all(e.status_code == 201 for e in endpoints), endpoints[-1].text
            for i in range(4):
                assert client.post("/v1/keys", json={"scopes": ["read"]}).status_code == 201, i
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            jobs = [
                upload_panel(client, tmp, "P-pages-0", f"S-pages-{i}").json()["job_id"]
                for i in range(3)
            ]
            assert all(wait_job(client, job)["status"] == "succeeded" for job in jobs)
            for name in ("P-pages-a", "P-pages-b"):
                assert client.post("/v1/patients", json={"patient_id": name}).status_code == 201
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=30
        ) as client:
            first = endpoints[0].json()["id"]
            deliveries = client.get(f"/v1/webhook-endpoints/{first}/deliveries").json()["items"]
            assert len(deliveries) == 3, deliveries
        yield Stack(
            base=base,
            tmp=tmp,
            key=key,
            admin=admin,
            endpoint_id=first,
            event_id=deliveries[0]["event_id"],
            sample_id="S-pages-0",
        )


def walk(
    client: httpx.Client, url: str, limit: int, **params: str
) -> tuple[list[dict[str, Any]], int]:
    """Every item of a list, following next_cursor; and the number of pages."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        response = client.get(url, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= limit
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        assert pages < 1000, "the walk does not end"


def row_id(item: dict[str, Any]) -> str:
    for field in ("id", "patient_id", "locus_key"):
        if field in item:
            return str(item[field])
    raise AssertionError(item)


def lists(stack: Stack) -> list[tuple[str, str]]:
    """(key, url) of every list of the API."""
    return [
        (stack.key, "/v1/patients"),
        (stack.key, f"/v1/samples/{stack.sample_id}/variants"),
        (stack.admin, "/v1/keys"),
        (stack.admin, "/v1/webhook-endpoints"),
        (stack.admin, f"/v1/webhook-endpoints/{stack.endpoint_id}/deliveries"),
        (stack.admin, f"/v1/webhook-events/{stack.event_id}/deliveries"),
        (stack.admin, "/v1/audit"),
    ]


def test_every_list_walks_page_by_page_to_the_same_rows(stack: Stack) -> None:
    with stack.client(stack.key) as client:
        for i in range(1, 8):
            assert (
                client.post("/v1/patients", json={"patient_id": f"P-pages-{i}"}).status_code == 201
            )
    for key, url in lists(stack):
        with stack.client(key) as client:
            # the audit trail grows with every read of it: walk a fixed slice of it
            params = {"route": "/v1/patients"} if url == "/v1/audit" else {}
            response = client.get(url, params={**params, "limit": "500"})
            assert response.status_code == 200, (url, response.text)
            whole = response.json()
            assert whole["next_cursor"] is None, url
            items, pages = walk(client, url, 2, **params)
            ids = [row_id(item) for item in items]
            assert len(whole["items"]) >= 3, url  # at least two pages of two
            assert pages == (len(whole["items"]) + 1) // 2, url
            assert len(ids) == len(set(ids)), url
            assert ids == [row_id(item) for item in whole["items"]], url


def test_walking_while_rows_are_inserted_sees_every_older_row_once(stack: Stack) -> None:
    with stack.client(stack.key) as client:
        for i in range(30):
            created = client.post("/v1/patients", json={"patient_id": f"P-walk-{i:03d}-m"})
            assert created.status_code == 201
    with stack.client(stack.key) as client, stack.client(stack.admin) as admin:
        before_patients = {p["patient_id"] for p in walk(client, "/v1/patients", 500)[0]}
        before_audit = {r["id"] for r in walk(admin, "/v1/audit", 500)[0]}
    stop, started = threading.Event(), threading.Event()
    inserted: list[str] = []

    def insert() -> None:
        # ids sorting before, between and after the pages being walked
        with stack.client(stack.key) as writer:
            i = 0
            while not stop.is_set() and i < 200:
                for name in (f"P-walk-{i:03d}-a", f"P-walk-{i:03d}-z", f"P-{i:03d}"):
                    assert writer.post("/v1/patients", json={"patient_id": name}).status_code == 201
                    inserted.append(name)
                    started.set()
                i += 1
        started.set()

    writer = threading.Thread(target=insert)
    writer.start()
    started.wait(timeout=30)
    try:
        with stack.client(stack.key) as client, stack.client(stack.admin) as admin:
            patients, patient_pages = walk(client, "/v1/patients", 3)
            audit, audit_pages = walk(admin, "/v1/audit", 7)
    finally:
        stop.set()
        writer.join()
    assert patient_pages > 10 and audit_pages > 10
    assert inserted, "nothing was inserted during the walk"

    seen = [p["patient_id"] for p in patients]
    assert len(seen) == len(set(seen))
    assert before_patients <= set(seen)
    assert set(seen) <= before_patients | set(inserted)
    assert seen == sorted(seen)

    ids = [r["id"] for r in audit]
    assert len(ids) == len(set(ids))
    assert before_audit <= set(ids)
    assert ids == sorted(ids, reverse=True)


def tampered(cursor: str) -> list[str]:
    raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))

    def encode(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return [
        "abc",
        cursor[:-3],
        cursor + "!",
        cursor[::-1],
        encode(["another-list", *raw[1:]]),
        encode([raw[0], *raw[1:], 1]),
        encode([raw[0], *([{"x": 1}] * (len(raw) - 1))]),
        encode({"not": "a list"}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        base64.urlsafe_b64encode(b"[" * 3000).decode(),  # deeper than the JSON decoder goes
        "é" * 10,
    ]


def test_a_cursor_we_did_not_hand_out_is_a_problem(stack: Stack) -> None:
    for key, url in lists(stack):
        with stack.client(key) as client:
            first = client.get(url, params={"limit": "1"}).json()
            assert first["next_cursor"], url
            for bad in tampered(first["next_cursor"]):
                response = client.get(url, params={"limit": "1", "cursor": bad})
                assert response.status_code == 422, (url, bad, response.text)
                assert response.headers["content-type"].startswith("application/problem+json")
                assert response.json()["status"] == 422
            assert client.get(url, params={"limit": "0"}).status_code == 422
    # one list's cursor means nothing to another
    with stack.client(stack.admin) as admin:
        keys_cursor = admin.get("/v1/keys", params={"limit": "1"}).json()["next_cursor"]
        wrong = admin.get("/v1/webhook-endpoints", params={"limit": "1", "cursor": keys_cursor})
        assert wrong.status_code == 422
