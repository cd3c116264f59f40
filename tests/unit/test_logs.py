"""Baadal's log files: routing, idempotent setup, log_exception, redaction, multi-process."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from baadal import logs
from baadal.config import Settings, load_settings
from baadal.errors import ConfigError
from baadal.logs import (
    LOG_FILE,
    RRD_LOG_FILE,
    close_logging,
    get_logger,
    get_rrd_logger,
    log_exception,
    redact,
    setup_logging,
)

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    close_logging()
    yield
    close_logging()


def _flush() -> None:
    for logger in (get_logger(), get_rrd_logger()):
        for handler in logger.handlers:
            handler.flush()


def _read(path: Path) -> str:
    _flush()
    return path.read_text(encoding="utf-8")


def _file_handlers(logger: logging.Logger) -> list[logging.Handler]:
    """The rotating file handlers behind Baadal's deferred ones (made now)."""
    return [h.target() for h in logger.handlers if isinstance(h, logs._DeferredFileHandler)]


def _deferred(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if isinstance(h, logs._DeferredFileHandler)]


def _installed(logger: logging.Logger) -> list[logging.Handler]:
    """Baadal's handlers only: pytest attaches its own capture handlers to loggers too."""
    return _deferred(logger) + [h for h in logger.handlers if type(h) is logging.StreamHandler]


def test_setup_creates_dir_and_both_files(settings: Settings) -> None:
    assert not settings.log_dir.exists()
    setup_logging(settings)
    assert (settings.log_dir / LOG_FILE).is_file()
    assert (settings.log_dir / RRD_LOG_FILE).is_file()


def test_both_files_routed(settings: Settings) -> None:
    setup_logging(settings)
    get_logger().info("main-line-1234")
    logging.getLogger("baadal.tasks").warning("child-line-5678")
    get_rrd_logger().info("rrd-line-9999")

    main = _read(settings.log_dir / LOG_FILE)
    rrd = _read(settings.log_dir / RRD_LOG_FILE)
    assert "main-line-1234" in main
    assert "child-line-5678" in main
    assert "rrd-line-9999" not in main
    assert "rrd-line-9999" in rrd
    assert "main-line-1234" not in rrd
    assert "child-line-5678" not in rrd
    line = next(x for x in main.splitlines() if "main-line-1234" in x)
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[\d+\] baadal INFO: ", line)


def test_level_and_rotation_sizes_come_from_settings(tmp_path: Path) -> None:
    s = load_settings(
        log={"dir": str(tmp_path / "lg"), "level": "warning", "max_bytes": 4321, "backup_count": 7}
    )
    setup_logging(s)
    get_logger().info("too-quiet")
    get_logger().warning("loud-enough")
    text = _read(tmp_path / "lg" / LOG_FILE)
    assert "loud-enough" in text
    assert "too-quiet" not in text
    (handler,) = _file_handlers(get_logger())
    assert handler.maxBytes == 4321  # type: ignore[attr-defined]
    assert handler.backupCount == 7  # type: ignore[attr-defined]


def test_defaults_are_upstream_sizes(settings: Settings) -> None:
    setup_logging(settings)
    (handler,) = _file_handlers(get_logger())
    assert handler.maxBytes == 10 * 1024 * 1024  # type: ignore[attr-defined]
    assert handler.backupCount == 20  # type: ignore[attr-defined]


def test_unknown_level_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"log\.level"):
        setup_logging(load_settings(log={"dir": str(tmp_path), "level": "LOUD"}))


def test_unusable_log_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write logs in"):
        setup_logging(load_settings(log={"dir": str(blocker / "logs")}))


def test_setup_is_idempotent_and_reconfigures_on_new_dir(
    settings: Settings, tmp_path: Path
) -> None:
    for _ in range(3):
        setup_logging(settings)
    assert len(_installed(get_logger())) == 1
    assert len(_installed(get_rrd_logger())) == 1
    assert get_rrd_logger().propagate is False

    other = load_settings(log={"dir": str(tmp_path / "elsewhere")})
    setup_logging(other)
    setup_logging(other)
    assert len(_installed(get_logger())) == 1
    assert len(_installed(get_rrd_logger())) == 1
    get_logger().info("goes-to-new-dir")
    assert "goes-to-new-dir" in _read(tmp_path / "elsewhere" / LOG_FILE)
    assert "goes-to-new-dir" not in _read(settings.log_dir / LOG_FILE)


def test_foreign_handlers_survive_reconfiguration(settings: Settings, tmp_path: Path) -> None:
    foreign = logging.NullHandler()
    get_logger().addHandler(foreign)
    try:
        setup_logging(settings)
        setup_logging(load_settings(log={"dir": str(tmp_path / "b")}))
        close_logging()
        assert foreign in get_logger().handlers
        assert _installed(get_logger()) == []
    finally:
        get_logger().removeHandler(foreign)


def test_console_handler_warns_on_stderr(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(settings, console=True)
    setup_logging(settings, console=True)
    assert len(_installed(get_logger())) == 2
    get_logger().info("only-in-file")
    get_logger().warning("on-console password=hunter2")
    err = capsys.readouterr().err
    assert "on-console" in err
    assert "only-in-file" not in err
    assert "hunter2" not in err
    setup_logging(settings)  # a non-CLI caller drops the console again
    assert len(_installed(get_logger())) == 1


def test_log_exception_returns_and_writes_traceback(settings: Settings) -> None:
    setup_logging(settings)

    def failing() -> None:
        raise KeyError("no-such-vm-42")

    try:
        failing()
    except KeyError:
        text = log_exception("while creating vm")
    assert "KeyError" in text
    assert "no-such-vm-42" in text
    assert "in failing" in text
    logged = _read(settings.log_dir / LOG_FILE)
    assert "ERROR: while creating vm" in logged
    assert "Traceback (most recent call last)" in logged
    assert "KeyError: 'no-such-vm-42'" in logged


def test_log_exception_on_given_logger(settings: Settings) -> None:
    setup_logging(settings)
    try:
        raise ValueError("rrd-broke")
    except ValueError:
        log_exception("rrd update failed", get_rrd_logger())
    assert "ValueError: rrd-broke" in _read(settings.log_dir / RRD_LOG_FILE)
    assert "rrd-broke" not in _read(settings.log_dir / LOG_FILE)


def test_log_exception_without_exception(settings: Settings) -> None:
    setup_logging(settings)
    assert log_exception("nothing happened") == ""
    assert "nothing happened (no exception being handled)" in _read(settings.log_dir / LOG_FILE)


PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDSECRETKEYMATERIALSECRETKEYMATERIAL0000000000AAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


def test_secrets_never_reach_the_files(settings: Settings) -> None:
    setup_logging(settings)
    log = get_logger()
    log.info("login user=bob password=Hunter2Secret ok")
    log.info("payload %s", '{"user": "bob", "passwd": "JsonSecret1", "x": 1}')
    log.info("key file content:\n%s\nafter-key", PEM)
    log.info("db url %s", "postgresql+psycopg://baadal:UrlSecret9@db:5432/baadal")
    log.info("headers %r", {"Authorization": "Bearer TokSecret77", "api_key": "ApiSecret5"})
    get_rrd_logger().info("rrd token: RrdSecret3")
    try:
        raise RuntimeError("connect failed secret=TraceSecret8")
    except RuntimeError:
        returned = log_exception("ssh")

    main = _read(settings.log_dir / LOG_FILE)
    rrd = _read(settings.log_dir / RRD_LOG_FILE)
    for leaked in (
        "Hunter2Secret",
        "JsonSecret1",
        "SECRETKEYMATERIAL",
        "b3BlbnNzaC1rZXkt",
        "UrlSecret9",
        "TokSecret77",
        "ApiSecret5",
        "TraceSecret8",
    ):
        assert leaked not in main, leaked
    assert "RrdSecret3" not in rrd
    assert "TraceSecret8" not in returned
    # the rest of each message is still there, so the log stays useful
    assert "login user=bob password=*** ok" in main
    assert '"user": "bob", "passwd": "***", "x": 1' in main
    assert "[REDACTED PRIVATE KEY]\nafter-key" in main
    assert "postgresql+psycopg://baadal:***@db:5432/baadal" in main
    assert "rrd token: ***" in rrd


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("monkey=banana donkey: kong", "monkey=banana donkey: kong"),
        ("auth_type=db user=alice", "auth_type=db user=alice"),
        ("nat_ssh_key=/root/.ssh/id_rsa", "nat_ssh_key=***"),
        ("PASSWORD=a&Secret=b", "PASSWORD=***&Secret=***"),
        ("{'db_password': 'it\\'s'}", "{'db_password': '***'}"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE truncated", "[REDACTED PRIVATE KEY]"),
    ],
)
def test_redact_forms(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # '/', '#' and '?' in a password ended the old pattern's match: it printed them
        ("url postgresql://bob:pa/ss@db/baadal ok", "url postgresql://bob:***@db/baadal ok"),
        ("url=postgresql://bob:p#w?x@db:5432/b", "url=postgresql://bob:***@db:5432/b"),
        ("'postgresql+psycopg://bob:a/b?c#d@db/b',", "'postgresql+psycopg://bob:***@db/b',"),
        ("postgresql://bob@db/b?password=Pw/1&sslmode=require",
         "postgresql://bob@db/b?password=***&sslmode=require"),
        ("postgresql://bob@db/b?sslmode=require&sslpassword=x%2Fy",
         "postgresql://bob@db/b?sslmode=require&sslpassword=***"),
        ("postgresql://bob:p@ss@db/b", "postgresql://bob:***@db/b"),
        ("odd.scheme://bob:se/cret@host/x", "odd.scheme://bob:***@host/x"),
        # URLs with nothing secret are left exactly as they were
        ("qemu+ssh://root@h1/system?keyfile=/k/id", "qemu+ssh://root@h1/system?keyfile=/k/id"),
        ("see http://localhost:8000/x.", "see http://localhost:8000/x."),
    ],
)  # fmt: skip
def test_redact_url_passwords_the_way_sqlalchemy_reads_them(text: str, expected: str) -> None:
    assert redact(text) == expected
    for secret in ("pa/ss", "p#w?x", "a/b?c#d", "Pw/1", "x%2Fy", "se/cret", "ss@db"):
        assert secret not in redact(text)


# --------------------------------------------------------------------------- processes

PROCESSES = 6
LINES = 400
LINE_RE = re.compile(
    r"^\S+ \S+ \[(?P<pid>\d+)\] baadal INFO: proc=(?P<proc>\d+) line=(?P<line>\d+) "
    r"(?P<pad>x+) end$"
)
PAD = 100

CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from baadal.config import load_settings
    from baadal.logs import get_logger, setup_logging

    log_dir, proc, lines, pad = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    setup_logging(load_settings(log={"dir": log_dir, "max_bytes": 20000, "backup_count": 500}))
    log = get_logger()
    barrier = Path(log_dir, "go")
    Path(log_dir, f"ready-{proc}").touch()
    deadline = time.monotonic() + 20
    while not barrier.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    for n in range(lines):
        log.info("proc=%d line=%d %s end", proc, n, "x" * pad)
    """
)


def test_many_processes_share_one_rotating_file(tmp_path: Path) -> None:
    log_dir = tmp_path / "shared-logs"
    log_dir.mkdir()
    started = time.monotonic()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(log_dir), str(p), str(LINES), str(PAD)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(PROCESSES)
    ]
    try:
        deadline = time.monotonic() + 30
        while len(list(log_dir.glob("ready-*"))) < PROCESSES:
            assert time.monotonic() < deadline, "children did not start"
            assert all(c.poll() is None for c in children), "a child died early"
            time.sleep(0.01)
        (log_dir / "go").touch()
        for child in children:
            _, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            assert err == "", err  # the handler reports write/rotation failures on stderr
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    files = sorted(log_dir.glob(f"{LOG_FILE}*"))
    assert len(files) > 5, f"rotation did not happen: {files}"
    seen: dict[int, set[int]] = {p: set() for p in range(PROCESSES)}
    pids: dict[int, set[str]] = {p: set() for p in range(PROCESSES)}
    total = 0
    for path in files:
        assert path.stat().st_size <= 20000 + 1000, path
        for raw in path.read_text(encoding="utf-8").splitlines():
            match = LINE_RE.match(raw)
            assert match is not None, f"damaged line in {path.name}: {raw!r}"
            assert len(match["pad"]) == PAD
            proc, n = int(match["proc"]), int(match["line"])
            assert n not in seen[proc], f"duplicate line {proc}/{n}"
            seen[proc].add(n)
            pids[proc].add(match["pid"])
            total += 1
    assert total == PROCESSES * LINES
    assert all(seen[p] == set(range(LINES)) for p in range(PROCESSES))
    assert all(len(pids[p]) == 1 for p in range(PROCESSES))
    assert len({next(iter(v)) for v in pids.values()}) == PROCESSES
    assert time.monotonic() - started < 30
