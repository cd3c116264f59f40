"""``baadal demo``: the README's main job. The lab cloud on this machine, a VM from the
tiny template created through the task engine, and proof that it answers on its DHCP
address -- what a newcomer sees first."""

from __future__ import annotations

import time

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from baadal import constants as C
from baadal.cli.door import (
    actor,
    checked_engine,
    console,
    current_actor,
    db,
    fail,
    handle_errors,
    print_table,
)
from baadal.cli.lab_commands import lab_up
from baadal.cli.vm_commands import follow_task
from baadal.config import Settings, get_settings
from baadal.errors import NotFoundError
from baadal.services import lab, system, vms

DEMO_VM = "demo"
DEMO_HOST = lab.HOSTS[0].name
PING_TIMEOUT_S = 120.0


def _ensure_demo_vm() -> None:
    """Create the demo VM, or start it if it exists but does not run (demo twice: fine)."""
    settings = get_settings()
    with db() as session:
        who = actor(session)
        try:
            vm = vms.get_vm(session, who, DEMO_VM)
        except NotFoundError:
            queued = vms.request_vm(
                session, who, settings, vm_name=DEMO_VM, template=lab.TEMPLATE_NAME,
                ram_mb=256, vcpus=1, security_domain=lab.FIRST_DOMAIN, host=DEMO_HOST,
                purpose="the Baadal demo",
            )  # fmt: skip
            task_id: int | None = queued.task_id
        else:
            running = vm.status == C.VMStatus.RUNNING
            task_id = None if running else vms.operate(session, who, vm.id, "start").id
    if task_id is not None:
        follow_task(task_id, wait=True, inline=True)


def _wait_for_ping(ip: str) -> None:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        progress.add_task(f"waiting for {ip} (DHCP from dnsmasq) to answer ping")
        answered = lab.wait_for_ping(checked_engine(), current_actor(), DEMO_VM, PING_TIMEOUT_S)
    if not answered:
        raise fail(f"the demo VM does not answer ping at {ip} after {PING_TIMEOUT_S} s")


def show_portal_accounts(settings: Settings) -> None:
    """The portal's demo accounts, one per role, with their passwords (kept 0600)."""
    with db() as session:
        people = lab.demo_accounts(session, actor(session), settings)
    url = settings.web.public_url or f"http://{settings.web.host}:{settings.web.port}/"
    print_table(
        f"The portal: baadal serve, then {url}",
        ["account", "role", "password"],
        [(a.username, a.role.value, a.password) for a in people],
    )
    console.print(f"(kept in {settings.home / lab.DEMO_ACCOUNTS_FILE}, mode 0600)")


@handle_errors
def demo_cmd() -> None:
    """The lab cloud on this machine with a demo VM that answers ping (run it again: it
    keeps what is there)."""
    settings = get_settings()
    system.upgrade_schema(settings, current_actor())
    console.print(f"Baadal home: {settings.home}")
    start = time.monotonic()
    lab_up()
    _ensure_demo_vm()
    with db() as session:
        vm = vms.get_vm(session, actor(session), DEMO_VM)
        if vm.private_ip is None or vm.host is None:
            raise fail(f"the demo VM has no address or host (status {vm.status})")
        ip, mac = vm.private_ip.private_ip, vm.private_ip.mac_addr
        host, uri, identity = vm.host.host_name, vm.host.libvirt_uri, vm.vm_identity
    _wait_for_ping(ip)
    total = time.monotonic() - start
    print_table(
        "Baadal demo VM",
        ["what", "value"],
        [
            ("VM", f"{DEMO_VM} (domain {identity})"),
            ("host", f"{host} ({uri})"),
            ("address", f"{ip} (MAC {mac}, reserved in dnsmasq)"),
            ("try", f"ping {ip}   |   curl http://{ip}/"),
            ("console", f"virsh -c {uri} console {identity}"),
            ("more", "baadal vm list | baadal lab status | baadal status | baadal lab down"),
            ("watch", f"baadal worker (usage every 5 min) | baadal monitor graph vm {DEMO_VM}"),
        ],
    )
    show_portal_accounts(settings)
    console.print(f"[green]lab up -> demo VM answers ping: {total:.1f} s[/]")
