"""Where VM files live on a datastore, and the qemu-img work on them.

Layout under a datastore's mount point (the same path on the controller and every host,
the filer)::

    <mount>/<vms>/<vm_identity>/<vm_identity>.qcow2                  system disk
    <mount>/<extra_disks_dir>/<vm_identity>/<vm_identity>_disk<N>.qcow2
    <mount>/<templates_dir>/<template hdfile>
    <mount>/<vm_consoles>/<vm_identity>.log                          serial console

New system disks are qcow2 overlays on the template (copy-on-write): creating one costs
the same for a 100 MiB or a 100 GiB template. A full copy happens only when asked.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from baadal.config import Settings
from baadal.db.models import Datastore, Template
from baadal.drivers.remote import run_local
from baadal.errors import NotFoundError, ResourceExhausted, ValidationError

GIB = 1024**3
QEMU_IMG_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class ImageLocation:
    path: Path
    present: bool
    size_gb: int = 0


def _mount(datastore: Datastore) -> Path:
    return Path(datastore.system_mount_point)


def vm_dir(settings: Settings, datastore: Datastore, vm_identity: str) -> Path:
    return _mount(datastore) / settings.paths.vms / vm_identity


def get_vm_image_location(
    settings: Settings, datastore: Datastore, vm_identity: str
) -> ImageLocation:
    """The seed's get_vm_image_location: the system disk's path and whether it exists."""
    path = vm_dir(settings, datastore, vm_identity) / f"{vm_identity}.qcow2"
    return ImageLocation(path, path.is_file())


def extra_disk_dir(settings: Settings, datastore: Datastore, vm_identity: str) -> Path:
    return _mount(datastore) / settings.paths.extra_disks_dir / vm_identity


def extra_disk_name(vm_identity: str, index: int) -> str:
    return f"{vm_identity}_disk{index}.qcow2"


def get_extra_disk_location(
    settings: Settings,
    datastore: Datastore,
    vm_identity: str,
    disk_name: str,
    get_disk_size: bool = False,
) -> ImageLocation:
    """The seed's get_extra_disk_location: path, whether present, and size in GB if asked."""
    if "/" in disk_name or disk_name.startswith("."):
        raise ValidationError(f"bad disk name {disk_name!r}")
    path = extra_disk_dir(settings, datastore, vm_identity) / disk_name
    present = path.is_file()
    size = virtual_size_gb(path) if present and get_disk_size else 0
    return ImageLocation(path, present, size)


def template_file(settings: Settings, datastore: Datastore, relative: str) -> Path:
    """A file under the datastore's templates dir; refuses paths that escape it."""
    base = _mount(datastore) / settings.paths.templates_dir
    path = (base / relative).resolve()
    if base.resolve() not in path.parents:
        raise ValidationError(f"template file {relative!r} is outside the templates dir")
    return path


def template_path(settings: Settings, template: Template) -> Path:
    return template_file(settings, template.datastore, template.hdfile)


def template_boot_file(settings: Settings, template: Template, relative: str | None) -> str | None:
    """Kernel/initrd of a direct-boot template, relative to the templates dir."""
    if not relative:
        return None
    path = template_file(settings, template.datastore, relative)
    if not path.is_file():
        raise NotFoundError(f"template {template.name}: boot file {path} not found")
    return str(path)


def console_log_path(settings: Settings, datastore: Datastore, vm_identity: str) -> Path:
    return _mount(datastore) / settings.vm.console_dir / f"{vm_identity}.log"


def free_gb(path: Path) -> int:
    usage = shutil.disk_usage(path)
    return usage.free // GIB


def ensure_fits(directory: Path, size_gb: int, what: str) -> None:
    """Refuse before creating anything when the filesystem cannot hold ``size_gb``."""
    directory.mkdir(parents=True, exist_ok=True)
    free = free_gb(directory)
    if size_gb > free:
        raise ResourceExhausted(
            f"{what} of {size_gb} GB does not fit: only {free} GB free on {directory}"
        )


def qemu_img(*args: str) -> str:
    return run_local(["qemu-img", *args], timeout=QEMU_IMG_TIMEOUT_S).stdout


def image_info(path: Path) -> dict[str, object]:
    return json.loads(qemu_img("info", "--output=json", "-U", str(path)))


def virtual_size_gb(path: Path) -> int:
    return int(image_info(path)["virtual-size"]) // GIB  # type: ignore[call-overload]


def create_overlay(backing: Path, dest: Path) -> None:
    """A copy-on-write child of ``backing`` (the template): instant, whatever its size."""
    if not backing.is_file():
        raise NotFoundError(f"template image {backing} not found")
    fmt = str(image_info(backing)["format"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    qemu_img("create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(backing), str(dest))


def full_copy(source: Path, dest: Path, *, backing: Path | None = None) -> None:
    """A standalone copy (or, with ``backing``, only the differences to it).

    Uses ``convert``: internal snapshots of the source are not carried over, which is
    what a clone wants (its domain has no snapshot metadata for them).
    """
    if not source.is_file():
        raise NotFoundError(f"image {source} not found")
    dest.parent.mkdir(parents=True, exist_ok=True)
    args = ["convert", "-q", "-U", "-O", "qcow2"]
    if backing is not None:
        args += ["-B", str(backing), "-F", str(image_info(backing)["format"])]
    qemu_img(*args, str(source), str(dest))


def create_blank(dest: Path, size_gb: int) -> None:
    if size_gb <= 0:
        raise ValidationError("disk size must be at least 1 GB")
    dest.parent.mkdir(parents=True, exist_ok=True)
    qemu_img("create", "-q", "-f", "qcow2", str(dest), f"{size_gb}G")


def remove_path(path: Path) -> None:
    """Remove a file or a directory tree if it exists (idempotent clean-up)."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
