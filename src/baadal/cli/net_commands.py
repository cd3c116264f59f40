"""``baadal net ...``: security domains, IP pools, DHCP reservations and NAT mappings."""

from __future__ import annotations

from typing import Annotated

import typer

from baadal.cli import pool_commands
from baadal.cli.door import actor, checked_engine, console, db, handle_errors, print_table, read_db
from baadal.config import get_settings
from baadal.services import networks

app = typer.Typer(help="Networking: security domains, pools, DHCP, NAT.", no_args_is_help=True)
domain_app = typer.Typer(help="Security domains (a VLAN + its private pool).", no_args_is_help=True)
app.add_typer(domain_app, name="domain")
app.add_typer(pool_commands.app, name="pool")
dhcp_app = typer.Typer(help="DHCP reservations of the VMs.", no_args_is_help=True)
nat_app = typer.Typer(help="Public IP and VNC mappings on the NAT box.", no_args_is_help=True)
app.add_typer(dhcp_app, name="dhcp")
app.add_typer(nat_app, name="nat")


@domain_app.command("add")
@handle_errors
def domain_add_cmd(
    name: str,
    vlan: Annotated[int, typer.Option("--vlan", help="802.1Q VLAN id, 1-4094")],
    cidr: Annotated[str, typer.Option(help="the VLAN's network, e.g. 10.0.20.0/24")],
    ip_from: Annotated[str | None, typer.Option("--from", help="first pool address")] = None,
    ip_to: Annotated[str | None, typer.Option("--to", help="last pool address")] = None,
    hidden: Annotated[bool, typer.Option(help="not offered to every organisation")] = False,
) -> None:
    """Add a security domain with its own VLAN and private pool (all or nothing)."""
    with db() as session:
        domain = networks.add_security_domain(
            session, actor(session), name, vlan_tag=vlan, cidr=cidr, ip_from=ip_from, ip_to=ip_to,
            visible_to_all=not hidden,
        )  # fmt: skip
        line = f"added security domain {domain.name} on VLAN {vlan} ({cidr})"
    console.print(line, highlight=False)


@domain_app.command("remove")
@handle_errors
def domain_remove_cmd(name: str) -> None:
    """Remove a security domain with its VLAN and pool (refused while VMs use it)."""
    with db() as session:
        networks.remove_security_domain(session, actor(session), name)
    console.print(f"removed security domain {name}", highlight=False)


@domain_app.command("list")
@handle_errors
def domain_list_cmd() -> None:
    """Security domains with their VLAN, network and pool usage."""
    with read_db() as session:
        rows = [
            (d.name, f"{d.vlan_tag} ({d.vlan_name})", d.network, f"{d.pool_used}/{d.pool_size}",
             str(d.vms), "yes" if d.visible_to_all else "no")
            for d in networks.list_security_domains(session, actor(session)).items
        ]  # fmt: skip
    print_table("Security domains", ["name", "VLAN", "network", "IPs used", "VMs", "visible"], rows)


@dhcp_app.command("show")
@handle_errors
def dhcp_show_cmd() -> None:
    """The reservations in the DHCP server's file."""
    with read_db() as session:
        entries = networks.dhcp_entries(actor(session), get_settings())
    print_table(
        "DHCP reservations", ["name", "MAC", "IP"], [(e.name, e.mac, e.ip) for e in entries]
    )


@dhcp_app.command("rebuild")
@handle_errors
def dhcp_rebuild_cmd() -> None:
    """Rewrite the reservations from the database (after the file was lost)."""
    with db() as session:
        who = actor(session)
    count = networks.rebuild_dhcp(checked_engine(), who, get_settings())
    console.print(f"{count} reservation(s) written", highlight=False)


@nat_app.command("show")
@handle_errors
def nat_show_cmd() -> None:
    """The rules Baadal made on the NAT box."""
    with read_db() as session:
        lines = networks.nat_rules(actor(session), get_settings())
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


@nat_app.command("reapply")
@handle_errors
def nat_reapply_cmd() -> None:
    """Re-create every mapping from the database (after a NAT box reboot)."""
    with db() as session:
        who = actor(session)
    count = networks.reapply_nat(checked_engine(), who, get_settings())
    console.print(f"{count} rule(s)/alias(es) added", highlight=False)


@nat_app.command("clear")
@handle_errors
def nat_clear_cmd() -> None:
    """Remove every Baadal mapping from the NAT box (the database keeps them)."""
    with db() as session:
        who = actor(session)
    count = networks.clear_nat(checked_engine(), who, get_settings())
    console.print(f"{count} rule(s)/alias(es) removed", highlight=False)
