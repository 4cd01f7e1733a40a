"""Wires the pipeline roles (ingest -> bus -> encoder -> memory) for `serve` and `run`.

The registry is the source of truth for cameras: ingest reads it every few seconds, so
API changes take effect without a restart, and writes each camera's status back. The
encoder needs a model directory; without one (and until the bundled tiny model exists)
the encoder role is reported as not started rather than faked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from flashwatch.api.deps import AppState
from flashwatch.bus import Bus, InProcessBus
from flashwatch.config import Settings
from flashwatch.db.models import Camera, CameraCredential

log = logging.getLogger("flashwatch.pipeline")
STATUS_WRITE_EVERY_S = 10.0
TRIM_EVERY_S = 60.0
STATUS_POLL_S = 2.0


def make_bus(settings: Settings) -> Bus:
    if settings.bus.kind == "kafka":
        from ingest.kafka_bus import KafkaBus

        cfg = settings.bus
        bus = KafkaBus(
            cfg.kafka_bootstrap,
            dead_letter_topic=cfg.dead_letter_topic,
            sasl_username=cfg.kafka_sasl_username,
            sasl_password=(
                cfg.kafka_sasl_password.get_secret_value() if cfg.kafka_sasl_password else None
            ),
        )
        try:  # idempotent; a broker that refuses admin requests still auto-creates topics
            bus.ensure_topics(
                {
                    cfg.clips_topic: cfg.clips_partitions,
                    cfg.dead_letter_topic: 1,
                    cfg.alerts_topic: 1,
                }
            )
        except Exception as exc:
            log.warning("could not create Kafka topics (%s); relying on auto-creation", exc)
        return bus
    return InProcessBus(settings.bus.queue_size, settings.bus.dead_letter_topic)


def registry_cameras(engine: Engine) -> Callable[[], list[Any]]:
    """A `list_cameras()` for the ingest supervisor, reading cameras and credentials."""
    from ingest.camera import CameraSpec

    def list_cameras() -> list[CameraSpec]:
        with Session(engine) as session:
            creds = {c.camera_id: c for c in session.exec(select(CameraCredential)).all()}
            specs = []
            for cam in session.exec(select(Camera).order_by(col(Camera.id))).all():
                assert cam.id is not None
                cred = creds.get(cam.id)
                specs.append(
                    CameraSpec(
                        id=cam.id,
                        name=cam.name,
                        url=cam.url,
                        username=cred.username if cred else None,
                        password=cred.password if cred else None,
                        interval_s=cam.sample_interval_s,
                        levels=cam.pyramid_levels,
                        enabled=cam.enabled,
                        file_start_time=(
                            cam.source_start_at.timestamp() if cam.source_start_at else None
                        ),
                    )
                )
            return specs

    return list_cameras


@dataclass
class StatusWriter:
    """Writes camera status to the registry on every state change and at most every 10 s
    otherwise, so a busy camera does not turn into a stream of UPDATEs."""

    engine: Engine
    _last: dict[int, tuple[str, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, camera_id: int, status: Any) -> None:
        now = datetime.now(UTC)
        with self._lock:
            key = f"{status.state}:{status.last_frame_time is not None}"
            prev = self._last.get(camera_id)
            if prev and prev[0] == key and now.timestamp() - prev[1] < STATUS_WRITE_EVERY_S:
                return
            self._last[camera_id] = (key, now.timestamp())
        with Session(self.engine) as session:
            cam = session.get(Camera, camera_id)
            if cam is None:
                return
            cam.state = status.state
            cam.last_error = status.last_error
            cam.epoch = status.epoch
            cam.reconnects = status.counters.reconnects
            if status.last_frame_time is not None:
                cam.last_frame_at = datetime.fromtimestamp(status.last_frame_time, UTC)
            cam.status_at = now
            session.add(cam)
            session.commit()


def model_image_size(model_dir: Path | None, default: int = 224) -> int:
    """The encoder input S that ingest must resize frames to."""
    if model_dir is None:
        return default
    from encoder_trt.checkpoint import checkpoint_image_size

    return checkpoint_image_size(model_dir)


@dataclass
class Pipeline:
    """The pipeline roles of one process; `start()` / `stop()` in dependency order."""

    state: AppState
    roles: tuple[str, ...]
    bus: Bus | None = None
    store: Any = None
    supervisor: Any = None
    encoder_worker: Any = None
    reasoner_service: Any = None
    alert_scheduler: Any = None
    alert_leadership: Any = None
    delivery: Any = None
    started: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        settings = self.state.settings
        self.state.metrics_registries.append(self.metrics)
        if {"encoder", "api", "alerts", "reasoner"} & set(self.roles):  # ingest needs none
            self._start_memory(settings)
        if {"ingest", "encoder"} & set(self.roles):
            self.bus = make_bus(settings)
        if "encoder" in self.roles:
            self._start_encoder(settings)
        if "ingest" in self.roles:
            if settings.bus.kind == "inprocess" and "encoder" not in self.started:
                # Nothing in this process would consume the clips: decoding would be wasted.
                self.skipped["ingest"] = "no encoder in this process to consume clips"
            else:
                self._start_ingest(settings)
        if {"reasoner", "api", "alerts"} & set(self.roles):
            self._start_reasoner(settings)
        if "alerts" in self.roles:
            self._start_alerts(settings)
        if self.skipped:
            log.info(
                "not started: %s",
                "; ".join(f"{role} ({why})" for role, why in self.skipped.items()),
            )

    def _start_memory(self, settings: Settings) -> None:
        from memory import open_store

        self.store = open_store(settings.memory, settings.data_dir)
        self.state.memory = self.store
        self.state.ready_checks["memory"] = self.store.ping
        self._spawn("memory-retention", self._retention_loop)
        self.started.append("memory")

    def _start_encoder(self, settings: Settings) -> None:
        cfg = settings.encoder
        if cfg.model_dir is None:
            self.skipped["encoder"] = "no model directory (set encoder.model_dir)"
            return
        from encoder_trt.artifacts import open_encoder
        from encoder_trt.worker import EncoderMetrics, EncoderWorker
        from memory.codec import encode_tokens
        from memory.store import MemoryBackpressure, MemoryUnavailable

        backend = open_encoder(
            cfg.backend,
            cfg.model_dir,
            cfg.engine_cache_dir or settings.data_dir / "engines",
            device=cfg.device,
            dtype=cfg.dtype,
            max_batch=cfg.max_batch,
        )
        assert self.bus is not None
        bus = self.bus
        worker = EncoderWorker(
            bus.consumer(settings.bus.clips_topic, "encoder"),
            backend,
            self.store,
            quantise=encode_tokens,
            token_dtype=settings.memory.token_dtype,
            max_batch=cfg.max_batch,
            batch_timeout_s=cfg.batch_timeout_ms / 1000,
            dead_letter=bus.dead_letter,
            retryable=(MemoryBackpressure, MemoryUnavailable),
            metrics=EncoderMetrics(self.metrics),
            queue_depth=(
                (lambda: bus.lag(settings.bus.clips_topic, "encoder"))
                if isinstance(bus, InProcessBus)
                else None  # Kafka lag comes from the broker's tooling (tansu misreports it)
            ),
        )
        self.encoder_worker = worker
        self._spawn("encoder", lambda: worker.run(self._stop))
        self.started.append("encoder")

    def _start_reasoner(self, settings: Settings) -> None:
        """A remote reasoner client when reasoner.url is set, else a local model if this
        process runs the reasoner role (or serves everything, as `serve` does)."""
        cfg = settings.reasoner
        token = cfg.service_token.get_secret_value() if cfg.service_token else None
        if cfg.url and "reasoner" not in self.roles:
            from reasoner.service import HttpReasoner

            self.state.reasoner = HttpReasoner(cfg.url, timeout_s=cfg.timeout_s, token=token)
            self.started.append("reasoner-client")
            return
        if "reasoner" not in self.roles:
            return
        model_dir = cfg.model_dir or settings.encoder.model_dir
        if model_dir is None:
            self.skipped["reasoner"] = "no model directory (set reasoner.model_dir)"
            return
        from reasoner.engine import LocalReasoner
        from reasoner.scheduler import EngineService

        local = LocalReasoner.from_config(
            cfg.model_copy(update={"model_dir": model_dir}),
            self.store,
            s0=settings.ingest.level0_interval_s,
        )
        self.reasoner_service = EngineService(local)
        self.state.reasoner = self.reasoner_service
        self.started.append("reasoner")

    def _start_alerts(self, settings: Settings) -> None:
        if self.state.reasoner is None:
            self.skipped["alerts"] = "no reasoner (local model or reasoner.url) to score rules"
            return
        from alerts import (
            AlertMetrics,
            AlertScheduler,
            DeliveryWorker,
            build_sinks,
            delivery_config,
        )
        from alerts.leadership import open_leadership

        cfg = settings.alerts
        metrics = AlertMetrics()
        self.state.metrics_registries.append(metrics.registry)
        # Which cameras this replica schedules: advisory-lock shards on PostgreSQL, all of them
        # on SQLite (see alerts.leadership).
        self.alert_leadership = open_leadership(
            self.state.engine, cfg.shards, poll_s=cfg.leadership_poll_s, metrics=metrics
        )
        self.alert_scheduler = AlertScheduler(
            self.state.engine,
            self.store,
            self.state.reasoner,
            metrics=metrics,
            leadership=self.alert_leadership,
        )
        sinks = build_sinks(
            cfg,
            kafka_bootstrap=settings.bus.kafka_bootstrap if settings.bus.kind == "kafka" else None,
            mqtt=(cfg.mqtt_host, cfg.mqtt_port) if cfg.mqtt_host else None,
        )
        self.delivery = DeliveryWorker(
            self.state.engine, sinks, config=delivery_config(cfg), metrics=metrics
        )
        self.alert_leadership.start()
        self.alert_scheduler.start()
        self.delivery.start()
        self.started.append("alerts")

    def _start_ingest(self, settings: Settings) -> None:
        from ingest import Supervisor, WorkerSettings, clip_publisher

        assert self.bus is not None
        size = model_image_size(settings.encoder.model_dir)
        self.supervisor = Supervisor(
            registry_cameras(self.state.engine),
            clip_publisher(self.bus, settings.bus.clips_topic),
            WorkerSettings.from_config(settings.ingest, frame_size=size),
            on_status=StatusWriter(self.state.engine),
            replica_index=settings.ingest.replica_index,
            replica_count=settings.ingest.replica_count,
        )
        from ingest.metrics import IngestCollector

        self.metrics.register(IngestCollector(self.supervisor, self.bus))
        self.supervisor.start()
        self._spawn("ingest-status", self._status_loop)
        self.started.append("ingest")

    def _status_loop(self) -> None:
        """Workers report state changes themselves; frame times and counters are polled."""
        writer = StatusWriter(self.state.engine)
        while not self._stop.wait(STATUS_POLL_S):
            try:
                for camera_id, status in self.supervisor.status().items():
                    writer(camera_id, status)
            except Exception:
                log.exception("camera status update failed")

    def _retention_loop(self) -> None:
        while not self._stop.wait(TRIM_EVERY_S):
            try:
                removed = self.store.trim()
                if removed:
                    log.info("retention removed %d clips", removed)
            except Exception:
                log.exception("retention pass failed")

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Ingest first (no new clips), then the encoder drains, alerts finish their pass
        and deliveries in flight, the reasoner stops, then memory closes."""
        if self.supervisor is not None:
            self.supervisor.stop()
        self._stop.set()
        if self.alert_scheduler is not None:
            self.alert_scheduler.stop()
        if self.alert_leadership is not None:  # after the last commit: the standby takes over
            self.alert_leadership.stop()
        if self.delivery is not None:
            self.delivery.stop()
        if self.reasoner_service is not None:
            self.reasoner_service.close()
        closer = getattr(self.state.reasoner, "close", None)
        if closer is not None and self.reasoner_service is None:
            closer()
        for thread in self._threads:
            thread.join(timeout_s)
        if self.bus is not None:
            self.bus.close()
        if self.store is not None:
            self.store.close()
