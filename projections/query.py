"""Query parameters of the analyst questions (docs/contract.md) and their checks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from lifecycle.domain.stages import FUNNEL_ORDER
from schemas.facts import dt_to_us

MODES = ("cohort", "period")
MODELS = ("first", "last", "linear", "u_shaped", "time_decay")
CONVERSIONS = ("mql", "sql", "won")
LEAD_BYS = ("channel", "campaign")
SPEED_BYS = ("owner", "channel", "campaign")
MAX_LIMIT = 10_000
INTERVALS = ("week", "month")
#: the most intervals one `--interval` answer holds (a decade of weeks is 522)
MAX_INTERVALS = 1_000


class QueryError(ValueError):
    """A query parameter is wrong; the message says which and what is allowed."""


@dataclass(frozen=True)
class Query:
    """Parameters shared by every query; each query reads the ones it needs.

    Defaults: no grouping, cohort mode, linear attribution of won deals, no as-of
    (everything known now), lead list limit 50.
    """

    by: str | None = None
    from_: datetime | None = None
    to: datetime | None = None
    mode: str = "cohort"
    model: str = "linear"
    conversion: str = "won"
    as_of: datetime | None = None
    known_at: datetime | None = None
    stage: str | None = None
    channel: str | None = None
    owner: str | None = None
    limit: int = 50
    #: `funnel --interval`: one funnel per ISO week or UTC calendar month as well as the whole window
    interval: str | None = None
    #: `--compare-to`: "previous" (the window of the same length just before, whole calendar months when
    #: the window is whole months) or an explicit (from, to) window
    compare_to: str | tuple[datetime, datetime] | None = None
    #: `leads --reached STAGE`: list the leads the funnel counts in that stage (of the window and group)
    reached: str | None = None
    #: `leads --reached --by B --key K`: the funnel group (key as the funnel shows it) whose leads to list
    key: str | None = None
    #: `leads --reached --after CURSOR`: the page after the one whose `next` this is
    after: str | None = None

    def __post_init__(self) -> None:
        # channels are stored trimmed and lower-case (normalized at capture): so is the filter
        if self.channel is not None:
            object.__setattr__(self, "channel", self.channel.strip().lower())


@dataclass(frozen=True)
class Window:
    """A checked query in integer microseconds (None = unbounded)."""

    by: str | None
    start: int | None
    end: int | None
    mode: str
    as_of: int | None
    known_at: int | None

    @property
    def slow(self) -> bool:
        """known-at breaks the per-lead prefix property: answer from the facts."""
        return self.known_at is not None


def _us(value: datetime | None, flag: str) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise QueryError(f"{flag} {value.isoformat()} has no time zone")
    return dt_to_us(value)


def check(q: Query, bys: Sequence[str] = LEAD_BYS) -> Window:
    """Validate the parameters common to the aggregate queries."""
    if q.by is not None and q.by not in bys:
        raise QueryError(f"--by must be one of {', '.join(bys)} (or omitted), got {q.by!r}")
    if q.mode not in MODES:
        raise QueryError(f"--mode must be cohort or period, got {q.mode!r}")
    if q.interval is not None and q.interval not in INTERVALS:
        raise QueryError(f"--interval must be one of {', '.join(INTERVALS)}, got {q.interval!r}")
    start, end = _us(q.from_, "--from"), _us(q.to, "--to")
    if start is not None and end is not None and start >= end:
        raise QueryError(f"--from ({q.from_}) must be before --to ({q.to})")
    return Window(q.by, start, end, q.mode, _us(q.as_of, "--as-of"), _us(q.known_at, "--known-at"))


def check_attribution(q: Query) -> Window:
    if q.model not in MODELS:
        raise QueryError(f"--model must be one of {', '.join(MODELS)}, got {q.model!r}")
    if q.conversion not in CONVERSIONS:
        raise QueryError(f"--conversion must be one of {', '.join(CONVERSIONS)}, got {q.conversion!r}")
    return check(q)


def check_leads(q: Query) -> Window:
    if q.stage is not None and q.stage not in {s.value for s in FUNNEL_ORDER}:
        raise QueryError(f"--stage must be one of {', '.join(s.value for s in FUNNEL_ORDER)}, got {q.stage!r}")
    if not 1 <= q.limit <= MAX_LIMIT:
        raise QueryError(f"--limit must be between 1 and {MAX_LIMIT}, got {q.limit}")
    return Window(None, None, None, "cohort", _us(q.as_of, "--as-of"), _us(q.known_at, "--known-at"))


#: `reasons --stage`: the stages whose entering events give a reason, and `rejected` (sales handed the
#: lead back: it enters recycled, so `recycled` counts it too)
REASON_STAGES = ("lost", "disqualified", "recycled", "rejected")
REASON_BYS = ("channel", "campaign", "owner")


def check_reasons(q: Query) -> Window:
    """The window of a reasons query: a stage to count the reasons of, and no `mode` (the window is
    always on the event that gave the reason)."""
    if q.stage is None:
        raise QueryError(f"reasons needs --stage: one of {', '.join(REASON_STAGES)}")
    if q.stage not in REASON_STAGES:
        raise QueryError(f"--stage must be one of {', '.join(REASON_STAGES)}, got {q.stage!r}")
    if q.mode != "cohort":
        raise QueryError("reasons takes no --mode: its window [--from, --to) is always on the event giving the "
                         "reason")
    if q.interval is not None or q.compare_to is not None:
        raise QueryError("reasons takes no --interval or --compare-to: ask for each window in turn")
    return check(replace(q, mode="period"), bys=REASON_BYS)
