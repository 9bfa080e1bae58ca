"""`ctdna bench`: the service measured where its users feel it (issue 10).

Everything runs on 127.0.0.1 against the real servers: a fresh PostgreSQL database migrated
by Alembic (dropped at the end), a dedicated Redis logical database (flushed first), the API and
Celery workers as subprocesses started by `python -m services.cli`. Speed is measured here and
only here; tests never assert on time."""
