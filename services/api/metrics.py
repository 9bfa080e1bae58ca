"""Prometheus metrics: the HTTP requests of the API processes, and the background work read
from the database at scrape time.

HTTP requests (`ctdna_http_requests_total{method,route,status}`, the latency histogram
`ctdna_http_request_seconds{method,route}`; `route` is the route template, `unmatched` for a
path that is no route) are counted in the process that served them. When one `ctdna serve`
runs several worker processes behind one port, a scrape reaches one of them at random, so
`ctdna serve --workers N` (N > 1) points PROMETHEUS_MULTIPROC_DIR at a fresh directory, each
process writes its counters there (prometheus_client's multiprocess mode) and every scrape
sums them all. Separate `ctdna serve` commands (other hosts) are separate scrape targets.

Ingest jobs run in worker processes (on any number of hosts) and webhook attempts likewise, so
counters kept in their memory would be invisible here and lost with the process. The job and
webhook tables are the record of that work, so the API's /metrics reads it from there: true
across hosts and restarts, with no shared metrics directory. The queries are a few grouped
scans; their result is cached for `metrics_cache_seconds` so that scrapers cannot turn into load,
and a database outage gives `ctdna_metrics_database_up 0` instead of a failed scrape."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.alerts import service as alerts
from services.db import utcnow
from services.jobs import repository as jobs
from services.jobs.service import INGEST_TASK

log = structlog.get_logger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

INGEST_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
RECENT = timedelta(hours=1)
PENDING = ("queued", "running")
FINISHED = ("succeeded", "failed")


def http_metrics() -> bytes:
    """The request metrics of this API: of every worker process of this `ctdna serve` in
    multiprocess mode, else of this process (with its runtime metrics)."""
    if not os.environ.get(MULTIPROC_ENV):
        return generate_latest(REGISTRY)
    # Imported here: the module reads the directory when it is used, not when imported.
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    # prometheus_client leaves MultiProcessCollector.__init__ unannotated
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


class DatabaseCollector:
    """A prometheus_client collector over the job and webhook tables."""

    def __init__(self, session_factory: Callable[[], Session], *, max_age: float) -> None:
        self._session_factory = session_factory
        self._max_age = max_age
        self._lock = threading.Lock()
        self._cached: list[Metric] = []
        self._cached_at = float("-inf")

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._cached_at >= self._max_age:
                self._cached = self._read()
                self._cached_at = time.monotonic()
            yield from self._cached

    def _read(self) -> list[Metric]:
        up = GaugeMetricFamily(
            "ctdna_metrics_database_up", "1 if the database answered the metrics queries"
        )
        try:
            with self._session_factory() as session, session.begin():
                if session.get_bind().dialect.name == "postgresql":
                    session.execute(text("SET LOCAL statement_timeout = 2000"))
                families = _families(session, utcnow())
        except SQLAlchemyError as exc:
            log.warning("metrics.database_unavailable", error=str(exc)[:200])
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]


def _families(session: Session, now: datetime) -> list[Metric]:
    depth = GaugeMetricFamily(
        "ctdna_queue_depth", "Jobs waiting for or held by a worker", labels=["task", "status"]
    )
    finished = CounterMetricFamily(
        "ctdna_jobs_finished", "Jobs finished, by outcome", labels=["task", "outcome"]
    )
    failed_recent = GaugeMetricFamily(
        "ctdna_jobs_failed_last_hour", "Jobs that failed in the last hour", labels=["task"]
    )
    attempts = CounterMetricFamily(
        "ctdna_job_attempts",
        "Task executions that claimed a job (above the number of jobs: retries and takeovers "
        "after a worker died)",
        labels=["task"],
    )
    rows = jobs.counts_by_status(session, finished_since=now - RECENT)
    seen = {(INGEST_TASK, status): 0 for status in (*PENDING, *FINISHED)}
    seen.update({(r.task, r.status): int(r.n) for r in rows})
    per_task_attempts: dict[str, int] = {}
    recent_failures: dict[str, int] = {INGEST_TASK: 0}
    for r in rows:
        per_task_attempts[r.task] = per_task_attempts.get(r.task, 0) + int(r.attempts)
        if r.status == "failed":
            recent_failures[r.task] = int(r.recent)
    for (task, status), n in sorted(seen.items()):
        if status in PENDING:
            depth.add_metric([task, status], n)
        elif status in FINISHED:
            finished.add_metric([task, status], n)
    for task, n in sorted(per_task_attempts.items()):
        attempts.add_metric([task], n)
    for task, n in sorted(recent_failures.items()):
        failed_recent.add_metric([task], n)

    oldest = jobs.oldest_queued_at(session)
    oldest_age = GaugeMetricFamily(
        "ctdna_oldest_queued_job_age_seconds", "Age of the oldest queued job (0 when none)"
    )
    oldest_age.add_metric([], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)

    cumulative, count, total = jobs.duration_histogram(session, INGEST_TASK, INGEST_BUCKETS)
    ingest = HistogramMetricFamily(
        "ctdna_ingest_duration_seconds",
        "Ingest jobs, seconds from claim to finish of their last attempt",
        buckets=_buckets(INGEST_BUCKETS, cumulative, count),
        sum_value=total,
    )

    deliveries = GaugeMetricFamily(
        "ctdna_webhook_deliveries",
        "Webhook deliveries by status (failed = retries exhausted or endpoint disabled)",
        labels=["status"],
    )
    for status, n in sorted(
        {"pending": 0, "succeeded": 0, "failed": 0, **alerts.delivery_counts(session)}.items()
    ):
        deliveries.add_metric([status], n)
    outcomes = alerts.attempt_outcomes(session, since=now - RECENT)
    attempts_total = CounterMetricFamily(
        "ctdna_webhook_attempts", "Webhook delivery attempts by outcome", labels=["outcome"]
    )
    failed_attempts = GaugeMetricFamily(
        "ctdna_webhook_attempts_failed_last_hour", "Webhook attempts that failed in the last hour"
    )
    for outcome in ("success", "gone", "http_error", "network_error"):
        attempts_total.add_metric([outcome], outcomes.get(outcome, (0, 0))[0])
    failed_attempts.add_metric(
        [], sum(recent for name, (_, recent) in outcomes.items() if name != "success")
    )
    return [
        depth,
        finished,
        failed_recent,
        attempts,
        oldest_age,
        ingest,
        deliveries,
        attempts_total,
        failed_attempts,
    ]


def _buckets(
    bounds: Sequence[float], cumulative: Sequence[int], count: int
) -> list[tuple[str, float]]:
    return [*((str(b), float(n)) for b, n in zip(bounds, cumulative, strict=True)), ("+Inf", count)]
