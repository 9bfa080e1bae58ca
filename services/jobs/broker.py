"""Broker configuration shared by the producer (API) and the worker, so both speak to the
same queue: Redis in production, a filesystem folder for the embedded default."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from celery import Celery

from services.config import Settings, get_settings

QUEUE = "ctdna"
# Webhook deliveries wait on receivers: they have a queue and a worker process of their own,
# so that samples never wait behind them (`ctdna worker --queues`).
WEBHOOK_QUEUE = "ctdna-webhooks"
WEBHOOK_TASK = "webhooks.deliver"  # services.alerts.service.DELIVER_TASK


def celery_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "task_default_queue": QUEUE,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "enable_utc": True,
        "task_routes": {WEBHOOK_TASK: {"queue": WEBHOOK_QUEUE}},
        # Every task run is bounded: the soft limit lets a task fail its job with the reason,
        # the hard one (30 s later) ends a run that does not stop. A delivery is bounded by
        # its own deadline (services/alerts/service.py) well before these.
        "task_soft_time_limit": settings.task_time_limit_seconds,
        "task_time_limit": settings.task_time_limit_seconds + 30,
    }
    if settings.embedded_broker:
        folder = settings.resolved_data_dir / "broker"
        (folder / "queue").mkdir(parents=True, exist_ok=True)
        (folder / "processed").mkdir(parents=True, exist_ok=True)
        (folder / "control").mkdir(parents=True, exist_ok=True)
        config["broker_url"] = "filesystem://"
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # the exchange table, else kombu writes ./control in the working directory
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
        # The filesystem transport has no fanout exchange for remote control.
        config["worker_enable_remote_control"] = False
    else:
        config["broker_url"] = settings.broker_url
        config["broker_transport_options"] = {
            "visibility_timeout": settings.broker_visibility_timeout,
            "socket_timeout": 5,
            "socket_connect_timeout": 5,
            "retry_on_timeout": True,
        }
    return config


@lru_cache(maxsize=1)
def get_producer() -> Celery:
    """A Celery app used only to publish task messages by name (services never import
    workers)."""
    app = Celery("ctdna-producer")
    app.conf.update(celery_config(get_settings()))
    return app
