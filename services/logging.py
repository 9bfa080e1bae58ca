"""structlog configuration: key-value lines for people, JSON for log shippers; a filter that
keeps a periodic task's routine lines out of the INFO log."""

from __future__ import annotations

import logging

import structlog


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    logging.basicConfig(level=level.upper(), format="%(message)s")
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )


class QuietRoutine(logging.Filter):
    """A periodic task (the sweep, every `sweep_interval_seconds`): Celery's routine lines
    about it (sent by beat, received, succeeded) are kept for DEBUG; what the task does of
    note, it logs itself."""

    CELERY_LOGGERS = ("celery.beat", "celery.worker.strategy", "celery.app.trace")

    def __init__(self, task: str) -> None:
        super().__init__()
        self.task = task

    def filter(self, record: logging.LogRecord) -> bool:
        routine = record.levelno <= logging.INFO and self.task in record.getMessage()
        return not routine or logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
