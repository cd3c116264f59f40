"""``baadal pool ...``: VLANs and the private/public IP pools an admin fills and drains."""

from __future__ import annotations

from typing import Annotated

import typer

from baadal.cli.door import (
    AfterOption,
    LimitOption,
    actor,
    console,
    db,
    handle_errors,
    print_more,
    print_table,
    read_db,
)
from baadal.services import pools

app = typer.Typer(help="IP pools: VLANs, private and public addresses.", no_args_is_help=True)

FromIp = Annotated[str, typer.Argument(metavar="FROM", help="first address of the range")]
ToIp = Annotated[str, typer.Argument(metavar="TO", help="last address (included)")]


@app.command("vlan-add")
@handle_errors
def vlan_add_cmd(
    name: Annotated[str, typer.Argument(help="VLAN name (the libvirt portgroup)")],
    tag: Annotated[int, typer.Option("--tag", help="802.1Q VLAN id, 1-4094")],
    cidr: Annotated[str, typer.Option("--cidr", help="network, e.g. 10.0.1.0/24")],
) -> None:
    """Add a VLAN; its network must not overlap another VLAN's."""
    with db() as session:
        vlan = pools.add_vlan(session, actor(session), name, tag, cidr)
        line = f"added VLAN {vlan.name} (id {vlan.vlan_tag}, {vlan.vlan_addr})"
    console.print(line, highlight=False)


@app.command("private-add")
@handle_errors
def private_add_cmd(
    ip_from: FromIp,
    ip_to: ToIp,
    vlan: Annotated[str, typer.Option("--vlan", help="VLAN name")],
    mac: Annotated[
        list[str] | None,
        typer.Option("--mac", help="MAC per address, in order (default: generated)"),
    ] = None,
) -> None:
    """Add private addresses (each with a MAC) to a VLAN: all of them or none."""
    with db() as session:
        count = pools.add_private_ips(session, actor(session), vlan, ip_from, ip_to, mac)
    console.print(f"added {count} private IPs to VLAN {vlan}", highlight=False)


@app.command("public-add")
@handle_errors
def public_add_cmd(ip_from: FromIp, ip_to: ToIp) -> None:
    """Add public addresses: all of them or none."""
    with db() as session:
        count = pools.add_public_ips(session, actor(session), ip_from, ip_to)
    console.print(f"added {count} public IPs", highlight=False)


@app.command("private-remove")
@handle_errors
def private_remove_cmd(ip_from: FromIp, ip_to: ToIp) -> None:
    """Remove private addresses; refused if any of them is in use."""
    with db() as session:
        count = pools.remove_private_ips(session, actor(session), ip_from, ip_to)
    console.print(f"removed {count} private IPs", highlight=False)


@app.command("public-remove")
@handle_errors
def public_remove_cmd(ip_from: FromIp, ip_to: ToIp) -> None:
    """Remove public addresses; refused if any of them is in use."""
    with db() as session:
        count = pools.remove_public_ips(session, actor(session), ip_from, ip_to)
    console.print(f"removed {count} public IPs", highlight=False)


@app.command("list")
@handle_errors
def list_cmd(limit: LimitOption = None, after: AfterOption = None) -> None:
    """Addresses per VLAN (a page of VLANs with --limit), then, on the first page, public
    addresses and VNC ports: total, used, free."""
    with read_db() as session:
        who = actor(session)
        page = pools.list_vlans(session, who, after=after, limit=limit)
        usage = pools.usage(session, who) if after is None else None
    rows: list[tuple[object, ...]] = [
        (f"VLAN {v.name}", v.tag, v.cidr, v.total, v.used, v.free) for v in page.items
    ]
    if usage is not None:
        rows.append(("public", "", "", usage.public_total, usage.public_used, usage.public_free))
        start, end = usage.vnc_range
        span = end - start + 1
        busiest = usage.vnc_used_busiest_host
        rows.append(
            ("VNC ports (busiest host)", "", f"{start}-{end}", span, busiest, span - busiest)
        )
    print_table("Pools", ["pool", "VLAN id", "network", "total", "used", "free"], rows)
    print_more(page)
