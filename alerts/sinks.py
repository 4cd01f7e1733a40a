"""Notification sinks: signed webhook, Kafka topic, MQTT. The API's SSE stream reads Alert
rows directly and needs no sink.

Each sink sends one `AlertEvent` to one target and either returns (delivered) or raises
`DeliveryError` saying whether a retry could help. Retrying, backoff and bookkeeping belong to
the delivery worker (alerts/delivery.py); sinks hold only connections.

Delivery is at-least-once (a worker killed after sending but before recording it sends again),
so every sink carries the alert's dedup key for receivers to deduplicate: the webhook's
`Idempotency-Key` header, the Kafka record key, and `dedup_key` in every payload.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx
import msgspec

from alerts.policy import classify_http_status
from flashwatch.messages import AlertEvent, encode
from flashwatch.security import (
    NetworkPolicy,
    UrlPolicyError,
    safe_error,
    sign_webhook,
    validate_webhook_url,
)

SIGNATURE_HEADER = "X-FlashWatch-Signature"
TIMESTAMP_HEADER = "X-FlashWatch-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_MAX_RETRY_AFTER_S = 3600.0


class DeliveryError(Exception):
    """A failed send. `retry` False means retrying cannot help (e.g. 4xx, redirect, bad URL)."""

    def __init__(self, message: str, *, retry: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.retry_after_s = retry_after_s


class Sink(Protocol):
    def send(self, target: str, event: AlertEvent) -> None: ...

    def close(self) -> None: ...


def event_json(event: AlertEvent) -> bytes:
    return msgspec.json.encode(event)


def _retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None  # HTTP-date form ignored: our own backoff applies
    return min(_MAX_RETRY_AFTER_S, float(value.strip()))


class WebhookSink:
    """POST the event as JSON, HMAC-signed over `"{timestamp}." + body`, never following
    redirects (a signed request must not be replayed to a host nobody configured)."""

    def __init__(
        self,
        secret: bytes,
        *,
        timeout_s: float = 5.0,
        policy: NetworkPolicy | None = None,
        allow_http: bool = False,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not secret:
            raise ValueError("a webhook secret is required: every request is signed")
        self._secret = secret
        self._policy = policy
        self._allow_http = allow_http
        self._clock = clock
        self._client = httpx.Client(
            timeout=timeout_s, follow_redirects=False, transport=transport, trust_env=False
        )

    def send(self, target: str, event: AlertEvent) -> None:
        if self._policy is not None:  # the URL was checked at rule creation; policy may change
            try:
                target = validate_webhook_url(target, self._policy, allow_http=self._allow_http)
            except UrlPolicyError as exc:
                raise DeliveryError(str(exc), retry=False) from None
        body = event_json(event)
        stamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(stamp),
            SIGNATURE_HEADER: sign_webhook(self._secret, stamp, body),
            IDEMPOTENCY_HEADER: event.dedup_key,
            "User-Agent": "FlashWatch-Alerts/1",
        }
        try:
            resp = self._client.post(target, content=body, headers=headers)
        except httpx.HTTPError as exc:  # connect refused, timeout, reset: worth retrying
            raise DeliveryError(safe_error(exc), retry=True) from None
        verdict = classify_http_status(resp.status_code)
        if verdict == "ok":
            return
        what = "redirect not followed" if resp.is_redirect else "refused"
        raise DeliveryError(
            f"HTTP {resp.status_code} ({what})",
            retry=verdict == "retry",
            retry_after_s=_retry_after(resp.headers.get("Retry-After")),
        )

    def close(self) -> None:
        self._client.close()


class KafkaSink:
    """Publish the msgpack `AlertEvent` (the project's wire format) keyed by dedup key."""

    def __init__(
        self, bootstrap: str, *, timeout_s: float = 10.0, producer: Any | None = None
    ) -> None:
        self._bootstrap = bootstrap
        self._timeout_s = timeout_s
        self._producer = producer
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._producer is None:
                from kafka import KafkaProducer

                self._producer = KafkaProducer(
                    bootstrap_servers=self._bootstrap,
                    acks="all",
                    retries=0,  # the outbox retries, with backoff and a record of failures
                    request_timeout_ms=int(self._timeout_s * 1000),
                    max_block_ms=int(self._timeout_s * 1000),
                )
            return self._producer

    def send(self, target: str, event: AlertEvent) -> None:
        try:
            fut = self._get().send(target, value=encode(event), key=event.dedup_key.encode())
            fut.get(timeout=self._timeout_s)
        except Exception as exc:
            raise DeliveryError(safe_error(exc), retry=True) from None

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=2)
                self._producer = None


def mqtt_topic(template: str, camera_name: str, rule_name: str) -> str:
    """The topic for one alert: `{camera}`/`{rule}` placeholders are filled in, otherwise
    `/<camera>/<rule>` is appended (e.g. `flashwatch` -> `flashwatch/gate/fence-climb`), the
    per-camera/per-rule layout Home Assistant and Frigate users subscribe to."""

    def part(name: str) -> str:
        cleaned = "".join("_" if c in "/+#\x00" else c for c in name.strip())
        return cleaned or "_"

    cam, rule = part(camera_name), part(rule_name)
    if "{camera}" in template or "{rule}" in template:
        return template.replace("{camera}", cam).replace("{rule}", rule)
    return f"{template.rstrip('/')}/{cam}/{rule}"


class MqttSink:
    """Publish JSON at QoS 1 and wait for the broker's PUBACK (paho-mqtt, one connection)."""

    def __init__(
        self,
        host: str,
        port: int = 1883,
        *,
        timeout_s: float = 5.0,
        client_id: str = "",
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self._addr = (host, port)
        self._timeout_s = timeout_s
        self._client_id = client_id
        self._auth = (username, password)
        self._client: Any | None = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        if self._client is None:
            import paho.mqtt.client as mqtt

            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2, client_id=self._client_id, protocol=mqtt.MQTTv311
            )
            if self._auth[0] is not None:
                client.username_pw_set(self._auth[0], self._auth[1])
            client.connect(self._addr[0], self._addr[1], keepalive=30)
            client.loop_start()
            self._client = client
        return self._client

    def send(self, target: str, event: AlertEvent) -> None:
        topic = mqtt_topic(target, event.camera_name, event.rule_name)
        with self._lock:
            try:
                info = self._get().publish(topic, event_json(event), qos=1)
                info.wait_for_publish(timeout=self._timeout_s)
                ok = info.is_published()
            except Exception as exc:
                self._reset()
                raise DeliveryError(safe_error(exc), retry=True) from None
            if not ok:
                self._reset()
                raise DeliveryError("MQTT publish not acknowledged in time", retry=True)

    def _reset(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # already broken; a fresh client comes next
                self._client.loop_stop()
                self._client.disconnect()
            self._client = None

    def close(self) -> None:
        with self._lock:
            self._reset()
