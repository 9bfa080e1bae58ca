"""The console of `make run` is not a line every 15 s: Celery's routine lines about the sweep
are DEBUG; its other lines, and the sweep's own, stay."""

from __future__ import annotations

import logging

from services.jobs.service import SWEEP_TASK
from services.logging import QuietRoutine


def _record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, (), None)


def test_the_sweeps_routine_lines_are_debug_only() -> None:
    quiet = QuietRoutine(SWEEP_TASK)
    beat = logging.getLogger("celery.beat")
    previous = beat.level
    try:
        beat.setLevel(logging.INFO)
        sent = _record("celery.beat", logging.INFO, f"Scheduler: Sending due task ({SWEEP_TASK})")
        assert not quiet.filter(sent)
        other = _record("celery.beat", logging.INFO, "Scheduler: Sending due task (other.task)")
        assert quiet.filter(other)
        failed = _record("celery.beat", logging.ERROR, f"{SWEEP_TASK} raised")
        assert quiet.filter(failed)
        beat.setLevel(logging.DEBUG)  # asked for: shown
        assert quiet.filter(sent)
    finally:
        beat.setLevel(previous)
