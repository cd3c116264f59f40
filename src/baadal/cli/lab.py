"""``baadal lab ...``: the one-machine cloud (up, down, status) and the tiny guest template."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.orm import Session

from baadal.cli.common import console, db, handle_errors
from baadal.config import get_settings
from baadal.lab import layout, topology
from baadal.lab.guest import build_tiny_guest
from baadal.services import inventory

app = typer.Typer(help="The lab: a whole cloud on one machine.", no_args_is_help=True)

TEMPLATE_DIR = "tiny"


@app.command("build-guest")
@handle_errors
def build_guest_cmd(
    datastore: Annotated[
        str | None, typer.Option(help="also put it on this datastore as template 'tiny'")
    ] = None,
    name: Annotated[str, typer.Option(help="template name")] = "tiny",
    force: Annotated[bool, typer.Option(help="rebuild even if present")] = False,
) -> None:
    """Build the tiny bootable guest (Debian kernel + busybox) and register it."""
    settings = get_settings()
    guest = build_tiny_guest(settings.home / "tiny-guest", force=force)
    console.print(f"tiny guest: kernel {guest.kernel_version}, files in {guest.kernel.parent}")
    if datastore is None:
        return
    with db() as session:
        ds = inventory.get_datastore(session, datastore)
        target = inventory.templates_dir(settings, ds) / TEMPLATE_DIR
        build_tiny_guest(target, force=force)
        template = inventory.add_template(
            session,
            name=name,
            datastore=ds.id,
            hdfile=f"{TEMPLATE_DIR}/tiny-disk.qcow2",
            os_version=guest.kernel_version,
            hdd_gb=1,
            os_name="Others",
            boot_kernel=f"{TEMPLATE_DIR}/vmlinuz",
            boot_initrd=f"{TEMPLATE_DIR}/tiny-initrd.gz",
            boot_cmdline=guest.cmdline,
            settings=settings,
        )
        console.print(f"template {template.name} registered on datastore {ds.ds_name}")


def _lab_db() -> AbstractContextManager[Session]:
    return db()


def lab_up() -> topology.UpResult:
    """``lab up`` with a live step display; shared by the demo."""
    settings = get_settings()
    with console.status("lab up") as spinner:
        result = topology.up(
            settings, _lab_db, progress=lambda step: spinner.update(f"lab up: {step}")
        )
    if result.cleaned:
        console.print(f"cleaned up first: {', '.join(result.cleaned)}")
    for step, seconds in result.steps:
        console.print(f"  {step}: {seconds:.2f} s")
    what = "already up" if result.already_up else "up"
    console.print(f"lab {what} in {result.seconds:.1f} s; hosts: " + ", ".join(
        f"{h.name} {h.uri}" for h in layout.HOSTS
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
    removed = topology.down(get_settings(), db=_lab_db)
    for item in removed:
        console.print(f"removed {item}")
    console.print("lab down" if removed else "lab was not up")


@app.command("status")
@handle_errors
def status_cmd() -> None:
    """Each part of the lab and its health; exit 1 unless all are healthy."""
    parts = topology.status(get_settings())
    table = Table(title="Baadal lab")
    for column in ("part", "kind", "health", "detail"):
        table.add_column(column)
    for part in parts:
        health = "[green]ok[/]" if part.healthy else "[red]DOWN[/]"
        table.add_row(part.name, part.kind, health, part.detail)
    console.print(table)
    if not topology.healthy(parts):
        raise typer.Exit(1)
