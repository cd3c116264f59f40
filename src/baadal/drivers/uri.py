"""Which hypervisor URIs Baadal opens, checked when a host is added and again whenever a
hypervisor is opened (a row stored before these checks gets no pass).

libvirt reads extra parameters from a remote URI's query (libvirt.org/uri.html, "Remote
URIs"), and some turn its security off or run programs: ``no_verify=1`` skips the TLS
certificate check, ``known_hosts_verify=ignore`` the SSH host-key check, ``command=``
runs a local program instead of ssh, ``netcat=`` a program on the host, ``name=`` opens a
different driver there. So only the parameters below pass, each with its transport and
a checked value. ``test:`` (libvirt's test driver) and ``fake:`` (Baadal's in-memory
driver) are for development and the test suite: only with ``[general]
allow_test_hypervisors``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from baadal.config import get_settings
from baadal.drivers.base import HypervisorError

#: libvirt URI schemes a host may use: production, lab, local, the test and fake drivers
SCHEMES = frozenset({"qemu", "qemu+ssh", "qemu+tcp", "qemu+tls", "test", "fake"})
#: in-process drivers for tests, whose URI path names the node
TEST_SCHEMES = frozenset({"test", "fake"})
REMOTE_SCHEMES = frozenset({"qemu+ssh", "qemu+tcp", "qemu+tls"})
QEMU_PATHS = frozenset({"/system", "/session"})
MAX_LENGTH = 255

_SSH_AUTH_METHODS = frozenset({"agent", "privkey", "password", "keyboard-interactive"})
_CONTROL_RE = re.compile(r"[\x00-\x20\x7f]")


def _absolute_path(value: str) -> str | None:
    return None if value.startswith("/") and ".." not in value.split("/") else "an absolute path"


def _one_of(*allowed: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in allowed else f"one of {', '.join(allowed)}"

    return check


def _ssh_auth(value: str) -> str | None:
    methods = value.split(",")
    ok = all(m in _SSH_AUTH_METHODS for m in methods)
    return None if ok else f"a comma list of {', '.join(sorted(_SSH_AUTH_METHODS))}"


def _positive_int(value: str) -> str | None:
    return None if value.isdigit() and int(value) > 0 else "a positive whole number"


#: per transport, the query parameters that pass and what their values must be
_SSH_KEYS: dict[str, Callable[[str], str | None]] = {
    "keyfile": _absolute_path,
    "known_hosts": _absolute_path,
    "socket": _absolute_path,
    "no_tty": _one_of("0", "1"),
    "sshauth": _ssh_auth,
    "mode": _one_of("auto", "legacy", "direct"),
    "proxy": _one_of("auto", "netcat", "native"),
}
_TLS_KEYS: dict[str, Callable[[str], str | None]] = {"pkipath": _absolute_path}
_LOCAL_KEYS: dict[str, Callable[[str], str | None]] = {
    "socket": _absolute_path,
    "mode": _one_of("auto", "legacy", "direct"),
}
#: the fake driver sizes its node from these
_FAKE_KEYS: dict[str, Callable[[str], str | None]] = {
    "cpus": _positive_int,
    "memory_mb": _positive_int,
}


def _allowed_keys(scheme: str, host: str | None) -> dict[str, Callable[[str], str | None]]:
    if scheme == "qemu+ssh":
        return _SSH_KEYS
    if scheme == "qemu+tls" or (scheme == "qemu" and host):  # qemu://host/ is TLS
        return _TLS_KEYS
    if scheme == "qemu":
        return _LOCAL_KEYS
    if scheme == "fake":
        return _FAKE_KEYS
    return {}


def uri_problem(uri: str, *, allow_test: bool) -> str | None:
    """What is wrong with ``uri`` as a host's hypervisor URI, or None if it may be opened."""
    if not isinstance(uri, str) or not uri:
        return "must not be empty"
    if len(uri) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters"
    if _CONTROL_RE.search(uri):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"is malformed: {exc}"
    if parts.scheme not in SCHEMES:
        return f"scheme must be one of {', '.join(sorted(SCHEMES))}"
    if parts.scheme in TEST_SCHEMES and not allow_test:
        return (
            f"the {parts.scheme} driver is for development and tests only "
            "(set [general] allow_test_hypervisors to use it)"
        )
    if parts.fragment:
        return "must not have a #fragment"
    if parts.password is not None:
        return "must not carry a password"
    if parts.scheme in TEST_SCHEMES:
        if not parts.path or parts.path == "/":
            return f"the {parts.scheme} driver needs a path"
    elif parts.path not in QEMU_PATHS:
        return f"path must be one of {', '.join(sorted(QEMU_PATHS))}"
    if parts.scheme in REMOTE_SCHEMES and not parts.hostname:
        return f"{parts.scheme} needs a host"
    return _query_problem(parts.scheme, parts.hostname, parts.query)


def _query_problem(scheme: str, host: str | None, query: str) -> str | None:
    allowed = _allowed_keys(scheme, host)
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        return "has a malformed query"
    seen: set[str] = set()
    for key, value in pairs:
        if key not in allowed:
            accepted = ", ".join(sorted(allowed)) or "none"
            return f"query parameter {key!r} is not allowed with {scheme} (allowed: {accepted})"
        if key in seen:
            return f"query parameter {key!r} is given twice"
        seen.add(key)
        if (expected := allowed[key](value)) is not None:
            return f"query parameter {key}={value!r} must be {expected}"
    return None


def require_openable(uri: str) -> None:
    """Refuse to open a hypervisor the checks above would not let a host register with."""
    problem = uri_problem(uri, allow_test=get_settings().general.allow_test_hypervisors)
    if problem is not None:
        raise HypervisorError(f"refusing to open libvirt URI {uri!r}: it {problem}")
