"""The audit trail and key management on the real stack: every route that reads or writes
patient data leaves an audit row, admins read their own site's trail with filters and cursor
pagination, PostgreSQL refuses to change or remove audit rows, and admins create, list, revoke
and rotate their own site's keys (over HTTP and with `ctdna keys rotate`)."""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import (
    Running,
    create_key,
    create_keys,
    ctdna,
    service_env,
    upload_panel,
    wait_job,
)
from tests.service.test_alignment_evidence import write_bam

pytestmark = [pytest.mark.queue, pytest.mark.postgres]

# Path parameters that name patient data: a route carrying one must write an audit row.
PATIENT_PARAMS = ("{patient_id}", "{sample_id}", "{job_id}")


@dataclass
class Stack:
    base: str
    env: dict[str, str]
    tmp: Path
    key_a: str
    admin_a: str
    admin_b: str

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )


@pytest.fixture(scope="module")
def stack(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("audit")
    env = service_env(
        tmp,
        CTDNA_DATABASE_URL=pg_url,
        CTDNA_BROKER_URL=redis_url,
        CTDNA_SWEEP_INTERVAL_SECONDS="1",
        CTDNA_JOB_RESEND_AFTER_SECONDS="3",
    )
    with Running() as running:
        running.worker(env, tmp, "--concurrency", "1", "--beat")
        (base,) = running.apis(tmp, env)
        key_a, admin_a, admin_b = create_keys(
            env,
            ("site-audit-a", "ingest,read"),
            ("site-audit-a", "admin"),
            ("site-audit-b", "admin"),
        )
        yield Stack(base=base, env=env, tmp=tmp, key_a=key_a, admin_a=admin_a, admin_b=admin_b)


def key_id_of(admin: httpx.Client, secret: str) -> str:
    keys = admin.get("/v1/keys").json()["items"]
    return next(k["id"] for k in keys if secret.startswith(k["prefix"]))


def audit_rows(admin: httpx.Client, **params: str) -> list[dict[str, object]]:
    response = admin.get("/v1/audit", params={"limit": "500", **params})
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


def test_every_patient_data_route_is_audited(stack: Stack) -> None:
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with stack.client(stack.key_a) as client, stack.client(stack.admin_a) as admin:
        assert client.post("/v1/patients", json={"patient_id": "P-aud"}).status_code == 201
        event = {"type": "surgery", "date": "2025-01-10"}
        assert client.post("/v1/patients/P-aud/events", json=event).status_code == 201
        accepted = upload_panel(client, stack.tmp, "P-aud", "S-aud-1")
        assert accepted.status_code == 202, accepted.text
        assert wait_job(client, accepted.json()["job_id"])["status"] == "succeeded"
        # every documented GET with patient data in its path, whoever added it
        values = {
            "{patient_id}": "P-aud",
            "{sample_id}": "S-aud-1",
            "{job_id}": accepted.json()["job_id"],
            "{plot}.{fmt}": "timeline.svg",
        }
        documented = [
            path
            for path, ops in client.get("/openapi.json").json()["paths"].items()
            if "get" in ops and path.startswith(("/v1/patients", "/v1/samples", "/v1/jobs"))
        ]
        for path in documented + [
            "/ui/patients",
            "/ui/patients/P-aud",
            "/ui/patients/P-aud/timeline.png",
        ]:
            url = path
            for param, value in values.items():
                url = url.replace(param, value)
            assert client.get(url).status_code == 200, url
        put = client.put("/v1/patients/P-aud/tracked-variants", json={"variants": []})
        assert put.status_code == 200, put.text
        recompute = client.post("/v1/patients/P-aud/recompute")
        assert recompute.status_code == 202, recompute.text
        bam, bai = write_bam(stack.tmp / "aud", "aud")
        with bam.open("rb") as alignment, bai.open("rb") as index:
            attached = client.put(
                "/v1/samples/S-aud-1/alignment",
                files={"alignment": (bam.name, alignment), "alignment_index": (bai.name, index)},
            )
        assert attached.status_code == 202, attached.text
        # the corrections: each is a write of patient data
        why = {"reason": "audit test"}
        patched = client.patch("/v1/samples/S-aud-1", json={"plasma_ml": 3.5, **why})
        assert patched.status_code == 200, patched.text
        (surgery,) = client.get("/v1/patients/P-aud").json()["events"]
        event_path = f"/v1/patients/P-aud/events/{surgery['id']}"
        assert client.patch(event_path, json={"date": "2025-01-11", **why}).status_code == 200
        assert client.request("DELETE", event_path, json=why).status_code == 204
        assert client.post("/v1/samples/S-aud-1/retract", json=why).status_code == 200

        key_a = key_id_of(admin, stack.key_a)
        rows = audit_rows(admin, key_id=key_a, since=started.isoformat())
        audited = {(r["method"], r["route"]) for r in rows}
        # every documented route with a patient, sample or job in its path, and the
        # collection routes, were called above and each left a row
        paths = admin.get("/openapi.json").json()["paths"]
        expected = {
            (method.upper(), path)
            for path, ops in paths.items()
            if any(p in path for p in PATIENT_PARAMS)
            and path.startswith(("/v1/patients", "/v1/samples", "/v1/jobs"))
            for method in ops
        } | {("GET", "/v1/patients"), ("POST", "/v1/patients"), ("POST", "/v1/samples")}
        expected |= {
            ("GET", "/ui/patients"),
            ("GET", "/ui/patients/{patient_id}"),
            ("GET", "/ui/patients/{patient_id}/timeline.png"),
        }
        assert expected <= audited, expected - audited

        by_route = {(r["method"], r["route"]): r for r in rows}
        job_row = by_route[("GET", "/v1/jobs/{job_id}")]
        assert (job_row["patient_id"], job_row["sample_id"]) == ("P-aud", "S-aud-1")
        upload_row = by_route[("POST", "/v1/samples")]
        assert (upload_row["patient_id"], upload_row["sample_id"]) == ("P-aud", "S-aud-1")
        assert all(r["key_id"] == key_a and r["client"] == "127.0.0.1" for r in rows)


def test_audit_filters_pagination_and_site_scope(stack: Stack) -> None:
    with stack.client(stack.key_a) as client, stack.client(stack.admin_a) as admin:
        assert client.post("/v1/patients", json={"patient_id": "P-pages"}).status_code == 201
        for _ in range(7):
            assert client.get("/v1/patients/P-pages").status_code == 200
        reads = {"patient_id": "P-pages", "route": "/v1/patients/{patient_id}"}
        everything = audit_rows(admin, **reads)
        assert len(everything) == 7 and {r["method"] for r in everything} == {"GET"}

        pages, cursor = [], None
        while True:
            body = admin.get(
                "/v1/audit",
                params={**reads, "limit": "3", **({"cursor": cursor} if cursor else {})},
            ).json()
            pages.append(body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert [len(p) for p in pages] == [3, 3, 1]
        ids = [r["id"] for page in pages for r in page]
        assert ids == sorted(ids, reverse=True) == [r["id"] for r in everything]

        created = audit_rows(admin, patient_id="P-pages", route="/v1/patients")
        assert [r["method"] for r in created] == ["POST"]
        # reading a patient's trail is itself on that patient's trail
        assert audit_rows(admin, patient_id="P-pages", route="/v1/audit")

        after_last = dt.datetime.fromisoformat(str(everything[0]["at"])) + dt.timedelta(
            microseconds=1
        )
        assert audit_rows(admin, **reads, since=after_last.isoformat()) == []
        assert len(audit_rows(admin, **reads, until=after_last.isoformat())) == 7
        assert len(audit_rows(admin, **reads, until=everything[0]["at"])) == 6
        # a timestamp without a zone is UTC
        naive = after_last.astimezone(dt.UTC).replace(tzinfo=None).isoformat()
        assert len(audit_rows(admin, **reads, until=naive)) == 7
        assert admin.get("/v1/audit", params={"cursor": "abc"}).status_code == 422

        # only admins read the trail, and only their own site's
        denied = client.get("/v1/audit")
        assert denied.status_code == 403
        assert denied.headers["content-type"].startswith("application/problem+json")
    with stack.client(stack.admin_b) as other:
        assert audit_rows(other, patient_id="P-pages") == []
        # B's trail holds its own look-ups of that id, nothing of site A's
        mine = audit_rows(other)
        assert {r["route"] for r in mine if r["patient_id"] == "P-pages"} == {"/v1/audit"}
        assert len({r["key_id"] for r in mine}) == 1


def test_refused_requests_for_patient_data_are_audited(stack: Stack, pg_url: str) -> None:
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    reader_secret = create_key(stack.env, "site-audit-a", "read")
    with (
        stack.client(stack.key_a) as client,
        stack.client(stack.admin_a) as admin,
        stack.client(stack.admin_b) as intruder,
        stack.client(reader_secret) as reader,
    ):
        assert client.post("/v1/patients", json={"patient_id": "P-deny"}).status_code == 201
        allowed = client.get("/v1/patients/P-deny")
        assert allowed.status_code == 200
        # another site's patient is a 404, and B's admin sees B's own probe on B's trail
        assert intruder.get("/v1/patients/P-deny").status_code == 404
        assert intruder.get("/v1/patients/P-deny/mrd").status_code == 404
        assert intruder.get("/ui/patients/P-deny").status_code == 404  # an HTML 404 page
        # a read-only key may not upload, nor read the trail
        assert upload_panel(reader, stack.tmp, "P-deny", "S-deny-1").status_code == 403
        assert reader.get("/v1/audit", params={"patient_id": "P-deny"}).status_code == 403
        # a path that is no route names no patient data: nothing to record
        assert client.get("/v1/patients/P-deny/nothing-here").status_code == 404
        no_key = httpx.get(f"{stack.base}/v1/patients/P-deny", timeout=30)
        assert no_key.status_code == 401
        reader_id = key_id_of(admin, reader_secret)
        assert admin.post(f"/v1/keys/{reader_id}/revoke").status_code == 200
        assert reader.get("/v1/patients/P-deny/trends").status_code == 401

        since = {"since": started.isoformat()}
        mine = audit_rows(admin, patient_id="P-deny", **since)
        assert {r["outcome"] for r in mine} == {"allowed", "denied"}
        granted = [r for r in mine if r["outcome"] == "allowed"]
        assert {(r["method"], r["route"], r["status_code"]) for r in granted} == {
            ("POST", "/v1/patients", 201),
            ("GET", "/v1/patients/{patient_id}", 200),
        }
        denied = audit_rows(admin, outcome="denied", key_id=reader_id, **since)
        assert sorted((r["method"], r["route"], r["status_code"]) for r in denied) == [
            ("GET", "/v1/audit", 403),
            ("GET", "/v1/patients/{patient_id}/trends", 401),  # revoked, still named
            ("POST", "/v1/samples", 403),
        ]
        assert all(r["client"] == "127.0.0.1" for r in denied)
        assert [r["patient_id"] for r in denied if r["route"] != "/v1/samples"] == ["P-deny"] * 2
        assert audit_rows(admin, status_code="403", key_id=reader_id, **since) == [
            r for r in denied if r["status_code"] == 403
        ]
        assert all(r["key_id"] != key_id_of(intruder, stack.admin_b) for r in mine)
        assert not audit_rows(admin, route="/v1/patients/{patient_id}/nothing-here")

        probes = audit_rows(intruder, outcome="denied", patient_id="P-deny", **since)
        assert sorted((r["route"], r["status_code"]) for r in probes) == [
            ("/ui/patients/{patient_id}", 404),
            ("/v1/patients/{patient_id}", 404),
            ("/v1/patients/{patient_id}/mrd", 404),
        ]
        assert audit_rows(intruder, outcome="allowed", route="/v1/patients/{patient_id}") == []
        assert admin.get("/v1/audit", params={"outcome": "maybe"}).status_code == 422

    # no key at all: no site and no key id, but the address and what was asked for
    conninfo = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo) as conn:
        anonymous = conn.execute(
            "SELECT site, key_id, method, route, patient_id, status_code, outcome, client "
            "FROM audit_log WHERE at >= %s AND key_id IS NULL",
            (started,),
        ).fetchall()
    assert anonymous == [
        (None, None, "GET", "/v1/patients/{patient_id}", "P-deny", 401, "denied", "127.0.0.1")
    ]


def test_audit_rows_cannot_be_changed_or_removed(stack: Stack, pg_url: str) -> None:
    with stack.client(stack.key_a) as client:
        client.get("/v1/patients")
    conninfo = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM audit_log").fetchone()
        for statement in (
            "UPDATE audit_log SET route = 'forged'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
        conn.execute(
            "INSERT INTO audit_log (at, site, key_id, method, route) "
            "VALUES (now(), 'site-audit-a', 'k', 'GET', '/v1/patients')"
        )
        after = conn.execute("SELECT count(*) FROM audit_log").fetchone()
    assert before is not None and after is not None and after[0] == before[0] + 1


def test_admin_manages_its_own_sites_keys(stack: Stack) -> None:
    with stack.client(stack.admin_a) as admin, stack.client(stack.admin_b) as other:
        created = admin.post("/v1/keys", json={"scopes": ["read"]})
        assert created.status_code == 201, created.text
        new = created.json()
        assert new["site"] == "site-audit-a" and new["scopes"] == ["read"]
        assert new["secret"].startswith(new["prefix"])
        listed = admin.get("/v1/keys").json()["items"]
        assert new["id"] in {k["id"] for k in listed}
        assert all("secret" not in k and k["site"] == "site-audit-a" for k in listed)
        assert new["id"] not in {k["id"] for k in other.get("/v1/keys").json()["items"]}
        assert admin.post("/v1/keys", json={"scopes": ["root"]}).status_code == 422
        assert admin.post("/v1/keys", json={"scopes": []}).status_code == 422

        with stack.client(new["secret"]) as reader:
            assert reader.get("/v1/patients").status_code == 200
            assert reader.post("/v1/patients", json={"patient_id": "P-no"}).status_code == 403
            assert reader.get("/v1/keys").status_code == 403

        # another site's key id is a 404, whatever the action
        for action in ("revoke", "rotate"):
            assert other.post(f"/v1/keys/{new['id']}/{action}").status_code == 404
        assert admin.post("/v1/keys/nope/rotate").status_code == 404

        rotated = admin.post(f"/v1/keys/{new['id']}/rotate")
        assert rotated.status_code == 200, rotated.text
        replacement = rotated.json()
        assert replacement["rotated_from"] == new["id"] and replacement["scopes"] == ["read"]
        with stack.client(new["secret"]) as old, stack.client(replacement["secret"]) as fresh:
            assert old.get("/v1/patients").status_code == 401
            assert fresh.get("/v1/patients").status_code == 200
        assert admin.post(f"/v1/keys/{new['id']}/rotate").status_code == 409

        revoked = admin.post(f"/v1/keys/{replacement['id']}/revoke")
        assert revoked.status_code == 200 and revoked.json()["revoked_at"]
        assert admin.post(f"/v1/keys/{replacement['id']}/revoke").status_code == 200
        with stack.client(replacement["secret"]) as gone:
            assert gone.get("/v1/patients").status_code == 401

        # key management is on the trail too
        routes = {r["route"] for r in audit_rows(admin, key_id=key_id_of(admin, stack.admin_a))}
        assert {"/v1/keys", "/v1/keys/{key_id}/rotate", "/v1/keys/{key_id}/revoke"} <= routes


def test_cli_rotates_a_key(stack: Stack) -> None:
    secret = create_key(stack.env, "site-audit-a", "read")
    with stack.client(stack.admin_a) as admin:
        key_id = key_id_of(admin, secret)
        out = ctdna(stack.env, "keys", "rotate", key_id)
        replacement = out.stdout.strip().splitlines()[-1]
        assert replacement.startswith("ctd_") and replacement != secret
        with stack.client(secret) as old, stack.client(replacement) as fresh:
            assert old.get("/v1/patients").status_code == 401
            assert fresh.get("/v1/patients").status_code == 200
        keys = {k["id"]: k for k in admin.get("/v1/keys").json()["items"]}
        assert keys[key_id]["revoked_at"] is not None
        assert [k for k in keys.values() if k["rotated_from"] == key_id]
    with pytest.raises(subprocess.CalledProcessError):
        ctdna(stack.env, "keys", "rotate", key_id)
