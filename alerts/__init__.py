"""Alerts: standing natural-language rules evaluated on rolling windows of camera memory.

This is an application component over the registry: besides `flashwatch.config` and
`flashwatch.messages` it imports `flashwatch.db` (rules, cameras and its own state tables) and,
in `alerts.api` only, the API's dependencies. It never runs a model: scoring goes through the
`flashwatch.protocols.Reasoner` protocol.

Pieces, from pure to wired:

* `alerts.policy`: windows/step alignment, hysteresis, cooldown, active hours, dedup keys,
  retry backoff, as pure functions with no clock of their own.
* `alerts.store`: registry access; each window's outcome (rule states, alert rows and their
  outbox rows) is committed in one transaction.
* `alerts.evaluate`: one camera window, all due rules, one reasoner call.
* `alerts.scheduler.AlertScheduler`: the live loop (`start()` / `stop()` / `run_once()`).
* `alerts.backfill`: resumable low-priority evaluation over stored history.
* `alerts.leadership`: which replica schedules which cameras (rule shards held through
  PostgreSQL advisory locks; every shard local on SQLite).
* `alerts.sinks` + `alerts.delivery.DeliveryWorker`: webhook / Kafka / MQTT, drained from
  the outbox with capped exponential retries.
* `alerts.metrics.AlertMetrics`: Prometheus metrics on an injectable registry.
* `alerts.api.router`: backfill progress, evaluation state and deliveries (read-only).

Delivery is at-least-once: every notification carries the alert's dedup key (webhook
`Idempotency-Key`, Kafka record key, `dedup_key` in every payload) for receivers to dedup.
"""

from __future__ import annotations

from collections.abc import Mapping

from alerts.delivery import DeliveryConfig, DeliveryWorker
from alerts.metrics import AlertMetrics
from alerts.scheduler import AlertScheduler, SchedulerConfig
from alerts.sinks import KafkaSink, MqttSink, Sink, WebhookSink
from flashwatch.config import AlertsConfig
from flashwatch.security import WEBHOOK_HINTS, NetworkPolicy

__all__ = [
    "AlertMetrics",
    "AlertScheduler",
    "DeliveryConfig",
    "DeliveryWorker",
    "SchedulerConfig",
    "build_sinks",
    "delivery_config",
]


def delivery_config(cfg: AlertsConfig) -> DeliveryConfig:
    """Delivery settings from the alerts config (retries; a lease above the send timeout)."""
    return DeliveryConfig(
        max_retries=cfg.webhook_max_retries, lease_s=max(30.0, 3 * cfg.webhook_timeout_s)
    )


def build_sinks(
    cfg: AlertsConfig,
    *,
    kafka_bootstrap: str | None = None,
    mqtt: tuple[str, int] | None = None,
) -> Mapping[str, Sink]:
    """The sinks this process can deliver to, by rule sink `type`."""
    sinks: dict[str, Sink] = {}
    if cfg.webhook_enabled and cfg.webhook_secret is not None:
        policy = NetworkPolicy(
            allow_loopback=cfg.webhook_allow_private,
            allow_private=cfg.webhook_allow_private,
            hints=WEBHOOK_HINTS,
        )
        sinks["webhook"] = WebhookSink(
            cfg.webhook_secret.get_secret_value().encode(),
            timeout_s=cfg.webhook_timeout_s,
            policy=policy,
            allow_http=cfg.webhook_allow_http,
        )
    if kafka_bootstrap:
        sinks["kafka"] = KafkaSink(kafka_bootstrap)
    if mqtt is not None:
        sinks["mqtt"] = MqttSink(mqtt[0], mqtt[1])
    return sinks
