"""The console page: ``POST /vms/{id}/console`` (the VM page's button, CSRF-checked like
every portal POST) makes a one-time token and a VNC grant and answers the noVNC page
that uses them at once. The password is in the page's body only, never in a URL, and
the page is not cached."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from baadal import constants as C
from baadal.services import consoles, runtime
from baadal.web.pages import VisitorDep, render

router = APIRouter(include_in_schema=False)

VMIdPath = Annotated[int, Path(ge=1, le=C.ROW_ID_MAX)]


@router.post("/vms/{vm_id}/console")
def console_page(request: Request, visitor: VisitorDep, vm_id: VMIdPath) -> Response:
    engine = runtime.checked_engine(visitor.settings)
    ticket = consoles.open_console(engine, visitor.actor, visitor.settings, vm_id)
    response = render(request, "console.html", visitor, ticket=ticket)
    response.headers["Cache-Control"] = "no-store"
    return response
