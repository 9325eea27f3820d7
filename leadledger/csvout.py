"""Every answer as CSV (RFC 4180, through the standard `csv` module): what `--format csv` prints and
the HTTP API sends for `Accept: text/csv`.

Aggregate answers are long tables, one row per group × figure, so a spreadsheet pivots them:

    mode,from,to,as_of,known_at,by,key,figure,value
    cohort,,,,,channel,email,stages.captured,120
    cohort,,,,,channel,email,conversion.captured->mql,0.25

- the leading columns are the answer's own scalar fields (its window: mode, from, to, as_of, ...),
  repeated on every row so each row says what it answers;
- then what identifies the row's group (`key`, or `source`, `sla` and `group`, `reason`, ...); a
  list of sub-groups inside a group (each reason of a `reasons` group) gives rows of its own, the
  sub-group's identity (`reason`) beside the group's and its figures named `list.field`
  (`reasons.count`),
  `section` when the answer has more than one list of groups (e.g. `sources` and `total`),
  `interval_label`, `interval_from`, `interval_to` for a trend, and `window` (current, compare,
  difference) for a comparison;
- `figure` names the number with a dotted path into the group (`time_in_stage.sal.p50_s`) and
  `value` holds it exactly as the JSON does (empty = null, true/false, shortest round-trip floats).

The lead list and a lead's history are wide tables instead: one row per lead or event, a column per
field (an event's `data` as one JSON text column).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson

#: the fields of a group that say which group it is (not figures)
IDENTITY = ("key", "source", "sla", "group", "rule", "reason", "label", "owner", "stage", "currency", "rep")
#: what a comparison answer's windows are called in the `window` column
WINDOWS = ("current", "compare", "difference")
#: the lists whose rows are wide records (one row each), not groups of figures
WIDE = ("leads", "events")

MEDIA_TYPE = "text/csv; charset=utf-8"


def cell(value: Any) -> str:
    """A JSON value as CSV text: null is empty, booleans true/false, floats their shortest repr."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return str(value)


def parse_cell(text: str) -> Any:
    """The inverse of `cell` for a figure's value (an empty cell is null)."""
    if text == "":
        return None
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _scalar(value: Any) -> bool:
    return not isinstance(value, dict | list)


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    else:
        yield path, value


def _group_rows(group: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """A group's identity fields and its (figure, value) pairs."""
    ident = {k: v for k, v in group.items() if k in IDENTITY and _scalar(v)}
    figures: list[tuple[str, Any]] = []
    for k, v in group.items():
        if k in ident:
            continue
        figures.extend(_leaves(v, k))
    return ident, figures


def _subgroups(value: Any) -> bool:
    """A list of dicts that each say which sub-group they are (a reasons group's `reasons`)."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, dict) and any(k in IDENTITY for k in v) for v in value))


def _records(group: dict[str, Any]) -> list[tuple[dict[str, Any], list[tuple[str, Any]]]]:
    """A group's identity and figures, then each of its sub-groups' (identity beside the group's,
    figures named by the list and the field)."""
    nested = {k: v for k, v in group.items() if _subgroups(v)}
    ident, figures = _group_rows({k: v for k, v in group.items() if k not in nested})
    out = [(ident, figures)]
    for name, items in nested.items():
        for item in items:
            sub_ident, sub_figures = _group_rows(item)
            out.append(({**ident, **sub_ident}, [(f"{name}.{figure}", value) for figure, value in sub_figures]))
    return out


def _sections(part: dict[str, Any]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The lists of groups in an answer (a lone dict of figures, like a total, is a one-group section)."""
    for name, value in part.items():
        if name in ("compare", "difference", "intervals"):
            continue
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            yield name, value
        elif isinstance(value, dict) and value:
            yield name, [value]


def long_rows(answer: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The header and rows (column → JSON value) of an aggregate answer."""
    meta = {k: v for k, v in answer.items() if _scalar(v)}
    parts: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (extra columns, part of the answer)
    compared = "compare" in answer and "difference" in answer
    if compared:
        parts = [({"window": "current"}, answer),
                 ({"window": "compare", "window_from": answer["compare"].get("from"),
                   "window_to": answer["compare"].get("to")}, answer["compare"]),
                 ({"window": "difference"}, answer["difference"])]
        parts[0][0].update(window_from=answer.get("from"), window_to=answer.get("to"))
        parts[2][0].update(window_from=None, window_to=None)
    else:
        parts = [({}, answer)]
    for extra, part in list(parts):
        parts += [({**extra, "interval_label": iv.get("label"), "interval_from": iv.get("from"),
                    "interval_to": iv.get("to")}, iv) for iv in part.get("intervals") or ()]
    names = {name for _, part in parts for name, _ in _sections(part)}
    rows: list[dict[str, Any]] = []
    for extra, part in parts:
        for name, groups in _sections(part):
            for group in groups:
                for ident, figures in _records(group):
                    base = {**meta, **extra, **({"section": name} if len(names) > 1 else {}), **ident}
                    rows.extend({**base, "figure": figure, "value": value} for figure, value in figures)
    header = list(meta)
    for extra, _ in parts:
        header += [k for k in extra if k not in header]
    if len(names) > 1:
        header.append("section")
    idents = [k for k in IDENTITY if any(k in r for r in rows)]
    header += [k for k in idents if k not in header] + ["figure", "value"]
    return header, rows


def wide_rows(answer: dict[str, Any], name: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The header and rows of the lead list (or a history): the answer's scalars, then one column per field."""
    meta = {k: v for k, v in answer.items() if _scalar(v)}
    fields: list[str] = []
    for record in answer[name]:
        fields += [k for k in record if k not in fields]
    header = list(meta) + [f for f in fields if f not in meta]
    return header, [{**meta, **record} for record in answer[name]]


def rows_of(answer: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    for name in WIDE:
        if isinstance(answer.get(name), list):
            return wide_rows(answer, name)
    return long_rows(answer)


def render(answer: dict[str, Any]) -> str:
    """The answer as CSV text (CRLF line ends, as RFC 4180 says)."""
    header, rows = rows_of(answer)
    return write(header, rows)


def write(header: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([cell(row.get(column)) for column in header])
    return out.getvalue()


def read(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """Parse CSV text written by `render` into its header and rows (text cells)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader)
    return header, [dict(zip(header, row, strict=True)) for row in reader]
