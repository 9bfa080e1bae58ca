"""Settings read from the environment (CTDNA_ prefix), once, through get_settings()."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CTDNA_", extra="ignore")

    data_dir: Path = Field(
        default=Path("ctdna-data"), description="Uploads, SQLite file, broker folders"
    )
    database_url: str | None = Field(
        default=None, description="Unset = embedded SQLite in data_dir"
    )
    broker_url: str | None = Field(default=None, description="Unset = embedded filesystem broker")
    # PostgreSQL: the role the API, workers and beat connect as; `ctdna migrate` (run as the
    # tables' owner) grants it rows but no table or trigger (services/migrations).
    database_app_role: str | None = None
    reference_fasta: Path | None = None
    webhook_allowed_hosts: str = ""

    max_upload_bytes: int = 2 * 1024**3
    # A gzip/BGZF upload whose content inflates past this is refused at upload (413): a zip
    # bomb never reaches a worker's disk or memory. Real VCF.gz files inflate about 5-15x.
    max_decompressed_bytes: int = Field(default=16 * 1024**3, gt=0)
    # What one variant file may ask (services/genomics/sniff.py): refused at upload (422
    # naming the file and line), and by the reader for a file that got past it (failed job).
    max_sample_columns: int = Field(default=1_000, gt=0)
    max_line_bytes: int = Field(default=16 * 1024**2, gt=0)
    max_records: int = Field(default=50_000_000, gt=0)
    # A Redis-delivered message not acked within this many seconds is handed to another
    # worker; it must exceed the longest task (a 2M-record tissue VCF takes well under this).
    broker_visibility_timeout: int = 3600
    # A claimed job's lease: its task renews it every third of this while it runs (a
    # heartbeat), so a job whose worker died is taken over by the sweep after at most this
    # plus one sweep interval, and a long honest task is never taken over.
    job_lease_seconds: float = Field(default=30.0, gt=0)
    # An ingest that stored its rows and waits for a later ingest of the same patient to do
    # the analyses is run again, whole, if that has not happened after this long.
    job_await_seconds: float = Field(default=600.0, gt=0)
    # A job whose worker vanished (killed, out of memory, hard time limit) this many times is
    # failed with what it was doing, instead of being handed to the next worker.
    job_max_attempts: int = Field(default=3, ge=1)
    # Per task run (ingest, recompute, clone fit): past it the task stops and its job fails.
    task_time_limit_seconds: float = Field(default=1800.0, gt=0)
    # A queued job whose message was never seen by a worker is re-sent after this delay.
    job_resend_after_seconds: int = 30
    sweep_interval_seconds: float = 15.0
    worker_concurrency: int = 2
    # Webhook deliveries run in a worker of their own (threads: the work is waiting on
    # receivers), so that ingests never wait behind them.
    webhook_concurrency: int = Field(default=8, ge=1)
    # One attempt, connect to last byte, ends by this deadline whatever the receiver does.
    webhook_deadline_seconds: float = Field(default=20.0, gt=0)
    # Multiplies the webhook retry schedule (1.0 = about three days); tests shrink it.
    webhook_retry_scale: float = Field(default=1.0, gt=0)
    # Signs the web view's session cookie; unset = a random key kept in data_dir/secret_key.
    secret_key: str | None = None
    ui_session_hours: int = Field(default=12, ge=1)
    # The session cookie's Secure flag: unset = always, except over plain http to this machine
    # (localhost, 127.0.0.1: the embedded first run); true or false forces it.
    ui_cookie_secure: bool | None = None
    # `ctdna serve`: a request whose request line and headers pass this is answered 431
    # (services/api/protocol.py); the reverse proxy in deploy/ is stricter still.
    max_header_bytes: int = Field(default=64 * 1024, ge=8 * 1024)
    # Proxies whose X-Forwarded-For/-Proto `ctdna serve` believes (uvicorn's setting): the
    # reverse proxy's address, or "*" when only the proxy can reach the API.
    forwarded_allow_ips: str = "127.0.0.1"
    log_level: str = "INFO"
    log_json: bool = False
    # /metrics reads job and webhook counts from the database at most this often.
    metrics_cache_seconds: float = Field(default=5.0, ge=0)
    # Token buckets per API key (rate = tokens per second, burst = bucket size; rate 0 turns a
    # limit off). Shared by every API process through Redis when the broker is Redis, else
    # kept in each process (then N processes allow N times the rate).
    rate_limit_uploads_per_second: float = Field(default=10.0, ge=0)
    rate_limit_uploads_burst: int = Field(default=50, ge=1)
    rate_limit_reads_per_second: float = Field(default=100.0, ge=0)
    rate_limit_reads_burst: int = Field(default=200, ge=1)
    # A stored answer to an Idempotency-Key is replayed for this long.
    idempotency_ttl_hours: float = Field(default=24.0, gt=0)
    # MRD backgrounds pool the controls of one assay of one site; true pools every site's
    # controls of the same assay name (recorded in every call's parameters).
    cross_site_controls: bool = False

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, value: str | None) -> str | None:
        if value and value.startswith("postgresql://"):
            return "postgresql+psycopg://" + value.removeprefix("postgresql://")
        if value and value.startswith("postgres://"):
            return "postgresql+psycopg://" + value.removeprefix("postgres://")
        return value or None

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.resolved_data_dir / 'ctdna.db'}"

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url is None

    @property
    def uploads_dir(self) -> Path:
        return self.resolved_data_dir / "uploads"

    @property
    def allowed_webhook_hosts(self) -> frozenset[str]:
        return frozenset(
            h.strip().lower() for h in self.webhook_allowed_hosts.split(",") if h.strip()
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
