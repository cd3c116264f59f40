"""Lab helpers: things the tests, the demo and the lab need that production does not."""

from baadal.lab.guest import (
    DEFAULT_CMDLINE,
    READY_MARKER,
    ReadyInfo,
    TinyGuest,
    build_tiny_guest,
    console_line,
    console_log_has,
    parse_ready_line,
)

__all__ = [
    "DEFAULT_CMDLINE",
    "READY_MARKER",
    "ReadyInfo",
    "TinyGuest",
    "build_tiny_guest",
    "console_line",
    "console_log_has",
    "parse_ready_line",
]
