"""Webhooks through the real path: an event row written with the change that caused it, a
Celery worker delivering it signed (Standard Webhooks) to a real receiver process on
127.0.0.1 that verifies the signature with the standardwebhooks library."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    Receiver,
    create_key,
    service_env,
    start_api,
    start_receiver,
    start_worker,
    wait_job,
)

pytestmark = [pytest.mark.queue, pytest.mark.postgres]


@dataclass
class Env:
    base: str
    admin_key: str
    receiver: Receiver

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, timeout=30, headers={"Authorization": f"Bearer {self.admin_key}"}
        )


@pytest.fixture(scope="module")
def env(pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("webhooks")
    receiver = start_receiver(tmp)
    environment = service_env(
        tmp,
        CTDNA_DATABASE_URL=pg_url,
        CTDNA_BROKER_URL=redis_url,
        CTDNA_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        CTDNA_WEBHOOK_RETRY_SCALE="0.02",
        CTDNA_SWEEP_INTERVAL_SECONDS="1",
        CTDNA_JOB_RESEND_AFTER_SECONDS="2",
    )
    worker = start_worker(environment, tmp, "--concurrency", "2", "--beat")
    api, base = start_api(environment, tmp, "--no-worker")
    yield Env(
        base=base,
        admin_key=create_key(environment, "site-hooks", "ingest,read,admin"),
        receiver=receiver,
    )
    api.stop()
    worker.stop()
    receiver.process.stop()


BAD_POS_VCF = Path(__file__).resolve().parents[1] / "data" / "vcf" / "bad_pos_line.vcf"


def wait_for(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def bad_upload(client: httpx.Client, tmp_path: Path, sample_id: str) -> str:
    # A VCF by its first line (so the upload is taken), wrong further in: the job fails. The
    # sample id in a header line makes each file's bytes its own.
    good_start, rest = BAD_POS_VCF.read_bytes().split(b"\n", 1)
    path = tmp_path / f"{sample_id}.vcf"
    path.write_bytes(good_start + f"\n##ctdna_test={sample_id}\n".encode() + rest)
    response = client.post(
        "/v1/samples",
        data={
            "patient_id": "P-hook",
            "create_patient": "true",
            "sample_id": sample_id,
            "sample_type": "plasma",
            "collection_date": "2025-04-01",
            "genome_build": "GRCh38",
        },
        files={"file": (path.name, path.read_bytes())},
    )
    assert response.status_code == 202, response.text
    job = wait_job(client, response.json()["job_id"])
    assert job["status"] == "failed"
    return sample_id


def make_endpoint(client: httpx.Client, receiver: Receiver, events: list[str]) -> dict[str, str]:
    created = client.post("/v1/webhook-endpoints", json={"url": receiver.url, "events": events})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["secret"].startswith("whsec_")
    receiver.set(secret=body["secret"], mode="ok")
    return body  # type: ignore[no-any-return]


def events_for(receiver: Receiver, sample_id: str) -> list[dict[str, object]]:
    return [r for r in receiver.seen() if r["body"]["data"].get("sample_id") == sample_id]  # type: ignore[index,union-attr]


def test_failed_sample_is_delivered_once_and_verified(env: Env, tmp_path: Path) -> None:
    with env.client() as client:
        endpoint = make_endpoint(client, env.receiver, ["sample.failed"])
        sample_id = bad_upload(client, tmp_path, "S-hook-1")
        wait_for(lambda: len(events_for(env.receiver, sample_id)) == 1)
        time.sleep(1.5)  # a second copy, if any, would arrive by now
        got = events_for(env.receiver, sample_id)
        assert len(got) == 1 and got[0]["verified"] is True
        assert got[0]["body"]["type"] == "sample.failed"  # type: ignore[index]
        assert sample_id + ".vcf" in got[0]["body"]["data"]["error"]  # type: ignore[index]
        deliveries = client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries").json()
        mine = [d for d in deliveries["items"] if d["event_id"] == got[0]["webhook_id"]]
        assert mine and mine[0]["status"] == "succeeded"
        assert mine[0]["attempt_log"][0]["status_code"] == 200
        client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")


def test_receiver_down_then_up_gets_every_event_once(env: Env, tmp_path: Path) -> None:
    with env.client() as client:
        endpoint = make_endpoint(client, env.receiver, ["sample.failed"])
        env.receiver.set(mode="down")
        ids = [bad_upload(client, tmp_path, f"S-down-{i}") for i in range(3)]
        wait_for(lambda: all(events_for(env.receiver, s) for s in ids))
        env.receiver.set(mode="ok")
        wait_for(
            lambda: all(any(r["code"] == 200 for r in events_for(env.receiver, s)) for s in ids),
            timeout=60,
        )
        for sample_id in ids:
            seen = events_for(env.receiver, sample_id)
            assert len({r["webhook_id"] for r in seen}) == 1, "webhook-id stable across retries"
            assert sum(r["code"] == 200 for r in seen) == 1, "delivered once"
            assert all(r["verified"] for r in seen)
        log = client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries").json()["items"]
        assert all(d["status"] == "succeeded" and d["attempts"] >= 2 for d in log)
        client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")


def test_gone_disables_and_wrong_secret_fails_verification(env: Env, tmp_path: Path) -> None:
    with env.client() as client:
        endpoint = make_endpoint(client, env.receiver, ["sample.failed"])
        env.receiver.set(secret="whsec_" + "A" * 32)  # not the endpoint's secret
        sample_id = bad_upload(client, tmp_path, "S-wrong-secret")
        wait_for(lambda: bool(events_for(env.receiver, sample_id)))
        assert events_for(env.receiver, sample_id)[0]["verified"] is False

        env.receiver.set(mode="gone", secret=endpoint["secret"])
        gone_id = bad_upload(client, tmp_path, "S-gone")
        wait_for(lambda: bool(events_for(env.receiver, gone_id)))
        wait_for(
            lambda: client.get(f"/v1/webhook-endpoints/{endpoint['id']}").json()["enabled"] is False
        )
        state = client.get(f"/v1/webhook-endpoints/{endpoint['id']}").json()
        assert "410" in state["disabled_reason"]
        client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")


def test_redeliver_reuses_the_webhook_id(env: Env, tmp_path: Path) -> None:
    with env.client() as client:
        endpoint = make_endpoint(client, env.receiver, ["sample.failed"])
        sample_id = bad_upload(client, tmp_path, "S-redeliver")
        wait_for(lambda: len(events_for(env.receiver, sample_id)) == 1)
        delivery = client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries").json()
        first = delivery["items"][0]
        again = client.post(f"/v1/webhook-deliveries/{first['id']}/redeliver")
        assert again.status_code == 202
        wait_for(lambda: len(events_for(env.receiver, sample_id)) == 2)
        ids = {r["webhook_id"] for r in events_for(env.receiver, sample_id)}
        assert ids == {first["event_id"]}
        client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:9/hook",  # a DNS name resolving to loopback, not allow-listed
        "https://10.1.2.3/hook",  # private
        "https://169.254.169.254/latest",  # cloud metadata (link-local)
        "https://100.64.0.1/hook",  # CGNAT
        "https://[::ffff:127.0.0.1]/hook",  # IPv4-mapped loopback
        "https://[64:ff9b::a00:1]/hook",  # NAT64-embedded 10.0.0.1
        "https://[2002:c0a8:0101::1]/hook",  # 6to4-embedded 192.168.1.1
        "http://example.org/hook",  # plain http to a host not allow-listed
    ],
)
def test_internal_addresses_are_refused_at_create(env: Env, url: str) -> None:
    with env.client() as client:
        response = client.post(
            "/v1/webhook-endpoints", json={"url": url, "events": ["sample.failed"]}
        )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    # the refusal says how to go on: the setting that exempts a receiver of one's own
    assert "CTDNA_WEBHOOK_ALLOWED_HOSTS" in response.json()["detail"], response.text


def test_endpoints_are_site_scoped(env: Env, pg_url: str, tmp_path: Path) -> None:
    other_env = service_env(tmp_path, CTDNA_DATABASE_URL=pg_url)
    other = create_key(other_env, "site-elsewhere", "admin")
    with env.client() as client:
        endpoint = make_endpoint(client, env.receiver, ["sample.failed"])
    with httpx.Client(base_url=env.base, headers={"Authorization": f"Bearer {other}"}) as intruder:
        assert intruder.get(f"/v1/webhook-endpoints/{endpoint['id']}").status_code == 404
        assert intruder.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries").status_code == 404
        assert endpoint["id"] not in {
            e["id"] for e in intruder.get("/v1/webhook-endpoints").json()["items"]
        }


def test_rotated_secret_old_and_new_both_verify(env: Env, tmp_path: Path) -> None:
    with env.client() as client:
        endpoint = make_endpoint(client, env.receiver, ["sample.failed"])
        old_secret = endpoint["secret"]
        rotated = client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret").json()
        assert rotated["secret"] != old_secret
        for secret, sample_id in ((old_secret, "S-rot-old"), (rotated["secret"], "S-rot-new")):
            env.receiver.set(secret=secret)
            bad_upload(client, tmp_path, sample_id)
            wait_for(lambda s=sample_id: any(r["verified"] for r in events_for(env.receiver, s)))
            delivered = [r for r in events_for(env.receiver, sample_id) if r["code"] == 200]
            assert len(delivered) == 1 and delivered[0]["verified"] is True
        client.delete(f"/v1/webhook-endpoints/{endpoint['id']}")


def test_internal_address_is_refused_again_at_send(
    pg_url: str, redis_url: str, tmp_path: Path
) -> None:
    """Created while `localhost` was allow-listed (as by an operator), sent by a worker whose
    allow-list no longer has it: the name resolves to 127.0.0.1 and the send is refused."""
    receiver = start_receiver(tmp_path)
    port = receiver.url.split(":")[2].split("/")[0]
    base_env = {"CTDNA_DATABASE_URL": pg_url, "CTDNA_BROKER_URL": redis_url}
    api, base = start_api(
        service_env(tmp_path, CTDNA_WEBHOOK_ALLOWED_HOSTS="localhost", **base_env),
        tmp_path,
        "--no-worker",
    )
    worker = start_worker(service_env(tmp_path, **base_env), tmp_path, "--concurrency", "1")
    key = create_key(service_env(tmp_path, **base_env), "site-send-guard", "ingest,read,admin")
    try:
        with httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            endpoint = client.post(
                "/v1/webhook-endpoints",
                json={"url": f"https://localhost:{port}/hook", "events": ["sample.failed"]},
            ).json()
            bad_upload(client, tmp_path, "S-send-guard")

            def attempted() -> list[dict[str, object]]:
                items = client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries").json()
                return [a for d in items["items"] for a in d["attempt_log"]]

            wait_for(lambda: bool(attempted()))
            first = attempted()[0]
            assert first["status_code"] is None
            assert "non-public address" in str(first["error"])
        assert not receiver.seen(), "nothing may reach the internal address"
    finally:
        api.stop()
        worker.stop()
        receiver.process.stop()
