"""Powering hosts off and on (the seed's host_power: host_power_operation, host_power_up,
host_power_down).

Power-up wakes a host with a wake-on-LAN magic packet sent from this process (no
external tool, no shell) or, for a host with a BMC, an IPMI "chassis power on" (RMCP+
through pyghmi); the IPMI password is read from the file ``[power] ipmi_password_file``
names and never appears in an argument list or a log. The
host becomes UP once it answers like the host sanity check wants it (ping, libvirtd, and
libvirtd/OVS over SSH when ``[general] host_check_services``).

Power-down runs ``[power] poweroff_command`` on the host over SSH (IPMI ``soft`` when SSH
fails and the host has a BMC). It is refused while a VM placed on the host is not shut
off -- the caller (maintenance, evacuation) moves them first -- and while libvirt there
still runs a domain. The host is marked DOWN before the command runs, so nothing is
placed on a host that is going away.

:func:`plan_power_operation` is the seed's policy as a pure function: idle hosts beyond
``[power] min_hosts_up`` go off, and a host is woken when every UP host is more than
80 % reserved; :func:`host_power_operation` carries the plan out.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from baadal import constants as C
from baadal.config import Settings, read_secret_file
from baadal.db.models import VM, Host, HostEventLog
from baadal.db.session import session_scope
from baadal.drivers.base import HypervisorError
from baadal.drivers.ipmi import PYGHMI_ACTIONS
from baadal.drivers.remote import RemoteTarget, execute_remote_cmd, run_local
from baadal.errors import (
    BaadalError,
    ConfigError,
    ConflictError,
    NotFoundError,
    RemoteCommandError,
    ValidationError,
)
from baadal.host.domains import get_host_domains
from baadal.host.health import (
    PROBE_TIMEOUT_S,
    host_problem,
    host_service_problems,
    libvirt_endpoint,
    pingable,
)
from baadal.net.validators import normalize_mac
from baadal.tasks.params import HostPowerParams
from baadal.tasks.registry import TaskContext, TaskResult, handler

log = logging.getLogger("baadal")

LIMITED_BROADCAST = "255.255.255.255"
#: magic packets are UDP: a few copies survive a lost datagram
WOL_COPIES = 3
IPMI_ACTIONS = frozenset({*PYGHMI_ACTIONS, "status"})
IPMI_TIMEOUT_S = 30.0
POWEROFF_COMMAND_TIMEOUT_S = 30.0
POLL_S = 1.0
#: a host more than this much reserved (of RAM x overcommit) counts as busy
BUSY_FRACTION = 0.8
#: how remote.py reports a command whose host went away under it (what ``poweroff`` does)
_WENT_AWAY = frozenset({"connection lost while running", "ended without an exit status"})


@dataclass(frozen=True)
class HostPowerResult:
    """What one power action did; ``ok`` is False only in host_power_operation's list."""

    host_id: int
    host_name: str
    action: str  # "up" | "down"
    #: "wake-on-LAN", "IPMI", "SSH", or "" when nothing was sent
    method: str
    changed: bool
    status: C.HostStatus
    seconds: float
    message: str
    ok: bool = True


# --------------------------------------------------------------------------- wake-on-LAN


def wol_magic_packet(mac: str) -> bytes:
    """6 x 0xFF then the MAC 16 times; a malformed or multicast MAC raises ValidationError."""
    return b"\xff" * 6 + bytes.fromhex(normalize_mac(mac).replace(":", "")) * 16


def send_wol(mac: str, broadcast: str = "", port: int = 9) -> None:
    """Broadcast the magic packet for ``mac`` to ``broadcast``:``port`` over UDP (empty
    broadcast = 255.255.255.255, which only reaches the sender's own segment)."""
    packet = wol_magic_packet(mac)
    address = broadcast or LIMITED_BROADCAST
    if not 0 < port < 65536:
        raise ValidationError(f"wake-on-LAN port {port} is out of range")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:
            for _ in range(WOL_COPIES):
                sock.sendto(packet, (address, port))
        except OSError as exc:
            reason = f"cannot send to {address}:{port}: {exc.strerror or exc}"
            raise RemoteCommandError(address, _wol_argv(mac, address, port), reason) from None


def _wol_argv(mac: str, address: str, port: int) -> list[str]:
    """How errors name a wake-on-LAN send (it is no command, but reads like one)."""
    return ["wake-on-lan", mac, f"{address}:{port}"]


# --------------------------------------------------------------------------- IPMI


def ipmi_configured(host: Host, settings: Settings) -> bool:
    """IPMI is used for a host with a BMC once ``[power] ipmi_user`` is set."""
    return bool(host.bmc_address and settings.power.ipmi_user)


def _ipmi_password(settings: Settings) -> str:
    conf = settings.power
    if not conf.ipmi_user or not conf.ipmi_password_file:
        raise ConfigError("IPMI needs [power] ipmi_user and ipmi_password_file")
    return read_secret_file(conf.ipmi_password_file, "[power] ipmi_password_file")


def ipmi_power(host: Host, settings: Settings, action: str) -> str:
    """``action`` (on, off, soft, reset, status) on the host's BMC over IPMI-over-LAN
    (RMCP+, through pyghmi: no external tool, the password never in an argument list or
    log). Returns the power state the BMC reports, or the one it is going to."""
    if action not in IPMI_ACTIONS:
        raise ValidationError(f"IPMI power action {action!r} is not one of {sorted(IPMI_ACTIONS)}")
    if not host.bmc_address:
        raise ValidationError(f"host {host.host_name} has no BMC address")
    conf = settings.power
    request = {
        "bmc": host.bmc_address, "user": conf.ipmi_user, "password": _ipmi_password(settings),
        "port": conf.ipmi_port, "action": action,
    }  # fmt: skip
    result = run_local(
        [sys.executable, "-m", "baadal.drivers.ipmi"],
        timeout=IPMI_TIMEOUT_S,
        check=False,
        stdin=json.dumps(request).encode(),
    )
    argv = _ipmi_argv(host, action)
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        reason = result.stderr.strip().splitlines()[-1:] or [f"exit {result.exit_code}"]
        raise RemoteCommandError(host.bmc_address, argv, reason[0]) from None
    if "error" in answer:
        raise RemoteCommandError(host.bmc_address, argv, answer["error"])
    log.info("IPMI %s of %s: %s", action, host.host_name, answer["state"])
    return str(answer["state"])


def _ipmi_argv(host: Host, action: str) -> list[str]:
    """How errors name an IPMI request (it is no command, but reads like one)."""
    return ["ipmi", str(host.bmc_address), "chassis", "power", action]


# --------------------------------------------------------------------------- probes


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def still_answering(host: Host) -> str | None:
    """What of the host still answers (ping, libvirt's port, SSH), or None once it is
    silent, i.e. really off."""
    answers = []
    if pingable(host.address):
        answers.append("ping")
    endpoint = libvirt_endpoint(host.libvirt_uri)
    if endpoint is not None and _port_open(*endpoint):
        answers.append(f"libvirt port {endpoint[1]}")
    if _port_open(host.address, host.ssh_port or 22):
        answers.append(f"SSH port {host.ssh_port or 22}")
    return ", ".join(answers) or None


def up_problem(host: Host, settings: Settings) -> str | None:
    """Why the host is not usable yet, by the sanity check's rules; None once it is."""
    problem = host_problem(host)
    if problem is None and settings.general.host_check_services:
        problem = "; ".join(host_service_problems(host, settings)) or None
    return problem


def _wait_until_none(check: Callable[[], str | None], timeout: float) -> str | None:
    """Poll ``check`` until it returns None or ``timeout`` passes; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer is None or time.monotonic() >= deadline:
            return answer
        time.sleep(POLL_S)


# --------------------------------------------------------------------------- rows


def _load(engine: Engine, host_id: int) -> Host:
    with session_scope(engine) as session:
        host = session.get(Host, host_id)
        if host is None:
            raise NotFoundError(f"no host with id {host_id}")
        session.expunge(host)
    return host


def _record(
    engine: Engine,
    host_id: int,
    status: C.HostStatus,
    message: str,
    *,
    was: C.HostStatus | None = None,
) -> C.HostStatus:
    """Set the host's status (a host in maintenance stays there) with an event row;
    ``was`` is the status before, when the row was changed earlier."""
    with session_scope(engine) as session:
        row = session.get(Host, host_id)
        if row is None:
            raise NotFoundError(f"no host with id {host_id}")
        old = C.HostStatus(row.status) if was is None else was
        new = C.HostStatus(row.status) if row.status == C.HostStatus.MAINTENANCE else status
        row.status = int(new)
        session.add(
            HostEventLog(
                host_id=host_id,
                attribute="status",
                old_value=old.name,
                new_value=new.name,
                message=message,
            )
        )
    return new


def _undo_down(engine: Engine, host_id: int) -> None:
    """Back to UP after a power-off that did not happen (unless someone changed it)."""
    with session_scope(engine) as session:
        row = session.get(Host, host_id)
        if row is not None and row.status == C.HostStatus.DOWN:
            row.status = int(C.HostStatus.UP)


def check_vms_off(session: Session, host: Host) -> None:
    """Refuse while a VM placed on the host is not shut off."""
    busy = session.execute(
        select(VM.vm_name, VM.status)
        .where(VM.host_id == host.id, VM.status != C.VMStatus.SHUTDOWN)
        .order_by(VM.id)
    ).all()
    if busy:
        names = ", ".join(f"{name} ({C.VMStatus(status).name})" for name, status in busy[:5])
        more = f" and {len(busy) - 5} more" if len(busy) > 5 else ""
        raise ConflictError(
            f"host {host.host_name} still has {len(busy)} VM(s) that are not shut off: "
            f"{names}{more}; move them to another host or shut them down first"
        )


def _check_no_domains_run(host: Host) -> None:
    """Refuse while libvirt runs a domain there (the rows may lag); a libvirtd that does
    not answer cannot run one for us, so that is no reason to refuse."""
    try:
        active = [d.name for d in get_host_domains(host) if d.active]
    except HypervisorError as exc:
        log.info("power-down of %s: libvirt does not answer (%s)", host.host_name, exc)
        return
    if active:
        raise ConflictError(
            f"host {host.host_name} still runs domain(s) {', '.join(sorted(active))}; "
            "stop or migrate them first"
        )


# --------------------------------------------------------------------------- power up


def _wake(host: Host, settings: Settings) -> tuple[str, list[str]]:
    """Send the wake-up; returns the method and how errors name it."""
    if ipmi_configured(host, settings):
        ipmi_power(host, settings, "on")
        return "IPMI", _ipmi_argv(host, "on")
    if host.mac_addr:
        conf = settings.power
        send_wol(host.mac_addr, conf.wol_broadcast, conf.wol_port)
        argv = _wol_argv(host.mac_addr, conf.wol_broadcast or LIMITED_BROADCAST, conf.wol_port)
        return "wake-on-LAN", argv
    hint = " ([power] ipmi_user is not set)" if host.bmc_address else ""
    raise ValidationError(
        f"host {host.host_name} cannot be powered on: it has no MAC address for "
        f"wake-on-LAN and no BMC for IPMI{hint}"
    )


def host_power_up(
    engine: Engine, settings: Settings, host_id: int, *, wait: bool = True
) -> HostPowerResult:
    """Wake the host; with ``wait`` poll it until it answers (at most ``[power]
    boot_timeout_s``) and mark it UP with an event row. A host that is UP and answers is
    left alone. Without ``wait`` the host sanity check marks it UP later."""
    start = time.monotonic()
    host = _load(engine, host_id)

    def result(method: str, changed: bool, status: C.HostStatus, message: str) -> HostPowerResult:
        seconds = time.monotonic() - start
        return HostPowerResult(
            host.id, host.host_name, "up", method, changed, status, seconds, message
        )

    if host.status == C.HostStatus.UP and up_problem(host, settings) is None:
        return result("", False, C.HostStatus.UP, f"host {host.host_name} is already UP")
    method, argv = _wake(host, settings)
    log.info("power-up of %s: %s sent", host.host_name, method)
    if not wait:
        later = "; the host sanity check marks it UP once it answers"
        sent = f"{method} sent to {host.host_name}{later}"
        return result(method, True, C.HostStatus(host.status), sent)
    timeout = settings.power.boot_timeout_s
    problem = _wait_until_none(lambda: up_problem(host, settings), timeout)
    if problem is not None:
        raise RemoteCommandError(
            host.host_name, argv, f"the host did not come up within {float(timeout)} s: {problem}"
        )
    status = _record(engine, host.id, C.HostStatus.UP, f"powered on by Baadal ({method})")
    seconds = time.monotonic() - start
    log.info("power-up of %s: answers after %.1f s", host.host_name, seconds)
    return result(method, True, status, f"host {host.host_name} is up after {seconds:.1f} s")


# --------------------------------------------------------------------------- power down


def _power_off(host: Host, settings: Settings) -> str:
    """Run the power-off command over SSH (IPMI ``soft`` when that fails and the host has
    a BMC); returns the method. ``poweroff`` may take the SSH session down with it."""
    command = settings.power.poweroff_command
    try:
        execute_remote_cmd(
            RemoteTarget.for_host(host, settings), command, timeout=POWEROFF_COMMAND_TIMEOUT_S
        )
    except RemoteCommandError as exc:
        if exc.exit_code is None and exc.reason in _WENT_AWAY:
            return "SSH"
        if not ipmi_configured(host, settings):
            raise
        log.warning("power-off of %s over SSH failed (%s); using IPMI", host.host_name, exc)
        ipmi_power(host, settings, "soft")
        return "IPMI"
    return "SSH"


def host_power_down(engine: Engine, settings: Settings, host_id: int) -> HostPowerResult:
    """Power the host off once no VM placed on it runs; mark it DOWN (a host in
    maintenance stays there) with an event row and wait, at most ``[power]
    boot_timeout_s``, until it stops answering. A refusal changes nothing."""
    start = time.monotonic()
    with session_scope(engine) as session:
        host = session.get(Host, host_id)
        if host is None:
            raise NotFoundError(f"no host with id {host_id}")
        check_vms_off(session, host)
        session.expunge(host)
    name = host.host_name

    def result(method: str, changed: bool, status: C.HostStatus, message: str) -> HostPowerResult:
        seconds = time.monotonic() - start
        return HostPowerResult(host.id, name, "down", method, changed, status, seconds, message)

    if still_answering(host) is None:
        status = C.HostStatus(host.status)
        if status == C.HostStatus.UP:
            status = _record(engine, host_id, C.HostStatus.DOWN, "does not answer: already off")
        return result("", False, status, f"host {name} does not answer: it is already off")
    _check_no_domains_run(host)
    with session_scope(engine) as session:
        row = session.scalar(select(Host).where(Host.id == host_id).with_for_update())
        if row is None:
            raise NotFoundError(f"no host with id {host_id}")
        check_vms_off(session, row)  # again: a VM may have been placed meanwhile
        old = C.HostStatus(row.status)
        if old == C.HostStatus.UP:
            row.status = int(C.HostStatus.DOWN)  # no placement on a host going away
    try:
        method = _power_off(host, settings)
    except BaseException:
        if old == C.HostStatus.UP:
            _undo_down(engine, host_id)
        raise
    status = _record(
        engine, host_id, C.HostStatus.DOWN, f"powered off by Baadal ({method})", was=old
    )
    log.info("power-down of %s: %s sent", name, method)
    timeout = settings.power.boot_timeout_s
    answering = _wait_until_none(lambda: still_answering(host), timeout)
    if answering is not None:
        reason = f"ran, but the host still answers ({answering}) after {float(timeout)} s"
        raise RemoteCommandError(name, settings.power.poweroff_command, reason)
    seconds = time.monotonic() - start
    return result(method, True, status, f"host {name} is off after {seconds:.1f} s")


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class HostPowerState:
    """What the power policy needs to know of one host."""

    host_id: int
    status: C.HostStatus
    #: RAM VMs may reserve: the host's RAM x the overcommit factor
    ram_capacity_mb: float
    ram_used_mb: int
    vms: int
    #: has a MAC (wake-on-LAN) or a usable BMC: it can be powered on again by Baadal
    wakeable: bool

    @property
    def load(self) -> float:
        return self.ram_used_mb / self.ram_capacity_mb if self.ram_capacity_mb > 0 else 1.0


def plan_power_operation(
    hosts: Sequence[HostPowerState], *, min_hosts_up: int, busy_fraction: float = BUSY_FRACTION
) -> list[tuple[int, str]]:
    """Which hosts to power ``"up"`` or ``"down"``.

    Up: enough DOWN hosts to reach ``min_hosts_up``, else one when every UP host is
    more than ``busy_fraction`` reserved. Only when nothing needs waking, idle UP hosts
    (no VM placed) go down -- never one Baadal could not wake again, never below
    ``min_hosts_up``, and never the last idle host while the others are all busy (it
    would be woken again on the next pass). Bigger hosts are woken first and kept first.
    """

    def busy(group: Sequence[HostPowerState]) -> bool:
        return bool(group) and all(h.load > busy_fraction for h in group)

    def preferred(h: HostPowerState) -> tuple[float, int]:
        return (-h.ram_capacity_mb, h.host_id)

    up = [h for h in hosts if h.status == C.HostStatus.UP]
    asleep = sorted(
        (h for h in hosts if h.status == C.HostStatus.DOWN and h.wakeable), key=preferred
    )
    wanted = max(min_hosts_up - len(up), 1 if busy(up) else 0)
    if wanted > 0:
        return [(h.host_id, "up") for h in asleep[:wanted]]
    kept = [h for h in up if h.vms or not h.wakeable]
    plan = []
    for h in sorted((h for h in up if not h.vms and h.wakeable), key=preferred):
        if len(kept) < min_hosts_up or busy(kept):
            kept.append(h)
        else:
            plan.append((h.host_id, "down"))
    return plan


def power_states(session: Session, settings: Settings) -> list[HostPowerState]:
    """Every host as the policy sees it."""
    placed = dict(
        session.execute(
            select(VM.host_id, func.count()).where(VM.host_id.is_not(None)).group_by(VM.host_id)
        ).all()
    )
    factor = settings.placement.ram_overcommit
    return [
        HostPowerState(
            host_id=h.id,
            status=C.HostStatus(h.status),
            ram_capacity_mb=h.RAM * 1024 * factor,
            ram_used_mb=h.ram_used_mb,
            vms=placed.get(h.id, 0),
            wakeable=bool(h.mac_addr) or ipmi_configured(h, settings),
        )
        for h in session.scalars(select(Host).order_by(Host.id))
    ]


def host_power_operation(engine: Engine, settings: Settings) -> list[HostPowerResult]:
    """Carry out :func:`plan_power_operation` now; a host that fails does not stop the
    others (its result has ``ok`` False and the reason)."""
    with session_scope(engine) as session:
        states = {s.host_id: s for s in power_states(session, settings)}
        names = dict(session.execute(select(Host.id, Host.host_name)).all())
    plan = plan_power_operation(list(states.values()), min_hosts_up=settings.power.min_hosts_up)
    results = []
    for host_id, action in plan:
        power = host_power_up if action == "up" else host_power_down
        try:
            results.append(power(engine, settings, host_id))
        except BaadalError as exc:
            log.warning("power-%s of %s failed: %s", action, names[host_id], exc)
            status = states[host_id].status
            failed = HostPowerResult(
                host_id, names[host_id], action, "", False, status, 0.0, str(exc), ok=False
            )
            results.append(failed)
    return results


# --------------------------------------------------------------------------- the task


@handler(C.TaskType.HOST_POWER)
def host_power_task(ctx: TaskContext[HostPowerParams]) -> TaskResult:
    """An admin's power on, off or cycle of one host (the API queues it: a host takes
    minutes to go down and come back). Re-running it is harmless: a host already UP is
    left alone, one already off is only recorded; a cycle starts again from the off."""
    host_id, action = ctx.params.host_id, ctx.params.action
    messages = []
    if action in ("off", "cycle"):
        messages.append(host_power_down(ctx.engine, ctx.settings, host_id).message)
    if action in ("on", "cycle"):
        messages.append(host_power_up(ctx.engine, ctx.settings, host_id).message)
    return TaskResult.success("; ".join(messages))
