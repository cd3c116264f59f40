"""Waking idle workers when a task becomes runnable, instead of waiting out their poll.

A transaction that makes a task runnable (enqueue, retry, lease recovery) calls
:func:`wake_workers`. When it commits, workers of this process waiting for work wake at
once; on PostgreSQL it also sends ``NOTIFY`` (delivered at commit, dropped on rollback),
which workers of other processes hear through a :class:`Listener` on a connection of
their own, unless ``[worker] listen`` is off (no worker listens, so no ``NOTIFY`` is
sent: :func:`set_listening`). Polling stays the fallback: a missed wake-up costs one
poll interval, never a task. SQLite has no notifications across processes, so its
workers poll.
"""

from __future__ import annotations

import logging
import threading
import weakref

from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.db.session import is_postgres

log = logging.getLogger("baadal")

_PENDING = "baadal_wake_workers"
_NOTIFY = text(f"NOTIFY {C.TASK_NOTIFY_CHANNEL}")
#: the wake-up events of this process's workers
_waiting: weakref.WeakSet[threading.Event] = weakref.WeakSet()
#: engines whose workers do not LISTEN ([worker] listen = false): nobody hears a NOTIFY
_unheard: weakref.WeakSet[Engine] = weakref.WeakSet()


def set_listening(engine: Engine, listening: bool) -> None:
    """Whether workers LISTEN on this engine's database (``[worker] listen``); when they
    do not, wake-ups send no ``NOTIFY`` (a statement per enqueue that nobody reads)."""
    if listening:
        _unheard.discard(engine)
    else:
        _unheard.add(engine)


def wake_workers(session: Session) -> None:
    """Wake waiting workers once this transaction commits (once per transaction)."""
    if session.info.get(_PENDING):
        return
    session.info[_PENDING] = True
    bind = session.get_bind()
    if is_postgres(bind) and bind not in _unheard:
        session.execute(_NOTIFY)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.info.pop(_PENDING, False):
        for waiting in list(_waiting):
            waiting.set()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


def wake_in_process(wake: threading.Event) -> None:
    """Set ``wake`` whenever a transaction of this process makes a task runnable."""
    _waiting.add(wake)


class Listener:
    """LISTENs on its own PostgreSQL connection and sets ``wake`` on every notification,
    and after every (re)connect (a notification sent while it was away is not kept)."""

    def __init__(self, engine: Engine, wake: threading.Event, retry_s: float) -> None:
        self.conninfo = engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False
        )
        self.wake, self.retry_s = wake, retry_s
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="task-listener", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Ask the thread to end; it does within LISTEN_CHECK_S (it is a daemon)."""
        self.stopped.set()

    def _run(self) -> None:
        import psycopg  # here: a process that never listens (SQLite) need not load it

        while not self.stopped.is_set():
            try:
                with psycopg.connect(self.conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {C.TASK_NOTIFY_CHANNEL}")
                    self.wake.set()
                    while not self.stopped.is_set():
                        for _ in conn.notifies(timeout=C.LISTEN_CHECK_S):
                            self.wake.set()
            except psycopg.Error as exc:  # the server went away: poll until it is back
                log.warning("task listener: %s; retrying in %g s", exc, self.retry_s)
                self.stopped.wait(self.retry_s)
