"""(2) upload → job succeeded latency of panel VCFs, (3) throughput of panel samples through
Redis + Celery, (5) peak memory of a worker ingesting the large file."""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from benchmarks import vcfgen
from benchmarks.stack import Child, Stack, log_events, peak_rss_mb
from schemas.patients import EventCreate
from services.auth.service import create_key
from services.config import get_settings
from services.db import unit_of_work, utcnow
from services.jobs.models import Job
from services.jobs.service import INGEST_TASK
from services.patients import service as patients
from services.samples import service as samples
from services.samples import storage

SITE = "bench"
DAY0 = dt.date(2024, 1, 8)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def new_key(scopes: str = "ingest,read", site: str = SITE) -> str:
    with unit_of_work() as session:
        _, secret = create_key(session, site=site, scopes=frozenset(scopes.split(",")))
    return secret


def make_patients(ids: Iterable[str]) -> None:
    """Metastatic patients on letrozole (so the resistance analysis runs on every sample)."""
    with unit_of_work() as session:
        for patient_id in ids:
            patient = patients.create_patient(session, SITE, patient_id)
            patients.add_event(
                session, patient, EventCreate(type="therapy_start", date=DAY0, drug="letrozole")
            )


def panel_files(folder: Path, count: int, *, first_seed: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        vcfgen.write_panel_vcf(folder / f"panel-{first_seed + i}.vcf.gz", seed=first_seed + i,
                               size=size)
        for i in range(count)
    ]  # fmt: skip


def upload(
    client: httpx.Client, path: Path, patient_id: str, sample_id: str, date: dt.date
) -> dict[str, Any]:
    with path.open("rb") as fh:
        response = client.post(
            "/v1/samples",
            data={
                "patient_id": patient_id,
                "sample_id": sample_id,
                "collection_date": date.isoformat(),
                "sample_type": "plasma",
                "genome_build": "GRCh38",
            },
            files={"file": (path.name, fh, "application/gzip")},
        )
    if response.status_code != 202:
        raise RuntimeError(f"upload of {path.name}: {response.status_code} {response.text}")
    return dict(response.json())


def submit(path: Path, patient_id: str, sample_id: str, sample_type: str) -> str:
    """Through the service layer (no HTTP): store the file, create sample and job; the
    message is published to Redis after commit, as for an upload."""
    settings = get_settings()
    with path.open("rb") as fh:
        stored = storage.store(fh, settings.uploads_dir, max_bytes=settings.max_upload_bytes)
    form = samples.SampleForm(
        patient_id=patient_id, sample_id=sample_id, collection_date=DAY0,
        sample_type=sample_type, genome_build=None, tumor_sample=None, normal_sample=None,
        plasma_ml=None, cfdna_ng_per_ml=None, file_name=path.name,
    )  # fmt: skip
    with unit_of_work() as session:
        accepted = samples.accept_upload(session, SITE, form, stored)
        return accepted.job.id


def wait_jobs(job_ids: Sequence[str], timeout: float, poll: float = 0.2) -> list[Job]:
    deadline = time.monotonic() + timeout
    while True:
        with unit_of_work() as session:
            rows = list(session.scalars(select(Job).where(Job.id.in_(job_ids))))
        if all(j.status in ("succeeded", "failed") for j in rows) and len(rows) == len(job_ids):
            return rows
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{sum(j.status == 'succeeded' for j in rows)} of {len(job_ids)} "
                f"jobs finished in {timeout:.0f}s"
            )
        time.sleep(poll)


def _client(base: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _seconds(a: dt.datetime | None, b: dt.datetime | None) -> float | None:
    return (b - a).total_seconds() if a is not None and b is not None else None


# --- (2) latency ------------------------------------------------------------------------------


def _ingest_parts(worker: Child, job_ids: set[str]) -> dict[str, list[float]]:
    """Per-job seconds of each part of the ingest task, from the worker's log lines (the job
    row's finished_at is stamped before the analyses and the commit, so it cannot tell)."""
    parts: dict[str, list[float]] = defaultdict(list)
    for event in log_events(worker.log_path, "ingest.succeeded"):
        if event.get("job_id") in job_ids and "read_s" in event:
            parts["claim"].append(event["claim_s"])
            parts["read"].append(event["read_s"])
            parts["store"].append(event["store_s"] - event["analysis_s"])
            parts["analysis"].append(event["analysis_s"])
            parts["task"].append(event["claim_s"] + event["read_s"] + event["store_s"])
    return parts


def latency(
    stack: Stack, base: str, worker: Child, uploads: int, panel_size: int
) -> dict[str, Any]:
    key = new_key()
    patient_ids = [f"LAT-{i:02d}" for i in range(max(1, min(10, uploads)))]
    make_patients(patient_ids)
    files = panel_files(stack.workdir / "latency", uploads + 3, first_seed=100_000,
                        size=panel_size)  # fmt: skip
    client_s: list[float] = []
    job_ids: list[str] = []
    with _client(base, key) as client:
        for i, path in enumerate(files):
            patient_id = patient_ids[i % len(patient_ids)]
            date = DAY0 + dt.timedelta(days=30 * (1 + i // len(patient_ids)))
            start = time.perf_counter()
            ids = upload(client, path, patient_id, f"{patient_id}-L{i:03d}", date)
            deadline = time.monotonic() + 60
            while True:
                status = client.get(f"/v1/jobs/{ids['job_id']}").json()["status"]
                if status in ("succeeded", "failed"):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"latency upload {path.name} still {status} after 60 s")
                time.sleep(0.005)
            if status != "succeeded":
                raise RuntimeError(f"latency upload {path.name} ended {status}")
            if i >= 3:  # the first three warm up the worker pool and the connection pools
                client_s.append(time.perf_counter() - start)
                job_ids.append(ids["job_id"])
    jobs = wait_jobs(job_ids, timeout=30)
    wait = [s for j in jobs if (s := _seconds(j.created_at, j.started_at)) is not None]
    parts = _ingest_parts(worker, set(job_ids))
    return {
        "uploads": len(client_s),
        "panel_records": panel_size,
        "p50_s": round(statistics.median(client_s), 3),
        "p95_s": round(percentile(client_s, 95), 3),
        "queue_wait_p50_s": round(statistics.median(wait), 4),
        "task_p50_s": {k: round(statistics.median(v), 4) for k, v in parts.items()},
        "how": "HTTP upload, then GET /v1/jobs every 5 ms until succeeded; task parts from "
        "the worker's ingest.succeeded log lines",
    }


# --- (3) throughput ---------------------------------------------------------------------------


def throughput(
    stack: Stack,
    base: str,
    worker: Child,
    *,
    samples_n: int,
    patients_n: int,
    concurrency: int,
    uploaders: int,
    panel_size: int,
    timeout: float,
) -> dict[str, Any]:
    key = new_key()
    patient_ids = [f"TP-{i:04d}" for i in range(patients_n)]
    make_patients(patient_ids)
    files = panel_files(stack.workdir / "throughput", samples_n, first_seed=1, size=panel_size)
    # Draw-major order: consecutive uploads belong to different patients, as from a lab.
    plan = [
        (path, patient_ids[i % patients_n], DAY0 + dt.timedelta(days=30 * (1 + i // patients_n)))
        for i, path in enumerate(files)
    ]
    started_at = utcnow()
    start = time.perf_counter()

    def post(chunk: list[tuple[Path, str, dt.date]]) -> list[float]:
        took = []
        with _client(base, key) as client:
            for path, patient_id, date in chunk:
                t0 = time.perf_counter()
                upload(client, path, patient_id, f"{patient_id}-{path.stem}", date)
                took.append(time.perf_counter() - t0)
        return took

    with ThreadPoolExecutor(uploaders) as pool:
        chunks = [plan[i::uploaders] for i in range(uploaders)]
        upload_s = [t for took in pool.map(post, chunks) for t in took]
    uploaded = time.perf_counter() - start

    deadline = time.monotonic() + timeout
    while True:
        with unit_of_work() as session:
            done = session.scalar(
                select(func.count()).where(
                    Job.task == INGEST_TASK,
                    Job.site == SITE,
                    Job.status.in_(("succeeded", "failed")),
                    Job.created_at >= started_at,
                )
            )
        if done is not None and done >= samples_n:
            break
        if time.monotonic() > deadline:
            break  # reported as timed out, with what did finish
        time.sleep(0.25)
    # Follow-up jobs the ingests created (e.g. clone fits) are part of the work: wait for them.
    while time.monotonic() < deadline:
        with unit_of_work() as session:
            pending = session.scalar(
                select(func.count()).where(
                    Job.site == SITE, Job.status.in_(("queued", "running")),
                    Job.created_at >= started_at,
                )
            )  # fmt: skip
        if not pending:
            break
        time.sleep(0.25)
    with unit_of_work() as session:
        jobs = list(session.scalars(select(Job).where(Job.created_at >= started_at)))
    ingest_jobs = [j for j in jobs if j.task == INGEST_TASK]
    samples_done = [j for j in ingest_jobs if j.finished_at is not None]
    last_ingest = max(j.finished_at for j in samples_done if j.finished_at)
    last_any = max(j.finished_at for j in jobs if j.finished_at)
    wall = (last_ingest - started_at).total_seconds()
    wall_all = (last_any - started_at).total_seconds()
    run_by_task: dict[str, float] = defaultdict(float)
    for j in jobs:
        if (s := _seconds(j.started_at, j.finished_at)) is not None:
            run_by_task[j.task] += s
    wait = [s for j in ingest_jobs if (s := _seconds(j.created_at, j.started_at)) is not None]
    parts = _ingest_parts(worker, {j.id for j in ingest_jobs})
    sums = {k: sum(v) for k, v in parts.items()}
    # Busy time: ingest tasks as logged (their rows' finished_at comes before the analyses),
    # other tasks (e.g. clone fits) from their rows.
    if parts:
        run_by_task[INGEST_TASK] = sums["task"]
    busy = sum(run_by_task.values())
    capacity = concurrency * wall_all
    return {
        "timed_out": len(samples_done) < samples_n,
        "samples": len(samples_done),
        "samples_planned": samples_n,
        "failed": sum(j.status == "failed" for j in ingest_jobs),
        "patients": patients_n,
        "panel_records": panel_size,
        "worker_concurrency": concurrency,
        "uploaders": uploaders,
        "how": f"HTTP uploads from {uploaders} client threads; 1 worker process "
        f"(--concurrency {concurrency}) on real Redis; timings from the jobs table and the "
        "worker's ingest.succeeded log lines",
        "upload_all_s": round(uploaded, 2),
        "upload_p50_s": round(statistics.median(upload_s), 4),
        "wall_s": round(wall, 2),
        "wall_incl_followups_s": round(wall_all, 2),
        "samples_per_s": round(len(samples_done) / wall, 2),
        "queue_wait_p50_s": round(statistics.median(wait), 3),
        "queue_wait_p95_s": round(percentile(wait, 95), 3),
        "ingest_task_p50_s": round(statistics.median(parts["task"]), 4) if parts else None,
        "task_run_by_name_s": {k: round(v, 2) for k, v in run_by_task.items()},
        "jobs_by_name": {t: sum(j.task == t for j in jobs) for t in run_by_task},
        "share_of_worker_capacity": {
            "in_tasks": round(busy / capacity, 3),
            "outside_tasks (broker, Celery, idle)": round(1 - busy / capacity, 3),
        },
        "share_of_ingest_task_time": {
            "database (claim + store)": round((sums["claim"] + sums["store"]) / sums["task"], 3),
            "parse (read_vcf)": round(sums["read"] / sums["task"], 3),
            "analyses (recompute)": round(sums["analysis"] / sums["task"], 3),
        }
        if parts
        else None,
        "ingest_logs_matched": len(parts.get("task", [])),
    }


# --- (5) memory -------------------------------------------------------------------------------


def memory(stack: Stack, big: Path, sample_type: str, timeout: float) -> dict[str, Any]:
    """A fresh one-process worker: its peak RSS after a panel sample (baseline), then after the
    large file; the pool child does the work, so its VmHWM is the number."""
    worker = stack.start_worker(concurrency=1)
    try:
        patient = f"MEM-{sample_type}"
        make_patients([patient])
        warm = vcfgen.write_panel_vcf(stack.workdir / f"warm-{sample_type}.vcf.gz", seed=7)
        wait_jobs([submit(warm, patient, f"{patient}-warm", "plasma")], timeout=120)
        pool = worker.children()
        baseline = max(filter(None, (peak_rss_mb(p) for p in pool)), default=None)
        job_id = submit(big, patient, f"{patient}-big", sample_type)
        [job] = wait_jobs([job_id], timeout=timeout, poll=0.5)
        peak = max(filter(None, (peak_rss_mb(p) for p in worker.children())), default=None)
        parent = peak_rss_mb(worker.pid)
    finally:
        stack.stop(worker)
    return {
        "sample_type": sample_type,
        "status": job.status,
        "error": job.error,
        "ingest_s": round(_seconds(job.started_at, job.finished_at) or 0.0, 2),
        "baseline_peak_rss_mb": round(baseline, 1) if baseline else None,
        "peak_rss_mb": round(peak, 1) if peak else None,
        "worker_parent_peak_rss_mb": round(parent, 1) if parent else None,
    }
