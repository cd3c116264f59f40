"""Baadal's two log files (the seed's ``logger`` and ``rrd_logger``) and ``log_exception``.

``baadal`` (and every ``baadal.*`` child) goes to ``<log_dir>/baadal.log``; ``baadal.rrd``
goes to ``<log_dir>/baadal_rrd.log`` only, so the five-minutely RRD chatter does not bury
the main log. Both use ConcurrentRotatingFileHandler because the web server, the workers
and the scheduler are separate processes writing the same files; it locks per record, so
lines never interleave and rotation is safe across processes.

Every record passes :class:`RedactSecrets` before it is written: logs are read by more
people than the database is, and a password in a log outlives any rotation of it.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from pathlib import Path
from urllib.parse import quote_plus

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from baadal.config import Settings, get_settings
from baadal.errors import ConfigError
from baadal.home import PRIVATE_FILE_MODE, private_dir, private_file, secure_home

LOGGER_NAME = "baadal"
RRD_LOGGER_NAME = "baadal.rrd"
LOG_FILE = "baadal.log"
RRD_LOG_FILE = "baadal_rrd.log"
LOG_FORMAT = "%(asctime)s [%(process)d] %(name)s %(levelname)s: %(message)s"
REDACTED = "***"

#: marks the handlers this module installed, so reconfiguring never touches anyone else's
_OWNED = "_baadal_owned"

_lock = threading.Lock()
_state: tuple[object, ...] | None = None


# --------------------------------------------------------------------------- redaction

_PEM_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)

# Key names: anything containing password/secret/token/..., or key/pwd/credentials as a
# whole word or after a '_'/'-' (ssh_key, api-key) so that "monkey=1" is left alone.
_SECRET_KEY_NAME = (
    r"(?:\w*(?:password|passwd|passphrase|secret|token)\w*"
    r"|(?:[\w-]*[_-])?(?:key|apikey|pwd|credentials?|authorization))"
)
_SECRET_KV = re.compile(
    r"""(?P<lead>(?<![\w-])(?P<q>["']?)""" + _SECRET_KEY_NAME + r"""(?P=q)\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'"""
    r"""|(?:(?:bearer|basic)\s+)?[^\s,;&)}\]]+)""",
    re.IGNORECASE,
)

# a URL in free text (database URLs, libvirt URIs): up to the next blank
_URL = re.compile(r"\b[a-z][\w+.-]*://\S+", re.I)
#: punctuation that ends the sentence around a URL rather than the URL
_URL_TRAILER = "'\",;)]}>"
#: query keys whose values are secrets (?password=..., ?sslpassword=..., ?token=...)
_SECRET_QUERY_KEY = re.compile(r"pass|pwd|secret|token|credential", re.I)
# what SQLAlchemy cannot parse (a scheme with '.' or '-'): all userinfo up to the last '@'
_USERINFO_PASSWORD = re.compile(r"^(?P<lead>[^:/]*://[^:/@]*:).*@")


def _mask_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[0] in "\"'" else ""
    return f"{match.group('lead')}{quote}{REDACTED}{quote}"


def redact_url(url: str) -> str:
    """``url`` with its password and secret query values as ***.

    SQLAlchemy's own parser splits it the way the database driver will, so a password
    with '/', '#' or '?' (or given as ``?password=``) cannot slip past a hand-made pattern.
    A URL without secrets comes back unchanged.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _USERINFO_PASSWORD.sub(rf"\g<lead>{REDACTED}@", url)
    secret_keys = {key for key in parsed.query if _SECRET_QUERY_KEY.search(key)}
    host = parsed.host or ""
    if parsed.password is None and not secret_keys and "@" not in host:
        return url
    if "@" in host:  # an unescaped '@' in the password: all of it up to the last '@'
        parsed = parsed.set(password=REDACTED, host=host.rpartition("@")[2])
    query = {key: REDACTED if key in secret_keys else v for key, v in parsed.query.items()}
    rendered = parsed.set(query=query).render_as_string(hide_password=True)
    return rendered.replace(quote_plus(REDACTED), REDACTED)


def _redact_url_match(match: re.Match[str]) -> str:
    token = match.group()
    url = token.rstrip(_URL_TRAILER)
    return redact_url(url) + token[len(url) :]


def redact(text: str) -> str:
    """Mask secrets in free text; also used on tracebacks that may be stored elsewhere."""
    text = _PEM_PRIVATE_KEY.sub("[REDACTED PRIVATE KEY]", text)
    text = _SECRET_KV.sub(_mask_value, text)
    return _URL.sub(_redact_url_match, text)


class RedactSecrets(logging.Filter):
    """Rewrites the record in place, because a secret may hide in args or the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # bad %-args: the handler reports that itself
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# --------------------------------------------------------------------------- setup


def get_logger() -> logging.Logger:
    """The seed's ``logger``: everything except RRD collection."""
    return logging.getLogger(LOGGER_NAME)


def get_rrd_logger() -> logging.Logger:
    """The seed's ``rrd_logger``: RRD collection only, kept out of baadal.log."""
    return logging.getLogger(RRD_LOGGER_NAME)


def _level(name: str) -> int:
    level = logging.getLevelNamesMapping().get(name.strip().upper())
    if level is None:
        raise ConfigError(f"bad setting log.level: unknown level {name!r}")
    return level


class _DeferredFileHandler(logging.Handler):
    """A ConcurrentRotatingFileHandler made at the first record: importing it pulls in
    portalocker and redis (0.1-0.3 s), which a CLI command that logs nothing (``baadal
    status``, a list) should not pay at every start."""

    def __init__(self, path: Path, max_bytes: int, backup_count: int) -> None:
        super().__init__()
        self.path = path
        self.max_bytes = max_bytes
        self.backup_count = backup_count
        self._real: logging.Handler | None = None

    def target(self) -> logging.Handler:
        """The rotating file handler, made now if no record has needed it yet."""
        if self._real is None:
            from concurrent_log_handler import ConcurrentRotatingFileHandler

            real = ConcurrentRotatingFileHandler(
                str(self.path),
                maxBytes=self.max_bytes,
                backupCount=self.backup_count,
                encoding="utf-8",
                chmod=PRIVATE_FILE_MODE,  # rotated files and the handler's lock file too
            )
            real.setFormatter(self.formatter)
            self._real = real
        return self._real

    def emit(self, record: logging.LogRecord) -> None:
        # the filters (redaction) already ran in handle(); the real handler locks the
        # file across processes itself
        self.target().emit(record)

    def flush(self) -> None:
        if self._real is not None:
            self._real.flush()

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._real is not None:
                self._real.close()
                self._real = None
        super().close()


def _file_handler(path: Path, settings: Settings, formatter: logging.Formatter) -> logging.Handler:
    handler = _DeferredFileHandler(path, settings.log.max_bytes, settings.log.backup_count)
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecrets())
    setattr(handler, _OWNED, True)
    return handler


def _remove_owned_handlers() -> None:
    for logger in (get_logger(), get_rrd_logger()):
        for handler in list(logger.handlers):
            if getattr(handler, _OWNED, False):
                logger.removeHandler(handler)
                handler.close()


def setup_logging(settings: Settings | None = None, *, console: bool = False) -> None:
    """Attach Baadal's handlers once per process; changed settings replace them.

    ``console`` adds a WARNING+ stderr handler so a CLI user sees problems without
    reading the log files.
    """
    global _state
    settings = settings or get_settings()
    log_dir = settings.log_dir.expanduser().absolute()
    level = _level(settings.log.level)
    key = (log_dir, level, settings.log.max_bytes, settings.log.backup_count, console)
    with _lock:
        installed = any(getattr(h, _OWNED, False) for h in get_logger().handlers)
        if _state == key and installed:
            return
        _remove_owned_handlers()
        secure_home(settings)
        # the handler opens lazily; create both now (private) so a bad directory fails
        # at startup
        try:
            if not log_dir.is_dir():  # an existing one ([log] dir) is the operator's
                private_dir(log_dir)
            for name in (LOG_FILE, RRD_LOG_FILE):
                private_file(log_dir / name)
        except (OSError, ConfigError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            raise ConfigError(f"cannot write logs in {log_dir}: {reason}") from None
        formatter = logging.Formatter(LOG_FORMAT)

        main = get_logger()
        main.setLevel(level)
        main.addHandler(_file_handler(log_dir / LOG_FILE, settings, formatter))
        if console:
            stream = logging.StreamHandler(sys.stderr)
            stream.setLevel(logging.WARNING)
            stream.setFormatter(formatter)
            stream.addFilter(RedactSecrets())
            setattr(stream, _OWNED, True)
            main.addHandler(stream)

        rrd = get_rrd_logger()
        rrd.setLevel(level)
        rrd.propagate = False
        rrd.addHandler(_file_handler(log_dir / RRD_LOG_FILE, settings, formatter))
        _state = key


def close_logging() -> None:
    """Detach and close Baadal's handlers (tests, and processes about to exec or exit)."""
    global _state
    with _lock:
        _remove_owned_handlers()
        _state = None


def log_exception(message: str = "", logger: logging.Logger | None = None) -> str:
    """The seed's helper: keep the full traceback in the log, hand it back for task history.

    The returned text is redacted like the log line, since callers store it.
    """
    exc_info = sys.exc_info()
    target = logger or get_logger()
    if exc_info[0] is None:
        target.error("%s (no exception being handled)", message or "log_exception called")
        return ""
    formatted = "".join(traceback.format_exception(*exc_info))
    target.error("%s", message or "unhandled exception", exc_info=exc_info)
    return redact(formatted)
