"""The console in the browser: one-time tokens for noVNC through websockify.

A click on "console" makes a VNC grant (:func:`baadal.services.vms.grant_vnc_access`, with
all its rules: who may, running and placed, 10 a day, expiry, a fresh password) and a
token bound to the user and the VM. The token opens one WebSocket connection within
:data:`~baadal.constants.CONSOLE_TOKEN_TTL_S` seconds, for that user only: websockify's
token plugin redeems it here and learns where the VM's console listens. Only the token's
SHA-256 is stored, so the table leaks nothing usable.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from sqlalchemy import Engine, select, update

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import VM, ConsoleToken, User
from baadal.db.session import session_scope
from baadal.services import lookup, vms
from baadal.services.policy import (
    Action,
    Actor,
    actor_of,
    allowed,
    guarded,
    open_to_anyone,
    require,
    vm_filter,
)
from baadal.timeutil import utcnow

log = logging.getLogger("baadal")

_TOKEN_RE = re.compile(C.CONSOLE_TOKEN_RE)


@dataclass(frozen=True)
class ConsoleTicket:
    """What the console page needs: the WebSocket path (with the token) and the VNC
    password, both for one use; neither appears in repr (nor in logs)."""

    vm_id: int
    vm_name: str
    token: str = field(repr=False)
    password: str = field(repr=False)
    #: until when the token opens its one connection
    expires: datetime
    #: until when the VNC password works (the grant's end)
    grant_expires: datetime

    @property
    def path(self) -> str:
        """Where the browser connects, relative to the portal's origin."""
        return f"{C.CONSOLE_WEBSOCKET_PATH}?{urlencode({'token': self.token})}"


@dataclass(frozen=True)
class ConsoleTarget:
    """Where websockify connects for a redeemed token: the VM's VNC port on its host."""

    vm_id: int
    host: str
    port: int


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@guarded(Action.VM_CONSOLE)
def open_console(
    engine: Engine, actor: Actor, settings: Settings, name_or_id: str | int
) -> ConsoleTicket:
    """A VNC grant (every rule of :func:`vms.grant_vnc_access`) and a one-time token for
    the browser console, bound to the actor and the VM. A refused call changes nothing."""
    with session_scope(engine) as session:
        vm = lookup.vm(session, name_or_id, prefer=vm_filter(actor, Action.VM_READ))
        require(session, actor, Action.VM_CONSOLE, vm, f"VM {vm.vm_name}")
        vm_id, vm_name = vm.id, vm.vm_name
    grant = vms.grant_vnc_access(engine, actor, settings, vm_id)
    assert grant.password is not None  # a grant always hands out its password
    token = secrets.token_urlsafe(C.CONSOLE_TOKEN_BYTES)
    now = utcnow()
    expires = now + timedelta(seconds=C.CONSOLE_TOKEN_TTL_S)
    with session_scope(engine) as session:
        session.add(
            ConsoleToken(
                token_hash=_digest(token),
                user_id=actor.user_id,
                vm_id=vm_id,
                created=now,
                expires=expires,
            )
        )
    log.info("console token for VM %d made for %s", vm_id, actor.username)
    return ConsoleTicket(vm_id, vm_name, token, grant.password, expires, grant.expiry_time)


@open_to_anyone(
    "the one-time console token is the credential; the user it was made for must still "
    "be allowed VM_CONSOLE on its VM"
)
def redeem_console_token(engine: Engine, token: str, user_id: int) -> ConsoleTarget | None:
    """Where the console of ``token``'s VM listens, once: None for an unknown, used or
    expired token, one made for another user, or a VM or user that may no longer open
    the console. Claiming is one conditional UPDATE, so of two racing connections exactly
    one wins (the other's UPDATE matches no row). A token presented by another user is
    not used up by that attempt."""
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        return None
    now = utcnow()
    with session_scope(engine) as session:
        claimed = session.execute(
            update(ConsoleToken)
            .where(
                ConsoleToken.token_hash == _digest(token),
                ConsoleToken.user_id == user_id,
                ConsoleToken.used_at.is_(None),
                ConsoleToken.expires > now,
            )
            .values(used_at=now)
        )
        if claimed.rowcount != 1:
            return None
        vm_id = session.scalar(
            select(ConsoleToken.vm_id).where(ConsoleToken.token_hash == _digest(token))
        )
        vm = session.get(VM, vm_id)
        user = session.get(User, user_id)
        if vm is None or user is None:
            return None
        if not allowed(session, actor_of(session, user), Action.VM_CONSOLE, vm):
            log.warning("console token of VM %d refused: user %d may no longer", vm.id, user_id)
            return None
        if vm.status != C.VMStatus.RUNNING or vm.host is None or vm.vnc_port is None:
            log.warning("console token of VM %d refused: the VM is not running", vm.id)
            return None
        log.info("console of VM %d opened by user %d", vm.id, user_id)
        return ConsoleTarget(vm.id, vm.host.address, vm.vnc_port)
