"""websockify's token plugin: ``baadal serve`` starts websockify with
``--token-plugin baadal.web.websockify_tokens.DatabaseTokens`` (its own process: websockify
needs its signals and forks a process per connection).

The relay (:mod:`baadal.web.console_relay`) passes ``<user id>.<token>`` as websockify's
``token`` parameter: the user it authenticated and the one-time token the page got. The
plugin redeems it in the database; websockify refuses the connection before the
WebSocket upgrade when :meth:`DatabaseTokens.lookup` answers None.
"""

from __future__ import annotations

import logging
import re

from websockify.token_plugins import BasePlugin

from baadal import constants as C
from baadal.config import get_settings
from baadal.services import consoles, runtime

log = logging.getLogger("baadal")

#: what the relay sends: the authenticated user's id and the console token
_PARAM_RE = re.compile(rf"(?P<user>-?[0-9]{{1,18}})\.(?P<token>{C.CONSOLE_TOKEN_RE})")
_TOKEN_RE = re.compile(C.CONSOLE_TOKEN_RE)


def _hide_tokens(record: logging.LogRecord) -> bool:
    """websockify logs refused tokens and request paths; a token never reaches a log."""
    message = record.getMessage()
    hidden = _TOKEN_RE.sub("<token>", message)
    if hidden != message:
        record.msg, record.args = hidden, None
    return True


def param(user_id: int, token: str) -> str:
    """websockify's ``token`` parameter for ``token`` presented by user ``user_id``."""
    return f"{user_id}.{token}"


class DatabaseTokens(BasePlugin):
    """Redeems one-time console tokens (``--token-source`` is not used: the database is
    the one in Baadal's settings, as for every other process)."""

    def __init__(self, src: str | None = None) -> None:
        super().__init__(src)
        # websockify has set up its log handlers by now (before loading the plugin)
        for handler in logging.getLogger().handlers:
            handler.addFilter(_hide_tokens)

    def lookup(self, token: str) -> tuple[str, int] | None:
        """The VM's VNC address for a valid, unused token of this user, else None. Runs
        in the connection's own (forked) process, which opens its own database engine."""
        found = _PARAM_RE.fullmatch(token) if isinstance(token, str) else None
        if found is None:
            return None
        try:
            engine = runtime.checked_engine(get_settings())
            target = consoles.redeem_console_token(engine, found["token"], int(found["user"]))
        except Exception:  # a database problem refuses the connection; websockify goes on
            log.exception("console token lookup failed")
            return None
        return None if target is None else (target.host, target.port)
