"""``baadal quota ...``: usage and limits (VMs, vCPUs, RAM, disk, public IPs)."""

from __future__ import annotations

from typing import Annotated

import typer

from baadal import constants as C
from baadal.cli.door import actor, db, handle_errors, print_table, read_db, say
from baadal.config import get_settings
from baadal.services import quotas

app = typer.Typer(help="Quotas of users and organisations.", no_args_is_help=True)

UserOpt = Annotated[str | None, typer.Option("--user", help="username")]
OrgOpt = Annotated[str | None, typer.Option("--org", help="organisation name")]
LimitOpt = Annotated[int | None, typer.Option(min=0, max=C.QUOTA_MAX, help="0 = unlimited")]


@app.command("show")
@handle_errors
def show_cmd(user: UserOpt = None, org: OrgOpt = None) -> None:
    """Usage and limits of a user (default: you) or an organisation."""
    with read_db() as session:
        report = quotas.show_quota(session, actor(session), get_settings(), user=user, org=org)
    rows = [
        (
            line.item.value,
            f"{line.used:g}",
            line.limit or "unlimited",
            "own" if line.override else "default",
        )
        for line in report.lines
    ]
    print_table(f"Quota of {report.whose}", ["item", "used", "limit", "set"], rows)


@app.command("set")
@handle_errors
def set_cmd(
    user: UserOpt = None,
    org: OrgOpt = None,
    vms: LimitOpt = None,
    vcpus: LimitOpt = None,
    ram_gb: LimitOpt = None,
    disk_gb: LimitOpt = None,
    public_ips: LimitOpt = None,
) -> None:
    """Set limits of a user or an organisation (admins); the others stay."""
    given = {
        C.QuotaItem.VMS: vms,
        C.QuotaItem.VCPUS: vcpus,
        C.QuotaItem.RAM_GB: ram_gb,
        C.QuotaItem.DISK_GB: disk_gb,
        C.QuotaItem.PUBLIC_IPS: public_ips,
    }
    limits = {item: value for item, value in given.items() if value is not None}
    with db() as session:
        quotas.set_quota(session, actor(session), user=user, org=org, limits=limits)
    say(f"quota of {user or org} set")
