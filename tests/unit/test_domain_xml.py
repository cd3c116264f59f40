"""Domain XML built with lxml: what libvirt will be asked to run."""

from __future__ import annotations

import pytest
from lxml import etree

from baadal.drivers import domain_xml as dx
from baadal.errors import ValidationError

pytestmark = pytest.mark.unit


def spec(**kw: object) -> dx.DomainSpec:
    base = {
        "name": "org_user_vm",
        "uuid": "78a76823-9672-5418-8a04-be892e72871f",
        "memory_mb": 256,
        "vcpus": 1,
        "disks": [dx.DiskSpec("/ds/vm.qcow2")],
        "nics": [dx.NicSpec("A2:00:00:01:02:03", bridge="br0", vlan_tag=10, openvswitch=True)],
        "vnc_port": 20001,
        "vnc_password": "s3cret",
        "vnc_listen": "10.0.0.2",
    }
    return dx.DomainSpec(**(base | kw))  # type: ignore[arg-type]


def test_ovs_nic_with_vlan_and_checksum_offload_off() -> None:
    root = etree.fromstring(dx.build_domain_xml(spec()).encode())
    nic = root.find("devices/interface")
    assert nic.get("type") == "bridge"
    assert nic.find("mac").get("address") == "a2:00:00:01:02:03"
    assert nic.find("virtualport").get("type") == "openvswitch"
    assert nic.find("vlan/tag").get("id") == "10"
    assert nic.find("driver/host").get("csum") == "off"
    graphics = root.find("devices/graphics")
    assert (graphics.get("port"), graphics.get("listen"), graphics.get("passwd")) == (
        "20001",
        "10.0.0.2",
        "s3cret",
    )
    assert root.get("type") == "qemu" and root.findtext("uuid") == spec().uuid


def test_direct_kernel_boot_and_bad_specs() -> None:
    xml = dx.build_domain_xml(spec(kernel="/k", initrd="/i", cmdline="console=ttyS0"))
    root = etree.fromstring(xml.encode())
    assert [root.findtext(f"os/{t}") for t in ("kernel", "initrd", "cmdline")] == [
        "/k",
        "/i",
        "console=ttyS0",
    ]
    with pytest.raises(ValidationError):
        dx.build_domain_xml(spec(disks=[]))
    with pytest.raises(ValidationError):
        dx.build_domain_xml(spec(memory_mb=0))
    with pytest.raises(ValidationError):
        dx.build_domain_xml(spec(nics=[dx.NicSpec("A2:00:00:01:02:03")]))


def test_disk_targets_and_edits() -> None:
    xml = dx.build_domain_xml(spec())
    assert dx.next_disk_target(xml) == "vdb"
    xml = dx.add_device(xml, dx.disk_xml(dx.DiskSpec("/ds/extra.qcow2", "vdb")))
    assert dx.disk_targets(xml) == ["vda", "vdb"]
    assert dx.disk_paths(xml) == ["/ds/vm.qcow2", "/ds/extra.qcow2"]
    edited = dx.set_memory_and_vcpus(xml, 1024, 4)
    root = etree.fromstring(edited.encode())
    assert root.findtext("memory") == "1024" and root.findtext("vcpu") == "4"
    moved = dx.set_portgroup_or_vlan(edited, mac="A2:00:00:09:09:09", vlan_tag=20)
    nic = etree.fromstring(moved.encode()).find("devices/interface")
    assert nic.find("vlan/tag").get("id") == "20"
    assert nic.find("mac").get("address") == "a2:00:00:09:09:09"
