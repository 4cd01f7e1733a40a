"""Prometheus metrics of the alerts component, on an injectable registry.

Tests and benchmarks pass their own `CollectorRegistry` so instances never collide; the
composition root passes the process registry it exposes on /metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)
_P_BUCKETS = tuple(i / 10 for i in range(1, 11))


class AlertMetrics:
    """Evaluations, P(yes) per rule, alerts fired, deliveries, latency and lag."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        reg = registry if registry is not None else CollectorRegistry()
        self.registry = reg
        self.evaluations = Counter(
            "fw_alert_evaluations", "Rule evaluations (one per rule per window).", registry=reg
        )
        self.windows_skipped = Counter(
            "fw_alert_windows_skipped",
            "Rule windows skipped instead of scored.",
            ["reason"],
            registry=reg,
        )
        self.p_yes = Histogram(
            "fw_alert_p_yes", "P(yes) per rule.", ["rule"], buckets=_P_BUCKETS, registry=reg
        )
        self.fired = Counter(
            "fw_alerts_fired", "Alerts and reports created.", ["kind", "backfilled"], registry=reg
        )
        self.eval_latency = Histogram(
            "fw_alert_eval_latency_seconds",
            "Reasoner time to score one camera window (all its rules).",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.lag = Gauge(
            "fw_alert_lag_seconds",
            "now - newest evaluated window end, per camera.",
            ["camera"],
            registry=reg,
        )
        self.rules_per_camera = Gauge(
            "fw_alert_rules_per_camera",
            "Enabled rules watching a camera.",
            ["camera"],
            registry=reg,
        )
        self.reasoner_busy = Counter(
            "fw_alert_reasoner_busy", "Score calls refused by the reasoner.", registry=reg
        )
        self.explain_failures = Counter(
            "fw_alert_explain_failures", "Reason requests that failed (alert kept).", registry=reg
        )
        self.deliveries = Counter(
            "fw_alert_deliveries", "Notifications delivered.", ["sink"], registry=reg
        )
        self.delivery_failures = Counter(
            "fw_alert_delivery_failures",
            "Delivery attempts that failed (final=true: given up).",
            ["sink", "final"],
            registry=reg,
        )
        self.owned_shards = Gauge(
            "fw_alert_owned_shards",
            "Rule shards this alerts replica schedules (see alerts.leadership).",
            registry=reg,
        )
        self.replicas = Gauge(
            "fw_alert_replicas",
            "Live alerts replicas with the same shard count, seen by this one.",
            registry=reg,
        )
        self.shard_changes = Counter(
            "fw_alert_shard_changes",
            "Shards acquired, released (rebalance, stop) or lost (lock connection gone).",
            ["change"],
            registry=reg,
        )
        self.backfill_windows = Counter(
            "fw_alert_backfill_windows", "Windows evaluated by backfill.", registry=reg
        )
