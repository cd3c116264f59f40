"""The seed's network_helper.is_pingable."""

from __future__ import annotations

from baadal.drivers.remote import run_local
from baadal.errors import ValidationError
from baadal.net.validators import is_valid_ipv4


def is_pingable(ip: str, *, count: int = 2, timeout_s: float = 1.0) -> bool:
    """True if ``ip`` answers at least one of ``count`` echo requests. They are sent one
    at a time and the first answer ends it: a host that answers costs one round trip, not
    ``count`` of them plus the interval between (a sweep pings thousands of hosts)."""
    if not is_valid_ipv4(ip):
        raise ValidationError(f"{ip!r} is not a valid IPv4 address")
    argv = ["ping", "-n", "-q", "-c", "1", "-W", str(timeout_s), ip]
    return any(
        run_local(argv, timeout=timeout_s + 5, check=False).exit_code == 0 for _ in range(count)
    )
