"""Baadal's exceptions. Every message is meant to be shown to a person as it is.

    BaadalError
    ├── ValidationError       bad input: nothing was changed
    ├── NotFoundError         a named thing does not exist
    ├── ConflictError         duplicate name, address already used, task already queued
    ├── PermissionDenied      the user lacks the role
    │   ├── Throttled         too many tries: try again in N s (HTTP 429)
    │   │   ├── LoginThrottled         failed logins of a name or from an address
    │   │   └── RegistrationThrottled  self-registrations from an address
    │   └── Unauthenticated   no credentials, or invalid ones (an API call without a token)
    ├── ResourceExhausted     pool empty, no host or datastore fits
    ├── ConfigError           the settings file or environment is wrong
    └── HostError             a machine Baadal drives failed the command (HTTP 502)
        └── RemoteCommandError    a command on another machine failed (names host + command)

Front doors (CLI, REST, web) catch BaadalError and show its message; anything else is a bug
and is logged with its traceback, never shown.
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError


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


class Throttled(PermissionDenied):
    """Too many tries of something anyone may try: the next waits ``retry_after_s``."""

    def __init__(self, what: str, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"too many {what}: try again in {retry_after_s} s")


class LoginThrottled(Throttled):
    """Logins of this name or from this source wait after repeated failures."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("failed logins", retry_after_s)


class RegistrationThrottled(Throttled):
    """Self-registrations from this address wait until its window ends."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("registrations from this address", retry_after_s)


class Unauthenticated(PermissionDenied):
    """Who is asking is not known: no credentials, or ones that are invalid, expired or
    revoked (HTTP 401, where PermissionDenied is 403: known, but not allowed)."""


class ResourceExhausted(BaadalError):
    pass


class ConfigError(BaadalError):
    pass


class HostError(BaadalError):
    """A host, BMC or other machine Baadal drives failed what it was asked: the input
    was fine, the machine was not (the API answers 502 Bad Gateway). Driver errors
    (``drivers.base.HypervisorError``) are HostErrors too."""


class RemoteCommandError(HostError):
    def __init__(
        self, host: str, command: list[str], reason: str, exit_code: int | None = None
    ) -> None:
        self.host = host
        self.command = command
        self.reason = reason
        self.exit_code = exit_code
        super().__init__(f"command {' '.join(command)!r} on {host} failed: {reason}")


def user_message(exc: BaseException) -> str:
    """What a person may see of any error.

    A BaadalError is written for people. A database error carries its SQL and parameters
    (VNC passwords among them), so only its kind is shown; anything else shows its first
    line (libvirt's and qemu-img's messages are meant for admins). Tracebacks go to the log.
    """
    if isinstance(exc, BaadalError):
        return str(exc)
    if isinstance(exc, SQLAlchemyError):
        return f"database error ({type(exc).__name__}); details are in the log"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
