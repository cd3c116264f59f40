"""The console in the browser: a one-time token, the VNC password and the WebSocket path
(``POST /vms/{id}/console``). The path is relative to this server: the WebSocket is
relayed to websockify on the same origin (:mod:`baadal.web.console_relay`)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from baadal.api.callers import CallerDep, errors
from baadal.api.schemas import Time
from baadal.api.vm_routes import VMIdPath
from baadal.services import consoles

router = APIRouter(tags=["vms"])


class ConsoleOut(BaseModel):
    """Shown once: the token opens one WebSocket connection before ``expires``, for the
    caller only (with the same API token, or the same portal login); the password is the
    VNC console's until ``grant_expires``. Neither is stored."""

    vm_id: int
    token: str
    password: str
    path: str
    expires: Time
    grant_expires: Time


@router.post(
    "/vms/{vm_id}/console",
    status_code=201,
    response_model=ConsoleOut,
    responses=errors(404, 409, 502),
    summary="open a running VM's console in the browser (one-time token + VNC password)",
)
def open_console(who: CallerDep, vm_id: VMIdPath) -> ConsoleOut:
    ticket = consoles.open_console(who.engine(), who.actor, who.settings, vm_id)
    return ConsoleOut(
        vm_id=ticket.vm_id,
        token=ticket.token,
        password=ticket.password,
        path=ticket.path,
        expires=ticket.expires,
        grant_expires=ticket.grant_expires,
    )
