"""(4) Reads: /trends, /mrd and the patient page of a real 30-sample patient in a database of
many patients × 30 samples, with one sequential client (p50/p99) and with wrk's 50 concurrent
connections next to /healthz on the same server in the same run.

The benchmarked patient is real: one tumour tissue VCF and 29 plasma VCFs of the simulator,
loaded through the service layer and ingested by the real ingest code (services.demo.load),
with its analyses recomputed on every sample. The other patients are bulk rows written by
INSERT ... SELECT in the database (patients, a surgery event, samples, hotspot variant rows,
and the four analysis bodies copied from the real patient under their own patient_id)."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text

from benchmarks.ingest import new_key, percentile
from benchmarks.stack import Stack
from services.audit.models import AuditEntry
from services.db import get_engine, unit_of_work
from services.demo import load, write_mrd_cohort
from services.genomics.simulate import SimulationParams, load_hotspots
from services.patients.models import Patient

WRK_SCRIPT = Path(__file__).with_name("wrk_auth.lua")
# A site of its own: the demo loader runs every queued job of its site in this process, and
# the ingest sections may leave some behind.
SITE = "bench-reads"


def load_real_patient(folder: Path, draws: int) -> tuple[str, float]:
    start = time.perf_counter()
    # Monthly draws from early 2022: a 30-sample history that stays in the past.
    monthly = SimulationParams(draw_interval_days=30, draw_jitter_days=3)
    cohort = write_mrd_cohort(folder, patients_n=1, draws=draws, seed=4242, params=monthly)
    load(cohort, site=SITE)
    return cohort[0].patient_id, time.perf_counter() - start


def load_bulk(real_patient_id: str, patients_n: int, samples_per: int, variants_per: int) -> float:
    """Bulk rows, generated inside PostgreSQL (the fastest honest way to 10k × 30 samples)."""
    hotspots = load_hotspots()[: max(1, variants_per)]
    values = ", ".join(
        f"({i}, '{h.chrom}', {h.pos}, '{h.ref}', '{h.alt}', '{h.gene}', '{h.protein}')"
        for i, h in enumerate(hotspots)
    )
    params = {"site": SITE, "n": patients_n, "s": samples_per, "real": real_patient_id}
    start = time.perf_counter()
    with get_engine().begin() as conn:
        conn.execute(
            text(
                "INSERT INTO patients (site, patient_id, created_at) "
                "SELECT CAST(:site AS text), 'BULK-' || lpad(g::text, 6, '0'), now() "
                "FROM generate_series(1, :n) g"
            ),
            params,
        )
        bulk = "site = :site AND patient_id LIKE 'BULK-%'"
        conn.execute(
            text(
                "INSERT INTO patient_events (patient_pk, type, event_date, created_at) "
                "SELECT id, 'surgery', date '2022-01-03' + (id % 365), now() "
                f"FROM patients WHERE {bulk}"
            ),
            params,
        )
        conn.execute(
            text(
                "INSERT INTO samples (site, sample_id, patient_pk, collection_date, sample_type, "
                "genome_build, file_name, file_sha256, file_size, status, detected_build, "
                "build_source, records_read, alleles_skipped, variant_count, processed_at, "
                "created_at) "
                "SELECT CAST(:site AS text), p.patient_id || '-S' || lpad(d::text, 2, '0'), p.id, "
                "date '2022-01-03' + (p.id % 365) + 60 * d, "
                "CASE WHEN d = 1 THEN 'tissue' ELSE 'plasma' END, 'GRCh38', "
                "p.patient_id || '-' || d || '.vcf.gz', "
                "md5(p.patient_id || d) || md5(d || p.patient_id), 20000, 'processed', "
                "'GRCh38', 'given', 300, 0, :v, now(), now() "
                f"FROM patients p CROSS JOIN generate_series(1, :s) d WHERE p.{bulk}"
            ),
            {**params, "v": len(hotspots)},
        )
        conn.execute(
            text(
                "INSERT INTO variants (sample_pk, chrom, pos, ref, alt, build, locus_key, gene, "
                "protein_change, filter, passed, detected, alt_reads, depth, vaf, quantitative, "
                "normal_alt_reads, normal_depth, hotspot, in_monitored_gene, tracked) "
                "SELECT s.id, h.chrom, h.pos, h.ref, h.alt, 'GRCh38', "
                "h.chrom || ':' || h.pos || ':' || h.ref || '>' || h.alt, h.gene, h.protein, "
                "'PASS', true, (s.id + h.i) % 17 = 0, ((s.id + h.i) % 17 = 0)::int * 3, "
                "2000 + (s.id * 7 + h.i) % 3000, "
                "((s.id + h.i) % 17 = 0)::int * 3.0 / (2000 + (s.id * 7 + h.i) % 3000), "
                "true, NULL, NULL, true, true, false "
                f"FROM samples s CROSS JOIN (VALUES {values}) AS h(i, chrom, pos, ref, alt, gene, "
                "protein) WHERE s.site = :site AND s.sample_id LIKE 'BULK-%'"
            ),
            params,
        )
        conn.execute(
            text(
                "INSERT INTO patient_analyses (patient_pk, kind, status, body, computed_at) "
                "SELECT p.id, a.kind, a.status, replace(a.body, "
                "'\"patient_id\":\"' || :real || '\"', "
                "'\"patient_id\":\"' || p.patient_id || '\"'), now() "
                "FROM patients p CROSS JOIN (SELECT kind, status, body FROM patient_analyses "
                "WHERE patient_pk = (SELECT id FROM patients WHERE site = :site AND "
                f"patient_id = :real)) a WHERE p.{bulk}"
            ),
            params,
        )
    with get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))  # what autovacuum would have done on a live database
    return time.perf_counter() - start


def table_sizes() -> dict[str, int]:
    with get_engine().connect() as conn:
        return {
            table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in ("patients", "samples", "variants", "patient_analyses")
        }


def one_client(base: str, key: str, path: str, requests: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    took: list[float] = []
    bad = 0
    size = 0
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for i in range(requests + 50):
            start = time.perf_counter()
            response = client.get(path)
            elapsed = time.perf_counter() - start
            if not 200 <= response.status_code < 300:
                bad += 1
            size = len(response.content)
            if i >= 50:  # warm-up: connection, caches, the first template render
                took.append(elapsed)
    return {
        "requests": len(took),
        "p50_ms": round(statistics.median(took) * 1000, 2),
        "p99_ms": round(percentile(took, 99) * 1000, 2),
        "non_2xx": bad,
        "body_bytes": size,
    }


def wrk(base: str, key: str, path: str, *, connections: int, seconds: int) -> dict[str, Any]:
    binary = shutil.which("wrk")
    if binary is None:
        return {"skipped": "wrk not installed (apt-get install -y wrk)"}
    with unit_of_work() as session:
        audited_before = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
    out = subprocess.run(
        [binary, "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
         "-s", str(WRK_SCRIPT), f"{base}{path}"],
        env={"CTDNA_BENCH_KEY": key, "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    ).stdout  # fmt: skip
    line = next(ln for ln in out.splitlines() if ln.startswith("{"))
    result = json.loads(line)
    # Requests still in flight when wrk stops are served (and audited) but not counted by wrk.
    time.sleep(1)
    with unit_of_work() as session:
        audited = (session.scalar(select(func.count()).select_from(AuditEntry)) or 0) - (
            audited_before
        )
    return {
        "requests": result["requests"],
        "rps": round(result["requests"] / (result["duration_us"] / 1e6), 1),
        "p50_ms": round(result["p50_us"] / 1000, 2),
        "p99_ms": round(result["p99_us"] / 1000, 2),
        "non_2xx_3xx": result["status_errors"],
        "socket_errors": result["connect"] + result["read"] + result["write"] + result["timeout"],
        "audit_rows_written": audited,
    }


def run(
    stack: Stack,
    *,
    patients_n: int,
    samples_per: int,
    variants_per: int,
    api_workers: int,
    one_client_requests: int,
    wrk_seconds: int,
    connections: int,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=stack.workdir) as tmp:
        patient_id, real_s = load_real_patient(Path(tmp), draws=samples_per - 1)
    bulk_s = load_bulk(patient_id, patients_n, samples_per, variants_per)
    with unit_of_work() as session:
        real_pk = session.scalar(
            select(Patient.id).where(Patient.site == SITE, Patient.patient_id == patient_id)
        )
        bodies: dict[str, int] = dict(
            session.execute(
                text("SELECT kind, length(body) FROM patient_analyses WHERE patient_pk = :pk"),
                {"pk": real_pk},
            ).all()
        )
    key = new_key("read", SITE)
    api, base = stack.start_api(workers=api_workers)
    paths = {
        "healthz": "/healthz",
        "trends": f"/v1/patients/{patient_id}/trends",
        "mrd": f"/v1/patients/{patient_id}/mrd",
        "patient_page": f"/ui/patients/{patient_id}",
    }
    try:
        single = {name: one_client(base, key, path, one_client_requests)
                  for name, path in paths.items()}  # fmt: skip
        concurrent = {
            name: wrk(base, key, path, connections=connections, seconds=wrk_seconds)
            for name, path in paths.items()
        }
    finally:
        stack.stop(api)
    health = concurrent["healthz"].get("rps")
    for result in concurrent.values():
        if health and "rps" in result:
            result["vs_healthz"] = round(result["rps"] / health, 3)
    return {
        "patient_id": patient_id,
        "real_patient_load_s": round(real_s, 1),
        "bulk_load_s": round(bulk_s, 1),
        "rows": table_sizes(),
        "body_bytes": bodies,
        "api_workers": api_workers,
        "one_client": single,
        "wrk": concurrent,
        "wrk_connections": connections,
        "wrk_seconds": wrk_seconds,
    }
