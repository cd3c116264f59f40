"""``baadal host power-up | power-down | power-auto``: switch hosts on and off by
wake-on-LAN / IPMI and the configured power-off command."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from baadal.cli.cloud_commands import InlineOpt, run_queued
from baadal.cli.door import (
    HostArg,
    checked_engine,
    console,
    current_actor,
    handle_errors,
    print_table,
)
from baadal.cli.inventory_commands import host_app
from baadal.config import get_settings
from baadal.services import hosts
from baadal.services.hosts import HostPowerResult


def _say(result: HostPowerResult) -> None:
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
    engine, settings = checked_engine(), get_settings()
    _say(hosts.power_up(engine, current_actor(), settings, host, wait=not no_wait))


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
    if vms == VmsFirst.MIGRATE:
        run_queued(lambda s, who: hosts.evacuate(s, who, host),
                   f"migrate the VMs of {host}", inline=inline)  # fmt: skip
    elif vms == VmsFirst.SNAPSHOT:
        run_queued(lambda s, who: hosts.shutdown_vms(s, who, [host]),
                   f"snapshot and stop the VMs of {host}", inline=inline)  # fmt: skip
    _say(hosts.power_down(checked_engine(), current_actor(), get_settings(), host))


@host_app.command("power-auto")
@handle_errors
def power_auto_cmd() -> None:
    """Power idle hosts off beyond power.min_hosts_up, and wake one when every UP host
    is more than 80 % reserved."""
    results = hosts.power_auto(checked_engine(), current_actor(), get_settings())
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
