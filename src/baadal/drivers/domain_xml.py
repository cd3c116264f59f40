"""Domain XML built and edited with lxml (the seed's get_install_command + generate_xml).

No virt-install and no string templates: a :class:`DomainSpec` says what the VM is and
:func:`build_domain_xml` turns it into libvirt XML. Edits (RAM, vCPU, extra disks, NIC
VLAN) work on the parsed tree, so whatever libvirt added to the XML is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from baadal.errors import ValidationError

#: virtio disk targets in order: vda is the system disk, extra disks follow
DISK_TARGETS = [f"vd{chr(c)}" for c in range(ord("a"), ord("z") + 1)]


@dataclass(frozen=True)
class NicSpec:
    mac: str
    #: OVS or Linux bridge name (type='bridge'), or a libvirt network name (type='network')
    bridge: str | None = None
    network: str | None = None
    portgroup: str | None = None
    vlan_tag: int | None = None
    openvswitch: bool = False


@dataclass(frozen=True)
class DiskSpec:
    path: str
    target: str = "vda"
    fmt: str = "qcow2"
    #: 'none' is what upstream used for Linux guests on shared storage
    cache: str = "none"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    memory_mb: int
    vcpus: int
    disks: list[DiskSpec]
    nics: list[NicSpec] = field(default_factory=list)
    #: 'kvm' when a boot probe proved KVM works on the host, else 'qemu' (TCG)
    domain_type: str = "qemu"
    vnc_port: int | None = None
    vnc_listen: str = "127.0.0.1"
    vnc_password: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    serial_log: str | None = None
    autostart: bool = False


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def disk_element(disk: DiskSpec) -> etree._Element:
    el = etree.Element("disk", type="file", device="disk")
    _sub(el, "driver", name="qemu", type=disk.fmt, cache=disk.cache)
    _sub(el, "source", file=disk.path)
    _sub(el, "target", dev=disk.target, bus="virtio")
    return el


def disk_xml(disk: DiskSpec) -> str:
    """XML for attaching one disk (the seed's generate_xml(diskpath, target_disk))."""
    return etree.tostring(disk_element(disk), encoding="unicode")


def nic_element(nic: NicSpec) -> etree._Element:
    if (nic.bridge is None) == (nic.network is None):
        raise ValidationError("a NIC needs exactly one of bridge or network")
    kind = "bridge" if nic.bridge else "network"
    el = etree.Element("interface", type=kind)
    _sub(el, "mac", address=nic.mac.lower())
    source = _sub(el, "source", **{kind: nic.bridge or nic.network or ""})
    if nic.portgroup:
        source.set("portgroup", nic.portgroup)
    if nic.openvswitch:
        _sub(el, "virtualport", type="openvswitch")
    if nic.vlan_tag is not None:
        _sub(_sub(el, "vlan"), "tag", id=str(nic.vlan_tag))
    _sub(el, "model", type="virtio")
    if nic.openvswitch:
        # the OVS userspace datapath does not finish virtio's partial checksums: TCP
        # breaks without this (lab-notes.md)
        _sub(_sub(el, "driver", name="qemu"), "host", csum="off")
    return el


def build_domain_xml(spec: DomainSpec, *, allow_diskless: bool = False) -> str:
    if spec.memory_mb <= 0 or spec.vcpus <= 0:
        raise ValidationError("memory and vCPUs must be positive")
    if not spec.disks and not allow_diskless:
        raise ValidationError("a domain needs a system disk")
    root = etree.Element("domain", type=spec.domain_type)
    _sub(root, "name", spec.name)
    _sub(root, "uuid", spec.uuid)
    _sub(root, "memory", str(spec.memory_mb), unit="MiB")
    _sub(root, "currentMemory", str(spec.memory_mb), unit="MiB")
    _sub(root, "vcpu", str(spec.vcpus), placement="static")
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    devices = _sub(root, "devices")
    for disk in spec.disks:
        devices.append(disk_element(disk))
    for nic in spec.nics:
        devices.append(nic_element(nic))
    serial = _sub(devices, "serial", type="pty")
    if spec.serial_log:
        _sub(serial, "log", file=spec.serial_log, append="off")
    _sub(devices, "console", type="pty")
    if spec.vnc_port is not None:
        graphics = _sub(devices, "graphics", type="vnc", port=str(spec.vnc_port), autoport="no")
        graphics.set("listen", spec.vnc_listen)
        if spec.vnc_password:
            graphics.set("passwd", spec.vnc_password)
        _sub(graphics, "listen", type="address", address=spec.vnc_listen)
    _sub(devices, "memballoon", model="virtio")
    return etree.tostring(root, encoding="unicode", pretty_print=True)


def parse(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode())


def to_string(root: etree._Element) -> str:
    return etree.tostring(root, encoding="unicode", pretty_print=True)


def disk_targets(xml: str) -> list[str]:
    return [str(t) for t in parse(xml).xpath("/domain/devices/disk[@device='disk']/target/@dev")]


def disk_paths(xml: str) -> list[str]:
    return [str(p) for p in parse(xml).xpath("/domain/devices/disk/source/@file")]


def next_disk_target(xml: str) -> str:
    used = set(disk_targets(xml))
    for target in DISK_TARGETS:
        if target not in used:
            return target
    raise ValidationError("no free virtio disk target left (vda..vdz)")


def interface_targets(xml: str) -> list[str]:
    return [str(t) for t in parse(xml).xpath("/domain/devices/interface/target/@dev")]


def add_device(xml: str, device_xml: str) -> str:
    root = parse(xml)
    root.find("devices").append(parse(device_xml))
    return to_string(root)


def set_memory_and_vcpus(xml: str, memory_mb: int | None, vcpus: int | None) -> str:
    """Rewrite RAM and/or vCPU count (max and current) in a persistent definition."""
    root = parse(xml)
    if memory_mb is not None:
        for tag in ("memory", "currentMemory"):
            el = root.find(tag)
            if el is None:
                el = _sub(root, tag)
            el.text = str(memory_mb)
            el.set("unit", "MiB")
    if vcpus is not None:
        el = root.find("vcpu")
        if el is None:
            el = _sub(root, "vcpu")
        el.text = str(vcpus)
        el.attrib.pop("current", None)
    return to_string(root)


def set_portgroup_or_vlan(
    xml: str, *, mac: str | None = None, portgroup: str | None = None, vlan_tag: int | None = None
) -> str:
    """The seed's set_portgroup_in_vm: a network NIC gets the portgroup, a bridge NIC the
    VLAN tag; with ``mac`` the NIC's MAC is rewritten too (security domain change)."""
    root = parse(xml)
    nics = root.xpath("/domain/devices/interface")
    if not nics:
        raise ValidationError("the domain has no network interface")
    nic = nics[0]
    if mac is not None:
        nic.find("mac").set("address", mac.lower())
    source = nic.find("source")
    if source is not None and source.get("network") is not None and portgroup:
        source.set("portgroup", portgroup)
    elif vlan_tag is not None:
        vlan = nic.find("vlan")
        if vlan is None:
            vlan = _sub(nic, "vlan")
        for tag in list(vlan):
            vlan.remove(tag)
        _sub(vlan, "tag", id=str(vlan_tag))
    return to_string(root)


def set_vnc_listen(xml: str, address: str) -> str:
    """Point the VNC console at ``address`` (a migrated domain listens on its new host:
    the old host's address cannot be bound there). Works on a domain's XML and on a
    snapshot's (the domains inside it); XML without VNC graphics is unchanged."""
    root = parse(xml)
    for graphics in root.xpath("//devices/graphics[@type='vnc']"):
        if graphics.get("listen") is not None:
            graphics.set("listen", address)
        for listen in graphics.xpath("listen[@type='address']"):
            listen.set("address", address)
    return to_string(root)


def _vnc_graphics(root: etree._Element) -> etree._Element:
    found = root.xpath("/domain/devices/graphics[@type='vnc']")
    if not found:
        raise ValidationError("the domain has no VNC console")
    return found[0]


def vnc_graphics_with_password(xml: str, password: str) -> str:
    """The domain's VNC graphics device with ``password``: what a live device update
    takes (the device must match the running one but for the password)."""
    graphics = _vnc_graphics(parse(xml))
    graphics.set("passwd", password)
    return etree.tostring(graphics, encoding="unicode")


def set_vnc_password(xml: str, password: str) -> str:
    """The domain XML with its VNC console's password replaced."""
    root = parse(xml)
    _vnc_graphics(root).set("passwd", password)
    return to_string(root)


def snapshot_xml(name: str) -> str:
    """What creating a snapshot takes: only its name (libvirt fills in the rest)."""
    root = etree.Element("domainsnapshot")
    _sub(root, "name", name)
    return etree.tostring(root, encoding="unicode")


def internal_snapshot_xml(
    name: str,
    parent: str | None,
    created: int,
    running: bool,
    disks: dict[str, bool],
    domain: str,
) -> str:
    """Metadata libvirt accepts for redefining an internal snapshot (tried on libvirt 9):
    a running one with internal memory reverts to a running guest, else to a shut-off one.
    ``disks`` says per target whether the disk holds the snapshot."""
    root = parse(snapshot_xml(name))
    if parent is not None:
        _sub(_sub(root, "parent"), "name", parent)
    _sub(root, "state", "running" if running else "shutoff")
    _sub(root, "creationTime", str(created))
    _sub(root, "memory", snapshot="internal" if running else "no")
    disks_el = _sub(root, "disks")
    for target, has in disks.items():
        _sub(disks_el, "disk", name=target, snapshot="internal" if has else "no")
    root.append(parse(domain))
    return etree.tostring(root, encoding="unicode")


def snapshot_names(snapshot: str) -> tuple[str, str | None]:
    """A snapshot XML's name and its parent's name (None for a root snapshot)."""
    root = parse(snapshot)
    return root.findtext("name") or "", root.findtext("parent/name")


_KIB_PER_UNIT = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "m": 1024, "mib": 1024}
_KIB_PER_UNIT |= {"g": 1024**2, "gib": 1024**2}


def memory_kib_and_vcpus(xml: str) -> tuple[int, int]:
    """The current memory (KiB, libvirt's default unit) and vCPU count of a domain XML."""
    root = parse(xml)
    memory = root.find("currentMemory")
    if memory is None:
        memory = root.find("memory")
    kib = 0
    if memory is not None and memory.text:
        kib = int(int(memory.text) * _KIB_PER_UNIT[memory.get("unit", "KiB").lower()])
    return kib, int(root.findtext("vcpu") or 1)


def without_secrets(xml: str) -> str:
    """The XML libvirt shows without VIR_DOMAIN_XML_SECURE: no VNC password."""
    root = parse(xml)
    for graphics in root.xpath("//devices/graphics[@passwd]"):
        del graphics.attrib["passwd"]
    return to_string(root)
