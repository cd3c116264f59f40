"""``baadal host check|resources|usage|domains|events|orphan-delete|respawn`` and
``baadal vm sanity``: host health and what runs where, from the hosts themselves."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import select

from baadal import constants as C
from baadal.cli.common import (
    HostArg,
    checked_engine,
    console,
    db,
    handle_errors,
    load_host,
    print_table,
)
from baadal.cli.inventory import host_app
from baadal.config import get_settings
from baadal.db.models import HostEventLog
from baadal.host import resources, status, utilization
from baadal.host import vms as host_vms


@host_app.command("check")
@handle_errors
def check_cmd() -> None:
    """Run the host sanity check now: ping, libvirtd, and libvirtd/OVS over SSH."""
    checks = status.host_status_sanity_check(checked_engine(), get_settings())
    rows = [
        (c.host_name, c.old.name, c.new.name, "changed" if c.changed else "", c.problem or "ok")
        for c in checks
    ]
    print_table("Host sanity", ["host", "was", "now", "", "detail"], rows)


@host_app.command("resources")
@handle_errors
def resources_cmd(host: HostArg) -> None:
    """CPU cores, RAM and disk of the host, asked from the host itself."""
    row = load_host(host)
    settings = get_settings()
    details = resources.host_resource_details(row, settings)
    print_table(
        f"Host {row.host_name}",
        ["what", "value"],
        [
            ("CPUs", str(details.cpus)),
            ("RAM", f"{details.ram_gb} GB"),
            ("disk", f"{details.hdd_gb} GB"),
            ("MAC", resources.get_host_mac_address(row, settings)),
            ("type", resources.get_host_type(row, settings).value),
        ],
    )


@host_app.command("usage")
@handle_errors
def usage_cmd(
    host: HostArg, interval: Annotated[float, typer.Option(help="seconds to measure")] = 1.0
) -> None:
    """CPU, disk, memory and network use of the host over one short interval."""
    row = load_host(host)
    usage = utilization.get_host_resources_usage(row, get_settings(), interval_s=interval)
    print_table(
        f"Host {row.host_name} usage",
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
    row = load_host(host)
    domains = host_vms.get_host_domains(row)
    rows = [(d.name, C.VMStatus(d.status).name) for d in domains]
    print_table(f"Domains on {row.host_name}", ["domain", "state"], rows)


@host_app.command("events")
@handle_errors
def events_cmd(host: HostArg) -> None:
    """What the sanity check saw change on the host."""
    row = load_host(host)
    with db() as session:
        events = session.scalars(
            select(HostEventLog).where(HostEventLog.host_id == row.id).order_by(HostEventLog.id)
        ).all()
        rows = [
            (f"{e.timestamp:%Y-%m-%d %H:%M:%S}", e.attribute, e.old_value, e.new_value, e.message)
            for e in events
        ]
    print_table(f"Events of {row.host_name}", ["when", "what", "was", "now", "why"], rows)


@host_app.command("orphan-delete")
@handle_errors
def orphan_delete_cmd(host: HostArg, domain: str) -> None:
    """Destroy and undefine a domain Baadal does not know (its disks are kept)."""
    row = load_host(host)
    host_vms.delete_orphan_vm(checked_engine(), row.id, domain)
    console.print(f"removed orphan domain {domain} from {row.host_name}", highlight=False)


@host_app.command("respawn")
@handle_errors
def respawn_cmd(host: HostArg) -> None:
    """Bring the VMs of a DOWN host back on other hosts, from their disks."""
    row = load_host(host)
    results = host_vms.respawn_dangling_vms(checked_engine(), get_settings(), row.id)
    rows = [(r.vm_name, r.old_host, r.new_host, "ok" if r.ok else r.message) for r in results]
    print_table(f"Respawned from {row.host_name}", ["VM", "from", "to", "result"], rows)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@handle_errors
def vm_sanity_cmd() -> None:
    """Compare the VM rows with what the UP hosts run; fix drift, respawn lost domains,
    report orphans."""
    report = host_vms.vm_sanity_check(checked_engine(), get_settings())
    rows = [(r.vm_name, r.vm_identity, r.host, r.state, r.action) for r in report.rows]
    print_table("VM sanity", ["VM", "domain", "host", "state", "action"], rows)
    for host, error in report.unreachable.items():
        console.print(f"[red]{host} did not answer:[/] {error}", highlight=False)
    console.print(report.summary(), highlight=False)
