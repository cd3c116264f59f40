"""``baadal lab ...``: the one-machine cloud. For now: the tiny bootable guest template."""

from __future__ import annotations

from typing import Annotated

import typer

from baadal.cli.common import console, db, handle_errors
from baadal.config import get_settings
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
