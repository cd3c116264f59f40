"""``baadal host check|resources|usage|domains|events|orphan-delete|respawn`` and
``baadal vm sanity``: host health and what runs where, from the hosts themselves."""

from __future__ import annotations

from typing import Annotated

import typer

from baadal import constants as C
from baadal.cli.door import (
    HostArg,
    actor,
    checked_engine,
    console,
    current_actor,
    db,
    handle_errors,
    print_table,
)
from baadal.cli.inventory_commands import host_app
from baadal.config import get_settings
from baadal.services import hosts


@host_app.command("check")
@handle_errors
def check_cmd() -> None:
    """Run the host sanity check now: ping, libvirtd, and libvirtd/OVS over SSH."""
    checks = hosts.check_hosts(checked_engine(), current_actor(), get_settings())
    rows = [
        (c.host_name, c.old.name, c.new.name, "changed" if c.changed else "", c.problem or "ok")
        for c in checks
    ]
    print_table("Host sanity", ["host", "was", "now", "", "detail"], rows)


@host_app.command("resources")
@handle_errors
def resources_cmd(host: HostArg) -> None:
    """CPU cores, RAM and disk of the host, asked from the host itself."""
    name, found = hosts.hardware(checked_engine(), current_actor(), get_settings(), host)
    details = found.resources
    print_table(
        f"Host {name}",
        ["what", "value"],
        [
            ("CPUs", str(details.cpus)),
            ("RAM", f"{details.ram_gb} GB"),
            ("disk", f"{details.hdd_gb} GB"),
            ("MAC", found.mac),
            ("type", found.host_type.value),
        ],
    )


@host_app.command("usage")
@handle_errors
def usage_cmd(
    host: HostArg, interval: Annotated[float, typer.Option(help="seconds to measure")] = 1.0
) -> None:
    """CPU, disk, memory and network use of the host over one short interval."""
    name, usage = hosts.usage(checked_engine(), current_actor(), get_settings(), host, interval)
    print_table(
        f"Host {name} usage",
        ["what", "value"],
        [
            ("CPU", f"{usage.cpu_percent:.1f} %"),
            ("disk", f"{usage.disk_kbps:.0f} KB/s"),
            ("memory used", f"{usage.ram_used_kb // 1024} MB"),
            ("network", f"rx {usage.net_rx_bytes} B, tx {usage.net_tx_bytes} B"),
        ],
    )


@host_app.command("domains")
@handle_errors
def domains_cmd(host: HostArg) -> None:
    """Every domain libvirt has on the host, running or not."""
    name, domains = hosts.domains(checked_engine(), current_actor(), host)
    rows = [(d.name, C.VMStatus(d.status).name) for d in domains]
    print_table(f"Domains on {name}", ["domain", "state"], rows)


@host_app.command("events")
@handle_errors
def events_cmd(host: HostArg) -> None:
    """What the sanity check saw change on the host."""
    with db() as session:
        name, events = hosts.events(session, actor(session), host)
        rows = [
            (f"{e.timestamp:%Y-%m-%d %H:%M:%S}", e.attribute, e.old_value, e.new_value, e.message)
            for e in events
        ]
    print_table(f"Events of {name}", ["when", "what", "was", "now", "why"], rows)


@host_app.command("orphan-delete")
@handle_errors
def orphan_delete_cmd(host: HostArg, domain: str) -> None:
    """Destroy and undefine a domain Baadal does not know (its disks are kept)."""
    name = hosts.delete_orphan(checked_engine(), current_actor(), host, domain)
    console.print(f"removed orphan domain {domain} from {name}", highlight=False)


@host_app.command("respawn")
@handle_errors
def respawn_cmd(host: HostArg) -> None:
    """Bring the VMs of a DOWN host back on other hosts, from their disks."""
    name, results = hosts.respawn(checked_engine(), current_actor(), get_settings(), host)
    rows = [(r.vm_name, r.old_host, r.new_host, "ok" if r.ok else r.message) for r in results]
    print_table(f"Respawned from {name}", ["VM", "from", "to", "result"], rows)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@handle_errors
def vm_sanity_cmd() -> None:
    """Compare the VM rows with what the UP hosts run; fix drift, respawn lost domains,
    report orphans."""
    report = hosts.vm_sanity(checked_engine(), current_actor(), get_settings())
    rows = [(r.vm_name, r.vm_identity, r.host, r.state, r.action) for r in report.rows]
    print_table("VM sanity", ["VM", "domain", "host", "state", "action"], rows)
    for host, error in report.unreachable.items():
        console.print(f"[red]{host} did not answer:[/] {error}", highlight=False)
    console.print(report.summary(), highlight=False)
