"""The PostgreSQL store of record: the library's recorder plus leadledger's side tables.

Imported only when LEADLEDGER_POSTGRES_DSN is set (see lifecycle/store/sqlite.py for the tables).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.sql import SQL, Identifier

from lifecycle.store.sqlite import HeadRow, InboundRow, LogFile, LogRow, RawRow


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
        self.sql_create_statements += [
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (lead_id uuid PRIMARY KEY, wrapped_key bytea NOT NULL)"
            ).format(self._keys),
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (source text NOT NULL, message_id text NOT NULL, "
                "lead_id uuid NOT NULL, version bigint NOT NULL, PRIMARY KEY (source, message_id))"
            ).format(self._inbound),
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (lead_id uuid PRIMARY KEY, version bigint NOT NULL, "
                "hash text NOT NULL)"
            ).format(self._heads),
            SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, position bigint NOT NULL)").format(
                self._relay
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
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))

    def _insert_events(self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        lead_keys: Sequence[tuple[UUID, bytes]] = kwargs.get("lead_keys", ())
        inbound: Sequence[InboundRow] = kwargs.get("inbound", ())
        erase: Sequence[UUID] = kwargs.get("erase", ())
        heads: Sequence[HeadRow] = kwargs.get("heads", ())
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
                SQL("INSERT INTO {} VALUES (%s, %s, %s, %s)").format(self._inbound), list(inbound)
            )
        if erase:
            curs.executemany(
                SQL("DELETE FROM {} WHERE lead_id = %s").format(self._keys), [(e,) for e in erase]
            )

    def select_raw(self, after: int, limit: int) -> list[RawRow]:
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL(
                    "SELECT notification_id, originator_id, originator_version, state FROM {} "
                    "WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
                ).format(self._events),
                (after, limit),
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
        pairs = list(keys)
        if not pairs:
            return set()
        with self.datastore.transaction(commit=False) as curs:
            curs.execute(
                SQL(
                    "SELECT source, message_id FROM {} WHERE (source, message_id) IN "
                    "(SELECT * FROM unnest(%s::text[], %s::text[]))"
                ).format(self._inbound),
                ([s for s, _ in pairs], [m for _, m in pairs]),
            )
            return {(r["source"], r["message_id"]) for r in curs.fetchall()}

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

    def close(self) -> None:
        self.datastore.close()
