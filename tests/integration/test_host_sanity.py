"""The host sanity check against a host whose network really drops out: its address lives
in a network namespace of the test's own, behind a veth the test takes down and up.

What users rely on: a blip shorter than the re-checks (a lost ping, a libvirtd restart)
does not mark the host DOWN -- that would fence and respawn every guest on it -- while a
host that stays silent is DOWN within the same pass, with one event row.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import Host, HostEventLog
from baadal.db.session import session_scope
from baadal.host.health import host_status_sanity_check

pytestmark = pytest.mark.integration

HOST_IP, ROOT_IP = "10.98.66.2", "10.98.66.1"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def flaky_link() -> Iterator[str]:
    """A namespace holding HOST_IP; yields the root-side link name to take down/up."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = os.getpid() % 100000
    # not the lab's "bdl-" prefix: `lab down` sweeps every namespace that has it
    netns, link = f"bdt-flap{tag}", f"bdt-fl{tag}"
    _ip("netns", "add", netns)
    try:
        _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("addr", "add", f"{ROOT_IP}/30", "dev", link)
        _ip("link", "set", link, "up")
        _ip("-n", netns, "addr", "add", f"{HOST_IP}/30", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        yield link
    finally:
        subprocess.run(["ip", "link", "delete", link], capture_output=True)
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True)


@pytest.fixture
def host_id(sqlite_engine: Engine) -> int:
    with session_scope(sqlite_engine) as s:
        host = Host(
            host_name="flaky", address=HOST_IP, CPUs=2, RAM=4,
            libvirt_uri="test:///default", status=int(C.HostStatus.UP),
        )  # fmt: skip
        s.add(host)
        s.flush()
        return host.id


def _state(engine: Engine, host_id: int) -> tuple[C.HostStatus, list[str]]:
    with session_scope(engine) as s:
        status = C.HostStatus(s.get(Host, host_id).status)
        events = s.scalars(select(HostEventLog.new_value).where(HostEventLog.host_id == host_id))
        return status, list(events)


def test_a_blip_is_not_a_down_host_but_silence_is(
    sqlite_engine: Engine, settings: Settings, flaky_link: str, host_id: int
) -> None:
    settings.general.host_check_services = False
    settings.general.host_down_checks = 3
    settings.general.host_down_recheck_s = 2.0
    host_status_sanity_check(sqlite_engine, settings)
    assert _state(sqlite_engine, host_id) == (C.HostStatus.UP, [])

    # down for about 1 s, inside the re-checks (2 s apart): still UP, nothing recorded
    _ip("link", "set", flaky_link, "down")
    back = threading.Timer(1.0, _ip, ("link", "set", flaky_link, "up"))
    back.start()
    (check,) = host_status_sanity_check(sqlite_engine, settings)
    back.join()
    assert (check.new, check.changed) == (C.HostStatus.UP, False)
    assert _state(sqlite_engine, host_id) == (C.HostStatus.UP, [])

    # silent for good: DOWN in this same pass, after the re-checks
    _ip("link", "set", flaky_link, "down")
    start = time.monotonic()
    (check,) = host_status_sanity_check(sqlite_engine, settings)
    took = time.monotonic() - start
    assert check.new == C.HostStatus.DOWN and "does not answer ping" in (check.problem or "")
    assert _state(sqlite_engine, host_id) == (C.HostStatus.DOWN, ["DOWN"])
    assert took >= 2 * settings.general.host_down_recheck_s

    # a DOWN host is not re-checked: it comes back at the first pass that reaches it
    _ip("link", "set", flaky_link, "up")
    (check,) = host_status_sanity_check(sqlite_engine, settings)
    assert _state(sqlite_engine, host_id) == (C.HostStatus.UP, ["DOWN", "UP"])


def test_one_check_when_confirmation_is_off(
    sqlite_engine: Engine, settings: Settings, flaky_link: str, host_id: int
) -> None:
    settings.general.host_check_services = False
    settings.general.host_down_checks = 1
    _ip("link", "set", flaky_link, "down")
    back = threading.Timer(1.0, _ip, ("link", "set", flaky_link, "up"))
    back.start()
    host_status_sanity_check(sqlite_engine, settings)
    back.join()
    assert _state(sqlite_engine, host_id) == (C.HostStatus.DOWN, ["DOWN"])
