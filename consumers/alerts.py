"""SLA breach alerts, delivered at least once to Kafka (`leadledger.alerts`) and to a webhook.

An SLA rule whose `on_breach` includes `alert` turns each of its `LeadSLABreached` events into an
alert: a CloudEvent (structured JSON) with the breach event's id, type
`leadledger.alert.sla_breached.v1`, subject the lead id, time the breach (the deadline) and data
{lead_id, sla, started_at, deadline, owner, policy_version, breached_at}. The rule is looked up in
the policy version the breach names (a later version that drops `alert` does not recall it). An
alert carries no personal data: the lead id and the breach facts only.

`AlertDispatcher` follows the store's notification log once per sink, from a position of its own
kept in the store (`relay_position("alerts:kafka")`, `"alerts:webhook"`). Each sink is handed the
alerts after its position, a chunk at a time, and its position moves past a chunk only once the
sink has delivered it (Kafka: every record acknowledged after a flush; the webhook: a 2xx). A crash
in between re-sends that chunk: receivers de-duplicate by the CloudEvent `id` (also the webhook's
`Idempotency-Key` and Kafka's `ce_id` header). A sink that fails keeps its position and is tried
again on the next run; the other sink goes on. The webhook dead-letters an alert its receiver
refuses for good (a 4xx other than 408/429) to `HOME/alerts.dead.jsonl`, with the reason, and moves
on: nothing is dropped without a trace.

A breach event that fails its hash check stops the dispatcher there (like the relay): the alerts
before it are delivered, then `run_once` raises CorruptEvent. A breach that names a policy version
or rule the store does not hold (a damaged policy stream) is alerted: an alert too many rather than
one lost.
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import os
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import orjson
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from consumers.kafka.settings import KafkaSettings
from consumers.relay import make_producer
from lifecycle.policies import PolicyStream, PolicyTimeline
from lifecycle.settings import EnvSettings
from lifecycle.store.repository import LeadStore
from lifecycle.store.sqlite import RawRow
from schemas.codec import (
    SOURCE,
    CorruptEvent,
    EventRecord,
    canonical,
    checked_record,
    format_time,
    parse_time,
)

log = logging.getLogger("leadledger.alerts")

ALERT_TYPE = "leadledger.alert.sla_breached.v1"
ALERTS_TOPIC = "leadledger.alerts"
DEAD_LETTER_FILE = "alerts.dead.jsonl"
#: a sink's position in the store is `alerts:<sink name>`
POSITION_PREFIX = "alerts:"
CONTENT_TYPE = "application/cloudevents+json"

_BREACHED = "LeadSLABreached"
_BREACHED_BYTES = _BREACHED.encode()  # a cheap test before an event is parsed
_REASON_CHARS = 500  # of a refusing receiver's answer, kept in the dead letter

#: waits `seconds`; True when the dispatcher was asked to stop meanwhile
Wait = Callable[[float], bool]


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False


def _user_agent() -> str:
    try:
        return f"leadledger/{metadata.version('leadledger')}"
    except metadata.PackageNotFoundError:
        return "leadledger/unknown"


# ---------------------------------------------------------------- settings


class AlertSettings(EnvSettings):
    """Where alerts go and how hard the webhook is tried (`LEADLEDGER_ALERT_*`).

    WEBHOOK: the URL alerts are POSTed to (unset: no webhook); RETRIES: attempts per alert in one
    run; BACKOFF / BACKOFF_MAX: the first pause between attempts and its cap, in seconds (it doubles
    each time); TIMEOUT: seconds per request; TOPIC: the Kafka topic (when Kafka is configured)."""

    model_config = SettingsConfigDict(env_prefix="LEADLEDGER_ALERT_", env_ignore_empty=True, frozen=True,
                                      extra="ignore")

    webhook: str | None = Field(default=None, repr=False, description="URL alerts are POSTed to.")
    retries: int = Field(default=5, ge=1, le=100, description="Attempts per alert in one run.")
    backoff: float = Field(default=0.5, gt=0, le=3600, description="First pause between attempts (s).")
    backoff_max: float = Field(default=30.0, gt=0, le=3600, description="Longest pause between attempts (s).")
    timeout: float = Field(default=10.0, gt=0, le=600, description="Seconds per webhook request.")
    topic: str = Field(default=ALERTS_TOPIC, min_length=1, description="Kafka topic of the alerts.")

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urllib.parse.urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value.strip()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AlertSettings:
        settings: AlertSettings = cls.read_env(env)
        return settings


# ---------------------------------------------------------------- alerts


@dataclass(frozen=True)
class Alert:
    """One alert: the breach's notification id, the lead, and the CloudEvent."""

    position: int
    lead_id: str
    event: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.event["id"])

    @property
    def body(self) -> bytes:
        """The CloudEvent as canonical JSON (the Kafka value and the webhook body)."""
        return canonical(self.event)


def _instant(value: Any) -> str:
    return format_time(parse_time(str(value)))


def alert_event(record: EventRecord) -> dict[str, Any]:
    """The alert CloudEvent of a `LeadSLABreached` record (no personal data)."""
    data = record.data
    lead_id = str(record.lead_id)
    breached_at = format_time(record.occurred_at)
    return {
        "specversion": "1.0",
        "id": record.event_id,
        "source": SOURCE,
        "type": ALERT_TYPE,
        "subject": lead_id,
        "time": breached_at,
        "datacontenttype": "application/json",
        "data": {
            "lead_id": lead_id,
            "sla": str(data["sla"]),
            "started_at": _instant(data["started_at"]),
            "deadline": _instant(data["deadline"]),
            "owner": data.get("owner"),
            "policy_version": int(data["policy_version"]),
            "breached_at": breached_at,
        },
    }


class _Rules:
    """Whether a breach of (policy version, rule) alerts; versions read again when one is missing."""

    def __init__(self, store: LeadStore) -> None:
        self.stream = PolicyStream(store)
        self._timeline: PolicyTimeline | None = None
        self._answers: dict[tuple[int, str], bool] = {}

    def alerts(self, version: int, sla: str) -> bool:
        key = (version, sla)
        found = self._answers.get(key)
        if found is not None:
            return found
        timeline = self._timeline
        if timeline is None or timeline.version(version) is None:
            timeline = self._timeline = PolicyTimeline(self.stream.versions())
        published = timeline.version(version)
        rule = None if published is None else next((r for r in published.policy.sla if r.id == sla), None)
        if rule is None:
            log.warning("a breach of SLA %r names policy version %d, which %s: alerted anyway", sla, version,
                        "does not exist" if published is None else "has no such rule")
            return True  # not cached: a version published later may still answer
        answer = self._answers[key] = "alert" in rule.on_breach
        return answer


# ---------------------------------------------------------------- sinks


@dataclass
class Delivery:
    """What a sink did with the alerts it was handed: the first `handled` were delivered (or, for
    the webhook, dead-lettered) and the position may pass them; `error` says why the next was not."""

    handled: int
    sent: int = 0
    dead_lettered: int = 0
    error: str | None = None


class Sink(Protocol):
    #: names the sink's position (`alerts:<name>`) and its counts
    name: str
    #: alerts handed over at once; the position is stored after each chunk
    chunk_size: int

    def ready(self) -> bool:
        """False while the sink waits before its next attempt (a receiver's Retry-After)."""

    def deliver(self, alerts: Sequence[Alert], wait: Wait) -> Delivery: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class _Answer:
    outcome: str  # delivered | permanent | transient
    reason: str = ""
    status: int | None = None
    retry_after: float | None = None


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header: seconds, or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _opener() -> urllib.request.OpenerDirector:
    """HTTP(S) without redirects or error raising: every answer comes back as it is."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(),
                    urllib.request.HTTPSHandler(context=ssl.create_default_context())):
        opener.add_handler(handler)
    return opener


class WebhookSink:
    """POSTs each alert (in log order) with retries and backoff; dead-letters permanent refusals.

    2xx: delivered. 408, 429, 5xx, 3xx (redirects are not followed) and network errors: tried
    again after 0.5 s, 1 s, 2 s … (capped), up to `attempts` times per run, a Retry-After on a 429 or
    503 taking the place of the pause (one longer than the cap ends the run, and the next run waits
    for it). Other 4xx: the receiver refuses this alert for good: appended to `dead_letters` with
    the reason, then the next alert."""

    chunk_size = 1  # a POST is slow next to storing the position: a crash re-sends one alert

    def __init__(self, url: str, *, dead_letters: Path, name: str = "webhook", attempts: int = 5,
                 backoff_s: float = 0.5, backoff_max_s: float = 30.0, timeout_s: float = 10.0,
                 user_agent: str | None = None) -> None:
        self.url = url
        self.name = name
        self.dead_letters = dead_letters
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.backoff_max_s = max(backoff_s, backoff_max_s)
        self.timeout_s = timeout_s
        self.user_agent = user_agent or _user_agent()
        self._opener = _opener()
        self._not_before = 0.0  # monotonic time before which no attempt is made (Retry-After)
        parts = urllib.parse.urlsplit(url)
        self.target = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"  # no secrets

    @classmethod
    def from_settings(cls, settings: AlertSettings, home: Path) -> WebhookSink:
        if settings.webhook is None:
            raise ValueError("LEADLEDGER_ALERT_WEBHOOK is not set")
        return cls(settings.webhook, dead_letters=home / DEAD_LETTER_FILE, attempts=settings.retries,
                   backoff_s=settings.backoff, backoff_max_s=settings.backoff_max, timeout_s=settings.timeout)

    def ready(self) -> bool:
        return time.monotonic() >= self._not_before

    def deliver(self, alerts: Sequence[Alert], wait: Wait) -> Delivery:
        done = Delivery(0)
        for alert in alerts:
            answer = self._post_with_retries(alert, wait)
            if answer.outcome == "transient":
                done.error = f"webhook {self.target}: {answer.reason}"
                return done
            if answer.outcome == "permanent":
                try:
                    self._dead_letter(alert, answer)
                except OSError as exc:
                    done.error = f"webhook {self.target}: {answer.reason}, and its dead letter could not be " \
                                 f"written to {self.dead_letters}: {exc}"
                    return done
                log.warning("alert %s refused by the webhook (%s): written to %s", alert.id, answer.reason,
                            self.dead_letters)
                done.dead_lettered += 1
            else:
                done.sent += 1
            done.handled += 1
        return done

    def _post_with_retries(self, alert: Alert, wait: Wait) -> _Answer:
        pause = self.backoff_s
        answer = _Answer("transient", "not tried")
        for attempt in range(1, self.attempts + 1):
            answer = self._post(alert)
            if answer.outcome != "transient":
                return answer
            delay = answer.retry_after if answer.retry_after is not None else pause
            pause = min(pause * 2, self.backoff_max_s)
            if attempt == self.attempts or delay > self.backoff_max_s:
                if answer.retry_after is not None:  # the next run waits as asked
                    self._not_before = time.monotonic() + answer.retry_after
                return _Answer("transient", f"{answer.reason} (attempt {attempt} of {self.attempts})",
                               answer.status, answer.retry_after)
            log.info("alert %s: %s; attempt %d of %d in %.2fs", alert.id, answer.reason, attempt + 1,
                     self.attempts, delay)
            if wait(delay):
                return _Answer("transient", f"{answer.reason} (stopped before attempt {attempt + 1})")
        return answer

    def _post(self, alert: Alert) -> _Answer:
        request = urllib.request.Request(self.url, data=alert.body, method="POST", headers={
            "Content-Type": CONTENT_TYPE,
            "Idempotency-Key": alert.id,
            "User-Agent": self.user_agent,
        })
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                status = int(response.status)
                text = response.read(_REASON_CHARS + 1)
                retry_after = response.headers.get("Retry-After")
        except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError, timeouts, resets
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return _Answer("transient", f"request failed: {reason!r}")
        if 200 <= status < 300:
            return _Answer("delivered", status=status)
        said = text.decode("utf-8", "replace").strip()[:_REASON_CHARS]
        reason = f"HTTP {status}" + (f": {said}" if said else "")
        if 300 <= status < 400:
            reason += " (redirects are not followed: set LEADLEDGER_ALERT_WEBHOOK to the final URL)"
        if 400 <= status < 500 and status not in (408, 429):
            return _Answer("permanent", reason, status)
        wait = retry_after_seconds(retry_after) if status in (429, 503) else None
        return _Answer("transient", reason, status, wait)

    def _dead_letter(self, alert: Alert, answer: _Answer) -> None:
        line = orjson.dumps({
            "dead_lettered_at": format_time(datetime.now(UTC)),
            "sink": self.name,
            "reason": answer.reason,
            "status": answer.status,
            "alert": alert.event,
        }) + b"\n"
        self.dead_letters.parent.mkdir(parents=True, exist_ok=True)
        with self.dead_letters.open("ab") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())

    def close(self) -> None:
        self._opener.close()


def ensure_alerts_topic(settings: KafkaSettings, topic: str, timeout_s: float = 30.0) -> bool:
    """Create the alerts topic if missing (partitions and replication of `settings`); True if created."""
    timeout_ms = int(timeout_s * 1000)
    admin = KafkaAdminClient(**settings.client_kwargs(), request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)
    try:
        if topic in set(admin.list_topics()):
            return False
        try:
            admin.create_topics([NewTopic(topic, num_partitions=settings.partitions,
                                          replication_factor=settings.replication)])
        except TopicAlreadyExistsError:
            return False  # another process created it meanwhile
        return True
    finally:
        admin.close()


class KafkaSink:
    """Alerts onto a topic: key the lead id, value the whole CloudEvent (structured mode), headers
    `content-type`, `ce_id` and `ce_type`; an idempotent producer with acks=all, flushed (every record
    acknowledged) before the position moves. After a failure the producer is made again (and the
    topic created again: a broker may have lost it)."""

    def __init__(self, settings: KafkaSettings, topic: str = ALERTS_TOPIC, *, name: str = "kafka",
                 chunk_size: int = 500, max_block_ms: int = 10_000, flush_timeout_s: float = 60.0) -> None:
        self.settings = settings
        self.topic = topic
        self.name = name
        self.chunk_size = chunk_size
        self.max_block_ms = max_block_ms
        self.flush_timeout_s = flush_timeout_s
        self._producer: KafkaProducer | None = None

    def ready(self) -> bool:
        return True

    def _ready_producer(self) -> KafkaProducer:
        if self._producer is None:
            if ensure_alerts_topic(self.settings, self.topic, timeout_s=self.max_block_ms / 1000):
                log.info("created topic %s with %d partitions", self.topic, self.settings.partitions)
            self._producer = make_producer(self.settings, linger_ms=5, batch_size=64 * 1024,
                                           max_block_ms=self.max_block_ms)
        return self._producer

    def deliver(self, alerts: Sequence[Alert], wait: Wait) -> Delivery:
        futures: list[Any] = []
        error: str | None = None
        producer: KafkaProducer | None = None
        try:
            producer = self._ready_producer()
            for alert in alerts:
                headers = [("content-type", CONTENT_TYPE.encode()), ("ce_id", alert.id.encode()),
                           ("ce_type", ALERT_TYPE.encode())]
                futures.append(producer.send(self.topic, key=alert.lead_id.encode(), value=alert.body,
                                             headers=headers))
        except KafkaError as exc:
            error = f"Kafka at {self.settings.bootstrap}: {exc!r}"
        if producer is not None and futures:
            try:
                producer.flush(timeout=self.flush_timeout_s)
            except KafkaError as exc:
                error = error or f"Kafka at {self.settings.bootstrap}: flush: {exc!r}"
        handled = 0
        for future in futures:
            if not (future.is_done and future.succeeded()):
                if error is None:
                    error = f"Kafka at {self.settings.bootstrap}: not acknowledged: {future.exception!r}"
                break
            handled += 1
        if error is not None:
            self._reset()
        return Delivery(handled, sent=handled, error=error)

    def _reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=5)
            except KafkaError as exc:  # closing a broken producer must not hide the failure
                log.debug("closing the alerts producer: %r", exc)

    def close(self) -> None:
        self._reset()


# ---------------------------------------------------------------- the dispatcher


@dataclass
class SinkCounts:
    """One sink's run: alerts sent, dead-lettered, failed (a delivery that will be tried again), and
    pending (alerts after its position still to deliver, the failed one included), its position."""

    sent: int = 0
    failed: int = 0
    pending: int = 0
    dead_lettered: int = 0
    position: int = 0
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Stopper(Protocol):
    """What `run_forever` stops on (a `threading.Event`)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass
class _Scan:
    alerts: list[Alert] = field(default_factory=list)
    through: int = 0  # the last notification id scanned (past it: the next scan)
    problem: CorruptEvent | None = None


class AlertDispatcher:
    """Follows the store's log once per sink and delivers each alert to each sink at least once."""

    def __init__(self, store: LeadStore, sinks: Iterable[Sink], *, batch: int = 1000) -> None:
        self.store = store
        self.sinks = list(sinks)
        names = [s.name for s in self.sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"sink names must differ (each has its own position): {names}")
        self.batch = batch
        self._rules = _Rules(store)

    @staticmethod
    def position_name(sink: Sink) -> str:
        return f"{POSITION_PREFIX}{sink.name}"

    def position(self, sink: Sink) -> int:
        return self.store.relay_position(self.position_name(sink))

    # -- reading the log

    def _scan(self, rows: Sequence[RawRow], after: int) -> _Scan:
        """The alerts among `rows`, up to the first breach event that fails its check."""
        scan = _Scan(through=after)
        for position, lead_id, version, state in rows:
            if _BREACHED_BYTES in state:
                try:
                    record = checked_record(lead_id, version, state, f"notification {position}")
                    if record.name == _BREACHED and self._rules.alerts(int(record.data["policy_version"]),
                                                                      str(record.data["sla"])):
                        scan.alerts.append(Alert(position, str(lead_id), alert_event(record)))
                except CorruptEvent as exc:
                    scan.problem = exc
                    return scan
                except (KeyError, TypeError, ValueError) as exc:
                    scan.problem = CorruptEvent(f"lead {lead_id} version {version} (notification {position}): "
                                                f"undecodable breach: {exc!r}")
                    return scan
            scan.through = position
        return scan

    def pending(self, after: int) -> int:
        """Alerts after notification id `after` (up to a corrupt breach event)."""
        count = 0
        while True:
            rows = self.store.raw(after, self.batch)
            if not rows:
                return count
            scan = self._scan(rows, after)
            count += len(scan.alerts)
            if scan.problem is not None:
                return count
            after = scan.through

    # -- delivering

    def _run_sink(self, sink: Sink, wait: Wait) -> tuple[SinkCounts, CorruptEvent | None]:
        name = self.position_name(sink)
        position = self.store.relay_position(name)
        counts = SinkCounts(position=position)
        if not sink.ready():
            counts.pending = self.pending(position)
            counts.error = "waiting for the receiver's Retry-After"
            return counts, None
        while True:
            rows = self.store.raw(position, self.batch)
            if not rows:
                return counts, None
            scan = self._scan(rows, position)
            alerts = scan.alerts
            for start in range(0, len(alerts), max(1, sink.chunk_size)):
                chunk = alerts[start:start + max(1, sink.chunk_size)]
                done = sink.deliver(chunk, wait)
                counts.sent += done.sent
                counts.dead_lettered += done.dead_lettered
                if done.handled < len(chunk):
                    stuck = chunk[done.handled]
                    position = self._store(name, position, stuck.position - 1)
                    counts.failed += 1
                    counts.error = done.error or "not delivered"
                    counts.position = position
                    counts.pending = self.pending(position)
                    log.warning("alerts -> %s: %s; %d alerts pending, tried again from notification %d",
                                sink.name, counts.error, counts.pending, stuck.position)
                    return counts, None
                last = start + len(chunk) >= len(alerts)
                position = self._store(name, position, scan.through if last else chunk[-1].position)
            if not alerts:
                position = self._store(name, position, scan.through)
            counts.position = position
            if scan.problem is not None:
                return counts, scan.problem

    def _store(self, name: str, position: int, new: int) -> int:
        if new > position:
            self.store.set_relay_position(name, new)
            return new
        return position

    def _run(self, wait: Wait) -> dict[str, SinkCounts]:
        results: dict[str, SinkCounts] = {}
        problem: CorruptEvent | None = None
        for sink in self.sinks:
            counts, found = self._run_sink(sink, wait)
            results[sink.name] = counts
            problem = problem or found
        if problem is not None:
            raise problem
        return results

    def run_once(self) -> dict[str, SinkCounts]:
        """Deliver every alert after each sink's position (with one run's retries); counts per sink."""
        return self._run(_sleep)

    def run_forever(self, stop_event: Stopper, interval: float = 5.0) -> dict[str, SinkCounts]:
        """`run_once` every `interval` seconds until `stop_event` is set; the totals per sink."""
        totals = {sink.name: SinkCounts() for sink in self.sinks}
        log.info("delivering alerts to %s", ", ".join(
            f"{s.name} (from notification {self.position(s)})" for s in self.sinks))
        while not stop_event.is_set():
            for name, counts in self._run(stop_event.wait).items():
                total = totals[name]
                total.sent += counts.sent
                total.dead_lettered += counts.dead_lettered
                total.failed += counts.failed
                total.pending, total.position, total.error = counts.pending, counts.position, counts.error
                if counts.sent or counts.dead_lettered:
                    log.info("alerts -> %s: %d sent, %d dead-lettered, position %d", name, counts.sent,
                             counts.dead_lettered, counts.position)
            if stop_event.wait(interval):
                break
        return totals

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def make_sinks(alert_settings: AlertSettings, home: Path, kafka: KafkaSettings | None) -> list[Sink]:
    """The configured sinks: Kafka when `kafka` is given, the webhook when LEADLEDGER_ALERT_WEBHOOK is set."""
    sinks: list[Sink] = []
    if kafka is not None:
        sinks.append(KafkaSink(kafka, alert_settings.topic))
    if alert_settings.webhook is not None:
        sinks.append(WebhookSink.from_settings(alert_settings, home))
    return sinks


class PollingStop:
    """A `Stopper` over a `should_stop()` callable (the CLI's signal handling)."""

    def __init__(self, should_stop: Callable[[], bool], tick_s: float = 0.1) -> None:
        self.should_stop = should_stop
        self.tick_s = tick_s
        self._event = threading.Event()

    def is_set(self) -> bool:
        return self.should_stop()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.should_stop():
            left = self.tick_s if deadline is None else min(self.tick_s, deadline - time.monotonic())
            if left <= 0:
                return False
            self._event.wait(left)
        return True
