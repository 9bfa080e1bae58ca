"""The Celery application: broker settings shared with the producer, task modules, beat."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

import services.models  # noqa: F401  (the whole mapper registry, before any session)
from services.config import get_settings
from services.db import get_engine
from services.jobs.broker import celery_config
from services.jobs.service import SWEEP_TASK
from services.logging import QuietRoutine, configure_logging


def create_celery() -> Celery:
    settings = get_settings()
    app = Celery(
        "ctdna",
        include=["workers.ingest", "workers.sweep", "workers.webhooks", "workers.analysis"],
    )
    app.conf.update(celery_config(settings))
    app.conf.beat_schedule = {
        "sweep-outbox": {"task": SWEEP_TASK, "schedule": settings.sweep_interval_seconds},
    }
    app.conf.beat_schedule_filename = str(settings.resolved_data_dir / "celerybeat-schedule")
    configure_logging(settings.log_level, json=settings.log_json)
    quiet = QuietRoutine(SWEEP_TASK)
    for name in QuietRoutine.CELERY_LOGGERS:
        logging.getLogger(name).addFilter(quiet)
    return app


app = create_celery()


@worker_process_init.connect  # type: ignore[untyped-decorator]  # celery ships no type information
def _fresh_connections(**_: Any) -> None:
    # A forked pool child must not reuse the parent's database connections.
    get_engine().dispose(close=False)
