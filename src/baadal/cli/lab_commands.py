"""``baadal lab ...``: the one-machine cloud (up, down, status) and the tiny guest template."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from baadal.cli.door import actor, checked_engine, console, current_actor, db, handle_errors
from baadal.config import get_settings
from baadal.services import lab
from baadal.services.lab import UpResult

app = typer.Typer(help="The lab: a whole cloud on one machine.", no_args_is_help=True)


@app.command("build-guest")
@handle_errors
def build_guest_cmd(
    datastore: Annotated[
        str | None, typer.Option(help="also put it on this datastore as template 'tiny'")
    ] = None,
    name: Annotated[str, typer.Option(help="template name")] = lab.TEMPLATE_NAME,
    force: Annotated[bool, typer.Option(help="rebuild even if present")] = False,
) -> None:
    """Build the tiny bootable guest (Debian kernel + busybox) and register it."""
    settings = get_settings()
    guest = lab.build_guest(settings, current_actor(), force=force)
    console.print(f"tiny guest: kernel {guest.kernel_version}, files in {guest.kernel.parent}")
    if datastore is None:
        return
    with db() as session:
        template = lab.add_guest_template(
            session, actor(session), settings, datastore=datastore, name=name, force=force
        )
        console.print(
            f"template {template.name} registered on datastore {template.datastore.ds_name}"
        )


def lab_up() -> UpResult:
    """``lab up`` with a live step display; shared by the demo."""
    engine, who, settings = checked_engine(), current_actor(), get_settings()
    with console.status("lab up") as spinner:
        result = lab.up(
            engine, who, settings, progress=lambda step: spinner.update(f"lab up: {step}")
        )
    if result.cleaned:
        console.print(f"cleaned up first: {', '.join(result.cleaned)}")
    for step, seconds in result.steps:
        console.print(f"  {step}: {seconds:.2f} s")
    what = "already up" if result.already_up else "up"
    console.print(f"lab {what} in {result.seconds:.1f} s; hosts: " + ", ".join(
        f"{h.name} {h.uri}" for h in lab.HOSTS
    ))  # fmt: skip
    return result


@app.command("up")
@handle_errors
def up_cmd() -> None:
    """Build the lab (idempotent; after a crash it cleans up first) and register it."""
    lab_up()


@app.command("down")
@handle_errors
def down_cmd() -> None:
    """Remove every namespace, process, link, bridge and file the lab made."""
    removed = lab.down(checked_engine(), current_actor(), get_settings())
    for item in removed:
        console.print(f"removed {item}")
    console.print("lab down" if removed else "lab was not up")


@app.command("status")
@handle_errors
def status_cmd() -> None:
    """Each part of the lab and its health; exit 1 unless all are healthy."""
    parts, healthy = lab.status(get_settings(), current_actor())
    table = Table(title="Baadal lab")
    for column in ("part", "kind", "health", "detail"):
        table.add_column(column)
    for part in parts:
        health = "[green]ok[/]" if part.healthy else "[red]DOWN[/]"
        table.add_row(part.name, part.kind, health, part.detail)
    console.print(table)
    if not healthy:
        raise typer.Exit(1)
