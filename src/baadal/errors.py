"""Baadal's exceptions. Every message is meant to be shown to a person as it is.

    BaadalError
    ├── ValidationError       bad input: nothing was changed
    ├── NotFoundError         a named thing does not exist
    ├── ConflictError         duplicate name, address already used, task already queued
    ├── PermissionDenied      the user lacks the role
    ├── ResourceExhausted     pool empty, no host or datastore fits
    ├── ConfigError           the settings file or environment is wrong
    └── RemoteCommandError    a command on another machine failed (names host + command)

Front doors (CLI, REST, web) catch BaadalError and show its message; anything else is a bug
and is logged with its traceback, never shown.
"""

from __future__ import annotations


class BaadalError(Exception):
    """Base class: the message is safe to show to the user."""


class ValidationError(BaadalError):
    pass


class NotFoundError(BaadalError):
    pass


class ConflictError(BaadalError):
    pass


class PermissionDenied(BaadalError):
    pass


class ResourceExhausted(BaadalError):
    pass


class ConfigError(BaadalError):
    pass


class RemoteCommandError(BaadalError):
    def __init__(
        self, host: str, command: list[str], reason: str, exit_code: int | None = None
    ) -> None:
        self.host = host
        self.command = command
        self.reason = reason
        self.exit_code = exit_code
        super().__init__(f"command {' '.join(command)!r} on {host} failed: {reason}")
