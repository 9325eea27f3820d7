"""The CLI's error boundary: what a person can get wrong (a path, a permission, a full disk, an
unreachable database, a damaged file, a wrong secret) becomes one or two lines on stderr that say
what is wrong and what to do; the traceback only with `--debug` (or LEADLEDGER_DEBUG=1).

`explain(exc, settings)` maps an exception (and the exceptions it wraps: eventsourcing wraps
sqlite3 and psycopg errors) to that message; an exception it does not know is reported as an
internal error in one line, with a pointer to `--debug`.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import eventsourcing.persistence as es
import psycopg
from psycopg.conninfo import conninfo_to_dict

from leadledger.bootstrap import EVENTS_DB
from lifecycle.domain.errors import LifecycleError
from lifecycle.forked import ChildFailed
from lifecycle.policies import CorruptPolicy
from lifecycle.settings import Settings, SettingsError
from lifecycle.store.repository import StoreConflict
from projections.engine.sources import StoreMismatch
from projections.engine.sqlite import READMODELS_DB
from schemas.codec import CorruptEvent
from schemas.sealing import DecryptionFailed

#: SQLite's header: the first 16 bytes of every database file
SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True)
class Explained:
    message: str
    code: int = 1


def chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it wraps (`__cause__`, else `__context__`), without loops."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _text(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def blocked_ancestor(path: Path) -> Path | None:
    """The nearest existing folder above `path` that this process may not enter or list."""
    for folder in reversed(path.absolute().parents):
        try:
            if not folder.is_dir():
                return None  # missing, or a file: not a permission problem
        except PermissionError:
            return folder.parent
        if not os.access(folder, os.X_OK):
            return folder
    return None


def _home(settings: Settings | None) -> Path | None:
    return None if settings is None or settings.postgres_dsn else settings.home


def home_problem(home: Path) -> str | None:
    """What is wrong with an embedded home folder, as a sentence (None: nothing found)."""
    blocked = blocked_ancestor(home / EVENTS_DB)
    if blocked is not None:
        return (f"cannot enter {blocked}: permission denied; run as a user who may, or set LEADLEDGER_HOME "
                "(or --home) to a folder of yours")
    for above in [home, *home.parents]:
        if above.exists():
            if not above.is_dir():
                what = "LEADLEDGER_HOME" if above == home else f"{above}, on the path of LEADLEDGER_HOME {home},"
                return f"{what} is a file, not a folder; set LEADLEDGER_HOME (or --home) to a folder"
            break
    events = home / EVENTS_DB
    if events.is_dir():
        return f"{events} is a folder, not an event store; move it away or set LEADLEDGER_HOME to another folder"
    if home.is_dir() and not os.access(home, os.W_OK):
        return (f"{home} is read-only: leadledger writes there even to read (SQLite keeps its -wal and -shm "
                "files next to the store); make it writable (chmod u+w) or copy the folder somewhere writable")
    for name in (EVENTS_DB, f"{EVENTS_DB}-wal", f"{EVENTS_DB}-shm", READMODELS_DB, f"{READMODELS_DB}-wal",
                 f"{READMODELS_DB}-shm", "secret.key"):
        path = home / name
        if path.is_file() and not os.access(path, os.R_OK | (os.W_OK if name != "secret.key" else 0)):
            mode = "read" if name == "secret.key" else "read and write"
            return f"cannot {mode} {path}: permission denied; run as its owner or fix its mode (chmod u+rw)"
    return None


def damaged_file(home: Path) -> Path | None:
    """The first of the home's SQLite files that SQLite cannot read (not a database, truncated)."""
    for name in (EVENTS_DB, READMODELS_DB):
        path = home / name
        if not path.is_file():
            continue
        try:
            with path.open("rb") as fh:
                if fh.read(16) != SQLITE_HEADER:
                    return path
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                row = conn.execute("PRAGMA quick_check(1)").fetchone()
            finally:
                conn.close()
            if row is None or row[0] != "ok":
                return path
        except sqlite3.DatabaseError:
            return path
        except OSError:
            continue
    return None


def _damaged(path: Path, detail: str) -> Explained:
    if path.name == READMODELS_DB:
        return Explained(f"the read models {path} are damaged ({detail}); they are derived data: delete the "
                         "file and run `leadledger replay` to rebuild them from the event store")
    return Explained(f"the event store {path} is not a readable SQLite database ({detail}); restore it from a "
                     "backup, or set LEADLEDGER_HOME to the folder of a good store")


def _postgres_target(settings: Settings | None) -> str:
    if settings is None or not settings.postgres_dsn:
        return "PostgreSQL"
    try:
        params = conninfo_to_dict(settings.postgres_dsn)
    except Exception:  # a DSN that does not parse is reported by the settings check
        return "PostgreSQL"
    return (f"PostgreSQL at {params.get('host') or '127.0.0.1'}:{params.get('port') or 5432}"
            f"/{params.get('dbname') or params.get('user') or 'postgres'}")


def _os_error(exc: OSError, settings: Settings | None) -> Explained:
    name = exc.filename
    path = Path(name) if isinstance(name, str) else None
    home = _home(settings)
    if exc.errno == errno.ENOSPC:
        return Explained(f"no space left on the device{f' writing {path}' if path else ''}: the batch in hand "
                         "was not stored; free some space and run the command again (what was stored is "
                         "recognised and skipped as duplicates)")
    if home is not None and path is not None and (path == home or home in path.parents):
        problem = home_problem(home)
        if problem is not None:
            return Explained(problem)
    if path is not None:
        blocked = blocked_ancestor(path)
        if isinstance(exc, PermissionError) and blocked is not None:
            return Explained(f"cannot enter {blocked}: permission denied; choose a path you may use")
    if isinstance(exc, IsADirectoryError):
        return Explained(f"{name} is a folder; give the path of a file (a new or an existing one)")
    if isinstance(exc, NotADirectoryError | FileExistsError) and path is not None:
        parent = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), path)
        return Explained(f"{parent} is a file where a folder is needed; choose another path")
    if isinstance(exc, FileNotFoundError):
        missing = next((p for p in (path.parents if path else ()) if not p.exists() and p.parent.is_dir()), None)
        if missing is not None:
            return Explained(f"the folder {missing} does not exist; create it, or choose a path in a folder "
                             "that exists")
        return Explained(f"{name}: no such file or folder; check the path")
    if isinstance(exc, PermissionError):
        return Explained(f"{name}: permission denied; run as a user who may use it, or choose another path")
    return Explained(f"{name + ': ' if name else ''}{exc.strerror or _text(exc)}")


def _sqlite(message: str, settings: Settings | None) -> Explained | None:
    home = _home(settings)
    lowered = message.lower()
    where = f" {home / EVENTS_DB}" if home else ""
    if "database or disk is full" in lowered:
        return Explained("the disk is full: the batch in hand was not stored; free some space and run the "
                         "command again (what was stored is recognised and skipped as duplicates)")
    if "locked" in lowered or "busy" in lowered:
        return Explained(f"the store{where} is locked by another leadledger process (for longer than 30 s); "
                         "let it finish, then run the command again")
    if home is not None:
        problem = home_problem(home)
        if problem is not None:
            return Explained(problem)
    if "readonly" in lowered or "read-only" in lowered:
        return Explained(f"the store{where} is read-only; make it and its folder writable (leadledger writes "
                         "there even to read) or copy the folder somewhere writable")
    if any(s in lowered for s in ("not a database", "malformed", "corrupt", "disk i/o error")):
        damaged = damaged_file(home) if home else None
        if damaged is not None:
            return _damaged(damaged, message)
        return Explained(f"a leadledger database is damaged ({message}); restore it from a backup (read "
                         "models: delete readmodels.sqlite and run `leadledger replay`)")
    if "unable to open" in lowered:
        return Explained(f"cannot open the store{where} ({message}); check that LEADLEDGER_HOME is a folder "
                         "you may read and write")
    return None


def explain(exc: BaseException, settings: Settings | None = None) -> Explained:
    """The one- or two-line message for `exc` (and what it wraps)."""
    causes = list(chain(exc))
    for e in causes:
        if isinstance(e, SettingsError):
            return Explained(str(e), 2)
        if isinstance(e, LifecycleError):  # an unknown lead, a refused command: the message says it
            return Explained(str(e))
        if isinstance(e, DecryptionFailed):
            return Explained(f"{e}: the ciphertext was altered, or LEADLEDGER_SECRET is not the secret this "
                             "store was written with; run `leadledger verify` and check the secret")
        if isinstance(e, StoreMismatch):  # the message says which store and to run `leadledger replay`
            return Explained(str(e))
        if isinstance(e, CorruptPolicy):
            return Explained(f"the policy stream is damaged ({e}); restore the store from a backup, or publish "
                             "the policy again into a new store")
        if isinstance(e, StoreConflict):
            return Explained(f"{e} (another process wrote the same thing at the same moment)")
        if isinstance(e, CorruptEvent):
            return Explained(f"the store holds an event that cannot be read ({e}); run `leadledger verify` "
                             "to list every damaged event, and restore them from a backup or an export")
    for e in causes:
        if isinstance(e, sqlite3.Error):
            found = _sqlite(_text(e), settings)
            if found is not None:
                return found
        if isinstance(e, OSError) and e.errno is not None:
            return _os_error(e, settings)
    for e in causes:
        if isinstance(e, psycopg.OperationalError) or (
                isinstance(e, es.OperationalError | es.InterfaceError) and settings is not None
                and settings.postgres_dsn and "connection" in str(e).lower()):
            return Explained(f"cannot reach {_postgres_target(settings)} ({_first_line(e)}); check that the "
                             "server is running and LEADLEDGER_POSTGRES_DSN points at it")
        if isinstance(e, psycopg.ProgrammingError | es.ProgrammingError) and settings is not None \
                and settings.postgres_dsn:
            return Explained(f"{_postgres_target(settings)} refused a statement ({_first_line(e)}); check "
                             f"LEADLEDGER_POSTGRES_SCHEMA ({settings.postgres_schema!r}) and the user's rights")
    for e in causes:  # a helper process's failure comes back as text
        if isinstance(e, ChildFailed | es.PersistenceError):
            found = _sqlite(_text(e), settings)
            if found is not None:
                return found
    return Explained(f"internal error: {type(exc).__name__}: {_first_line(exc)} (run again with --debug for "
                     "the traceback, and please report it)")
