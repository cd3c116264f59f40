"""``baadal demo``: the README's main job. The lab cloud on this machine, a VM from the
tiny template created through the task engine, and proof that it answers on its DHCP
address -- what a newcomer sees first."""

from __future__ import annotations

import time

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from baadal import constants as C
from baadal.cli.common import console, db, fail, handle_errors, print_table
from baadal.cli.lab import lab_up
from baadal.cli.vms import follow_task
from baadal.config import get_settings
from baadal.db.migrate import upgrade
from baadal.db.session import get_engine
from baadal.errors import NotFoundError
from baadal.lab import layout
from baadal.net.ping import is_pingable
from baadal.services import vms

DEMO_VM = "demo"
DEMO_HOST = layout.HOSTS[0].name
PING_TIMEOUT_S = 120.0


def _ensure_demo_vm() -> None:
    """Create the demo VM, or start it if it exists but does not run (demo twice: fine)."""
    settings = get_settings()
    with db() as session:
        try:
            vm = vms.find_vm(session, DEMO_VM)
        except NotFoundError:
            queued = vms.request_vm(
                session, settings, vm_name=DEMO_VM, template=layout.TEMPLATE_NAME,
                ram_mb=256, vcpus=1, owner=vms.get_user(session, None),
                security_domain=layout.VLANS[0].domain, host=DEMO_HOST,
                purpose="the Baadal demo",
            )  # fmt: skip
            task_id: int | None = queued.task_id
        else:
            running = vm.status == C.VMStatus.RUNNING
            task_id = None if running else vms.operate(session, vm, "start", None).id
    if task_id is not None:
        follow_task(task_id, wait=True, inline=True)


def _wait_for_ping(ip: str) -> float:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    start = time.monotonic()
    with Progress(*columns, console=console, transient=True) as progress:
        progress.add_task(f"waiting for {ip} (DHCP from dnsmasq) to answer ping")
        while not is_pingable(ip, count=1, timeout_s=1.0):
            if time.monotonic() - start > PING_TIMEOUT_S:
                raise fail(f"the demo VM does not answer ping at {ip} after {PING_TIMEOUT_S} s")
    return time.monotonic() - start


@handle_errors
def demo_cmd() -> None:
    """The lab cloud on this machine with a demo VM that answers ping (run it again: it
    keeps what is there)."""
    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade(get_engine(settings))
    console.print(f"Baadal home: {settings.home}")
    start = time.monotonic()
    lab_up()
    _ensure_demo_vm()
    with db() as session:
        vm = vms.find_vm(session, DEMO_VM)
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
    console.print(f"[green]lab up -> demo VM answers ping: {total:.1f} s[/]")
