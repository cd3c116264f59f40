"""A user's pages: the dashboard of their VMs, a VM's page and its actions, requesting
a VM, their requests and tasks, quota and idle warnings."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from baadal import constants as C
from baadal.services import vms
from baadal.web.pages import VisitorDep, render

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard(request: Request, visitor: VisitorDep) -> Response:
    """The VMs the visitor owns or shares (an admin's and orgadmin's too: the VMs their
    role lets them see are on their own pages)."""
    with visitor.transaction() as session:
        page = vms.list_vm_page(session, visitor.actor, mine=True, limit=C.API_PAGE_MAX)
        return render(request, "dashboard.html", visitor, vms=page.items)
