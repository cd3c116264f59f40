"""Host hardware and utilization: the output parsers on captured real outputs, the node
statistics of the libvirt driver on a test:/// node, and the sampling logic with canned
SSH answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from baadal import constants as C
from baadal.config import Settings
from baadal.db.models import Host
from baadal.drivers.base import NodeCpuTimes, NodeMemory, NotSupported
from baadal.drivers.libvirt_driver import LibvirtHypervisor
from baadal.drivers.remote import CommandResult, RemoteTarget
from baadal.errors import RemoteCommandError
from baadal.host import resources as R
from baadal.host import usage as U
from tests.support.cloud import fake_host_uri

pytestmark = pytest.mark.unit

DF = """\
Filesystem     1024-blocks     Used Available Capacity Mounted on
/dev/vda         264212084 23363120  83027792      22% /
"""
DF_SPACES = """\
Filesystem      1024-blocks  Used Available Capacity Mounted on
//filer/vm images  2147483648 10 2147483638       1% /mnt/data store
"""
IP_ADDR = (
    "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
    "2: eno1    inet 10.20.0.11/16 brd 10.20.255.255 scope global eno1\\       valid_lft "
    "forever preferred_lft forever\n"
    "5: br0    inet 192.0.2.2/24 brd 192.0.2.255 scope global br0\\       valid_lft "
    "forever preferred_lft forever\n"
    "7: eth0.100@eth0    inet 172.16.0.4/24 scope global eth0.100\\       valid_lft "
    "forever preferred_lft forever\n"
)
CPUINFO_GUEST = (
    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse2 ht syscall nx "
    "rdrand hypervisor lahf_lm abm\n"
)
CPUINFO_METAL = "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep vmx smx est tm2 ssse3\n"
PROC_STAT = """\
cpu  375468 12 79677 2788178 8251 5 2797 239 3 0
cpu0 136653 0 32537 1455382 1129 0 1112 116 2 0
cpu1 238815 12 47140 1332795 7121 5 1684 122 0 0
intr 123 0 0
ctxt 456
"""
MEMINFO = """\
MemTotal:       24684096 kB
MemFree:        23981872 kB
MemAvailable:   24207456 kB
Buffers:            5760 kB
Cached:           389284 kB
SwapCached:            0 kB
"""
DISKSTATS = """\
   7       0 loop0 100 0 800 10 0 0 0 0 0 0 0 0 0 0 0
 252       0 zram0 9 0 72 0 4 0 32 0 0 0 0 0 0 0 0
   8       0 sda 4000 10 80000 500 3000 20 60000 900 0 1000 1400 0 0 0 0
   8       1 sda1 3900 10 79000 490 2990 20 59000 890 0 990 1380 0 0 0 0
 259       0 nvme0n1 200 0 1600 30 100 0 800 20 0 50 50 0 0 0 0
 259       1 nvme0n1p1 190 0 1500 30 90 0 700 20 0 40 50 0 0 0 0
 179       0 mmcblk0 10 0 80 1 0 0 0 0 0 1 1 0 0 0 0
 179       1 mmcblk0p1 10 0 80 1 0 0 0 0 0 1 1 0 0 0 0
 253       0 dm-0 3000 0 70000 400 2000 0 50000 800 0 900 1200 0 0 0 0
   9       0 md0 1 0 8 0 1 0 8 0 0 0 0 0 0 0 0
"""
NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 607971289 1397393    0    0    0     0          0         0 607971289 1397393    0    0    0     0       0          0
  eth0: 556499560   14880    0    0    0     0          0         0   733743    8641    0    0    0     0       0          0
baadal-br-int:    1000       2    0    0    0     0          0         0      500       1    0    0    0     0       0          0
"""


# --------------------------------------------------------------------------- parsers


def test_df_total() -> None:
    assert R.parse_df_total_kb(DF) == 264212084
    assert R.parse_df_total_kb(DF_SPACES) == 2147483648  # spaces in source and mount point
    with pytest.raises(ValueError, match="no file system line"):
        R.parse_df_total_kb("")
    with pytest.raises(ValueError, match="unexpected df line"):
        R.parse_df_total_kb("Filesystem 1024-blocks\ngarbage here\n")


def test_interface_for_address() -> None:
    assert R.parse_interface_for_address(IP_ADDR, "127.0.0.1") == "lo"
    assert R.parse_interface_for_address(IP_ADDR, "10.20.0.11") == "eno1"
    assert R.parse_interface_for_address(IP_ADDR, "192.0.2.2") == "br0"
    assert R.parse_interface_for_address(IP_ADDR, "172.16.0.4") == "eth0.100"
    with pytest.raises(ValueError, match=r"no interface has address 10\.9\.9\.9.*eno1"):
        R.parse_interface_for_address(IP_ADDR, "10.9.9.9")
    with pytest.raises(ValueError, match="addresses found: none"):
        R.parse_interface_for_address("", "10.9.9.9")
    with pytest.raises(ValueError, match="interface name"):
        R.parse_interface_for_address("3: ../x    inet 10.0.0.1/8 scope global\n", "10.0.0.1")


def test_mac_is_upper_case_and_checked() -> None:
    assert R.parse_mac("52:54:00:ab:cd:ef\n") == "52:54:00:AB:CD:EF"
    assert R.parse_mac("00:00:00:00:00:00\n") == "00:00:00:00:00:00"
    for bad in ("", "52:54:00:ab:cd", "cat: /sys/class/net/x/address: No such file"):
        with pytest.raises(ValueError, match="not a MAC address"):
            R.parse_mac(bad)


def test_virtual_host_detection() -> None:
    assert R.cpuinfo_has_hypervisor_flag(CPUINFO_GUEST)
    assert not R.cpuinfo_has_hypervisor_flag(CPUINFO_METAL)
    assert not R.cpuinfo_has_hypervisor_flag("")
    assert R.dmi_names_virtual_machine("QEMU\nStandard PC (Q35 + ICH9, 2009)\n")
    assert R.dmi_names_virtual_machine("innotek GmbH\nVirtualBox\n")
    assert R.dmi_names_virtual_machine("VMware, Inc.\nVMware Virtual Platform\n")
    assert R.dmi_names_virtual_machine("Xen\nHVM domU\n")
    assert R.dmi_names_virtual_machine("Microsoft Corporation\nVirtual Machine\n")
    assert not R.dmi_names_virtual_machine("Dell Inc.\nPowerEdge R740\n")
    assert not R.dmi_names_virtual_machine("")


def test_proc_stat_is_grouped_like_libvirt() -> None:
    times = U.parse_proc_stat(PROC_STAT)
    tick = U.NS_PER_TICK
    assert times == NodeCpuTimes(
        kernel_ns=(79677 + 5 + 2797) * tick,
        user_ns=(375468 + 12) * tick,
        idle_ns=2788178 * tick,
        iowait_ns=8251 * tick,
    )
    with pytest.raises(ValueError, match="no 'cpu' line"):
        U.parse_proc_stat("")
    with pytest.raises(ValueError, match="unexpected /proc/stat"):
        U.parse_proc_stat("cpu  1 2 x 4 5\n")


def test_cpu_percent_between_samples() -> None:
    before = NodeCpuTimes(kernel_ns=100, user_ns=200, idle_ns=1000, iowait_ns=0)
    after = NodeCpuTimes(kernel_ns=150, user_ns=250, idle_ns=1290, iowait_ns=10)
    assert after.busy_percent_since(before) == 25.0  # 100 busy of 400
    assert before.busy_percent_since(before) == 0.0  # no time passed
    assert before.busy_percent_since(after) == 0.0  # counters went back (reboot)


def test_meminfo() -> None:
    memory = U.parse_meminfo(MEMINFO)
    assert memory == NodeMemory(24684096, 23981872, 5760, 389284)
    assert memory.used_kb == 24684096 - 23981872 - 5760 - 389284
    with pytest.raises(ValueError, match="lacks MemTotal, MemFree"):
        U.parse_meminfo("")
    with pytest.raises(ValueError, match="unexpected /proc/meminfo"):
        U.parse_meminfo("MemTotal: lots\n")


def test_diskstats_whole_disks_only() -> None:
    stats = U.parse_diskstats(DISKSTATS)
    assert stats["sda1"] == (79000, 59000)
    assert U.whole_disks(stats) == {
        "sda": (80000, 60000),
        "nvme0n1": (1600, 800),
        "mmcblk0": (80, 0),
    }
    sample = U.parse_disk_sample("12345.67 24000.01\n" + DISKSTATS)
    assert sample == U.DiskSample(12345.67, 80000 + 1600 + 80, 60000 + 800)
    later = U.DiskSample(12347.67, sample.sectors_read + 2048, sample.sectors_written + 1024)
    assert U.disk_kbps(sample, later) == (2048 + 1024) * 512 / 1024 / 2
    assert U.disk_kbps(later, later) == 0.0
    with pytest.raises(ValueError, match="unexpected /proc/uptime"):
        U.parse_disk_sample("")
    with pytest.raises(ValueError, match="unexpected /proc/diskstats"):
        U.parse_diskstats("8 0 sda 1 2 3\n")


def test_net_dev() -> None:
    counters = U.parse_net_dev(NET_DEV)
    assert counters["lo"] == (607971289, 607971289)
    assert counters["baadal-br-int"] == (1000, 500)
    assert U.net_totals(counters) == (556499560 + 1000, 733743 + 500)
    with pytest.raises(ValueError, match="no interface"):
        U.parse_net_dev("")
    with pytest.raises(ValueError, match="unexpected /proc/net/dev"):
        U.parse_net_dev("eth0: 1 2 3\n")


# --------------------------------------------------------------------------- driver


def test_node_stats_on_the_test_driver(tmp_path: Path) -> None:
    hv = LibvirtHypervisor(fake_host_uri(tmp_path, "n1", cpus=4, memory_gb=8))
    try:
        times = hv.node_cpu_times()
        assert min(times.kernel_ns, times.user_ns, times.idle_ns, times.iowait_ns) >= 0
        assert times.total_ns > 0
        # test:/// has no node memory statistics: a clean NotSupported, not a libvirtError
        with pytest.raises(NotSupported, match="node memory statistics on test://"):
            hv.node_memory_kb()
        assert hv.node_info().cpus == 4  # the connection is still usable
    finally:
        hv.close()


def test_cpu_and_ram_from_the_test_driver(tmp_path: Path) -> None:
    host = Host(address="192.0.2.50", libvirt_uri=fake_host_uri(tmp_path, "n2", 6, 12))
    assert R.get_host_cpu(host) == 6
    assert R.get_host_ram(host) == 12  # node info, since memory stats are not supported


# --------------------------------------------------------------------------- with canned SSH


class FakeHost:
    """Answers commands like a host would; /proc files advance between reads."""

    def __init__(self, outputs: dict[str, list[str]]) -> None:
        self.outputs = outputs
        self.calls: list[list[str]] = []

    def __call__(self, target: RemoteTarget, argv: list[str], **kwargs: object) -> CommandResult:
        self.calls.append(argv)
        key = " ".join(argv)
        if key not in self.outputs:
            raise RemoteCommandError(target.label, argv, "exit 1: no such file")
        answers = self.outputs[key]
        return CommandResult(0, answers.pop(0) if len(answers) > 1 else answers[0], "")


def test_usage_in_one_interval_with_proc_fallbacks(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    later_disks = DISKSTATS.replace(" 80000 ", " 82048 ")  # sda read 1 MiB more
    fake = FakeHost(
        {
            "cat /proc/uptime /proc/diskstats": [
                "100.00 190.00\n" + DISKSTATS,
                "101.00 191.00\n" + later_disks,
            ],
            "cat /proc/meminfo": [MEMINFO],
            "cat /proc/net/dev": [NET_DEV],
        }
    )
    monkeypatch.setattr(U, "execute_remote_cmd", fake)
    sleeps: list[float] = []
    monkeypatch.setattr(U.time, "sleep", sleeps.append)
    host = Host(address="192.0.2.50", libvirt_uri=fake_host_uri(tmp_path, "n3"))
    usage = U.get_host_resources_usage(host, settings, interval_s=0.25)
    assert sleeps == [0.25]  # one interval for all rates
    assert usage.disk_kbps == 1024.0
    assert usage.ram_used_kb == 24684096 - 23981872 - 5760 - 389284  # /proc/meminfo
    assert (usage.net_rx_bytes, usage.net_tx_bytes) == (556500560, 734243)
    assert 0.0 <= usage.cpu_percent <= 100.0  # the test driver has node CPU stats
    assert ["cat", "/proc/stat"] not in fake.calls


def test_network_bytes_are_the_hosts_own_interface(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VM traffic crosses taps and bridges too: only the interface carrying the host's
    address counts (every interface but lo when that cannot be told)."""
    own = IP_ADDR.replace("eno1", "eth0")  # 10.20.0.11 on eth0
    fake = FakeHost({"cat /proc/net/dev": [NET_DEV], "ip -o -4 addr show": [own]})
    monkeypatch.setattr(U, "execute_remote_cmd", fake)
    monkeypatch.setattr(R, "execute_remote_cmd", fake)
    host = Host(address="10.20.0.11", libvirt_uri=fake_host_uri(tmp_path, "n6"))
    assert U.get_host_nw_usage(host, settings) == (556499560, 733743)
    elsewhere = Host(address="10.20.0.99", libvirt_uri=fake_host_uri(tmp_path, "n7"))
    assert U.get_host_nw_usage(elsewhere, settings) == (556499560 + 1000, 733743 + 500)


def test_cpu_falls_back_to_proc_stat(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    later = PROC_STAT.replace("cpu  375468 12 79677 2788178", "cpu  375518 12 79727 2788478")
    fake = FakeHost({"cat /proc/stat": [PROC_STAT, later]})
    monkeypatch.setattr(U, "execute_remote_cmd", fake)
    monkeypatch.setattr(U.time, "sleep", lambda _s: None)

    def no_stats(self: LibvirtHypervisor) -> NodeCpuTimes:
        raise NotSupported("no node CPU statistics here")

    monkeypatch.setattr(LibvirtHypervisor, "node_cpu_times", no_stats)
    host = Host(address="192.0.2.50", libvirt_uri=fake_host_uri(tmp_path, "n4"))
    assert U.get_host_cpu_usage(host, settings) == 25.0  # 100 busy ticks of 400


def test_bad_output_is_a_remote_command_error(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeHost(
        {
            "cat /proc/net/dev": ["Inter-|\n face |\n"],
            "df -P -k -- /": ["df: /: Permission denied\n"],
            "ip -o -4 addr show": [IP_ADDR],
        }
    )
    monkeypatch.setattr(U, "execute_remote_cmd", fake)
    monkeypatch.setattr(R, "execute_remote_cmd", fake)
    host = Host(address="192.0.2.50", libvirt_uri=fake_host_uri(tmp_path, "n5"))
    with pytest.raises(RemoteCommandError, match="unexpected output: no interface in /proc"):
        U.get_host_nw_usage(host, settings)
    with pytest.raises(RemoteCommandError, match=r"'df -P -k -- /' on 192\.0\.2\.50 failed"):
        R.get_host_hdd(host, settings)
    with pytest.raises(RemoteCommandError, match=r"no interface has address 192\.0\.2\.50"):
        R.get_host_mac_address(host, settings)


def test_mac_and_type_with_canned_answers(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeHost(
        {
            "ip -o -4 addr show": [IP_ADDR],
            "cat /sys/class/net/eno1/address": ["3c:ec:ef:01:02:0a\n"],
            r"grep -m 1 -E ^(flags|Features)\b /proc/cpuinfo": [CPUINFO_METAL],
            "cat /sys/class/dmi/id/sys_vendor /sys/class/dmi/id/product_name": [
                "Supermicro\nSYS-1029P-WTR\n"
            ],
        }
    )
    monkeypatch.setattr(R, "execute_remote_cmd", fake)
    host = Host(address="10.20.0.11", libvirt_uri=fake_host_uri(tmp_path, "n6"))
    assert R.get_host_mac_address(host, settings) == "3C:EC:EF:01:02:0A"
    assert R.get_host_type(host, settings) == C.HostType.PHYSICAL
    fake.outputs["cat /sys/class/dmi/id/sys_vendor /sys/class/dmi/id/product_name"] = [
        "QEMU\nStandard PC (i440FX + PIIX, 1996)\n"
    ]
    assert R.get_host_type(host, settings) == C.HostType.VIRTUAL
