"""Lead operations: the policy (`policy publish | validate | show | diff`) and the `operate` role."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from kafka.errors import KafkaError

from consumers.kafka.settings import KafkaSettings
from consumers.operate_kafka import KafkaOperateError, KafkaRows
from leadledger.cli.common import (
    TIME,
    Context,
    emit_json,
    fail,
    json_option,
    log_to_stderr,
    pass_ctx,
    stop_on_signals,
)
from lifecycle.operate import OperateReport, OperatorRunner
from lifecycle.operations.policy import Policy, PolicyError, diff, parse_policy
from lifecycle.policies import AlreadyPublished, PolicyStream, PolicyTimeline, Published
from lifecycle.settings import SettingsError

log = logging.getLogger("leadledger.operate")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{path} is not UTF-8 text ({exc}); save the policy as UTF-8 TOML", 2)


def _parsed(path: Path) -> Policy:
    try:
        return parse_policy(_read(path))
    except PolicyError as exc:
        fail(_problems(path, exc), 2)


def _problems(path: Path, exc: PolicyError) -> str:
    lines = "\n".join(f"  {p}" for p in exc.problems)
    return f"{path} is not a valid policy ({len(exc.problems)} problem(s)); nothing was published:\n{lines}"


def _summary(policy: Policy) -> dict[str, Any]:
    return {
        "calendars": sorted(policy.calendars), "reps": sorted(policy.reps),
        "routing_rules": [r.id for r in policy.routing.rules] if policy.routing else [],
        "routing_on": [s.value for s in policy.routing.on] if policy.routing else [],
        "sla": [r.id for r in policy.sla],
        "scoring": policy.scoring is not None,
        "fx": sorted(policy.fx),
    }


def _version_json(item: Published) -> dict[str, Any]:
    return {"version": item.version, "sha256": item.sha256, "published_at": item.recorded_at.isoformat(),
            "actor": item.actor, "position": item.position}


@click.group()
def policy() -> None:
    """The policy: calendars, reps, routing rules, SLA rules, scoring and FX rates in one TOML file.

    Routing, SLA and scoring rules drive `leadledger operate` (the scorer's threshold is also the
    one every MQL transition needs); [fx] is validated and published with the rest, but nothing
    acts on it yet (revenue uses LEADLEDGER_FX_FILE).

    Publishing records a new version on the policy stream (hash-chained, checked by
    `leadledger verify`); every decision the operator makes names the version it used.
    """


@policy.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
def validate(file: Path, as_json: bool) -> None:
    """Check FILE without publishing it: every problem is named with its key path."""
    text = _read(file)
    try:
        found = parse_policy(text)
    except PolicyError as exc:
        if as_json:
            emit_json({"valid": False, "problems": list(exc.problems)})
            raise SystemExit(2) from None
        fail(_problems(file, exc).replace("; nothing was published", ""), 2)
    if as_json:
        emit_json({"valid": True, "sha256": found.sha256, **_summary(found)})
    else:
        click.echo(f"{file} is a valid policy (sha256 {found.sha256[:12]}…): " + _describe(found))


def _describe(found: Policy) -> str:
    s = _summary(found)
    return (f"{len(s['calendars'])} calendar(s), {len(s['reps'])} rep(s), {len(s['routing_rules'])} routing "
            f"rule(s), {len(s['sla'])} SLA rule(s), scoring {'on' if s['scoring'] else 'off'}")


@policy.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@pass_ctx
def publish(ctx: Context, file: Path, as_json: bool) -> None:
    """Validate FILE and publish it as the next policy version (from the next stored event on)."""
    text = _read(file)
    stream = PolicyStream(ctx.app.store)
    try:
        item = stream.publish(text, actor=ctx.settings.actor, now=datetime.now(UTC))
    except PolicyError as exc:
        if as_json:
            emit_json({"published": False, "problems": list(exc.problems)})
            raise SystemExit(2) from None
        fail(_problems(file, exc), 2)
    except AlreadyPublished as exc:
        if as_json:
            emit_json({"published": False, "version": exc.version, "reason": str(exc)})
        else:
            click.echo(str(exc), err=True)
        return
    if as_json:
        emit_json({"published": True, **_version_json(item)})
    else:
        click.echo(f"published policy version {item.version} (sha256 {item.sha256[:12]}…): "
                   + _describe(item.policy))


def _pick(timeline: PolicyTimeline, version: int | None, as_of: datetime | None) -> Published:
    if not timeline.versions:
        fail("no policy is published; publish one with `leadledger policy publish FILE`", 1)
    if version is not None:
        found = timeline.version(version)
        if found is None:
            fail(f"there is no policy version {version}; published versions are 1 to {len(timeline.versions)}", 1)
        return found
    if as_of is not None:
        at = timeline.at_time(as_of)
        if at is None:
            fail(f"no policy was published at or before {as_of.isoformat()} (the first one was published "
                 f"{timeline.versions[0].recorded_at.isoformat()})", 1)
        return at
    latest = timeline.latest
    assert latest is not None
    return latest


@policy.command()
@click.option("--version", "version", type=click.IntRange(1), help="Show this version (default: the latest).")
@click.option("--as-of", type=TIME, help="Show the version in force at this time.")
@click.option("--list", "listing", is_flag=True, help="List every version instead.")
@json_option
@pass_ctx
def show(ctx: Context, version: int | None, as_of: datetime | None, listing: bool, as_json: bool) -> None:
    """Print a published policy version's file as published (or list the versions)."""
    ctx.read_only = True  # refuse a folder without a store instead of creating one
    timeline = PolicyTimeline(PolicyStream(ctx.app.store).versions())
    if listing:
        rows = [_version_json(v) for v in timeline.versions]
        if as_json:
            emit_json({"versions": rows})
        else:
            for row in rows:
                click.echo(f"v{row['version']}  {row['published_at']}  {row['sha256'][:12]}…  by {row['actor']}")
            if not rows:
                click.echo("no policy is published", err=True)
        return
    item = _pick(timeline, version, as_of)
    if as_json:
        emit_json({**_version_json(item), "content": item.content, **_summary(item.policy)})
    else:
        click.echo(f"# policy version {item.version}, published {item.recorded_at.isoformat()} by {item.actor}",
                   err=True)
        click.echo(item.content, nl=not item.content.endswith("\n"))


@policy.command(name="diff")
@click.argument("a", required=False)
@click.argument("b", required=False)
@json_option
@pass_ctx
def diff_command(ctx: Context, a: str | None, b: str | None, as_json: bool) -> None:
    """What changed between two policies, by key path.

    A and B are version numbers (3, v3) or files; with one argument it is compared with the latest
    version, with none the latest version is compared with the one before.
    """
    ctx.read_only = True  # refuse a folder without a store instead of creating one
    found: list[PolicyTimeline] = []

    def published() -> PolicyTimeline:  # only read when a version is named: two files need no store
        if not found:
            found.append(PolicyTimeline(PolicyStream(ctx.app.store).versions()))
        return found[0]

    def load(ref: str) -> tuple[str, Policy]:
        number = ref[1:] if ref.lower().startswith("v") else ref
        if number.isdigit():
            return f"v{number}", _pick(published(), int(number), None).policy
        path = Path(ref)
        if not path.is_file():
            fail(f"{ref!r} is neither a published version (1, v2 …) nor a policy file", 2)
        return str(path), _parsed(path)

    if a is None:
        timeline = published()
        if len(timeline.versions) < 2:
            fail("diff needs two policies: give A and B (versions or files), or publish a second version", 2)
        left = (f"v{len(timeline.versions) - 1}", timeline.versions[-2].policy)
        right = (f"v{len(timeline.versions)}", timeline.versions[-1].policy)
    elif b is None:
        latest = _pick(published(), None, None)
        left, right = (f"v{latest.version}", latest.policy), load(a)
    else:
        left, right = load(a), load(b)
    changes = diff(left[1], right[1])
    if as_json:
        emit_json({"from": left[0], "to": right[0], "changes": [
            {"path": c.path, "kind": c.kind, "before": c.before, "after": c.after} for c in changes]})
        return
    if not changes:
        click.echo(f"{left[0]} and {right[0]} are the same policy")
    for change in changes:
        click.echo(str(change))


@click.command()
@click.option("--once", is_flag=True,
              help="Catch up (with the store; with --source kafka, with the relay's position) and fire what "
                   "is due, then exit.")
@click.option("--now", type=TIME, envvar="LEADLEDGER_NOW",
              help="The operator's clock (RFC 3339): which SLA deadlines and queue releases are due. "
                   "Default: the real time [env LEADLEDGER_NOW].")
@click.option("--batch", type=click.IntRange(1, 1_000_000), default=5000, show_default=True,
              help="Events per transaction (decisions and position are stored together).")
@click.option("--poll-interval", type=click.FloatRange(0.01, 3600), default=1.0, show_default=True,
              help="Seconds to wait for new events when caught up.")
@click.option("--log-every", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Seconds between progress lines.")
@click.option("--source", "source_kind", type=click.Choice(["store", "kafka"]), default="store", show_default=True,
              help="store: the event store's notification log; kafka: the lead-events topic, every partition, "
                   "merged back into store order (LEADLEDGER_KAFKA_*; the relay must run).")
@click.option("--bootstrap", help="With --source kafka: Kafka bootstrap servers host:port[,...] "
                                   "[env LEADLEDGER_KAFKA_BOOTSTRAP].")
@json_option
@pass_ctx
def operate(ctx: Context, once: bool, now: datetime | None, batch: int, poll_interval: float, log_every: float,
            source_kind: str, bootstrap: str | None, as_json: bool) -> None:
    """Run the router, the SLA clocks and the scorer over the store's events.

    Each decision (an assignment with its reasons, a queued lead, an SLA warning or breach, a
    score with each rule's points, an automatic MQL) is
    appended to the lead's stream in the same transaction as the operator's position, so a crash
    neither loses nor repeats one; on restart the operator rebuilds its state from the store and
    deadlines that passed while it was down fire with their true times. With no policy published
    it decides nothing. A second operator on the same store loses its transaction and rebuilds.

    With --source kafka the events are read from leadledger.lead-events (published by `leadledger
    relay`) up to the relay's stored position, in store order, and the per-partition offsets are
    stored with the position: the decisions are the same as from the store.
    """
    source: KafkaRows | None = None
    kafka: KafkaSettings | None = None
    failures: tuple[type[Exception], ...] = ()
    if source_kind == "kafka":
        try:
            kafka = KafkaSettings.from_env(bootstrap=bootstrap or ctx.settings.kafka_bootstrap)
        except SettingsError as exc:
            fail(str(exc), 2)
        try:
            source = KafkaRows(ctx.app.store, kafka)
        except KafkaError as exc:
            fail(f"Kafka at {kafka.bootstrap}: {exc}")
        failures = (KafkaError, KafkaOperateError)
    log_to_stderr()
    last = [time.monotonic()]

    def progress(report: OperateReport) -> None:
        if time.monotonic() - last[0] >= log_every:
            last[0] = time.monotonic()
            log.info("operate: handled %d events, %d decisions, position %d of %d", report.handled,
                     sum(report.decisions.values()), report.position, report.head)

    runner = OperatorRunner(ctx.app.store, batch=batch, on_progress=progress, source=source,
                            mql_threshold=ctx.settings.mql_threshold)

    def clock() -> datetime:
        return now or datetime.now(UTC)

    total = OperateReport()
    try:
        with stop_on_signals() as should_stop:
            if once:
                total = runner.run_once(clock(), stop=should_stop)
            else:
                for report in runner.follow(clock, should_stop, poll_interval):
                    total = report
                    if sum(report.decisions.values()):
                        log.info("operate: %s", report.as_json())
    except failures as exc:
        assert kafka is not None
        fail(f"operate from Kafka at {kafka.bootstrap} ({kafka.events_topic}): {exc}")
    finally:
        runner.close()
    if as_json:
        emit_json(total.as_json())
    else:
        d = total.decisions
        click.echo(f"operated up to event {total.position} of {total.head}: handled {total.handled} events, "
                   f"decided {sum(d.values())} (assigned {d['assign']}, queued {d['queue']}, "
                   f"SLA warnings {d['warn']}, breaches {d['breach']}, scores {d['score']}, "
                   f"automatic MQLs {d['qualify']})", err=True)
