"""``baadal host power-up | power-down | power-auto``: switch hosts on and off by
wake-on-LAN / IPMI and the configured power-off command."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from baadal.cli.cloud import InlineOpt, run_queued
from baadal.cli.common import (
    HostArg,
    checked_engine,
    console,
    handle_errors,
    load_host,
    print_table,
)
from baadal.cli.inventory import host_app
from baadal.config import get_settings
from baadal.host import maintenance, power
from baadal.host import vms as host_vms


def _say(result: power.HostPowerResult) -> None:
    console.print(f"{result.message} (status {result.status.name})", highlight=False)


@host_app.command("power-up")
@handle_errors
def power_up_cmd(
    host: HostArg,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="send the wake-up and return at once")
    ] = False,
) -> None:
    """Wake the host (wake-on-LAN, or IPMI for a host with a BMC) and wait until it
    answers; then it is UP."""
    _say(
        power.host_power_up(checked_engine(), get_settings(), load_host(host).id, wait=not no_wait)
    )


class VmsFirst(StrEnum):
    MIGRATE = "migrate"
    SNAPSHOT = "snapshot"
    NONE = "none"


@host_app.command("power-down")
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
    host_id = load_host(host).id
    if vms == VmsFirst.MIGRATE:
        run_queued(lambda s: host_vms.migrate_all_vms_from_host(s, host_id),
                   f"migrate the VMs of {host}", inline=inline, shutdown=None)  # fmt: skip
    elif vms == VmsFirst.SNAPSHOT:
        run_queued(lambda s: maintenance.shutdown_host(s, [host_id]),
                   f"snapshot and stop the VMs of {host}", inline=inline, shutdown=None)  # fmt: skip
    _say(power.host_power_down(checked_engine(), get_settings(), host_id))


@host_app.command("power-auto")
@handle_errors
def power_auto_cmd() -> None:
    """Power idle hosts off beyond power.min_hosts_up, and wake one when every UP host
    is more than 80 % reserved."""
    results = power.host_power_operation(checked_engine(), get_settings())
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
