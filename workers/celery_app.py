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
from services.logging import configure_logging


class QuietSweep(logging.Filter):
    """The sweep runs every `sweep_interval_seconds`: Celery's routine lines about it (sent
    by beat, received, succeeded) are kept for DEBUG; what it re-sends, it logs itself."""

    LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace")

    def filter(self, record: logging.LogRecord) -> bool:
        routine = record.levelno <= logging.INFO and SWEEP_TASK in record.getMessage()
        return not routine or logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


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
    for name in QuietSweep.LOGGERS:
        logging.getLogger(name).addFilter(QuietSweep())
    return app


app = create_celery()


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    # A forked pool child must not reuse the parent's database connections.
    get_engine().dispose(close=False)
