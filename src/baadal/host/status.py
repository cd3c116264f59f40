"""Is a host reachable? (the seed's host_helper.is_host_available)."""

from __future__ import annotations

import logging

from baadal.errors import RemoteCommandError
from baadal.net.remote import RemoteTarget, execute_remote_cmd

log = logging.getLogger("baadal")


def is_host_available(target: RemoteTarget, *, timeout: float | None = None) -> bool:
    """True if ``pwd`` runs over SSH, as the seed checked; never raises for a host that is
    down, refuses us or does not answer -- callers use this to mark hosts DOWN.

    ``timeout`` bounds the command (default: the target's connect timeout, since ``pwd``
    is instant on any host worth using).
    """
    limit = target.connect_timeout if timeout is None else timeout
    try:
        execute_remote_cmd(target, ["pwd"], timeout=limit)
    except RemoteCommandError as exc:
        log.info("host %s is not available: %s", target.label, exc.reason)
        return False
    return True
