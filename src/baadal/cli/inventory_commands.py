"""``baadal datastore|template ...``: what an admin registers before VMs can exist."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from baadal.cli.door import actor, db, handle_errors, print_fields, print_table, say
from baadal.services import inventory
from baadal.services.rows import Datastore, Template

datastore_app = typer.Typer(help="Datastores: shared storage for images.", no_args_is_help=True)
template_app = typer.Typer(help="Templates: base images VMs are made from.", no_args_is_help=True)

NameOrId = Annotated[str, typer.Argument(metavar="NAME", help="name (or numeric id)")]


# --- datastores ----------------------------------------------------------------------


def _datastore_fields(ds: Datastore) -> list[tuple[str, Any]]:
    return [
        ("id", ds.id),
        ("name", ds.ds_name),
        ("mount point", ds.system_mount_point),
        ("path (export)", ds.path),
        ("IP", ds.ds_ip),
        ("capacity (GB)", ds.capacity),
        ("used (GB)", ds.used),
        ("user name", ds.username),
        ("password file", ds.password_ref),
    ]


@datastore_app.command("add")
@handle_errors
def datastore_add_cmd(
    name: Annotated[str, typer.Argument(help="datastore name")],
    mount_point: Annotated[
        str, typer.Option("--mount-point", "--mount", help="where it is mounted (absolute)")
    ],
    capacity_gb: Annotated[int, typer.Option("--capacity-gb", help="capacity in GB")],
    path: Annotated[
        str | None, typer.Option("--path", help="export on the filer (default: mount point)")
    ] = None,
    ds_ip: Annotated[str | None, typer.Option("--ip", help="filer IPv4 address")] = None,
    username: Annotated[str, typer.Option("--username", help="filer user")] = "",
    password_ref: Annotated[
        str | None, typer.Option("--password-file", help="file holding the filer password")
    ] = None,
) -> None:
    """Register a mounted datastore and create its standard directories."""
    with db() as session:
        ds = inventory.add_datastore(
            session,
            actor(session),
            name=name,
            mount_point=mount_point,
            capacity_gb=capacity_gb,
            path=path,
            ds_ip=ds_ip,
            username=username,
            password_ref=password_ref,
        )
        line = f"added datastore {ds.ds_name} (id {ds.id}, {ds.system_mount_point})"
    say(line)


@datastore_app.command("list")
@handle_errors
def datastore_list_cmd() -> None:
    """All datastores with capacity and use."""
    with db() as session:
        rows = [
            (d.id, d.ds_name, d.system_mount_point, d.capacity, d.used)
            for d in inventory.list_datastores(session, actor(session)).items
        ]
    print_table("Datastores", ["id", "name", "mount point", "capacity GB", "used GB"], rows)


@datastore_app.command("show")
@handle_errors
def datastore_show_cmd(datastore: NameOrId) -> None:
    """One datastore, every field."""
    with db() as session:
        rows = _datastore_fields(inventory.get_datastore(session, actor(session), datastore))
    print_fields(f"datastore {datastore}", rows)


# --- templates -----------------------------------------------------------------------


def _template_fields(t: Template) -> list[tuple[str, Any]]:
    return [
        ("id", t.id),
        ("name", t.name),
        ("active", "yes" if t.is_active else "no"),
        ("datastore", t.datastore.ds_name),
        ("image", t.hdfile),
        ("disk type", t.type),
        ("HDD (GB)", t.hdd),
        ("OS", t.os),
        ("OS name", t.os_name),
        ("OS version", t.os_version),
        ("OS type", t.os_type),
        ("arch", t.arch),
        ("tag", t.tag),
        ("boot kernel", t.boot_kernel),
        ("boot initrd", t.boot_initrd),
        ("boot cmdline", t.boot_cmdline),
    ]


@template_app.command("add")
@handle_errors
def template_add_cmd(
    name: Annotated[str, typer.Argument(help="template name")],
    datastore: Annotated[str, typer.Option("--datastore", help="datastore name")],
    hdfile: Annotated[
        str, typer.Option("--hdfile", help="image file, relative to the templates directory")
    ],
    os_version: Annotated[str, typer.Option("--os-version")],
    hdd_gb: Annotated[int, typer.Option("--hdd-gb", help="disk size VMs get, in GB")],
    os: Annotated[str, typer.Option("--os", help="Linux, Windows or Others")] = "Linux",
    os_name: Annotated[
        str, typer.Option("--os-name", help="Ubuntu, Centos, Kali, Windows or Others")
    ] = "Others",
    os_type: Annotated[str, typer.Option("--os-type", help="Desktop or Server")] = "Server",
    arch: Annotated[str, typer.Option("--arch", help="amd64, i386, x86 or x64")] = "amd64",
    disk_type: Annotated[str, typer.Option("--disk-type", help="QCOW2, RAW or ISO")] = "QCOW2",
    tag: Annotated[str | None, typer.Option("--tag")] = None,
    boot_kernel: Annotated[
        str | None, typer.Option("--boot-kernel", help="kernel for direct boot (relative)")
    ] = None,
    boot_initrd: Annotated[
        str | None, typer.Option("--boot-initrd", help="initrd for direct boot (relative)")
    ] = None,
    boot_cmdline: Annotated[str | None, typer.Option("--boot-cmdline")] = None,
) -> None:
    """Register a template image that is already on a datastore."""
    with db() as session:
        t = inventory.add_template(
            session,
            actor(session),
            name=name,
            datastore=datastore,
            hdfile=hdfile,
            os_version=os_version,
            hdd_gb=hdd_gb,
            os=os,
            os_name=os_name,
            os_type=os_type,
            arch=arch,
            disk_type=disk_type,
            tag=tag,
            boot_kernel=boot_kernel,
            boot_initrd=boot_initrd,
            boot_cmdline=boot_cmdline,
        )
        line = f"added template {t.name} (id {t.id}, {t.hdfile} on {t.datastore.ds_name})"
    say(line)


@template_app.command("list")
@handle_errors
def template_list_cmd(
    active_only: Annotated[bool, typer.Option("--active-only", help="hide deactivated")] = False,
) -> None:
    """All templates (deactivated ones marked)."""
    with db() as session:
        rows = [
            (t.id, t.name, "yes" if t.is_active else "no", t.os_name, t.hdd, t.datastore.ds_name)
            for t in inventory.list_templates(
                session, actor(session), active_only=active_only
            ).items
        ]
    print_table("Templates", ["id", "name", "active", "OS", "HDD GB", "datastore"], rows)


@template_app.command("show")
@handle_errors
def template_show_cmd(template: NameOrId) -> None:
    """One template, every field."""
    with db() as session:
        rows = _template_fields(inventory.get_template(session, actor(session), template))
    print_fields(f"template {template}", rows)


@template_app.command("deactivate")
@handle_errors
def template_deactivate_cmd(template: NameOrId) -> None:
    """Stop offering a template for new VMs; existing VMs are untouched."""
    with db() as session:
        t = inventory.deactivate_template(session, actor(session), template)
        line = f"template {t.name} deactivated"
    say(line)
