"""`KafkaBus`: the `flashwatch.bus.Bus` protocol on Kafka (kafka-python), for distributed mode.

Producing (ingest side)
    `publish()` never blocks and never talks to the network: it appends to a bounded local
    buffer and returns. A sender thread moves records to an idempotent kafka-python producer
    (`acks=all`, `enable_idempotence`) and removes them from the buffer only once the broker
    acknowledged them. While the broker is down (ACCEPTANCE D1) records wait in the buffer;
    when it is full the *oldest* are dropped and counted (`stats.dropped`): fresh video
    matters more than stale video. Failed sends go back to the front of the buffer and are
    retried with backoff, so delivery is at-least-once; clip ids are deterministic, so a
    duplicate is an idempotent overwrite downstream. The producer itself is created lazily
    and re-created after failures, so ingest starts even when the broker is not up yet.
    Records are keyed by camera id: one camera stays on one partition, in order.

    Every record's size is counted before it is accepted; one over `max_message_bytes`
    (below the broker's default 1 MiB `message.max.bytes`) raises `MessageTooLargeError`.

Consuming (encoder side)
    Group members with `enable_auto_commit=False`; `commit(records)` commits explicitly
    after the consumer's work is durable; `rewind()` seeks back to the committed offsets. A
    commit that fails because of a rebalance is logged and counted, not raised: the records
    come back to whichever member owns the partition next (D3). Against tansu a group join
    takes ~5 s and end offsets are wrong (environment notes §5), so nothing here uses them.
    Measured here: the join takes ~23 s with kafka-python's defaults (session 10 s,
    max.poll.interval 300 s) and ~3 s with `session_timeout_s=6`, heartbeat 2 s and
    `max_poll_interval_s=60`, which are therefore the defaults (a consumer that does not
    poll within 60 s is considered dead and its partitions move).

Dead letters (D4)
    `dead_letter(record, reason)` copies an undecodable record to the dead-letter topic with
    the reason and its origin in headers; the caller then commits it so the offset advances.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata, TopicPartition

from flashwatch.bus import Record
from flashwatch.security import safe_error

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
# (topic, key, value, acknowledged): called once per record when the broker acknowledged it
# (True) or the full buffer dropped it (False); the acceptance ledger hangs off this.
DeliveryFn = Callable[[str, bytes | None, bytes, bool], None]
RECORD_OVERHEAD_BYTES = 512  # record + batch headers, generously


class MessageTooLargeError(ValueError):
    """A record that the broker would refuse."""


@dataclass
class BusStats:
    published: int = 0
    sent: int = 0
    dropped: int = 0
    send_failures: int = 0
    commit_failures: int = 0
    dead_lettered: int = 0
    buffered: int = 0
    buffered_bytes: int = 0


@dataclass
class _Pending:
    topic: str
    value: bytes
    key: bytes | None
    headers: Headers | None

    @property
    def size(self) -> int:
        heads = sum(len(k) + len(v) for k, v in self.headers or ())
        return len(self.value) + len(self.key or b"") + heads + RECORD_OVERHEAD_BYTES


class KafkaBus:
    """Thread-safe Kafka implementation of `Bus`. `close()` when done."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "flashwatch",
        buffer_records: int = 10_000,
        buffer_bytes: int = 512 * 1024 * 1024,
        max_message_bytes: int = 1_000_000,
        batch_records: int = 256,
        request_timeout_s: float = 10.0,
        delivery_timeout_s: float = 30.0,
        retry_backoff_s: float = 0.5,
        dead_letter_topic: str = "fw.dead-letter",
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        security_protocol: str | None = None,
        session_timeout_s: float = 6.0,
        max_poll_interval_s: float = 60.0,
        on_delivery: DeliveryFn | None = None,
    ) -> None:
        if buffer_records < 1 or max_message_bytes < 1024:
            raise ValueError("buffer_records must be >= 1 and max_message_bytes >= 1024")
        self.bootstrap = bootstrap
        self.max_message_bytes = max_message_bytes
        self.buffer_records = buffer_records
        self.buffer_bytes = buffer_bytes
        self.batch_records = batch_records
        self.dead_letter_topic = dead_letter_topic
        self.retry_backoff_s = retry_backoff_s
        self._on_delivery = on_delivery
        self.delivery_timeout_s = delivery_timeout_s
        self._common: dict[str, Any] = {
            "bootstrap_servers": bootstrap.split(","),
            "client_id": client_id,
        }
        if sasl_username is not None:
            self._common.update(
                security_protocol=security_protocol or "SASL_SSL",
                sasl_mechanism="PLAIN",
                sasl_plain_username=sasl_username,
                sasl_plain_password=sasl_password,
            )
        elif security_protocol is not None:
            self._common["security_protocol"] = security_protocol
        delivery_ms = int(delivery_timeout_s * 1000)
        request_ms = min(int(request_timeout_s * 1000), delivery_ms - 1)
        self._producer_config: dict[str, Any] = {
            **self._common,
            "acks": "all",
            "enable_idempotence": True,
            "max_in_flight_requests_per_connection": 5,
            "linger_ms": 5,
            "max_request_size": max_message_bytes + 64 * 1024,
            "request_timeout_ms": request_ms,
            "delivery_timeout_ms": delivery_ms,
            "max_block_ms": 5000,
            "retry_backoff_ms": int(retry_backoff_s * 1000),
        }
        self._consumer_config: dict[str, Any] = {
            **self._common,
            "session_timeout_ms": int(session_timeout_s * 1000),
            "heartbeat_interval_ms": max(100, int(session_timeout_s * 1000 / 3)),
            "max_poll_interval_ms": int(max_poll_interval_s * 1000),
        }
        self.stats = BusStats()
        self._buffer: deque[_Pending] = deque()
        self._inflight = 0
        self._cond = threading.Condition()
        self._closed = False
        self._producer: KafkaProducer | None = None
        self._sender = threading.Thread(
            target=self._send_loop, name="kafka-bus-sender", daemon=True
        )
        self._sender.start()

    # ---- Bus ------------------------------------------------------------------------

    def publish(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        """Queue one record for sending; returns at once (see the module docstring)."""
        item = _Pending(topic, value, key, headers)
        if item.size > self.max_message_bytes:
            raise MessageTooLargeError(
                f"record of {item.size} bytes exceeds max_message_bytes {self.max_message_bytes}"
            )
        with self._cond:
            if self._closed:
                raise RuntimeError("bus is closed")
            self._buffer.append(item)
            self.stats.published += 1
            self.stats.buffered_bytes += item.size
            self._trim()
            self._cond.notify_all()

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every published record is acknowledged; TimeoutError otherwise."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._buffer or self._inflight:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"{len(self._buffer) + self._inflight} records not acknowledged "
                        f"after {timeout_s} s"
                    )
                self._cond.wait(remaining)

    def consumer(self, topic: str, group: str) -> KafkaBusConsumer:
        return KafkaBusConsumer(self._consumer_config, topic, group, self.stats)

    def close(self, timeout_s: float = 5.0) -> None:
        """Try to deliver what is buffered for up to `timeout_s`, then stop."""
        try:
            self.flush(timeout_s)
        except TimeoutError as exc:
            log.warning("kafka bus: closing with undelivered records: %s", exc)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._sender.join(timeout_s + self.delivery_timeout_s)
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=timeout_s)

    # ---- dead letters and admin -----------------------------------------------------

    def dead_letter(self, record: Record, reason: str) -> None:
        """Copy a poison record to the dead-letter topic with why and where it came from."""
        headers: Headers = [
            ("fw-reason", reason[:1000].encode()),
            ("fw-topic", record.topic.encode()),
            ("fw-partition", str(record.partition).encode()),
            ("fw-offset", str(record.offset).encode()),
        ]
        self.publish(self.dead_letter_topic, record.value, key=record.key, headers=headers)
        with self._cond:
            self.stats.dead_lettered += 1

    def ensure_topics(self, partitions: dict[str, int], replication: int = 1) -> None:
        """Create missing topics (idempotent)."""
        admin = KafkaAdminClient(**self._common)
        try:
            existing = set(admin.list_topics())
            new = [
                NewTopic(name, num_partitions=n, replication_factor=replication)
                for name, n in partitions.items()
                if name not in existing
            ]
            if new:
                with contextlib.suppress(TopicAlreadyExistsError):  # another replica won
                    admin.create_topics(new)
        finally:
            admin.close()

    @property
    def buffered(self) -> int:
        with self._cond:
            return len(self._buffer) + self._inflight

    # ---- sender ---------------------------------------------------------------------

    def _trim(self) -> None:
        """Drop the oldest queued records beyond the bounds (caller holds the lock)."""
        while self._buffer and (
            len(self._buffer) > self.buffer_records or self.stats.buffered_bytes > self.buffer_bytes
        ):
            gone = self._buffer.popleft()
            self.stats.buffered_bytes -= gone.size
            self.stats.dropped += 1
            self._notify(gone, ok=False)
        self.stats.buffered = len(self._buffer)

    def _notify(self, item: _Pending, ok: bool) -> None:
        if self._on_delivery is None:
            return
        try:
            self._on_delivery(item.topic, item.key, item.value, ok)
        except Exception as exc:  # a broken hook must not stop delivery
            log.warning("kafka bus: on_delivery failed: %s", safe_error(exc))

    def _send_loop(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self._buffer and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch = [
                    self._buffer.popleft()
                    for _ in range(min(self.batch_records, len(self._buffer)))
                ]
                self._inflight = len(batch)
                self.stats.buffered = len(self._buffer)
            failed = self._send(batch)
            if self._on_delivery is not None:
                failed_ids = {id(item) for item in failed}
                for item in batch:
                    if id(item) not in failed_ids:
                        self._notify(item, ok=True)
            with self._cond:
                for item in batch:
                    self.stats.buffered_bytes -= item.size
                self.stats.sent += len(batch) - len(failed)
                if failed:  # back to the front, oldest first, still bounded
                    self.stats.send_failures += len(failed)
                    for item in reversed(failed):
                        self._buffer.appendleft(item)
                        self.stats.buffered_bytes += item.size
                    self._trim()
                self._inflight = 0
                self._cond.notify_all()
            failures = failures + 1 if failed else 0
            if failed:
                with self._cond:
                    self._cond.wait_for(
                        lambda: self._closed,
                        min(30.0, self.retry_backoff_s * 2 ** min(failures, 6)),
                    )

    def _send(self, batch: list[_Pending]) -> list[_Pending]:
        """Send a batch and wait for the acks; returns the records that failed."""
        try:
            producer = self._producer_or_connect()
            futures = [
                producer.send(item.topic, value=item.value, key=item.key, headers=item.headers)
                for item in batch
            ]
            producer.flush(timeout=self.delivery_timeout_s + 5)
        except KafkaError as exc:
            log.warning("kafka bus: send failed, will retry: %s", safe_error(exc))
            self._reset_producer()
            return batch
        failed = [item for item, fut in zip(batch, futures, strict=True) if not fut.succeeded()]
        if failed:
            cause = next((f.exception for f in futures if f.failed()), None)
            log.warning(
                "kafka bus: %d of %d records not acknowledged, will retry: %s",
                len(failed),
                len(batch),
                safe_error(cause) if isinstance(cause, BaseException) else "timeout",
            )
            # A restarted broker no longer knows our producer id (UnknownProducerId), and
            # kafka-python's idempotent producer does not recover from that: start afresh.
            self._reset_producer()
        return failed

    def _producer_or_connect(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(**self._producer_config)
        return self._producer

    def _reset_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception as exc:  # a broken producer may fail to close; drop it anyway
                log.debug("kafka bus: producer close: %s", safe_error(exc))


class KafkaBusConsumer:
    """One group member on one topic (manual commits)."""

    def __init__(self, config: dict[str, Any], topic: str, group: str, stats: BusStats) -> None:
        self.topic = topic
        self.group = group
        self._stats = stats
        self._consumer = KafkaConsumer(
            **config,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._consumer.subscribe([topic])

    def poll(self, max_records: int = 64, timeout_s: float = 1.0) -> list[Record]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out = [
            Record(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ()))
            for records in batches.values()
            for r in records
        ]
        out.sort(key=lambda r: (r.partition, r.offset))
        return out

    def commit(self, records: list[Record]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        if not offsets:
            return
        try:
            self._consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except CommitFailedError as exc:
            self._stats.commit_failures += 1
            log.warning(
                "kafka bus: commit failed (rebalance?), records will be redelivered: %s",
                safe_error(exc),
            )

    def rewind(self) -> None:
        """Seek every assigned partition back to its committed offset (or the beginning)."""
        for tp in self._consumer.assignment():
            committed = self._consumer.committed(tp)
            if committed is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)

    def close(self) -> None:
        self._consumer.close(autocommit=False)
