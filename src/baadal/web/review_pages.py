"""Faculty and orgadmin pages: requests to verify or approve, the organisation's VMs."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
