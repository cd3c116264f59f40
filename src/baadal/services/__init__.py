"""The service layer: the one place the CLI, REST API and web portal call.

Each function validates its whole input before writing anything, raises
:mod:`baadal.errors` exceptions with a message fit for a person, and works inside the
caller's session so the front door decides where the transaction ends.
"""

from __future__ import annotations

import importlib
import pkgutil


def load_all() -> None:
    """Import every service module (so every guarded function is registered)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
