"""``baadal host ...``: every host command, in one place.

add | list | show | set-status | remove        the registry: what an admin records
check | resources | usage | domains | events   what the hosts themselves say
orphan-delete | respawn                        domains no VM knows, VMs of a DOWN host
power-up | power-down | power-auto             wake-on-LAN / IPMI and the power-off
shutdown | bootup | evacuate | maintenance     the VMs of some hosts, one task per VM
balance                                        VMs off hosts short of memory (migrations)
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from baadal import constants as C
from baadal.cli.cloud_commands import InlineOpt, run_queued
from baadal.cli.door import (
    AfterOption,
    HostArg,
    LimitOption,
    actor,
    checked_engine,
    console,
    current_actor,
    db,
    handle_errors,
    print_fields,
    print_more,
    print_table,
    read_db,
    say,
)
from baadal.config import get_settings
from baadal.services import inventory
from baadal.services.rows import Host

if TYPE_CHECKING:
    from baadal.services.hosts import HostPowerResult

# The commands that ask the hosts import baadal.services.hosts (libvirt, SSH, the host
# code) when they run: `host list` and the other registry commands only read rows.

app = typer.Typer(help="Hypervisor hosts.", no_args_is_help=True)

NameOrId = Annotated[str, typer.Argument(metavar="NAME", help="name (or numeric id)")]


# --- the registry: what an admin records ---------------------------------------------


def _status_name(value: int) -> str:
    try:
        return C.HostStatus(value).name.lower()
    except ValueError:
        return str(value)


def _host_fields(host: Host) -> list[tuple[str, Any]]:
    return [
        ("id", host.id),
        ("name", host.host_name),
        ("address", host.address),
        ("status", _status_name(host.status)),
        ("type", host.host_type),
        ("CPUs", host.CPUs),
        ("RAM (GB)", host.RAM),
        ("HDD (GB)", host.HDD),
        ("libvirt URI", host.libvirt_uri),
        ("SSH user", host.ssh_user),
        ("SSH port", host.ssh_port),
        ("SSH key file", host.ssh_key_ref),
        ("MAC", host.mac_addr),
        ("category", host.category),
    ]


@app.command("add")
@handle_errors
def host_add_cmd(
    name: Annotated[str, typer.Argument(help="host name (letters, digits, . _ -)")],
    address: Annotated[str, typer.Option("--address", help="IPv4 address or DNS name")],
    cpus: Annotated[int, typer.Option("--cpus", help="physical CPUs")],
    ram_gb: Annotated[int, typer.Option("--ram-gb", help="RAM in GB")],
    hdd_gb: Annotated[int, typer.Option("--hdd-gb", help="local disk in GB")] = 0,
    libvirt_uri: Annotated[
        str | None,
        typer.Option("--libvirt-uri", help="default: qemu+ssh://USER@ADDRESS/system"),
    ] = None,
    ssh_user: Annotated[str, typer.Option("--ssh-user")] = "root",
    ssh_port: Annotated[int, typer.Option("--ssh-port")] = 22,
    ssh_key: Annotated[
        str | None, typer.Option("--ssh-key", help="path to the private key file")
    ] = None,
    mac: Annotated[str | None, typer.Option("--mac", help="NIC MAC (wake-on-LAN)")] = None,
    host_type: Annotated[str, typer.Option("--type", help="Physical or Virtual")] = "Physical",
    category: Annotated[str | None, typer.Option("--category")] = None,
    status: Annotated[str, typer.Option("--status", help="down, up or maintenance")] = "down",
) -> None:
    """Register a host (it starts DOWN unless told otherwise)."""
    with db() as session:
        host = inventory.add_host(
            session,
            actor(session),
            name=name,
            address=address,
            cpus=cpus,
            ram_gb=ram_gb,
            hdd_gb=hdd_gb,
            libvirt_uri=libvirt_uri,
            ssh_user=ssh_user,
            ssh_port=ssh_port,
            ssh_key_ref=ssh_key,
            mac_addr=mac,
            host_type=host_type,
            category=category,
            status=status,
        )
        line = f"added host {host.host_name} (id {host.id}, {host.libvirt_uri})"
    say(line)


@app.command("list")
@handle_errors
def host_list_cmd(limit: LimitOption = None, after: AfterOption = None) -> None:
    """All hosts with their state and capacity."""
    with read_db() as session:
        page = inventory.list_hosts(session, actor(session), after=after, limit=limit)
        rows = [
            (h.id, h.host_name, h.address, _status_name(h.status), h.CPUs, h.RAM, h.host_type)
            for h in page.items
        ]
    print_table("Hosts", ["id", "name", "address", "status", "CPUs", "RAM GB", "type"], rows)
    print_more(page)


@app.command("show")
@handle_errors
def host_show_cmd(host: NameOrId) -> None:
    """One host, every field."""
    with read_db() as session:
        rows = _host_fields(inventory.get_host(session, actor(session), host))
    print_fields(f"host {host}", rows)


@app.command("set-status")
@handle_errors
def host_set_status_cmd(
    host: NameOrId,
    status: Annotated[str, typer.Argument(help="down, up or maintenance")],
) -> None:
    """Mark a host up, down or in maintenance (placement uses UP hosts only)."""
    with db() as session:
        row = inventory.set_host_status(session, actor(session), host, status)
        line = f"host {row.host_name} is now {_status_name(row.status)}"
    say(line)


@app.command("remove")
@handle_errors
def host_remove_cmd(host: NameOrId) -> None:
    """Forget a host; refused while any VM is on it."""
    with db() as session:
        inventory.remove_host(session, actor(session), host)
    say(f"removed host {host}")


# --- what the hosts themselves say ---------------------------------------------------


@app.command("check")
@handle_errors
def check_cmd() -> None:
    """Run the host sanity check now: ping, libvirtd, and libvirtd/OVS over SSH."""
    from baadal.services import hosts as host_services

    checks = host_services.check_hosts(checked_engine(), current_actor(), get_settings())
    rows = [
        (c.host_name, c.old.name, c.new.name, "changed" if c.changed else "", c.problem or "ok")
        for c in checks
    ]
    print_table("Host sanity", ["host", "was", "now", "", "detail"], rows)


@app.command("resources")
@handle_errors
def resources_cmd(host: HostArg) -> None:
    """CPU cores, RAM and disk of the host, asked from the host itself."""
    from baadal.services import hosts as host_services

    name, found = host_services.hardware(checked_engine(), current_actor(), get_settings(), host)
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


@app.command("usage")
@handle_errors
def usage_cmd(
    host: HostArg, interval: Annotated[float, typer.Option(help="seconds to measure")] = 1.0
) -> None:
    """CPU, disk, memory and network use of the host over one short interval."""
    from baadal.services import hosts as host_services

    name, usage = host_services.usage(
        checked_engine(), current_actor(), get_settings(), host, interval
    )
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


@app.command("domains")
@handle_errors
def domains_cmd(host: HostArg) -> None:
    """Every domain libvirt has on the host, running or not."""
    from baadal.services import hosts as host_services

    name, domains = host_services.domains(checked_engine(), current_actor(), host)
    rows = [(d.name, C.VMStatus(d.status).name) for d in domains]
    print_table(f"Domains on {name}", ["domain", "state"], rows)


@app.command("events")
@handle_errors
def events_cmd(host: HostArg) -> None:
    """What the sanity check saw change on the host."""
    from baadal.services import hosts as host_services

    with read_db() as session:
        name, events = host_services.events(session, actor(session), host)
        rows = [
            (f"{e.timestamp:%Y-%m-%d %H:%M:%S}", e.attribute, e.old_value, e.new_value, e.message)
            for e in events
        ]
    print_table(f"Events of {name}", ["when", "what", "was", "now", "why"], rows)


@app.command("orphan-delete")
@handle_errors
def orphan_delete_cmd(host: HostArg, domain: str) -> None:
    """Destroy and undefine a domain Baadal does not know (its disks are kept)."""
    from baadal.services import hosts as host_services

    name = host_services.delete_orphan(checked_engine(), current_actor(), host, domain)
    console.print(f"removed orphan domain {domain} from {name}", highlight=False)


@app.command("respawn")
@handle_errors
def respawn_cmd(host: HostArg) -> None:
    """Bring the VMs of a DOWN host back on other hosts, from their disks."""
    from baadal.services import hosts as host_services

    name, results = host_services.respawn(checked_engine(), current_actor(), get_settings(), host)
    rows = [(r.vm_name, r.old_host, r.new_host, "ok" if r.ok else r.message) for r in results]
    print_table(f"Respawned from {name}", ["VM", "from", "to", "result"], rows)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


# --- power ---------------------------------------------------------------------------


def _say_power(result: HostPowerResult) -> None:
    console.print(f"{result.message} (status {result.status.name})", highlight=False)


@app.command("power-up")
@handle_errors
def power_up_cmd(
    host: HostArg,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="send the wake-up and return at once")
    ] = False,
) -> None:
    """Wake the host (wake-on-LAN, or IPMI for a host with a BMC) and wait until it
    answers; then it is UP."""
    from baadal.services import hosts as host_services

    engine, settings = checked_engine(), get_settings()
    _say_power(host_services.power_up(engine, current_actor(), settings, host, wait=not no_wait))


class VmsFirst(StrEnum):
    MIGRATE = "migrate"
    SNAPSHOT = "snapshot"
    NONE = "none"


@app.command("power-down")
@handle_errors
def power_down_cmd(
    host: HostArg,
    vms: Annotated[
        VmsFirst,
        typer.Option(
            help="first migrate its VMs away, or snapshot and stop them (host bootup "
            "brings them back), or nothing (refused while one runs)"
        ),
    ] = VmsFirst.MIGRATE,
    inline: InlineOpt = False,
) -> None:
    """Power the host off (power.poweroff_command over SSH, or IPMI) after its VMs."""
    from baadal.services import hosts as host_services

    if vms == VmsFirst.MIGRATE:
        run_queued(lambda s, who: host_services.evacuate(s, who, host),
                   f"migrate the VMs of {host}", inline=inline)  # fmt: skip
    elif vms == VmsFirst.SNAPSHOT:
        run_queued(lambda s, who: host_services.shutdown_vms(s, who, [host]),
                   f"snapshot and stop the VMs of {host}", inline=inline)  # fmt: skip
    _say_power(host_services.power_down(checked_engine(), current_actor(), get_settings(), host))


@app.command("power-auto")
@handle_errors
def power_auto_cmd() -> None:
    """Power idle hosts off beyond power.min_hosts_up, and wake one when every UP host
    is more than 80 % reserved."""
    from baadal.services import hosts as host_services

    results = host_services.power_auto(checked_engine(), current_actor(), get_settings())
    if not results:
        console.print("nothing to do", highlight=False)
        return
    rows = [
        (r.host_name, r.action, r.method, r.status.name, "ok" if r.ok else "failed", r.message)
        for r in results
    ]
    print_table("Host power", ["host", "action", "via", "status", "result", "detail"], rows)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


# --- the VMs of some hosts, one task each --------------------------------------------


@app.command("shutdown")
@handle_errors
def host_shutdown_cmd(hosts: list[str], inline: InlineOpt = False) -> None:
    """Snapshot and power off the VMs of these hosts."""
    from baadal.services import hosts as host_services

    run_queued(
        lambda s, who: host_services.shutdown_vms(s, who, hosts), "host shutdown", inline=inline
    )


@app.command("bootup")
@handle_errors
def host_bootup_cmd(hosts: list[str], inline: InlineOpt = False) -> None:
    """Bring back the VMs a host shutdown snapshotted."""
    from baadal.services import hosts as host_services

    run_queued(lambda s, who: host_services.bootup_vms(s, who, hosts), "host bootup", inline=inline)


@app.command("evacuate")
@handle_errors
def evacuate_cmd(host: str, inline: InlineOpt = False) -> None:
    """Migrate every VM off the host (live when running), one task each."""
    from baadal.services import hosts as host_services

    run_queued(
        lambda s, who: host_services.evacuate(s, who, host), f"evacuate {host}", inline=inline
    )


@app.command("maintenance")
@handle_errors
def maintenance_cmd(host: str, inline: InlineOpt = False) -> None:
    """Put the host in MAINTENANCE (no new VMs) and migrate its VMs away."""
    from baadal.services import hosts as host_services

    run_queued(lambda s, who: host_services.start_maintenance(s, who, host), f"maintenance of {host}",
               inline=inline)  # fmt: skip


@app.command("balance")
@handle_errors
def balance_cmd(
    dry_run: Annotated[bool, typer.Option(help="only show the plan; queue nothing")] = False,
) -> None:
    """Queue migrations of running VMs off hosts above balance.memory_threshold_pct to
    the least loaded hosts (at most balance.max_migrations at once); the worker runs them."""
    from baadal.services import hosts as host_services

    plan = host_services.balance(checked_engine(), current_actor(), get_settings(), dry_run=dry_run)
    print_table(
        "Host memory in use (after the planned moves)",
        ["host", "MB in use", "MB", "%"],
        [(h.name, h.used_mb, h.total_mb, f"{h.percent:.0f}") for h in plan.loads],
    )
    verb = "would move" if dry_run else "moves"
    rows = [
        (m.vm_name, m.ram_mb, m.source, m.dest, plan.queued.get(m.vm_id, "")) for m in plan.moves
    ]
    if rows:
        print_table(f"Load balancing {verb}", ["VM", "MB", "from", "to", "task"], rows)
    else:
        say("nothing to move")
    for note in plan.notes:
        say(note)
