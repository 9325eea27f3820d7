"""One forked helper process and our end of its pipe: the primitive behind the replay workers,
the store prefetcher, the Kafka fetch helpers and the ingest's decoding helper.

A `Child` runs `main(conn, *args)` in a forked process (the children need this process's
objects, not a re-import of `python -m lifecycle`'s main module). Messages both ways are
marshal-encoded (tuples, lists, dicts, str, bytes, numbers, None: fast, and only ever read
from our own child). The child dies with its parent (Linux `PR_SET_PDEATHSIG`), so a SIGKILL
of the parent never leaves it reading on. An exception that escapes `main` reaches the parent
as an exception from `recv`: `CorruptEvent` stays `CorruptEvent`, anything else is
`ChildFailed`; so does the child's death.
"""

from __future__ import annotations

import contextlib
import ctypes
import marshal
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable
from multiprocessing import connection as mp_connection
from multiprocessing.connection import Connection
from typing import Any

from schemas.codec import CorruptEvent

#: reserved message kinds: the child's main raised (never sent by a main itself)
_FAILED = "__failed__"
_CORRUPT = "__corrupt__"


class ChildFailed(RuntimeError):
    """A helper process raised or died; the message names it and why."""


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


class Child:
    """A helper process running `main(conn, *args)`, and our end of its duplex pipe."""

    def __init__(self, main: Callable[..., None], *args: Any, name: str) -> None:
        ctx: Any = multiprocessing.get_context("fork" if can_fork() else "spawn")
        self.name = name
        self.conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(target=_run_child, args=(main, theirs, os.getpid(), args), daemon=True, name=name)
        self.proc.start()
        theirs.close()

    def send(self, message: Any) -> None:
        self.conn.send_bytes(marshal.dumps(message))

    def recv(self) -> Any:
        """The child's next message; raises what the child raised, or `ChildFailed` if it died."""
        try:
            raw = self.conn.recv_bytes()
        except (EOFError, OSError) as exc:
            self.proc.join(timeout=5)
            raise ChildFailed(f"{self.name} (pid {self.proc.pid}) died (exit code {self.proc.exitcode})") from exc
        message = marshal.loads(raw)
        if isinstance(message, tuple) and message and message[0] in (_FAILED, _CORRUPT):
            if message[0] == _CORRUPT:
                raise CorruptEvent(message[1])
            raise ChildFailed(f"{self.name} (pid {self.proc.pid}) failed: {message[1]}")
        return message

    def poll(self, timeout: float = 0.0) -> bool:
        return self.conn.poll(timeout)

    def check(self) -> None:
        """Raise `ChildFailed` if the child exited with nothing left to read."""
        if not self.proc.is_alive() and not self.conn.poll(0):
            raise ChildFailed(f"{self.name} (pid {self.proc.pid}) exited with {self.proc.exitcode}")

    def close(self, goodbye: Any = None, timeout: float = 10.0) -> None:
        """Send `goodbye` (a child's main reads None as 'stop'), wait for the exit, kill it after
        `timeout` seconds, and close our end."""
        with contextlib.suppress(OSError, EOFError, ValueError):
            self.send(goodbye)
        self.proc.join(timeout=timeout)
        self.kill()

    def kill(self) -> None:
        """End the child at once (after an error on our side) and close our end."""
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()


def wait(children: Iterable[Child], timeout: float | None) -> list[Child]:
    """The children with a message ready, waiting up to `timeout` seconds for the first."""
    by_conn = {child.conn: child for child in children}
    ready = mp_connection.wait(list(by_conn), timeout=timeout)
    return [by_conn[conn] for conn in ready if isinstance(conn, Connection)]


def send_from_child(conn: Connection, message: Any) -> None:
    """A child's send (the parent's `Child.recv` reads it)."""
    conn.send_bytes(marshal.dumps(message))


def recv_in_child(conn: Connection) -> Any:
    """A child's receive of what the parent's `Child.send` sent."""
    return marshal.loads(conn.recv_bytes())


def encode_message(message: Any) -> bytes:
    """`message` as `send_from_child` writes it, for a child that encodes on its working thread
    and writes from another (`send_encoded_from_child`), so that only bytes wait in between."""
    return marshal.dumps(message)


def send_encoded_from_child(conn: Connection, data: bytes) -> None:
    """A child's send of a message `encode_message` encoded (the parent's `Child.recv` reads it)."""
    conn.send_bytes(data)


def close_all(children: Iterable[Child], goodbye: Any = None, timeout: float = 10.0) -> None:
    """`Child.close` of several children, the goodbyes sent to all before waiting for the first,
    so that they wind down together."""
    children = list(children)
    for child in children:
        with contextlib.suppress(OSError, EOFError, ValueError):
            child.send(goodbye)
    for child in children:
        child.proc.join(timeout=timeout)
        child.kill()


def _run_child(main: Callable[..., None], conn: Connection, parent: int, args: tuple[Any, ...]) -> None:
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        main(conn, *args)
    except (EOFError, BrokenPipeError):
        pass  # the parent closed its end: nothing to report to
    except CorruptEvent as exc:
        with contextlib.suppress(OSError):
            send_from_child(conn, (_CORRUPT, str(exc)))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            send_from_child(conn, (_FAILED, f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _die_with(parent: int) -> None:
    """Linux: the kernel kills this child when the parent dies (SIGKILL included), instead of
    leaving it working until its next message finds the pipe closed."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that took effect
        os._exit(1)
