"""Is a host usable? (the seed's host_helper: check_host_status, is_host_available,
check_host_service_status, host_status_sanity_check).

A host is UP when it answers ping *and* its libvirtd answers an API call: a machine that
pings while libvirtd is dead cannot run, stop or place VMs. The periodic sanity check also
asks the host over SSH whether libvirtd and Open vSwitch run (a VM without its switch has
no network). Every check is bounded in time so one dead host never stalls the others.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import Engine, select

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import Host, HostEventLog
from baadal.db.session import session_scope
from baadal.drivers import hypervisor_for
from baadal.drivers.base import HypervisorError
from baadal.drivers.remote import RemoteTarget, execute_remote_cmd
from baadal.errors import RemoteCommandError
from baadal.host.fanout import NoAnswer, Outcome, fan_out
from baadal.host.respawn import recover_down_host
from baadal.net.ping import is_pingable
from baadal.tasks.registry import TaskContext, TaskResult, handler

log = logging.getLogger("baadal")

#: libvirt's default ports per transport, for the TCP probe that precedes an API call
_LIBVIRT_PORTS = {"tcp": 16509, "tls": 16514, "ssh": 22, "libssh": 22, "libssh2": 22}
PROBE_TIMEOUT_S = 3.0
#: the service checks run on the host itself; both must succeed
SERVICE_CHECKS: dict[str, list[str]] = {
    "libvirtd": ["virsh", "--readonly", "--connect", "qemu:///system", "uri"],
    "openvswitch": ["ovs-vsctl", "--timeout=5", "show"],
}


def is_host_available(target: RemoteTarget, *, timeout: float | None = None) -> bool:
    """True if ``pwd`` runs over SSH, as the seed checked; never raises for a host that is
    down, refuses us or does not answer -- callers use this to mark hosts DOWN.

    ``timeout`` bounds the command (default: the target's connect timeout, since ``pwd``
    is instant on any host worth using).
    """
    limit = target.connect_timeout if timeout is None else timeout
    try:
        execute_remote_cmd(target, ["pwd"], timeout=limit)
    except RemoteCommandError as exc:
        log.info("host %s is not available: %s", target.label, exc.reason)
        return False
    return True


def libvirt_endpoint(uri: str) -> tuple[str, int] | None:
    """(address, port) a remote libvirt URI connects to; None for local URIs."""
    parts = urlsplit(uri)
    if not parts.hostname:
        return None
    transport = parts.scheme.partition("+")[2] or "tls"
    return parts.hostname, parts.port or _LIBVIRT_PORTS.get(transport, 16514)


def libvirt_problem(host: Host) -> str | None:
    """Why the host's libvirtd does not answer, or None when it does.

    A TCP probe with a timeout goes first: opening a libvirt connection to a machine that
    drops packets would block for minutes.
    """
    endpoint = libvirt_endpoint(host.libvirt_uri)
    if endpoint is not None:
        try:
            with socket.create_connection(endpoint, timeout=PROBE_TIMEOUT_S):
                pass
        except OSError as exc:
            return f"libvirt port {endpoint[1]} of {endpoint[0]}: {exc.strerror or exc}"
    try:
        hypervisor_for(host.libvirt_uri).node_info()
    except HypervisorError as exc:
        return str(exc)
    return None


def pingable(address: str) -> bool:
    """Ping an address (a name is resolved first; one that does not resolve is not
    reachable)."""
    try:
        resolved = socket.gethostbyname(address)
    except OSError:
        return False
    return is_pingable(resolved, count=2, timeout_s=1.0)


def check_host_status(host: Host) -> C.HostStatus:
    """UP (1) when the host answers ping and its libvirtd answers, else DOWN (0)."""
    return C.HostStatus.UP if host_problem(host) is None else C.HostStatus.DOWN


def host_problem(host: Host) -> str | None:
    if not pingable(host.address):
        return f"{host.address} does not answer ping"
    return libvirt_problem(host)


def host_service_problems(host: Host, settings: Settings) -> list[str]:
    """The services that do not run on the host (asked over SSH); [] when all run."""
    target = RemoteTarget.for_host(host, settings)
    problems = []
    for service, argv in SERVICE_CHECKS.items():
        try:
            execute_remote_cmd(target, argv, timeout=15)
        except RemoteCommandError as exc:
            problems.append(f"{service}: {exc.reason}")
    return problems


def check_host_service_status(host: Host, settings: Settings) -> bool:
    """True when libvirtd and Open vSwitch both run on the host."""
    return not host_service_problems(host, settings)


@dataclass(frozen=True)
class HostCheck:
    """One host's result in a sanity pass."""

    host_id: int
    host_name: str
    old: C.HostStatus
    new: C.HostStatus
    problem: str | None

    @property
    def changed(self) -> bool:
        return self.old != self.new


def _check(host: Host, settings: Settings) -> tuple[C.HostStatus, str | None]:
    """One host's status; an UP host that fails is checked again before it counts as
    DOWN (see ``general.host_down_checks``)."""
    status, problem = _check_once(host, settings)
    conf = settings.general
    if host.status == C.HostStatus.UP:
        for _ in range(conf.host_down_checks - 1):
            if status == C.HostStatus.UP:
                break
            time.sleep(conf.host_down_recheck_s)
            status, problem = _check_once(host, settings)
    return status, problem


def _check_once(host: Host, settings: Settings) -> tuple[C.HostStatus, str | None]:
    problem = host_problem(host)
    if problem is None and settings.general.host_check_services:
        problems = host_service_problems(host, settings)
        problem = "; ".join(problems) or None
    return (C.HostStatus.DOWN if problem else C.HostStatus.UP), problem


def _outcome_status(
    outcome: Outcome[tuple[C.HostStatus, str | None]],
) -> tuple[C.HostStatus, str | None]:
    """A host past its budget is DOWN; any other failure is a bug and stops the pass
    (it must not mark hosts DOWN and have their VMs respawned)."""
    if isinstance(outcome.error, NoAnswer):
        return C.HostStatus.DOWN, str(outcome.error)
    if outcome.error is not None:
        raise outcome.error
    assert outcome.value is not None
    return outcome.value


def host_status_sanity_check(engine: Engine, settings: Settings) -> list[HostCheck]:
    """Check every host not in maintenance, in parallel, each within a time budget (a
    host past it counts as DOWN); store changed statuses with an event row each; the
    VMs of a host that just went DOWN are fenced there and respawned elsewhere. The
    checks run outside any transaction (they may take seconds), and only the hosts whose
    status changed are read again."""
    with session_scope(engine) as session:
        hosts = list(
            session.scalars(
                select(Host).where(Host.status != C.HostStatus.MAINTENANCE).order_by(Host.id)
            )
        )
        session.expunge_all()
    outcomes = fan_out(
        lambda h: _check(h, settings),
        hosts,
        threads=C.SWEEP_THREADS,
        budget_s=C.SWEEP_HOST_BUDGET_S,
    )
    checks = [
        HostCheck(h.id, h.host_name, C.HostStatus(h.status), *_outcome_status(outcome))
        for h, outcome in zip(hosts, outcomes, strict=True)
    ]
    changed = {c.host_id: c for c in checks if c.changed}
    went_down = []
    if changed:
        with session_scope(engine) as session:
            rows = session.scalars(select(Host).where(Host.id.in_(changed)).order_by(Host.id))
            for row in rows:
                check = changed[row.id]
                # skip hosts an admin changed meanwhile (e.g. put into maintenance)
                if row.status != check.old:
                    continue
                row.status = int(check.new)
                if check.new == C.HostStatus.DOWN:
                    went_down.append(check)
                session.add(
                    HostEventLog(
                        host_id=row.id,
                        attribute="status",
                        old_value=check.old.name,
                        new_value=check.new.name,
                        message=check.problem or "host answers again",
                    )
                )
                level = logging.WARNING if check.new == C.HostStatus.DOWN else logging.INFO
                log.log(level, "host %s is %s: %s", row.host_name, check.new.name, check.problem)
    for check in went_down:  # only hosts this pass itself marked DOWN
        for result in recover_down_host(engine, settings, check.host_id):
            log.log(
                logging.INFO if result.ok else logging.ERROR,
                "VM %s of DOWN host %s: %s", result.vm_name, check.host_name,
                f"respawned on {result.new_host}" if result.ok else result.message,
            )  # fmt: skip
    return checks


@handler(C.TaskType.HOST_SANITY, periodic=("host_sanity",))
def host_sanity(ctx: TaskContext) -> TaskResult:
    """The periodic 'Host Sanity' handler."""
    checks = host_status_sanity_check(ctx.engine, ctx.settings)
    changed = [f"{c.host_name} {c.old.name}->{c.new.name}" for c in checks if c.changed]
    down = sum(c.new == C.HostStatus.DOWN for c in checks)
    summary = f"{len(checks)} host(s) checked, {down} down"
    return TaskResult.success(summary + (f"; changed: {', '.join(changed)}" if changed else ""))
