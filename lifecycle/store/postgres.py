"""The PostgreSQL store of record: the library's recorder plus leadledger's side tables.

Imported only when LEADLEDGER_POSTGRES_DSN is set (see lifecycle/store/sqlite.py for the tables).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.sql import SQL, Composable, Identifier

from lifecycle.store.sqlite import (
    APPLIED,
    AppliedRow,
    EmailRow,
    HeadRow,
    InboundRow,
    LogFile,
    LogRow,
    MessageOutcome,
    OperatorRow,
    RawRow,
)


def _firsts(curs: Any, events: Composable, head: int, after: int, limit: int) -> list[tuple[int, str]]:
    """Leads' first events after `after` up to `head`, in log order (the partial index's range)."""
    curs.execute(
        SQL(
            "SELECT notification_id, originator_id FROM {} WHERE notification_id > %s "
            "AND notification_id <= %s AND originator_version = 1 ORDER BY notification_id LIMIT %s"
        ).format(events),
        (after, head, limit),
    )
    return [(_col(r, 0, "notification_id"), _col(r, 1, "originator_id").hex) for r in curs.fetchall()]


def _leads_log(curs: Any, events: Composable, lead_ids: Sequence[str], head: int) -> list[LogRow]:
    """Every row of `lead_ids` at or before `head`, in notification order."""
    if not lead_ids:
        return []
    # a few thousand rows through the primary key: a parallel plan or JIT compilation would cost
    # more than the query, and before the table has statistics the planner would scan all of it;
    # binary results carry the states as they are (text would hex them, both ends paying)
    curs.execute("SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0; "
                 "SET LOCAL enable_seqscan = off")
    curs.execute(
        SQL(
            "SELECT notification_id, originator_id, originator_version, state FROM {} "
            "WHERE originator_id = ANY(%s) AND notification_id <= %s ORDER BY notification_id"
        ).format(events),
        ([UUID(hex=lead) for lead in lead_ids], head),
        binary=True,
    )
    return [(_col(r, 0, "notification_id"), _col(r, 1, "originator_id").hex, _col(r, 2, "originator_version"),
             bytes(_col(r, 3, "state"))) for r in curs.fetchall()]


def _col(row: Any, i: int, name: str) -> Any:
    """A column of a dict row (the library's connections) or a tuple row (our own)."""
    return row[name] if isinstance(row, dict) else row[i]


@dataclass(frozen=True)
class PgLeadLog:
    """A PostgreSQL store's events table, which any process (a forked one too) may read whole
    leads of on a connection it opens itself (never one inherited from its parent)."""

    params: dict[str, Any]
    schema: str
    table: str

    def open(self) -> PgLeadLogReader:
        return PgLeadLogReader(self)


class PgLeadLogReader:
    """Reads of a `PgLeadLog` on one connection of its own; close it (or use `with`)."""

    def __init__(self, log: PgLeadLog) -> None:
        self._conn = psycopg.connect(**log.params)
        self._events = SQL("{}.{}").format(Identifier(log.schema), Identifier(log.table))

    def __enter__(self) -> PgLeadLogReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def firsts(self, head: int, after: int, limit: int) -> list[tuple[int, str]]:
        with self._conn.transaction(), self._conn.cursor() as curs:
            return _firsts(curs, self._events, head, after, limit)

    def leads_log(self, lead_ids: Sequence[str], head: int) -> list[LogRow]:
        with self._conn.transaction(), self._conn.cursor() as curs:
            return _leads_log(curs, self._events, lead_ids, head)


class PostgresLeadRecorder(PostgresApplicationRecorder):
    """Scale-out store of record: the library's PostgreSQL recorder plus side tables."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, **kwargs)
        schema = Identifier(self.datastore.schema)
        self._keys = SQL("{}.leadledger_lead_keys").format(schema)
        self._inbound = SQL("{}.leadledger_inbound").format(schema)
        self._events = SQL("{}.{}").format(schema, Identifier(self.events_table_name))
        self._heads = SQL("{}.leadledger_heads").format(schema)
        self._relay = SQL("{}.leadledger_relay").format(schema)
        self._emails = SQL("{}.leadledger_email_index").format(schema)
        self._meta = SQL("{}.leadledger_meta").format(schema)
        self._operator = SQL("{}.leadledger_operator").format(schema)
        self._policy = SQL("{}.leadledger_policy").format(schema)
        self.sql_create_statements += [
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (lead_id uuid PRIMARY KEY, wrapped_key bytea NOT NULL)"
            ).format(self._keys),
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (source text NOT NULL, message_id text NOT NULL, "
                "lead_id uuid, version bigint, outcome text NOT NULL DEFAULT 'applied', digest text, "
                "reason text, PRIMARY KEY (source, message_id))"
            ).format(self._inbound),
            SQL("CREATE TABLE IF NOT EXISTS {} (email_hmac text PRIMARY KEY, lead_id uuid NOT NULL)").format(
                self._emails
            ),
            SQL("CREATE INDEX IF NOT EXISTS leadledger_email_index_lead ON {} (lead_id)").format(self._emails),
            SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, value text NOT NULL)").format(self._meta),
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (lead_id uuid PRIMARY KEY, version bigint NOT NULL, "
                "hash text NOT NULL)"
            ).format(self._heads),
            SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, position bigint NOT NULL)").format(
                self._relay
            ),
            SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, seq bigint NOT NULL, state text NOT NULL)"
                ).format(self._operator),
            SQL("CREATE TABLE IF NOT EXISTS {} (version bigint PRIMARY KEY, body bytea NOT NULL)").format(
                self._policy
            ),
            # every lead's first event in log order: replay walks the leads through it a chunk at a time
            # (without it PostgreSQL bitmap-scans the rest of the log for every chunk)
            SQL("CREATE INDEX IF NOT EXISTS {} ON {} (notification_id) WHERE originator_version = 1").format(
                Identifier(f"{self.events_table_name}_firsts"), self._events
            ),
        ]

    def create_table(self) -> None:
        """The schema if missing, then the library's DDL, one session at a time: some of it is
        CREATE OR REPLACE, which fails with "tuple concurrently updated" when two sessions run
        it at once — and every process, role and query thread bootstraps the store at start."""
        key = f"{self.datastore.schema}.leadledger_ddl"
        with self.datastore.get_connection() as conn:  # autocommit: a session-level lock
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
            try:
                conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(Identifier(self.datastore.schema)))
                super().create_table()
                self._migrate_inbound(conn)
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))

    def _migrate_inbound(self, conn: Any) -> None:
        """Stores of old kept only applied messages (lead id and version NOT NULL, no outcome):
        add the columns once (existing rows read as applied). Checked first, so a store in the
        current shape takes no table lock."""
        row = conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = %s "
            "AND table_name = 'leadledger_inbound' AND column_name = 'outcome'",
            (self.datastore.schema,),
        ).fetchone()
        if row is not None:
            return
        with conn.transaction():
            conn.execute(SQL(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS outcome text NOT NULL DEFAULT 'applied', "
                "ADD COLUMN IF NOT EXISTS digest text, ADD COLUMN IF NOT EXISTS reason text, "
                "ALTER COLUMN lead_id DROP NOT NULL, ALTER COLUMN version DROP NOT NULL"
            ).format(self._inbound))

    def _has_table(self, curs: Any, name: str) -> bool:
        curs.execute("SELECT to_regclass(%s) AS t", (f'"{self.datastore.schema}".{name}',))
        row = curs.fetchone()
        return row is not None and row["t"] is not None

    def read_meta(self) -> dict[str, str]:
        """The store's identity rows ({} for a store this version never opened, or no store yet)."""
        with self.datastore.transaction(commit=False) as curs:
            if not self._has_table(curs, "leadledger_meta"):
                return {}
            curs.execute(SQL("SELECT name, value FROM {}").format(self._meta))
            return {r["name"]: r["value"] for r in curs.fetchall()}

    def claim_meta(self, values: dict[str, str]) -> dict[str, str]:
        """Record each value unless one is recorded already; returns what is recorded."""
        with self.datastore.transaction(commit=True) as curs:
            curs.executemany(
                SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT (name) DO NOTHING").format(self._meta),
                list(values.items()),
            )
            curs.execute(SQL("SELECT name, value FROM {}").format(self._meta))
            return {r["name"]: r["value"] for r in curs.fetchall()}

    def has_events(self) -> bool:
        with self.datastore.transaction(commit=False) as curs:
            if not self._has_table(curs, self.events_table_name):
                return False
            curs.execute(SQL("SELECT 1 AS one FROM {} LIMIT 1").format(self._events))
            return curs.fetchone() is not None

    def any_wrapped_key(self) -> tuple[UUID, bytes] | None:
        """One lead's wrapped data key (to check a secret against a store that has no fingerprint)."""
        with self.datastore.transaction(commit=False) as curs:
            if not self._has_table(curs, "leadledger_lead_keys"):
                return None
            curs.execute(SQL("SELECT lead_id, wrapped_key FROM {} LIMIT 1").format(self._keys))
            row = curs.fetchone()
            return None if row is None else (row["lead_id"], bytes(row["wrapped_key"]))

    def _insert_events(self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        lead_keys: Sequence[tuple[UUID, bytes]] = kwargs.get("lead_keys", ())
        inbound: Sequence[InboundRow] = kwargs.get("inbound", ())
        erase: Sequence[UUID] = kwargs.get("erase", ())
        heads: Sequence[HeadRow] = kwargs.get("heads", ())
        emails: Sequence[EmailRow] = kwargs.get("emails", ())
        unindex: Sequence[EmailRow] = kwargs.get("unindex", ())
        operator: OperatorRow | None = kwargs.get("operator")
        if operator is not None:  # compare and set: another operator past this position fails it all
            name, seq, state = operator
            if seq == 1:
                curs.execute(SQL("INSERT INTO {} VALUES (%s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING seq"
                                 ).format(self._operator), (name, seq, state))
            else:
                curs.execute(SQL("UPDATE {} SET seq = %s, state = %s WHERE name = %s AND seq = %s RETURNING seq"
                                 ).format(self._operator), (seq, state, name, seq - 1))
            if curs.fetchone() is None:  # in pipeline mode a fetch waits for this statement's result
                raise IntegrityError(f"operator {name!r} is no longer at sequence {seq - 1}: another stored first")
        if heads:
            curs.executemany(
                SQL(
                    "INSERT INTO {} VALUES (%s, %s, %s) ON CONFLICT (lead_id) "
                    "DO UPDATE SET version = excluded.version, hash = excluded.hash"
                ).format(self._heads),
                list(heads),
            )
        if lead_keys:
            curs.executemany(SQL("INSERT INTO {} VALUES (%s, %s)").format(self._keys), list(lead_keys))
        if inbound:
            curs.executemany(
                SQL("INSERT INTO {} (source, message_id, outcome, digest, reason, lead_id, version) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)").format(self._inbound),
                list(inbound),
            )
        if erase:
            curs.executemany(
                SQL("DELETE FROM {} WHERE lead_id = %s").format(self._keys), [(e,) for e in erase]
            )
            curs.executemany(
                SQL("DELETE FROM {} WHERE lead_id = %s").format(self._emails), [(e,) for e in erase]
            )
        if unindex:
            curs.executemany(
                SQL("DELETE FROM {} WHERE email_hmac = %s AND lead_id = %s").format(self._emails), list(unindex)
            )
        if emails:
            curs.executemany(SQL("INSERT INTO {} VALUES (%s, %s)").format(self._emails), list(emails))

    def select_raw(self, after: int, limit: int) -> list[RawRow]:
        with self.datastore.transaction(commit=False) as curs:
            # a batch in log order along the notification id's index: JIT compilation would cost
            # more than the query; binary results carry the states as they are (text would hex them)
            curs.execute("SET LOCAL jit = off")
            curs.execute(
                SQL(
                    "SELECT notification_id, originator_id, originator_version, state FROM {} "
                    "WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
                ).format(self._events),
                (after, limit),
                binary=True,
            )
            return [
                (r["notification_id"], r["originator_id"], r["originator_version"], bytes(r["state"]))
                for r in curs.fetchall()
            ]

    def select_log(self, after: int, limit: int) -> list[LogRow]:
        return [(position, lead.hex, version, state) for position, lead, version, state in self.select_raw(after, limit)]

    def log_file(self) -> LogFile | None:
        """None: the log is read through the store's own connections only."""
        return None

    def select_firsts(self, head: int, after: int, limit: int) -> list[tuple[int, str]]:
        with self.datastore.transaction(commit=False) as curs:
            return _firsts(curs, self._events, head, after, limit)

    def select_leads_log(self, lead_ids: Sequence[str], head: int) -> list[LogRow]:
        with self.datastore.transaction(commit=False) as curs:
            return _leads_log(curs, self._events, lead_ids, head)

    def lead_log(self) -> PgLeadLog:
        """The events table, read on connections of their own (a replay's forked workers)."""
        found = self.datastore.pool.kwargs
        kwargs = (found() if callable(found) else found) or {}
        params = {k: v for k, v in kwargs.items() if k in ("dbname", "host", "port", "user", "password")}
        return PgLeadLog(params, self.datastore.schema, self.events_table_name)

    def prepare_lead_reads(self) -> None:
        """ANALYZE the events table when it has no statistics or they are stale (a tenth of its rows
        changed since, autovacuum's own rule): fresh from a bulk load it has none, and the planner
        then takes a chunk of leads for a third of the table and reads it all (a second a chunk)."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                "SELECT last_analyze IS NULL AND last_autoanalyze IS NULL AS never, n_mod_since_analyze AS changed, "
                "n_live_tup AS live "
                "FROM pg_stat_user_tables WHERE schemaname = %s AND relname = %s",
                (self.datastore.schema, self.events_table_name),
            )
            found = curs.fetchone()
            if found is None:
                return
            if found["never"] or found["changed"] > max(1000, found["live"] // 10):
                curs.execute(SQL("ANALYZE {}").format(self._events))

    def count_log(self, head: int) -> tuple[int, int]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL(
                    "SELECT COUNT(*) AS events, COUNT(*) FILTER (WHERE originator_version = 1) AS leads "
                    "FROM {} WHERE notification_id <= %s"
                ).format(self._events),
                (head,),
            )
            row = curs.fetchone()
            assert row is not None  # an aggregate always gives one row
            return int(row["events"]), int(row["leads"])

    def select_streams(self, lead_ids: Iterable[UUID]) -> dict[UUID, list[tuple[int, bytes]]]:
        ids = list(lead_ids)
        streams: dict[UUID, list[tuple[int, bytes]]] = {}
        if not ids:
            return streams
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL(
                    "SELECT originator_id, originator_version, state FROM {} "
                    "WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
                ).format(self._events),
                (ids,),
            )
            for r in curs.fetchall():
                streams.setdefault(r["originator_id"], []).append((r["originator_version"], bytes(r["state"])))
        return streams

    def wrapped_keys(self, lead_ids: Iterable[UUID]) -> dict[UUID, bytes]:
        ids = list(lead_ids)
        if not ids:
            return {}
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL("SELECT lead_id, wrapped_key FROM {} WHERE lead_id = ANY(%s)").format(self._keys),
                (ids,),
            )
            return {r["lead_id"]: bytes(r["wrapped_key"]) for r in curs.fetchall()}

    def seen_messages(self, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        return set(self.message_outcomes(keys))

    def message_outcomes(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], MessageOutcome]:
        """The records of those of these messages that were recorded before."""
        pairs = list(dict.fromkeys(keys))
        if not pairs:
            return {}
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL(
                    "SELECT source, message_id, outcome, digest, reason, lead_id, version FROM {} "
                    "WHERE (source, message_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
                ).format(self._inbound),
                ([s for s, _ in pairs], [m for _, m in pairs]),
            )
            return {(r["source"], r["message_id"]): (r["outcome"], r["digest"], r["reason"], r["lead_id"],
                                                     r["version"]) for r in curs.fetchall()}

    def applied_messages(self, lead_id: UUID | None = None) -> list[AppliedRow]:
        """The records of applied messages (one lead's, or all), for verify."""
        where = SQL(" AND lead_id = %s") if lead_id is not None else SQL("")
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL("SELECT source, message_id, lead_id, version FROM {} WHERE outcome = %s{}").format(
                    self._inbound, where),
                (APPLIED, lead_id) if lead_id is not None else (APPLIED,),
            )
            return [(r["source"], r["message_id"], r["lead_id"], r["version"]) for r in curs.fetchall()]

    def lookup_emails(self, keys: Iterable[str]) -> dict[str, UUID]:
        """The lead each of these e-mail keys (HMACs) is indexed to, where one is."""
        wanted = list(set(keys))
        if not wanted:
            return {}
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT email_hmac, lead_id FROM {} WHERE email_hmac = ANY(%s)").format(self._emails),
                         (wanted,))
            return {r["email_hmac"]: r["lead_id"] for r in curs.fetchall()}

    def lead_ids(self) -> list[UUID]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT DISTINCT originator_id FROM {}").format(self._events))
            return [r["originator_id"] for r in curs.fetchall()]

    def heads(self, lead_id: UUID | None = None) -> dict[UUID, tuple[int, str]]:
        where = SQL(" WHERE lead_id = %s") if lead_id is not None else SQL("")
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL("SELECT lead_id, version, hash FROM {}{}").format(self._heads, where),
                (lead_id,) if lead_id is not None else (),
            )
            return {r["lead_id"]: (r["version"], r["hash"]) for r in curs.fetchall()}

    def max_versions(self, lead_ids: Iterable[UUID]) -> dict[UUID, int]:
        ids = list(lead_ids)
        if not ids:
            return {}
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL(
                    "SELECT originator_id, MAX(originator_version) AS v FROM {} "
                    "WHERE originator_id = ANY(%s) GROUP BY originator_id"
                ).format(self._events),
                (ids,),
            )
            return {r["originator_id"]: r["v"] for r in curs.fetchall()}

    def delete_keys(self, lead_ids: Sequence[UUID]) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.executemany(
                SQL("DELETE FROM {} WHERE lead_id = %s").format(self._keys), [(e,) for e in lead_ids]
            )
            curs.executemany(
                SQL("DELETE FROM {} WHERE lead_id = %s").format(self._emails), [(e,) for e in lead_ids]
            )

    def scrub_after_erase(self) -> None:
        """Rewrite the key table so deleted keys do not survive as dead tuples.

        VACUUM FULL writes a fresh table file and unlinks the old one. Copies in
        WAL segments, replicas' WAL and backups age out with their retention;
        README "Personal data" says what an operator must do about them.
        """
        with self.datastore.get_connection() as conn:
            conn.autocommit = True
            try:
                conn.execute(SQL("VACUUM FULL {}").format(self._keys))
                conn.execute(SQL("VACUUM FULL {}").format(self._emails))  # the erased e-mail's HMAC too
            finally:
                conn.autocommit = False

    def relay_position(self, name: str) -> int:
        """The notification id the relay `name` has published up to (0: nothing yet)."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT position FROM {} WHERE name = %s").format(self._relay), (name,))
            row = curs.fetchone()
            return int(row["position"]) if row is not None else 0

    def set_relay_position(self, name: str, position: int) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "INSERT INTO {} VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET position = excluded.position"
                ).format(self._relay),
                (name, position),
            )

    def operator_state(self, name: str) -> tuple[int, str] | None:
        """The operator's latest (sequence number, state), None before its first commit."""
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(SQL("SELECT seq, state FROM {} WHERE name = %s").format(self._operator), (name,))
            row = curs.fetchone()
            return None if row is None else (int(row["seq"]), str(row["state"]))

    def policy_bodies(self) -> list[bytes]:
        """Every published policy version's envelope, in version order."""
        with self.datastore.transaction(commit=False) as curs:
            if not self._has_table(curs, "leadledger_policy"):
                return []
            curs.execute(SQL("SELECT body FROM {} ORDER BY version").format(self._policy))
            return [bytes(r["body"]) for r in curs.fetchall()]

    def insert_policy(self, version: int, body: Callable[[int], bytes]) -> bytes:
        """Record policy `version`; `body` builds its envelope from the log position it follows (the
        events table is locked as an insert of events locks it, so no event slips in between)."""
        try:
            with self.datastore.transaction(commit=True) as curs:
                self._lock_table(curs)
                curs.execute(SQL("SELECT MAX(notification_id) AS head FROM {}").format(self._events))
                row = curs.fetchone()
                made = body(int((row or {}).get("head") or 0))
                curs.execute(SQL("INSERT INTO {} VALUES (%s, %s)").format(self._policy), (version, made))
                return made
        except psycopg.errors.UniqueViolation as exc:
            raise IntegrityError(str(exc)) from exc

    def close(self) -> None:
        self.datastore.close()
