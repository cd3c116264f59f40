"""The task engine on PostgreSQL: idle workers hear NOTIFY, and a handler whose server
restarted under it gives its task back instead of failing it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import Task, TaskEvent, VMEventLog
from baadal.db.schema import upgrade
from baadal.db.session import make_engine, session_scope
from baadal.tasks import queue, wakeup
from baadal.tasks.worker import Worker
from tests.support import handlers as H
from tests.support.pg import PrivateServer

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

#: bound of every wait below (none of them should take more than a fraction of it)
WAIT_S = 60


def test_a_listener_hears_a_committed_enqueue(pg_engine: Engine) -> None:
    wake = threading.Event()
    listener = wakeup.Listener(pg_engine, wake, retry_s=0.1)
    try:
        assert wake.wait(WAIT_S)  # set once it listens
        wake.clear()
        with session_scope(pg_engine) as s:
            queue.enqueue(s, H.ECHO)
        assert wake.wait(WAIT_S)
    finally:
        listener.stop()
        listener.thread.join()


@pytest.fixture
def server() -> Iterator[PrivateServer]:
    """A server of this test's own: restarting the shared one would hit other tests."""
    srv = PrivateServer()
    srv.start()
    yield srv
    srv.stop()


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_handler_whose_server_restarts_runs_again_and_ends_success_once(
    settings: Settings, tmp_path: Path, server: PrivateServer
) -> None:
    """The handler holds a transaction open while PostgreSQL restarts; its write then
    fails on the cut connection. The task is not FAILED: it goes back to the queue at
    once (the lease, 60 s, has not ended: this is not lease recovery), runs again and
    ends SUCCESS, with one final history row and one handler write."""
    engine = make_engine(server.url)
    try:
        upgrade(engine)
        signals = tmp_path / "signals"
        signals.mkdir()
        with session_scope(engine) as s:
            task_id = queue.enqueue(s, H.HOLDS_TRANSACTION, parameters={"signals": str(signals)}).id
        settings.worker.poll_interval_s = 0.05
        worker = Worker(engine, settings, worker_id="w", concurrency=1)
        thread = threading.Thread(target=worker.run, kwargs={"until_idle": True})
        thread.start()
        try:
            _wait_for(signals / "started.1")
            server.restart()
            (signals / "go").touch()
        finally:
            thread.join(WAIT_S * 2)
        assert not thread.is_alive()
        with session_scope(engine) as s:
            task = s.get(Task, task_id)
            events = [(e.status, e.message or "") for e in queue.task_events(s, task_id)]
            finals = s.scalars(
                select(TaskEvent.id).where(
                    TaskEvent.task_id == task_id, TaskEvent.status.in_(C.TASK_FINAL)
                )
            ).all()
            writes = s.scalars(select(VMEventLog.attribute)).all()
        assert (task.status, task.attempts, task.lost_attempts) == (C.TaskStatus.SUCCESS, 2, 1)
        assert [status for status, _ in events] == [C.TaskStatus.RETRY, C.TaskStatus.SUCCESS]
        assert "database connection was lost" in events[0][1]
        assert len(finals) == 1
        assert writes == [f"run:{task_id}"]  # the first run's write went with its transaction
    finally:
        engine.dispose()
