"""Drill-down: the leads one funnel cell (a stage of one group) counts, a page at a time
(`leads --reached STAGE`, docs/contract.md).

The cell's leads are the rows of `rm_funnel_entries` the funnel counts (`funnel.counted`: the same
conditions, so the list and the count always agree), one row per lead. They are listed by the time
of the entry that counted, then lead id; a page that is not the last ends with a cursor naming its
last lead, and the next page starts just after it. A page is read in two statements: the entry time
of the (limit + 1)-th lead after the cursor, along an index in entry order, then the leads entered up to
it, joined and sorted: a page costs its own rows, not the cell's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from lifecycle.domain.stages import FUNNEL_ORDER
from projections import funnel, leads
from projections.base import NONE_KEY
from projections.query import MAX_LIMIT, Query, QueryError, Window, check
from schemas.facts import format_us

STAGES = tuple(s.value for s in FUNNEL_ORDER)
#: the parameters that choose a funnel cell, which the plain lead list does not take
CELL_FLAGS = "--from, --to, --mode, --by, --key and --after"
#: the lead's columns a page reads (rm_leads), then the counted entry's time and the lead's number
_LEAD_COLUMNS = ("lead_id", "stage", "owner", "score", "channel", "campaign", "captured_at", "last_change_at")


@dataclass(frozen=True)
class Cell:
    """A checked drill-down: the funnel window, the stage, the group and the page asked for."""

    window: Window
    stage: str
    #: the entries' column the group is on (channel or campaign), None: every lead of the stage
    column: str | None
    key: str | None
    limit: int
    #: (entered_at, lead_id) of the last lead of the page before, None: the first page
    after: tuple[int, str] | None
    #: names the cell (stage, window, as-of, known-at, group): a cursor only pages the cell it came from
    fingerprint: str


def asks_cell(q: Query) -> bool:
    """Whether the lead list query names a funnel cell (or a parameter only a cell takes)."""
    return (q.reached is not None or q.from_ is not None or q.to is not None or q.by is not None
            or q.key is not None or q.after is not None or q.mode != "cohort")


def check_drill(q: Query) -> Cell:
    """Validate a drill-down query (every refusal says what to give instead)."""
    if q.reached is None:
        raise QueryError(f"{CELL_FLAGS} choose a funnel cell: give --reached STAGE too, or leave them out "
                         "for the plain lead list")
    stage = q.reached.strip().lower()
    if stage not in STAGES:
        raise QueryError(f"--reached must be one of {', '.join(STAGES)}, got {q.reached!r}")
    for flag, value in (("--stage", q.stage), ("--owner", q.owner), ("--channel", q.channel)):
        if value is not None:
            raise QueryError(f"{flag} does not go with --reached: the drill-down lists exactly the leads of a "
                             "funnel cell; choose its group with --by channel|campaign|owner --key KEY")
    if not 1 <= q.limit <= MAX_LIMIT:
        raise QueryError(f"--limit must be between 1 and {MAX_LIMIT}, got {q.limit}")
    if q.by is not None and q.key is None:
        raise QueryError(f"--by {q.by} needs --key: the group's key as the funnel shows it ((none) is the leads "
                         "captured without a campaign, or the entries without an owner)")
    if q.key is not None and q.by is None:
        raise QueryError("--key needs --by channel, campaign or owner (the grouping the key belongs to)")
    w = check(q, bys=funnel.BYS)
    # channels and campaigns are stored lower-case; owners as given
    key = None if q.key is None else q.key.strip() if q.by == "owner" else q.key.strip().lower()
    fingerprint = hashlib.sha256(orjson.dumps(
        [stage, w.mode, w.start, w.end, w.as_of, w.known_at, w.by, key])).hexdigest()[:16]
    after = None if q.after is None else decode_cursor(q.after, fingerprint)
    return Cell(w, stage, funnel.group_column(w.by) if w.by else None, key, q.limit, after, fingerprint)


# ---------------------------------------------------------------- the cursor


def encode_cursor(entered_at: int, lead_id: str, fingerprint: str) -> str:
    """An opaque, URL-safe text naming a page's last lead within its cell."""
    raw = orjson.dumps([entered_at, lead_id, fingerprint])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(text: str, fingerprint: str) -> tuple[int, str]:
    """(entered_at, lead_id) of a cursor `encode_cursor` made for the cell `fingerprint` names."""
    wrong = QueryError(f"--after {text!r} is not a drill-down cursor: pass the `next` of the page before "
                       "unchanged, or leave --after out for the first page")
    try:
        value = orjson.loads(base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4)))
    except (ValueError, UnicodeEncodeError, binascii.Error, orjson.JSONDecodeError):
        raise wrong from None
    if (not isinstance(value, list) or len(value) != 3 or not isinstance(value[0], int)
            or isinstance(value[0], bool) or not all(isinstance(v, str) for v in value[1:])):
        raise wrong
    if value[2] != fingerprint:
        raise QueryError("--after: this cursor pages another drill-down (another --reached, window, --as-of, "
                         "--known-at or group): give the same parameters as for the page before, or leave "
                         "--after out to start again")
    return value[0], value[1]


# ---------------------------------------------------------------- the query


#: where a cell's entries are read: (table, late) pairs as `funnel.counted` takes them
Sources = Sequence[tuple[str, str | None]]


def _branches(cell: Cell, sources: Sources, columns: str,
              bounds: Sequence[tuple[str, int]]) -> list[tuple[str, list[Any]]]:
    """The SELECTs of `columns` from the cell's entries, one per source table and disjoint set of
    `funnel.counted`, each also bounded by `bounds` (condition, value) on entered_at."""
    branches: list[tuple[str, list[Any]]] = []
    for entries, late in sources:
        for conds, cond_params in funnel.counted(cell.window, late):
            extra: list[str] = []
            extra_params: list[Any] = []
            if cell.column == "owner" and cell.key == NONE_KEY:  # the funnel's null owner
                extra.append("owner IS NULL")
            elif cell.column is not None:
                extra.append(f"{cell.column} = ?")
                extra_params.append(cell.key)
            for cond, value in bounds:
                extra.append(cond)
                extra_params.append(value)
            branches.append((f"SELECT {columns} FROM {entries} WHERE {' AND '.join([*conds, *extra])}",
                             [cell.stage, *cond_params, *extra_params]))
    return branches


def bound_sql(cell: Cell, sources: Sources) -> list[tuple[str, list[Any]]]:
    """Per set of the cell's entries, the entry time of its (limit + 1)-th entry after the cursor's
    time (one row, or none when fewer follow). The least of them bounds the page: the page's leads
    all entered at or before it, so `page_sql` joins and sorts a page's worth of rows, not the whole
    cell. A set of first entries is read along a (stage, prev_at[, group], entered_at) index, without
    sorting."""
    bounds = [] if cell.after is None else [("entered_at > ?", cell.after[0])]
    return [(f"{text} ORDER BY entered_at LIMIT 1 OFFSET ?", [*params, cell.limit])
            for text, params in _branches(cell, sources, "entered_at", bounds)]


def page_sql(cell: Cell, sources: Sources, lead_table: str, bound: int | None = None) -> tuple[str, list[Any]]:
    """One page of the cell's leads (and one more, which says whether another page follows): each
    lead's row of `lead_table`, the time of its counted entry and its lead number, by that time and
    lead id, after the cursor's lead; `bound`: the least of `bound_sql`'s times, None when none found a row."""
    bounds: list[tuple[str, int]] = [] if cell.after is None else [("entered_at >= ?", cell.after[0])]
    if bound is not None:
        bounds.append(("entered_at <= ?", bound))
    branches = _branches(cell, sources, "lead_no, entered_at", bounds)
    params = [p for _, branch_params in branches for p in branch_params]
    after = ""
    if cell.after is not None:
        after = "WHERE e.entered_at > ? OR (e.entered_at = ? AND l.lead_id > ?)"
        params += [cell.after[0], cell.after[0], cell.after[1]]
    params.append(cell.limit + 1)
    columns = ", ".join(f"l.{c}" for c in _LEAD_COLUMNS)
    return (f"SELECT {columns}, e.entered_at, e.lead_no FROM ({' UNION ALL '.join(t for t, _ in branches)}) e "
            f"JOIN {lead_table} l ON l.lead_no = e.lead_no {after} "
            f"ORDER BY e.entered_at, l.lead_id LIMIT ?"), params


def page_leads(rows: Sequence[Sequence[Any]], limit: int) -> list[tuple[int, str]]:
    """(lead number, stored lead id) of the leads on the page."""
    return [(int(r[-1]), str(r[0])) for r in rows[:limit]]


def shape(cell: Cell, rows: Sequence[Sequence[Any]],
          at: Mapping[int, Sequence[Any]] | None = None) -> dict[str, Any]:
    """The drill-down JSON (docs/contract.md) from `page_sql`'s rows. `at`: each lead's row of the
    lead list re-folded at the as-of / known-at instant (lead number -> row without it), when the
    stored one (now) is not the one to show."""
    page = rows[:cell.limit]
    items = []
    for row in page:
        lead_row = (at or {}).get(int(row[-1])) or row[:len(_LEAD_COLUMNS)]
        item = leads.item(lead_row)
        items.append({"lead_id": item["lead_id"], "entered_at": format_us(int(row[-2])),
                      **{k: v for k, v in item.items() if k != "lead_id"}})
    last = page[-1] if page else None
    following = (encode_cursor(int(last[-2]), str(last[0]), cell.fingerprint)
                 if last is not None and len(rows) > cell.limit else None)
    w = cell.window
    return {"mode": w.mode, "from": format_us(w.start), "to": format_us(w.end), "as_of": format_us(w.as_of),
            "known_at": format_us(w.known_at), "reached": cell.stage, "by": w.by, "key": cell.key,
            "next": following, "leads": items}


def refolded(pairs: Sequence[tuple[int, str]], facts_of: Callable[[Sequence[int]], Mapping[int, Any]],
             row_of: Callable[[int, str, Any], Sequence[Any] | None]) -> dict[int, Sequence[Any]]:
    """lead number -> the lead list's row (without the number) of each lead of `pairs`, from its
    facts (`facts_of` the stored timelines by lead number, `row_of` the fold at the instant asked)."""
    blobs = facts_of([no for no, _ in pairs])
    out: dict[int, Sequence[Any]] = {}
    for no, lead_id in pairs:
        row = row_of(no, lead_id, blobs[no])
        if row is not None:
            out[no] = row[1:]
    return out
