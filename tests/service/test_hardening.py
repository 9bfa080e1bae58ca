"""Hardening, round two (issue 18), over HTTP on the real stack (PostgreSQL, Redis, a worker,
API processes): limits before work, credentials that do not buy budget, secrets that are not
kept, inert exports, an audit trail without gaps, 4xx instead of 500 on bad input, sessions
that end, and no leftovers. Each test reproduces an item of the issue."""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import json
import re
import secrets
import select
import socket
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from tests.conftest import (
    PANEL_VCF,
    Process,
    Running,
    create_keys,
    free_port,
    fresh_database,
    panel_vcf,
    service_env,
    start_api,
    start_worker,
    upload_panel,
    wait_job,
)

pytestmark = [pytest.mark.queue, pytest.mark.postgres]

SITE = "site-hard"
SESSION_HOURS = 2


@dataclass
class Stack:
    base: str
    limited: str  # reads: 2/s, burst 10
    api_pid: int
    env: dict[str, str]
    tmp: Path
    pg_url: str
    key: str  # ingest, read
    reader: str  # read only
    ingestor: str  # ingest only
    admin: str

    def client(self, key: str | None = None, base: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=base or self.base, headers=headers, timeout=30)

    def sql(self, query: str, *params: object) -> list[tuple[object, ...]]:
        url = self.pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(url) as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stack(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("hardening")
    env = service_env(
        tmp,
        CTDNA_DATABASE_URL=pg_url,
        CTDNA_BROKER_URL=redis_url,
        CTDNA_SWEEP_INTERVAL_SECONDS="1",
        CTDNA_JOB_RESEND_AFTER_SECONDS="3",
        CTDNA_UI_SESSION_HOURS=str(SESSION_HOURS),
        CTDNA_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
    )
    limited_env = {
        **env,
        "CTDNA_RATE_LIMIT_READS_PER_SECOND": "2",
        "CTDNA_RATE_LIMIT_READS_BURST": "10",
    }
    with Running() as running:
        running.worker(env, tmp, "--concurrency", "1", "--beat")
        base, limited = running.apis(tmp, env, limited_env)
        api = next(p for p in running.processes if str(urlsplit(base).port) in str(p.log_path))
        key, reader, ingestor, admin = create_keys(
            env, (SITE, "ingest,read"), (SITE, "read"), (SITE, "ingest"), (SITE, "admin")
        )
        yield Stack(
            base=base,
            limited=limited,
            api_pid=api.popen.pid,
            env=env,
            tmp=tmp,
            pg_url=pg_url,
            key=key,
            reader=reader,
            ingestor=ingestor,
            admin=admin,
        )


def audit_rows(stack: Stack, route: str, *, since_id: int = 0) -> list[tuple[object, ...]]:
    """(site, key_id, status_code, outcome, patient_id) of the audit rows of a route."""
    return stack.sql(
        "SELECT site, key_id, status_code, outcome, patient_id FROM audit_log "
        "WHERE route = %s AND id > %s ORDER BY id",
        route,
        since_id,
    )


def last_audit_id(stack: Stack) -> int:
    return int(stack.sql("SELECT coalesce(max(id), 0) FROM audit_log")[0][0])  # type: ignore[arg-type]


# --- item 1: a million sample columns ----------------------------------------------------------


def test_a_million_sample_columns_end_in_a_clear_refusal_within_seconds(stack: Stack) -> None:
    names = "\t".join(f"S{i:07d}" for i in range(1_000_000))
    text = (
        "##fileformat=VCFv4.2\n##contig=<ID=chr3,length=198295559>\n"
        f"#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t{names}\n"
    )
    payload = gzip.compress(text.encode(), compresslevel=6)
    started = time.monotonic()
    with stack.client(stack.key) as client:
        response = client.post(
            "/v1/samples",
            data={
                "patient_id": "P-wide",
                "create_patient": "true",
                "sample_id": "S-wide",
                "collection_date": "2025-02-01",
                "sample_type": "plasma",
            },
            files={"file": ("wide.vcf.gz", payload)},
        )
        assert time.monotonic() - started < 10
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "1,000,000 sample columns" in response.json()["detail"]
        assert client.get("/v1/samples/S-wide").status_code == 404


# --- item 3: the key and scope before the body -------------------------------------------------


def written_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar in /proc/<pid>/io")


def send_upload(base: str, method: str, path: str, token: str, size: int) -> int:
    """Send a multipart upload of `size` bytes, a MiB at a time, until the server answers;
    returns the status code of the answer."""
    parts = urlsplit(base)
    boundary = "hardening-boundary"
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {size}\r\n\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.vcf"\r\n\r\n'
        "##fileformat=VCFv4.2\n"
    ).encode()
    chunk = b"#" * (1 << 20)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head)
        sent = len(head)
        while sent < size:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk[: size - sent])
            except OSError:
                break
            sent += len(chunk)
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/samples"), ("PUT", "/v1/samples/S-any/alignment")],
)
def test_an_upload_is_refused_on_its_key_or_scope_before_its_body_is_read(
    stack: Stack, method: str, path: str
) -> None:
    size = 48 * 1024**2
    start_id = last_audit_id(stack)
    for token, status in (("ctd_nope", 401), (stack.reader, 403)):
        before = written_bytes(stack.api_pid)
        assert send_upload(stack.base, method, path, token, size) == status
        assert written_bytes(stack.api_pid) - before < 4 * 1024**2, "the body was spooled"
    route = "/v1/samples" if method == "POST" else "/v1/samples/{sample_id}/alignment"
    statuses = [row[2] for row in audit_rows(stack, route, since_id=start_id)]
    assert statuses == [401, 403], statuses


# --- item 4: unknown credentials spend the address's budget ------------------------------------


def test_random_tokens_and_cookies_spend_the_client_address_budget(stack: Stack) -> None:
    start_id = last_audit_id(stack)
    codes = []
    with httpx.Client(base_url=stack.limited, timeout=30) as client:
        for _ in range(30):
            token = "ctd_" + secrets.token_urlsafe(32)
            codes.append(
                client.get("/v1/patients", headers={"Authorization": f"Bearer {token}"}).status_code
            )
        for _ in range(30):
            cookie = f"ctdna_session={secrets.token_hex(16)}.{secrets.token_hex(32)}"
            codes.append(client.get("/ui/patients", headers={"Cookie": cookie}).status_code)
    assert codes.count(429) >= 30, codes
    assert set(codes) <= {401, 303, 429}, codes
    refused = stack.sql("SELECT count(*) FROM audit_log WHERE id > %s AND site IS NULL", start_id)[
        0
    ][0]
    assert int(refused) <= 30, refused  # type: ignore[call-overload]


# --- item 7: secrets are never stored for replay ------------------------------------------------


def test_a_replayed_secret_answer_returns_no_secret_and_none_is_kept(stack: Stack) -> None:
    with stack.client(stack.admin) as admin:
        hook = {"url": f"http://127.0.0.1:{free_port()}/hook", "events": ["sample.failed"]}
        requests = [("/v1/keys", {"scopes": ["read"]}), ("/v1/webhook-endpoints", hook)]
        created = []
        for path, body in requests:
            key = f"idem-{secrets.token_hex(6)}"
            first = admin.post(path, json=body, headers={"Idempotency-Key": key})
            assert first.status_code == 201, first.text
            secret = first.json()["secret"]
            again = admin.post(path, json=body, headers={"Idempotency-Key": key})
            assert secret not in again.text
            assert again.status_code == 409, again.text
            assert again.headers["content-type"].startswith("application/problem+json")
            assert again.json()["resource"]["id"] == first.json()["id"]
            assert "secret" not in again.json()["resource"]
            created.append((first.json()["id"], secret))
        endpoint_id = created[1][0]
        key = f"idem-{secrets.token_hex(6)}"
        rotated = admin.post(
            f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret", headers={"Idempotency-Key": key}
        )
        assert rotated.status_code == 200, rotated.text
        again = admin.post(
            f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret", headers={"Idempotency-Key": key}
        )
        assert again.status_code == 409 and rotated.json()["secret"] not in again.text
        created.append((endpoint_id, rotated.json()["secret"]))
    stored = b"".join(
        bytes(row[0] or b"") for row in stack.sql("SELECT response_body FROM idempotency_keys")
    )
    for _, secret in created:
        assert secret.encode() not in stored


# --- item 8: exports are inert ------------------------------------------------------------------

FORMULA = '=HYPERLINK("http://evil.example")'
LONG_SYMBOL = "AVERYLONGGENESYMBOLTHATNOHGNCLISTHAS_42"


def poisoned_vcf(path: Path) -> Path:
    """The panel VCF as tissue, annotated by a CSQ field whose gene symbols are a formula and a
    40-character name."""
    lines = PANEL_VCF.read_text().splitlines()
    header = [line for line in lines if line.startswith("##")]
    header.append(
        '##INFO=<ID=CSQ,Number=.,Type=String,Description="Consequence annotations from Ensembl '
        'VEP. Format: Allele|Consequence|SYMBOL|HGVSp">'
    )
    body = []
    for line in lines:
        if line.startswith("#CHROM"):
            body.append(line)
        elif line.startswith("chr6\t152098788"):
            columns = line.split("\t")
            columns[7] += f";CSQ=C|missense_variant|{FORMULA}|"
            body.append("\t".join(columns))
        elif line.startswith("chr12\t25245350"):
            columns = line.split("\t")
            columns[7] += f";CSQ=T|missense_variant|{LONG_SYMBOL}|"
            body.append("\t".join(columns))
        elif not line.startswith("#"):
            body.append(line)
    path.write_text("\n".join(header + body) + "\n")
    return path


def live_cells(rows: list[list[str]]) -> list[str]:
    """Cells a spreadsheet would evaluate: starting with = + - @ or a tab/CR (a number is fine)."""
    number = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
    return [
        cell
        for row in rows
        for cell in row
        if cell[:1] in ("=", "+", "-", "@", "\t", "\r") and not number.fullmatch(cell)
    ]


def test_exports_neutralise_formulas_and_ingest_keeps_gene_symbols_sane(stack: Stack) -> None:
    vcf = poisoned_vcf(stack.tmp / "poisoned.vcf")
    with stack.client(stack.key) as client:
        assert client.post("/v1/patients", json={"patient_id": "P-formula"}).status_code == 201
        event = client.post(
            "/v1/patients/P-formula/events",
            json={
                "type": "therapy_start",
                "date": "2025-01-10",
                "drug": FORMULA,
                "drug_class": "other",
            },
        )
        assert event.status_code == 201, event.text
        with vcf.open("rb") as fh:
            accepted = client.post(
                "/v1/samples",
                data={
                    "patient_id": "P-formula",
                    "sample_id": "S-formula",
                    "collection_date": "2025-01-05",
                    "sample_type": "tissue",
                    "genome_build": "GRCh38",
                },
                files={"file": (vcf.name, fh)},
            )
        assert accepted.status_code == 202, accepted.text
        job = wait_job(client, accepted.json()["job_id"])
        assert job["status"] == "succeeded", job
        genes = {
            (v["chrom"], v["pos"]): v["gene"]
            for v in client.get("/v1/samples/S-formula/variants").json()["items"]
        }
        assert genes[("chr6", 152098788)] == "ESR1"  # the file's "symbol" was not one
        assert genes[("chr12", 25245350)] is None

        bad_gene = client.put(
            "/v1/patients/P-formula/tracked-variants",
            json={"variants": [{"locus_key": "chr6:152098788:A>C", "gene": FORMULA}]},
        )
        assert bad_gene.status_code == 422, bad_gene.text

        tables: dict[str, list[list[str]]] = {}
        for name, url in (
            ("variants.csv", "/v1/patients/P-formula/export/variants.csv"),
            ("patients.csv", "/v1/exports/patients.csv"),
        ):
            response = client.get(url)
            assert response.status_code == 200, response.text
            tables[name] = list(csv.reader(io.StringIO(response.text)))
        study = client.get("/v1/exports/cbioportal")
        assert study.status_code == 200
        with zipfile.ZipFile(io.BytesIO(study.content)) as archive:
            for name in archive.namelist():
                if name.endswith(".txt"):
                    text = archive.read(name).decode()
                    tables[name] = [line.split("\t") for line in text.splitlines()]
    live = {name: live_cells(rows) for name, rows in tables.items()}
    assert not any(live.values()), live
    drug = "'" + FORMULA.lower()  # drug names are stored lower-case
    kept = {name for name, rows in tables.items() if any(drug in row for row in rows)}
    assert {"patients.csv", "data_timeline_treatment.txt"} <= {n.split("/")[-1] for n in kept}


# --- item 10: audit without gaps -----------------------------------------------------------------


def test_refusals_of_exports_and_of_the_web_view_are_audited(stack: Stack) -> None:
    start_id = last_audit_id(stack)
    with httpx.Client(base_url=stack.base, timeout=30, follow_redirects=False) as anonymous:
        assert anonymous.get("/v1/exports/patients.csv").status_code == 401
        assert anonymous.get("/v1/exports/cbioportal").status_code == 401
        page = anonymous.get("/ui/patients/P-formula")
        assert page.status_code == 303
    with stack.client(stack.ingestor) as ingestor:
        assert ingestor.get("/v1/exports/patients.csv").status_code == 403
    rows = {
        (route, status)
        for route, status in stack.sql(
            "SELECT route, status_code FROM audit_log WHERE id > %s AND outcome = 'denied'",
            start_id,
        )
    }
    assert ("/v1/exports/patients.csv", 401) in rows
    assert ("/v1/exports/cbioportal", 401) in rows
    assert ("/v1/exports/patients.csv", 403) in rows
    assert ("/ui/patients/{patient_id}", 303) in rows
    named = stack.sql(
        "SELECT patient_id FROM audit_log WHERE id > %s AND route = '/ui/patients/{patient_id}'",
        start_id,
    )
    assert named == [("P-formula",)]


def test_webhook_endpoint_management_and_delivery_reads_are_audited(stack: Stack) -> None:
    start_id = last_audit_id(stack)
    with stack.client(stack.admin) as admin:
        endpoint = admin.post(
            "/v1/webhook-endpoints",
            json={"url": f"http://127.0.0.1:{free_port()}/hook", "events": ["sample.failed"]},
        ).json()
        path = f"/v1/webhook-endpoints/{endpoint['id']}"
        other = f"http://127.0.0.1:{free_port()}/other"
        assert admin.patch(path, json={"url": other}).status_code == 200
        assert admin.post(f"{path}/rotate-secret").status_code == 200
        assert admin.get(f"{path}/deliveries").status_code == 200
        assert admin.get(path).status_code == 200
        assert admin.delete(path).status_code == 204
    routes = [
        (route, method)
        for route, method in stack.sql(
            "SELECT route, method FROM audit_log WHERE id > %s AND outcome = 'allowed' "
            "AND route LIKE '/v1/webhook-endpoints%%' ORDER BY id",
            start_id,
        )
    ]
    assert routes == [
        ("/v1/webhook-endpoints", "POST"),
        ("/v1/webhook-endpoints/{endpoint_id}", "PATCH"),
        ("/v1/webhook-endpoints/{endpoint_id}/rotate-secret", "POST"),
        ("/v1/webhook-endpoints/{endpoint_id}/deliveries", "GET"),
        ("/v1/webhook-endpoints/{endpoint_id}", "GET"),
        ("/v1/webhook-endpoints/{endpoint_id}", "DELETE"),
    ]


# --- item 11: bad input is a 4xx ----------------------------------------------------------------


def cursor(*values: object) -> str:
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_nul_bytes_huge_cursors_and_odd_request_ids_are_4xx_not_500(stack: Stack) -> None:
    start_id = last_audit_id(stack)
    with stack.client(stack.admin) as admin, httpx.Client(base_url=stack.base) as anonymous:
        for client in (admin, anonymous):
            for url in (
                "/v1/patients/P%00X",
                "/v1/samples/S%00X/variants",
                "/v1/jobs/J%00",
                "/v1/patients?cursor=%00",
                "/v1/audit?patient_id=P%00",
            ):
                response = client.get(url)
                assert response.status_code in (400, 401, 404, 422), (url, response.text)
                assert response.headers["content-type"].startswith("application/problem+json")
        for listing, value in (
            ("/v1/audit", cursor("audit", 2**70)),
            ("/v1/patients", cursor("patients", "P\x00X")),
        ):
            response = admin.get(listing, params={"cursor": value})
            assert response.status_code == 422, response.text
        assert admin.post("/v1/patients", json={"patient_id": "P-nul"}).status_code == 201
        for body in (
            {"type": "therapy_start", "date": "2025-01-01", "drug": "letro\x00zole"},
            {"type": "surgery", "date": "2025-01-01", "note": "\x00"},
        ):
            response = admin.post("/v1/patients/P-nul/events", json=body)
            assert response.status_code == 422, response.text
        odd = admin.get("/healthz", headers={"X-Request-Id": b"\xff\xfe"})
        assert odd.status_code == 200
        assert re.fullmatch(r"[0-9a-f]{32}", odd.headers["x-request-id"])
        kept = admin.get("/healthz", headers={"X-Request-Id": "trace-1.2_3"})
        assert kept.headers["x-request-id"] == "trace-1.2_3"
    denied = stack.sql("SELECT count(*) FROM audit_log WHERE id > %s", start_id)[0][0]
    assert int(denied) > 0  # type: ignore[call-overload]


# --- item 12: sessions ---------------------------------------------------------------------------


def login(client: httpx.Client, key: str, **headers: str) -> httpx.Response:
    form = client.get("/ui/login")
    assert form.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None, "the sign-in form carries a CSRF token"
    return client.post(
        "/ui/login",
        data={"api_key": key, "next": "/ui/patients", "csrf_token": token.group(1)},
        headers=headers,
    )


def test_logout_ends_the_session_and_the_cookie_is_secure_and_bounded(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base, timeout=30, follow_redirects=False) as browser:
        signed_in = login(browser, stack.reader)
        assert signed_in.status_code == 303, signed_in.text
        cookie = signed_in.headers["set-cookie"]
        assert f"Max-Age={SESSION_HOURS * 3600}" in cookie
        session = browser.cookies["ctdna_session"]
        assert browser.get("/ui/patients").status_code == 200
        page = browser.get("/ui/patients").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None, "the sign-out form carries a CSRF token"
        assert browser.post("/ui/logout").status_code == 403  # no token: refused
        assert browser.post("/ui/logout", data={"csrf_token": token.group(1)}).status_code == 303
    with httpx.Client(base_url=stack.base, timeout=30, follow_redirects=False) as replay:
        replay.cookies.set("ctdna_session", session)
        assert replay.get("/ui/patients").status_code == 303, "the ended session still reads"
    with httpx.Client(base_url=stack.base, timeout=30, follow_redirects=False) as proxied:
        # Behind a TLS proxy the API sees plain http on another host name: still Secure.
        behind = login(proxied, stack.reader, Host="ctdna.example.org")
        assert behind.status_code == 303
        assert "secure" in behind.headers["set-cookie"].lower()


def test_sign_in_refuses_a_request_without_its_csrf_token(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base, timeout=30, follow_redirects=False) as browser:
        forged = browser.post("/ui/login", data={"api_key": stack.reader, "next": "/ui/patients"})
        assert forged.status_code == 403
        assert "ctdna_session" not in browser.cookies
        cross_site = login(browser, stack.reader, Origin="https://evil.example")
        assert cross_site.status_code == 403
        assert "ctdna_session" not in browser.cookies


# --- item 13: no leftovers -----------------------------------------------------------------------


def test_a_conflicting_upload_leaves_no_file_behind(stack: Stack) -> None:
    with stack.client(stack.key) as client:
        first = upload_panel(client, stack.tmp, "P-left", "S-left")
        assert first.status_code == 202
        other = panel_vcf(stack.tmp, "S-left-other")
        digest = hashlib.sha256(other.read_bytes()).hexdigest()
        with other.open("rb") as fh:
            clash = client.post(
                "/v1/samples",
                data={
                    "patient_id": "P-left",
                    "sample_id": "S-left",
                    "collection_date": "2025-02-01",
                    "sample_type": "plasma",
                },
                files={"file": (other.name, fh)},
            )
    assert clash.status_code == 409, clash.text
    uploads = stack.tmp / "uploads"
    assert not (uploads / digest[:2] / digest).exists()
    assert not list((uploads / "tmp").glob("*"))


def test_the_embedded_sweep_runs_when_the_data_directory_does_not_exist_yet(
    redis_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "not" / "yet"
    # A database and a Redis database of this test alone, and an API whose broker is down:
    # only the worker's embedded sweep can get the job to it.
    worker_broker = redis_url.rsplit("/", 1)[0] + "/15"  # the redis_url fixture takes 1 to 14
    with fresh_database() as database:
        worker_env = service_env(
            data_dir,
            CTDNA_DATABASE_URL=database,
            CTDNA_BROKER_URL=worker_broker,
            CTDNA_SWEEP_INTERVAL_SECONDS="0.5",
            CTDNA_JOB_RESEND_AFTER_SECONDS="1",
        )
        api_env = {**worker_env, "CTDNA_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
        worker: Process = start_worker(worker_env, tmp_path, "--concurrency", "1", "--beat")
        api, base = start_api(api_env, tmp_path, "--no-worker")
        try:
            (key,) = create_keys(api_env, ("site-sweep", "ingest,read"))
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
                accepted = upload_panel(client, tmp_path, "P-sweep", "S-sweep")
                assert accepted.status_code == 202, accepted.text
                job = wait_job(client, accepted.json()["job_id"], timeout=60)
            assert job["status"] == "succeeded", (job, worker.output()[-3000:])
        finally:
            api.stop()
            worker.stop()
